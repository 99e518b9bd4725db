//! The usage history in `samples`: writing one tick's samples, rolling the
//! raw tier up into averages, retention, and reading a range back in steps.
//! Tier 0 is one row per process per sample tick; tier 1 one row per
//! process per `history_resolution` bucket.

use rusqlite::params;

use super::{Db, ProcessId, Result};
use crate::api::{HistoryRow, HISTORY_MAX_POINTS, UNSET};

/// One process's usage at one tick; `None` where the cgroup did not say.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sample {
    pub process: ProcessId,
    pub cpu_percent: Option<f64>,
    pub memory: Option<u64>,
    pub tasks: Option<u64>,
    pub io_read: Option<u64>,
    pub io_write: Option<u64>,
}

/// What a tick's write also does once a bucket of the rolled tier is
/// complete: average the raw rows of `[from, to)` into buckets of
/// `bucket_us`, then drop raw rows before `raw_cutoff` and rolled rows
/// before `cutoff` (all µs since the epoch).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rollup {
    pub from: u64,
    pub to: u64,
    pub bucket_us: u64,
    pub raw_cutoff: u64,
    pub cutoff: u64,
}

/// SQLite integers are signed: counters above `i64::MAX` are unknown.
fn int(v: Option<u64>) -> Option<i64> {
    v.and_then(|v| i64::try_from(v).ok())
}

impl Db {
    /// Writes ticks' samples, each tick's time with its rows (and the
    /// rollup and retention a finished bucket calls for), in one
    /// transaction.
    pub fn add_samples(
        &mut self,
        ticks: &[(u64, Vec<Sample>)],
        rollup: Option<Rollup>,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO samples (process_id, tier, at, cpu, memory, tasks, io_read, io_write)
                 VALUES (?1, 0, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            // In key order (process, then time): the rows of one process
            // across the batched ticks land on one leaf page together.
            // In tick order each tick would touch every process's page
            // again, and with more processes than the page cache holds
            // (thousands) every insert read its page back and every page
            // went to the WAL once per tick.
            let mut rows: Vec<(u64, &Sample)> = ticks
                .iter()
                .flat_map(|(at, rows)| rows.iter().map(move |s| (*at, s)))
                .collect();
            rows.sort_unstable_by_key(|(at, s)| (s.process.0, *at));
            for (at, s) in rows {
                insert.execute(params![
                    s.process.0 as i64,
                    at as i64,
                    s.cpu_percent.filter(|c| c.is_finite()),
                    int(s.memory),
                    int(s.tasks),
                    int(s.io_read),
                    int(s.io_write),
                ])?;
            }
        }
        if let Some(r) = rollup {
            let bucket = r.bucket_us.max(1) as i64;
            // INSERT OR REPLACE: a bucket rolled up again (after an agent
            // restart) gets the same average, not a second row.
            tx.execute(
                "INSERT OR REPLACE INTO samples (process_id, tier, at, cpu, memory, tasks, io_read, io_write)
                 SELECT process_id, 1, (at / ?3) * ?3, avg(cpu), CAST(avg(memory) AS INTEGER), max(tasks), max(io_read), max(io_write)
                 FROM samples WHERE tier = 0 AND at >= ?1 AND at < ?2
                 GROUP BY process_id, at / ?3",
                params![r.from as i64, r.to as i64, bucket],
            )?;
            prune(&tx, r.raw_cutoff, r.cutoff)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Retention of the history: raw rows before `raw_cutoff` and rolled
    /// rows before `cutoff` go. Returns how many rows went.
    pub fn prune_samples(&mut self, raw_cutoff: u64, cutoff: u64) -> Result<usize> {
        let tx = self.conn.transaction()?;
        let n = prune(&tx, raw_cutoff, cutoff)?;
        tx.commit()?;
        Ok(n)
    }

    /// `process`'s usage since `since` (µs), in steps of at least `step_us`
    /// and of at most [`HISTORY_MAX_POINTS`] points, oldest first: the
    /// rolled tier where raw rows are gone, the raw rows after.
    pub fn history(
        &self,
        process: ProcessId,
        since: u64,
        step_us: u64,
        now: u64,
    ) -> Result<Vec<HistoryRow>> {
        let pid = process.0 as i64;
        let first = |tier: i64| -> Result<Option<i64>> {
            Ok(self.conn.query_row(
                "SELECT min(at) FROM samples WHERE process_id = ?1 AND tier = ?2",
                params![pid, tier],
                |r| r.get(0),
            )?)
        };
        let (raw_from, rolled_from) = (first(0)?, first(1)?);
        // The span is what is kept, not what was asked: `since` 0 (all)
        // must not stretch the steps over the years before the first row.
        let oldest = [raw_from, rolled_from].into_iter().flatten().min();
        let from = oldest.map_or(since, |o| since.max(o as u64));
        let step = step_us
            .max(now.saturating_sub(from).div_ceil(HISTORY_MAX_POINTS))
            .max(1);
        // A point is stamped with its first row's time, so a step of one
        // row keeps that row's time exactly.
        let mut stmt = self.conn.prepare_cached(
            "SELECT min(at), avg(cpu), CAST(avg(memory) AS INTEGER), max(tasks), max(io_read), max(io_write)
             FROM samples
             WHERE process_id = ?1 AND at >= ?2 AND (tier = 0 OR (tier = 1 AND at < ?4))
             GROUP BY at / ?3 ORDER BY 1 LIMIT ?5",
        )?;
        let unset = |v: Option<i64>| v.map_or(UNSET, |v| v as u64);
        let rows = stmt.query_map(
            params![
                pid,
                since.min(i64::MAX as u64) as i64,
                step.min(i64::MAX as u64) as i64,
                raw_from.unwrap_or(i64::MAX),
                HISTORY_MAX_POINTS as i64 + 1
            ],
            |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, Option<f64>>(1)?.unwrap_or(-1.0),
                    unset(r.get(2)?),
                    unset(r.get(3)?),
                    unset(r.get(4)?),
                    unset(r.get(5)?),
                ))
            },
        )?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }
}

