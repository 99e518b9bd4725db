//! The actor's races, driven in-process on a fake host under paused tokio
//! time, with a real SQLite file (run inline, so the clock moves only
//! when the actor truly waits). Each test names the race it guards; none
//! needs root, systemd or a bus.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::host::{Cgroups, Clock, Fut, LaunchRequest, Launched, Launcher, Scopes, Standby};
use super::*;
use crate::api::{ExitReason, Filter, ProcessView, StartSpec, State};
use crate::daemon::cgroup::Usage;
use crate::daemon::pidfd::Pidfd;
use crate::daemon::store::{Change, Db, NewProcess, RunChange};
use crate::daemon::systemd::ScopeProps;
use crate::shim::protocol::{NotifyPhase, NotifyRecord};
use crate::shim::ExitRecord;

/// A PID no process can have (above the kernel's pid_max limit), so a
/// stray signal from a test reaches nobody.
const NO_PID: u32 = 2_000_000_000;

/// What the fake host knows and did.
struct World {
    launches_open: watch::Sender<bool>,
    fail_launches: AtomicBool,
    /// (unit, run) of every launch begun, in order.
    launches: Mutex<Vec<(String, RunId)>>,
    stops: Mutex<Vec<String>>,
    exits: Mutex<HashMap<RunId, ExitRecord>>,
    /// Notify records the shims of `Notify` runs wrote.
    notified: Mutex<HashMap<RunId, NotifyRecord>>,
    run_of: Mutex<HashMap<String, RunId>>,
    populated: Mutex<HashSet<String>>,
    live: Mutex<Vec<(String, String)>>,
    /// The main PID and pidfd the next launch reports (else `NO_PID`).
    next_main: Mutex<Option<(u32, Pidfd)>>,
    /// Units of the standby scopes made, in order.
    standbys: Mutex<Vec<String>>,
    /// Units of the standby scopes launches were given, in order.
    standbys_used: Mutex<Vec<String>>,
    /// Held by every standby scope the actor keeps: its count beyond one
    /// is how many are alive.
    standby_token: Arc<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl World {
    fn new() -> Arc<World> {
        Arc::new(World {
            launches_open: watch::channel(true).0,
            fail_launches: AtomicBool::new(false),
            launches: Mutex::default(),
            stops: Mutex::default(),
            exits: Mutex::default(),
            notified: Mutex::default(),
            run_of: Mutex::default(),
            populated: Mutex::default(),
            live: Mutex::default(),
            next_main: Mutex::default(),
            standbys: Mutex::default(),
            standbys_used: Mutex::default(),
            standby_token: Arc::new(()),
        })
    }

    /// The command of `run` ends (its shim writes the record).
    fn exit(&self, run: RunId, code: i32, signal: i32) {
        let rec = ExitRecord {
            run: run.0,
            pid: NO_PID,
            code,
            signal,
            core_dumped: false,
            exited_at_us: 1,
            oom_kills: None,
        };
        lock(&self.exits).insert(run, rec);
    }

    fn launch_count(&self) -> usize {
        lock(&self.launches).len()
    }

    /// Standby scopes made and not dropped.
    fn standbys_alive(&self) -> usize {
        Arc::strong_count(&self.standby_token) - 1
    }
}

fn cgroup_of(unit: &str) -> String {
    format!("/fake/{unit}")
}

struct Fake(Arc<World>);

impl Scopes for Fake {
    fn stop(&self, unit: String, _timeout: Duration) -> Fut<Result<(), String>> {
        let w = self.0.clone();
        Box::pin(async move {
            // A stop takes a while: SIGTERM, the shim records the signal.
            tokio::time::sleep(Duration::from_millis(50)).await;
            lock(&w.stops).push(unit.clone());
            lock(&w.populated).remove(&cgroup_of(&unit));
            let run = lock(&w.run_of).get(&unit).copied();
            if let Some(run) = run {
                if !lock(&w.exits).contains_key(&run) {
                    w.exit(run, -1, libc::SIGTERM);
                }
            }
            Ok(())
        })
    }

    fn list(&self) -> Fut<Result<Vec<(String, String)>, String>> {
        Box::pin(std::future::ready(Ok(lock(&self.0.live).clone())))
    }

