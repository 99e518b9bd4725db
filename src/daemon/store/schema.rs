//! The database schema as an append-only list of migrations, applied under
//! `PRAGMA user_version` in one transaction. Never edit an applied entry:
//! add a new one (fixture databases of each released version are upgraded
//! in the tests).

pub const MIGRATIONS: &[&str] = &[
    // 1: processes, their runs (one per launch) and the event history.
    r#"
    CREATE TABLE processes (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        name        TEXT NOT NULL,
        workspace   TEXT NOT NULL,
        session     TEXT NOT NULL,
        state       TEXT NOT NULL,
        restarts    INTEGER NOT NULL DEFAULT 0,
        created_at  INTEGER NOT NULL,
        -- JSON of store::ProcessConfig: command, cwd, env, labels, limits, policy
        config      TEXT NOT NULL,
        current_run INTEGER
    );
    CREATE INDEX processes_workspace ON processes(workspace);
    CREATE TABLE runs (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        process_id    INTEGER NOT NULL REFERENCES processes(id) ON DELETE CASCADE,
        unit          TEXT NOT NULL,
        control_group TEXT NOT NULL DEFAULT '',
        main_pid      INTEGER NOT NULL DEFAULT 0,
        started_at    INTEGER NOT NULL,
        exited_at     INTEGER,
        exit_code     INTEGER,
        exit_signal   INTEGER,
        reason        TEXT
    );
    CREATE INDEX runs_process ON runs(process_id);
    -- No foreign key: a process's history outlives its removal until
    -- retention deletes it.
    CREATE TABLE events (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        at         INTEGER NOT NULL,
        process_id INTEGER,
        run_id     INTEGER,
        kind       TEXT NOT NULL,
        detail     TEXT NOT NULL
    );
    CREATE INDEX events_process ON events(process_id, id);
    "#,
    // 2: every process and event has an owner uid (system mode: who may
    // see and manage it). Rows from before are the agent's own: NULL is
    // read as the agent's uid.
    r#"
    ALTER TABLE processes ADD COLUMN owner INTEGER;
    ALTER TABLE events ADD COLUMN owner INTEGER;
    CREATE INDEX processes_owner ON processes(owner);
    "#,
    // 3: limits set on a workspace (its slice) with SetLimits, as JSON
    // (api::Limits), reapplied at agent start.
    r#"
    CREATE TABLE workspaces (
        owner  INTEGER NOT NULL,
        name   TEXT NOT NULL,
        limits TEXT NOT NULL,
        PRIMARY KEY (owner, name)
    );
    "#,
    // 4: usage history (store/history.rs). Tier 0 holds a row per
    // process per sample tick, tier 1 averages over `history_resolution`.
    // Keyed by process so one process's range is one index walk; the
    // (tier, at) index serves retention. No foreign key: like events, the
    // history of a removed process goes with retention.
    r#"
    CREATE TABLE samples (
        process_id INTEGER NOT NULL,
        tier       INTEGER NOT NULL,
        at         INTEGER NOT NULL,
        cpu        REAL,
        memory     INTEGER,
        tasks      INTEGER,
        io_read    INTEGER,
        io_write   INTEGER,
        PRIMARY KEY (process_id, tier, at)
    ) WITHOUT ROWID;
    CREATE INDEX samples_age ON samples(tier, at);
    "#,
    // 5: project operations (`Up`/`Down`, daemon/projects.rs) still
    // running, as JSON, so an agent restarted midway resumes them.
    r#"
    CREATE TABLE project_ops (
        owner     INTEGER NOT NULL,
        workspace TEXT NOT NULL,
        op        TEXT NOT NULL,
        PRIMARY KEY (owner, workspace)
    );
    "#,
];
