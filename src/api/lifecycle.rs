//! The lifecycle words of the wire contract: a process's state (`State`
//! property, `State` filter key), why a run ended (`ExitReason` property)
//! and when a process is restarted (`Restart` property and spec key).
//! Enums inside the program; the strings below are what the store, D-Bus
//! and `corralctl --json` carry.

use serde::{Deserialize, Serialize};

use super::WireValue;

/// Defines a fieldless enum with one wire string per variant, its list
/// of names, `as_str`, `parse`, `Display` and its D-Bus form (the name),
/// so a name is written once.
macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $($(#[$vm])* #[serde(rename = $s)] $v,)+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v),+];
            /// The wire names, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($s),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s,)+ }
            }

            pub fn parse(s: &str) -> Option<$name> {
                match s { $($s => Some($name::$v),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl WireValue for $name {
            type Wire = String;
            fn to_wire(&self) -> String {
                self.as_str().to_string()
            }
            fn from_wire(wire: String) -> Option<$name> {
                $name::parse(&wire)
            }
        }
    };
}

wire_enum! {
    /// Lifecycle state of a process (`State` property).
    State {
        Starting = "starting",
        Running = "running",
        Stopping = "stopping",
        /// Ended because a client asked (Stop, Kill, Remove, StopMatching).
        Stopped = "stopped",
        /// Ended by itself with exit code 0.
        Exited = "exited",
        /// Non-zero exit, a signal corral did not send, could not start, or a
        /// crash loop.
        Failed = "failed",
    }
}

impl State {
    /// Whether a process in this state has a live scope.
    pub fn is_active(self) -> bool {
        matches!(self, State::Starting | State::Running | State::Stopping)
    }
}

wire_enum! {
    /// Why the last run ended (`ExitReason`; empty on the wire while it runs).
    ExitReason {
        /// Exited by itself; the code says whether it failed.
        Exit = "exit",
        /// Killed by a signal corral did not send.
        Signal = "signal",
        /// SIGKILL while the cgroup counted an OOM kill.
        OomKill = "oom-kill",
        /// Ended by the signal a client sent with `Kill`.
        Killed = "killed",
        /// Ended because a client asked (Stop, Remove, Restart).
        Stopped = "stopped",
        /// Its scope vanished and the shim left no exit record.
        Lost = "lost",
        /// The command could not be started.
        SpawnFailed = "spawn-failed",
        /// Too many automatic restarts within the limit interval.
        CrashLoop = "crash-loop",
        /// A tracked process (not corral's child) ended by itself: its
        /// exit code cannot be known, so none is recorded.
        UntrackedExit = "untracked-exit",
    }
}

wire_enum! {
    /// When an ended run is started again (`Restart` spec key).
    RestartMode {
        No = "no",
        OnFailure = "on-failure",
        Always = "always",
    }
}

wire_enum! {
    /// A process's health (`Health` property): `none` without a check or
    /// while not running.
    Health {
        None = "none",
        /// Checked, not yet passed, within the start period or the retries.
        Starting = "starting",
        Healthy = "healthy",
        /// `Retries` consecutive failures.
        Unhealthy = "unhealthy",
    }
}

wire_enum! {
    /// Where a `Notify` process stands in the sd_notify(3) protocol
    /// (`NotifyState`): empty for other processes and while not running.
    NotifyState {
        None = "",
        /// Running, `READY=1` not yet received in this run.
        Waiting = "waiting",
        /// `READY=1` received.
        Ready = "ready",
        /// `RELOADING=1`, until the next `READY=1`.
        Reloading = "reloading",
        /// `STOPPING=1`.
        Stopping = "stopping",
    }
}

wire_enum! {
    /// How a health check probes (`HealthCheck.Type`).
    ProbeKind {
        Exec = "exec",
        Tcp = "tcp",
        Http = "http",
    }
}

wire_enum! {
    /// What an unhealthy process gets (`HealthCheck.OnUnhealthy`).
    OnUnhealthy {
        None = "none",
        Restart = "restart",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for r in ExitReason::ALL {
            assert_eq!(ExitReason::parse(r.as_str()), Some(*r));
        }
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(*s));
        }
        assert!(State::Running.is_active() && !State::Exited.is_active());
        for r in RestartMode::ALL {
            assert_eq!(RestartMode::parse(r.as_str()), Some(*r));
        }
        assert_eq!(RestartMode::NAMES, ["no", "on-failure", "always"]);
        assert_eq!(ExitReason::parse("nope"), None);
    }
}
