//! The supervisor's outside world behind small traits — systemd
//! ([`Scopes`]), starting runs and reading what their shims leave behind
//! ([`Launcher`]), cgroup files ([`Cgroups`]) and the wall clock
//! ([`Clock`]) — so the actor can be driven in-process by unit tests under
//! paused time. The real implementations run every filesystem read off
//! the agent's runtime threads: on tokio's blocking pool, and the usage
//! reads on the sampler's own thread (with its own file table).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::Error;
use crate::api::live::LimitKey;
use crate::api::{Limits, Pressure};
use crate::daemon::cgroup::{self, CgroupFs, Sampler, Usage};
use crate::daemon::launch::ShimPool;
use crate::daemon::pidfd::Pidfd;
use crate::daemon::store::RunId;
use crate::daemon::systemd::{ScopeProps, Systemd};
use crate::daemon::{exits, launch, ports, track};
use crate::shim::protocol::NotifyRecord;
use crate::shim::{ExitRecord, LaunchSpec};

pub type Fut<T> = BoxFuture<'static, T>;

/// One run to start: hold its shim, wrap it in `unit`, release it.
pub struct LaunchRequest {
    pub unit: String,
    pub spec: LaunchSpec,
    pub props: ScopeProps,
    /// A later run of an existing process (its previous scope, same
    /// name, may still be going away).
    pub relaunch: bool,
    /// The scope made ahead for this run (`unit` is its name): the shim
    /// waiting in it gets the spec, and no scope is started.
    pub standby: Option<Standby>,
}

/// A scope made ahead of a process's next run, with a shim in it waiting
/// for a spec, so an immediate restart does not wait for systemd (its job
/// and the kernel's move of a process into a new cgroup, which waits for
/// an RCU grace period — most of a restart's time before). Dropping it
/// ends the waiting shim, and systemd collects the emptied scope.
pub struct Standby {
    pub unit: String,
    pub control_group: String,
    /// What the host needs to use it (the real host: the waiting shim).
    pub held: Box<dyn std::any::Any + Send + Sync>,
}

impl std::fmt::Debug for Standby {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Standby").field("unit", &self.unit).finish()
    }
}

/// A run inside its scope, the command executing.
#[derive(Debug)]
pub struct Launched {
    pub shim_pid: u32,
    pub main_pid: u32,
    pub control_group: String,
    /// Held for the run, for `Kill`; `None` if it could not be opened.
    pub pidfd: Option<Pidfd>,
}

/// systemd's manager, as far as the supervisor uses it.
pub trait Scopes: Send + Sync {
    /// Stops a scope and waits until it is gone; a unit already gone is Ok.
    fn stop(&self, unit: String, timeout: Duration) -> Fut<Result<(), String>>;
    /// corral's loaded scopes and their active states.
    fn list(&self) -> Fut<Result<Vec<(String, String)>, String>>;
    fn control_group(&self, unit: String) -> Fut<Result<String, String>>;
    /// Changes a loaded unit's limits at once (runtime).
    fn set_limits(&self, unit: String, _limits: Limits) -> Fut<Result<(), String>> {
        Box::pin(std::future::ready(Err(format!("{unit}: no systemd here"))))
    }
    /// Freezes (`true`) or thaws a unit.
    fn freeze(&self, unit: String, _freeze: bool) -> Fut<Result<(), String>> {
        Box::pin(std::future::ready(Err(format!("{unit}: no systemd here"))))
    }

    /// Track: wraps the running process `pid` and all its descendants in
    /// the new scope `unit`. Hosts without it (test fakes) refuse.
    fn track(&self, unit: String, pid: u32, props: ScopeProps) -> Fut<Result<Launched, Error>> {
        let _ = (unit, pid, props);
        Box::pin(std::future::ready(Err(Error::NotTrackable(
            "this host cannot track processes".into(),
        ))))
    }
    /// Moves `pids` into the running scope `unit` (an exec health probe).
    fn attach(&self, unit: String, pids: Vec<u32>) -> Fut<Result<(), String>> {
        let _ = (unit, pids);
        Box::pin(std::future::ready(Err(
            "this host cannot attach processes".into()
        )))
    }
    /// Untrack: moves every process of `cg` into the new scope `unit`,
    /// which corral does not own, so no agent ever stops it.
    fn release(&self, cg: String, unit: String, props: ScopeProps) -> Fut<Result<(), String>> {
        let _ = (cg, unit, props);
        Box::pin(std::future::ready(Err(
            "this host cannot release scopes".into()
        )))
    }
}

