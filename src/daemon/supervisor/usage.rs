//! Usage and the client's view of a process. With history off the tick
//! reads only CPU time (one file per running process, off the actor, for
//! CPU % over the interval; with history on, [`super::history`] reads
//! what it stores); the other figures are read when a client asks and cached
//! for at most [`FRESH`], so an idle agent reads one file per process per
//! tick. All reads run on the blocking pool, batched per request.

use std::time::Duration;

use tokio::time::Instant;

use super::{Fact, Msg, Supervisor};
use crate::api::{ProcessView, State, UNSET};
use crate::daemon::cgroup::{self, Usage};
use crate::daemon::store::{ProcessId, RunId};

/// Usage older than this is re-read before a client sees it.
const FRESH: Duration = Duration::from_secs(1);

fn opt(v: Option<u64>) -> u64 {
    v.unwrap_or(UNSET)
}

impl Supervisor {
    /// Re-reads the usage of those of `ids` whose figures are older than
    /// [`FRESH`], in one batch.
    pub(super) async fn refresh_usage(&mut self, ids: &[ProcessId]) {
        let now = Instant::now();
        let stale: Vec<(ProcessId, RunId, String)> = ids
            .iter()
            .filter_map(|id| self.procs.get(id))
            .filter(|p| p.state().is_active() && !p.run.control_group.is_empty())
            .filter(|p| p.sampled.at.is_none_or(|t| now.duration_since(t) >= FRESH))
            .map(|p| (p.id, p.run.id, p.run.control_group.clone()))
            .collect();
        if stale.is_empty() {
            return;
        }
        let cgs: Vec<String> = stale.iter().map(|(_, _, cg)| cg.clone()).collect();
        let read = self.host.cgroups.usage(cgs.clone()).await;
        let mut pressure = self.host.cgroups.pressure(cgs).await.into_iter();
        let now = Instant::now();
        let min_interval = self.cfg.sample_interval.min(FRESH);
        for ((id, run, _), usage) in stale.into_iter().zip(read) {
            let psi = pressure.next().unwrap_or_default();
            let Some(u) = usage else { continue };
            let Some(p) = self.procs.get_mut(&id).filter(|p| p.run.id == run) else {
                continue;
            };
            let s = &mut p.sampled;
            if let Some(cpu) = u.cpu_usage_nsec {
                // CPU% is over the last sample interval: keep the older
                // sample until a full interval has passed.
                match s.cpu {
                    Some((at, prev)) if now.duration_since(at) >= min_interval => {
                        s.cpu_percent =
                            cgroup::cpu_percent(prev, at.into_std(), cpu, now.into_std());
                        s.cpu = Some((now, cpu));
                    }
                    None => s.cpu = Some((now, cpu)),
                    _ => {}
                }
            }
            s.usage = u;
            s.pressure = psi;
            s.at = Some(now);
        }
    }

    /// The running processes the tick samples, and their cgroups.
    pub(super) fn running_cgroups(&self) -> (Vec<(ProcessId, RunId)>, Vec<String>) {
        self.procs
            .values()
            .filter(|p| p.state() == State::Running && !p.run.control_group.is_empty())
            .map(|p| ((p.id, p.run.id), p.run.control_group.clone()))
            .unzip()
    }

    /// The tick: reads the CPU time of every running process off the
    /// actor; the figures come back as `Fact::Sampled`.
    pub(super) fn sample_cpu(&self) {
        // Also with nothing running: the read closes the files of
        // cgroups no longer listed.
        let (running, cgs) = self.running_cgroups();
        let reading = self.host.cgroups.cpu_nsec(cgs);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let cpu = reading.await;
            if running.is_empty() {
                return;
            }
            let samples = running
                .into_iter()
                .zip(cpu)
                .map(|((id, run), cpu)| (id, run, cpu))
                .collect();
            let _ = tx.send(Msg::Fact(Fact::Sampled(samples))).await;
        });
    }

    pub(super) fn apply_cpu_samples(&mut self, samples: Vec<(ProcessId, RunId, Option<u64>)>) {
        let now = Instant::now();
        for (id, run, cpu) in samples {
            let Some(cpu) = cpu else { continue };
            let Some(p) = self.procs.get_mut(&id).filter(|p| p.run.id == run) else {
                continue;
            };
            let s = &mut p.sampled;
            if let Some((at, prev)) = s.cpu {
                s.cpu_percent = cgroup::cpu_percent(prev, at.into_std(), cpu, now.into_std());
            }
            s.cpu = Some((now, cpu));
            s.usage.cpu_usage_nsec = Some(cpu);
        }
    }

    /// What clients see of `id`, from what is in memory.
    pub(super) fn view(&self, id: ProcessId) -> Option<ProcessView> {
        let p = self.procs.get(&id)?;
        let active = p.state().is_active();
        let u = if active {
            p.sampled.usage
        } else {
            Usage::default()
        };
        Some(ProcessView {
            id: p.id.to_string(),
            name: p.name.clone(),
            command: p.config.command.clone(),
            working_directory: p.config.cwd.clone(),
            workspace: p.workspace.clone(),
            session: p.session.clone(),
            owner: p.owner,
            labels: p.config.labels.clone(),
            state: p.state(),
            main_pid: if active { p.run.main_pid } else { 0 },
            unit: p.run.unit.clone(),
            control_group: p.run.control_group.clone(),
            exit_code: p.run.exit_code.unwrap_or(-1),
            exit_signal: p.run.exit_signal.unwrap_or(0),
            exit_reason: p
                .run
                .reason
                .map(|r| r.as_str().to_string())
                .unwrap_or_default(),
            started_at: p.run.started_at,
            exited_at: p.run.exited_at.unwrap_or(0),
            restarts: p.restarts,
            restart_policy: p.config.restart.policy.as_str().to_string(),
            next_restart_at: p.pending_restart.as_ref().map_or(0, |r| r.at_us),
            persistent: p.config.persistent,
            tty: p.config.tty,
            memory_current: opt(u.memory_current),
            memory_peak: opt(u.memory_peak),
            cpu_usage_nsec: opt(u.cpu_usage_nsec),
            cpu_percent: if active { p.sampled.cpu_percent } else { 0.0 },
            tasks_current: opt(u.tasks_current),
            io_read_bytes: opt(u.io_read_bytes),
            io_write_bytes: opt(u.io_write_bytes),
            oom_kills: p.oom_kills,
            pressure: if active {
                p.sampled.pressure.clone()
            } else {
                Default::default()
            },
            tracked: p.config.tracked,
            health: p
                .health
                .as_ref()
                .map_or(crate::api::Health::None, |h| h.tracker.health),
            health_results: p
                .health
                .as_ref()
                .map(|h| {
                    let results = h.tracker.results.iter();
                    results
                        .map(|(at, ok, m)| (*at, *ok, m.to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            listen_ports: match &p.listening {
                Some((run, ports)) if active && *run == p.run.id => ports.clone(),
                _ => Vec::new(),
            },
            port_holders: if active {
                Vec::new()
            } else {
                p.port_holders.clone()
            },
            notify_state: super::readiness::notify_state(p),
            status_text: super::readiness::status_text(p),
        })
    }
}
