//! Talking to systemd's manager over D-Bus: start a transient scope around
//! a held PID and wait for its job, stop or signal a scope, list ours, and
//! watch scopes vanish. Also owns unit-name escaping. Knows nothing of
//! processes beyond unit names and PIDs. Every call to the manager is
//! bounded in time ([`CALL_TIMEOUT`], [`JOB_GRACE`]): a hung manager gives
//! a `systemd: ... no answer` error, never a task waiting forever.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use zbus::zvariant::{OwnedObjectPath, Value};

use crate::api::{Limits, NO_LIMIT};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// systemd answered with an error; `name` is its D-Bus error name.
    #[error("systemd: {op} {unit}: {message} ({name})")]
    Call {
        op: &'static str,
        unit: String,
        name: String,
        message: String,
    },
    #[error("systemd: {op} {unit}: {source}")]
    Transport {
        op: &'static str,
        unit: String,
        source: zbus::Error,
    },
    #[error("systemd: job for {unit} finished with result '{result}'")]
    Job { unit: String, result: String },
    #[error("systemd: no answer for the job of {unit} within {secs}s")]
    JobTimeout { unit: String, secs: u64 },
    #[error("systemd: {op} {unit}: no answer within {secs}s")]
    CallTimeout {
        op: &'static str,
        unit: String,
        secs: u64,
    },
}

impl Error {
    /// The unit name is taken (by an older run still being torn down, or by
    /// a unit corral did not make).
    pub fn is_unit_exists(&self) -> bool {
        matches!(self, Error::Call { name, .. } if name == "org.freedesktop.systemd1.UnitExists")
    }