    fn control_group(&self, unit: String) -> Fut<Result<String, String>> {
        Box::pin(std::future::ready(Ok(cgroup_of(&unit))))
    }
}

impl Launcher for Fake {
    fn launch(&self, req: LaunchRequest) -> Fut<Result<Launched, Error>> {
        let w = self.0.clone();
        Box::pin(async move {
            let run = RunId(req.spec.run);
            lock(&w.launches).push((req.unit.clone(), run));
            if let Some(s) = &req.standby {
                lock(&w.standbys_used).push(s.unit.clone());
            }
            let mut open = w.launches_open.subscribe();
            let _ = open.wait_for(|o| *o).await;
            if w.fail_launches.load(Ordering::SeqCst) {
                return Err(Error::SpawnFailed(
                    "cannot execute 'x': no such file".into(),
                ));
            }
            lock(&w.run_of).insert(req.unit.clone(), run);
            lock(&w.populated).insert(cgroup_of(&req.unit));
            let (main_pid, pidfd) = match lock(&w.next_main).take() {
                Some((pid, fd)) => (pid, Some(fd)),
                None => (NO_PID, None),
            };
            Ok(Launched {
                shim_pid: NO_PID,
                main_pid,
                control_group: cgroup_of(&req.unit),
                pidfd,
            })
        })
    }

    fn standby(&self, unit: String, _props: ScopeProps) -> Fut<Result<Standby, Error>> {
        lock(&self.0.standbys).push(unit.clone());
        let held = Box::new(self.0.standby_token.clone());
        Box::pin(std::future::ready(Ok(Standby {
            control_group: cgroup_of(&unit),
            unit,
            held,
        })))
    }

    fn exit_path(&self, run: RunId) -> PathBuf {
        PathBuf::from(format!("/fake/exits/{run}"))
    }

    fn read_exit(&self, run: RunId) -> Fut<Option<ExitRecord>> {
        Box::pin(std::future::ready(lock(&self.0.exits).get(&run).cloned()))
    }

    fn remove_exit(&self, run: RunId) -> Fut<()> {
        lock(&self.0.exits).remove(&run);
        Box::pin(std::future::ready(()))
    }

    fn pending_exits(&self) -> Fut<Vec<RunId>> {
        Box::pin(std::future::ready(
            lock(&self.0.exits).keys().copied().collect(),
        ))
    }

    fn read_notify(&self, run: RunId) -> Fut<Option<NotifyRecord>> {
        Box::pin(std::future::ready(
            lock(&self.0.notified).get(&run).cloned(),
        ))
    }
}

/// The actor's tests read no socket table.
struct NoPorts;

impl host::Ports for NoPorts {
    fn refresh(
        &self,
        _: Vec<(crate::daemon::ports::Scope, String)>,
        _: Vec<crate::daemon::ports::Wanted>,
    ) -> Fut<Option<crate::daemon::ports::Found>> {
        Box::pin(std::future::ready(None))
    }
}

impl Cgroups for Fake {
    fn populated(&self, cg: String) -> Fut<bool> {
        Box::pin(std::future::ready(lock(&self.0.populated).contains(&cg)))
    }

    /// A run that has peaked at 10 bytes, when a client asks...
    fn usage(&self, cgs: Vec<String>) -> Fut<Vec<Option<Usage>>> {
        let u = Usage {
            memory_current: Some(10),
            memory_peak: Some(10),
            ..Usage::default()
        };
        Box::pin(std::future::ready(vec![Some(u); cgs.len()]))
    }

    /// ...and uses 200 when the history tick reads it (no peak read).
    fn tick_usage(&self, cgs: Vec<String>) -> Fut<Vec<Option<Usage>>> {
        let u = Usage {
            memory_current: Some(200),
            ..Usage::default()
        };
        Box::pin(std::future::ready(vec![Some(u); cgs.len()]))
    }

    fn cpu_nsec(&self, cgs: Vec<String>) -> Fut<Vec<Option<u64>>> {
        Box::pin(std::future::ready(vec![None; cgs.len()]))
    }

    fn main_pid(&self, _cg: String) -> Fut<Option<u32>> {
        Box::pin(std::future::ready(Some(NO_PID)))
    }

    fn pressure(&self, cgs: Vec<String>) -> Fut<Vec<crate::api::Pressure>> {
        let psi: crate::api::Pressure = [("memory.some".to_string(), 0.5)].into_iter().collect();
        Box::pin(std::future::ready(vec![psi; cgs.len()]))
    }

    fn open_pidfd(&self, _pid: u32, _cg: String) -> Fut<Option<Pidfd>> {
        Box::pin(std::future::ready(None))
    }
}

/// Wall time that moves with tokio's (paused) clock.
struct TestClock(tokio::time::Instant);

impl Clock for TestClock {
    fn now_us(&self) -> u64 {
        1_000_000_000 + self.0.elapsed().as_micros() as u64
    }
}

struct Bed {
    handle: Handle,
    tx: mpsc::Sender<Msg>,
    events: mpsc::UnboundedReceiver<Event>,
    world: Arc<World>,
    _dir: tempfile::TempDir,
}

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("corral.db")
}

async fn bed() -> Bed {
    bed_on(World::new(), tempfile::tempdir().unwrap()).await
}

