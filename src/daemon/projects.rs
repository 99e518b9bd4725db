//! Bringing a workspace to its project file (`corral.toml`, read by
//! [`crate::project`]) and taking it down: `Up` and `Down` of the bus.
//!
//! The graph lives here, in the agent, not in the client: an operation
//! runs on a task of its own, so a client that goes away leaves it going,
//! and it is recorded in the store (`project_ops`) until it ends, so an
//! agent restarted midway runs it again at start. Running one again is
//! safe because an operation is level-triggered: it looks at what runs
//! when it begins (one list of the workspace; only one operation runs
//! per workspace) — a process of the workspace with the instance's name
//! and the same spec hash (the `corral.spec-hash` label) is left alone —
//! so a resumed or repeated `up` starts only what is missing and changes
//! nothing the second time. Instances that depend on nothing start
//! together, [`UP_IN_FLIGHT`] at a time; the others in order.
//!
//! An instance starts only once each of its dependencies meets its
//! condition (`started`, `healthy`, `completed-successfully`); the wait
//! is woken by the supervisor's events (an sd_notify `READY=1` among
//! them), not by polling — except a `log` readiness, which rereads the
//! dependency's newest output lines every [`LOG_POLL`]. A dependency that fails (or cannot meet its condition any
//! more) holds its dependents, with the reason, instead of starting them.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use super::store::Store;
use super::supervisor::{Access, Command, Error, Event, Handle, RunAs};
use crate::api::{Filter, Health, Limits, NotifyState, ProcessView, State};
use crate::config::Mode;
use crate::project::{Condition, Instance, Project, Readiness, LABEL_PROJECT, LABEL_SPEC_HASH};

/// How often a `log` readiness rereads its dependency's output.
const LOG_POLL: Duration = Duration::from_millis(200);

/// Output lines a `log` readiness searches (the newest of the run).
const LOG_LINES: u32 = 2000;

/// How long a dependency may take to meet its condition while it runs
/// (an unhealthy one may still become healthy: a database replaying its
/// log); past it, its dependents are held.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Most processes one `Up`/`Down` may name.
pub const MAX_NAMES: usize = 256;

/// Up or down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Up,
    Down,
}

/// One operation as asked for, and as recorded until it ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    pub kind: Kind,
    /// The uid it acts for (the owner of what it starts).
    pub owner: u32,
    /// The project file, absolute.
    pub file: PathBuf,
    /// The processes named (none: all).
    pub names: Vec<String>,
    /// The caller's environment, under the file's own (`up`).
    pub env: Vec<(String, String)>,
    /// `down`: forget the processes too.
    pub remove: bool,
}

/// What one instance came to: (instance name, action, detail).
pub type Step = (String, String, String);

/// The bus's handle to the operations.
#[derive(Clone)]
pub struct Projects {
    inner: Arc<Inner>,
}

struct Inner {
    handle: Handle,
    store: Store,
    /// Bumped on every supervisor event: what waiting steps wait on.
    changes: watch::Receiver<u64>,
    /// The running operation of each (owner, workspace), by generation: a
    /// new one for the same workspace replaces it.
    running: Mutex<HashMap<(u32, String), (u64, tokio::task::AbortHandle)>>,
    generation: std::sync::atomic::AtomicU64,
    /// Steps as they happen, for the bus's `ProjectStep` signal:
    /// (owner, workspace, step).
    steps: mpsc::UnboundedSender<(u32, String, Step)>,
    mode: Mode,
}

impl Projects {
    /// The operations' handle; `events` are the supervisor's (what wakes
    /// waiting steps), `steps` receives each step as it happens.
    pub fn new(
        handle: Handle,
        store: Store,
        mut events: mpsc::UnboundedReceiver<Event>,
        steps: mpsc::UnboundedSender<(u32, String, Step)>,
        mode: Mode,
    ) -> Projects {
        let (bump, changes) = watch::channel(0u64);
        tokio::spawn(async move {
            while events.recv().await.is_some() {
                bump.send_modify(|n| *n = n.wrapping_add(1));
            }
        });
        Projects {
            inner: Arc::new(Inner {
                handle,
                store,
                changes,
                running: Mutex::default(),
                generation: 0.into(),
                steps,
                mode,
            }),
        }
    }

