//! SQLite persistence: the record of every process, run and event. One
//! connection owned by one thread (WAL, foreign keys on); callers send it
//! closures over typed methods and never see SQL. Writes are committed
//! before the call that caused them is answered, so an accepted request
//! survives a crash of the agent right after its reply.

mod history;
mod projects;
mod schema;

pub use history::{Rollup, Sample};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::api::{ExitReason, Limits, RestartMode, State};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "database {path} has schema version {found}, newer than this corrald supports ({supported}); refusing to touch it"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("database: bad record: {0}")]
    Record(#[from] serde_json::Error),
    #[error("database {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database thread has stopped")]
    Gone,
}

pub type Result<T> = std::result::Result<T, Error>;

/// A process's id: its row in `processes`, its object path's last element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ProcessId(pub u64);

/// One launch of a process: its row in `runs`, its exit record's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RunId(pub u64);

impl std::fmt::Display for ProcessId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Restart policy of one process, with defaults filled in from the config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub policy: RestartMode,
    pub delay_ms: u64,
    pub delay_max_ms: u64,
    pub reset_sec: u32,
    pub limit: u32,
    pub limit_interval_sec: u32,
}

/// Everything needed to launch a process again, also after an agent
/// restart: stored as JSON in `processes.config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessConfig {
    pub command: Vec<String>,
    pub cwd: String,
    /// The spec's `Environment` entries (`KEY=VALUE`); the agent's own
    /// environment is added underneath at each launch unless `clean_env`.
    pub env: Vec<String>,
    #[serde(default)]
    pub clean_env: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub memory_max: Option<u64>,
    pub cpu_quota: Option<f64>,
    pub tasks_max: Option<u64>,
    /// The limits only `SetLimits` sets (the three above come from the
    /// spec too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_high: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_weight: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_weight: Option<u64>,
    pub restart: RestartPolicy,
    #[serde(default)]
    pub persistent: bool,
    /// System mode: the ids the command runs as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<crate::shim::Credentials>,
    /// System mode: the environment starts from the owner's login
    /// variables instead of the agent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_env: Option<Vec<(String, String)>>,
    /// The current run was taken over by `Track` (no shim: no exit code,
    /// no output); cleared when corral launches it again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tracked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::api::HealthCheck>,
    /// Runs on a pseudo-terminal (`Tty`), attachable.
    #[serde(default)]
    pub tty: bool,
    /// Speaks sd_notify(3) (`Notify`): `NotifyState` says whether it is
    /// ready.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub notify: bool,
}

impl ProcessConfig {
    /// The limits its scope gets.
    pub fn limits(&self) -> Limits {
        Limits {
            memory_max: self.memory_max,
            memory_high: self.memory_high,
            cpu_quota: self.cpu_quota,
            cpu_weight: self.cpu_weight,
            tasks_max: self.tasks_max,
            io_weight: self.io_weight,
        }
    }

    pub fn set_limits(&mut self, l: Limits) {
        self.memory_max = l.memory_max;
        self.memory_high = l.memory_high;
        self.cpu_quota = l.cpu_quota;
        self.cpu_weight = l.cpu_weight;
        self.tasks_max = l.tasks_max;
        self.io_weight = l.io_weight;
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProcessRecord {
    pub id: ProcessId,
    /// The uid the process runs as and that may manage it.
    pub owner: u32,
    pub name: String,
    pub workspace: String,
    pub session: String,
    pub state: State,
    pub restarts: u32,
    pub created_at: u64,
    pub config: ProcessConfig,
    /// Runs that ended in `oom-kill` (counted from the runs, which live
    /// as long as the process).
    pub oom_kills: u32,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunRecord {
    pub id: RunId,
    pub process_id: ProcessId,
    pub unit: String,
    pub control_group: String,
    pub main_pid: u32,
    pub started_at: u64,
    pub exited_at: Option<u64>,
    pub exit_code: Option<i32>,
    pub exit_signal: Option<i32>,
    pub reason: Option<ExitReason>,
}

/// What a new process row holds besides its id and state.
#[derive(Debug, Clone, Copy)]
pub struct NewProcess<'a> {
    pub owner: u32,
    pub name: &'a str,
    pub workspace: &'a str,
    pub session: &'a str,
    pub config: &'a ProcessConfig,
}

/// How a run ended, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Ending {
    pub state: State,
    pub exit_code: i32,
    pub exit_signal: i32,
    pub reason: ExitReason,
    pub at: u64,
}

/// One state change of a process, written in one transaction with its
/// event row (`old -> new (why)`): the store half of the supervisor's
/// transition function.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub process: ProcessId,
    /// The run the change belongs to (for `RunChange::New`, the old one).
    pub run: RunId,
    pub old: State,
    pub new: State,
    pub why: String,
    pub at: u64,
    pub run_change: RunChange,
}

