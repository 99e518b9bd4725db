//! The actor's messages: the commands the bus sends and their answers
//! (`Command`, `Error`, `Reply`, who may see what: `Access`, who a process
//! runs as: `RunAs`), the facts its own tasks report (`Fact`), the events
//! it publishes (`Event`), and the bus's `Handle`. Types only; the
//! handling is in the stage files.

use tokio::sync::{mpsc, oneshot};

use super::host::Launched;
use crate::api::{Filter, Limits, ProcessView, StartSpec, State, WorkspaceView};
use crate::daemon::store::{self, ProcessId, RunId};

/// What the supervisor answers with when it says no. The bus maps each
/// variant to one D-Bus error name.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    SpawnFailed(String),
    #[error("{0}")]
    Systemd(String),
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Storage(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    NotSupported(String),
    #[error("{0}")]
    NoTerminal(String),
    #[error("{0}")]
    NotTrackable(String),
    /// A project file that cannot be used (`Up`/`Down`).
    #[error("{0}")]
    InvalidProject(String),
}

impl From<store::Error> for Error {
    fn from(e: store::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

pub type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// Whose processes a request may see and act on. The bus decides (in
/// system mode from the caller's uid and polkit); a process outside it
/// is answered as if it did not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    All,
    Owner(u32),
}

impl Access {
    pub fn allows(self, owner: u32) -> bool {
        match self {
            Access::All => true,
            Access::Owner(uid) => uid == owner,
        }
    }

    /// The uid to filter by, if any.
    pub fn owner(self) -> Option<u32> {
        match self {
            Access::All => None,
            Access::Owner(uid) => Some(uid),
        }
    }
}

/// Who a new process belongs to and runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    /// Ids to drop to (system mode); None: run as the agent.
    pub credentials: Option<crate::shim::Credentials>,
    /// The passwd entry's `HOME`, `USER`, `LOGNAME`, `SHELL` (system mode:
    /// the process's environment starts from these, not the agent's).
    pub login_env: Option<Vec<(String, String)>>,
    /// Default working directory.
    pub home: Option<String>,
}

/// Requests from the bus.
pub enum Command {
    Start {
        spec: Box<StartSpec>,
        run_as: RunAs,
        reply: Reply<String>,
    },
    List {
        filter: Filter,
        access: Access,
        reply: oneshot::Sender<Vec<ProcessView>>,
    },
    Get {
        id: String,
        access: Access,
        reply: Reply<ProcessView>,
    },
    /// The attach socket of a running PTY process.
    Terminal {
        id: String,
        access: Access,
        reply: Reply<std::path::PathBuf>,
    },
    Stop {
        id: String,
        access: Access,
        reply: Reply<()>,
    },
    Kill {
        id: String,
        access: Access,
        signal: i32,
        reply: Reply<()>,
    },
    Restart {
        id: String,
        access: Access,
        reply: Reply<()>,
    },
    Remove {
        id: String,
        access: Access,
        reply: Reply<()>,
    },
    StopMatching {
        filter: Filter,
        access: Access,
        reply: Reply<Vec<String>>,
    },
    RemoveMatching {
        filter: Filter,
        access: Access,
        reply: Reply<Vec<String>>,
    },
    Events {
        id: Option<String>,
        access: Access,
        limit: u32,
        reply: Reply<Vec<store::EventRow>>,
    },
    Logs {
        id: String,
        access: Access,
        lines: u32,
        since_us: u64,
        reply: Reply<Vec<crate::logfile::LogLine>>,
    },
    /// Take over a running process (`options`: a Start spec without
    /// `Command`, whose `Command` is filled in from `/proc`).
    Track {
        pid: u32,
        options: Box<StartSpec>,
        /// The owner of `pid` as the bus found it (and allowed the
        /// caller): it runs as them again when relaunched.
        run_as: RunAs,
        reply: Reply<String>,
    },
    Untrack {
        id: String,
        access: Access,
        reply: Reply<()>,
    },
    /// Usage history since `since_us`, in steps of at least `step_ms`.
    History {
        id: String,
        access: Access,
        since_us: u64,
        step_ms: u64,
        reply: Reply<Vec<crate::api::HistoryRow>>,
    },
    /// Process `SetLimits`.
    SetLimits {
        id: String,
        access: Access,
        limits: Limits,
        reply: Reply<()>,
    },
    /// The workspaces `access` sees; `totals`: with usage read from their
    /// slices (else names and counts only).
    Workspaces {
        access: Access,
        totals: bool,
        reply: oneshot::Sender<Vec<WorkspaceView>>,
    },
    /// Workspace `SetLimits`.
    SetWorkspaceLimits {
        workspace: WorkspaceKey,
        access: Access,
        limits: Limits,
        reply: Reply<()>,
    },
    /// Workspace `Freeze` (`freeze`) / `Thaw`.
    Freeze {
        workspace: WorkspaceKey,
        access: Access,
        freeze: bool,
        reply: Reply<()>,
    },
}

