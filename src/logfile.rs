//! The on-disk output log of one process: the line format, size-based
//! rotation (written by the shim) and reading the last lines back (by
//! corrald for `logs`).
//!
//! A log directory holds `output.log` (current) and `output.log.1` …
//! `output.log.<files-1>` (older, higher is older). Each line is
//! `<unix_time_us> <stream> <text>\n`, stream `o` stdout, `e` stderr, `s`
//! the shim's own notes. This module must stay free of tokio, zbus and
//! tracing: the shim links it and has to stay tiny.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Name of the current log file inside a log directory.
pub const LOG_FILE: &str = "output.log";

/// Longest text of one record; longer lines become several records so a
/// reader never has to hold an unbounded line.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// Buffered bytes above which `push_line` writes through on its own, so a
/// caller that forgets to flush still makes progress in bounded memory.
const FLUSH_THRESHOLD: usize = 64 * 1024;

/// Chunk size for reading files backwards in `read_lines`.
const READ_CHUNK: usize = 64 * 1024;

/// Appends records to `output.log` and rotates it by size.
///
/// Lines are collected with `push_line` and written with one `write(2)` per
/// `flush` — a live `logs -f` sees whole lines, and a chatty child costs a
/// syscall per batch, not per line.
#[derive(Debug)]
pub struct LogWriter {
    dir: PathBuf,
    file: File,
    /// Bytes already written to the current file (`buf` not included).
    size: u64,
    max_bytes: u64,
    files: u32,
    buf: Vec<u8>,
}

impl LogWriter {
    /// Opens (appending) `dir/output.log`. The directory must exist.
    /// `files` counts all files including the current one; 0 is taken as 1.
    pub fn open(dir: &Path, max_bytes: u64, files: u32) -> io::Result<Self> {
        let file = open_current(dir)?;
        let size = file.metadata()?.len();
        let files = files.max(1);
        // A smaller `files` than last time leaves older files behind; they
        // would break the disk bound, so drop them now.
        remove_beyond(dir, files)?;
        Ok(LogWriter {
            dir: dir.to_path_buf(),
            file,
            size,
            max_bytes,
            files,
            buf: Vec::with_capacity(FLUSH_THRESHOLD),
        })
    }

    /// Writes one line now (see `push_line` for how `bytes` is split).
    pub fn write_line(&mut self, stream: u8, ts_us: u64, bytes: &[u8]) -> io::Result<()> {
        self.push_line(stream, ts_us, bytes)?;
        self.flush()
    }

    /// Queues one line. A trailing `\n` is dropped; an embedded `\n` or a
    /// text longer than `MAX_LINE_BYTES` yields several records so every
    /// record stays one well-formed line.
    pub fn push_line(&mut self, stream: u8, ts_us: u64, bytes: &[u8]) -> io::Result<()> {
        let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        for line in bytes.split(|&b| b == b'\n') {
            if line.is_empty() {
                self.push_record(stream, ts_us, line)?;
            }
            for piece in line.chunks(MAX_LINE_BYTES) {
                self.push_record(stream, ts_us, piece)?;
            }
        }
        Ok(())
    }

