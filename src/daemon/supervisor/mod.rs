//! The core actor: the one owner of live process state. It receives
//! commands (from the bus) and facts (launch results, exit records, scopes
//! vanishing, timers) on one channel, runs each process's state machine,
//! applies restart policy, writes every change to the store and publishes
//! it as an [`Event`]. It knows no zbus: the bus layer translates.
//!
//! One file per lifecycle stage, each an `impl Supervisor` block:
//! [`proc`] the record of one process and which state changes are legal,
//! [`transition`] the one function that changes a state, [`starting`]
//! Start and relaunch, [`ending`] an exit and the restart policy after it
//! ([`policy`] the arithmetic), [`stopping`] Stop/Kill/Restart/Remove and
//! the `*Matching` calls, [`reconcile`] adoption at agent start, [`usage`]
//! cgroup sampling and the client's view, [`upkeep`] storage resync and
//! retention. [`host`] puts systemd, launching, cgroups and the clock
//! behind traits, so [`tests`] drive the actor in-process under paused
//! time. This file: the messages, start-up and dispatch.

mod ending;
mod host;
mod policy;
mod proc;
mod reconcile;
mod starting;
mod stopping;
#[cfg(test)]
mod tests;
mod transition;
mod upkeep;
mod usage;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::api::{Filter, ProcessView, StartSpec, State};
use crate::config::Config;
use crate::daemon::cgroup::CgroupFs;
use crate::daemon::exits;
use crate::daemon::store::{self, ProcessId, RunId, Store};
use crate::daemon::systemd::Systemd;
pub use host::Host;
use host::Launched;
use proc::{AfterStop, Proc};

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
}

/// Facts reported to the actor by its own tasks and watchers.
enum Fact {
    Launched {
        id: ProcessId,
        run: RunId,
        result: Result<Launched, Error>,
    },
    /// An exit record appeared (inotify), or every record must be looked
    /// at again (`None`: the watch overflowed).
    ExitRecorded(Option<RunId>),
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
    Prune,
}

enum Msg {
    Command(Command),
    Fact(Fact),
}

/// What the bus layer is told, in order.
#[derive(Debug, Clone)]
pub enum Event {
    Added(ProcessView),
    Changed { view: ProcessView, old: State },
    Removed(String),
}

/// The bus layer's handle: send commands, nothing else.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Msg>,
}

impl Handle {
    /// Sends a command and waits for the answer.
    pub async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Msg::Command(make(tx))).await.ok()?;
        rx.await.ok()
    }
}

/// Paths and settings the supervisor needs besides its collaborators.
pub struct Settings {
    pub config: Config,
    pub shim: PathBuf,
    /// The agent's own environment, cleaned, that `Environment` adds to.
    pub base_env: Vec<(String, String)>,
    pub home: String,
}

struct Supervisor {
    cfg: Config,
    base_env: Vec<(String, String)>,
    home: String,
    logs_dir: PathBuf,
    store: Store,
    host: Host,
    procs: BTreeMap<ProcessId, Proc>,
    events: mpsc::UnboundedSender<Event>,
    tx: mpsc::Sender<Msg>,
}

/// Starts the actor on the real host: reconciles the store with systemd
/// and the exit records (before anyone can ask anything), then serves
/// commands until the returned handle and every clone are dropped.
pub async fn start(
    settings: Settings,
    store: Store,
    systemd: Systemd,
    gone: mpsc::UnboundedReceiver<String>,
    events: mpsc::UnboundedSender<Event>,
) -> Result<(Handle, tokio::task::JoinHandle<()>), Error> {
    let state_dir = settings.config.state_dir.clone();
    let exits_dir = state_dir.join("exits");
    for d in [&exits_dir, &state_dir.join("logs")] {
        std::fs::create_dir_all(d).map_err(|e| Error::Storage(format!("{}: {e}", d.display())))?;
    }
    let cgroups = match CgroupFs::detect("/sys/fs/cgroup") {
        Ok(c) => Some(Arc::new(c)),
        Err(e) => {
            tracing::warn!("no usable cgroup filesystem, usage will be unknown: {e}");
            None
        }
    };
    // Watch before reconciling: a record written in between is seen twice
    // at worst, never missed (handling is idempotent).
    let (exit_tx, exit_rx) = mpsc::unbounded_channel();
    exits::watch(&exits_dir, exit_tx)
        .map_err(|e| Error::Storage(format!("watching {}: {e}", exits_dir.display())))?;
    let host = Host::real(settings.shim.clone(), systemd, exits_dir, cgroups);
    let (handle, task, tx) = spawn(settings, store, host, events).await?;
    forward(exit_rx, tx.clone(), |run| {
        Fact::ExitRecorded((run != exits::RESCAN).then_some(RunId(run)))
    });
    forward(gone, tx, Fact::ScopeGone);
    Ok((handle, task))
}