    /// The unit does not exist (already gone): not a failure for Stop.
    pub fn is_no_such_unit(&self) -> bool {
        matches!(self, Error::Call { name, .. } if name == "org.freedesktop.systemd1.NoSuchUnit")
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// One row of `ListUnitsByPatterns`.
type UnitRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    OwnedObjectPath,
    u32,
    String,
    OwnedObjectPath,
);

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait SystemdManager {
    fn start_transient_unit(
        &self,
        name: &str,
        mode: &str,
        properties: Vec<(&str, Value<'_>)>,
        aux: Vec<(&str, Vec<(&str, Value<'_>)>)>,
    ) -> zbus::Result<OwnedObjectPath>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn attach_processes_to_unit(
        &self,
        unit_name: &str,
        subcgroup: &str,
        pids: Vec<u32>,
    ) -> zbus::Result<()>;
    fn list_units_by_patterns(
        &self,
        states: Vec<&str>,
        patterns: Vec<&str>,
    ) -> zbus::Result<Vec<UnitRow>>;
    fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn set_unit_properties(
        &self,
        name: &str,
        runtime: bool,
        properties: Vec<(&str, Value<'_>)>,
    ) -> zbus::Result<()>;
    fn freeze_unit(&self, name: &str) -> zbus::Result<()>;
    fn thaw_unit(&self, name: &str) -> zbus::Result<()>;
    fn subscribe(&self) -> zbus::Result<()>;
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;
    #[zbus(signal)]
    fn unit_removed(&self, unit: String, path: OwnedObjectPath) -> zbus::Result<()>;
    #[zbus(signal)]
    fn reloading(&self, active: bool) -> zbus::Result<()>;
}

/// Where a finished job's result waits if it arrived before its waiter
/// registered: `JobRemoved` and the reply that names the job arrive
/// milliseconds apart, in either order.
enum JobSlot {
    /// Several callers can wait for one job: StopUnit on a unit that is
    /// already stopping returns the job in progress.
    Waiting(Vec<oneshot::Sender<String>>),
    Done(String, Instant),
}

/// Resource limits and settings of a new scope.
#[derive(Debug, Clone, Default)]
pub struct ScopeProps {
    pub description: String,
    pub slice: String,
    pub limits: Limits,
    /// Limits set on the workspace: set on `slice` once the scope is in
    /// it (the slice may be new, e.g. after a reboot), before the command
    /// runs.
    pub slice_limits: Option<Limits>,
    pub stop_timeout: Duration,
    /// `Delegate=yes`: systemd moves processes into a running scope
    /// (`AttachProcessesToUnit`) only when it is delegated.
    pub delegate: bool,
}

/// Handle on systemd's manager. Cheap to clone.
#[derive(Clone)]
pub struct Systemd {
    proxy: SystemdManagerProxy<'static>,
    jobs: Arc<Mutex<HashMap<String, JobSlot>>>,
    /// When systemd last finished a job (any job, anyone's): the sign
    /// that a job of ours waiting past its limit waits in a busy queue.
    last_done: Arc<Mutex<tokio::time::Instant>>,
}

/// How long we wait for a job before giving up on it. A scope's start job
/// takes milliseconds; a stop job takes up to the stop timeout.
const JOB_GRACE: Duration = Duration::from_secs(30);

/// How long a job may wait at most, however busy systemd is: the manager
/// runs its jobs one after the other, so a stop behind thousands of
/// others (`RemoveMatching` of a large workspace) waits past its own
/// limit while the jobs ahead of it keep finishing.
const JOB_CEILING: Duration = Duration::from_secs(600);

/// How long one method call to the manager (or the bus daemon, for the
/// match rules of its signals) may take. systemd answers in milliseconds;
/// only a daemon-reload of a large system keeps it busy for seconds. 20 s
/// stays under the 25 s default timeout of D-Bus clients (sd-bus,
/// libdbus), so a client waiting for `Start` hears corrald's `Systemd`
/// error rather than its own timeout.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs one call to the manager for at most [`CALL_TIMEOUT`].
async fn bounded<T>(
    op: &'static str,
    unit: &str,
    call: impl Future<Output = zbus::Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(r) => r.map_err(|e| call_err(op, unit, e)),
        Err(_) => Err(Error::CallTimeout {
            op,
            unit: unit.to_string(),
            secs: CALL_TIMEOUT.as_secs(),
        }),
    }
}

fn call_err(op: &'static str, unit: &str, e: zbus::Error) -> Error {
    match e {
        zbus::Error::MethodError(name, msg, _) => Error::Call {
            op,
            unit: unit.to_string(),
            name: name.to_string(),
            message: msg.unwrap_or_default(),
        },
        source => Error::Transport {
            op,
            unit: unit.to_string(),
            source,
        },
    }
}

impl Systemd {
    /// Connects, subscribes to job and unit signals, and starts the task
    /// that dispatches them. `gone` receives the names of our scopes as
    /// they disappear. After a daemon-reload/reexec it subscribes again.
    pub async fn connect(
        conn: &zbus::Connection,
        gone: mpsc::UnboundedSender<String>,
    ) -> Result<Systemd> {
        let proxy = bounded("connect", "", SystemdManagerProxy::new(conn)).await?;
        // Streams first, then Subscribe: no signal may slip between them.
        let mut jobs_stream = bounded("AddMatch", "", proxy.receive_job_removed()).await?;
        let mut removed_stream = bounded("AddMatch", "", proxy.receive_unit_removed()).await?;
        let mut reload_stream = bounded("AddMatch", "", proxy.receive_reloading()).await?;
        bounded("Subscribe", "", proxy.subscribe()).await?;
        let sd = Systemd {
            proxy,
            jobs: Arc::new(Mutex::new(HashMap::new())),
            last_done: Arc::new(Mutex::new(tokio::time::Instant::now())),
        };
        let jobs = sd.jobs.clone();
        let last_done = sd.last_done.clone();
        let resubscribe = sd.proxy.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(sig) = jobs_stream.next() => {
                        if let Ok(args) = sig.args() {
                            *last_done.lock().unwrap_or_else(|p| p.into_inner()) =
                                tokio::time::Instant::now();
                            finish_job(&jobs, args.job.as_str(), args.result.clone());
                        }
                    }
                    Some(sig) = removed_stream.next() => {
                        if let Ok(args) = sig.args() {
                            if args.unit.starts_with("app-corral-") && args.unit.ends_with(".scope") {
                                let _ = gone.send(args.unit.clone());
                            }
                        }
                    }
                    Some(sig) = reload_stream.next() => {
                        // After daemon-reexec the manager forgets its
                        // subscribers; subscribing again is harmless after a
                        // plain reload.
                        // Bounded: this loop also delivers job results.
                        if matches!(sig.args(), Ok(a) if !a.active) {
                            match bounded("Subscribe", "", resubscribe.subscribe()).await {
                                Ok(()) => tracing::info!("re-subscribed to systemd after reexec"),
                                Err(Error::Call { name, .. })
                                    if name == "org.freedesktop.systemd1.AlreadySubscribed" => {}
                                Err(e) => tracing::warn!("re-subscribing to systemd after reload: {e}"),
                            }
                        }
                    }
                    else => break,
                }
            }
            tracing::warn!("systemd signal streams ended");
        });
        Ok(sd)
    }