/// What a state change writes to the run besides the state.
#[derive(Debug, Clone, PartialEq)]
pub enum RunChange {
    None,
    /// Inside its scope, the command executing.
    Running {
        main_pid: u32,
        control_group: String,
    },
    /// The run ended.
    Ended {
        exit_code: i32,
        exit_signal: i32,
        reason: ExitReason,
    },
    /// The recorded reason of the ended run changes (crash-loop verdict).
    Reason(ExitReason),
    /// A new run starts (restart); the change is recorded against it.
    New {
        unit: String,
        reset_restarts: bool,
    },
}

/// One event row: (time µs, process id, kind, detail).
pub type EventRow = (u64, u64, String, String);

/// Longest event detail kept (bytes): details quote commands and error
/// messages, which a client can make as long as a spec allows.
pub const MAX_EVENT_DETAIL: usize = 1024;

/// `detail` cut to [`MAX_EVENT_DETAIL`] bytes at a character boundary,
/// ending in `…` when cut.
fn clip(detail: &str) -> std::borrow::Cow<'_, str> {
    if detail.len() <= MAX_EVENT_DETAIL {
        return detail.into();
    }
    let mut end = MAX_EVENT_DETAIL - '…'.len_utf8();
    while !detail.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &detail[..end]).into()
}

/// Callers stamp rows with this clock.
pub use crate::clock::now_us;

