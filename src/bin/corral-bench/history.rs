//! The size of the usage history: the bytes one row of `samples` takes
//! (table and index), measured on a copy of the agent's real table after
//! the footprint window's ticks, and what 1,000 processes take over the
//! default retention (README "History, top and metrics").

use std::path::Path;

use anyhow::{Context, Result};
use rusqlite::{Connection, OpenFlags};

use corral::config::{Config, Mode};

pub struct HistorySize {
    /// Rows of the agent's table that were measured.
    pub rows: u64,
    pub bytes_per_row: f64,
    /// Rows one running process keeps with the default settings.
    pub rows_per_process: u64,
}

fn pages(c: &Connection) -> Result<u64> {
    let count: u64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let size: u64 = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    Ok(count * size)
}

/// Copies `samples` from the database at `db` (read-only) into a fresh
/// in-memory database of the same schema and measures its pages.
pub fn measure(db: &Path) -> Result<HistorySize> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_URI;
    let c = Connection::open_with_flags(":memory:", flags)?;
    c.execute(
        "ATTACH DATABASE ?1 AS live",
        [format!("file:{}?mode=ro", db.display())],
    )
    .with_context(|| format!("opening {}", db.display()))?;
    let schema: Vec<String> = c
        .prepare("SELECT sql FROM live.sqlite_master WHERE tbl_name = 'samples' AND sql IS NOT NULL ORDER BY type DESC")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for sql in &schema {
        c.execute_batch(sql)?;
    }
    let empty = pages(&c)?;
    c.execute_batch(
        "INSERT INTO main.samples SELECT * FROM live.samples; DETACH DATABASE live; VACUUM;",
    )?;
    let rows: u64 = c.query_row("SELECT count(*) FROM samples", [], |r| r.get(0))?;
    let bytes = pages(&c)?.saturating_sub(empty);
    let d = Config::parse(Mode::User, "").map_err(anyhow::Error::msg)?;
    let per = |keep: std::time::Duration, every: std::time::Duration| {
        (keep.as_secs_f64() / every.as_secs_f64()).ceil() as u64
    };
    Ok(HistorySize {
        rows,
        bytes_per_row: bytes as f64 / rows.max(1) as f64,
        rows_per_process: per(d.history_raw_retention, d.sample_interval)
            + per(d.history_retention, d.history_resolution),
    })
}

/// Events the store at `db` holds (read-only; the `Events` method answers
/// at most 10,000 rows, fewer than a workload of thousands of processes).
pub fn events(db: &Path) -> Result<u64> {
    let c = Connection::open_with_flags(
        format!("file:{}?mode=ro", db.display()),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
    )
    .with_context(|| format!("opening {}", db.display()))?;
    Ok(c.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?)
}