/// Reconciles, then runs the actor and its tick on `host`. Returns the
/// actor's own sender too, for the watchers that feed it facts.
async fn spawn(
    settings: Settings,
    store: Store,
    host: Host,
    events: mpsc::UnboundedSender<Event>,
) -> Result<(Handle, tokio::task::JoinHandle<()>, mpsc::Sender<Msg>), Error> {
    let max_events = settings.config.max_events;
    store.call(move |db| db.cap_events(max_events)).await?;
    let (tx, rx) = mpsc::channel(1024);
    let mut sup = Supervisor {
        logs_dir: settings.config.state_dir.join("logs"),
        cfg: settings.config,
        base_env: settings.base_env,
        home: settings.home,
        store,
        host,
        procs: BTreeMap::new(),
        events,
        tx: tx.clone(),
    };
    sup.reconcile().await?;
    let ticker = tx.clone();
    let interval = sup.cfg.sample_interval;
    tokio::spawn(async move {
        let mut every = tokio::time::interval(interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u64 = 0;
        loop {
            every.tick().await;
            n += 1;
            let fact = if n % 360 == 0 {
                Fact::Prune
            } else {
                Fact::Tick
            };
            if ticker.send(Msg::Fact(fact)).await.is_err() {
                break;
            }
        }
    });
    let task = tokio::spawn(sup.run(rx));
    Ok((Handle { tx: tx.clone() }, task, tx))
}

fn forward<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
    tx: mpsc::Sender<Msg>,
    f: fn(T) -> Fact,
) {
    tokio::spawn(async move {
        while let Some(v) = rx.recv().await {
            if tx.send(Msg::Fact(f(v))).await.is_err() {
                break;
            }
        }
    });
}