    /// Writes everything queued by `push_line`.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let result = write_counting(&mut self.file, &self.buf, &mut self.size);
        // On error the unwritten rest is dropped: keeping it would grow
        // without bound while the disk is full, and a log is best effort.
        self.buf.clear();
        result
    }

    fn push_record(&mut self, stream: u8, ts_us: u64, text: &[u8]) -> io::Result<()> {
        let mut head = [0u8; 24];
        let head_len = format_head(&mut head, ts_us, stream);
        let len = (head_len + text.len() + 1) as u64;
        let pending = self.size + self.buf.len() as u64;
        // An empty file takes the line even if it alone exceeds max_bytes:
        // that is the "+ one line" of the disk bound, and it avoids
        // rotating forever.
        if pending > 0 && pending + len > self.max_bytes {
            self.flush()?;
            self.rotate()?;
        }
        self.buf.extend_from_slice(&head[..head_len]);
        self.buf.extend_from_slice(text);
        self.buf.push(b'\n');
        if self.buf.len() >= FLUSH_THRESHOLD {
            self.flush()?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.files <= 1 {
            // O_APPEND writes go to the new end, so truncating is enough.
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        for k in (1..self.files - 1).rev() {
            rename_if_exists(&rotated_path(&self.dir, k), &rotated_path(&self.dir, k + 1))?;
        }
        rename_if_exists(&self.dir.join(LOG_FILE), &rotated_path(&self.dir, 1))?;
        self.file = open_current(&self.dir)?;
        self.size = self.file.metadata()?.len();
        remove_beyond(&self.dir, self.files)
    }
}

/// One record read back from a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Microseconds since the Unix epoch; 0 for a malformed line.
    pub ts_us: u64,
    /// `o`, `e`, `s`, or `?` for a malformed line.
    pub stream: char,
    pub text: String,
}

/// Parses one record (without its `\n`). `None` if it is not
/// `<digits> <stream char> <text>`; a missing text after the stream is
/// accepted as empty.
pub fn parse_line(line: &str) -> Option<LogLine> {
    let (ts, rest) = line.split_once(' ')?;
    if ts.is_empty() || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ts_us = ts.parse().ok()?;
    let mut chars = rest.chars();
    let stream = chars.next().filter(char::is_ascii_graphic)?;
    let after = chars.as_str();
    let text = if after.is_empty() {
        ""
    } else {
        after.strip_prefix(' ')?
    };
    Some(LogLine {
        ts_us,
        stream,
        text: text.to_owned(),
    })
}

/// Which lines of a window a read returns when they do not all fit its
/// page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The last lines (a tail).
    Newest,
    /// The first lines, from `since_us` on: a client reads on from the
    /// last timestamp it got.
    Oldest,
}

/// How much one read may return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub max_lines: usize,
    /// Bytes, counting each line as its text plus [`LINE_OVERHEAD`]. A
    /// single line over it is still returned, so a read always progresses.
    pub max_bytes: usize,
    pub keep: Keep,
}

/// What a line costs in a page besides its text: about the framing of one
/// `(tss)` entry of a D-Bus reply, so an empty line is not free.
pub const LINE_OVERHEAD: usize = 32;

/// Reads records from the log in `dir`, oldest first, returning the last
/// `max_lines` of those at or after `since_us` (see [`read_page`]).
pub fn read_lines(
    dir: &Path,
    max_lines: Option<usize>,
    since_us: Option<u64>,
) -> io::Result<Vec<LogLine>> {
    let page = Page {
        max_lines: max_lines.unwrap_or(usize::MAX),
        max_bytes: usize::MAX,
        keep: Keep::Newest,
    };
    read_page(dir, since_us, page)
}