fn prune(tx: &rusqlite::Transaction<'_>, raw_cutoff: u64, cutoff: u64) -> Result<usize> {
    let raw = tx.execute(
        "DELETE FROM samples WHERE tier = 0 AND at < ?1",
        params![raw_cutoff.min(i64::MAX as u64) as i64],
    )?;
    let rolled = tx.execute(
        "DELETE FROM samples WHERE tier = 1 AND at < ?1",
        params![cutoff.min(i64::MAX as u64) as i64],
    )?;
    Ok(raw + rolled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(process: u64, cpu: f64, memory: u64) -> Sample {
        Sample {
            process: ProcessId(process),
            cpu_percent: Some(cpu),
            memory: Some(memory),
            tasks: Some(1),
            io_read: None,
            io_write: None,
        }
    }

    fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("corral.db")).unwrap();
        (dir, db)
    }

    #[test]
    fn samples_roll_up_into_averages_and_expire() {
        let (_dir, mut db) = db();
        let s = 1_000_000;
        // Two buckets of 10 s, two samples each, for process 1.
        for (t, cpu, mem) in [
            (0, 10.0, 100),
            (5, 30.0, 300),
            (10, 50.0, 500),
            (15, 70.0, 700),
        ] {
            db.add_samples(&[(1000 * s + t * s, vec![sample(1, cpu, mem)])], None)
                .unwrap();
        }
        let rollup = Rollup {
            from: 1000 * s,
            to: 1020 * s,
            bucket_us: 10 * s,
            raw_cutoff: 1010 * s,
            cutoff: 0,
        };
        db.add_samples(&[(1020 * s, vec![sample(1, 90.0, 900)])], Some(rollup))
            .unwrap();
        let rows = db.history(ProcessId(1), 0, 1, 1030 * s).unwrap();
        let got: Vec<(u64, f64, u64, u64)> =
            rows.iter().map(|r| (r.0 / s, r.1, r.2, r.4)).collect();
        // The first bucket only as its average (its raw rows are gone);
        // the second as raw rows, its rolled row hidden behind them.
        assert_eq!(
            got,
            vec![
                (1000, 20.0, 200, UNSET),
                (1010, 50.0, 500, UNSET),
                (1015, 70.0, 700, UNSET),
                (1020, 90.0, 900, UNSET)
            ]
        );
        // Wider steps average the points they cover.
        let wide = db.history(ProcessId(1), 0, 20 * s, 1030 * s).unwrap();
        assert_eq!(wide.len(), 2);
        assert_eq!(wide[0].2, (200 + 500 + 700) / 3);
        // Retention takes the rolled tier too; other processes are apart.
        assert!(db.history(ProcessId(2), 0, 1, 1030 * s).unwrap().is_empty());
        // With the raw rows gone, the rolled tier serves the whole range.
        db.prune_samples(2000 * s, 1010 * s).unwrap();
        let left = db.history(ProcessId(1), 0, 1, 1030 * s).unwrap();
        assert_eq!(left, vec![(1010 * s, 60.0, 600, 1, UNSET, UNSET)]);
    }

    #[test]
    fn a_reply_is_bounded_whatever_the_range() {
        let (_dir, mut db) = db();
        for t in 0..(HISTORY_MAX_POINTS * 3) {
            db.add_samples(&[(t, vec![sample(1, 1.0, 1)])], None)
                .unwrap();
        }
        let rows = db
            .history(ProcessId(1), 0, 1, HISTORY_MAX_POINTS * 3)
            .unwrap();
        assert!(
            rows.len() as u64 <= HISTORY_MAX_POINTS + 1,
            "{}",
            rows.len()
        );
        assert!(rows.len() as u64 >= HISTORY_MAX_POINTS / 2);
    }
}
