//! The core actor: the one owner of live process state. It receives
//! commands (from the bus) and facts (launch results, exit records, scopes
//! vanishing, timers) on one channel, runs each process's state machine,
//! applies restart policy, writes every change to the store and publishes
//! it as an [`Event`]. It knows no zbus: the bus layer translates.

mod policy;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::api::{Filter, ProcessView, StartSpec, State, UNSET};
use crate::config::Config;
use crate::daemon::cgroup::{self, CgroupFs, Usage};
use crate::daemon::store::{
    self, Ending, ProcessConfig, ProcessRecord, RestartPolicy, RunRecord, Store,
};
use crate::daemon::systemd::{self, ScopeProps, Systemd};
use crate::daemon::{exits, launch};
use crate::shim::{ExitRecord, LaunchSpec};
use policy::{Backoff, Verdict};

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
}

impl From<store::Error> for Error {
    fn from(e: store::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

pub type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// Requests from the bus.
pub enum Command {
    Start {
        spec: Box<StartSpec>,
        reply: Reply<String>,
    },
    List {
        filter: Filter,
        reply: oneshot::Sender<Vec<ProcessView>>,
    },
    Get {
        id: String,
        reply: Reply<ProcessView>,
    },
    Stop {
        id: String,
        reply: Reply<()>,
    },
    Kill {
        id: String,
        signal: i32,
        reply: Reply<()>,
    },
    Restart {
        id: String,
        reply: Reply<()>,
    },
    Remove {
        id: String,
        reply: Reply<()>,
    },
    StopMatching {
        filter: Filter,
        reply: Reply<Vec<String>>,
    },
    RemoveMatching {
        filter: Filter,
        reply: Reply<Vec<String>>,
    },
    Events {
        id: Option<String>,
        limit: u32,
        reply: Reply<Vec<store::EventRow>>,
    },
    Logs {
        id: String,
        lines: u32,
        since_us: u64,
        reply: Reply<Vec<crate::logfile::LogLine>>,
    },
}

/// Facts reported to the actor by its own tasks and watchers.
enum Fact {
    Launched {
        id: u64,
        run: u64,
        result: Result<Launched, Error>,
    },
    /// An exit record appeared (inotify), or `exits::RESCAN`.
    ExitRecorded(u64),
    ScopeGone(String),
    StopDone {
        id: u64,
        run: u64,
        result: Result<(), String>,
    },
    RestartDue {
        id: u64,
        run: u64,
    },
    Tick,
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

struct Launched {
    shim_pid: u32,
    main_pid: u32,
    control_group: String,
}

/// What to do once a stop has completed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum AfterStop {
    Nothing,
    Remove,
    Relaunch,
}

struct Proc {
    id: u64,
    name: String,
    workspace: String,
    session: String,
    config: ProcessConfig,
    state: State,
    run: RunRecord,
    restarts: u32,
    /// True once a client asked this run to end (Stop, Remove, Restart).
    stop_requested: bool,
    /// The last signal a client sent with Kill during this run.
    kill_signal: i32,
    after_stop: AfterStop,
    stop_waiters: Vec<Reply<()>>,
    launch_waiters: Vec<Reply<String>>,
    /// Created by Start and never launched yet: a failed launch removes it.
    fresh: bool,
    /// Exit record that arrived while the launch reply was still in flight.
    early_exit: bool,
    launched_at: Instant,
    backoff: Backoff,
    next_restart_at: u64,
    usage: Usage,
    usage_at: Option<Instant>,
    cpu_sample: Option<(Instant, u64)>,
    cpu_percent: f64,
}

impl Proc {
    fn id_str(&self) -> String {
        self.id.to_string()
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
    shim: Arc<PathBuf>,
    base_env: Vec<(String, String)>,
    home: String,
    exits_dir: PathBuf,
    logs_dir: PathBuf,
    store: Store,
    systemd: Systemd,
    cgroups: Option<Arc<CgroupFs>>,
    procs: BTreeMap<u64, Proc>,
    events: mpsc::UnboundedSender<Event>,
    tx: mpsc::Sender<Msg>,
}

/// Usage older than this is re-read before a client sees it.
const FRESH: Duration = Duration::from_secs(1);

fn opt(v: Option<u64>) -> u64 {
    v.unwrap_or(UNSET)
}

/// Starts the actor: reconciles the store with systemd and the exit
/// records (before anyone can ask anything), then serves commands until
/// the returned handle and every clone are dropped.
pub async fn start(
    settings: Settings,
    store: Store,
    systemd: Systemd,
    gone: mpsc::UnboundedReceiver<String>,
    events: mpsc::UnboundedSender<Event>,
) -> Result<(Handle, tokio::task::JoinHandle<()>), Error> {
    let state_dir = settings.config.state_dir.clone();
    let exits_dir = state_dir.join("exits");
    let logs_dir = state_dir.join("logs");
    for d in [&exits_dir, &logs_dir] {
        std::fs::create_dir_all(d).map_err(|e| Error::Storage(format!("{}: {e}", d.display())))?;
    }
    let cgroups = match CgroupFs::detect("/sys/fs/cgroup") {
        Ok(c) => Some(Arc::new(c)),
        Err(e) => {
            tracing::warn!("no usable cgroup filesystem, usage will be unknown: {e}");
            None
        }
    };
    let (tx, rx) = mpsc::channel(1024);
    // Watch before reconciling: a record written in between is seen twice
    // at worst, never missed (handling is idempotent).
    let (exit_tx, exit_rx) = mpsc::unbounded_channel();
    exits::watch(&exits_dir, exit_tx)
        .map_err(|e| Error::Storage(format!("watching {}: {e}", exits_dir.display())))?;
    let mut sup = Supervisor {
        cfg: settings.config,
        shim: Arc::new(settings.shim),
        base_env: settings.base_env,
        home: settings.home,
        exits_dir,
        logs_dir,
        store,
        systemd,
        cgroups,
        procs: BTreeMap::new(),
        events,
        tx: tx.clone(),
    };
    sup.reconcile().await?;
    forward(exit_rx, tx.clone(), Fact::ExitRecorded);
    forward(gone, tx.clone(), Fact::ScopeGone);
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
    Ok((Handle { tx }, task))
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
            Command::Start { spec, reply } => self.start_new(*spec, reply).await,
            Command::List { filter, reply } => {
                let ids: Vec<u64> = self
                    .procs
                    .values()
                    .filter(|p| filter.matches(&p.workspace, &p.session, p.state.as_str()))
                    .map(|p| p.id)
                    .collect();
                let views = ids.into_iter().filter_map(|id| self.view(id)).collect();
                let _ = reply.send(views);
            }
            Command::Get { id, reply } => {
                let r = self
                    .find(&id)
                    .and_then(|id| self.view(id).ok_or_else(|| not_found(&id.to_string())));
                let _ = reply.send(r);
            }
            Command::Stop { id, reply } => match self.find(&id) {
                Ok(id) => self.begin_stop(id, AfterStop::Nothing, Some(reply)).await,
                Err(e) => drop(reply.send(Err(e))),
            },
            Command::Remove { id, reply } => match self.find(&id) {
                Ok(id) => self.begin_stop(id, AfterStop::Remove, Some(reply)).await,
                Err(e) => drop(reply.send(Err(e))),
            },
            Command::Restart { id, reply } => match self.find(&id) {
                Ok(id) => self.restart(id, reply).await,
                Err(e) => drop(reply.send(Err(e))),
            },
            Command::Kill { id, signal, reply } => {
                let _ = reply.send(self.find(&id).and_then(|id| self.kill(id, signal)));
            }
            Command::StopMatching { filter, reply } => {
                self.matching(filter, AfterStop::Nothing, reply).await
            }
            Command::RemoveMatching { filter, reply } => {
                self.matching(filter, AfterStop::Remove, reply).await
            }
            Command::Events { id, limit, reply } => {
                let pid = match id.as_deref().filter(|s| !s.is_empty()) {
                    None => None,
                    Some(s) => match s.parse::<u64>() {
                        Ok(n) => Some(n),
                        Err(_) => {
                            let _ = reply.send(Err(not_found(s)));
                            return;
                        }
                    },
                };
                let store = self.store.clone();
                tokio::spawn(async move {
                    let r = store
                        .call(move |db| db.events(pid, limit))
                        .await
                        .map_err(Error::from);
                    let _ = reply.send(r);
                });
            }
            Command::Logs {
                id,
                lines,
                since_us,
                reply,
            } => match self.find(&id) {
                Ok(pid) => {
                    let dir = self.logs_dir.join(pid.to_string());
                    tokio::task::spawn_blocking(move || {
                        let max = (lines > 0).then_some(lines as usize);
                        let since = (since_us > 0).then_some(since_us);
                        let r = crate::logfile::read_lines(&dir, max, since)
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
            Fact::ExitRecorded(exits::RESCAN) => {
                for run in exits::pending(&self.exits_dir) {
                    self.exit_recorded(run).await;
                }
            }
            Fact::ExitRecorded(run) => self.exit_recorded(run).await,
            Fact::ScopeGone(unit) => {
                let hit = self.procs.values().find(|p| {
                    p.run.unit == unit && p.state.is_active() && p.state != State::Starting
                });
                // systemd also sends UnitRemoved for every unit it unloads
                // during daemon-reload/reexec, and loads them right back:
                // only a cgroup with no process left means the scope is gone.
                let still_there = hit.is_some_and(|p| {
                    self.cgroups
                        .as_ref()
                        .is_some_and(|cg| cg.read_populated(&p.run.control_group).unwrap_or(false))
                });
                if let Some((id, run)) = hit.map(|p| (p.id, p.run.id)) {
                    if still_there {
                        tracing::debug!(
                            id,
                            unit,
                            "UnitRemoved for a populated scope (manager reload): ignored"
                        );
                    } else {
                        self.settle_run(id, run).await;
                    }
                }
            }
            Fact::StopDone { id, run, result } => self.stop_done(id, run, result).await,
            Fact::RestartDue { id, run } => {
                let due = self.procs.get(&id).is_some_and(|p| {
                    p.run.id == run && !p.state.is_active() && p.next_restart_at != 0
                });
                if due {
                    self.relaunch(id, "restart policy", false).await;
                }
            }
            Fact::Tick => {
                self.sample_all();
                if self.store.failing() {
                    self.resync().await;
                }
            }
            Fact::Prune => self.prune().await,
        }
    }

    fn find(&self, id: &str) -> Result<u64, Error> {
        id.parse::<u64>()
            .ok()
            .filter(|n| self.procs.contains_key(n))
            .ok_or_else(|| not_found(id))
    }

    fn publish(&self, e: Event) {
        let _ = self.events.send(e);
    }

    fn changed(&mut self, id: u64, old: State) {
        if let Some(view) = self.view(id) {
            self.publish(Event::Changed { view, old });
        }
    }

    // ---- usage -------------------------------------------------------

    /// Re-reads the usage of `id` if what we have is older than 1 s.
    fn refresh_usage(&mut self, id: u64) {
        let Some(cg) = self.cgroups.clone() else {
            return;
        };
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        if !p.state.is_active() || p.run.control_group.is_empty() {
            return;
        }
        let now = Instant::now();
        if p.usage_at.is_some_and(|t| now.duration_since(t) < FRESH) {
            return;
        }
        match cg.read_usage(&p.run.control_group) {
            Ok(u) => {
                if let Some(cpu) = u.cpu_usage_nsec {
                    // CPU% is over the last sample interval: keep the older
                    // sample until a full interval has passed.
                    match p.cpu_sample {
                        Some((at, prev))
                            if now.duration_since(at) >= self.cfg.sample_interval.min(FRESH) =>
                        {
                            p.cpu_percent = cgroup::cpu_percent(prev, at, cpu, now);
                            p.cpu_sample = Some((now, cpu));
                        }
                        None => p.cpu_sample = Some((now, cpu)),
                        _ => {}
                    }
                }
                p.usage = u;
                p.usage_at = Some(now);
            }
            Err(e) => tracing::debug!("usage of {}: {e}", p.run.control_group),
        }
    }

    /// The tick: CPU time of every running process, for CPU % over the
    /// interval. The other figures are read when a client asks (cached for
    /// at most 1 s), so an idle agent reads one file per process per tick.
    fn sample_all(&mut self) {
        let Some(cg) = self.cgroups.clone() else {
            return;
        };
        let now = Instant::now();
        for p in self
            .procs
            .values_mut()
            .filter(|p| p.state == State::Running)
        {
            if p.run.control_group.is_empty() {
                continue;
            }
            match cg.read_cpu_nsec(&p.run.control_group) {
                Ok(Some(cpu)) => {
                    if let Some((at, prev)) = p.cpu_sample {
                        p.cpu_percent = cgroup::cpu_percent(prev, at, cpu, now);
                    }
                    p.cpu_sample = Some((now, cpu));
                    p.usage.cpu_usage_nsec = Some(cpu);
                }
                Ok(None) => {}
                Err(e) => tracing::debug!("cpu of {}: {e}", p.run.control_group),
            }
        }
    }

    fn view(&mut self, id: u64) -> Option<ProcessView> {
        self.refresh_usage(id);
        let p = self.procs.get(&id)?;
        let active = p.state.is_active();
        let u = if active { p.usage } else { Usage::default() };
        Some(ProcessView {
            id: p.id_str(),
            name: p.name.clone(),
            command: p.config.command.clone(),
            working_directory: p.config.cwd.clone(),
            workspace: p.workspace.clone(),
            session: p.session.clone(),
            labels: p.config.labels.clone(),
            state: p.state,
            main_pid: if active { p.run.main_pid } else { 0 },
            unit: p.run.unit.clone(),
            control_group: p.run.control_group.clone(),
            exit_code: p.run.exit_code.unwrap_or(-1),
            exit_signal: p.run.exit_signal.unwrap_or(0),
            exit_reason: p.run.reason.clone().unwrap_or_default(),
            started_at: p.run.started_at,
            exited_at: p.run.exited_at.unwrap_or(0),
            restarts: p.restarts,
            restart_policy: p.config.restart.policy.clone(),
            next_restart_at: p.next_restart_at,
            persistent: p.config.persistent,
            memory_current: opt(u.memory_current),
            memory_peak: opt(u.memory_peak),
            cpu_usage_nsec: opt(u.cpu_usage_nsec),
            cpu_percent: if active { p.cpu_percent } else { 0.0 },
            tasks_current: opt(u.tasks_current),
            io_read_bytes: opt(u.io_read_bytes),
            io_write_bytes: opt(u.io_write_bytes),
        })
    }

    // ---- start -------------------------------------------------------

    /// The environment of a launch: the agent's own (unless the spec asked
    /// for a clean one) with the spec's entries on top. Computed at each
    /// launch rather than stored, so a process costs only its own entries.
    fn launch_env(&self, config: &ProcessConfig) -> Vec<String> {
        let mut env: Vec<(&str, &str)> = if config.clean_env {
            Vec::new()
        } else {
            self.base_env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect()
        };
        for e in &config.env {
            if let Some((k, v)) = e.split_once('=') {
                env.retain(|(ek, _)| *ek != k);
                env.push((k, v));
            }
        }
        env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    fn process_config(&self, spec: &StartSpec) -> ProcessConfig {
        let c = &self.cfg;
        ProcessConfig {
            command: spec.command.clone(),
            cwd: spec
                .working_directory
                .clone()
                .unwrap_or_else(|| self.home.clone()),
            env: spec.environment.clone(),
            clean_env: spec.clean_environment == Some(true),
            labels: spec.labels.clone(),
            memory_max: spec.memory_max,
            cpu_quota: spec.cpu_quota,
            tasks_max: spec.tasks_max,
            restart: RestartPolicy {
                policy: spec.restart.clone().unwrap_or_else(|| "no".into()),
                delay_ms: spec.restart_delay_ms.unwrap_or(c.restart_delay_ms),
                delay_max_ms: spec.restart_delay_max_ms.unwrap_or(
                    c.restart_delay_max_ms
                        .max(spec.restart_delay_ms.unwrap_or(0)),
                ),
                reset_sec: spec.restart_reset_sec.unwrap_or(c.restart_reset_sec),
                limit: spec.restart_limit.unwrap_or(c.restart_limit),
                limit_interval_sec: spec
                    .restart_limit_interval_sec
                    .unwrap_or(c.restart_limit_interval_sec),
            },
            persistent: spec.persistent.unwrap_or(false),
        }
    }

    async fn start_new(&mut self, spec: StartSpec, reply: Reply<String>) {
        if let Err(e) = spec.validate() {
            let _ = reply.send(Err(Error::InvalidArgument(e)));
            return;
        }
        let config = self.process_config(&spec);
        match std::fs::metadata(&config.cwd) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                let _ = reply.send(Err(Error::InvalidArgument(format!(
                    "WorkingDirectory: '{}' is not a directory",
                    config.cwd
                ))));
                return;
            }
            Err(e) => {
                let _ = reply.send(Err(Error::InvalidArgument(format!(
                    "WorkingDirectory: '{}': {e}",
                    config.cwd
                ))));
                return;
            }
        }
        let name = spec.name.clone().unwrap_or_else(|| {
            let argv0 = &spec.command[0];
            argv0
                .rsplit('/')
                .next()
                .filter(|s| !s.is_empty())
                .unwrap_or(argv0)
                .to_string()
        });
        let workspace = spec.workspace.clone().unwrap_or_else(|| "default".into());
        let session = spec.session.clone().unwrap_or_default();
        let (n, w, s, c) = (
            name.clone(),
            workspace.clone(),
            session.clone(),
            config.clone(),
        );
        let unit_name = name.clone();
        let inserted = self
            .store
            .call(move |db| {
                db.insert_process(
                    &n,
                    &w,
                    &s,
                    &c,
                    |id| systemd::scope_name(&unit_name, &id.to_string()),
                    store::now_us(),
                )
            })
            .await;
        let (id, run, unit) = match inserted {
            Ok(v) => v,
            Err(e) => {
                let _ = reply.send(Err(e.into()));
                return;
            }
        };
        let record = ProcessRecord {
            id,
            name,
            workspace,
            session,
            state: State::Starting.as_str().into(),
            restarts: 0,
            created_at: store::now_us(),
            config,
        };
        let run = RunRecord {
            id: run,
            process_id: id,
            unit,
            started_at: store::now_us(),
            ..Default::default()
        };
        let mut proc = Proc::new(record, run, State::Starting);
        proc.fresh = true;
        proc.launch_waiters.push(reply);
        self.procs.insert(id, proc);
        if let Some(v) = self.view(id) {
            self.publish(Event::Added(v));
        }
        self.spawn_launch(id);
    }

    /// Runs the launch of the current run of `id` in its own task.
    fn spawn_launch(&mut self, id: u64) {
        let Some(env) = self.procs.get(&id).map(|p| self.launch_env(&p.config)) else {
            return;
        };
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        p.launched_at = Instant::now();
        let relaunch = !p.fresh;
        let run = p.run.id;
        let unit = p.run.unit.clone();
        let spec = LaunchSpec {
            id: id.to_string(),
            run,
            argv: p.config.command.clone(),
            cwd: p.config.cwd.clone().into(),
            env,
            log_dir: self.logs_dir.join(id.to_string()),
            log_max_bytes: self.cfg.log_max_size,
            log_files: self.cfg.log_files,
            exit_file: exits::record_path(&self.exits_dir, run),
        };
        let props = ScopeProps {
            description: format!("corral {}: {}", p.name, p.config.command.join(" ")),
            slice: systemd::slice_name(&p.workspace),
            memory_max: p.config.memory_max,
            tasks_max: p.config.tasks_max,
            cpu_quota: p.config.cpu_quota,
            stop_timeout: self.cfg.stop_timeout,
        };
        let shim = self.shim.clone();
        let sd = self.systemd.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let result = launch_run(&shim, &sd, &unit, &spec, &props, relaunch).await;
            let _ = tx.send(Msg::Fact(Fact::Launched { id, run, result })).await;
        });
    }

    async fn launched(&mut self, id: u64, run: u64, result: Result<Launched, Error>) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        if p.run.id != run {
            return;
        }
        match result {
            Ok(l) => {
                let now = store::now_us();
                p.state = State::Running;
                p.fresh = false;
                p.run.main_pid = l.main_pid;
                p.run.control_group = l.control_group.clone();
                p.run.started_at = now;
                p.usage_at = None;
                p.cpu_sample = None;
                p.cpu_percent = 0.0;
                tracing::info!(id, run, main_pid = l.main_pid, shim_pid = l.shim_pid, unit = %p.run.unit, "running");
                let waiters = std::mem::take(&mut p.launch_waiters);
                let early = std::mem::take(&mut p.early_exit);
                let cg = l.control_group;
                let written = self
                    .store
                    .call(move |db| db.mark_running(id, run, l.main_pid, &cg, now))
                    .await;
                self.changed(id, State::Starting);
                // The reply goes out only after the record is committed.
                for w in waiters {
                    let _ = w.send(match &written {
                        Ok(()) => Ok(id.to_string()),
                        Err(e) => Err(Error::Storage(e.to_string())),
                    });
                }
                if early {
                    self.exit_recorded(run).await;
                }
            }
            Err(e) => {
                let first_run = p.fresh;
                let waiters = std::mem::take(&mut p.launch_waiters);
                tracing::warn!(id, run, "launch failed: {e}");
                if first_run {
                    // A failed Start leaves nothing behind but its history.
                    let msg = e.to_string();
                    let _ = self
                        .store
                        .call(move |db| {
                            db.delete_process(id, &format!("start failed: {msg}"), store::now_us())
                        })
                        .await;
                    self.procs.remove(&id);
                    self.publish(Event::Removed(id.to_string()));
                } else {
                    let end = Ending {
                        state: State::Failed.as_str().into(),
                        exit_code: -1,
                        exit_signal: 0,
                        reason: "spawn-failed".into(),
                        at: store::now_us(),
                    };
                    self.record_ending(id, end).await;
                    // An automatic restart that could not start is one more
                    // failure for the policy (the crash-loop limit ends it);
                    // a client's Restart gets the error instead.
                    if waiters.is_empty() {
                        self.apply_policy(id, Duration::ZERO).await;
                    }
                }
                let msg = e.to_string();
                for w in waiters {
                    let _ = w.send(Err(match &e {
                        Error::SpawnFailed(_) => Error::SpawnFailed(msg.clone()),
                        Error::Systemd(_) => Error::Systemd(msg.clone()),
                        _ => Error::SpawnFailed(msg.clone()),
                    }));
                }
            }
        }
    }

    // ---- endings -----------------------------------------------------

    /// An exit record for `run` exists (or may exist): settle it.
    async fn exit_recorded(&mut self, run: u64) {
        let Some(id) = self.procs.values().find(|p| p.run.id == run).map(|p| p.id) else {
            // A run we no longer track (removed process, old run): done.
            if exits::read(&self.exits_dir, run).is_some() {
                exits::remove(&self.exits_dir, run);
            }
            return;
        };
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        if p.state == State::Starting {
            // The launch reply has not been processed yet; keep the order
            // starting -> running -> ended.
            p.early_exit = true;
            return;
        }
        if !p.state.is_active() {
            exits::remove(&self.exits_dir, run);
            return;
        }
        self.settle_run(id, run).await;
    }

    /// Records the end of the current run of `id` from its exit record, or
    /// as `lost` when the shim left none (it was SIGKILLed with its scope).
    async fn settle_run(&mut self, id: u64, run: u64) {
        let Some(p) = self.procs.get(&id) else { return };
        if p.run.id != run || !p.state.is_active() || p.state == State::Starting {
            return;
        }
        let rec = exits::read(&self.exits_dir, run);
        let oom = p.usage.oom_kills.unwrap_or(0) > 0 || self.read_oom(id);
        let p = &self.procs[&id];
        let end = ending(p.stop_requested, p.kill_signal, rec.as_ref(), oom);
        let had_record = rec.is_some();
        let uptime = p.launched_at.elapsed();
        let unit = p.run.unit.clone();
        // The record stays until its content is committed: if the store
        // is failing, the next start (or the resync) still finds it.
        if self.record_ending(id, end.clone()).await && had_record {
            exits::remove(&self.exits_dir, run);
        }
        let Some(p) = self.procs.get(&id) else { return };
        if p.stop_requested {
            return; // the stop's completion takes it from here
        }
        // Ended by itself: leftovers in the scope (daemonized children)
        // must not outlive it, or they keep holding ports.
        if self
            .cgroups
            .as_ref()
            .is_some_and(|cg| cg.read_populated(&p.run.control_group).unwrap_or(false))
        {
            let sd = self.systemd.clone();
            let timeout = self.cfg.stop_timeout;
            tokio::spawn(async move {
                if let Err(e) = sd.stop_unit(&unit, timeout).await {
                    tracing::warn!("cleaning up {unit}: {e}");
                }
            });
        }
        self.apply_policy(id, uptime).await;
    }

    fn read_oom(&self, id: u64) -> bool {
        let (Some(cg), Some(p)) = (self.cgroups.as_ref(), self.procs.get(&id)) else {
            return false;
        };
        cg.read_usage(&p.run.control_group)
            .ok()
            .and_then(|u| u.oom_kills)
            .unwrap_or(0)
            > 0
    }

    /// Writes the ending of the current run and publishes the new state.
    /// Returns whether it was committed.
    async fn record_ending(&mut self, id: u64, end: Ending) -> bool {
        let Some(p) = self.procs.get_mut(&id) else {
            return false;
        };
        let old = p.state;
        let new = State::parse(&end.state).unwrap_or(State::Failed);
        p.state = new;
        p.run.exited_at = Some(end.at);
        p.run.exit_code = Some(end.exit_code);
        p.run.exit_signal = Some(end.exit_signal);
        p.run.reason = Some(end.reason.clone());
        p.next_restart_at = 0;
        let run = p.run.id;
        tracing::info!(id, run, state = %new, reason = %end.reason, code = end.exit_code, signal = end.exit_signal, "ended");
        let old_s = old.as_str();
        let committed = self
            .store
            .call(move |db| db.record_exit(id, run, old_s, &end))
            .await
            .is_ok();
        self.changed(id, old);
        committed
    }

    async fn apply_policy(&mut self, id: u64, uptime: Duration) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        let verdict = policy::decide(
            &p.config.restart,
            p.state,
            uptime,
            Instant::now(),
            &mut p.backoff,
        );
        let run = p.run.id;
        match verdict {
            Verdict::Stay => {}
            Verdict::RestartAfter(delay) => {
                p.next_restart_at = store::now_us() + delay.as_micros() as u64;
                let detail = format!("restart in {} ms", delay.as_millis());
                let _ = self
                    .store
                    .call(move |db| {
                        db.add_event(id, Some(run), "restart-scheduled", &detail, store::now_us())
                    })
                    .await;
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = tx.send(Msg::Fact(Fact::RestartDue { id, run })).await;
                });
                self.changed(
                    id,
                    self.procs
                        .get(&id)
                        .map(|p| p.state)
                        .unwrap_or(State::Failed),
                );
            }
            Verdict::CrashLoop => {
                let old = p.state;
                p.state = State::Failed;
                p.run.reason = Some("crash-loop".into());
                let limit = (p.config.restart.limit, p.config.restart.limit_interval_sec);
                let why = format!("crash-loop: {} restarts within {}s", limit.0, limit.1);
                tracing::warn!(id, "{why}");
                let o = old.as_str();
                let _ = self
                    .store
                    .call(move |db| {
                        db.set_state(id, Some(run), o, "failed", &why, store::now_us())?;
                        db.set_reason(run, "crash-loop")
                    })
                    .await;
                self.changed(id, old);
            }
        }
    }

    /// Starts a new run of an existing process.
    async fn relaunch(&mut self, id: u64, why: &'static str, manual: bool) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        let old = p.state;
        if manual {
            p.backoff.reset();
        }
        let unit = systemd::scope_name(&p.name, &id.to_string());
        let u = unit.clone();
        let inserted = self
            .store
            .call(move |db| db.insert_run(id, old.as_str(), &u, why, manual, store::now_us()))
            .await;
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        let run = match inserted {
            Ok(r) => r,
            Err(e) => {
                for w in std::mem::take(&mut p.launch_waiters) {
                    let _ = w.send(Err(Error::Storage(e.to_string())));
                }
                return;
            }
        };
        p.restarts = if manual { 0 } else { p.restarts + 1 };
        p.state = State::Starting;
        p.run = RunRecord {
            id: run,
            process_id: id,
            unit,
            started_at: store::now_us(),
            ..Default::default()
        };
        p.stop_requested = false;
        p.kill_signal = 0;
        p.early_exit = false;
        p.next_restart_at = 0;
        p.usage = Usage::default();
        self.changed(id, old);
        self.spawn_launch(id);
    }

    // ---- stop / kill / restart / remove ---------------------------------

    async fn begin_stop(&mut self, id: u64, after: AfterStop, reply: Option<Reply<()>>) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        match p.state {
            State::Starting => {
                // Let the launch finish (its scope must exist to be stopped),
                // then ask again: Stop and Remove of a process that is
                // between two runs of a restart loop just work.
                let (ltx, lrx) = oneshot::channel::<Result<String, Error>>();
                p.launch_waiters.push(ltx);
                let h = Handle {
                    tx: self.tx.clone(),
                };
                let id_s = id.to_string();
                tokio::spawn(async move {
                    let _ = lrx.await;
                    let r = match after {
                        AfterStop::Remove => {
                            h.ask(|reply| Command::Remove { id: id_s, reply }).await
                        }
                        AfterStop::Relaunch => {
                            h.ask(|reply| Command::Restart { id: id_s, reply }).await
                        }
                        AfterStop::Nothing => {
                            h.ask(|reply| Command::Stop { id: id_s, reply }).await
                        }
                    };
                    if let Some(reply) = reply {
                        let _ = reply.send(r.unwrap_or_else(|| {
                            Err(Error::Busy("the agent is shutting down".into()))
                        }));
                    }
                });
            }
            State::Running | State::Stopping => {
                if after != AfterStop::Nothing {
                    p.after_stop = after;
                }
                p.stop_waiters.extend(reply);
                if p.state == State::Stopping {
                    return;
                }
                p.stop_requested = true;
                p.state = State::Stopping;
                let (run, unit) = (p.run.id, p.run.unit.clone());
                let _ = self
                    .store
                    .call(move |db| {
                        db.set_state(
                            id,
                            Some(run),
                            "running",
                            "stopping",
                            "requested",
                            store::now_us(),
                        )
                    })
                    .await;
                self.changed(id, State::Running);
                self.spawn_stop(id, run, unit);
            }
            State::Stopped | State::Exited | State::Failed => {
                // Already ended: a pending automatic restart is cancelled.
                p.next_restart_at = 0;
                self.finish_stop(id, after, reply.into_iter().collect())
                    .await;
            }
        }
    }

    /// Stops `unit` in its own task and reports `StopDone` for `run`.
    fn spawn_stop(&self, id: u64, run: u64, unit: String) {
        let sd = self.systemd.clone();
        let tx = self.tx.clone();
        let timeout = self.cfg.stop_timeout;
        tokio::spawn(async move {
            let result = sd
                .stop_unit(&unit, timeout)
                .await
                .map_err(|e| e.to_string());
            let _ = tx.send(Msg::Fact(Fact::StopDone { id, run, result })).await;
        });
    }

    async fn stop_done(&mut self, id: u64, run: u64, result: Result<(), String>) {
        let Some(p) = self.procs.get(&id) else { return };
        if p.run.id != run {
            return;
        }
        if let Err(e) = result {
            let p = self
                .procs
                .get_mut(&id)
                .map(|p| std::mem::take(&mut p.stop_waiters))
                .unwrap_or_default();
            for w in p {
                let _ = w.send(Err(Error::Systemd(e.clone())));
            }
            return;
        }
        // The scope is gone, so the shim has written its record (or was
        // killed): settle the run now rather than wait for inotify.
        self.settle_run(id, run).await;
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        let after = std::mem::replace(&mut p.after_stop, AfterStop::Nothing);
        let waiters = std::mem::take(&mut p.stop_waiters);
        self.finish_stop(id, after, waiters).await;
    }

    async fn finish_stop(&mut self, id: u64, after: AfterStop, waiters: Vec<Reply<()>>) {
        match after {
            AfterStop::Nothing => {
                for w in waiters {
                    let _ = w.send(Ok(()));
                }
            }
            AfterStop::Remove => {
                let r = self
                    .store
                    .call(move |db| db.delete_process(id, "removed by request", store::now_us()))
                    .await;
                if r.is_ok() {
                    self.procs.remove(&id);
                    let _ = std::fs::remove_dir_all(self.logs_dir.join(id.to_string()));
                    self.publish(Event::Removed(id.to_string()));
                }
                let r = r.map_err(Error::from);
                for w in waiters {
                    let _ = w.send(
                        r.as_ref()
                            .map(|_| ())
                            .map_err(|e| Error::Storage(e.to_string())),
                    );
                }
            }
            AfterStop::Relaunch => {
                // Restart answers once the new run is up; adapt the waiters.
                let Some(p) = self.procs.get_mut(&id) else {
                    return;
                };
                for w in waiters {
                    let (tx, rx) = oneshot::channel::<Result<String, Error>>();
                    p.launch_waiters.push(tx);
                    tokio::spawn(async move {
                        let r = rx
                            .await
                            .unwrap_or_else(|_| Err(Error::Busy("agent is shutting down".into())));
                        let _ = w.send(r.map(|_| ()));
                    });
                }
                self.relaunch(id, "restart requested", true).await;
            }
        }
    }

    async fn restart(&mut self, id: u64, reply: Reply<()>) {
        let Some(p) = self.procs.get(&id) else { return };
        match p.state {
            State::Starting | State::Stopping => {
                let _ = reply.send(Err(Error::Busy(format!(
                    "process {id} is {}; try again",
                    p.state
                ))));
            }
            _ => self.begin_stop(id, AfterStop::Relaunch, Some(reply)).await,
        }
    }

    fn kill(&mut self, id: u64, signal: i32) -> Result<(), Error> {
        if !(1..=64).contains(&signal) {
            return Err(Error::InvalidArgument(format!(
                "signal {signal} is not between 1 and 64"
            )));
        }
        let p = self
            .procs
            .get_mut(&id)
            .ok_or_else(|| not_found(&id.to_string()))?;
        if p.state != State::Running && p.state != State::Stopping {
            return Err(Error::Busy(format!(
                "process {id} is not running (state {})",
                p.state
            )));
        }
        let pid = p.run.main_pid as i32;
        if pid <= 1 {
            return Err(Error::Busy(format!("process {id} has no main PID")));
        }
        p.kill_signal = signal;
        // The command leads its own process group (the shim sets it up), so
        // the signal reaches it and the children it did not detach, as Ctrl-C
        // in a terminal would; Stop covers the whole scope.
        // SAFETY: kill(2) has no memory-safety preconditions.
        let rc = unsafe { libc::kill(-pid, signal) };
        if rc != 0 {
            // SAFETY: as above.
            let rc = unsafe { libc::kill(pid, signal) };
            if rc != 0 {
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::ESRCH) {
                    return Err(Error::Busy(format!("signal {signal} to pid {pid}: {err}")));
                }
            }
        }
        Ok(())
    }

    async fn matching(&mut self, filter: Filter, after: AfterStop, reply: Reply<Vec<String>>) {
        if filter.workspace.is_none() && filter.session.is_none() {
            let _ = reply.send(Err(Error::InvalidArgument(
                "filter: Workspace or Session is required (refusing to act on every process)"
                    .into(),
            )));
            return;
        }
        let ids: Vec<u64> = self
            .procs
            .values()
            .filter(|p| filter.matches(&p.workspace, &p.session, p.state.as_str()))
            .filter(|p| after == AfterStop::Remove || p.state.is_active())
            .map(|p| p.id)
            .collect();
        let mut pending = Vec::new();
        for &id in &ids {
            let (tx, rx) = oneshot::channel();
            self.begin_stop(id, after, Some(tx)).await;
            pending.push(rx);
        }
        tokio::spawn(async move {
            let mut first_err = None;
            for rx in pending {
                if let Ok(Err(e)) = rx.await {
                    first_err.get_or_insert(e);
                }
            }
            let _ = reply.send(match first_err {
                Some(e) => Err(e),
                None => Ok(ids.iter().map(|i| i.to_string()).collect()),
            });
        });
    }

    // ---- storage failures ------------------------------------------------

    /// Rewrites every process's state after writes failed; when that
    /// succeeds the store is healthy again and exit records whose runs are
    /// settled can go.
    async fn resync(&mut self) {
        let snapshot: Vec<(u64, String, u32, RunRecord)> = self
            .procs
            .values()
            .map(|p| {
                (
                    p.id,
                    p.state.as_str().to_string(),
                    p.restarts,
                    p.run.clone(),
                )
            })
            .collect();
        if self
            .store
            .call(move |db| db.resync(&snapshot, store::now_us()))
            .await
            .is_ok()
        {
            tracing::info!("storage writes resumed");
            self.store.mark_healthy();
            for run in exits::pending(&self.exits_dir) {
                let settled = self
                    .procs
                    .values()
                    .any(|p| p.run.id == run && !p.state.is_active());
                if settled {
                    exits::remove(&self.exits_dir, run);
                }
            }
        }
    }

    // ---- retention -----------------------------------------------------

    async fn prune(&mut self) {
        let cutoff = store::now_us().saturating_sub(self.cfg.retention.as_micros() as u64);
        let max = self.cfg.max_events;
        match self
            .store
            .call(move |db| db.prune(cutoff, max, store::now_us()))
            .await
        {
            Ok(ids) => {
                for id in ids {
                    if self.procs.remove(&id).is_some() {
                        let _ = std::fs::remove_dir_all(self.logs_dir.join(id.to_string()));
                        self.publish(Event::Removed(id.to_string()));
                    }
                }
            }
            Err(e) => tracing::error!("retention: {e}"),
        }
    }

    // ---- start-up reconciliation ----------------------------------------

    /// SQLite is the record, systemd and the kernel are the truth: adopt
    /// live scopes, record what ended while we were away (from the shims'
    /// exit records), relaunch what must run, stop scopes nobody owns.
    async fn reconcile(&mut self) -> Result<(), Error> {
        let records = self.store.call(|db| db.load_all()).await?;
        let live: HashMap<String, String> =
            match self.systemd.list_scopes("app-corral-*.scope").await {
                Ok(v) => v.into_iter().collect(),
                Err(e) => return Err(Error::Systemd(e.to_string())),
            };
        let mut owned = std::collections::HashSet::new();
        let mut to_relaunch = Vec::new();
        let mut to_settle = Vec::new();
        for (rec, run) in records {
            let id = rec.id;
            let state = State::parse(&rec.state).unwrap_or(State::Failed);
            let run = run.unwrap_or_default();
            owned.insert(run.unit.clone());
            let mut p = Proc::new(rec, run, state);
            if state.is_active() {
                let record = exits::read(&self.exits_dir, p.run.id);
                let alive = live
                    .get(&p.run.unit)
                    .is_some_and(|s| s == "active" || s == "stopping");
                if record.is_some() && state != State::Starting {
                    p.state = State::Running;
                    to_settle.push((id, p.run.id));
                } else if alive && record.is_none() {
                    self.adopt(&mut p).await;
                } else {
                    // Scope gone and no record: never started (agent died
                    // mid-launch) or lost with its scope (reboot, logout).
                    let reason = if state == State::Starting {
                        "spawn-failed"
                    } else {
                        "lost"
                    };
                    let end = Ending {
                        state: "failed".into(),
                        exit_code: -1,
                        exit_signal: 0,
                        reason: reason.into(),
                        at: store::now_us(),
                    };
                    p.apply_ending(&end);
                    let (run_id, o) = (p.run.id, state.as_str());
                    self.store
                        .call(move |db| db.record_exit(id, run_id, o, &end))
                        .await?;
                    if p.config.persistent {
                        to_relaunch.push(id);
                    }
                }
            }
            self.procs.insert(id, p);
        }
        for (unit, state) in &live {
            if !owned.contains(unit) && state != "inactive" {
                tracing::warn!("stopping scope {unit}: no process in the database owns it");
                let sd = self.systemd.clone();
                let (u, t) = (unit.clone(), self.cfg.stop_timeout);
                tokio::spawn(async move {
                    let _ = sd.stop_unit(&u, t).await;
                });
            }
        }
        for (id, run) in to_settle {
            self.settle_run(id, run).await;
            // Persistent means "running whenever the agent runs": whatever
            // ended it while the agent was away (a logout's SIGTERM leaves an
            // exit record too), it comes back unless its policy already
            // scheduled a restart.
            let relaunch = self.procs.get(&id).is_some_and(|p| {
                p.config.persistent && !p.state.is_active() && p.next_restart_at == 0
            });
            if relaunch {
                to_relaunch.push(id);
            }
        }
        for id in to_relaunch {
            let _ = self
                .store
                .call(move |db| {
                    db.add_event(
                        id,
                        None,
                        "persistent",
                        "not running at agent start: relaunching",
                        store::now_us(),
                    )
                })
                .await;
            self.relaunch(id, "persistent", false).await;
        }
        // Records of runs nobody tracks any more.
        let known: std::collections::HashSet<u64> = self.procs.values().map(|p| p.run.id).collect();
        for run in exits::pending(&self.exits_dir) {
            if !known.contains(&run) {
                exits::remove(&self.exits_dir, run);
            }
        }
        for p in self.procs.values() {
            tracing::debug!(id = p.id, state = %p.state, "known at start");
        }
        Ok(())
    }

    async fn adopt(&mut self, p: &mut Proc) {
        let id = p.id;
        if p.run.control_group.is_empty() {
            // The agent died between scope creation and recording it.
            match self.systemd.control_group(&p.run.unit).await {
                Ok(cg) => p.run.control_group = cg,
                Err(e) => tracing::warn!(id, "cgroup of {}: {e}", p.run.unit),
            }
        }
        let procs = match &self.cgroups {
            Some(fs) if !p.run.control_group.is_empty() => {
                fs.read_procs(&p.run.control_group).unwrap_or_default()
            }
            _ => vec![],
        };
        if let Some((_shim, main)) = launch::find_shim_and_main(&procs) {
            if p.run.main_pid == 0 {
                p.run.main_pid = main;
            }
        }
        let was = p.state;
        p.state = if was == State::Stopping {
            State::Stopping
        } else {
            State::Running
        };
        p.fresh = false;
        let (run, pid, cg) = (p.run.id, p.run.main_pid, p.run.control_group.clone());
        let r = if was == State::Starting {
            self.store
                .call(move |db| db.mark_running(id, run, pid, &cg, store::now_us()))
                .await
        } else {
            self.store
                .call(move |db| {
                    db.add_event(
                        id,
                        Some(run),
                        "adopted",
                        &format!("re-adopted at agent start (pid {pid})"),
                        store::now_us(),
                    )
                })
                .await
        };
        if let Err(e) = r {
            tracing::error!("recording adoption of {id}: {e}");
        }
        if was == State::Stopping {
            // The stop was in flight when the agent died: finish it.
            p.stop_requested = true;
            self.spawn_stop(id, run, p.run.unit.clone());
        }
    }
}

