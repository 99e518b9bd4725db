//! The core actor: the one owner of live process state. It receives
//! commands (from the bus) and facts (launch results, exit records, scopes
//! vanishing, timers) on one channel, runs each process's state machine,
//! applies restart policy, writes every change to the store and publishes
//! it as an [`Event`]. It knows no zbus: the bus layer translates.
//!
//! [`messages`] holds the message types. One file per lifecycle stage,
//! each an `impl Supervisor` block:
//! [`proc`] the record of one process and which state changes are legal,
//! [`transition`] the one function that changes a state, [`starting`]
//! Start and relaunch, [`ending`] an exit and the restart policy after it
//! ([`policy`] the arithmetic), [`stopping`] Stop/Kill/Restart/Remove and
//! the `*Matching` calls, [`reconcile`] adoption at agent start, [`usage`]
//! cgroup sampling and the client's view, [`history`] usage history,
//! [`upkeep`] storage resync and retention, [`tracking`] Track/Untrack of
//! processes corral did not start, [`health`] health checks, [`listening`]
//! the ports processes listen on and who holds those of ended ones,
//! [`readiness`] what `Notify` processes say over sd_notify, [`standby`]
//! the scope of an immediate restart made ahead. [`host`] puts
//! systemd, launching, cgroups and the clock behind traits, so [`tests`]
//! drive the actor in-process under paused time. This file: start-up and
//! dispatch.

mod ending;
mod health;
mod history;
mod host;
mod listening;
mod live;
mod local_checks;
mod messages;
mod policy;
mod proc;
mod readiness;
mod reconcile;
mod standby;
mod starting;
mod stopping;
mod terminal;
#[cfg(test)]
mod tests;
mod tracking;
mod transition;
mod upkeep;
mod usage;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::api::State;
use crate::config::Config;
use crate::daemon::cgroup::CgroupFs;
use crate::daemon::exits;
use crate::daemon::store::{ProcessId, RunId, Store};
use crate::daemon::systemd::Systemd;
pub use host::Host;
pub use messages::{Access, Command, Error, Event, Handle, Reply, RunAs, WorkspaceKey};
use messages::{Fact, Msg};
use proc::{AfterStop, Proc};

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
    /// Limits set on workspaces (`SetWorkspaceLimits`), as stored.
    workspace_limits: BTreeMap<WorkspaceKey, crate::api::Limits>,
    events: mpsc::UnboundedSender<Event>,
    tx: mpsc::Sender<Msg>,
    /// History: the end (µs) of the last bucket averaged; 0 before the first.
    rolled_until: u64,
    /// TCP checks of loopback addresses, run together.
    local_checks: local_checks::LocalChecks,
    /// History: ticks read but not yet written (see `history::WRITE_EVERY`).
    history_pending: Vec<(u64, Vec<crate::daemon::store::Sample>)>,
    /// Ports: when the last refresh began, and whether a process started
    /// or ended since (see `listening::PORTS_EVERY`).
    ports_refreshed: Option<tokio::time::Instant>,
    ports_due: bool,
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
    let host = Host::real(
        settings.shim.clone(),
        settings.config.shim_pool as usize,
        systemd,
        exits_dir,
        cgroups,
    );
    let (handle, task, tx) = spawn(settings, store, host, events).await?;
    forward(exit_rx, tx.clone(), |seen| match seen {
        exits::Seen::Exit(run) => Fact::ExitRecorded(Some(RunId(run))),
        exits::Seen::Rescan => Fact::ExitRecorded(None),
        exits::Seen::Notify(run) => Fact::NotifyRecorded(RunId(run)),
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
        local_checks: local_checks::LocalChecks::new(tx.downgrade(), host.clock.clone()),
        host,
        procs: BTreeMap::new(),
        workspace_limits: BTreeMap::new(),
        events,
        tx: tx.clone(),
        rolled_until: 0,
        history_pending: Vec::new(),
        ports_refreshed: None,
        ports_due: false,
    };
    sup.load_workspace_limits().await?;
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
        self.write_history(None).await;
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
            Command::Terminal { id, access, reply } => {
                let _ = reply.send(self.terminal_socket(&id, access));
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
            c @ (Command::SetLimits { .. }
            | Command::Workspaces { .. }
            | Command::SetWorkspaceLimits { .. }
            | Command::Freeze { .. }) => self.live_command(c).await,
            Command::History {
                id,
                access,
                since_us,
                step_ms,
                reply,
            } => self.history(&id, access, since_us, step_ms, reply),
            Command::Track {
                pid,
                options,
                run_as,
                reply,
            } => self.track(pid, *options, run_as, reply),
            Command::Untrack { id, access, reply } => match self.find(&id, access) {
                Ok(id) => self.untrack(id, reply).await,
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
                // Notify records are lost in an overflow as well.
                let runs: Vec<RunId> = self
                    .procs
                    .values()
                    .filter(|p| p.config.notify && p.state().is_active())
                    .map(|p| p.run.id)
                    .collect();
                for run in runs {
                    self.notify_recorded(run, true).await;
                }
            }
            Fact::NotifyRecorded(run) => self.notify_recorded(run, true).await,
            Fact::ExitRecorded(Some(run)) => self.exit_recorded(run).await,
            Fact::ScopeGone(unit) => self.scope_gone(unit).await,
            Fact::StopDone { id, run, result } => self.stop_done(id, run, result).await,
            Fact::RestartDue { id, run } => self.restart_due(id, run).await,
            Fact::StandbyMade { id, limits, result } => self.standby_made(id, limits, result),
            Fact::Tick => {
                if self.cfg.history {
                    self.sample_history();
                } else {
                    self.sample_cpu();
                }
                self.ports_tick();
                if self.store.failing() {
                    self.resync().await;
                }
            }
            Fact::Sampled(samples) => self.apply_cpu_samples(samples),
            Fact::HistorySampled(samples) => self.record_history(samples),
            Fact::PortsFound(found) => self.ports_found(found),
            Fact::StartChecked {
                spec,
                config,
                owner,
                reply,
            } => self.start_checked(*spec, *config, owner, reply).await,
            Fact::Prune => self.prune().await,
            Fact::LimitsApplied {
                target,
                limits,
                reply,
            } => self.limits_applied(target, limits, reply).await,
            Fact::TrackChecked {
                options,
                run_as,
                target,
                reply,
            } => self.track_checked(*options, run_as, target, reply).await,
            Fact::TrackedExit { id, run } => self.settle_run(id, run).await,
            Fact::HealthProbed { id, run, result } => self.health_probed(id, run, result).await,
            Fact::HealthProbedMany(results) => {
                for (id, run, result) in results {
                    if let Some(change) = self.record_probe(id, run, result) {
                        self.health_changed(change).await;
                    }
                }
            }
            Fact::Released {
                id,
                run,
                result,
                reply,
            } => self.released(id, run, result, reply).await,
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
            // A process that started or ended: its ports (or who holds
            // them) change now, not at the next periodic refresh.
            self.ports_due |= view.state != old;
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