    async fn wait_job(&self, unit: &str, job: &str, limit: Duration) -> Result<String> {
        let rx = {
            let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            let (tx, rx) = oneshot::channel();
            match jobs.get_mut(job) {
                Some(JobSlot::Waiting(waiters)) => waiters.push(tx),
                Some(JobSlot::Done(result, _)) => {
                    // Finished before we asked. Other callers of the same
                    // job may come too, so the result stays until pruned.
                    return Ok(result.clone());
                }
                None => {
                    jobs.insert(job.to_string(), JobSlot::Waiting(vec![tx]));
                }
            }
            rx
        };
        let started = tokio::time::Instant::now();
        // The slot stays on a timeout: other callers may wait for the
        // same job, and a late JobRemoved just finds a closed channel.
        await_job(rx, limit, &self.last_done)
            .await
            .ok_or_else(|| Error::JobTimeout {
                unit: unit.to_string(),
                secs: started.elapsed().as_secs(),
            })
    }

    /// Creates scope `unit` around `pids` and waits until systemd has moved
    /// them into it (the start job is done).
    pub async fn start_scope(&self, unit: &str, pids: &[u32], p: &ScopeProps) -> Result<()> {
        let mut props: Vec<(&str, Value<'_>)> = vec![
            ("PIDs", Value::from(pids.to_vec())),
            ("Description", Value::from(p.description.as_str())),
            ("Slice", Value::from(p.slice.as_str())),
            ("CollectMode", Value::from("inactive-or-failed")),
            (
                "TimeoutStopUSec",
                Value::from(p.stop_timeout.as_micros() as u64),
            ),
            // Usage is read from the cgroup files; asking for accounting
            // makes systemd enable the controllers on pure cgroup v2.
            ("MemoryAccounting", Value::from(true)),
            ("CPUAccounting", Value::from(true)),
            ("TasksAccounting", Value::from(true)),
            ("IOAccounting", Value::from(true)),
        ];
        if p.delegate {
            props.push(("Delegate", Value::from(true)));
        }
        props.extend(limit_props(&p.limits));
        let job = bounded(
            "StartTransientUnit",
            unit,
            self.proxy.start_transient_unit(unit, "fail", props, vec![]),
        )
        .await?;
        let result = self.wait_job(unit, job.as_str(), JOB_GRACE).await?;
        if result != "done" {
            return Err(Error::Job {
                unit: unit.to_string(),
                result,
            });
        }
        Ok(())
    }

    /// Moves `pids` into the running scope `unit` (Track: children forked
    /// while the scope was being created).
    pub async fn attach_processes(&self, unit: &str, pids: &[u32]) -> Result<()> {
        bounded(
            "AttachProcessesToUnit",
            unit,
            self.proxy.attach_processes_to_unit(unit, "", pids.to_vec()),
        )
        .await
    }

