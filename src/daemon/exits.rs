//! Exit records written by the shims (`<state>/exits/<run id>`, one JSON
//! file per ended run): watching the directory with inotify so an exit is
//! noticed within milliseconds, and reading / deleting records. A record
//! is deleted only after its exit is committed to SQLite, so an exit that
//! happens while corrald is down is found at the next start. The same
//! directory holds the notify records of `Notify` runs
//! (`<run id>.notify`: what the command last said over sd_notify), seen
//! by the same watch. The record formats and file names belong to
//! `crate::shim::protocol`.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use inotify::{EventMask, Inotify, WatchMask};
use tokio::sync::mpsc;

use crate::shim::protocol::{self, ExitRecord, NotifyRecord};

/// Path of the record of `run`.
pub fn record_path(dir: &Path, run: u64) -> PathBuf {
    protocol::record_path(dir, run)
}

/// Reads the record of `run`, if the shim has written it (never through
/// a symlink).
pub fn read(dir: &Path, run: u64) -> Option<ExitRecord> {
    match ExitRecord::read(&record_path(dir, run)) {
        Ok(rec) => Some(rec),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!("unreadable exit record for run {run}: {e}");
            None
        }
    }
}

/// Reads the notify record of `run`, if its shim has written one.
pub fn read_notify(dir: &Path, run: u64) -> Option<NotifyRecord> {
    match NotifyRecord::read(&protocol::notify_path(&record_path(dir, run))) {
        Ok(rec) => Some(rec),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!("unreadable notify record for run {run}: {e}");
            None
        }
    }
}

/// Deletes the records of `run` (exit and notify) and the space the
/// shim reserved for them.
pub fn remove(dir: &Path, run: u64) {
    let record = record_path(dir, run);
    let notify = protocol::notify_path(&record);
    for path in [&record, &notify] {
        let _ = std::fs::remove_file(path);
        let _ = std::fs::remove_file(protocol::record_tmp_path(path));
    }
}

/// Run ids of every record present (start-up scan).
pub fn pending(dir: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    entries
        .filter_map(|e| protocol::record_run(&e.ok()?.file_name()))
        .collect()
}

/// What the watch saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The exit record of this run appeared.
    Exit(u64),
    /// The notify record of this run was (re)written.
    Notify(u64),
    /// The kernel's event queue overflowed: the receiver must rescan.
    Rescan,
}

impl Seen {
    /// What a file of this name renamed into the directory is.
    fn of(name: &std::ffi::OsStr) -> Option<Seen> {
        protocol::record_run(name)
            .map(Seen::Exit)
            .or_else(|| protocol::notify_run(name).map(Seen::Notify))
    }
}

/// Watches `dir` and sends what every record renamed into it is. The
/// watch is set up before this returns, so no record written after the
/// call is missed.
pub fn watch(dir: &Path, tx: mpsc::UnboundedSender<Seen>) -> std::io::Result<()> {
    let inotify = Inotify::init()?;
    inotify.watches().add(dir, WatchMask::MOVED_TO)?;
    let mut stream = inotify.into_event_stream(vec![0u8; 4096])?;
    tokio::spawn(async move {
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(ev) if ev.mask.contains(EventMask::Q_OVERFLOW) => {
                    if tx.send(Seen::Rescan).is_err() {
                        break;
                    }
                }
                Ok(ev) => {
                    if let Some(seen) = ev.name.and_then(|n| Seen::of(&n)) {
                        if tx.send(seen).is_err() {
                            break;
                        }
                    }
                }
                Err(e) => {
                    tracing::error!("inotify on exit records failed: {e}");
                    break;
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_found_read_and_removed_with_their_reserved_space() {
        let dir = tempfile::tempdir().unwrap();
        let rec = ExitRecord {
            run: 34,
            pid: 2,
            code: 0,
            signal: 0,
            core_dumped: false,
            exited_at_us: 5,
            oom_kills: None,
        };
        // Run 34 ended; run 35 still runs (only its space is reserved).
        ExitRecord::reserve(&record_path(dir.path(), 34)).unwrap();
        rec.write_atomic(&record_path(dir.path(), 34)).unwrap();
        ExitRecord::reserve(&record_path(dir.path(), 35)).unwrap();
        std::fs::write(dir.path().join("034"), b"").unwrap();
        // Run 34 spoke sd_notify too; its record is no exit record.
        let said = NotifyRecord::new(34);
        said.write_atomic(&protocol::notify_path(&record_path(dir.path(), 34)))
            .unwrap();
        assert_eq!(pending(dir.path()), vec![34]);
        assert_eq!(read(dir.path(), 34), Some(rec));
        assert_eq!(read(dir.path(), 35), None);
        assert_eq!(read_notify(dir.path(), 34), Some(said));
        assert_eq!(read_notify(dir.path(), 35), None);

        remove(dir.path(), 34);
        remove(dir.path(), 35);
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(left, ["034"]);
    }

    #[test]
    fn seen_names_what_was_renamed_in() {
        use std::ffi::OsStr;
        assert_eq!(Seen::of(OsStr::new("34")), Some(Seen::Exit(34)));
        assert_eq!(Seen::of(OsStr::new("34.notify")), Some(Seen::Notify(34)));
        for other in ["34.tmp", "34.notify.tmp", "x"] {
            assert_eq!(Seen::of(OsStr::new(other)), None, "{other}");
        }
    }

    /// A record is never read through a symlink: the exits directory is
    /// corrald's, a link in it is not a shim's record.
    #[test]
    fn a_symlinked_record_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        let rec = ExitRecord {
            run: 7,
            pid: 2,
            code: 0,
            signal: 0,
            core_dumped: false,
            exited_at_us: 5,
            oom_kills: None,
        };
        rec.write_atomic(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, record_path(dir.path(), 7)).unwrap();
        assert_eq!(read(dir.path(), 7), None);
    }
}