/// Reads records from the log in `dir`, oldest first: of those at or
/// after `since_us`, as many as `page` allows, the newest or the oldest.
///
/// Files are read backwards from the end of `output.log` and older files are
/// opened only while more lines are needed, so a small `max_lines` on a big
/// log stays cheap (`Keep::Oldest` reads the whole window, holding no more
/// than a page). Lines are assumed to be in time order: reading stops at
/// the first well-formed line older than `since_us` (a wall-clock step back
/// can hide lines written before the step). Malformed lines come back as
/// stream `?`, ts 0, and are kept if they lie after that cut. A missing
/// directory is an empty log (a process that never started has none).
/// A rotation racing with the read may duplicate or skip lines at a file
/// boundary; callers that follow the log live re-read from a timestamp.
pub fn read_page(dir: &Path, since_us: Option<u64>, page: Page) -> io::Result<Vec<LogLine>> {
    // Newest first while reading backwards.
    let mut out: VecDeque<LogLine> = VecDeque::new();
    if page.max_lines == 0 {
        return Ok(Vec::new());
    }
    let files = match list_files(dir) {
        Ok(files) => files,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let cost = |l: &LogLine| l.text.len() + LINE_OVERHEAD;
    let mut bytes = 0usize;
    for path in files {
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path);
        let mut file = match opened {
            Ok(f) => f,
            // Rotated away between listing and opening.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let more = for_each_line_rev(&mut file, |raw| {
            let line = decode_line(raw);
            if let Some(since) = since_us {
                if line.stream != '?' && line.ts_us < since {
                    return false;
                }
            }
            let c = cost(&line);
            match page.keep {
                Keep::Newest => {
                    if !out.is_empty() && bytes.saturating_add(c) > page.max_bytes {
                        return false;
                    }
                    bytes += c;
                    out.push_back(line);
                    out.len() < page.max_lines
                }
                Keep::Oldest => {
                    bytes += c;
                    out.push_back(line);
                    while out.len() > 1 && (out.len() > page.max_lines || bytes > page.max_bytes) {
                        if let Some(newest) = out.pop_front() {
                            bytes -= cost(&newest);
                        }
                    }
                    true
                }
            }
        })?;
        if !more {
            break;
        }
    }
    Ok(out.into_iter().rev().collect())
}

fn decode_line(raw: &[u8]) -> LogLine {
    let text = String::from_utf8_lossy(raw);
    parse_line(&text).unwrap_or_else(|| LogLine {
        ts_us: 0,
        stream: '?',
        text: text.into_owned(),
    })
}

/// Calls `f` with each line of `file`, last line first, until `f` returns
/// false. Returns whether `f` wanted more.
fn for_each_line_rev(file: &mut File, mut f: impl FnMut(&[u8]) -> bool) -> io::Result<bool> {
    let mut pos = file.metadata()?.len();
    if pos == 0 {
        return Ok(true);
    }
    // The start of the line whose end we have already read; it always ends
    // right before a `\n` (or at EOF).
    let mut carry: Vec<u8> = Vec::new();
    let mut first = true;
    while pos > 0 {
        let start = pos.saturating_sub(READ_CHUNK as u64);
        let mut data = vec![0u8; (pos - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut data)?;
        if first {
            // The final `\n` ends the last line; it does not start an empty one.
            if data.last() == Some(&b'\n') {
                data.pop();
            }
            first = false;
        }
        data.extend_from_slice(&carry);
        let mut end = data.len();
        while let Some(i) = data[..end].iter().rposition(|&b| b == b'\n') {
            if !f(&data[i + 1..end]) {
                return Ok(false);
            }
            end = i;
        }
        data.truncate(end);
        carry = data;
        pos = start;
    }
    Ok(f(&carry))
}

/// `output.log`, `output.log.1`, … newest first.
fn list_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut numbered: Vec<u32> = Vec::new();
    let mut has_current = false;
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == LOG_FILE {
            has_current = true;
        } else if let Some(k) = rotated_index(name) {
            numbered.push(k);
        }
    }
    numbered.sort_unstable();
    let mut files = Vec::with_capacity(numbered.len() + 1);
    if has_current {
        files.push(dir.join(LOG_FILE));
    }
    files.extend(numbered.into_iter().map(|k| rotated_path(dir, k)));
    Ok(files)
}

fn rotated_index(name: &str) -> Option<u32> {
    let k = name.strip_prefix(LOG_FILE)?.strip_prefix('.')?;
    if k.is_empty() || !k.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    k.parse().ok().filter(|&k| k > 0)
}

fn rotated_path(dir: &Path, k: u32) -> PathBuf {
    dir.join(format!("{LOG_FILE}.{k}"))
}

/// Deletes `output.log.<k>` for every k ≥ `files`.
fn remove_beyond(dir: &Path, files: u32) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(k) = name.to_str().and_then(rotated_index) {
            if k >= files {
                remove_if_exists(&rotated_path(dir, k))?;
            }
        }
    }
    Ok(())
}

fn open_current(dir: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dir.join(LOG_FILE))
}

