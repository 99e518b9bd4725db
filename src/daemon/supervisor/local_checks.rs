//! TCP health checks of loopback addresses, run together: one task keeps
//! their schedule, and each time some are due it reads the kernel's table
//! of listening sockets once ([`crate::daemon::listeners`]) and answers
//! all of them from it, sending the results to the actor in one message.
//!
//! Checks run on a grid, as systemd coalesces timers: a check every
//! interval `I` runs at the multiples of `I` since the schedule began, so
//! checks of the same interval, started at any times, share every read —
//! a thousand checks at 1 s cost one read a second. The first run of a
//! check is at the first grid point at least 7/8 of an interval after
//! it began (between 7/8 and 15/8 of an interval).
//!
//! When the table cannot be read (a kernel without `inet_diag`), the due
//! checks connect instead, each on a task of its own, as other checks do.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::host::Clock;
use super::messages::{Fact, Msg};
use crate::daemon::listeners::SockDiag;
use crate::daemon::store::{ProcessId, RunId};

/// The shared schedule; the task runs while it is not empty.
#[derive(Clone)]
pub struct LocalChecks {
    shared: Arc<Shared>,
}

struct Shared {
    schedule: Mutex<Schedule>,
    /// Wakes the task when a check joins (it may be due before the next).
    joined: Notify,
    tx: mpsc::WeakSender<Msg>,
    clock: Arc<dyn Clock>,
    /// Where every interval's grid starts.
    epoch: Instant,
}

#[derive(Default)]
struct Schedule {
    checks: HashMap<(ProcessId, RunId), Check>,
    running: bool,
}

struct Check {
    targets: Arc<[SocketAddr]>,
    every: Duration,
    /// Used only by the fallback's connect.
    timeout: Duration,
    due: Instant,
}

/// A run's place in the schedule; dropping it ends the run's checks.
pub struct Enrolled {
    shared: Arc<Shared>,
    key: (ProcessId, RunId),
}

impl Drop for Enrolled {
    fn drop(&mut self) {
        lock(&self.shared.schedule).checks.remove(&self.key);
    }
}

fn lock(m: &Mutex<Schedule>) -> std::sync::MutexGuard<'_, Schedule> {
    // The schedule stays consistent under a panic elsewhere: every change
    // to it is one insert or remove.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LocalChecks {
    pub fn new(tx: mpsc::WeakSender<Msg>, clock: Arc<dyn Clock>) -> LocalChecks {
        LocalChecks {
            shared: Arc::new(Shared {
                schedule: Mutex::default(),
                joined: Notify::new(),
                tx,
                clock,
                epoch: Instant::now(),
            }),
        }
    }

    /// Checks `targets` every `every` for `run`, on the grid, until the
    /// returned value is dropped.
    pub fn enroll(
        &self,
        id: ProcessId,
        run: RunId,
        targets: Vec<SocketAddr>,
        every: Duration,
        timeout: Duration,
    ) -> Enrolled {
        let key = (id, run);
        let start = {
            let mut s = lock(&self.shared.schedule);
            let first = Instant::now() + every - every / 8;
            let check = Check {
                targets: targets.into(),
                every,
                timeout,
                due: grid_point(self.shared.epoch, every, first),
            };
            s.checks.insert(key, check);
            !std::mem::replace(&mut s.running, true)
        };
        if start {
            tokio::spawn(run_checks(self.shared.clone()));
        } else {
            self.shared.joined.notify_one();
        }
        Enrolled {
            shared: self.shared.clone(),
            key,
        }
    }
}

/// A check to run now: whose, where, and the fallback's timeout.
type Due = ((ProcessId, RunId), Arc<[SocketAddr]>, Duration);

/// The first point of `every`'s grid (multiples of it since `epoch`) at
/// or after `at`.
fn grid_point(epoch: Instant, every: Duration, at: Instant) -> Instant {
    let step = every.as_nanos().max(1);
    let since = at.saturating_duration_since(epoch).as_nanos();
    let n = since.div_ceil(step);
    let nanos = u64::try_from(n * step).unwrap_or(u64::MAX);
    epoch + Duration::from_nanos(nanos)
}