/// Creates the database file 0600 (SQLite would make it 0644 less the
/// umask, and gives its `-wal` and `-shm` files the database's mode), or
/// checks the one there: never through a symlink, a regular file of
/// corrald's uid, tightened to 0600 if looser (the directory around it is
/// private, so nobody else could have opened it).
fn prepare_file(path: &Path) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let file_err = |source| Error::File {
        path: path.to_path_buf(),
        source,
    };
    let refuse = |why: String| file_err(std::io::Error::other(why));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                refuse("is a symbolic link; refusing to follow it".into())
            } else {
                file_err(e)
            }
        })?;
    let meta = file.metadata().map_err(file_err)?;
    if !meta.is_file() {
        return Err(refuse("not a regular file".into()));
    }
    // SAFETY: geteuid(2) cannot fail.
    let uid = unsafe { libc::geteuid() };
    if meta.uid() != uid {
        return Err(refuse(format!(
            "owned by uid {}, not by corrald's uid {uid}",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(file_err)?;
    }
    Ok(())
}

/// The connection and the typed operations on it. Lives on the store thread.
pub struct Db {
    conn: Connection,
    /// The agent's uid: the owner of rows from before owners were recorded.
    own_uid: u32,
}

impl Db {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Db> {
        let open_err = |source| Error::Open {
            path: path.to_path_buf(),
            source,
        };
        prepare_file(path)?;
        let flags = OpenFlags::default() | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let mut conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
        // WAL lets readers (sqlite3 CLI, tests) look while we write;
        // synchronous=NORMAL keeps every commit across a crash of the
        // agent (only a power loss may drop the last ones).
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        // 512 KiB of page cache instead of SQLite's 2 MB: the agent's reads
        // are few and small, and the history's writes touch a page per
        // process, which the kernel's page cache holds anyway.
        conn.pragma_update(None, "cache_size", -512)
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        let found: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(open_err)?;
        let supported = schema::MIGRATIONS.len() as i64;
        if found > supported {
            return Err(Error::TooNew {
                path: path.to_path_buf(),
                found,
                supported,
            });
        }
        let tx = conn.transaction().map_err(open_err)?;
        for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(found as usize) {
            tx.execute_batch(sql).map_err(open_err)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(open_err)?;
        }
        tx.commit().map_err(open_err)?;
        // SAFETY: geteuid(2) cannot fail and has no preconditions.
        let own_uid = unsafe { libc::geteuid() };
        Ok(Db { conn, own_uid })
    }

    fn event(
        &self,
        at: u64,
        process_id: u64,
        run_id: Option<u64>,
        kind: &str,
        detail: &str,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO events (at, process_id, run_id, kind, detail, owner) VALUES (?1, ?2, ?3, ?4, ?5, (SELECT owner FROM processes WHERE id = ?2))",
            params![
                at as i64,
                process_id as i64,
                run_id.map(|r| r as i64),
                kind,
                clip(detail)
            ],
        )?;
        Ok(())
    }

    /// Records a new process in state `starting` with its first run; the
    /// unit name depends on the id, hence `unit_for`.
    pub fn insert_process(
        &mut self,
        new: &NewProcess<'_>,
        unit_for: impl FnOnce(ProcessId) -> String,
        at: u64,
    ) -> Result<(ProcessId, RunId, String)> {
        let NewProcess {
            owner,
            name,
            workspace,
            session,
            config,
        } = *new;
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO processes (name, workspace, session, state, created_at, config, owner) VALUES (?1, ?2, ?3, 'starting', ?4, ?5, ?6)",
            params![name, workspace, session, at as i64, serde_json::to_string(config)?, owner],
        )?;
        let id = tx.last_insert_rowid() as u64;
        let unit = unit_for(ProcessId(id));
        tx.execute(
            "INSERT INTO runs (process_id, unit, started_at) VALUES (?1, ?2, ?3)",
            params![id as i64, unit, at as i64],
        )?;
        let run = tx.last_insert_rowid() as u64;
        tx.execute(
            "UPDATE processes SET current_run = ?1 WHERE id = ?2",
            params![run as i64, id as i64],
        )?;
        tx.execute(
            "INSERT INTO events (at, process_id, run_id, kind, detail, owner) VALUES (?1, ?2, ?3, 'created', ?4, (SELECT owner FROM processes WHERE id = ?2))",
            params![at as i64, id as i64, run as i64, clip(&format!("{} in workspace {workspace}", config.command.join(" ")))],
        )?;
        tx.commit()?;
        Ok((ProcessId(id), RunId(run), unit))
    }

    /// Writes one state change and its event row; returns the run the
    /// change is recorded against (the new one for `RunChange::New`).
    pub fn change_state(&mut self, c: &Change) -> Result<RunId> {
        let tx = self.conn.transaction()?;
        let (pid, at) = (c.process.0 as i64, c.at as i64);
        let mut run = c.run;
        match &c.run_change {
            RunChange::None => {}
            RunChange::Running {
                main_pid,
                control_group,
            } => {
                tx.execute(
                    "UPDATE runs SET main_pid = ?1, control_group = ?2, started_at = ?3 WHERE id = ?4",
                    params![main_pid, control_group, at, run.0 as i64],
                )?;
            }
            RunChange::Ended {
                exit_code,
                exit_signal,
                reason,
            } => {
                tx.execute(
                    "UPDATE runs SET exited_at = ?1, exit_code = ?2, exit_signal = ?3, reason = ?4 WHERE id = ?5",
                    params![at, exit_code, exit_signal, reason.as_str(), run.0 as i64],
                )?;
            }
            RunChange::Reason(reason) => {
                tx.execute(
                    "UPDATE runs SET reason = ?1 WHERE id = ?2",
                    params![reason.as_str(), run.0 as i64],
                )?;
            }
            RunChange::New {
                unit,
                reset_restarts,
            } => {
                tx.execute(
                    "INSERT INTO runs (process_id, unit, started_at) VALUES (?1, ?2, ?3)",
                    params![pid, unit, at],
                )?;
                run = RunId(tx.last_insert_rowid() as u64);
                let restarts_sql = if *reset_restarts { "0" } else { "restarts + 1" };
                tx.execute(
                    &format!(
                        "UPDATE processes SET current_run = ?1, restarts = {restarts_sql} WHERE id = ?2"
                    ),
                    params![run.0 as i64, pid],
                )?;
            }
        }
        tx.execute(
            "UPDATE processes SET state = ?1 WHERE id = ?2",
            params![c.new.as_str(), pid],
        )?;
        tx.execute(
            "INSERT INTO events (at, process_id, run_id, kind, detail, owner) VALUES (?1, ?2, ?3, 'state', ?4, (SELECT owner FROM processes WHERE id = ?2))",
            params![at, pid, run.0 as i64, clip(&format!("{} -> {} ({})", c.old, c.new, c.why))],
        )?;
        tx.commit()?;
        Ok(run)
    }

    /// Any other event worth keeping (adopted at start-up, restart scheduled…).
    pub fn add_event(
        &mut self,
        process_id: ProcessId,
        run_id: Option<RunId>,
        kind: &str,
        detail: &str,
        at: u64,
    ) -> Result<()> {
        self.event(at, process_id.0, run_id.map(|r| r.0), kind, detail)
    }

    /// Replaces a process's config (its limits changed).
    /// Rewrites a process's config (a tracked process launched by corral
    /// from now on).
    pub fn set_config(&mut self, process_id: ProcessId, config: &ProcessConfig) -> Result<()> {
        self.conn.execute(
            "UPDATE processes SET config = ?1 WHERE id = ?2",
            params![serde_json::to_string(config)?, process_id.0 as i64],
        )?;
        Ok(())
    }

    /// Every workspace's limits, by owner and name.
    pub fn workspace_limits(&self) -> Result<Vec<(u32, String, Limits)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT owner, name, limits FROM workspaces ORDER BY owner, name")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, u32>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (owner, name, limits) = row?;
            out.push((owner, name, serde_json::from_str(&limits)?));
        }
        Ok(out)
    }

    /// Records the limits of the workspace `name` of `owner`.
    pub fn set_workspace_limits(&mut self, owner: u32, name: &str, limits: &Limits) -> Result<()> {
        self.conn.execute(
            "INSERT INTO workspaces (owner, name, limits) VALUES (?1, ?2, ?3)
             ON CONFLICT (owner, name) DO UPDATE SET limits = excluded.limits",
            params![owner, name, serde_json::to_string(limits)?],
        )?;
        Ok(())
    }

    /// Forgets a process and its runs; its events stay until retention.
    pub fn delete_process(&mut self, process_id: ProcessId, why: &str, at: u64) -> Result<()> {
        let process_id = process_id.0;
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO events (at, process_id, kind, detail, owner) VALUES (?1, ?2, 'removed', ?3, (SELECT owner FROM processes WHERE id = ?2))",
            params![at as i64, process_id as i64, clip(why)],
        )?;
        tx.execute(
            "DELETE FROM processes WHERE id = ?1",
            params![process_id as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Every process with its current run, for start-up reconciliation.
    pub fn load_all(&self) -> Result<Vec<(ProcessRecord, Option<RunRecord>)>> {
        let mut stmt = self.conn.prepare(
            "SELECT p.id, p.name, p.workspace, p.session, p.state, p.restarts, p.created_at, p.config, p.owner,
                    r.id, r.unit, r.control_group, r.main_pid, r.started_at, r.exited_at, r.exit_code, r.exit_signal, r.reason,
                    (SELECT count(*) FROM runs o WHERE o.process_id = p.id AND o.reason = 'oom-kill')
             FROM processes p LEFT JOIN runs r ON r.id = p.current_run ORDER BY p.id",
        )?;
        let own_uid = self.own_uid;
        let rows = stmt.query_map([], |r| {
            let id = ProcessId(r.get::<_, i64>(0)? as u64);
            let run = match r.get::<_, Option<i64>>(9)? {
                Some(run_id) => Some(RunRecord {
                    id: RunId(run_id as u64),
                    process_id: id,
                    unit: r.get(10)?,
                    control_group: r.get(11)?,
                    main_pid: r.get(12)?,
                    started_at: r.get::<_, i64>(13)? as u64,
                    exited_at: r.get::<_, Option<i64>>(14)?.map(|v| v as u64),
                    exit_code: r.get(15)?,
                    exit_signal: r.get(16)?,
                    reason: r
                        .get::<_, Option<String>>(17)?
                        .as_deref()
                        .and_then(ExitReason::parse),
                }),
                None => None,
            };
            // Only this program writes the column; an unknown word means a
            // damaged row, and a process that cannot be trusted to run.
            let state = State::parse(&r.get::<_, String>(4)?).unwrap_or(State::Failed);
            let owner = r.get::<_, Option<u32>>(8)?.unwrap_or(own_uid);
            let names: (String, String, String) = (r.get(1)?, r.get(2)?, r.get(3)?);
            let counts = (
                r.get::<_, u32>(5)?,
                r.get::<_, i64>(6)? as u64,
                r.get::<_, u32>(18)?,
            );
            Ok((id, owner, names, state, counts, r.get::<_, String>(7)?, run))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (
                id,
                owner,
                (name, workspace, session),
                state,
                (restarts, created_at, oom_kills),
                config,
                run,
            ) = row?;
            let record = ProcessRecord {
                id,
                owner,
                name,
                workspace,
                session,
                state,
                restarts,
                created_at,
                config: serde_json::from_str(&config)?,
                oom_kills,
            };
            out.push((record, run));
        }
        Ok(out)
    }

    /// The newest `limit` events (of one process, or all), oldest first.
    /// `owner`: only the events of that uid's processes (None: all).
    pub fn events(
        &self,
        process_id: Option<ProcessId>,
        owner: Option<u32>,
        limit: u32,
    ) -> Result<Vec<EventRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT at, process_id, kind, detail FROM events
             WHERE (?1 IS NULL OR process_id = ?1) AND (?3 IS NULL OR COALESCE(owner, ?4) = ?3)
             ORDER BY id DESC LIMIT ?2",
        )?;
        let args = params![process_id.map(|p| p.0 as i64), limit, owner, self.own_uid];
        let rows = stmt.query_map(args, |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, Option<i64>>(1)?.unwrap_or(0) as u64,
                r.get::<_, String>(2)?,
                // Rows written before details were clipped.
                clip(&r.get::<_, String>(3)?).into_owned(),
            ))
        })?;
        let mut v = rows.collect::<std::result::Result<Vec<_>, _>>()?;
        v.reverse();
        Ok(v)
    }

    /// Keeps at most `max` events from now on: every insert (whichever
    /// statement makes it) deletes the rows `max` or more behind it, so a
    /// flood of events cannot grow the table until the next retention
    /// pass. A TEMP trigger lives with this connection only, so the
    /// configured bound is never written into the database's schema.
    pub fn cap_events(&mut self, max: u64) -> Result<()> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        self.conn.execute_batch(&format!(
            "DROP TRIGGER IF EXISTS temp.events_cap;
             CREATE TEMP TRIGGER events_cap AFTER INSERT ON main.events BEGIN
                 DELETE FROM events WHERE id <= NEW.id - {max};
             END;"
        ))?;
        Ok(())
    }

    /// Retention: ended processes older than `cutoff` (µs) and events beyond
    /// `max_events` or older than `cutoff` go. Returns the removed process ids.
    pub fn prune(&mut self, cutoff: u64, max_events: u64, at: u64) -> Result<Vec<ProcessId>> {
        let tx = self.conn.transaction()?;
        let ids: Vec<u64> = {
            let mut stmt = tx.prepare(
                "SELECT p.id FROM processes p JOIN runs r ON r.id = p.current_run
                 WHERE p.state IN ('stopped', 'exited', 'failed') AND r.exited_at IS NOT NULL AND r.exited_at < ?1",
            )?;
            let rows = stmt.query_map(params![cutoff as i64], |r| r.get::<_, i64>(0))?;
            rows.map(|r| r.map(|v| v as u64))
                .collect::<std::result::Result<_, _>>()?
        };
        for id in &ids {
            tx.execute(
                "INSERT INTO events (at, process_id, kind, detail, owner) VALUES (?1, ?2, 'removed', 'retention', (SELECT owner FROM processes WHERE id = ?2))",
                params![at as i64, *id as i64],
            )?;
            tx.execute("DELETE FROM processes WHERE id = ?1", params![*id as i64])?;
        }
        tx.execute("DELETE FROM events WHERE at < ?1", params![cutoff as i64])?;
        tx.execute(
            "DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?1",
            params![max_events as i64],
        )?;
        tx.commit()?;
        Ok(ids.into_iter().map(ProcessId).collect())
    }

    /// After a storage failure: rewrites every process's state and current
    /// run from the supervisor's memory (the truth while writes failed).
    pub fn resync(&mut self, procs: &[(State, u32, RunRecord)], at: u64) -> Result<()> {
        let tx = self.conn.transaction()?;
        for (state, restarts, run) in procs {
            tx.execute(
                "UPDATE processes SET state = ?1, restarts = ?2, current_run = ?3 WHERE id = ?4",
                params![
                    state.as_str(),
                    restarts,
                    run.id.0 as i64,
                    run.process_id.0 as i64
                ],
            )?;
            tx.execute(
                "UPDATE runs SET main_pid = ?1, control_group = ?2, exited_at = ?3, exit_code = ?4, exit_signal = ?5, reason = ?6 WHERE id = ?7",
                params![
                    run.main_pid,
                    run.control_group,
                    run.exited_at.map(|v| v as i64),
                    run.exit_code,
                    run.exit_signal,
                    run.reason.map(|r| r.as_str()),
                    run.id.0 as i64
                ],
            )?;
        }
        tx.execute(
            "INSERT INTO events (at, kind, detail) VALUES (?1, 'storage', 'writes resumed; state rewritten from memory')",
            params![at as i64],
        )?;
        tx.commit()?;
        Ok(())
    }
}

