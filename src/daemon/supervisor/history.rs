//! Usage history: with `history` on, the tick reads what the history
//! keeps of every running process (not only CPU time) off the actor; the
//! figures update what clients see and go to the store in one
//! transaction per [`WRITE_EVERY`], on the store's thread, the actor not
//! waiting for it. Each completed `history_resolution` bucket is averaged
//! into the rolled tier and both tiers are pruned in that same write;
//! upkeep prunes too, for when history is off. `History` writes what is
//! pending, then reads a range back.

use std::time::Duration;

use tokio::time::Instant;

use super::{Access, Error, Fact, Msg, Reply, Supervisor};
use crate::api::HistoryRow;
use crate::daemon::cgroup::{self, Usage};
use crate::daemon::store::{ProcessId, Rollup, RunId, Sample};

/// Ticks are written together at most this often. Rows are keyed by
/// process, so each tick's write touches a page per process: one write
/// per tick at a 1 s interval was a third of the agent's CPU at 1,000
/// processes, mostly WAL frames and checkpoints. The cost: an agent that
/// dies loses at most this much history.
const WRITE_EVERY: Duration = Duration::from_secs(5);

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Supervisor {
    /// The tick with history on: reads all usage of every running
    /// process off the actor; it comes back as `Fact::HistorySampled`.
    pub(super) fn sample_history(&self) {
        // Also with nothing running: the read closes the files of
        // cgroups no longer listed.
        let (running, cgs) = self.running_cgroups();
        let reading = self.host.cgroups.tick_usage(cgs);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let usage = reading.await;
            if running.is_empty() {
                return;
            }
            let samples = running
                .into_iter()
                .zip(usage)
                .map(|((id, run), u)| (id, run, u))
                .collect();
            let _ = tx.send(Msg::Fact(Fact::HistorySampled(samples))).await;
        });
    }

    /// Takes one tick's figures as the processes' current ones and writes
    /// them to the history.
    pub(super) fn record_history(&mut self, samples: Vec<(ProcessId, RunId, Option<Usage>)>) {
        let now = Instant::now();
        let at = self.now_us();
        let mut rows = Vec::with_capacity(samples.len());
        for (id, run, usage) in samples {
            let Some(u) = usage else { continue };
            let Some(p) = self.procs.get_mut(&id).filter(|p| p.run.id == run) else {
                continue;
            };
            let s = &mut p.sampled;
            let mut cpu_percent = None;
            if let Some(cpu) = u.cpu_usage_nsec {
                if let Some((prev_at, prev)) = s.cpu {
                    s.cpu_percent =
                        cgroup::cpu_percent(prev, prev_at.into_std(), cpu, now.into_std());
                    cpu_percent = Some(s.cpu_percent);
                }
                s.cpu = Some((now, cpu));
            }
            // The tick reads no peak, OOM count or pressure: those stay as
            // a client's read left them, and so does `at`, which dates a
            // full reading (a Get re-reads them all once it is stale).
            s.usage.memory_current = u.memory_current;
            // The peak is a high-water mark: at least any later reading.
            if let (Some(peak), Some(now)) = (&mut s.usage.memory_peak, u.memory_current) {
                *peak = (*peak).max(now);
            }
            s.usage.tasks_current = u.tasks_current;
            s.usage.io_read_bytes = u.io_read_bytes;
            s.usage.io_write_bytes = u.io_write_bytes;
            s.usage.cpu_usage_nsec = u.cpu_usage_nsec.or(s.usage.cpu_usage_nsec);
            rows.push(Sample {
                process: id,
                cpu_percent,
                memory: u.memory_current,
                tasks: u.tasks_current,
                io_read: u.io_read_bytes,
                io_write: u.io_write_bytes,
            });
        }
        if !rows.is_empty() {
            self.history_pending.push((at, rows));
        }
        let rollup = self.due_rollup(at);
        let due = self.history_pending.first().is_some_and(|(first, _)| {
            at.saturating_sub(*first) + micros(self.cfg.sample_interval) > micros(WRITE_EVERY)
        });
        if rollup.is_some() || due {
            let write = self.write_history(rollup);
            tokio::spawn(write);
        }
    }

    /// Takes the pending ticks (and `rollup`) out; the returned future
    /// writes them.
    pub(super) fn write_history(
        &mut self,
        rollup: Option<Rollup>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let ticks = std::mem::take(&mut self.history_pending);
        let store = self.store.clone();
        async move {
            if ticks.is_empty() && rollup.is_none() {
                return;
            }
            // A failed write marks the store failing (and is logged
            // there); a few ticks of history are not worth more.
            let _ = store.call(move |db| db.add_samples(&ticks, rollup)).await;
        }
    }

    /// The rollup a write at `at` must do: the buckets completed since the
    /// last one (after an agent start, those the raw tier still covers).
    fn due_rollup(&mut self, at: u64) -> Option<Rollup> {
        let bucket_us = micros(self.cfg.history_resolution).max(1);
        let boundary = at / bucket_us * bucket_us;
        if boundary <= self.rolled_until {
            return None;
        }
        let from = match self.rolled_until {
            0 => boundary.saturating_sub(micros(self.cfg.history_raw_retention)),
            t => t,
        };
        self.rolled_until = boundary;
        Some(Rollup {
            from,
            to: boundary,
            bucket_us,
            raw_cutoff: at.saturating_sub(micros(self.cfg.history_raw_retention)),
            cutoff: at.saturating_sub(micros(self.cfg.history_retention)),
        })
    }

    /// Retention of the history, from upkeep.
    pub(super) async fn prune_history(&mut self) {
        let now = self.now_us();
        let raw_cutoff = now.saturating_sub(micros(self.cfg.history_raw_retention));
        let cutoff = now.saturating_sub(micros(self.cfg.history_retention));
        if let Err(e) = self
            .store
            .call(move |db| db.prune_samples(raw_cutoff, cutoff))
            .await
        {
            tracing::error!("history retention: {e}");
        }
    }

    /// `History`: read on the store's thread, after the pending ticks
    /// are written; the actor goes on.
    pub(super) fn history(
        &mut self,
        id: &str,
        access: Access,
        since_us: u64,
        step_ms: u64,
        reply: Reply<Vec<HistoryRow>>,
    ) {
        let pid = match self.find(id, access) {
            Ok(pid) => pid,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let now = self.now_us();
        let step_us = step_ms.saturating_mul(1000);
        let store = self.store.clone();
        let pending = self.write_history(None);
        tokio::spawn(async move {
            pending.await;
            let r = store
                .call(move |db| db.history(pid, since_us, step_us, now))
                .await
                .map_err(Error::from);
            let _ = reply.send(r);
        });
    }
}
