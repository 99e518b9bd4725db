//! The child's output: reading both pipes in one poll loop, splitting
//! them into bounded lines and writing them, with the shim's own notes
//! (`started`, `exited`), to the process's log files (`crate::logfile`)
//! and, if the spec asks, a copy to the journal (`journal`).
//! The log is best effort; the exit record (`child`) is what must not be
//! lost.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::child::{ExitNote, Waiter, POLL_INTERVAL_MS};
use super::journal::Journal;
use super::now_us;
use super::protocol::LaunchSpec;
use crate::logfile::{LogWriter, MAX_LINE_BYTES};

/// Pipe read size: big enough that a child writing 10 MB/s costs a few
/// hundred reads a second.
pub(super) const READ_BUF: usize = 64 * 1024;

/// The read buffer: anonymous pages of their own, so only the pages a read
/// has written are ever resident. A `vec![0; READ_BUF]` comes from the heap
/// and is cleared by calloc, which makes all 64 KiB resident in every shim
/// — 60 of the 220 KiB each supervised process cost before, for a
/// process that may never print more than a line at a time. Falls back to
/// the heap if the mapping fails.
pub(super) fn read_buffer() -> Box<dyn std::ops::DerefMut<Target = [u8]>> {
    match memmap2::MmapMut::map_anon(READ_BUF) {
        Ok(map) => Box::new(map),
        Err(_) => Box::new(vec![0u8; READ_BUF]),
    }
}

/// After the child exits, how many zero-timeout poll rounds may drain
/// output it left in the pipes before `s exited` is logged; bounded because
/// a grandchild can keep writing forever.
pub(super) const EXIT_DRAIN_ROUNDS: u32 = 64;

/// The log as the shim sees it: best effort. If the directory cannot be
/// written, lines are dropped and opening is retried at most once a second,
/// but supervision goes on — the exit record matters more.
pub(super) struct Log {
    dir: PathBuf,
    max_bytes: u64,
    files: u32,
    writer: Option<LogWriter>,
    last_attempt: Option<Instant>,
    journal: Option<Journal>,
}

impl Log {
    pub(super) fn new(spec: &LaunchSpec) -> Self {
        let mut log = Log {
            dir: spec.log_dir.clone(),
            max_bytes: spec.log_max_bytes,
            files: spec.log_files,
            writer: None,
            last_attempt: None,
            journal: Journal::open(spec),
        };
        log.writer();
        log
    }

    fn writer(&mut self) -> Option<&mut LogWriter> {
        let due = self
            .last_attempt
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if self.writer.is_none() && due {
            self.last_attempt = Some(Instant::now());
            let opened = fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(&self.dir)
                .and_then(|()| LogWriter::open(&self.dir, self.max_bytes, self.files));
            self.writer = opened.ok();
        }
        self.writer.as_mut()
    }

    pub(super) fn push(&mut self, stream: u8, ts_us: u64, bytes: &[u8]) {
        if let Some(writer) = self.writer() {
            // A failed write loses this line only; the next one retries.
            let _ = writer.push_line(stream, ts_us, bytes);
        }
        if let Some(journal) = &self.journal {
            journal.send(stream, bytes);
        }
    }

    pub(super) fn flush(&mut self) {
        if let Some(writer) = self.writer.as_mut() {
            let _ = writer.flush();
        }
    }
}

/// One of the child's output pipes (or its terminal) and its unfinished
/// last line.
pub(super) struct Source {
    pub(super) file: Option<File>,
    stream: u8,
    pending: Vec<u8>,
    /// A terminal ends lines with `\r\n` (ONLCR); the log keeps lines
    /// without the `\r`, as from a pipe.
    strip_cr: bool,
}

impl Source {
    pub(super) fn new(file: Option<File>, stream: u8) -> Self {
        Source {
            file,
            stream,
            pending: Vec::new(),
            strip_cr: false,
        }
    }

    /// The master side of a terminal, logged as stdout.
    pub(super) fn terminal(file: File) -> Self {
        Source {
            strip_cr: true,
            ..Source::new(Some(file), b'o')
        }
    }

    /// One read; returns the bytes it produced (logged already).
    pub(super) fn read_once<'b>(&mut self, buf: &'b mut [u8], log: &mut Log) -> &'b [u8] {
        let Some(file) = self.file.as_mut() else {
            return &[];
        };
        match file.read(buf) {
            Ok(0) => {
                self.close(log);
                &[]
            }
            Ok(n) => {
                let data = &buf[..n];
                self.feed(data, now_us(), log);
                data
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) =>
            {
                &[]
            }
            // A terminal's master reads EIO once no process holds the
            // slave side any more: its EOF.
            Err(_) => {
                self.close(log);
                &[]
            }
        }
    }

    fn push(&self, log: &mut Log, ts_us: u64, line: &[u8]) {
        let line = match line.strip_suffix(b"\r") {
            Some(line) if self.strip_cr => line,
            _ => line,
        };
        log.push(self.stream, ts_us, line);
    }

    /// Splits a chunk into lines; whole lines go to the log straight from
    /// the read buffer, only an unfinished tail is copied.
    fn feed(&mut self, mut data: &[u8], ts_us: u64, log: &mut Log) {
        if !self.pending.is_empty() {
            let Some(i) = data.iter().position(|&b| b == b'\n') else {
                self.pending.extend_from_slice(data);
                self.spill(ts_us, log);
                return;
            };
            self.pending.extend_from_slice(&data[..i]);
            self.push(log, ts_us, &self.pending);
            self.pending.clear();
            data = &data[i + 1..];
        }
        while let Some(i) = data.iter().position(|&b| b == b'\n') {
            self.push(log, ts_us, &data[..i]);
            data = &data[i + 1..];
        }
        self.pending.extend_from_slice(data);
        self.spill(ts_us, log);
    }

    /// Writes out whole 16 KiB pieces of an unfinished line, so a child
    /// that never prints `\n` cannot grow the shim.
    fn spill(&mut self, ts_us: u64, log: &mut Log) {
        let full = self.pending.len() / MAX_LINE_BYTES * MAX_LINE_BYTES;
        if full > 0 {
            log.push(self.stream, ts_us, &self.pending[..full]);
            self.pending.drain(..full);
        }
    }

    /// EOF: the partial last line is still a line.
    fn close(&mut self, log: &mut Log) {
        if !self.pending.is_empty() {
            self.push(log, now_us(), &self.pending);
            self.pending.clear();
        }
        self.file = None;
    }
}