type Job = Box<dyn FnOnce(&mut Db) + Send>;

#[derive(Clone)]
enum Backend {
    /// The store thread, fed in send order.
    Thread(std::sync::mpsc::Sender<Job>),
    #[cfg(test)]
    Inline(std::sync::Arc<std::sync::Mutex<Db>>),
}

/// Handle on the store thread. Cheap to clone; jobs run in send order.
/// It also carries the store's health: the last write error, cleared only
/// by [`Store::mark_healthy`] once the supervisor has rewritten its state.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    health: std::sync::Arc<tokio::sync::watch::Sender<Option<String>>>,
}

impl Store {
    /// Opens the database (migrating it) and starts its thread.
    pub fn open(path: &Path) -> Result<Store> {
        let mut db = Db::open(path)?;
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("corral-store".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job(&mut db);
                }
            })
            .map_err(|e| Error::Open {
                path: path.to_path_buf(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        Ok(Store::with(Backend::Thread(tx)))
    }

    /// The same database, with every call run at once on the caller's
    /// thread: for the actor's unit tests under paused time, where a call
    /// answered by another thread would let the clock jump ahead.
    #[cfg(test)]
    pub fn open_inline(path: &Path) -> Result<Store> {
        let db = Db::open(path)?;
        Ok(Store::with(Backend::Inline(std::sync::Arc::new(
            std::sync::Mutex::new(db),
        ))))
    }

    fn with(backend: Backend) -> Store {
        let (health, _) = tokio::sync::watch::channel(None);
        Store {
            backend,
            health: std::sync::Arc::new(health),
        }
    }

    /// The current storage error (None when healthy), to watch.
    pub fn health(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.health.subscribe()
    }

    /// Whether the last write failed and nothing has been rewritten since.
    pub fn failing(&self) -> bool {
        self.health.borrow().is_some()
    }

    pub fn mark_healthy(&self) {
        self.health.send_if_modified(|h| h.take().is_some());
    }

    /// Runs `f` on the store thread and waits for its result.
    pub async fn call<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Db) -> Result<R> + Send + 'static,
    {
        let r = match &self.backend {
            Backend::Thread(jobs) => {
                let (tx, rx) = oneshot::channel();
                jobs.send(Box::new(move |db| {
                    let _ = tx.send(f(db));
                }))
                .map_err(|_| Error::Gone)?;
                rx.await.map_err(|_| Error::Gone)?
            }
            #[cfg(test)]
            Backend::Inline(db) => {
                let mut db = db.lock().map_err(|_| Error::Gone)?;
                f(&mut db)
            }
        };
        if let Err(e) = &r {
            let msg = e.to_string();
            tracing::error!("{msg}");
            self.health.send_if_modified(|h| {
                let changed = h.as_deref() != Some(msg.as_str());
                *h = Some(msg);
                changed
            });
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ProcessConfig {
        ProcessConfig {
            command: vec!["sleep".into(), "1".into()],
            cwd: "/".into(),
            env: vec![],
            clean_env: false,
            labels: BTreeMap::new(),
            memory_max: None,
            cpu_quota: None,
            tasks_max: None,
            memory_high: None,
            cpu_weight: None,
            io_weight: None,
            restart: RestartPolicy {
                policy: RestartMode::No,
                delay_ms: 100,
                delay_max_ms: 1000,
                reset_sec: 60,
                limit: 5,
                limit_interval_sec: 60,
            },
            persistent: false,
            credentials: None,
            login_env: None,
            tty: false,
            notify: false,
            tracked: false,
            health: None,
        }
    }

    fn new(owner: u32, name: &'static str, workspace: &'static str) -> NewProcess<'static> {
        static CONFIG: std::sync::OnceLock<ProcessConfig> = std::sync::OnceLock::new();
        NewProcess {
            owner,
            name,
            workspace,
            session: "",
            config: CONFIG.get_or_init(config),
        }
    }

    fn change(
        process: ProcessId,
        run: RunId,
        old: State,
        new: State,
        run_change: RunChange,
        at: u64,
    ) -> Change {
        Change {
            process,
            run,
            old,
            new,
            why: "why".into(),
            at,
            run_change,
        }
    }

    #[test]
    fn lifecycle_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(&dir.path().join("c.db")).unwrap();
        let (id, run, unit) = db
            .insert_process(&new(1000, "web", "ws"), |id| format!("u-{id}.scope"), 1)
            .unwrap();
        assert_eq!(unit, format!("u-{id}.scope"));
        let running = RunChange::Running {
            main_pid: 42,
            control_group: "/cg".into(),
        };
        db.change_state(&change(
            id,
            run,
            State::Starting,
            State::Running,
            running,
            2,
        ))
        .unwrap();
        let ended = RunChange::Ended {
            exit_code: 3,
            exit_signal: 0,
            reason: ExitReason::Exit,
        };
        db.change_state(&change(id, run, State::Running, State::Failed, ended, 3))
            .unwrap();
        let all = db.load_all().unwrap();
        assert_eq!(all.len(), 1);
        let (p, r) = &all[0];
        assert_eq!(p.state, State::Failed);
        assert_eq!(p.config, config());
        let r = r.as_ref().unwrap();
        assert_eq!(
            (r.main_pid, r.exit_code, r.exited_at, r.reason),
            (42, Some(3), Some(3), Some(ExitReason::Exit))
        );
        let new = RunChange::New {
            unit: "u2".into(),
            reset_restarts: false,
        };
        let run2 = db
            .change_state(&change(id, run, State::Failed, State::Starting, new, 4))
            .unwrap();
        assert_ne!(run2, run);
        let (p, r) = &db.load_all().unwrap()[0];
        assert_eq!((p.state, p.restarts), (State::Starting, 1));
        assert_eq!(
            r.as_ref().map(|r| (r.id, r.unit.as_str())),
            Some((run2, "u2"))
        );
        db.change_state(&change(
            id,
            run2,
            State::Starting,
            State::Failed,
            RunChange::None,
            5,
        ))
        .unwrap();
        let ev = db.events(Some(id), None, 10).unwrap();
        assert_eq!(ev.len(), 5);
        assert_eq!(ev[0].2, "created");
        assert_eq!(ev[2].3, "running -> failed (why)", "{:?}", ev[2]);
        db.delete_process(id, "rm", 4).unwrap();
        assert!(db.load_all().unwrap().is_empty());
        assert_eq!(
            db.events(Some(id), None, 10).unwrap().len(),
            6,
            "history outlives the process"
        );
    }

    /// The database holds callers' environments: it and its WAL files are
    /// 0600 whatever the umask, and a looser file found is tightened.
    #[test]
    fn database_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let db = Db::open(&path).unwrap();
        for f in ["c.db", "c.db-wal", "c.db-shm"] {
            assert_eq!(mode(&dir.path().join(f)), 0o600, "{f}");
        }
        drop(db);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        Db::open(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
    }

    /// A symlink in place of the database is refused, and its target is
    /// left alone.
    #[test]
    fn a_symlinked_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"not yours").unwrap();
        let path = dir.path().join("c.db");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let err = Db::open(&path).err().unwrap().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"not yours");
        // A dangling one would have been created through.
        std::fs::remove_file(&target).unwrap();
        assert!(Db::open(&path).is_err());
        assert!(!target.exists());
    }

    #[test]
    fn a_version_1_database_upgrades_and_its_rows_belong_to_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        {
            // The schema as released before owners existed.
            let c = Connection::open(&path).unwrap();
            c.execute_batch(schema::MIGRATIONS[0]).unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
            c.execute(
                "INSERT INTO processes (name, workspace, session, state, created_at, config) VALUES ('old', 'w', '', 'exited', 1, ?1)",
                params![serde_json::to_string(&config()).unwrap()],
            )
            .unwrap();
            c.execute(
                "INSERT INTO events (at, process_id, kind, detail) VALUES (1, 1, 'created', 'x')",
                [],
            )
            .unwrap();
        }
        let mut db = Db::open(&path).unwrap();
        let me = unsafe { libc::geteuid() };
        assert_eq!(db.load_all().unwrap()[0].0.owner, me);
        assert_eq!(db.events(None, Some(me), 10).unwrap().len(), 1);
        // New rows carry their owner; each owner sees only its own events.
        let (other, _, _) = db
            .insert_process(&new(me + 1, "new", "w"), |i| i.to_string(), 2)
            .unwrap();
        let theirs = db.events(None, Some(me + 1), 10).unwrap();
        assert_eq!(theirs.len(), 1);
        assert_eq!(theirs[0].1, other.0);
        assert_eq!(db.events(None, Some(me), 10).unwrap().len(), 1);
        assert_eq!(db.events(None, None, 10).unwrap().len(), 2);
    }

    #[test]
    fn reopen_keeps_data_and_refuses_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        {
            let mut db = Db::open(&path).unwrap();
            db.insert_process(&new(1000, "a", "w"), |i| i.to_string(), 1)
                .unwrap();
        }
        assert_eq!(Db::open(&path).unwrap().load_all().unwrap().len(), 1);
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = Db::open(&path).err().unwrap().to_string();
        assert!(err.contains("schema version 99"), "{err}");
    }

    #[test]
    fn corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
        let err = Db::open(&path).err().unwrap().to_string();
        assert!(
            err.contains("c.db") && err.contains("not a database"),
            "{err}"
        );
    }

    #[test]
    fn prune_removes_old_ended_processes_and_caps_events() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(&dir.path().join("c.db")).unwrap();
        let (old, run, _) = db
            .insert_process(&new(1000, "old", "w"), |i| i.to_string(), 1)
            .unwrap();
        let ended = RunChange::Ended {
            exit_code: 0,
            exit_signal: 0,
            reason: ExitReason::Exit,
        };
        db.change_state(&change(old, run, State::Running, State::Exited, ended, 10))
            .unwrap();
        let (live, _, _) = db
            .insert_process(&new(1001, "live", "w"), |i| i.to_string(), 1)
            .unwrap();
        for i in 0..300 {
            db.add_event(live, None, "note", "x", 1000 + i).unwrap();
        }
        assert_eq!(db.prune(100, 100, 2000).unwrap(), vec![old]);
        let left: Vec<ProcessId> = db.load_all().unwrap().iter().map(|(p, _)| p.id).collect();
        assert_eq!(left, vec![live]);
        assert!(db.events(None, None, 1000).unwrap().len() <= 100);
    }

    /// Hardening: `max_events` holds at every insert, not only after the
    /// periodic retention pass, and a long detail is clipped at a character
    /// boundary on the way in.
    #[test]
    fn events_are_capped_on_insert_and_details_clipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(&dir.path().join("c.db")).unwrap();
        db.cap_events(100).unwrap();
        // Again, as a restarted agent with another config would.
        db.cap_events(50).unwrap();
        let (id, run, _) = db
            .insert_process(&new(1000, "p", "w"), |i| i.to_string(), 1)
            .unwrap();
        for i in 0..300 {
            db.add_event(id, Some(run), "note", &i.to_string(), 10 + i)
                .unwrap();
        }
        let rows = db.events(None, None, 1000).unwrap();
        assert_eq!(rows.len(), 50);
        assert_eq!(rows.last().unwrap().3, "299");
        let count: i64 = db
            .conn
            .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 50);
        let long = "é".repeat(MAX_EVENT_DETAIL);
        db.add_event(id, None, "note", &long, 400).unwrap();
        let detail = db.events(Some(id), None, 1).unwrap().remove(0).3;
        assert!(detail.len() <= MAX_EVENT_DETAIL && detail.ends_with('…'));
        assert!(long.starts_with(detail.trim_end_matches('…')));
    }
}