/// A workspace is its owner's: in system mode users' workspaces of one
/// name are distinct slices.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct WorkspaceKey {
    pub owner: u32,
    pub name: String,
}

/// Facts reported to the actor by its own tasks and watchers.
pub(super) enum Fact {
    Launched {
        id: ProcessId,
        run: RunId,
        result: Result<Launched, Error>,
    },
    /// An exit record appeared (inotify), or every record must be looked
    /// at again (`None`: the watch overflowed).
    ExitRecorded(Option<RunId>),
    /// The notify record of a run was (re)written (inotify).
    NotifyRecorded(RunId),
    ScopeGone(String),
    StopDone {
        id: ProcessId,
        run: RunId,
        result: Result<(), String>,
    },
    RestartDue {
        id: ProcessId,
        run: RunId,
    },
    /// A standby scope was made for the next run of `id` (`standby`).
    StandbyMade {
        id: ProcessId,
        /// The limits it was made with.
        limits: crate::api::Limits,
        result: Result<super::host::Standby, Error>,
    },
    Tick,
    /// A Start whose working directory was checked off the actor.
    StartChecked {
        spec: Box<StartSpec>,
        config: Box<store::ProcessConfig>,
        owner: u32,
        reply: Reply<String>,
    },
    /// CPU time of running processes, read off the actor by the tick.
    Sampled(Vec<(ProcessId, RunId, Option<u64>)>),
    /// All usage of running processes, read by the tick when history is on.
    /// What a refresh of the listening sockets found.
    PortsFound(crate::daemon::ports::Found),
    HistorySampled(Vec<(ProcessId, RunId, Option<crate::daemon::cgroup::Usage>)>),
    Prune,
    /// A Track whose target was read from `/proc` off the actor.
    TrackChecked {
        options: Box<StartSpec>,
        run_as: RunAs,
        target: Result<crate::daemon::track::Target, Error>,
        reply: Reply<String>,
    },
    /// The pidfd of a tracked run polled readable: its process ended.
    TrackedExit {
        id: ProcessId,
        run: RunId,
    },
    /// One health probe of `run` ended.
    HealthProbed {
        id: ProcessId,
        run: RunId,
        result: super::health::Probed,
    },
    /// Health probes of several runs, answered together (`local_checks`).
    HealthProbedMany(Vec<(ProcessId, RunId, super::health::Probed)>),
    /// An Untrack's scope move finished.
    Released {
        id: ProcessId,
        run: RunId,
        result: Result<(), String>,
        reply: Reply<()>,
    },
    /// systemd took new limits (or the target had no unit to change):
    /// record them and answer.
    LimitsApplied {
        target: LimitTarget,
        limits: Limits,
        reply: Reply<()>,
    },
}

/// Whose limits changed.
pub(super) enum LimitTarget {
    Process(ProcessId),
    Workspace(WorkspaceKey),
}

pub(super) enum Msg {
    Command(Command),
    Fact(Fact),
}

/// What the bus layer is told, in order.
#[derive(Debug, Clone)]
pub enum Event {
    Added(ProcessView),
    Changed {
        view: ProcessView,
        old: State,
    },
    Removed(String),
    /// A process's health changed (after its `Changed`).
    HealthChanged {
        id: String,
        old: crate::api::Health,
        new: crate::api::Health,
    },
}

/// The bus layer's handle: send commands, nothing else.
#[derive(Clone)]
pub struct Handle {
    pub(super) tx: mpsc::Sender<Msg>,
}

impl Handle {
    /// Sends a command and waits for the answer.
    pub async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Msg::Command(make(tx))).await.ok()?;
        rx.await.ok()
    }
}
