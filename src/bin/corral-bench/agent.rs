//! One `corrald` under test: started on a fresh temporary state directory
//! with the sample interval under test, stopped (SIGTERM) and its state
//! directory removed afterwards. Also the bus clients the bench drives it
//! with, and the recorder of `ProcessStateChanged` signals.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use tokio::sync::Notify;

use corral::api::{self, ManagerProxy};

/// Where the binaries under test are.
#[derive(Debug, Clone)]
pub struct Bins {
    pub corrald: PathBuf,
    pub shim: PathBuf,
    pub corralctl: PathBuf,
    /// This program (the stamp child and the one-shot client).
    pub bench: PathBuf,
}

pub struct Agent {
    child: Option<Child>,
    pub pid: u32,
    pub dir: PathBuf,
}

impl Agent {
    /// Starts corrald and waits until it owns its bus name.
    /// `extra`: more `corrald.toml` lines (`--agent-config`).
    pub async fn start(
        bins: &Bins,
        conn: &zbus::Connection,
        interval_s: u64,
        extra: &str,
    ) -> Result<Agent> {
        if name_owned(conn).await? {
            bail!(
                "{} is already owned on this bus: another corrald runs",
                api::BUS_NAME
            );
        }
        let dir = fresh_dir("corral-bench-agent")?;
        let config = dir.join("corrald.toml");
        std::fs::write(
            &config,
            format!("sample_interval = {interval_s}\nstop_timeout = 3\n{extra}\n"),
        )?;
        let log = std::fs::File::create(dir.join("corrald.log"))?;
        let child = Command::new(&bins.corrald)
            .arg("--user")
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .env("CORRAL_SHIM", &bins.shim)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bins.corrald.display()))?;
        let pid = child.id();
        let mut agent = Agent {
            child: Some(child),
            pid,
            dir,
        };
        let t = Instant::now();
        while !name_owned(conn).await? {
            if let Some(Ok(Some(st))) = agent.child.as_mut().map(|c| c.try_wait()) {
                bail!("corrald exited early ({st}); log:\n{}", agent.log());
            }
            if t.elapsed() > Duration::from_secs(20) {
                bail!(
                    "corrald did not take its name in 20 s; log:\n{}",
                    agent.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(agent)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("corrald.log")).unwrap_or_default()
    }

    /// The agent's SQLite file.
    pub fn db(&self) -> PathBuf {
        self.dir.join("state").join("corral.db")
    }

    /// Sizes of the SQLite file and its WAL, bytes.
    pub fn db_sizes(&self) -> (u64, u64) {
        let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let db = self.db();
        (size(db.clone()), size(db.with_extension("db-wal")))
    }

    /// SIGTERM, wait (SIGKILL after 15 s), wait for the name to be free,
    /// remove the state directory.
    pub async fn stop(mut self, conn: &zbus::Connection) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) of our own unreaped child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let t = Instant::now();
            loop {
                if c.try_wait()?.is_some() {
                    break;
                }
                if t.elapsed() > Duration::from_secs(15) {
                    // SAFETY: as above.
                    unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
                    let _ = c.wait();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let t = Instant::now();
        while name_owned(conn).await? && t.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if std::env::var_os("CORRAL_BENCH_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        Ok(())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) of our own unreaped child.
            unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
            let _ = c.wait();
        }
    }
}

async fn name_owned(conn: &zbus::Connection) -> Result<bool> {
    let dbus = zbus::fdo::DBusProxy::new(conn).await?;
    Ok(dbus
        .name_has_owner(api::BUS_NAME.try_into().context("bus name")?)
        .await?)
}

/// A new directory under /tmp named `prefix.<pid>.<n>`.
pub fn fresh_dir(prefix: &str) -> Result<PathBuf> {
    for n in 0..1000 {
        let d = PathBuf::from(format!("/tmp/{prefix}.{}.{n}", std::process::id()));
        match std::fs::create_dir(&d) {
            Ok(()) => return Ok(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", d.display())),
        }
    }
    bail!("no free /tmp/{prefix}.* directory")
}

/// A bus client: its own connection and a manager proxy on it.
pub struct Client {
    pub conn: zbus::Connection,
    pub mgr: ManagerProxy<'static>,
}

impl Client {
    pub async fn new() -> Result<Client> {
        let conn = zbus::Connection::session()
            .await
            .context("connecting to the session bus")?;
        let mgr = ManagerProxy::builder(&conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await?;
        Ok(Client { conn, mgr })
    }
}

/// One `ProcessStateChanged` as received.
#[derive(Debug, Clone)]
pub struct Sig {
    pub old: String,
    pub new: String,
    /// Wall clock when the client's stream yielded it.
    pub at: SystemTime,
}

/// Records every `ProcessStateChanged` on its own connection.
#[derive(Clone)]
pub struct Signals {
    seen: Arc<Mutex<HashMap<String, Vec<Sig>>>>,
    notify: Arc<Notify>,
    _client: Arc<Client>,
}

impl Signals {
    /// Subscribes; the match rule is in place when this returns.
    pub async fn listen() -> Result<Signals> {
        let client = Arc::new(Client::new().await?);
        let mut stream = client.mgr.receive_process_state_changed().await?;
        let seen: Arc<Mutex<HashMap<String, Vec<Sig>>>> = Arc::default();
        let notify = Arc::new(Notify::new());
        let (s, n) = (seen.clone(), notify.clone());
        tokio::spawn(async move {
            while let Some(sig) = stream.next().await {
                let at = SystemTime::now();
                if let Ok(a) = sig.args() {
                    if let Ok(mut m) = s.lock() {
                        m.entry(a.id.to_string()).or_default().push(Sig {
                            old: a.old_state.to_string(),
                            new: a.new_state.to_string(),
                            at,
                        });
                    }
                    n.notify_waiters();
                }
            }
        });
        Ok(Signals {
            seen,
            notify,
            _client: client,
        })
    }

    /// Signals of `id` so far.
    pub fn of(&self, id: &str) -> Vec<Sig> {
        self.seen
            .lock()
            .map(|m| m.get(id).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    /// Waits for the first signal of `id` (counting from signal index
    /// `from`) whose new state is one of `states`.
    pub async fn wait(
        &self,
        id: &str,
        from: usize,
        states: &[&str],
        limit: Duration,
    ) -> Option<(usize, Sig)> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let found = self
                .of(id)
                .into_iter()
                .enumerate()
                .skip(from)
                .find(|(_, s)| states.contains(&s.new.as_str()));
            if found.is_some() {
                return found;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// Every signal so far, by process id; the log starts over.
    pub fn take(&self) -> HashMap<String, Vec<Sig>> {
        self.seen
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default()
    }
}

/// Waits until `file` holds a stamp with at least `starts` runs and
/// `exits` exits.
pub async fn wait_stamp(
    file: &Path,
    starts: usize,
    exits: usize,
    limit: Duration,
) -> Option<crate::probe::Stamps> {
    let t = Instant::now();
    loop {
        let s = crate::probe::Stamps::read(file);
        if s.starts.len() >= starts && s.exits.len() >= exits {
            return Some(s);
        }
        if t.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