impl Supervisor {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        // Prune once at start so a long-stopped agent cleans up at once.
        self.prune().await;
        while let Some(msg) = rx.recv().await {
            match msg {
                Msg::Command(c) => self.command(c).await,
                Msg::Fact(f) => self.fact(f).await,
            }
        }
    }

    async fn command(&mut self, c: Command) {
        match c {
            Command::Start {
                spec,
                run_as,
                reply,
            } => self.start_new(*spec, run_as, reply),
            Command::List {
                filter,
                access,
                reply,
            } => {
                let ids: Vec<ProcessId> = self
                    .procs
                    .values()
                    .filter(|p| access.allows(p.owner))
                    .filter(|p| filter.matches(&p.workspace, &p.session, p.state()))
                    .map(|p| p.id)
                    .collect();
                self.refresh_usage(&ids).await;
                let _ = reply.send(ids.into_iter().filter_map(|id| self.view(id)).collect());
            }
            Command::Get { id, access, reply } => {
                let r = match self.find(&id, access) {
                    Ok(id) => {
                        self.refresh_usage(&[id]).await;
                        self.view(id).ok_or_else(|| not_found(id))
                    }
                    Err(e) => Err(e),
                };
                let _ = reply.send(r);
            }
            Command::Stop { id, access, reply } => match self.find(&id, access) {
                Ok(id) => self.begin_stop(id, AfterStop::Nothing, Some(reply)).await,
                Err(e) => drop(reply.send(Err(e))),
            },
            Command::Remove { id, access, reply } => match self.find(&id, access) {
                Ok(id) => self.begin_stop(id, AfterStop::Remove, Some(reply)).await,
                Err(e) => drop(reply.send(Err(e))),
            },
            Command::Restart { id, access, reply } => match self.find(&id, access) {
                Ok(id) => self.restart(id, reply).await,
                Err(e) => drop(reply.send(Err(e))),
            },
            Command::Kill {
                id,
                access,
                signal,
                reply,
            } => {
                let _ = reply.send(self.find(&id, access).and_then(|id| self.kill(id, signal)));
            }
            Command::StopMatching {
                filter,
                access,
                reply,
            } => {
                self.matching(filter, access, AfterStop::Nothing, reply)
                    .await
            }
            Command::RemoveMatching {
                filter,
                access,
                reply,
            } => {
                self.matching(filter, access, AfterStop::Remove, reply)
                    .await
            }
            Command::Events {
                id,
                access,
                limit,
                reply,
            } => {
                let pid = match id.as_deref().filter(|s| !s.is_empty()) {
                    None => None,
                    Some(s) => match s.parse::<u64>() {
                        Ok(n) => Some(ProcessId(n)),
                        Err(_) => {
                            let _ = reply
                                .send(Err(Error::NotFound(format!("no process with id '{s}'"))));
                            return;
                        }
                    },
                };
                let owner = access.owner();
                let store = self.store.clone();
                tokio::spawn(async move {
                    let r = store
                        .call(move |db| db.events(pid, owner, limit))
                        .await
                        .map_err(Error::from);
                    let _ = reply.send(r);
                });
            }
            Command::Logs {
                id,
                access,
                lines,
                since_us,
                reply,
            } => match self.find(&id, access) {
                Ok(pid) => {
                    let dir = self.logs_dir.join(pid.to_string());
                    tokio::task::spawn_blocking(move || {
                        let since = (since_us > 0).then_some(since_us);
                        let r = crate::logfile::read_page(&dir, since, logs_page(lines))
                            .or_else(|e| {
                                if e.kind() == std::io::ErrorKind::NotFound {
                                    Ok(vec![])
                                } else {
                                    Err(e)
                                }
                            })
                            .map_err(|e| Error::Storage(format!("reading logs of {pid}: {e}")));
                        let _ = reply.send(r);
                    });
                }
                Err(e) => drop(reply.send(Err(e))),
            },
        }
    }

    async fn fact(&mut self, f: Fact) {
        match f {
            Fact::Launched { id, run, result } => self.launched(id, run, result).await,
            Fact::ExitRecorded(None) => {
                for run in self.host.launcher.pending_exits().await {
                    self.exit_recorded(run).await;
                }
            }
            Fact::ExitRecorded(Some(run)) => self.exit_recorded(run).await,
            Fact::ScopeGone(unit) => self.scope_gone(unit).await,
            Fact::StopDone { id, run, result } => self.stop_done(id, run, result).await,
            Fact::RestartDue { id, run } => self.restart_due(id, run).await,
            Fact::Tick => {
                self.sample_cpu();
                if self.store.failing() {
                    self.resync().await;
                }
            }
            Fact::Sampled(samples) => self.apply_cpu_samples(samples),
            Fact::StartChecked {
                spec,
                config,
                owner,
                reply,
            } => self.start_checked(*spec, *config, owner, reply).await,
            Fact::Prune => self.prune().await,
        }
    }

    /// The process `id` names, if `access` lets the caller see it.
    fn find(&self, id: &str, access: Access) -> Result<ProcessId, Error> {
        id.parse::<u64>()
            .ok()
            .map(ProcessId)
            .filter(|n| self.procs.get(n).is_some_and(|p| access.allows(p.owner)))
            .ok_or_else(|| Error::NotFound(format!("no process with id '{id}'")))
    }

    fn publish(&self, e: Event) {
        let _ = self.events.send(e);
    }

    /// Announces a change of properties; `old` is the state before it
    /// (the same as now when only other properties changed).
    fn changed(&mut self, id: ProcessId, old: State) {
        if let Some(view) = self.view(id) {
            self.publish(Event::Changed { view, old });
        }
    }

    fn now_us(&self) -> u64 {
        self.host.clock.now_us()
    }
}

/// What one `Logs` reply may hold (README "Logs"): `lines` > 0 asks for
/// the tail, at most [`LOGS_MAX_LINES`]; `lines` = 0 for everything from
/// `since_us` on, a page at a time, the client reading on from the last
/// timestamp it got. Both stop at [`LOGS_MAX_BYTES`]. The head page has
/// no line bound of its own: lines of one shim read share a timestamp
/// (up to 64 KiB of empty lines), and a page must hold all of them or a
/// client reading on from that timestamp would never get past it.
fn logs_page(lines: u32) -> crate::logfile::Page {
    use crate::logfile::{Keep, Page};
    match lines {
        0 => Page {
            max_lines: usize::MAX,
            max_bytes: LOGS_MAX_BYTES,
            keep: Keep::Oldest,
        },
        n => Page {
            max_lines: (n as usize).min(LOGS_MAX_LINES),
            max_bytes: LOGS_MAX_BYTES,
            keep: Keep::Newest,
        },
    }
}

/// Most lines of a `Logs` tail.
const LOGS_MAX_LINES: usize = 10_000;

/// Most bytes of a `Logs` reply, each line counted with its framing
/// (`logfile::LINE_OVERHEAD`).
const LOGS_MAX_BYTES: usize = 4 << 20;

fn not_found(id: ProcessId) -> Error {
    Error::NotFound(format!("no process with id '{id}'"))
}
