//! SQLite persistence: the record of every process, run and event. One
//! connection owned by one thread (WAL, foreign keys on); callers send it
//! closures over typed methods and never see SQL. Writes are committed
//! before the call that caused them is answered, so an accepted request
//! survives a crash of the agent right after its reply.

mod schema;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

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
    #[error("database thread has stopped")]
    Gone,
}

pub type Result<T> = std::result::Result<T, Error>;

/// Restart policy of one process, with defaults filled in from the config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub policy: String,
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
    pub restart: RestartPolicy,
    #[serde(default)]
    pub persistent: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProcessRecord {
    pub id: u64,
    pub name: String,
    pub workspace: String,
    pub session: String,
    pub state: String,
    pub restarts: u32,
    pub created_at: u64,
    pub config: ProcessConfig,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunRecord {
    pub id: u64,
    pub process_id: u64,
    pub unit: String,
    pub control_group: String,
    pub main_pid: u32,
    pub started_at: u64,
    pub exited_at: Option<u64>,
    pub exit_code: Option<i32>,
    pub exit_signal: Option<i32>,
    pub reason: Option<String>,
}

/// How a run ended, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Ending {
    pub state: String,
    pub exit_code: i32,
    pub exit_signal: i32,
    pub reason: String,
    pub at: u64,
}

/// One event row: (time µs, process id, kind, detail).
pub type EventRow = (u64, u64, String, String);

/// Callers stamp rows with this clock.
pub use crate::clock::now_us;

/// The connection and the typed operations on it. Lives on the store thread.
pub struct Db {
    conn: Connection,
}