impl Proc {
    /// A process as recorded, with nothing in flight.
    fn new(rec: ProcessRecord, run: RunRecord, state: State) -> Proc {
        Proc {
            id: rec.id,
            name: rec.name,
            workspace: rec.workspace,
            session: rec.session,
            config: rec.config,
            state,
            run,
            restarts: rec.restarts,
            stop_requested: false,
            kill_signal: 0,
            after_stop: AfterStop::Nothing,
            stop_waiters: vec![],
            launch_waiters: vec![],
            fresh: false,
            early_exit: false,
            launched_at: Instant::now(),
            backoff: Backoff::default(),
            next_restart_at: 0,
            usage: Usage::default(),
            usage_at: None,
            cpu_sample: None,
            cpu_percent: 0.0,
        }
    }

    fn apply_ending(&mut self, end: &Ending) {
        self.state = State::parse(&end.state).unwrap_or(State::Failed);
        self.run.exited_at = Some(end.at);
        self.run.exit_code = Some(end.exit_code);
        self.run.exit_signal = Some(end.exit_signal);
        self.run.reason = Some(end.reason.clone());
    }
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("no process with id '{id}'"))
}

/// The state a run ends in, from what the shim recorded and who asked.
fn ending(stop_requested: bool, kill_signal: i32, rec: Option<&ExitRecord>, oom: bool) -> Ending {
    let at = rec.map(|r| r.exited_at_us).unwrap_or_else(store::now_us);
    let (code, signal) = rec.map(|r| (r.code, r.signal)).unwrap_or((-1, 0));
    let (state, reason) = if stop_requested {
        (State::Stopped, "stopped")
    } else if rec.is_none() {
        (State::Failed, "lost")
    } else if signal != 0 && signal == kill_signal {
        (State::Stopped, "killed")
    } else if signal == libc::SIGKILL && oom {
        (State::Failed, "oom-kill")
    } else if signal != 0 {
        (State::Failed, "signal")
    } else if code == 0 {
        (State::Exited, "exit")
    } else {
        (State::Failed, "exit")
    };
    Ending {
        state: state.as_str().into(),
        exit_code: code,
        exit_signal: signal,
        reason: reason.into(),
        at,
    }
}