async fn bed_on(world: Arc<World>, dir: tempfile::TempDir) -> Bed {
    bed_with(world, dir, |_| {}).await
}

async fn bed_with(
    world: Arc<World>,
    dir: tempfile::TempDir,
    tweak: impl FnOnce(&mut Config),
) -> Bed {
    let mut config = Config::defaults(crate::config::Mode::User).unwrap();
    config.state_dir = dir.path().to_path_buf();
    tweak(&mut config);
    let settings = Settings {
        config,
        shim: PathBuf::from("/nonexistent/corral-shim"),
        base_env: vec![],
        home: "/".into(),
    };
    let store = Store::open_inline(&db_path(&dir)).unwrap();
    let fake = Arc::new(Fake(world.clone()));
    let host = Host {
        scopes: fake.clone(),
        launcher: fake.clone(),
        cgroups: fake,
        clock: Arc::new(TestClock(tokio::time::Instant::now())),
        ports: Arc::new(NoPorts),
    };
    let (ev_tx, events) = mpsc::unbounded_channel();
    let (handle, _task, tx) = spawn(settings, store, host, ev_tx).await.unwrap();
    Bed {
        handle,
        tx,
        events,
        world,
        _dir: dir,
    }
}

/// The caller of these tests: uid 1000, running as the agent.
fn me() -> RunAs {
    RunAs {
        uid: 1000,
        credentials: None,
        login_env: None,
        home: None,
    }
}

/// Starts `spec` as `uid`; owned arguments, so it can run in a task.
async fn ask_start(handle: Handle, spec: StartSpec, uid: u32) -> Result<String, Error> {
    let spec = Box::new(spec);
    let run_as = RunAs { uid, ..me() };
    handle
        .ask(|reply| Command::Start {
            spec,
            run_as,
            reply,
        })
        .await
        .unwrap_or_else(|| Err(Error::Busy("the actor stopped".into())))
}

fn spec(restart: &str, delay_ms: u64) -> StartSpec {
    let mut s = StartSpec::new(vec!["server".into()]);
    s.restart = Some(restart.into());
    s.restart_delay_ms = Some(delay_ms);
    s
}

impl Bed {
    async fn start(&self, spec: StartSpec) -> Result<String, Error> {
        ask_start(self.handle.clone(), spec, 1000).await
    }

    /// Sends a command without waiting for its answer.
    fn send(
        &self,
        make: impl FnOnce(Reply<()>) -> Command,
    ) -> oneshot::Receiver<Result<(), Error>> {
        let (tx, rx) = oneshot::channel();
        let msg = Msg::Command(make(tx));
        let sender = self.tx.clone();
        tokio::spawn(async move { sender.send(msg).await.ok() });
        rx
    }

    async fn get(&self, id: &str) -> Result<ProcessView, Error> {
        let id = id.to_string();
        self.handle
            .ask(|reply| Command::Get {
                id,
                access: Access::All,
                reply,
            })
            .await
            .unwrap()
    }

    async fn fact(&self, f: Fact) {
        self.tx.send(Msg::Fact(f)).await.unwrap();
    }

    /// The run's command ends and the watcher reports the record.
    async fn exit(&self, run: RunId, code: i32) {
        self.world.exit(run, code, 0);
        self.fact(Fact::ExitRecorded(Some(run))).await;
    }

    /// The command of `run` says something over sd_notify and the watcher
    /// reports the record.
    async fn notify(&self, run: RunId, phase: NotifyPhase, status: &str) {
        let rec = NotifyRecord {
            run: run.0,
            phase,
            status: status.into(),
        };
        lock(&self.world.notified).insert(run, rec);
        self.fact(Fact::NotifyRecorded(run)).await;
    }

