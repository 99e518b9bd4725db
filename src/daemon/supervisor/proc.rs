//! The record of one supervised process as the actor holds it, and the
//! rules of its state machine. What is in flight is a typed option, not a
//! flag: a launch (`Launching`), a client's stop (`StopRequest`), a
//! scheduled restart (`PendingRestart`), so that "stopping without a stop
//! request" or "a restart timer for an ended launch" cannot be written
//! down. `state` is private: only [`Proc::enter`], called by the
//! transition function, changes it.

use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::policy::Backoff;
use super::Reply;
use crate::api::{ListenPort, PortHolder, State};
use crate::daemon::cgroup::Usage;
use crate::daemon::pidfd::Pidfd;
use crate::daemon::store::{ProcessConfig, ProcessId, ProcessRecord, RunId, RunRecord};

/// What to do once a requested stop has completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterStop {
    Nothing,
    Remove,
    Relaunch,
    /// Relaunch as an automatic restart (counted): an unhealthy process.
    Recover,
}

/// A launch in flight (state `starting`).
#[derive(Default)]
pub struct Launching {
    /// The process was created by this Start: a failed launch removes it.
    pub first: bool,
    /// Answered once the launch is done (Start, Restart, and a Stop that
    /// waits for the scope to exist before stopping it).
    pub waiters: Vec<Reply<String>>,
    /// The run's exit record arrived before the launch reply; settled
    /// right after it, so the order stays starting -> running -> ended.
    pub early_exit: bool,
}

/// A client asked the current run to end.
pub struct StopRequest {
    pub then: AfterStop,
    pub waiters: Vec<Reply<()>>,
}

/// An automatic restart waiting for its delay. Dropping it cancels the
/// timer, so replacing or clearing it can never leave one behind.
pub struct PendingRestart {
    /// Wall-clock time it is due (µs), the `NextRestartAt` property.
    pub at_us: u64,
    pub timer: AbortHandle,
}

impl Drop for PendingRestart {
    fn drop(&mut self) {
        self.timer.abort();
    }
}

/// Cached cgroup figures of the current run.
#[derive(Default)]
pub struct Sampled {
    pub usage: Usage,
    /// When `usage` was read in full.
    pub at: Option<Instant>,
    /// The previous CPU reading, for CPU % over an interval.
    pub cpu: Option<(Instant, u64)>,
    pub cpu_percent: f64,
    /// PSI of the current run, read with `usage`.
    pub pressure: crate::api::Pressure,
}

pub struct Proc {
    pub id: ProcessId,
    /// The uid it runs as and that may manage it.
    pub owner: u32,
    pub name: String,
    pub workspace: String,
    pub session: String,
    pub config: ProcessConfig,
    state: State,
    pub run: RunRecord,
    pub restarts: u32,
    pub launching: Option<Launching>,
    pub stop: Option<StopRequest>,
    /// The last signal a client sent with Kill during this run.
    pub kill_signal: Option<i32>,
    /// The current run's main process while it runs: `Kill` signals
    /// through it, never by PID. Dropped when the run ends.
    pub pidfd: Option<Pidfd>,
    pub launched_at: Instant,
    pub backoff: Backoff,
    pub pending_restart: Option<PendingRestart>,
    pub sampled: Sampled,
    /// Runs ended by the OOM killer (`OOMKills`).
    pub oom_kills: u32,
    /// The current run's health check, while it runs.
    pub health: Option<super::health::HealthRun>,
    /// The sockets the last refresh found, and of which run: the current
    /// run's are `ListenPorts`; the last run's are ports it expects.
    pub listening: Option<(RunId, Vec<ListenPort>)>,
    /// The last non-empty `listening`, kept after the run ends.
    pub last_ports: Vec<ListenPort>,
    /// While not running: who holds the ports it expects (`PortHolders`).
    pub port_holders: Vec<PortHolder>,
    /// What a `Notify` process last said over sd_notify, and in which run
    /// (`readiness`).
    pub notified: Option<crate::shim::protocol::NotifyRecord>,
    /// The next run's scope, made ahead (`standby`).
    pub standby: Option<super::host::Standby>,
    /// A standby scope is being made.
    pub standby_coming: bool,
}

impl Proc {
    /// A process as recorded, with nothing in flight.
    pub fn new(rec: ProcessRecord, run: RunRecord) -> Proc {
        Proc {
            id: rec.id,
            owner: rec.owner,
            name: rec.name,
            workspace: rec.workspace,
            session: rec.session,
            config: rec.config,
            state: rec.state,
            run,
            restarts: rec.restarts,
            launching: None,
            stop: None,
            kill_signal: None,
            pidfd: None,
            launched_at: Instant::now(),
            backoff: Backoff::default(),
            pending_restart: None,
            sampled: Sampled::default(),
            oom_kills: rec.oom_kills,
            health: None,
            listening: None,
            last_ports: Vec::new(),
            port_holders: Vec::new(),
            notified: None,
            standby: None,
            standby_coming: false,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Moves to `new` if the state machine allows it; returns the old
    /// state. Only the transition function calls this.
    pub(super) fn enter(&mut self, new: State) -> Result<State, State> {
        let old = self.state;
        if !allowed(old, new) {
            return Err(old);
        }
        self.state = new;
        Ok(old)
    }

    pub fn stop_requested(&self) -> bool {
        self.stop.is_some()
    }
}

/// The state machine: which changes may happen at all.
pub fn allowed(from: State, to: State) -> bool {
    use State::*;
    match from {
        // A launch ends in its scope running, or fails (also found at
        // agent start: `spawn-failed`).
        Starting => matches!(to, Running | Stopped | Exited | Failed),
        Running => matches!(to, Stopping | Stopped | Exited | Failed),
        Stopping => matches!(to, Stopped | Exited | Failed),
        // An ended process starts again (restart, relaunch), or its end
        // becomes a crash-loop verdict.
        Stopped | Exited | Failed => matches!(to, Starting | Failed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_machine_allows_only_lifecycle_moves() {
        use State::*;
        let ok = [
            (Starting, Running),
            (Starting, Failed),
            (Running, Stopping),
            (Running, Exited),
            (Stopping, Stopped),
            (Exited, Starting),
            (Failed, Failed),
            (Exited, Failed),
        ];
        let bad = [
            (Running, Starting),
            (Stopping, Running),
            (Stopped, Running),
            (Exited, Stopping),
            (Starting, Stopping),
            (Running, Running),
        ];
        for (a, b) in ok {
            assert!(allowed(a, b), "{a} -> {b}");
        }
        for (a, b) in bad {
            assert!(!allowed(a, b), "{a} -> {b}");
        }
    }
}