/// The output loop: logs both pipes in the order their data was read until
/// both reach EOF and the exit has been logged.
pub(super) fn pump(mut sources: [Source; 2], log: &mut Log, mut waiter: Waiter) {
    let mut buf = read_buffer();
    let mut exit: Option<ExitNote> = None;
    let mut exit_logged = false;
    let mut drain_rounds = 0u32;
    loop {
        let open: Vec<usize> = (0..sources.len())
            .filter(|&i| sources[i].file.is_some())
            .collect();
        if open.is_empty() && exit_logged {
            return;
        }
        let mut fds: Vec<libc::pollfd> = open
            .iter()
            .filter_map(|&i| sources[i].file.as_ref())
            .map(|f| pollfd(f.as_raw_fd()))
            .collect();
        let wake_fd = waiter.fd();
        if let Some(fd) = wake_fd {
            fds.push(pollfd(fd));
        }
        // With an exit in hand, only drain what is already buffered.
        let timeout = if exit.is_some() {
            0
        } else {
            waiter.poll_timeout()
        };
        if fds.is_empty() && timeout < 0 {
            // Nothing could ever wake us (cannot happen: the exit is
            // logged before the waiter is done); do not block forever.
            return;
        }
        // SAFETY: `fds` is a live, correctly sized array of pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // poll itself failing is not recoverable by retrying at speed.
            std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS as u64));
        }
        let mut got_data = false;
        // Pipes first, in a fixed order: stdout data that was written
        // before the exit is logged before `s exited`.
        for (slot, &i) in open.iter().enumerate() {
            if n > 0 && fds[slot].revents != 0 {
                got_data |= !sources[i].read_once(&mut buf, log).is_empty();
            }
        }
        let woken = n > 0 && wake_fd.is_some() && fds[open.len()].revents != 0;
        if let Some(note) = waiter.check(woken) {
            exit = Some(note);
        }
        if exit.is_some() && (!got_data || drain_rounds >= EXIT_DRAIN_ROUNDS) {
            if let Some(note) = exit.take() {
                log_exit(log, &note);
                exit_logged = true;
            }
        } else if exit.is_some() {
            drain_rounds += 1;
        }
        log.flush();
    }
}

pub(super) fn log_exit(log: &mut Log, note: &ExitNote) {
    let rec = &note.record;
    let text = if rec.signal != 0 {
        format!("exited signal {}", rec.signal)
    } else {
        format!("exited code {}", rec.code)
    };
    // Stamped now, not at `exited_at_us`: output read after the exit is
    // logged before this line, and read_lines relies on time order.
    log.push(b's', now_us(), text.as_bytes());
    if let Some(e) = &note.write_error {
        log.push(
            b's',
            now_us(),
            format!("exit record not written: {e}").as_bytes(),
        );
    }
}

pub(super) fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn test_log(dir: &Path) -> Log {
        Log::new(&LaunchSpec {
            id: "1".into(),
            run: 1,
            argv: vec![],
            cwd: "/".into(),
            env: vec![],
            log_dir: dir.to_path_buf(),
            log_max_bytes: 1 << 30,
            log_files: 2,
            exit_file: dir.join("exit"),
            user: None,
            journal: None,
            tty: false,
            notify: false,
        })
    }

    #[test]
    fn source_splits_lines_across_reads() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = test_log(dir.path());
        let mut src = Source::new(None, b'o');
        src.feed(b"one\ntw", 1, &mut log);
        src.feed(b"o\n\nthr", 2, &mut log);
        src.feed(b"ee", 3, &mut log);
        let long = vec![b'z'; MAX_LINE_BYTES + 10];
        src.feed(b"\n", 4, &mut log);
        src.feed(&long, 5, &mut log);
        // A 16 KiB piece of an unfinished line is written before its `\n`.
        assert_eq!(src.pending.len(), 10);
        src.feed(b"end", 6, &mut log);
        src.close(&mut log);
        log.flush();
        let lines = crate::logfile::read_lines(dir.path(), None, None).unwrap();
        let texts: Vec<String> = lines.iter().map(|l| l.text.clone()).collect();
        assert_eq!(
            texts,
            vec![
                "one".to_string(),
                "two".into(),
                String::new(),
                "three".into(),
                "z".repeat(MAX_LINE_BYTES),
                format!("{}end", "z".repeat(10)),
            ]
        );
        assert_eq!(lines[1].ts_us, 2);
    }
}