    /// Stops `unit` (SIGTERM to every process, SIGKILL after its stop
    /// timeout) and waits until it is gone. A unit already gone is Ok.
    pub async fn stop_unit(&self, unit: &str, stop_timeout: Duration) -> Result<()> {
        let job = match bounded("StopUnit", unit, self.proxy.stop_unit(unit, "replace")).await {
            Ok(job) => job,
            Err(err) if err.is_no_such_unit() => return Ok(()),
            Err(err) => return Err(err),
        };
        self.wait_job(unit, job.as_str(), stop_timeout + JOB_GRACE)
            .await?;
        Ok(())
    }

    /// Changes the limits of a loaded unit at once (`SetUnitProperties`,
    /// runtime: systemd keeps them in a drop-in under /run until reboot).
    pub async fn set_limits(&self, unit: &str, limits: &Limits) -> Result<()> {
        bounded(
            "SetUnitProperties",
            unit,
            self.proxy
                .set_unit_properties(unit, true, limit_props(limits)),
        )
        .await
    }

    /// Freezes (`true`) or thaws every process of `unit` (cgroup v2's
    /// freezer, through systemd).
    pub async fn freeze(&self, unit: &str, freeze: bool) -> Result<()> {
        if freeze {
            bounded("FreezeUnit", unit, self.proxy.freeze_unit(unit)).await
        } else {
            bounded("ThawUnit", unit, self.proxy.thaw_unit(unit)).await
        }
    }

    /// The cgroup of a loaded scope (its `ControlGroup` property).
    pub async fn control_group(&self, unit: &str) -> Result<String> {
        let path = bounded("GetUnit", unit, self.proxy.get_unit(unit)).await?;
        let props = zbus::fdo::PropertiesProxy::builder(self.proxy.inner().connection())
            .destination("org.freedesktop.systemd1")
            .and_then(|b| b.path(path))
            .map_err(|e| call_err("GetUnit", unit, e))?;
        let iface =
            zbus::names::InterfaceName::from_static_str_unchecked("org.freedesktop.systemd1.Scope");
        let get = async {
            let v = props.build().await?.get(iface, "ControlGroup").await?;
            String::try_from(v).map_err(zbus::Error::Variant)
        };
        bounded("Get ControlGroup", unit, get).await
    }

    /// Names of the loaded scopes whose name matches `pattern`.
    pub async fn list_scopes(&self, pattern: &str) -> Result<Vec<(String, String)>> {
        let rows = bounded(
            "ListUnitsByPatterns",
            pattern,
            self.proxy.list_units_by_patterns(vec![], vec![pattern]),
        )
        .await?;
        Ok(rows.into_iter().map(|r| (r.0, r.3)).collect())
    }
}

/// The unit properties of `limits`: systemd's names and units, `u64::MAX`
/// being its `infinity`.
pub fn limit_props(l: &Limits) -> Vec<(&'static str, Value<'static>)> {
    let mut props = Vec::new();
    let mut put = |k, v: Option<u64>| {
        if let Some(v) = v {
            props.push((k, Value::from(v)));
        }
    };
    put("MemoryMax", l.memory_max);
    put("MemoryHigh", l.memory_high);
    put("CPUWeight", l.cpu_weight);
    put("TasksMax", l.tasks_max);
    put("IOWeight", l.io_weight);
    // systemd's CPUQuota=50% is CPUQuotaPerSecUSec=500000; 0 lifts it.
    put(
        "CPUQuotaPerSecUSec",
        l.cpu_quota.map(|q| match q {
            0.0 => NO_LIMIT,
            q => (q * 10_000.0).round() as u64,
        }),
    );
    props
}

/// The result of a job, given `limit` — extended while systemd keeps
/// finishing other jobs (each finish allows [`JOB_GRACE`] more), up to
/// [`JOB_CEILING`]; `None` when no answer came in time.
async fn await_job(
    mut rx: oneshot::Receiver<String>,
    limit: Duration,
    last_done: &Mutex<tokio::time::Instant>,
) -> Option<String> {
    let started = tokio::time::Instant::now();
    let ceiling = started + JOB_CEILING.max(limit);
    let mut deadline = started + limit;
    loop {
        match tokio::time::timeout_at(deadline, &mut rx).await {
            Ok(result) => return result.ok(),
            Err(_) => {
                let last = *last_done.lock().unwrap_or_else(|p| p.into_inner());
                let next = (last + JOB_GRACE).min(ceiling);
                if next <= deadline {
                    return None;
                }
                deadline = next;
            }
        }
    }
}

