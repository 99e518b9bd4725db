//! The agent: wires the store, systemd, the supervisor and the bus
//! together, in the order that keeps the contract (reconcile before
//! serving, serve objects before owning the name), then waits for the
//! shutdown signal. Supervised processes live in their own scopes and
//! keep running after the agent exits. The supervisor's events go to
//! each of their consumers (bus objects, service status, desktop
//! notifications, file watches) through [`tee`].

pub mod bus;
pub mod cgroup;
pub mod exits;
pub mod launch;
pub mod listeners;
pub mod metrics;
pub mod notify;
pub mod pidfd;
pub mod ports;
pub mod projects;
pub mod service;
pub mod store;
pub mod supervisor;
pub mod systemd;
pub mod track;
pub mod watch;

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

use tokio_util::sync::CancellationToken;
use zbus::fdo::{RequestNameFlags, RequestNameReply};

use crate::api;
use crate::config::{Config, Mode};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("state directory {path}: {source}")]
    StateDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("connecting to the {bus} bus: {source}")]
    Bus {
        bus: &'static str,
        source: zbus::Error,
    },
    #[error("{0}")]
    Systemd(#[from] systemd::Error),
    #[error("start-up reconciliation: {0}")]
    Supervisor(#[from] supervisor::Error),
    #[error("serving on the bus: {0}")]
    Serve(zbus::Error),
    #[error("{name} is already owned on the bus: is another corrald running?")]
    NameTaken { name: &'static str },
    #[error("metrics_listen {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("the supervisor stopped unexpectedly: {0}")]
    SupervisorEnded(String),
}

/// Variables of corrald's own service environment that must not leak into
/// supervised processes: they describe corrald's unit, not theirs. The
/// list is systemd.exec(5), "Environment Variables Set or Propagated by
/// the Service Manager", less what describes the user ($PATH, $HOME,
/// $USER, $LOGNAME, $SHELL, $LANG, $XDG_RUNTIME_DIR, $TERM), which a
/// command run from a shell would have too.
const PRIVATE_ENV: [&str; 37] = [
    "NOTIFY_SOCKET",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "INVOCATION_ID",
    "JOURNAL_STREAM",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
    "MANAGERPID",
    "MAINPID",
    "SYSTEMD_EXEC_PID",
    "MEMORY_PRESSURE_WATCH",
    "MEMORY_PRESSURE_WRITE",
    "RUNTIME_DIRECTORY",
    "STATE_DIRECTORY",
    "CACHE_DIRECTORY",
    "LOGS_DIRECTORY",
    "CONFIGURATION_DIRECTORY",
    "CREDENTIALS_DIRECTORY",
    "FDSTORE",
    "LOG_NAMESPACE",
    "PIDFILE",
    "SERVICE_RESULT",
    "EXIT_CODE",
    "EXIT_STATUS",
    "MONITOR_SERVICE_RESULT",
    "MONITOR_EXIT_CODE",
    "MONITOR_EXIT_STATUS",
    "MONITOR_INVOCATION_ID",
    "MONITOR_UNIT",
    "TRIGGER_UNIT",
    "TRIGGER_PATH",
    "TRIGGER_TIMER_REALTIME_USEC",
    "TRIGGER_TIMER_MONOTONIC_USEC",
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "DEBUG_INVOCATION",
];

/// corrald's own settings (`CORRAL_SHIM`, the test harness's): not the
/// command's business.
const PRIVATE_ENV_PREFIX: &str = "CORRAL_";

/// The part of corrald's environment a supervised process inherits.
fn base_env(vars: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    vars.filter(|(k, _)| !PRIVATE_ENV.contains(&k.as_str()) && !k.starts_with(PRIVATE_ENV_PREFIX))
        .collect()
}

/// Raises corrald's soft limit of open files to the hard one: it holds a
/// pidfd per running process, and systemd starts services at soft 1024
/// (for select(2)'s sake), which a thousand processes would exhaust. The
/// shim puts the soft limit back for the command (`shim::child`).
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!(
                    "raising the open-files limit: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}

/// Makes sure the state directory is corrald's alone: created 0700 if
/// missing; if it exists, it must be a directory owned by `uid` that
/// group and others cannot enter. An open one is refused, not tightened:
/// others may already have read the environments in it or planted files,
/// which only its owner can judge (`chmod 700` it after looking).
fn prepare_state_dir(dir: &Path, uid: u32) -> std::io::Result<()> {
    let unsafe_dir = |problem: String| {
        std::io::Error::other(format!(
            "{problem}; it holds callers' environments and output, so corrald will not use it"
        ))
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(unsafe_dir("not a directory".into()));
    }
    if meta.uid() != uid {
        return Err(unsafe_dir(format!(
            "owned by uid {}, not by corrald's uid {uid}",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(unsafe_dir(format!(
            "mode {mode:04o} lets group or others in (must be 0700)"
        )));
    }
    Ok(())
}

/// Hands every supervisor event, in order, to each consumer; one that has
/// gone is dropped from the list, the others go on.
async fn tee(
    mut events: tokio::sync::mpsc::UnboundedReceiver<supervisor::Event>,
    mut consumers: Vec<tokio::sync::mpsc::UnboundedSender<supervisor::Event>>,
) {
    while let Some(event) = events.recv().await {
        consumers.retain(|c| c.send(event.clone()).is_ok());
    }
}

/// Runs the agent until `cancel` fires.
pub async fn run(config: Config, cancel: CancellationToken) -> Result<(), Error> {
    raise_fd_limit();
    // Everything corrald and its shims create in the state directory
    // (database, logs, exit records) is theirs alone: 0600 files, 0700
    // directories. The shim gives the command umask 022 again.
    // SAFETY: umask(2) only sets the process's file mode mask.
    unsafe { libc::umask(0o077) };
    let dir = &config.state_dir;
    // SAFETY: geteuid(2) cannot fail.
    prepare_state_dir(dir, unsafe { libc::geteuid() }).map_err(|source| Error::StateDir {
        path: dir.clone(),
        source,
    })?;
    let store = store::Store::open(&dir.join("corral.db"))?;
    let storage_health = store.health();
    let (bus_name, conn) = match config.mode {
        Mode::User => ("session", zbus::Connection::session().await),
        Mode::System => ("system", zbus::Connection::system().await),
    };
    let conn = conn.map_err(|source| Error::Bus {
        bus: bus_name,
        source,
    })?;
    let (gone_tx, gone_rx) = tokio::sync::mpsc::unbounded_channel();
    let systemd = systemd::Systemd::connect(&conn, gone_tx).await?;
    let base_env = base_env(std::env::vars());
    let home = std::env::var("HOME")
        .ok()
        .filter(|h| h.starts_with('/'))
        .unwrap_or_else(|| "/".into());
    let settings = supervisor::Settings {
        config: config.clone(),
        shim: launch::find_shim(),
        base_env,
        home,
    };
    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
    let store_for_projects = store.clone();
    let store_for_watch = store.clone();
    let (handle, mut actor) =
        supervisor::start(settings, store, systemd, gone_rx, events_tx).await?;
    let auth = bus::Auth::new(&conn, config.mode)
        .await
        .map_err(Error::Serve)?;
    let (projects_events, projects_rx) = tokio::sync::mpsc::unbounded_channel();
    let (steps_tx, steps_rx) = tokio::sync::mpsc::unbounded_channel();
    let projects = projects::Projects::new(
        handle.clone(),
        store_for_projects,
        projects_rx,
        steps_tx,
        config.mode,
    );
    let ctx = bus::Ctx {
        handle: handle.clone(),
        auth,
        projects: projects.clone(),
    };
    bus::serve(&conn, ctx.clone(), storage_health)
        .await
        .map_err(Error::Serve)?;
    bus::publish_existing(&conn, &ctx)
        .await
        .map_err(Error::Serve)?;
    let mut consumers = vec![projects_events];
    if config.mode == Mode::User {
        tokio::spawn(bus::publish_project_steps(conn.clone(), steps_rx));
    }
    let (bus_tx, bus_rx) = tokio::sync::mpsc::unbounded_channel();
    consumers.push(bus_tx);
    let (status_tx, status_rx) = tokio::sync::mpsc::unbounded_channel();
    consumers.push(status_tx);
    if config.notifications {
        let (notify_tx, notify_rx) = tokio::sync::mpsc::unbounded_channel();
        consumers.push(notify_tx);
        let logs = config.state_dir.join("logs");
        tokio::spawn(notify::run(conn.clone(), logs, notify_rx));
    }
    let (watch_tx, watch_rx) = tokio::sync::mpsc::unbounded_channel();
    consumers.push(watch_tx);
    tokio::spawn(watch::run(handle.clone(), store_for_watch, watch_rx));
    tokio::spawn(tee(events_rx, consumers));
    tokio::spawn(bus::publish_events(conn.clone(), ctx, bus_rx));
    tokio::spawn(service::report_status(handle.clone(), status_rx));
    if let Some(addr) = config.metrics_listen {
        metrics::serve(addr, handle.clone())
            .await
            .map_err(|source| Error::Metrics { addr, source })?;
    }
    let reply = conn
        .request_name_with_flags(api::BUS_NAME, RequestNameFlags::DoNotQueue.into())
        .await
        .map_err(Error::Serve)?;
    if reply != RequestNameReply::PrimaryOwner {
        return Err(Error::NameTaken {
            name: api::BUS_NAME,
        });
    }
    service::ready();
    projects.resume().await;
    tokio::spawn(service::watchdog(handle.clone()));
    tracing::info!(state_dir = %config.state_dir.display(), bus = bus_name, "corrald ready");
    // A supervisor that ended (a panic) leaves a bus that can only answer
    // "shutting down": exit non-zero instead, so the unit restarts us.
    tokio::select! {
        _ = cancel.cancelled() => {}
        ended = &mut actor => {
            let why = match ended {
                Ok(()) => "its task returned".to_string(),
                Err(e) => e.to_string(),
            };
            tracing::error!("supervisor ended: {why}");
            return Err(Error::SupervisorEnded(why));
        }
    }
    tracing::info!("shutting down; supervised processes keep running in their scopes");
    let _ = conn.release_name(api::BUS_NAME).await;
    drop(handle);
    actor.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn euid() -> u32 {
        // SAFETY: geteuid(2) cannot fail.
        unsafe { libc::geteuid() }
    }

    /// Regression: `SYSTEMD_EXEC_PID`, `MEMORY_PRESSURE_*` and corrald's
    /// own `CORRAL_*` settings leaked into every supervised process.
    #[test]
    fn agent_only_variables_are_not_inherited() {
        let vars = [
            "PATH=/bin",
            "HOME=/h",
            "XDG_RUNTIME_DIR=/run/user/1",
            "SYSTEMD_EXEC_PID=7",
            "MEMORY_PRESSURE_WATCH=/sys/fs/cgroup/x/memory.pressure",
            "MEMORY_PRESSURE_WRITE=c29tZQ==",
            "INVOCATION_ID=abc",
            "CREDENTIALS_DIRECTORY=/run/credentials/corrald.service",
            "CORRAL_SHIM=/opt/corral-shim",
            "CORRAL_TEST_MODE=testbed",
        ]
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        });
        let kept: Vec<String> = base_env(vars.into_iter())
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(kept, ["PATH", "HOME", "XDG_RUNTIME_DIR"]);
    }

    #[test]
    fn a_missing_state_dir_is_created_private() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("a/corral");
        prepare_state_dir(&dir, euid()).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // And it is accepted as it is on the next start.
        prepare_state_dir(&dir, euid()).unwrap();
    }

    /// The state directory holds every caller's environment; one that
    /// group or others can enter is refused, naming the mode.
    #[test]
    fn a_state_dir_open_to_others_is_refused() {
        let top = tempfile::tempdir().unwrap();
        for mode in [0o755, 0o750, 0o701] {
            std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(mode)).unwrap();
            let err = prepare_state_dir(top.path(), euid())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("mode {mode:04o} lets group or others in")),
                "{err}"
            );
        }
    }

    /// A state directory of another user is refused (seen from a uid that
    /// does not own it, which needs no root to set up).
    #[test]
    fn a_state_dir_owned_by_another_uid_is_refused() {
        let top = tempfile::tempdir().unwrap();
        let other = euid().wrapping_add(1);
        let err = prepare_state_dir(top.path(), other)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!(
                "owned by uid {}, not by corrald's uid {other}",
                euid()
            )),
            "{err}"
        );
    }
}