/// Launching runs, and the exit records their shims write.
pub trait Launcher: Send + Sync {
    fn launch(&self, req: LaunchRequest) -> Fut<Result<Launched, Error>>;
    /// Makes the scope `unit` with a shim waiting in it (`Standby`).
    fn standby(&self, unit: String, props: ScopeProps) -> Fut<Result<Standby, Error>> {
        let _ = props;
        Box::pin(std::future::ready(Err(Error::Systemd(format!(
            "{unit}: this host makes no standby scopes"
        )))))
    }
    /// Where the shim of `run` writes its exit record.
    fn exit_path(&self, run: RunId) -> PathBuf;
    fn read_exit(&self, run: RunId) -> Fut<Option<ExitRecord>>;
    fn remove_exit(&self, run: RunId) -> Fut<()>;
    /// Every run with a record present.
    fn pending_exits(&self) -> Fut<Vec<RunId>>;
    /// What the command of a `Notify` run last said, if anything.
    fn read_notify(&self, run: RunId) -> Fut<Option<NotifyRecord>>;
}

/// Reads of cgroup files (`None`/false where unknown).
pub trait Cgroups: Send + Sync {
    /// Whether the cgroup still holds a process.
    fn populated(&self, cg: String) -> Fut<bool>;
    /// All usage of `cgs`, on demand.
    fn usage(&self, cgs: Vec<String>) -> Fut<Vec<Option<Usage>>>;
    /// The tick with history on: what the history stores of `cgs` (the
    /// real host skips the peak and the OOM count), every running
    /// process's cgroup. The real host keeps their files open until a
    /// tick no longer lists them.
    fn tick_usage(&self, cgs: Vec<String>) -> Fut<Vec<Option<Usage>>> {
        self.usage(cgs)
    }
    /// The tick with history off: the CPU time of `cgs`, as for
    /// `tick_usage`.
    fn cpu_nsec(&self, cgs: Vec<String>) -> Fut<Vec<Option<u64>>>;
    /// The command a live scope's shim runs (re-adoption).
    fn main_pid(&self, cg: String) -> Fut<Option<u32>>;
    /// A pidfd of `pid`, if that process is in `cg`.
    fn open_pidfd(&self, pid: u32, cg: String) -> Fut<Option<Pidfd>>;
    /// The keys of `keys` that cannot be enforced on `cg` on this host.
    fn unenforceable(
        &self,
        _cg: String,
        _keys: Vec<&'static LimitKey>,
    ) -> Fut<Vec<&'static LimitKey>> {
        Box::pin(std::future::ready(vec![]))
    }
    /// PSI of each of `cgs` (empty where unknown).
    fn pressure(&self, cgs: Vec<String>) -> Fut<Vec<Pressure>> {
        Box::pin(std::future::ready(vec![Pressure::new(); cgs.len()]))
    }
    /// `Some(frozen)` where the freezer works on `cg`, `None` where not.
    fn frozen(&self, _cg: String) -> Fut<Option<bool>> {
        Box::pin(std::future::ready(None))
    }
}

/// Which process listens where ([`ports`]).
pub trait Ports: Send + Sync {
    /// One refresh: each scope's PIDs are read from its control group
    /// (the `String`). `None` while the previous refresh still runs, or
    /// when the socket table cannot be read.
    fn refresh(
        &self,
        scopes: Vec<(ports::Scope, String)>,
        wanted: Vec<ports::Wanted>,
    ) -> Fut<Option<ports::Found>>;
}