fn finish_job(jobs: &Mutex<HashMap<String, JobSlot>>, job: &str, result: String) {
    let mut jobs = jobs.lock().unwrap_or_else(|p| p.into_inner());
    match jobs.remove(job) {
        Some(JobSlot::Waiting(waiters)) => {
            for tx in waiters {
                let _ = tx.send(result.clone());
            }
        }
        _ => {
            // Nobody waits (yet): keep the result briefly for a waiter whose
            // StartTransientUnit reply is still in flight.
            let now = Instant::now();
            jobs.retain(|_, slot| !matches!(slot, JobSlot::Done(_, at) if now.duration_since(*at) > Duration::from_secs(60)));
            jobs.insert(job.to_string(), JobSlot::Done(result, now));
        }
    }
}

/// Escapes one component of a unit name the way systemd does (`\xNN` for
/// every byte outside `[A-Za-z0-9:_.]`, and a leading `.`), so that `-`
/// inside a workspace name cannot create nested slices. `/` is escaped
/// too (systemd-escape would turn it into `-`, which collides).
pub fn escape_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, b) in s.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b':' || b == b'_' || (b == b'.' && i > 0);
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Unit names are at most 255 bytes; a component that would not fit is cut
/// (never inside a `\xNN`) and given a hash of the whole so distinct names
/// stay distinct.
fn fit_component(escaped: &str, budget: usize) -> String {
    if escaped.len() <= budget {
        return escaped.to_string();
    }
    let hash = escaped.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    });
    let suffix = format!(":{hash:08x}");
    let mut cut = budget.saturating_sub(suffix.len());
    // Back up to the start of an escape sequence if we landed inside one.
    if let Some(pos) = escaped[..cut].rfind('\\') {
        if cut - pos < 4 {
            cut = pos;
        }
    }
    format!("{}{suffix}", &escaped[..cut])
}

const UNIT_MAX: usize = 255;

/// `app-corral-<name>-<id>.scope`, the freedesktop app-scope convention.
pub fn scope_name(name: &str, id: &str) -> String {
    let budget = UNIT_MAX - "app-corral-".len() - 1 - id.len() - ".scope".len();
    format!(
        "app-corral-{}-{id}.scope",
        fit_component(&escape_component(name), budget)
    )
}

/// `app-corral-<workspace>.slice`: nested in `app-corral.slice`, so a
/// workspace's totals come from one cgroup.
pub fn slice_name(workspace: &str) -> String {
    let budget = UNIT_MAX - "app-corral-".len() - ".slice".len();
    format!(
        "app-corral-{}.slice",
        fit_component(&escape_component(workspace), budget)
    )
}

