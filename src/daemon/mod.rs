//! The agent: wires the store, systemd, the supervisor and the bus
//! together, in the order that keeps the contract (reconcile before
//! serving, serve objects before owning the name), then waits for the
//! shutdown signal. Supervised processes live in their own scopes and
//! keep running after the agent exits.

pub mod bus;
pub mod cgroup;
pub mod exits;
pub mod launch;
pub mod pidfd;
pub mod store;
pub mod supervisor;
pub mod systemd;

use std::os::unix::fs::DirBuilderExt;

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
    #[error("the supervisor stopped unexpectedly: {0}")]
    SupervisorEnded(String),
}

/// Variables of corrald's own service environment that must not leak into
/// supervised processes (they describe corrald's unit, not theirs).
const PRIVATE_ENV: [&str; 9] = [
    "NOTIFY_SOCKET",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "INVOCATION_ID",
    "JOURNAL_STREAM",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
    "MANAGERPID",
];

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

/// Runs the agent until `cancel` fires.
pub async fn run(config: Config, cancel: CancellationToken) -> Result<(), Error> {
    raise_fd_limit();
    let dir = &config.state_dir;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| Error::StateDir {
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
    let base_env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| !PRIVATE_ENV.contains(&k.as_str()))
        .collect();
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
    let (handle, mut actor) =
        supervisor::start(settings, store, systemd, gone_rx, events_tx).await?;
    bus::serve(&conn, handle.clone(), storage_health)
        .await
        .map_err(Error::Serve)?;
    bus::publish_existing(&conn, &handle)
        .await
        .map_err(Error::Serve)?;
    tokio::spawn(bus::publish_events(conn.clone(), handle.clone(), events_rx));
    let reply = conn
        .request_name_with_flags(api::BUS_NAME, RequestNameFlags::DoNotQueue.into())
        .await
        .map_err(Error::Serve)?;
    if reply != RequestNameReply::PrimaryOwner {
        return Err(Error::NameTaken {
            name: api::BUS_NAME,
        });
    }
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