    /// Runs the operations an earlier agent left unfinished.
    pub async fn resume(&self) {
        let ops = match self.inner.store.call(|db| db.project_ops()).await {
            Ok(ops) => ops,
            Err(e) => {
                tracing::warn!("cannot read unfinished project operations: {e}");
                return;
            }
        };
        for op in ops {
            let file = op.file.display().to_string();
            tracing::info!(file, "resuming `{:?}` of a project", op.kind);
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.run(op).await {
                    tracing::warn!(file, "resumed project operation failed: {e}");
                }
            });
        }
    }

    /// Checks the file, records the operation and runs it to its end (on
    /// a task of its own: it goes on if the caller goes away); answers
    /// what each instance came to.
    pub async fn run(&self, op: Op) -> Result<Vec<Step>, Error> {
        if op.names.len() > MAX_NAMES {
            return Err(Error::InvalidArgument(format!(
                "more than {MAX_NAMES} process names"
            )));
        }
        // As its owner: in system mode their login's ids and environment.
        let run_as = match self.inner.mode {
            Mode::User => RunAs {
                uid: op.owner,
                credentials: None,
                login_env: None,
                home: None,
            },
            Mode::System => super::bus::run_as_uid(op.owner).await?,
        };
        let project = load_as(op.file.clone(), run_as.credentials.clone()).await?;
        let instances = match op.kind {
            Kind::Up => project.order(&op.names),
            Kind::Down => project.stop_order(&op.names),
        }
        .map_err(|e| Error::InvalidProject(e.to_string()))?;
        let key = (op.owner, project.workspace().to_string());
        let record = op.clone();
        let workspace = key.1.clone();
        let owner = op.owner;
        self.inner
            .store
            .call(move |db| db.put_project_op(&workspace, &record))
            .await?;

        let generation = 1 + self
            .inner
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (done_tx, done_rx) = oneshot::channel();
        let run = Run {
            inner: self.inner.clone(),
            project,
            op,
            run_as,
            access: Access::Owner(owner),
        };
        let me = self.clone();
        let task_key = key.clone();
        let task = tokio::spawn(async move {
            let steps = match run.op.kind {
                Kind::Up => run.up(&instances).await,
                Kind::Down => run.down(&instances).await,
            };
            me.finished(task_key, generation).await;
            let _ = done_tx.send(steps);
        });
        // A newer operation on the workspace replaces an older one (its
        // record was just overwritten): as `docker compose up` run again.
        if let Some((_, old)) = self.lock().insert(key, (generation, task.abort_handle())) {
            old.abort();
        }
        done_rx.await.map_err(|_| {
            Error::Busy("the operation was replaced by a newer one on the workspace".into())
        })
    }

    /// An operation ended: forget it, unless a newer one replaced it.
    async fn finished(&self, key: (u32, String), generation: u64) {
        let current = {
            let mut running = self.lock();
            let current = running.get(&key).is_some_and(|(g, _)| *g == generation);
            if current {
                running.remove(&key);
            }
            current
        };
        if current {
            let (owner, workspace) = key;
            let _ = self
                .inner
                .store
                .call(move |db| db.delete_project_op(owner, &workspace))
                .await;
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(u32, String), (u64, tokio::task::AbortHandle)>> {
        // One insert or remove at a time: consistent after a panic.
        self.inner
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// One operation running.
struct Run {
    inner: Arc<Inner>,
    project: Project,
    op: Op,
    run_as: RunAs,
    access: Access,
}

/// Why a dependency cannot be waited for any more.
type Held = String;

/// Starts of independent instances one `Up` keeps in flight: enough to
/// keep systemd's job queue busy, few enough not to crowd out other
/// clients' calls.
const UP_IN_FLIGHT: usize = 32;

/// What `Up` did with one instance: its step, and what its dependents
/// must know (it was restarted; it is held, and why).
struct UpStep {
    action: &'static str,
    detail: String,
    held: Option<Held>,
    restarted: bool,
}

impl Run {
    fn workspace(&self) -> &str {
        self.project.workspace()
    }

    /// Announces a step that is not an outcome (`waiting`): signal only.
    fn progress(&self, name: &str, action: &str, detail: String) {
        let step = (name.to_string(), action.to_string(), detail);
        let _ = self
            .inner
            .steps
            .send((self.op.owner, self.workspace().to_string(), step));
    }

    fn step(&self, steps: &mut Vec<Step>, name: &str, action: &str, detail: String) {
        tracing::info!(workspace = self.workspace(), "{name}: {action} {detail}");
        let step = (name.to_string(), action.to_string(), detail);
        let _ = self
            .inner
            .steps
            .send((self.op.owner, self.workspace().to_string(), step.clone()));
        steps.push(step);
    }

    /// The workspace's processes now.
    async fn processes(&self) -> Result<Vec<ProcessView>, Error> {
        let filter = Filter {
            workspace: Some(self.workspace().to_string()),
            ..Filter::default()
        };
        let access = self.access;
        self.inner
            .handle
            .ask(|reply| Command::List {
                filter,
                access,
                reply,
            })
            .await
            .ok_or_else(gone)
    }

    /// The process named `name` (the newest, should there be several).
    async fn find(&self, name: &str) -> Result<Option<ProcessView>, Error> {
        Ok(self
            .processes()
            .await?
            .into_iter()
            .filter(|v| v.name == name)
            .max_by_key(|v| v.id.parse::<u64>().unwrap_or(0)))
    }

    /// The newest process of each name in the workspace, from one list:
    /// asking for the whole workspace once per instance made an `Up` of
    /// hundreds into a workspace of hundreds quadratic.
    async fn by_name(&self) -> Result<HashMap<String, ProcessView>, Error> {
        let num = |v: &ProcessView| v.id.parse::<u64>().unwrap_or(0);
        let mut map: HashMap<String, ProcessView> = HashMap::new();
        for v in self.processes().await? {
            if map.get(&v.name).is_none_or(|o| num(o) < num(&v)) {
                map.insert(v.name.clone(), v);
            }
        }
        Ok(map)
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(super::supervisor::Reply<T>) -> Command,
    ) -> Result<T, Error> {
        self.inner.handle.ask(make).await.ok_or_else(gone)?
    }

    async fn up(&self, instances: &[Instance]) -> Vec<Step> {
        let mut steps = Vec::new();
        // Processes (not instances) started anew by this run: their
        // dependents restart too, as declared.
        let mut replaced: BTreeSet<String> = BTreeSet::new();
        let mut held: HashMap<String, Held> = HashMap::new();
        let mut existing = match self.by_name().await {
            Ok(m) => m,
            Err(e) => {
                for inst in instances {
                    self.step(&mut steps, &inst.name, "failed", e.to_string());
                }
                return steps;
            }
        };
        let independent = |inst: &Instance| {
            self.project
                .processes()
                .get(&inst.process)
                .is_some_and(|d| d.depends_on.is_empty())
        };
        let mut rest = instances;
        while let Some(first) = rest.first() {
            // A run of instances that depend on nothing starts together,
            // a few at a time: one after the other, 1,000 starts took
            // seconds of systemd round trips. Steps are told in order.
            let n = rest.iter().take_while(|i| independent(i)).count().max(1);
            let (batch, tail) = rest.split_at(n);
            rest = tail;
            if n == 1 {
                let found = existing.remove(&first.name);
                let outcome = self.up_one(first, found, &replaced, &held).await;
                self.apply(&mut steps, first, outcome, &mut replaced, &mut held);
                continue;
            }
            let work: Vec<_> = batch
                .iter()
                .map(|inst| (inst, existing.remove(&inst.name)))
                .collect();
            // Each step is told as soon as it and those before it are
            // done; what dependents must know is recorded after the run
            // (none of its instances reads it).
            let mut learned = Vec::with_capacity(n);
            {
                let (replaced, held) = (&replaced, &held);
                // The futures made up front: a closure inside the stream
                // would make the task's future not `Send` for every
                // lifetime (rustc's higher-ranked closure limitation).
                let pending: Vec<_> = work
                    .into_iter()
                    .map(|(inst, found)| async move {
                        (inst, self.up_one(inst, found, replaced, held).await)
                    })
                    .collect();
                let mut done = futures_util::stream::iter(pending).buffered(UP_IN_FLIGHT);
                while let Some((inst, o)) = done.next().await {
                    self.step(&mut steps, &inst.name, o.action, o.detail);
                    learned.push((inst, o.restarted, o.held));
                }
            }
            for (inst, restarted, why) in learned {
                if restarted {
                    replaced.insert(inst.process.clone());
                }
                if let Some(why) = why {
                    held.insert(inst.process.clone(), why);
                }
            }
        }
        if self.op.names.is_empty() {
            self.orphans(&mut steps).await;
        }
        steps
    }

    /// Records one instance's outcome: its step, and what its dependents
    /// must know of it.
    fn apply(
        &self,
        steps: &mut Vec<Step>,
        inst: &Instance,
        o: UpStep,
        replaced: &mut BTreeSet<String>,
        held: &mut HashMap<String, Held>,
    ) {
        if o.restarted {
            replaced.insert(inst.process.clone());
        }
        if let Some(why) = o.held {
            held.insert(inst.process.clone(), why);
        }
        self.step(steps, &inst.name, o.action, o.detail);
    }

    /// Brings one instance up: leaves it, starts it, restarts or
    /// replaces it, or holds it for a dependency.
    async fn up_one(
        &self,
        inst: &Instance,
        existing: Option<ProcessView>,
        replaced: &BTreeSet<String>,
        held: &HashMap<String, Held>,
    ) -> UpStep {
        let step = |action, detail| UpStep {
            action,
            detail,
            held: None,
            restarted: false,
        };
        let Some(decl) = self.project.processes().get(&inst.process) else {
            return step(
                "failed",
                format!("no process '{}' in the file", inst.process),
            );
        };
        let hash = match self.project.spec_hash(&inst.process, inst.index) {
            Ok(h) => h,
            Err(e) => return step("failed", e.to_string()),
        };
        let dep_replaced = decl.depends_on.keys().find(|d| replaced.contains(*d));
        let same = existing
            .as_ref()
            .is_some_and(|v| v.labels.get(LABEL_SPEC_HASH) == Some(&hash));
        if same && dep_replaced.is_none() {
            if let Some(v) = existing.as_ref().filter(|v| alive(v)) {
                return step("unchanged", format!("id {}", v.id));
            }
        }
        // It will start: first every dependency must meet its condition.
        if let Some(reason) = self.wait_dependencies(&inst.name, decl, held).await {
            return UpStep {
                held: Some(reason.clone()),
                ..step("held", reason)
            };
        }
        let result = match existing {
            Some(v) if same && dep_replaced.is_none() => self
                .restart(&v)
                .await
                .map(|()| ("started", format!("id {} again", v.id))),
            Some(v) => {
                let why = match dep_replaced {
                    Some(d) if same => format!("'{d}' was restarted"),
                    _ => "its spec changed".to_string(),
                };
                self.replace(&v, inst)
                    .await
                    .map(|detail| ("restarted", format!("{detail} ({why})")))
            }
            None => self.start(inst).await.map(|detail| ("started", detail)),
        };
        match result {
            Ok((action, detail)) => UpStep {
                restarted: action == "restarted",
                ..step(action, detail)
            },
            Err(e) => UpStep {
                held: Some(format!("could not start: {e}")),
                ..step("failed", e.to_string())
            },
        }
    }

    /// Reports (does not stop) processes this file started that it no
    /// longer declares, as `docker compose` warns of orphans.
    async fn orphans(&self, steps: &mut Vec<Step>) {
        let Ok(all) = self.project.order(&[]) else {
            return;
        };
        let declared: BTreeSet<&str> = all.iter().map(|i| i.name.as_str()).collect();
        let file = self.project.path().display().to_string();
        let Ok(views) = self.processes().await else {
            return;
        };
        for v in views {
            if v.labels.get(LABEL_PROJECT) == Some(&file) && !declared.contains(v.name.as_str()) {
                let detail = format!(
                    "id {}: no longer in the file (`corralctl rm {}` removes it)",
                    v.id, v.id
                );
                self.step(steps, &v.name, "orphan", detail);
            }
        }
    }

    async fn down(&self, instances: &[Instance]) -> Vec<Step> {
        let mut steps = Vec::new();
        let mut existing = match self.by_name().await {
            Ok(m) => m,
            Err(e) => {
                for inst in instances {
                    self.step(&mut steps, &inst.name, "failed", e.to_string());
                }
                return steps;
            }
        };
        for inst in instances {
            let Some(v) = existing.remove(&inst.name) else {
                self.step(&mut steps, &inst.name, "absent", String::new());
                continue;
            };
            let id = v.id.clone();
            let (action, result) = if self.op.remove {
                let access = self.access;
                let r = self
                    .ask(|reply| Command::Remove { id, access, reply })
                    .await;
                ("removed", r)
            } else if v.state.is_active() || v.next_restart_at != 0 {
                let access = self.access;
                let r = self.ask(|reply| Command::Stop { id, access, reply }).await;
                ("stopped", r)
            } else {
                ("unchanged", Ok(()))
            };
            match result {
                Ok(()) => self.step(&mut steps, &inst.name, action, format!("id {}", v.id)),
                Err(e) => self.step(&mut steps, &inst.name, "failed", e.to_string()),
            }
        }
        steps
    }

    /// Starts the instance; answers the step's detail: its id, and what
    /// of its limits this host could not apply, if any.
    async fn start(&self, inst: &Instance) -> Result<String, Error> {
        let spec = self
            .project
            .start_spec(&inst.process, inst.index, &self.op.env)
            .map_err(|e| Error::InvalidProject(e.to_string()))?;
        let run_as = self.run_as.clone();
        let id = self
            .ask(|reply| Command::Start {
                spec: Box::new(spec),
                run_as,
                reply,
            })
            .await?;
        // The limits a start spec does not carry, set at once after it.
        let limits = match self.project.processes().get(&inst.process) {
            Some(d) => Limits {
                memory_high: d.memory_high,
                cpu_weight: d.cpu_weight,
                io_weight: d.io_weight,
                ..Limits::default()
            },
            None => Limits::default(),
        };
        if limits == Limits::default() {
            return Ok(format!("id {id}"));
        }
        let (target, access) = (id.clone(), self.access);
        let set = self
            .ask(|reply| Command::SetLimits {
                id: target,
                access,
                limits,
                reply,
            })
            .await;
        Ok(match set {
            Ok(()) => format!("id {id}"),
            Err(e) => format!("id {id}; its limits were not applied: {e}"),
        })
    }

    async fn restart(&self, v: &ProcessView) -> Result<(), Error> {
        let (id, access) = (v.id.clone(), self.access);
        self.ask(|reply| Command::Restart { id, access, reply })
            .await
    }

    /// Stops and forgets the old process, then starts the new spec (its
    /// port is free by then).
    async fn replace(&self, old: &ProcessView, inst: &Instance) -> Result<String, Error> {
        let (id, access) = (old.id.clone(), self.access);
        self.ask(|reply| Command::Remove { id, access, reply })
            .await?;
        self.start(inst).await
    }

    /// Waits until every dependency of `decl` meets its condition; the
    /// reason it never will, if so.
    async fn wait_dependencies(
        &self,
        who: &str,
        decl: &crate::project::ProcessDecl,
        held: &HashMap<String, Held>,
    ) -> Option<Held> {
        for (dep, cond) in &decl.depends_on {
            if let Some(why) = held.get(dep) {
                return Some(format!("dependency '{dep}' is held ({why})"));
            }
            let Some(target) = self.project.processes().get(dep) else {
                continue;
            };
            let readiness = target.readiness.clone();
            for index in 0..target.instances {
                let name = target.instance_name(index);
                if let Err(why) = self.wait_for(who, &name, *cond, readiness.as_ref()).await {
                    return Some(format!("dependency '{name}' {why}"));
                }
            }
        }
        None
    }

    /// Waits until `name` meets `cond`; woken by the supervisor's events
    /// (and, for a log readiness, every [`LOG_POLL`]).
    async fn wait_for(
        &self,
        who: &str,
        name: &str,
        cond: Condition,
        readiness: Option<&Readiness>,
    ) -> Result<(), String> {
        let waited =
            tokio::time::timeout(READY_TIMEOUT, self.wait_until(who, name, cond, readiness));
        match waited.await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "did not become {} within {} s",
                cond.as_str(),
                READY_TIMEOUT.as_secs()
            )),
        }
    }

    async fn wait_until(
        &self,
        who: &str,
        name: &str,
        cond: Condition,
        readiness: Option<&Readiness>,
    ) -> Result<(), String> {
        let mut changes = self.inner.changes.clone();
        let pattern = match (cond, readiness) {
            (Condition::Healthy, Some(Readiness::Log { pattern })) => Some(
                regex::Regex::new(pattern).map_err(|e| format!("has a bad log pattern: {e}"))?,
            ),
            _ => None,
        };
        let mut announced = false;
        loop {
            changes.borrow_and_update();
            let view = self
                .find(name)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("is not running (no such process)")?;
            let verdict = match (&pattern, readiness) {
                (Some(re), _) => self.log_ready(&view, re).await,
                (None, Some(Readiness::Notify)) if cond == Condition::Healthy => {
                    // Running, then `READY=1` (sd_notify) of this run.
                    match condition(&view, Condition::Started) {
                        Verdict::Met if view.state != State::Running => {
                            Verdict::Never("exited".into())
                        }
                        Verdict::Met if view.notify_state == NotifyState::Ready => Verdict::Met,
                        Verdict::Met => Verdict::Wait,
                        other => other,
                    }
                }
                _ => condition(&view, cond),
            };
            match verdict {
                Verdict::Met => return Ok(()),
                Verdict::Never(why) => return Err(why),
                Verdict::Wait if !announced => {
                    announced = true;
                    let detail = format!("for '{name}' to be {}", cond.as_str());
                    self.progress(who, "waiting", detail);
                }
                Verdict::Wait => {}
            }
            if pattern.is_some() {
                tokio::select! {
                    r = changes.changed() => if r.is_err() { return Err("agent stopping".into()) },
                    () = tokio::time::sleep(LOG_POLL) => {}
                }
            } else if changes.changed().await.is_err() {
                return Err("agent stopping".into());
            }
        }
    }

    /// A `log` readiness: a line of the current run matches.
    async fn log_ready(&self, v: &ProcessView, re: &regex::Regex) -> Verdict {
        match condition(v, Condition::Started) {
            Verdict::Met => {}
            other => return other,
        }
        let (id, access, since_us) = (v.id.clone(), self.access, v.started_at);
        let lines = self
            .ask(|reply| Command::Logs {
                id,
                access,
                lines: LOG_LINES,
                since_us,
                reply,
            })
            .await;
        match lines {
            Ok(lines) if lines.iter().any(|l| re.is_match(&l.text)) => Verdict::Met,
            Ok(_) => Verdict::Wait,
            Err(e) => Verdict::Never(format!("has no readable output: {e}")),
        }
    }
}