    /// Polls until `id` is in `state` (bounded; time is virtual).
    async fn wait_state(&self, id: &str, state: State) -> ProcessView {
        for _ in 0..1000 {
            let v = self.get(id).await.unwrap();
            if v.state == state {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{id} never became {state}: {:?}", self.get(id).await);
    }

    fn run_of(&self, id: &str) -> RunId {
        let unit = format!("-{id}.scope");
        lock(&self.world.launches)
            .iter()
            .rev()
            .find(|(u, _)| u.ends_with(&unit))
            .map(|(_, r)| *r)
            .unwrap()
    }

    /// Every state change announced so far, as (old, new).
    fn changes(&mut self) -> Vec<(State, State)> {
        let mut out = vec![];
        while let Ok(e) = self.events.try_recv() {
            if let Event::Changed { view, old } = e {
                if view.state != old {
                    out.push((old, view.state));
                }
            }
        }
        out
    }

    /// Waits until the fake host has begun `n` launches.
    async fn launches_begun(&self, n: usize) {
        for _ in 0..1000 {
            if self.world.launch_count() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("launch {n} never began");
    }
}

/// Readiness belongs to a run: what the current run says shows, a record
/// of another run is ignored, and a restarted process starts over at
/// `waiting` with no status.
#[tokio::test(start_paused = true)]
async fn notify_state_follows_the_current_run_and_starts_over_with_the_next() {
    use crate::api::NotifyState;
    let bed = bed().await;
    let mut s = spec("always", 0);
    s.notify = Some(true);
    let id = bed.start(s).await.unwrap();
    let notified = |v: ProcessView| (v.notify_state, v.status_text);
    let waiting = (NotifyState::Waiting, String::new());
    assert_eq!(notified(bed.get(&id).await.unwrap()), waiting);
    let run = lock(&bed.world.launches)[0].1;
    bed.notify(run, NotifyPhase::Waiting, "warming").await;
    let warming = (NotifyState::Waiting, "warming".to_string());
    assert_eq!(notified(bed.get(&id).await.unwrap()), warming);
    // A run that is not (or no longer) this process's current one.
    bed.notify(RunId(run.0 + 1000), NotifyPhase::Ready, "not mine")
        .await;
    assert_eq!(notified(bed.get(&id).await.unwrap()), warming);
    bed.notify(run, NotifyPhase::Ready, "serving").await;
    let ready = (NotifyState::Ready, "serving".to_string());
    assert_eq!(notified(bed.get(&id).await.unwrap()), ready);

    bed.exit(run, 1).await;
    bed.launches_begun(2).await;
    let v = bed.wait_state(&id, State::Running).await;
    assert_eq!(notified(v), waiting);

    let plain = bed.start(spec("no", 0)).await.unwrap();
    let none = (NotifyState::None, String::new());
    assert_eq!(notified(bed.get(&plain).await.unwrap()), none);
}

#[tokio::test(start_paused = true)]
async fn an_exit_recorded_before_the_launch_reply_is_settled_after_it() {
    let mut bed = bed().await;
    bed.world.launches_open.send_replace(false);
    let starting = tokio::spawn(ask_start(bed.handle.clone(), spec("no", 0), 1000));
    bed.launches_begun(1).await;
    let run = lock(&bed.world.launches)[0].1;
    // The command exits at once; its record is seen before the launch
    // task has reported back.
    bed.exit(run, 3).await;
    bed.world.launches_open.send_replace(true);
    let id = starting.await.unwrap().unwrap();
    let v = bed.wait_state(&id, State::Failed).await;
    assert_eq!((v.exit_code, v.exit_reason.as_str()), (3, "exit"));
    assert_eq!(
        bed.changes(),
        [
            (State::Starting, State::Running),
            (State::Running, State::Failed)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn stop_while_starting_waits_for_the_launch_then_stops_it() {
    let bed = bed().await;
    bed.world.launches_open.send_replace(false);
    let starting = tokio::spawn(ask_start(bed.handle.clone(), spec("no", 0), 1000));
    bed.launches_begun(1).await;
    let stopped = bed.send(|reply| Command::Stop {
        id: "1".into(),
        access: Access::All,
        reply,
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(lock(&bed.world.stops).is_empty(), "no scope to stop yet");
    bed.world.launches_open.send_replace(true);
    assert_eq!(starting.await.unwrap().unwrap(), "1");
    stopped.await.unwrap().unwrap();
    let v = bed.get("1").await.unwrap();
    assert_eq!(
        (v.state, v.exit_reason.as_str()),
        (State::Stopped, "stopped")
    );
    assert_eq!(lock(&bed.world.stops).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn unit_removed_during_a_manager_reload_is_ignored_while_the_scope_is_populated() {
    let bed = bed().await;
    let id = bed.start(spec("no", 0)).await.unwrap();
    let unit = bed.get(&id).await.unwrap().unit;
    bed.fact(Fact::ScopeGone(unit.clone())).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(bed.get(&id).await.unwrap().state, State::Running);
    // Now it is gone for real: no process left, no exit record.
    lock(&bed.world.populated).clear();
    bed.fact(Fact::ScopeGone(unit)).await;
    let v = bed.wait_state(&id, State::Failed).await;
    assert_eq!(v.exit_reason, ExitReason::Lost.as_str());
}

#[tokio::test(start_paused = true)]
async fn adopting_a_process_that_was_stopping_finishes_its_stop() {
    let dir = tempfile::tempdir().unwrap();
    let unit = "app-corral-web-1.scope".to_string();
    {
        let mut db = Db::open(&db_path(&dir)).unwrap();
        let config = serde_json::from_str(r#"{"command":["server"],"cwd":"/","env":[],"memory_max":null,"cpu_quota":null,"tasks_max":null,"restart":{"policy":"always","delay_ms":0,"delay_max_ms":0,"reset_sec":0,"limit":9,"limit_interval_sec":9}}"#).unwrap();
        let (id, run, _) = db
            .insert_process(
                &NewProcess {
                    owner: 1000,
                    name: "web",
                    workspace: "default",
                    session: "",
                    config: &config,
                },
                |_| unit.clone(),
                1,
            )
            .unwrap();
        for (old, new, change) in [
            (
                State::Starting,
                State::Running,
                RunChange::Running {
                    main_pid: NO_PID,
                    control_group: cgroup_of(&unit),
                },
            ),
            (State::Running, State::Stopping, RunChange::None),
        ] {
            let c = Change {
                process: id,
                run,
                old,
                new,
                why: "test".into(),
                at: 2,
                run_change: change,
            };
            db.change_state(&c).unwrap();
        }
    }
    let world = World::new();
    lock(&world.live).push((unit.clone(), "active".into()));
    lock(&world.populated).insert(cgroup_of(&unit));
    lock(&world.run_of).insert(unit.clone(), RunId(1));
    let bed = bed_on(world, dir).await;
    let v = bed.wait_state("1", State::Stopped).await;
    assert_eq!(v.exit_reason, "stopped");
    assert_eq!(*lock(&bed.world.stops), [unit]);
    // Stopped on request: its `always` policy does not bring it back.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(bed.world.launch_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn stop_cancels_a_pending_restart_timer() {
    let bed = bed().await;
    let id = bed.start(spec("always", 1000)).await.unwrap();
    bed.exit(bed.run_of(&id), 1).await;
    let v = bed.wait_state(&id, State::Failed).await;
    assert_ne!(v.next_restart_at, 0, "a restart is scheduled");
    bed.send(|reply| Command::Stop {
        id: id.clone(),
        access: Access::All,
        reply,
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(bed.get(&id).await.unwrap().next_restart_at, 0);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(bed.world.launch_count(), 1, "the timer must not relaunch");
    assert_eq!(bed.get(&id).await.unwrap().state, State::Failed);
}

#[tokio::test(start_paused = true)]
async fn remove_during_a_restart_delay_forgets_the_process_for_good() {
    let bed = bed().await;
    let id = bed.start(spec("always", 1000)).await.unwrap();
    bed.exit(bed.run_of(&id), 1).await;
    bed.wait_state(&id, State::Failed).await;
    bed.send(|reply| Command::Remove {
        id: id.clone(),
        access: Access::All,
        reply,
    })
    .await
    .unwrap()
    .unwrap();
    assert!(matches!(bed.get(&id).await, Err(Error::NotFound(_))));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(bed.world.launch_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn two_stops_of_one_process_stop_its_scope_once_and_both_are_answered() {
    let bed = bed().await;
    let id = bed.start(spec("no", 0)).await.unwrap();
    let first = bed.send(|reply| Command::Stop {
        id: id.clone(),
        access: Access::All,
        reply,
    });
    let second = bed.send(|reply| Command::Stop {
        id: id.clone(),
        access: Access::All,
        reply,
    });
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
    assert_eq!(bed.get(&id).await.unwrap().state, State::Stopped);
    assert_eq!(lock(&bed.world.stops).len(), 1);
}

/// An immediate restart runs in the scope made while the last run ran;
/// the next run gets a standby of its own; a stop drops it; a restart
/// with a delay gets none.
#[tokio::test(start_paused = true)]
async fn an_immediate_restart_uses_the_standby_scope_and_a_stop_drops_it() {
    let bed = bed().await;
    let id = bed.start(spec("on-failure", 0)).await.unwrap();
    let world = bed.world.clone();
    let made = |n: usize| {
        let world = world.clone();
        async move {
            for _ in 0..1000 {
                if lock(&world.standbys).len() >= n && world.standbys_alive() >= 1 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            panic!("standby {n} never made: {:?}", lock(&world.standbys));
        }
    };
    made(1).await;
    let first = lock(&bed.world.standbys)[0].clone();
    assert!(first.ends_with(&format!("-{id}-s1.scope")), "{first}");
    bed.exit(bed.run_of(&id), 1).await;
    bed.launches_begun(2).await;
    let v = bed.wait_state(&id, State::Running).await;
    assert_eq!(v.restarts, 1);
    assert_eq!(
        lock(&bed.world.launches)[1].0,
        first,
        "run 2 is in the standby"
    );
    assert_eq!(
        *lock(&bed.world.standbys_used),
        std::slice::from_ref(&first)
    );
    made(2).await;
    assert_ne!(lock(&bed.world.standbys)[1], first);
    assert_eq!(bed.world.standbys_alive(), 1);
    bed.send(|reply| Command::Stop {
        id: id.clone(),
        access: Access::All,
        reply,
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(bed.world.standbys_alive(), 0, "a stop drops the standby");
    // A restart after a delay has time to start its scope: none made.
    let later = bed.start(spec("always", 1000)).await.unwrap();
    bed.wait_state(&later, State::Running).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(lock(&bed.world.standbys).len(), 2);
    assert_eq!(bed.world.standbys_alive(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_automatic_restart_relaunches_after_its_delay() {
    let mut bed = bed().await;
    let id = bed.start(spec("on-failure", 1000)).await.unwrap();
    bed.exit(bed.run_of(&id), 1).await;
    bed.wait_state(&id, State::Failed).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(bed.world.launch_count(), 1, "not before its delay");
    let v = bed.wait_state(&id, State::Running).await;
    assert_eq!((bed.world.launch_count(), v.restarts), (2, 1));
    assert!(bed.changes().contains(&(State::Failed, State::Starting)));
}

#[tokio::test(start_paused = true)]
async fn a_failed_first_launch_leaves_no_process_behind() {
    let mut bed = bed().await;
    bed.world.fail_launches.store(true, Ordering::SeqCst);
    let r = bed.start(spec("always", 0)).await;
    assert!(matches!(r, Err(Error::SpawnFailed(_))), "{r:?}");
    assert!(matches!(bed.get("1").await, Err(Error::NotFound(_))));
    let mut removed = false;
    while let Ok(e) = bed.events.try_recv() {
        removed |= matches!(e, Event::Removed(ref id) if id == "1");
    }
    assert!(removed);
}

/// Regression: Kill signalled the recorded main PID (and its group) by
/// number, so once the command was reaped and its PID reused, a stranger
/// got the signal. Here the recorded PID belongs to a bystander (a group
/// leader, as the command was) and the run's pidfd to the reaped command.
#[tokio::test(start_paused = true)]
async fn kill_after_the_main_pid_was_reused_signals_nobody() {
    use std::os::unix::process::CommandExt;
    let bed = bed().await;
    let mut command = std::process::Command::new("true").spawn().unwrap();
    let pidfd = Pidfd::open(command.id()).unwrap();
    command.wait().unwrap();
    let mut bystander = std::process::Command::new("sleep")
        .arg("30")
        .process_group(0)
        .spawn()
        .unwrap();
    *lock(&bed.world.next_main) = Some((bystander.id(), pidfd));
    let id = bed.start(spec("no", 0)).await.unwrap();
    assert_eq!(bed.get(&id).await.unwrap().main_pid, bystander.id());
    let killed = bed
        .handle
        .ask(|reply| Command::Kill {
            id: id.clone(),
            access: Access::All,
            signal: libc::SIGTERM,
            reply,
        })
        .await
        .unwrap();
    // The command is gone: nothing to signal, and that is no error.
    killed.unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let hit = bystander.try_wait().unwrap();
    let _ = bystander.kill();
    let _ = bystander.wait();
    assert_eq!(
        hit, None,
        "the bystander holding the reused PID was signalled"
    );
}

/// Without a pidfd (it could not be opened) Kill refuses rather than
/// falling back to the PID.
#[tokio::test(start_paused = true)]
async fn kill_without_a_pidfd_is_busy() {
    let bed = bed().await;
    let id = bed.start(spec("no", 0)).await.unwrap();
    let r = bed
        .handle
        .ask(|reply| Command::Kill {
            id,
            access: Access::All,
            signal: libc::SIGTERM,
            reply,
        })
        .await
        .unwrap();
    assert!(matches!(r, Err(Error::Busy(_))), "{r:?}");
}

/// Starts a `no`-policy process for `uid`.
async fn start_as(bed: &Bed, uid: u32) -> Result<String, Error> {
    ask_start(bed.handle.clone(), spec("no", 0), uid).await
}

#[tokio::test(start_paused = true)]
async fn one_owner_cannot_see_or_touch_anothers_process() {
    let bed = bed().await;
    let mine = start_as(&bed, 1000).await.unwrap();
    let theirs = start_as(&bed, 1001).await.unwrap();
    let access = Access::Owner(1000);
    let listed = bed
        .handle
        .ask(|reply| Command::List {
            filter: Filter::default(),
            access,
            reply,
        })
        .await
        .unwrap();
    let ids: Vec<&str> = listed.iter().map(|v| v.id.as_str()).collect();
    assert_eq!(ids, [mine.as_str()]);
    assert_eq!(listed[0].owner, 1000);
    // Another owner's process is answered as if it did not exist.
    let id = theirs.clone();
    let got = bed
        .handle
        .ask(|reply| Command::Get { id, access, reply })
        .await
        .unwrap();
    assert!(matches!(got, Err(Error::NotFound(_))), "{got:?}");
    let id = theirs.clone();
    let stopped = bed
        .send(|reply| Command::Stop { id, access, reply })
        .await
        .unwrap();
    assert!(matches!(stopped, Err(Error::NotFound(_))), "{stopped:?}");
    assert_eq!(bed.get(&theirs).await.unwrap().state, State::Running);
    // *Matching acts on the caller's own only.
    let filter = Filter {
        workspace: Some("default".into()),
        ..Default::default()
    };
    let stopped = bed
        .handle
        .ask(|reply| Command::StopMatching {
            filter,
            access,
            reply,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stopped, [mine]);
    assert_eq!(bed.get(&theirs).await.unwrap().state, State::Running);
}

#[tokio::test(start_paused = true)]
async fn the_per_owner_cap_counts_ended_processes_and_spares_other_owners() {
    let bed = bed_with(World::new(), tempfile::tempdir().unwrap(), |c| {
        c.max_processes_per_owner = 2;
    })
    .await;
    let first = start_as(&bed, 1000).await.unwrap();
    start_as(&bed, 1000).await.unwrap();
    bed.exit(bed.run_of(&first), 0).await;
    bed.wait_state(&first, State::Exited).await;
    let third = start_as(&bed, 1000).await;
    assert!(matches!(third, Err(Error::LimitExceeded(_))), "{third:?}");
    assert_eq!(
        bed.world.launch_count(),
        2,
        "nothing launched for a refused start"
    );
    start_as(&bed, 1001).await.unwrap();
}

/// Hardening: a `Logs` tail is clamped to 10,000 lines, and every reply
/// to 4 MiB; a head page (lines = 0) holds a whole shim read of empty
/// lines (64 KiB of `\n`, one timestamp), so reading on from the last
/// timestamp always gets past it.
#[test]
fn logs_replies_are_bounded_and_a_head_page_holds_one_timestamp() {
    use crate::logfile::{Keep, LINE_OVERHEAD};
    let tail = super::logs_page(u32::MAX);
    assert_eq!((tail.max_lines, tail.keep), (10_000, Keep::Newest));
    assert_eq!(super::logs_page(7).max_lines, 7);
    let head = super::logs_page(0);
    assert_eq!(head.keep, Keep::Oldest);
    for page in [tail, head] {
        assert_eq!(page.max_bytes, 4 << 20);
    }
    let shim_read = 64 * 1024;
    assert!(shim_read * LINE_OVERHEAD + shim_read <= head.max_bytes);
}

/// Live limits (supervisor/live.rs): limits set on a process that is not
/// running are kept in its stored config for its next run; a workspace
/// whose slice systemd refuses to change keeps no limits.
#[tokio::test(start_paused = true)]
async fn limits_of_an_ended_process_are_stored_and_a_refused_workspace_limit_is_not() {
    let bed = bed().await;
    let id = bed.start(spec("no", 0)).await.unwrap();
    bed.wait_state(&id, State::Running).await;
    let run = bed.run_of(&id);
    bed.exit(run, 0).await;
    bed.wait_state(&id, State::Exited).await;
    let limits = crate::api::Limits {
        memory_max: Some(1 << 20),
        ..Default::default()
    };
    let set = bed.send(|reply| Command::SetLimits {
        id: id.clone(),
        access: Access::All,
        limits,
        reply,
    });
    set.await.unwrap().unwrap();
    let store = Store::open_inline(&db_path(&bed._dir)).unwrap();
    let rows = store.call(|db| db.load_all()).await.unwrap();
    assert_eq!(rows[0].0.config.limits(), limits);

    let workspace = WorkspaceKey {
        owner: 1000,
        name: "default".into(),
    };
    let set = bed.send(|reply| Command::SetWorkspaceLimits {
        workspace,
        access: Access::All,
        limits,
        reply,
    });
    // The fake host has no systemd to take it.
    assert!(matches!(set.await.unwrap(), Err(Error::Systemd(_))));
    let views = bed
        .handle
        .ask(|reply| Command::Workspaces {
            access: Access::Owner(1000),
            totals: false,
            reply,
        })
        .await
        .unwrap();
    assert_eq!(views.len(), 1);
    assert_eq!((views[0].processes, views[0].running), (1, 0));
    assert_eq!(views[0].limits, crate::api::Limits::default());
    // Another owner sees no workspace.
    let none = bed
        .handle
        .ask(|reply| Command::Workspaces {
            access: Access::Owner(1),
            totals: false,
            reply,
        })
        .await
        .unwrap();
    assert!(none.is_empty());
}

/// An OOM kill the shim counted ends the run in `oom-kill` and counts it.
#[tokio::test(start_paused = true)]
async fn an_oom_kill_in_the_exit_record_is_the_reason_and_counted() {
    let bed = bed().await;
    let id = bed.start(spec("no", 0)).await.unwrap();
    bed.wait_state(&id, State::Running).await;
    let run = bed.run_of(&id);
    bed.world.exit(run, -1, libc::SIGKILL);
    if let Some(rec) = lock(&bed.world.exits).get_mut(&run) {
        rec.oom_kills = Some(1);
    }
    bed.fact(Fact::ExitRecorded(Some(run))).await;
    let v = bed.wait_state(&id, State::Failed).await;
    assert_eq!(v.exit_reason, "oom-kill");
    assert_eq!(v.oom_kills, 1);
}

/// History: every tick's samples reach the store, completed buckets are
/// averaged, both tiers are pruned, and `History` reads the range back.
#[tokio::test(start_paused = true)]
async fn history_keeps_the_last_ticks_and_their_averages_only() {
    let bed = bed_with(World::new(), tempfile::tempdir().unwrap(), |c| {
        c.sample_interval = Duration::from_secs(1);
        c.history_resolution = Duration::from_secs(2);
        c.history_raw_retention = Duration::from_secs(2);
        c.history_retention = Duration::from_secs(4);
    })
    .await;
    let id = bed.start(spec("no", 0)).await.unwrap();
    bed.wait_state(&id, State::Running).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let ask = |id: String| {
        bed.handle.ask(|reply| Command::History {
            id,
            access: Access::All,
            since_us: 0,
            step_ms: 0,
            reply,
        })
    };
    let rows = ask(id.clone()).await.unwrap().unwrap();
    let now = 1_000_000_000 + 20_000_000;
    assert!(rows.len() >= 3, "{rows:?}");
    // 2 s of raw samples plus 4 s of 2 s averages, and the bucket of
    // the retention edge.
    assert!(rows.len() <= 6, "{rows:?}");
    assert!(rows.iter().all(|r| r.0 + 7_000_000 >= now), "{rows:?}");
    assert!(matches!(
        ask("404".into()).await,
        Some(Err(Error::NotFound(_)))
    ));
}

/// The history tick refreshes usage but reads no PSI: a Get just after
/// a tick still shows the process's pressure (a Get used to find the
/// tick's usage fresh and skip the read that brings the pressure).
#[tokio::test(start_paused = true)]
async fn pressure_shows_just_after_a_history_tick() {
    let bed = bed_with(World::new(), tempfile::tempdir().unwrap(), |c| {
        c.sample_interval = Duration::from_secs(1);
        c.history = true;
    })
    .await;
    let id = bed.start(spec("no", 0)).await.unwrap();
    // No Get before: it would read the pressure while the usage is stale.
    // Past a few ticks, then at once after the next one.
    tokio::time::sleep(Duration::from_millis(3_990)).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let v = bed.get(&id).await.unwrap();
    assert_eq!(v.state, State::Running);
    assert_eq!(
        v.pressure.get("memory.some"),
        Some(&0.5),
        "{:?}",
        v.pressure
    );
}

/// Ticks are written together every few seconds, yet `History` shows the
/// ticks not written yet (it writes them first).
#[tokio::test(start_paused = true)]
async fn history_shows_the_ticks_not_yet_written() {
    let bed = bed_with(World::new(), tempfile::tempdir().unwrap(), |c| {
        c.sample_interval = Duration::from_secs(1);
    })
    .await;
    let id = bed.start(spec("no", 0)).await.unwrap();
    bed.wait_state(&id, State::Running).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let rows = bed
        .handle
        .ask(|reply| Command::History {
            id: id.clone(),
            access: Access::All,
            since_us: 0,
            step_ms: 0,
            reply,
        })
        .await
        .unwrap()
        .unwrap();
    assert!(rows.len() >= 2, "{rows:?}");
}

/// The history tick reads the memory but not the peak: a Get just after
/// it shows the tick's memory and a peak no lower (CI saw a fresh 152 MB
/// beside a peak of 9 MB read half a second before).
#[tokio::test(start_paused = true)]
async fn a_history_tick_never_leaves_the_peak_below_the_memory() {
    let bed = bed_with(World::new(), tempfile::tempdir().unwrap(), |c| {
        c.sample_interval = Duration::from_secs(1);
        c.history = true;
    })
    .await;
    let id = bed.start(spec("no", 0)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let v = bed.get(&id).await.unwrap();
    assert_eq!((v.memory_current, v.memory_peak), (10, 10));
    tokio::time::sleep(Duration::from_millis(510)).await;
    let v = bed.get(&id).await.unwrap();
    assert_eq!((v.memory_current, v.memory_peak), (200, 200));
}