pub trait Clock: Send + Sync {
    /// Microseconds since the Unix epoch.
    fn now_us(&self) -> u64;
}

/// Everything the actor talks to besides the store.
#[derive(Clone)]
pub struct Host {
    pub scopes: Arc<dyn Scopes>,
    pub launcher: Arc<dyn Launcher>,
    pub cgroups: Arc<dyn Cgroups>,
    pub clock: Arc<dyn Clock>,
    pub ports: Arc<dyn Ports>,
}

impl Host {
    /// The real host; `shim_pool` shims are kept spawned ahead of need
    /// (`launch::ShimPool`).
    pub fn real(
        shim: PathBuf,
        shim_pool: usize,
        systemd: Systemd,
        exits_dir: PathBuf,
        cgroups: Option<Arc<CgroupFs>>,
    ) -> Host {
        Host {
            scopes: Arc::new(RealScopes(systemd.clone())),
            launcher: Arc::new(RealLauncher {
                pool: {
                    let pool = ShimPool::new(shim, shim_pool);
                    pool.fill();
                    pool
                },
                systemd,
                exits_dir: Arc::new(exits_dir),
            }),
            ports: Arc::new(RealPorts {
                fs: cgroups.clone(),
                scanner: Arc::new(Mutex::new(ports::Scanner::new("/proc"))),
            }),
            cgroups: Arc::new(RealCgroups {
                sampler: cgroups.clone().and_then(sampler_thread),
                fs: cgroups,
            }),
            clock: Arc::new(SystemClock),
        }
    }
}

struct RealPorts {
    fs: Option<Arc<CgroupFs>>,
    /// Held by the refresh running; the next waits for none.
    scanner: Arc<Mutex<ports::Scanner>>,
}

impl Ports for RealPorts {
    fn refresh(
        &self,
        scopes: Vec<(ports::Scope, String)>,
        wanted: Vec<ports::Wanted>,
    ) -> Fut<Option<ports::Found>> {
        let fs = self.fs.clone();
        let scanner = self.scanner.clone();
        Box::pin(blocking(None, move || {
            // A refresh slower than the tick: skip this one.
            let mut scanner = scanner.try_lock().ok()?;
            let (scopes, cgs): (Vec<ports::Scope>, std::collections::HashMap<_, _>) = scopes
                .into_iter()
                .map(|(s, cg)| {
                    let id = s.id;
                    (s, (id, cg))
                })
                .unzip();
            let pids_of = |s: &ports::Scope| match (&fs, cgs.get(&s.id)) {
                (Some(fs), Some(cg)) => fs.read_procs(cg).unwrap_or_default(),
                _ => Vec::new(),
            };
            scanner
                .refresh(&scopes, &wanted, &pids_of)
                .inspect_err(|e| tracing::debug!("reading the socket table: {e}"))
                .ok()
        }))
    }
}

struct RealScopes(Systemd);