/// Hold the shim, wrap it in its scope, release it: the command's first
/// instruction runs inside the scope.
async fn launch_run(
    shim: &std::path::Path,
    sd: &Systemd,
    unit: &str,
    spec: &LaunchSpec,
    props: &ScopeProps,
    relaunch: bool,
) -> Result<Launched, Error> {
    let held = launch::hold(shim, spec)
        .await
        .map_err(|e| Error::SpawnFailed(e.to_string()))?;
    let shim_pid = held.shim_pid;
    let mut started = sd.start_scope(unit, &[shim_pid], props).await;
    if relaunch && started.as_ref().is_err_and(|e| e.is_unit_exists()) {
        // Regression (bench, RestartDelayMs=0): the previous run's scope,
        // same name, can still be going away (leftovers being stopped, or
        // systemd not yet done collecting the empty unit). It is ours and
        // its run has ended: finish it off, then retry while the name is
        // still taken, for a bounded time.
        let _ = sd.stop_unit(unit, props.stop_timeout).await;
        for _ in 0..100 {
            started = sd.start_scope(unit, &[shim_pid], props).await;
            if !started.as_ref().is_err_and(|e| e.is_unit_exists()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    if let Err(e) = started {
        held.abandon();
        return Err(Error::Systemd(e.to_string()));
    }
    let control_group = launch::read_control_group(shim_pid).unwrap_or_default();
    match held.release().await {
        Ok(main_pid) => Ok(Launched {
            shim_pid,
            main_pid,
            control_group,
        }),
        Err(launch::Error::Spawn { message, .. }) => Err(Error::SpawnFailed(format!(
            "cannot execute '{}': {message}",
            spec.argv[0]
        ))),
        Err(e) => {
            // The shim is confused or gone; make sure its scope goes too.
            let _ = sd.stop_unit(unit, Duration::from_secs(1)).await;
            Err(Error::SpawnFailed(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(code: i32, signal: i32) -> ExitRecord {
        ExitRecord {
            run: 1,
            pid: 2,
            code,
            signal,
            core_dumped: false,
            exited_at_us: 5,
        }
    }

    #[test]
    fn endings_follow_the_state_rules() {
        // (stop requested, Kill signal sent, record (code, signal), OOM) -> (state, reason)
        let cases = [
            (false, 0, Some((0, 0)), false, "exited", "exit"),
            (false, 0, Some((3, 0)), false, "failed", "exit"),
            (false, 0, Some((-1, 9)), false, "failed", "signal"),
            (false, 0, Some((-1, 9)), true, "failed", "oom-kill"),
            (false, 15, Some((-1, 15)), false, "stopped", "killed"),
            (false, 1, Some((-1, 15)), false, "failed", "signal"),
            (true, 0, Some((-1, 15)), false, "stopped", "stopped"),
            (true, 0, None, false, "stopped", "stopped"),
            (false, 0, None, false, "failed", "lost"),
        ];
        for (stop, kill, r, oom, state, reason) in cases {
            let record = r.map(|(c, s)| rec(c, s));
            let e = ending(stop, kill, record.as_ref(), oom);
            assert_eq!(
                (e.state.as_str(), e.reason.as_str()),
                (state, reason),
                "{stop} {kill} {r:?} {oom}"
            );
        }
        assert_eq!(ending(false, 0, Some(&rec(3, 0)), false).at, 5);
    }
}