/// Reads the project file (and its env files) with the file-system
/// rights of `creds` when set — the system agent reads a user's project
/// as that user, never as root — on a thread of its own: file-system ids
/// are per thread, and the thread ends with them.
async fn load_as(file: PathBuf, creds: Option<crate::shim::Credentials>) -> Result<Project, Error> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("corral-project".into())
        .spawn(move || {
            let loaded = match creds.as_ref().map(become_reader).transpose() {
                Ok(_) => Project::load(&file).map_err(|e| Error::InvalidProject(e.to_string())),
                Err(e) => Err(e),
            };
            let _ = tx.send(loaded);
        })
        .map_err(|e| Error::InvalidArgument(format!("reading the project file: {e}")))?;
    rx.await
        .map_err(|_| Error::InvalidArgument("reading the project file failed".into()))?
}

/// Takes `c`'s groups and file-system ids for this thread only (the raw
/// system calls: libc's wrappers would change every thread's).
fn become_reader(c: &crate::shim::Credentials) -> Result<(), Error> {
    let failed = |what: &str| {
        Error::InvalidArgument(format!(
            "cannot read the project file as uid {}: {what}: {}",
            c.uid,
            std::io::Error::last_os_error()
        ))
    };
    // SAFETY: setgroups(2) reads `groups.len()` gids from the slice.
    let r = unsafe { libc::syscall(libc::SYS_setgroups, c.groups.len(), c.groups.as_ptr()) };
    if r != 0 {
        return Err(failed("setgroups"));
    }
    // SAFETY: setfsgid(2)/setfsuid(2) change only this thread's ids;
    // each returns the previous id, so a second call tells if it took.
    unsafe {
        libc::syscall(libc::SYS_setfsgid, c.gid);
        if libc::syscall(libc::SYS_setfsgid, c.gid) != i64::from(c.gid) {
            return Err(failed("setfsgid"));
        }
        libc::syscall(libc::SYS_setfsuid, c.uid);
        if libc::syscall(libc::SYS_setfsuid, c.uid) != i64::from(c.uid) {
            return Err(failed("setfsuid"));
        }
    }
    Ok(())
}