impl Db {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Db> {
        let open_err = |source| Error::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        // WAL lets readers (sqlite3 CLI, tests) look while we write;
        // synchronous=NORMAL keeps every commit across a crash of the
        // agent (only a power loss may drop the last ones).
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
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
        Ok(Db { conn })
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
            "INSERT INTO events (at, process_id, run_id, kind, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                at as i64,
                process_id as i64,
                run_id.map(|r| r as i64),
                kind,
                detail
            ],
        )?;
        Ok(())
    }

    /// Records a new process in state `starting` with its first run; the
    /// unit name depends on the id, hence `unit_for`.
    pub fn insert_process(
        &mut self,
        name: &str,
        workspace: &str,
        session: &str,
        config: &ProcessConfig,
        unit_for: impl FnOnce(u64) -> String,
        at: u64,
    ) -> Result<(u64, u64, String)> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO processes (name, workspace, session, state, created_at, config) VALUES (?1, ?2, ?3, 'starting', ?4, ?5)",
            params![name, workspace, session, at as i64, serde_json::to_string(config)?],
        )?;
        let id = tx.last_insert_rowid() as u64;
        let unit = unit_for(id);
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
            "INSERT INTO events (at, process_id, run_id, kind, detail) VALUES (?1, ?2, ?3, 'created', ?4)",
            params![at as i64, id as i64, run as i64, format!("{} in workspace {workspace}", config.command.join(" "))],
        )?;
        tx.commit()?;
        Ok((id, run, unit))
    }

    /// A new run of an existing process (restart): state `starting`.
    pub fn insert_run(
        &mut self,
        process_id: u64,
        old: &str,
        unit: &str,
        reason: &str,
        reset_restarts: bool,
        at: u64,
    ) -> Result<u64> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO runs (process_id, unit, started_at) VALUES (?1, ?2, ?3)",
            params![process_id as i64, unit, at as i64],
        )?;
        let run = tx.last_insert_rowid() as u64;
        let restarts_sql = if reset_restarts { "0" } else { "restarts + 1" };
        tx.execute(
            &format!("UPDATE processes SET current_run = ?1, state = 'starting', restarts = {restarts_sql} WHERE id = ?2"),
            params![run as i64, process_id as i64],
        )?;
        tx.execute(
            "INSERT INTO events (at, process_id, run_id, kind, detail) VALUES (?1, ?2, ?3, 'state', ?4)",
            params![at as i64, process_id as i64, run as i64, format!("{old} -> starting ({reason})")],
        )?;
        tx.commit()?;
        Ok(run)
    }

    /// The run is inside its scope and the command is executing.
    pub fn mark_running(
        &mut self,
        process_id: u64,
        run_id: u64,
        main_pid: u32,
        control_group: &str,
        at: u64,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE runs SET main_pid = ?1, control_group = ?2, started_at = ?3 WHERE id = ?4",
            params![main_pid, control_group, at as i64, run_id as i64],
        )?;
        tx.execute(
            "UPDATE processes SET state = 'running' WHERE id = ?1",
            params![process_id as i64],
        )?;
        tx.execute(
            "INSERT INTO events (at, process_id, run_id, kind, detail) VALUES (?1, ?2, ?3, 'state', ?4)",
            params![at as i64, process_id as i64, run_id as i64, format!("starting -> running (pid {main_pid})")],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records how a run ended and the process's new state.
    pub fn record_exit(
        &mut self,
        process_id: u64,
        run_id: u64,
        old_state: &str,
        end: &Ending,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE runs SET exited_at = ?1, exit_code = ?2, exit_signal = ?3, reason = ?4 WHERE id = ?5",
            params![end.at as i64, end.exit_code, end.exit_signal, end.reason, run_id as i64],
        )?;
        tx.execute(
            "UPDATE processes SET state = ?1 WHERE id = ?2",
            params![end.state, process_id as i64],
        )?;
        let detail = format!(
            "{old_state} -> {} ({}, code {}, signal {})",
            end.state, end.reason, end.exit_code, end.exit_signal
        );
        tx.execute(
            "INSERT INTO events (at, process_id, run_id, kind, detail) VALUES (?1, ?2, ?3, 'state', ?4)",
            params![end.at as i64, process_id as i64, run_id as i64, detail],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// A state change with no exit (stopping, or a crash-loop verdict).
    pub fn set_state(
        &mut self,
        process_id: u64,
        run_id: Option<u64>,
        old: &str,
        new: &str,
        why: &str,
        at: u64,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE processes SET state = ?1 WHERE id = ?2",
            params![new, process_id as i64],
        )?;
        self.event(
            at,
            process_id,
            run_id,
            "state",
            &format!("{old} -> {new} ({why})"),
        )
    }

    /// Overrides the recorded reason of a run's end (crash-loop verdict).
    pub fn set_reason(&mut self, run_id: u64, reason: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE runs SET reason = ?1 WHERE id = ?2",
            params![reason, run_id as i64],
        )?;
        Ok(())
    }

    /// Any other event worth keeping (adopted at start-up, restart scheduled…).
    pub fn add_event(
        &mut self,
        process_id: u64,
        run_id: Option<u64>,
        kind: &str,
        detail: &str,
        at: u64,
    ) -> Result<()> {
        self.event(at, process_id, run_id, kind, detail)
    }

    /// Forgets a process and its runs; its events stay until retention.
    pub fn delete_process(&mut self, process_id: u64, why: &str, at: u64) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "DELETE FROM processes WHERE id = ?1",
            params![process_id as i64],
        )?;
        tx.execute(
            "INSERT INTO events (at, process_id, kind, detail) VALUES (?1, ?2, 'removed', ?3)",
            params![at as i64, process_id as i64, why],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Every process with its current run, for start-up reconciliation.
    pub fn load_all(&self) -> Result<Vec<(ProcessRecord, Option<RunRecord>)>> {
        let mut stmt = self.conn.prepare(
            "SELECT p.id, p.name, p.workspace, p.session, p.state, p.restarts, p.created_at, p.config,
                    r.id, r.unit, r.control_group, r.main_pid, r.started_at, r.exited_at, r.exit_code, r.exit_signal, r.reason
             FROM processes p LEFT JOIN runs r ON r.id = p.current_run ORDER BY p.id",
        )?;
        let rows = stmt.query_map([], |r| {
            let config: String = r.get(7)?;
            let run_id: Option<i64> = r.get(8)?;
            let proc_id: i64 = r.get(0)?;
            let run = match run_id {
                Some(run_id) => Some(RunRecord {
                    id: run_id as u64,
                    process_id: proc_id as u64,
                    unit: r.get(9)?,
                    control_group: r.get(10)?,
                    main_pid: r.get(11)?,
                    started_at: r.get::<_, i64>(12)? as u64,
                    exited_at: r.get::<_, Option<i64>>(13)?.map(|v| v as u64),
                    exit_code: r.get(14)?,
                    exit_signal: r.get(15)?,
                    reason: r.get(16)?,
                }),
                None => None,
            };
            Ok((
                proc_id as u64,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, u32>(5)?,
                r.get::<_, i64>(6)? as u64,
                config,
                run,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, name, workspace, session, state, restarts, created_at, config, run) = row?;
            let config: ProcessConfig = serde_json::from_str(&config)?;
            out.push((
                ProcessRecord {
                    id,
                    name,
                    workspace,
                    session,
                    state,
                    restarts,
                    created_at,
                    config,
                },
                run,
            ));
        }
        Ok(out)
    }

    /// The newest `limit` events (of one process, or all), oldest first.
    pub fn events(&self, process_id: Option<u64>, limit: u32) -> Result<Vec<EventRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT at, process_id, kind, detail FROM events
             WHERE (?1 IS NULL OR process_id = ?1) ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![process_id.map(|p| p as i64), limit], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, Option<i64>>(1)?.unwrap_or(0) as u64,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut v = rows.collect::<std::result::Result<Vec<_>, _>>()?;
        v.reverse();
        Ok(v)
    }

    /// Retention: ended processes older than `cutoff` (µs) and events beyond
    /// `max_events` or older than `cutoff` go. Returns the removed process ids.
    pub fn prune(&mut self, cutoff: u64, max_events: u64, at: u64) -> Result<Vec<u64>> {
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
            tx.execute("DELETE FROM processes WHERE id = ?1", params![*id as i64])?;
            tx.execute(
                "INSERT INTO events (at, process_id, kind, detail) VALUES (?1, ?2, 'removed', 'retention')",
                params![at as i64, *id as i64],
            )?;
        }
        tx.execute("DELETE FROM events WHERE at < ?1", params![cutoff as i64])?;
        tx.execute(
            "DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?1",
            params![max_events as i64],
        )?;
        tx.commit()?;
        Ok(ids)
    }

    /// After a storage failure: rewrites every process's state and current
    /// run from the supervisor's memory (the truth while writes failed).
    pub fn resync(&mut self, procs: &[(u64, String, u32, RunRecord)], at: u64) -> Result<()> {
        let tx = self.conn.transaction()?;
        for (id, state, restarts, run) in procs {
            tx.execute(
                "UPDATE processes SET state = ?1, restarts = ?2, current_run = ?3 WHERE id = ?4",
                params![state, restarts, run.id as i64, *id as i64],
            )?;
            tx.execute(
                "UPDATE runs SET main_pid = ?1, control_group = ?2, exited_at = ?3, exit_code = ?4, exit_signal = ?5, reason = ?6 WHERE id = ?7",
                params![
                    run.main_pid,
                    run.control_group,
                    run.exited_at.map(|v| v as i64),
                    run.exit_code,
                    run.exit_signal,
                    run.reason,
                    run.id as i64
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

/// Handle on the store thread. Cheap to clone; jobs run in send order.
/// It also carries the store's health: the last write error, cleared only
/// by [`Store::mark_healthy`] once the supervisor has rewritten its state.
#[derive(Clone)]
pub struct Store {
    tx: std::sync::mpsc::Sender<Job>,
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
        let (health, _) = tokio::sync::watch::channel(None);
        Ok(Store {
            tx,
            health: std::sync::Arc::new(health),
        })
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
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Box::new(move |db| {
                let _ = tx.send(f(db));
            }))
            .map_err(|_| Error::Gone)?;
        let r = rx.await.map_err(|_| Error::Gone)?;
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
            restart: RestartPolicy {
                policy: "no".into(),
                delay_ms: 100,
                delay_max_ms: 1000,
                reset_sec: 60,
                limit: 5,
                limit_interval_sec: 60,
            },
            persistent: false,
        }
    }

    #[test]
    fn lifecycle_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(&dir.path().join("c.db")).unwrap();
        let (id, run, unit) = db
            .insert_process("web", "ws", "", &config(), |id| format!("u-{id}.scope"), 1)
            .unwrap();
        assert_eq!(unit, format!("u-{id}.scope"));
        db.mark_running(id, run, 42, "/cg", 2).unwrap();
        let end = Ending {
            state: "failed".into(),
            exit_code: 3,
            exit_signal: 0,
            reason: "exit".into(),
            at: 3,
        };
        db.record_exit(id, run, "running", &end).unwrap();
        let all = db.load_all().unwrap();
        assert_eq!(all.len(), 1);
        let (p, r) = &all[0];
        assert_eq!(p.state, "failed");
        assert_eq!(p.config, config());
        let r = r.as_ref().unwrap();
        assert_eq!(
            (r.main_pid, r.exit_code, r.exited_at),
            (42, Some(3), Some(3))
        );
        let ev = db.events(Some(id), 10).unwrap();
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[0].2, "created");
        assert!(ev[2].3.contains("running -> failed"), "{:?}", ev[2]);
        db.delete_process(id, "rm", 4).unwrap();
        assert!(db.load_all().unwrap().is_empty());
        assert_eq!(
            db.events(Some(id), 10).unwrap().len(),
            4,
            "history outlives the process"
        );
    }

    #[test]
    fn reopen_keeps_data_and_refuses_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        {
            let mut db = Db::open(&path).unwrap();
            db.insert_process("a", "w", "", &config(), |i| i.to_string(), 1)
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
            .insert_process("old", "w", "", &config(), |i| i.to_string(), 1)
            .unwrap();
        let end = Ending {
            state: "exited".into(),
            exit_code: 0,
            exit_signal: 0,
            reason: "exit".into(),
            at: 10,
        };
        db.record_exit(old, run, "running", &end).unwrap();
        let (live, _, _) = db
            .insert_process("live", "w", "", &config(), |i| i.to_string(), 1)
            .unwrap();
        for i in 0..300 {
            db.add_event(live, None, "note", "x", 1000 + i).unwrap();
        }
        assert_eq!(db.prune(100, 100, 2000).unwrap(), vec![old]);
        let left: Vec<u64> = db.load_all().unwrap().iter().map(|(p, _)| p.id).collect();
        assert_eq!(left, vec![live]);
        assert!(db.events(None, 1000).unwrap().len() <= 100);
    }
}