/// System mode: `user-<uid>-corral-<workspace>.slice`, nested in the
/// owner's `user-<uid>.slice`, so the per-user accounting and limits
/// logind and the admin set apply to the owner's processes too.
pub fn user_slice_name(uid: u32, workspace: &str) -> String {
    let prefix = format!("user-{uid}-corral-");
    let budget = UNIT_MAX - prefix.len() - ".slice".len();
    format!(
        "{prefix}{}.slice",
        fit_component(&escape_component(workspace), budget)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_follows_systemd() {
        assert_eq!(escape_component("web"), "web");
        assert_eq!(escape_component("my-proj"), "my\\x2dproj");
        assert_eq!(escape_component("a/b c"), "a\\x2fb\\x20c");
        assert_eq!(escape_component(".hidden"), "\\x2ehidden");
        assert_eq!(escape_component("é"), "\\xc3\\xa9");
        assert_eq!(slice_name("my-proj"), "app-corral-my\\x2dproj.slice");
        assert_eq!(
            user_slice_name(1000, "my-proj"),
            "user-1000-corral-my\\x2dproj.slice"
        );
        assert!(user_slice_name(u32::MAX, &"-".repeat(128)).len() <= 255);
        assert_eq!(
            scope_name("npm run", "12"),
            "app-corral-npm\\x20run-12.scope"
        );
    }

    /// A hung manager must yield an error naming the call, never a task
    /// that waits forever (the outer bound catches a missing timeout).
    #[tokio::test(start_paused = true)]
    async fn a_manager_that_never_answers_is_a_timeout_error_not_a_hang() {
        let began = tokio::time::Instant::now();
        let hung = std::future::pending::<zbus::Result<OwnedObjectPath>>();
        let r = tokio::time::timeout(
            CALL_TIMEOUT * 2,
            bounded("StopUnit", "app-corral-x-1.scope", hung),
        )
        .await
        .expect("the call was not bounded");
        let err = r.unwrap_err();
        assert!(matches!(err, Error::CallTimeout { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "systemd: StopUnit app-corral-x-1.scope: no answer within 20s"
        );
        assert_eq!(began.elapsed(), CALL_TIMEOUT);
    }

    #[test]
    fn long_names_fit_and_stay_distinct() {
        let a = scope_name(&"é".repeat(64), "123456");
        let b = scope_name(&format!("{}x", "é".repeat(63)), "123456");
        assert!(a.len() <= 255 && b.len() <= 255, "{} {}", a.len(), b.len());
        assert_ne!(a, b);
        assert!(a.ends_with("-123456.scope"));
        // The cut never splits an escape sequence.
        let body = a.trim_start_matches("app-corral-");
        let (comp, _) = body.split_once(':').unwrap();
        assert!(comp.len() % 4 == 0, "{comp}");
        assert!(slice_name(&"-".repeat(128)).len() <= 255);
    }

    /// A job with no answer times out at its limit when systemd finishes
    /// nothing else; while other jobs keep finishing it waits on (a queue
    /// of thousands of stops), until [`JOB_GRACE`] after the last one.
    #[tokio::test(start_paused = true)]
    async fn a_job_waits_past_its_limit_only_while_systemd_finishes_others() {
        use tokio::time::{sleep, Instant};
        let limit = Duration::from_secs(5);
        let last_done = Arc::new(Mutex::new(Instant::now()));
        // A quiet manager: the limit, or the grace since the last job.
        let began = Instant::now();
        let (_tx, rx) = oneshot::channel::<String>();
        assert_eq!(await_job(rx, limit, &last_done).await, None);
        assert_eq!(began.elapsed(), JOB_GRACE);
        *last_done.lock().unwrap() = Instant::now() - JOB_GRACE;
        let began = Instant::now();
        let (_tx, rx) = oneshot::channel::<String>();
        assert_eq!(await_job(rx, limit, &last_done).await, None);
        assert_eq!(began.elapsed(), limit);

        // A busy one: others finish every 2 s for 100 s, then ours.
        let busy = |answer: bool| {
            let (tx, rx) = oneshot::channel::<String>();
            let last = last_done.clone();
            tokio::spawn(async move {
                for _ in 0..50 {
                    sleep(Duration::from_secs(2)).await;
                    *last.lock().unwrap() = Instant::now();
                }
                if answer {
                    let _ = tx.send("done".into());
                } else {
                    std::future::pending::<()>().await;
                }
            });
            rx
        };
        let began = Instant::now();
        assert_eq!(
            await_job(busy(true), limit, &last_done).await.as_deref(),
            Some("done")
        );
        assert_eq!(began.elapsed(), Duration::from_secs(100));
        // The others stop finishing at 100 s and ours never does.
        let began = Instant::now();
        assert_eq!(await_job(busy(false), limit, &last_done).await, None);
        assert_eq!(began.elapsed(), Duration::from_secs(100) + JOB_GRACE);
    }
}