/// The task: sleeps until the earliest check is due, runs every check due
/// by then, sends the results; ends when no check is left.
async fn run_checks(shared: Arc<Shared>) {
    let mut diag: Option<SockDiag> = None;
    loop {
        let next = {
            let mut s = lock(&shared.schedule);
            match s.checks.values().map(|c| c.due).min() {
                Some(due) => due,
                None => {
                    s.running = false;
                    return;
                }
            }
        };
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = shared.joined.notified() => continue,
        }
        let now = Instant::now();
        let due: Vec<Due> = {
            let mut s = lock(&shared.schedule);
            s.checks
                .iter_mut()
                .filter(|(_, c)| c.due <= now)
                .map(|(key, c)| {
                    // Late (a busy machine) skips the points missed.
                    c.due = grid_point(shared.epoch, c.every, (c.due + c.every).max(now));
                    (*key, c.targets.clone(), c.timeout)
                })
                .collect()
        };
        if due.is_empty() {
            continue;
        }
        // One dump, well under a millisecond for a thousand listeners:
        // read on this thread rather than hopped to the blocking pool.
        let table = diag
            .take()
            .map_or_else(SockDiag::open, Ok)
            .and_then(|mut d| {
                let t = d.listening_tcp();
                diag = Some(d);
                t
            });
        let Some(tx) = shared.tx.upgrade() else {
            return;
        };
        let table = match table {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("cannot read the socket table ({e}); TCP checks connect instead");
                diag = None;
                for d in due {
                    tokio::spawn(connect_check(tx.clone(), shared.clock.clone(), d));
                }
                continue;
            }
        };
        let at = shared.clock.now_us();
        let results = due
            .into_iter()
            .map(|((id, run), targets, _)| {
                let (ok, message) = match table.accepts(&targets) {
                    Ok(()) => (true, Cow::Borrowed("accepting connections")),
                    Err(m) => (false, Cow::Owned(m)),
                };
                (id, run, (at, ok, message))
            })
            .collect();
        if tx
            .send(Msg::Fact(Fact::HealthProbedMany(results)))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// The fallback: one connect to each target in turn.
async fn connect_check(
    tx: mpsc::Sender<Msg>,
    clock: Arc<dyn Clock>,
    ((id, run), targets, limit): Due,
) {
    let connect = tokio::net::TcpStream::connect(&*targets);
    let (ok, message) = match tokio::time::timeout(limit, connect).await {
        Ok(Ok(_)) => (true, Cow::Borrowed("connected")),
        Ok(Err(e)) => (false, Cow::Owned(format!("connect: {e}"))),
        Err(_) => (
            false,
            format!("timed out after {} ms", limit.as_millis()).into(),
        ),
    };
    let result = (clock.now_us(), ok, message);
    let _ = tx
        .send(Msg::Fact(Fact::HealthProbed { id, run, result }))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The results of one message: (process, passed, message).
    async fn batch(rx: &mut mpsc::Receiver<Msg>) -> Vec<(ProcessId, bool, String)> {
        match rx.recv().await {
            Some(Msg::Fact(Fact::HealthProbedMany(results))) => results
                .into_iter()
                .map(|(id, _, (_, ok, m))| (id, ok, m.into_owned()))
                .collect::<Vec<_>>(),
            _ => panic!("expected a batch of results"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn checks_started_apart_come_together_and_end_when_dropped() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let up = listener.local_addr().unwrap();
        let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let gone = down.local_addr().unwrap();
        drop(down);
        let (tx, mut rx) = mpsc::channel(16);
        let checks = LocalChecks::new(tx.downgrade(), Arc::new(super::super::host::SystemClock));
        let every = Duration::from_secs(1);
        let a = checks.enroll(ProcessId(1), RunId(1), vec![up], every, every);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let b = checks.enroll(ProcessId(2), RunId(2), vec![gone], every, every);
        // Both first run at the grid point 1 s (b after 0.9 s).
        let t0 = Instant::now();
        let mut first = batch(&mut rx).await;
        first.sort_by_key(|r| r.0);
        assert_eq!(t0.elapsed(), Duration::from_millis(900));
        assert_eq!(
            first,
            vec![
                (ProcessId(1), true, "accepting connections".to_string()),
                (ProcessId(2), false, format!("nothing listens on {gone}")),
            ]
        );
        // From then on both share every read.
        assert_eq!(batch(&mut rx).await.len(), 2);
        assert_eq!(t0.elapsed(), Duration::from_millis(1900));
        drop(b);
        assert_eq!(batch(&mut rx).await.len(), 1);
        drop(a);
        // With no check left the task ends, and nothing more comes.
        let quiet = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert!(quiet.is_err(), "a result after every check was dropped");
        assert!(!lock(&checks.shared.schedule).running);
        drop(listener);
    }
}