impl Scopes for RealScopes {
    fn stop(&self, unit: String, timeout: Duration) -> Fut<Result<(), String>> {
        let sd = self.0.clone();
        Box::pin(async move {
            sd.stop_unit(&unit, timeout)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn list(&self) -> Fut<Result<Vec<(String, String)>, String>> {
        let sd = self.0.clone();
        Box::pin(async move {
            sd.list_scopes("app-corral-*.scope")
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn control_group(&self, unit: String) -> Fut<Result<String, String>> {
        let sd = self.0.clone();
        Box::pin(async move { sd.control_group(&unit).await.map_err(|e| e.to_string()) })
    }

    fn set_limits(&self, unit: String, limits: Limits) -> Fut<Result<(), String>> {
        let sd = self.0.clone();
        Box::pin(async move {
            sd.set_limits(&unit, &limits)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn track(&self, unit: String, pid: u32, props: ScopeProps) -> Fut<Result<Launched, Error>> {
        let sd = self.0.clone();
        Box::pin(async move { track_tree(&sd, &unit, pid, &props).await })
    }

    fn attach(&self, unit: String, pids: Vec<u32>) -> Fut<Result<(), String>> {
        let sd = self.0.clone();
        Box::pin(async move {
            sd.attach_processes(&unit, &pids)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn freeze(&self, unit: String, freeze: bool) -> Fut<Result<(), String>> {
        let sd = self.0.clone();
        Box::pin(async move { sd.freeze(&unit, freeze).await.map_err(|e| e.to_string()) })
    }

    fn release(&self, cg: String, unit: String, props: ScopeProps) -> Fut<Result<(), String>> {
        let sd = self.0.clone();
        Box::pin(async move {
            let procs = blocking(vec![], move || {
                CgroupFs::detect("/sys/fs/cgroup")
                    .and_then(|fs| fs.read_procs(&cg))
                    .unwrap_or_default()
            })
            .await;
            if procs.is_empty() {
                return Err("its scope holds no process any more".into());
            }
            sd.start_scope(&unit, &procs, &props)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// How often Track looks again for children forked while their parent
/// was being moved (each pass moves the ones it finds).
const TRACK_PASSES: usize = 10;

/// Moves `pid` and its descendants into the new scope `unit`, then looks
/// for children forked meanwhile (they start in the old cgroup, where
/// their parent was when they were forked) and attaches them, until a
/// scan finds none left behind.
async fn track_tree(
    sd: &Systemd,
    unit: &str,
    pid: u32,
    props: &ScopeProps,
) -> Result<Launched, Error> {
    let tree = blocking(vec![], move || track::tree(pid)).await;
    sd.start_scope(unit, &tree, props)
        .await
        .map_err(|e| Error::Systemd(e.to_string()))?;
    if let Some(limits) = &props.slice_limits {
        // As for a launch: the workspace's limits reach its slice.
        if let Err(e) = sd.set_limits(&props.slice, limits).await {
            tracing::warn!("setting the workspace limits on {}: {e}", props.slice);
        }
    }
    let control_group = blocking(String::new(), move || {
        launch::read_control_group(pid).unwrap_or_default()
    })
    .await;
    for _ in 0..TRACK_PASSES {
        let cg = control_group.clone();
        let stray = blocking(vec![], move || {
            track::tree(pid)
                .into_iter()
                .filter(|p| launch::read_control_group(*p).is_ok_and(|c| c != cg))
                .collect::<Vec<u32>>()
        })
        .await;
        if stray.is_empty() {
            break;
        }
        if let Err(e) = sd.attach_processes(unit, &stray).await {
            // A child that exited in between makes the call fail; the
            // next scan shows what is still left.
            tracing::debug!(unit, "attaching {stray:?}: {e}");
        }
    }
    let launched = blocking(Err(std::io::Error::other("panicked")), {
        let cg = control_group.clone();
        move || Pidfd::open_in(pid, &cg)
    })
    .await;
    match launched {
        // Opened and checked after the move: the process at `pid` now is
        // in the new scope, so it is the one moved, not a PID reused.
        Ok(pidfd) => Ok(Launched {
            shim_pid: 0,
            main_pid: pid,
            control_group,
            pidfd: Some(pidfd),
        }),
        Err(e) => {
            let _ = sd.stop_unit(unit, props.stop_timeout).await;
            Err(Error::NotFound(format!(
                "PID {pid} ended while being tracked: {e}"
            )))
        }
    }
}

struct RealLauncher {
    pool: Arc<ShimPool>,
    systemd: Systemd,
    exits_dir: Arc<PathBuf>,
}

/// Runs `f` on the blocking pool; a panic there reads as `fallback`.
async fn blocking<R: Send + 'static>(fallback: R, f: impl FnOnce() -> R + Send + 'static) -> R {
    tokio::task::spawn_blocking(f).await.unwrap_or(fallback)
}

impl Launcher for RealLauncher {
    fn launch(&self, req: LaunchRequest) -> Fut<Result<Launched, Error>> {
        let (pool, sd) = (self.pool.clone(), self.systemd.clone());
        Box::pin(async move { launch_run(&pool, &sd, req).await })
    }

    fn standby(&self, unit: String, props: ScopeProps) -> Fut<Result<Standby, Error>> {
        let (pool, sd) = (self.pool.clone(), self.systemd.clone());
        Box::pin(async move {
            let spawned = pool.take().map_err(|e| Error::SpawnFailed(e.to_string()))?;
            let pid = spawned.shim_pid;
            // On failure `spawned` is dropped: the shim exits unused.
            sd.start_scope(&unit, &[pid], &props)
                .await
                .map_err(|e| Error::Systemd(e.to_string()))?;
            let control_group = blocking(String::new(), move || {
                launch::read_control_group(pid).unwrap_or_default()
            })
            .await;
            Ok(Standby {
                unit,
                control_group,
                held: Box::new(spawned),
            })
        })
    }

    fn exit_path(&self, run: RunId) -> PathBuf {
        exits::record_path(&self.exits_dir, run.0)
    }

    fn read_exit(&self, run: RunId) -> Fut<Option<ExitRecord>> {
        let dir = self.exits_dir.clone();
        Box::pin(blocking(None, move || exits::read(&dir, run.0)))
    }

    fn remove_exit(&self, run: RunId) -> Fut<()> {
        let dir = self.exits_dir.clone();
        Box::pin(blocking((), move || exits::remove(&dir, run.0)))
    }

    fn pending_exits(&self) -> Fut<Vec<RunId>> {
        let dir = self.exits_dir.clone();
        Box::pin(blocking(vec![], move || {
            exits::pending(&dir).into_iter().map(RunId).collect()
        }))
    }

    fn read_notify(&self, run: RunId) -> Fut<Option<NotifyRecord>> {
        let dir = self.exits_dir.clone();
        Box::pin(blocking(None, move || exits::read_notify(&dir, run.0)))
    }
}

/// Hold the shim, wrap it in its scope, release it: the command's first
/// instruction runs inside the scope.
async fn launch_run(
    pool: &Arc<ShimPool>,
    sd: &Systemd,
    req: LaunchRequest,
) -> Result<Launched, Error> {
    let LaunchRequest {
        unit,
        spec,
        props,
        relaunch,
        standby,
    } = req;
    if let Some(standby) = standby {
        let control_group = standby.control_group;
        match standby.held.downcast::<launch::Spawned>() {
            Ok(spawned) => match spawned.hold(&spec).await {
                Ok(held) => {
                    let cg = std::future::ready(control_group);
                    return released(sd, &unit, &spec, held, cg).await;
                }
                // Its shim was killed while it waited: start anew, under
                // the same name (the retry below waits for it to go).
                Err(e) => tracing::debug!(unit, "standby scope unusable: {e}"),
            },
            Err(_) => tracing::warn!(unit, "standby of another host ignored"),
        }
    }
    let held = pool
        .hold(&spec)
        .await
        .map_err(|e| Error::SpawnFailed(e.to_string()))?;
    let shim_pid = held.shim_pid;
    let mut started = sd.start_scope(&unit, &[shim_pid], &props).await;
    if relaunch && started.as_ref().is_err_and(|e| e.is_unit_exists()) {
        // Regression (bench, RestartDelayMs=0): the previous run's scope,
        // same name, can still be going away (leftovers being stopped, or
        // systemd not yet done collecting the empty unit). It is ours and
        // its run has ended: finish it off, then retry while the name is
        // still taken, for a bounded time.
        let _ = sd.stop_unit(&unit, props.stop_timeout).await;
        for _ in 0..100 {
            started = sd.start_scope(&unit, &[shim_pid], &props).await;
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
    if let Some(limits) = &props.slice_limits {
        // Not fatal: the process runs, its workspace's limits are logged
        // as missing (systemd keeps them on a slice that lived on).
        if let Err(e) = sd.set_limits(&props.slice, limits).await {
            tracing::warn!("setting the workspace limits on {}: {e}", props.slice);
        }
    }
    // The scope exists: its cgroup is read while the shim forks and execs
    // the command, not after.
    let read_cg = blocking(String::new(), move || {
        launch::read_control_group(shim_pid).unwrap_or_default()
    });
    released(sd, &unit, &spec, held, read_cg).await
}

/// Releases `held` in its scope (whose cgroup `read_cg` reads meanwhile)
/// and waits for the command's PID.
async fn released(
    sd: &Systemd,
    unit: &str,
    spec: &LaunchSpec,
    held: launch::Held,
    read_cg: impl std::future::Future<Output = String>,
) -> Result<Launched, Error> {
    let shim_pid = held.shim_pid;
    let (control_group, released) = tokio::join!(read_cg, held.release());
    match released {
        Ok(main_pid) => Ok(Launched {
            shim_pid,
            main_pid,
            pidfd: blocking(None, {
                let cg = control_group.clone();
                move || open_pidfd(main_pid, &cg)
            })
            .await,
            control_group,
        }),
        Err(launch::Error::Spawn { message, .. }) => Err(Error::SpawnFailed(format!(
            "cannot execute '{}': {message}",
            spec.argv.first().map(String::as_str).unwrap_or("")
        ))),
        Err(e) => {
            // The shim is confused or gone; make sure its scope goes too.
            let _ = sd.stop_unit(unit, Duration::from_secs(1)).await;
            Err(Error::SpawnFailed(e.to_string()))
        }
    }
}

/// The pidfd of a run's main process, opened as early as possible (the
/// PID could be reused once the process is gone).
fn open_pidfd(pid: u32, cg: &str) -> Option<Pidfd> {
    Pidfd::open_in(pid, cg)
        .inspect_err(|e| tracing::warn!("no pidfd for pid {pid}, Kill will refuse: {e}"))
        .ok()
}

struct RealCgroups {
    fs: Option<Arc<CgroupFs>>,
    /// The thread that owns the sampler (`None`: it could not be started,
    /// and usage reads answer unknown).
    sampler: Option<std::sync::mpsc::Sender<SampleJob>>,
}

/// A batch of reads for the sampler thread.
type SampleJob = Box<dyn FnOnce(&CgroupFs, &mut Sampler) + Send>;

/// Starts the thread that owns the [`Sampler`] and the usage files it
/// keeps open, in a file table of its own (`unshare(CLONE_FILES)`): at
/// a thousand processes those files are three quarters of corrald's open
/// files, and every shim spawn copies the spawning thread's table and its
/// exec closes every copied file (BENCHMARK.md: that cost grew with the
/// processes running). Nothing opened there leaves the thread: its jobs
/// return figures, not files; and nothing there may use a descriptor of
/// corrald's (a tokio waker, the journal's socket), hence no logging and
/// no async answers from it.
fn sampler_thread(fs: Arc<CgroupFs>) -> Option<std::sync::mpsc::Sender<SampleJob>> {
    let (tx, rx) = std::sync::mpsc::channel::<SampleJob>();
    let started = std::thread::Builder::new()
        .name("corral-sample".into())
        .spawn(move || {
            own_file_table();
            let mut sampler = Sampler::from_rlimit();
            for job in rx {
                // A panic mid-batch leaves the sampler usable: at worst an
                // entry with a file not yet opened. The job's answer is
                // then dropped, which reads as unknown.
                let run = std::panic::AssertUnwindSafe(|| job(&fs, &mut sampler));
                let _ = std::panic::catch_unwind(run);
            }
        });
    match started {
        Ok(_) => Some(tx),
        Err(e) => {
            tracing::error!("usage sampler not started, usage unknown: {e}");
            None
        }
    }
}

/// Gives the calling thread a file table of its own, holding only the
/// standard descriptors: the copies of the rest would keep corrald's
/// sockets and files open after corrald closed them. Where that fails
/// (a seccomp filter), the thread shares the process's table as before.
fn own_file_table() {
    // First, every signal blocked here: a process-directed signal goes to
    // a thread that does not block it, and the handlers (tokio's SIGCHLD
    // and SIGTERM, which wake the runtime through a descriptor) must not
    // run on a thread whose table lacks that descriptor.
    // SAFETY: sigfillset fills the local set; pthread_sigmask changes this
    // thread's mask only.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut()) != 0 {
            tracing::debug!("sampler shares corrald's file table: signals not blocked");
            return;
        }
    }
    // SAFETY: unshare(CLONE_FILES) affects this thread only; no Rust
    // object in this thread owns a descriptor yet.
    if unsafe { libc::unshare(libc::CLONE_FILES) } != 0 {
        let e = std::io::Error::last_os_error();
        tracing::debug!("sampler shares corrald's file table: {e}");
        return;
    }
    // SAFETY: closes this thread's private copies of inherited
    // descriptors; the originals in corrald's table stay open.
    if unsafe { libc::close_range(3, u32::MAX, 0) } != 0 {
        let e = std::io::Error::last_os_error();
        tracing::debug!("closing the sampler's copies of corrald's files: {e}");
    }
}

impl RealCgroups {
    /// Runs `f` with the cgroup filesystem on the blocking pool.
    fn with<R: Send + 'static>(
        &self,
        unknown: R,
        f: impl FnOnce(&CgroupFs) -> R + Send + 'static,
    ) -> Fut<R> {
        let Some(fs) = self.fs.clone() else {
            return Box::pin(std::future::ready(unknown));
        };
        Box::pin(async move {
            tokio::task::spawn_blocking(move || f(&fs))
                .await
                .unwrap_or(unknown)
        })
    }

    /// Runs `f` with the cgroup filesystem and the sampler on the
    /// sampler's thread, one batch at a time.
    fn sampling<R: Send + 'static>(
        &self,
        unknown: R,
        f: impl FnOnce(&CgroupFs, &mut Sampler) -> R + Send + 'static,
    ) -> Fut<R> {
        let Some(sampler) = self.sampler.clone() else {
            return Box::pin(std::future::ready(unknown));
        };
        // The answer comes back through a blocking-pool thread: a waker
        // used on the sampler's thread would write to the runtime's
        // eventfd, which its own file table does not hold.
        Box::pin(async move {
            let asked = tokio::task::spawn_blocking(move || {
                let (tx, rx) = std::sync::mpsc::sync_channel(1);
                let job: SampleJob = Box::new(move |fs, sampler| {
                    let _ = tx.send(f(fs, sampler));
                });
                sampler.send(job).ok()?;
                rx.recv().ok()
            });
            asked.await.ok().flatten().unwrap_or(unknown)
        })
    }

    /// Usage of `cgs` read by `read` on the sampler's thread, logged here:
    /// that thread holds no copy of the log's socket.
    fn sampled_usage(
        &self,
        cgs: Vec<String>,
        read: fn(&mut Sampler, &CgroupFs, &[String]) -> Vec<cgroup::Result<Usage>>,
    ) -> Fut<Vec<Option<Usage>>> {
        let n = cgs.len();
        let job = self.sampling(None, move |fs, sampler| {
            let reads = read(sampler, fs, &cgs);
            Some((cgs, reads))
        });
        Box::pin(async move {
            match job.await {
                Some((cgs, reads)) => cgs.iter().zip(reads).map(|(cg, u)| logged(cg, u)).collect(),
                None => vec![None; n],
            }
        })
    }
}

/// A usage read as the supervisor takes it: `None` where it failed.
fn logged(cg: &str, read: cgroup::Result<Usage>) -> Option<Usage> {
    read.inspect_err(|e| tracing::debug!("usage of {cg}: {e}"))
        .ok()
}

impl Cgroups for RealCgroups {
    fn populated(&self, cg: String) -> Fut<bool> {
        self.with(false, move |fs| fs.read_populated(&cg).unwrap_or(false))
    }

    fn usage(&self, cgs: Vec<String>) -> Fut<Vec<Option<Usage>>> {
        self.sampled_usage(cgs, Sampler::usage)
    }

    fn tick_usage(&self, cgs: Vec<String>) -> Fut<Vec<Option<Usage>>> {
        self.sampled_usage(cgs, Sampler::tick_usage)
    }

    fn cpu_nsec(&self, cgs: Vec<String>) -> Fut<Vec<Option<u64>>> {
        let n = cgs.len();
        self.sampling(vec![None; n], move |fs, sampler| {
            let read = sampler.tick_cpu_nsec(fs, &cgs);
            read.into_iter().map(|r| r.ok().flatten()).collect()
        })
    }

    fn main_pid(&self, cg: String) -> Fut<Option<u32>> {
        self.with(None, move |fs| {
            let procs = fs.read_procs(&cg).unwrap_or_default();
            launch::find_shim_and_main(&procs).map(|(_shim, main)| main)
        })
    }

    fn open_pidfd(&self, pid: u32, cg: String) -> Fut<Option<Pidfd>> {
        Box::pin(blocking(None, move || open_pidfd(pid, &cg)))
    }

    fn unenforceable(
        &self,
        cg: String,
        keys: Vec<&'static LimitKey>,
    ) -> Fut<Vec<&'static LimitKey>> {
        // No cgroup filesystem: nothing can be checked, nothing enforced.
        let all = keys.clone();
        self.with(all, move |fs| {
            keys.into_iter()
                .filter(|k| !fs.enforceable(&cg, k.controller, k.v1))
                .collect()
        })
    }

    fn pressure(&self, cgs: Vec<String>) -> Fut<Vec<Pressure>> {
        let n = cgs.len();
        self.with(vec![Pressure::new(); n], move |fs| {
            cgs.iter().map(|cg| fs.read_pressure(cg)).collect()
        })
    }

    fn frozen(&self, cg: String) -> Fut<Option<bool>> {
        self.with(None, move |fs| fs.frozen(&cg))
    }
}

pub(super) struct SystemClock;

impl Clock for SystemClock {
    fn now_us(&self) -> u64 {
        crate::daemon::store::now_us()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The paths of the files open in the file table at `fd_dir`.
    fn open_paths(fd_dir: &str) -> Vec<PathBuf> {
        std::fs::read_dir(fd_dir)
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .collect()
    }

    #[tokio::test]
    async fn the_sampler_keeps_its_files_out_of_corralds_file_table() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.controllers"), "cpu memory\n").unwrap();
        let scope = dir.path().join("a.scope");
        std::fs::create_dir(&scope).unwrap();
        std::fs::write(scope.join("cpu.stat"), "usage_usec 7\n").unwrap();
        std::fs::write(scope.join("memory.current"), "4096\n").unwrap();
        let fs = Arc::new(CgroupFs::detect(dir.path()).unwrap());
        let cgroups = RealCgroups {
            sampler: sampler_thread(fs.clone()),
            fs: Some(fs),
        };
        let usage = cgroups.tick_usage(vec!["/a.scope".into()]).await;
        let usage = usage[0].as_ref().expect("read");
        assert_eq!(usage.cpu_usage_nsec, Some(7000));
        // The sampler's own table holds the kept files; the process's
        // (every other thread's) does not.
        // SAFETY: gettid(2) cannot fail.
        let tid = cgroups.sampling(0, |_, _| unsafe { libc::gettid() }).await;
        assert!(tid > 0);
        let kept = |paths: Vec<PathBuf>| paths.iter().filter(|p| p.starts_with(&scope)).count();
        assert!(kept(open_paths(&format!("/proc/self/task/{tid}/fd"))) >= 1);
        assert_eq!(kept(open_paths("/proc/self/fd")), 0);
        // And the signals corrald handles are blocked there (SigBlk, bit
        // n-1 for signal n; SIGKILL, SIGSTOP and glibc's own 32 and 33
        // cannot be).
        let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
        let blocked = status
            .lines()
            .find_map(|l| l.strip_prefix("SigBlk:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .unwrap();
        for sig in [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            assert_ne!(blocked & (1 << (sig - 1)), 0, "signal {sig} not blocked");
        }
    }
}