fn rename_if_exists(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Like `write_all`, but counts what reached the file even when it fails,
/// so the rotation size stays honest after a short write.
fn write_counting(file: &mut File, mut buf: &[u8], size: &mut u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                *size += n as u64;
                buf = &buf[n..];
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Formats `<ts> <stream> ` into `out` and returns its length; no
/// allocation, as it runs once per logged line.
fn format_head(out: &mut [u8; 24], ts_us: u64, stream: u8) -> usize {
    // u64::MAX has 20 digits; 20 + 3 fits in 24.
    let mut digits = [0u8; 20];
    let mut n = ts_us;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = digits.len() - i;
    out[..len].copy_from_slice(&digits[i..]);
    out[len] = b' ';
    out[len + 1] = stream;
    out[len + 2] = b' ';
    len + 3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files_in(dir: &Path) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().into_string().unwrap(),
                    e.metadata().unwrap().len(),
                )
            })
            .collect();
        v.sort();
        v
    }

    /// The log holds the command's output: written 0600, and neither
    /// written nor read through a symlink in its place.
    #[test]
    fn the_log_is_private_and_never_behind_a_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        LogWriter::open(dir.path(), 1 << 20, 3).unwrap();
        let mode = fs::metadata(dir.path().join(LOG_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        fs::write(&target, "1 o secret\n").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(LOG_FILE)).unwrap();
        assert!(LogWriter::open(dir.path(), 1 << 20, 3).is_err());
        assert!(read_lines(dir.path(), None, None).is_err());
        assert_eq!(fs::read_to_string(&target).unwrap(), "1 o secret\n");
    }

    #[test]
    fn format_and_parse_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::open(dir.path(), 1 << 20, 3).unwrap();
        w.write_line(b'o', 1_764_000_000_000_000, b"hello world")
            .unwrap();
        w.write_line(b'e', 0, b"").unwrap();
        w.write_line(b's', u64::MAX, b"exited code 3").unwrap();
        let raw = fs::read_to_string(dir.path().join(LOG_FILE)).unwrap();
        assert_eq!(
            raw,
            "1764000000000000 o hello world\n0 e \n18446744073709551615 s exited code 3\n"
        );
        let lines = read_lines(dir.path(), None, None).unwrap();
        assert_eq!(
            lines,
            vec![
                LogLine {
                    ts_us: 1_764_000_000_000_000,
                    stream: 'o',
                    text: "hello world".into()
                },
                LogLine {
                    ts_us: 0,
                    stream: 'e',
                    text: String::new()
                },
                LogLine {
                    ts_us: u64::MAX,
                    stream: 's',
                    text: "exited code 3".into()
                },
            ]
        );
    }

    #[test]
    fn parse_line_rejects_malformed() {
        assert_eq!(
            parse_line("12 o"),
            Some(LogLine {
                ts_us: 12,
                stream: 'o',
                text: String::new()
            })
        );
        assert_eq!(parse_line("12 o  two spaces").unwrap().text, " two spaces");
        for bad in [
            "", "garbage", "12", "12 ", "x1 o t", "12 oo t", "-1 o t", "12  t",
        ] {
            assert_eq!(parse_line(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn rotation_keeps_file_count_and_size_bound() {
        let dir = tempfile::tempdir().unwrap();
        let max = 1000;
        let files = 3;
        let mut w = LogWriter::open(dir.path(), max, files).unwrap();
        for i in 0..1000u64 {
            w.push_line(b'o', i, format!("line number {i}").as_bytes())
                .unwrap();
            if i % 7 == 0 {
                w.flush().unwrap();
            }
        }
        w.flush().unwrap();
        let listing = files_in(dir.path());
        let names: Vec<&str> = listing.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["output.log", "output.log.1", "output.log.2"]);
        for (name, len) in &listing {
            assert!(*len <= max, "{name} has {len} bytes");
        }
        // Rotated files are full up to less than one line.
        assert!(listing[1].1 > max - 30, "{listing:?}");
        // The newest line is last in output.log and the files chain without gaps.
        let lines = read_lines(dir.path(), None, None).unwrap();
        let ts: Vec<u64> = lines.iter().map(|l| l.ts_us).collect();
        assert_eq!(*ts.last().unwrap(), 999);
        assert!(ts.windows(2).all(|w| w[1] == w[0] + 1), "gap in {ts:?}");
    }

    #[test]
    fn reopen_with_fewer_files_removes_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::open(dir.path(), 100, 5).unwrap();
        for i in 0..100 {
            w.write_line(b'o', i, b"0123456789012345678901234567890123456789")
                .unwrap();
        }
        assert_eq!(files_in(dir.path()).len(), 5);
        let mut w = LogWriter::open(dir.path(), 100, 2).unwrap();
        w.write_line(b'o', 1000, b"x").unwrap();
        let names: Vec<String> = files_in(dir.path()).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["output.log", "output.log.1"]);
    }

    #[test]
    fn single_file_is_truncated_instead_of_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::open(dir.path(), 50, 1).unwrap();
        for i in 0..20 {
            w.write_line(b'o', i, b"0123456789").unwrap();
        }
        let listing = files_in(dir.path());
        assert_eq!(listing.len(), 1);
        assert!(listing[0].1 <= 50);
        let lines = read_lines(dir.path(), None, None).unwrap();
        assert_eq!(lines.last().unwrap().ts_us, 19);
    }

    #[test]
    fn oversized_line_is_written_to_an_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::open(dir.path(), 10, 2).unwrap();
        w.write_line(b'o', 1, b"much longer than ten bytes")
            .unwrap();
        w.write_line(b'o', 2, b"again longer than ten").unwrap();
        let lines = read_lines(dir.path(), None, None).unwrap();
        let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(
            texts,
            ["much longer than ten bytes", "again longer than ten"]
        );
    }

    #[test]
    fn read_lines_returns_last_n_across_rotated_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::open(dir.path(), 4096, 10).unwrap();
        for i in 0..2000u64 {
            w.push_line(
                if i % 2 == 0 { b'o' } else { b'e' },
                i,
                format!("n{i}").as_bytes(),
            )
            .unwrap();
        }
        w.flush().unwrap();
        assert!(files_in(dir.path()).len() >= 5);
        // Spans output.log and at least two rotated files.
        let lines = read_lines(dir.path(), Some(700), None).unwrap();
        assert_eq!(lines.len(), 700);
        for (j, line) in lines.iter().enumerate() {
            let i = 1300 + j as u64;
            assert_eq!(line.ts_us, i);
            assert_eq!(line.text, format!("n{i}"));
            assert_eq!(line.stream, if i % 2 == 0 { 'o' } else { 'e' });
        }
        // More than exist: everything still on disk, oldest first.
        let all = read_lines(dir.path(), Some(100_000), None).unwrap();
        assert_eq!(all.last().unwrap().ts_us, 1999);
        assert!(all.windows(2).all(|w| w[1].ts_us == w[0].ts_us + 1));
        assert_eq!(read_lines(dir.path(), Some(0), None).unwrap(), vec![]);
    }

    /// Hardening: a page is bounded in lines and bytes; `Keep::Newest`
    /// is the tail, `Keep::Oldest` the head of the window, and reading on
    /// from the last timestamp (skipping the lines already had at it)
    /// returns every line exactly once, even with many lines sharing a
    /// timestamp.
    #[test]
    fn pages_are_bounded_and_paging_from_the_last_timestamp_reads_everything() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::open(dir.path(), 1 << 20, 4).unwrap();
        // 3000 lines, ten per timestamp.
        for i in 0..3000u64 {
            w.push_line(b'o', 1 + i / 10, format!("{i:04}").as_bytes())
                .unwrap();
        }
        w.flush().unwrap();
        let cost = 4 + LINE_OVERHEAD;
        let tail = Page {
            max_lines: 500,
            max_bytes: 300 * cost,
            keep: Keep::Newest,
        };
        let got = read_page(dir.path(), None, tail).unwrap();
        assert_eq!(got.len(), 300, "the byte bound cuts before the line bound");
        assert_eq!(got.last().unwrap().text, "2999");
        let head = Page {
            max_lines: 1000,
            max_bytes: 777 * cost,
            keep: Keep::Oldest,
        };
        let got = read_page(dir.path(), None, head).unwrap();
        assert_eq!(got.len(), 777);
        assert_eq!(got[0].text, "0000");
        // Page through: ask from the last timestamp, skip what was seen.
        let mut seen: Vec<String> = Vec::new();
        let mut since = 0u64;
        let mut calls = 0;
        loop {
            calls += 1;
            let rows = read_page(dir.path(), Some(since), head).unwrap();
            let at_since = seen
                .iter()
                .rev()
                .take_while(|t| 1 + t.parse::<u64>().unwrap() / 10 == since)
                .count();
            let mut skip = at_since;
            let new: Vec<LogLine> = rows
                .into_iter()
                .filter(|l| {
                    let again = l.ts_us == since && skip > 0;
                    skip -= usize::from(again);
                    !again
                })
                .collect();
            if new.is_empty() {
                break;
            }
            since = new.last().unwrap().ts_us;
            seen.extend(new.into_iter().map(|l| l.text));
        }
        let want: Vec<String> = (0..3000).map(|i| format!("{i:04}")).collect();
        assert_eq!(seen, want);
        assert_eq!(calls, 5, "3000 lines in pages of 777, then one empty");
    }

    #[test]
    fn read_lines_spans_read_chunks() {
        // Lines longer than READ_CHUNK / k make lines straddle chunk
        // boundaries when reading backwards.
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::open(dir.path(), 1 << 30, 2).unwrap();
        let expected: Vec<String> = (0..100)
            .map(|i| format!("{i}:{}", "y".repeat(i * 397 % 9000)))
            .collect();
        for (i, text) in expected.iter().enumerate() {
            w.push_line(b'o', i as u64, text.as_bytes()).unwrap();
        }
        w.flush().unwrap();
        let got: Vec<String> = read_lines(dir.path(), None, None)
            .unwrap()
            .into_iter()
            .map(|l| l.text)
            .collect();
        assert_eq!(got, expected);
        let last3 = read_lines(dir.path(), Some(3), None).unwrap();
        assert_eq!(last3[0].text, expected[97]);
    }

    #[test]
    fn since_filter_cuts_at_timestamp() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::open(dir.path(), 300, 20).unwrap();
        for i in 0..100u64 {
            w.write_line(b'o', i * 10, format!("t{i}").as_bytes())
                .unwrap();
        }
        let lines = read_lines(dir.path(), None, Some(555)).unwrap();
        let ts: Vec<u64> = lines.iter().map(|l| l.ts_us).collect();
        assert_eq!(ts, (56..100).map(|i| i * 10).collect::<Vec<_>>());
        let lines = read_lines(dir.path(), Some(5), Some(555)).unwrap();
        assert_eq!(lines.first().unwrap().ts_us, 950);
        assert_eq!(lines.len(), 5);
        assert_eq!(read_lines(dir.path(), None, Some(10_000)).unwrap(), vec![]);
        assert_eq!(read_lines(dir.path(), None, Some(0)).unwrap().len(), 100);
    }

    #[test]
    fn long_line_is_split_into_16k_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::open(dir.path(), 1 << 20, 2).unwrap();
        let long = vec![b'a'; MAX_LINE_BYTES * 2 + 5];
        w.write_line(b'o', 7, &long).unwrap();
        w.write_line(b'e', 8, b"one\ntwo\n").unwrap();
        let lines = read_lines(dir.path(), None, None).unwrap();
        let lens: Vec<usize> = lines.iter().map(|l| l.text.len()).collect();
        assert_eq!(lens, [MAX_LINE_BYTES, MAX_LINE_BYTES, 5, 3, 3]);
        assert!(lines[..3].iter().all(|l| l.ts_us == 7 && l.stream == 'o'));
        assert_eq!(lines[3].text, "one");
        assert_eq!(lines[4].text, "two");
    }

    #[test]
    fn malformed_lines_are_returned_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(LOG_FILE),
            b"10 o good\nnot a log line\n\xff\xfe 20 e\n30 e last",
        )
        .unwrap();
        let lines = read_lines(dir.path(), None, None).unwrap();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0].text, "good");
        assert_eq!((lines[1].ts_us, lines[1].stream), (0, '?'));
        assert_eq!(lines[1].text, "not a log line");
        assert_eq!(lines[2].stream, '?');
        assert!(lines[2].text.contains('\u{fffd}'));
        // A partial last line (no `\n`) is still a line.
        assert_eq!(lines[3].text, "last");
        // Malformed lines after the since cut are kept, older good ones not.
        let since = read_lines(dir.path(), None, Some(15)).unwrap();
        let streams: Vec<char> = since.iter().map(|l| l.stream).collect();
        assert_eq!(streams, ['?', '?', 'e']);
    }

    #[test]
    fn missing_dir_is_empty_log() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            read_lines(&dir.path().join("nope"), None, None).unwrap(),
            vec![]
        );
    }

    #[test]
    fn stray_names_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["output.log.0", "output.log.x", "output.log.1.tmp", "other"] {
            fs::write(dir.path().join(name), b"1 o stray\n").unwrap();
        }
        fs::write(dir.path().join(LOG_FILE), b"2 o real\n").unwrap();
        let lines = read_lines(dir.path(), None, None).unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].text, "real");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn any_page() -> impl Strategy<Value = Page> {
            (0..50usize, 0..2000usize, any::<bool>()).prop_map(|(max_lines, max_bytes, oldest)| {
                Page {
                    max_lines,
                    max_bytes,
                    keep: if oldest { Keep::Oldest } else { Keep::Newest },
                }
            })
        }

        proptest! {
            /// Whatever bytes a log file holds (a damaged disk, a stray
            /// write), reading it answers lines — never a panic — within
            /// the page's bounds.
            #[test]
            fn any_log_file_reads_without_panicking_within_bounds(
                bytes in prop::collection::vec(any::<u8>(), 0..4096),
                since in prop::option::of(any::<u64>()),
                page in any_page(),
            ) {
                let dir = tempfile::tempdir().unwrap();
                fs::write(dir.path().join(LOG_FILE), &bytes).unwrap();
                let lines = read_page(dir.path(), since, page).unwrap();
                prop_assert!(lines.len() <= page.max_lines);
                let cost: usize = lines.iter().map(|l| l.text.len() + LINE_OVERHEAD).sum();
                prop_assert!(lines.len() <= 1 || cost <= page.max_bytes);
                let _ = parse_line(&String::from_utf8_lossy(&bytes));
            }

            /// Lines written are read back as written, in order, with
            /// their stream and time, across rotations.
            #[test]
            fn written_lines_read_back(
                lines in prop::collection::vec(
                    (prop::sample::select(&[b'o', b'e', b's'][..]), "[^\n]{0,40}"),
                    0..60,
                ),
                max_bytes in 200u64..4000,
            ) {
                let dir = tempfile::tempdir().unwrap();
                let mut w = LogWriter::open(dir.path(), max_bytes, 1000).unwrap();
                for (i, (stream, text)) in lines.iter().enumerate() {
                    w.push_line(*stream, i as u64, text.as_bytes()).unwrap();
                }
                w.flush().unwrap();
                let got: Vec<(u64, char, String)> = read_lines(dir.path(), None, None)
                    .unwrap()
                    .into_iter()
                    .map(|l| (l.ts_us, l.stream, l.text))
                    .collect();
                let want: Vec<(u64, char, String)> = lines
                    .into_iter()
                    .enumerate()
                    .map(|(i, (stream, text))| (i as u64, char::from(stream), text))
                    .collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}