enum Verdict {
    Met,
    Wait,
    Never(String),
}

/// Whether `v` meets `cond` now, may still, or never will.
fn condition(v: &ProcessView, cond: Condition) -> Verdict {
    let restarting = v.next_restart_at != 0;
    match (cond, v.state) {
        (_, State::Stopped) => Verdict::Never("was stopped".into()),
        (Condition::CompletedSuccessfully, State::Exited) if v.exit_code == 0 => Verdict::Met,
        (Condition::CompletedSuccessfully, State::Failed | State::Exited) if !restarting => {
            Verdict::Never(format!("failed (exit code {})", v.exit_code))
        }
        (Condition::CompletedSuccessfully, _) => Verdict::Wait,
        (_, State::Failed) if !restarting => Verdict::Never("failed".into()),
        (Condition::Started, State::Running | State::Exited) => Verdict::Met,
        (Condition::Healthy, State::Running) => match v.health {
            Health::Healthy => Verdict::Met,
            // Still running: it may yet pass (READY_TIMEOUT bounds this).
            Health::Unhealthy | Health::Starting | Health::None => Verdict::Wait,
        },
        (Condition::Healthy, State::Exited) => Verdict::Never("exited".into()),
        _ => Verdict::Wait,
    }
}

/// Running, starting, about to restart by its policy, or done (a
/// one-shot that exited with code 0 is not run again by `up`).
fn alive(v: &ProcessView) -> bool {
    matches!(v.state, State::Starting | State::Running)
        || v.next_restart_at != 0
        || (v.state == State::Exited && v.exit_code == 0)
}

fn gone() -> Error {
    Error::Busy("the agent is shutting down".into())
}
