//! The wire protocol between corrald and one `corral-shim`, both ends in
//! one file so they cannot drift: every message has its encoder and its
//! decoder side by side (as tokio-rs/mini-redis `src/cmd/get.rs` keeps
//! `parse_frames` next to `into_frame`). The shim and corrald
//! (`daemon::launch`, `daemon::exits`) read and write the protocol only
//! through this module.
//!
//! The conversation, on the control socket the shim inherits as its stdin
//! ([`CONTROL_FD`]; the shim moves it off fd 0 at once):
//!
//! 1. corrald → shim: the [`LaunchSpec`] as JSON on one line.
//! 2. corrald → shim: [`Go`] (`go\n`) once the shim sits in its scope.
//!    Anything else, or EOF, and the shim exits without running anything.
//! 3. shim → corrald: one [`LaunchReply`], `ok <pid>\n` or
//!    `err <errno> <message>\n`; then the shim closes the socket.
//! 4. When the child ends, the shim writes an [`ExitRecord`] (JSON) to
//!    [`record_tmp_path`] and renames it to the spec's `exit_file`, which
//!    corrald names `<exits dir>/<run id>` ([`record_path`]), so a reader
//!    woken by the rename always sees a whole record.
//! 5. With `notify` in the spec, each time what the command said over
//!    `NOTIFY_SOCKET` changes, the shim writes a [`NotifyRecord`] the same
//!    way, to `<exits dir>/<run id>.notify` ([`notify_path`]); corrald's
//!    watch of the directory sees it as it sees exit records.
//!
//! 6. The fork server (`shim::server`, a shim whose stdin is a
//!    `SOCK_SEQPACKET` socket): corrald sends [`FORK_REQUEST`] with the new
//!    shim's control socket attached (`SCM_RIGHTS`), one datagram; the
//!    server forks and answers one [`ForkAnswer`].
//!
//! Line decoders take the line as read, with its `\n`: a line without one
//! was cut short by the peer closing. Decoders return an error for any
//! other input and never panic (property-tested below). Part of the shim,
//! so std, libc and serde only — see the `shim` module doc.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::RawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The fd on which the shim finds its control socket: its stdin, because a
/// spawner can put any fd there without code between fork and exec, so
/// corrald spawns shims with `posix_spawn` (a vfork, no copy of its page
/// tables) instead of `fork`.
pub const CONTROL_FD: RawFd = 0;

/// Longest control line (spec or `go`) with its `\n`: the shim reads no
/// further, so a confused peer cannot make it grow, and corrald refuses to
/// send a longer spec rather than have the shim drop it.
pub const MAX_CONTROL_LINE: usize = 1 << 20;

/// At most this much of a bad line is quoted in an error.
const MAX_QUOTED: usize = 200;

/// Why a message could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("closed before the end of the line")]
    Closed,
    #[error("line of {len} bytes is over the {MAX_CONTROL_LINE}-byte limit")]
    TooLong { len: usize },
    #[error("expected \"go\", got {0:?}")]
    NotGo(String),
    #[error("invalid launch spec: {0}")]
    Spec(serde_json::Error),
    #[error("not a launch reply: {0:?}")]
    Reply(String),
    #[error("not an exit record: {0}")]
    Record(serde_json::Error),
    #[error("cannot encode as JSON: {0}")]
    Encode(serde_json::Error),
    #[error("not a fork answer: {0}")]
    ForkAnswer(i32),
}

pub type Result<T> = std::result::Result<T, Error>;

/// A fork request's payload; the descriptor rides along.
pub const FORK_REQUEST: [u8; 1] = [0];

/// The fork server's answer to one request: on the wire a native-endian
/// `i32`, the new shim's PID or a negative errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForkAnswer {
    Forked { pid: u32 },
    Failed { errno: i32 },
}

impl ForkAnswer {
    pub const LEN: usize = 4;

    pub fn to_bytes(self) -> [u8; Self::LEN] {
        match self {
            ForkAnswer::Forked { pid } => (pid as i32).to_ne_bytes(),
            ForkAnswer::Failed { errno } => (-errno).to_ne_bytes(),
        }
    }

    /// A short read means the server closed its socket.
    pub fn from_bytes(bytes: &[u8]) -> Result<ForkAnswer> {
        let word: [u8; Self::LEN] = bytes.try_into().map_err(|_| Error::Closed)?;
        match i32::from_ne_bytes(word) {
            pid if pid > 0 => Ok(ForkAnswer::Forked { pid: pid as u32 }),
            errno if errno < 0 && errno != i32::MIN => Ok(ForkAnswer::Failed { errno: -errno }),
            other => Err(Error::ForkAnswer(other)),
        }
    }
}

/// The line without its `\n`.
fn body(line: &[u8]) -> Result<&[u8]> {
    line.strip_suffix(b"\n").ok_or(Error::Closed)
}

/// The start of a bad line, for an error message.
fn quote(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_QUOTED)]).into_owned()
}

/// What to run, sent by corrald as the first line on the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchSpec {
    /// corrald's process id (for humans reading a shim's state).
    pub id: String,
    /// The run number, echoed in the `ExitRecord`.
    pub run: u64,
    /// Program and arguments; the program is looked up in the `PATH` of
    /// `env` (corrald should always pass a `PATH`).
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    /// The child's whole environment as `KEY=VALUE`; entries without `=`
    /// or with an empty key are skipped.
    pub env: Vec<String>,
    /// Created (0750, with parents) by the shim after `go`.
    pub log_dir: PathBuf,
    pub log_max_bytes: u64,
    /// Files kept including the current one; 0 is taken as 1.
    pub log_files: u32,
    /// Where the `ExitRecord` is renamed to; its directory must exist.
    pub exit_file: PathBuf,
    /// Who the command runs as (system mode): the child drops to these
    /// ids before its working directory is entered and its first
    /// instruction runs. None: as the shim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Credentials>,
    /// Also send each output line to the journal with these fields
    /// (`shim::journal`); None: the log file only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<JournalFields>,
    /// Run the command on a pseudo-terminal (`shim::tty`) instead of
    /// pipes, and serve it on [`crate::shim::terminal::socket_path`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tty: bool,
    /// Serve the sd_notify(3) protocol to the command (`shim::notify`):
    /// `NOTIFY_SOCKET` in its environment, what it says in a
    /// [`NotifyRecord`] at [`notify_path`] of `exit_file`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub notify: bool,
}

/// What the journal entries of one process carry besides the line:
/// `CORRAL_NAME`, `CORRAL_WORKSPACE` (and the spec's `id` as `CORRAL_ID`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalFields {
    pub name: String,
    pub workspace: String,
}

/// A user's ids for the privilege drop: setgroups, setresgid, setresuid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl LaunchSpec {
    /// The spec as corrald writes it: JSON on one line (JSON escapes any
    /// newline inside a string), `\n`-terminated.
    pub fn to_line(&self) -> Result<String> {
        let mut line = serde_json::to_string(self).map_err(Error::Encode)?;
        line.push('\n');
        if line.len() > MAX_CONTROL_LINE {
            return Err(Error::TooLong { len: line.len() });
        }
        Ok(line)
    }

    /// Reads the spec line as the shim received it.
    pub fn from_line(line: &[u8]) -> Result<Self> {
        if line.len() > MAX_CONTROL_LINE {
            return Err(Error::TooLong { len: line.len() });
        }
        serde_json::from_slice(body(line)?).map_err(Error::Spec)
    }
}

/// corrald's permission to run the command, sent once the held shim sits
/// in its scope: a child started before that would run outside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Go;

impl Go {
    const LINE: &'static str = "go\n";

    pub fn to_line(self) -> &'static str {
        Self::LINE
    }

    /// Accepts exactly `go\n`.
    pub fn from_line(line: &[u8]) -> Result<Self> {
        if line == Self::LINE.as_bytes() {
            return Ok(Go);
        }
        Err(Error::NotGo(quote(body(line)?)))
    }
}

/// The shim's one reply after `go`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchReply {
    /// `ok <pid>`: the child runs and leads process group `pid`.
    Started { pid: u32 },
    /// `err <errno> <message>`: nothing runs; the shim exits 127.
    Failed { errno: i32, message: String },
}

impl LaunchReply {
    /// The reply as written on the wire, `\n`-terminated.
    pub fn to_line(&self) -> String {
        match self {
            LaunchReply::Started { pid } => format!("ok {pid}\n"),
            LaunchReply::Failed { errno, message } => {
                // The reply is one line; a newline would cut it short.
                let message = message.replace(['\n', '\r'], " ");
                format!("err {errno} {message}\n")
            }
        }
    }

    /// Reads a reply line as corrald received it. The message is kept as
    /// sent, blanks included; anything not exactly `ok <u32>` or
    /// `err <i32>[ <message>]` is an error, not a guess.
    pub fn from_line(line: &[u8]) -> Result<Self> {
        let body = body(line)?;
        let bad = || Error::Reply(quote(body));
        let text = std::str::from_utf8(body).map_err(|_| bad())?;
        if let Some(pid) = text.strip_prefix("ok ") {
            let pid = pid.parse().map_err(|_| bad())?;
            return Ok(LaunchReply::Started { pid });
        }
        let rest = text.strip_prefix("err ").ok_or_else(bad)?;
        let (errno, message) = rest.split_once(' ').unwrap_or((rest, ""));
        Ok(LaunchReply::Failed {
            errno: errno.parse().map_err(|_| bad())?,
            message: message.to_owned(),
        })
    }
}

/// Bytes reserved for an exit record at start (a record is ~110 bytes).
const RESERVED_RECORD_BYTES: usize = 512;

/// How the child ended, written to `exit_file` as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub run: u64,
    pub pid: u32,
    /// Exit status, or -1 if the child was killed by a signal.
    pub code: i32,
    /// Terminating signal, or 0 if it exited.
    pub signal: i32,
    pub core_dumped: bool,
    pub exited_at_us: u64,
    /// OOM kills its cgroup counted when the child died of SIGKILL, read
    /// by the shim while it still holds the cgroup (corrald may find it
    /// removed); absent when not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_kills: Option<u64>,
}

impl ExitRecord {
    /// Builds the record from a `waitpid` status.
    pub fn from_wait_status(run: u64, pid: u32, status: libc::c_int, exited_at_us: u64) -> Self {
        let (code, signal, core_dumped) = if libc::WIFEXITED(status) {
            (libc::WEXITSTATUS(status), 0, false)
        } else if libc::WIFSIGNALED(status) {
            (-1, libc::WTERMSIG(status), libc::WCOREDUMP(status))
        } else {
            (-1, 0, false)
        };
        ExitRecord {
            run,
            pid,
            code,
            signal,
            core_dumped,
            exited_at_us,
            oom_kills: None,
        }
    }

    /// The file's contents: JSON and a `\n`.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut json = serde_json::to_vec(self).map_err(Error::Encode)?;
        json.push(b'\n');
        Ok(json)
    }

    /// Reads the file's contents.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(Error::Record)
    }

    /// Creates the temp file filled with blanks, so the record written at
    /// exit overwrites space already allocated (a full disk cannot lose it).
    pub fn reserve(path: &Path) -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(record_tmp_path(path))?;
        file.write_all(&[b' '; RESERVED_RECORD_BYTES])?;
        file.sync_all()
    }

    /// Writes the temp file (over its reserved space if any) and renames it
    /// to `path`, so a reader woken by IN_MOVED_TO always sees a whole
    /// record.
    pub fn write_atomic(&self, path: &Path) -> io::Result<()> {
        let tmp = record_tmp_path(path);
        let bytes = self.to_bytes().map_err(io::Error::other)?;
        // No truncate on open: shrinking afterwards never needs new space.
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        file.write_all(&bytes)?;
        file.set_len(bytes.len() as u64)?;
        drop(file);
        // No fsync: the rename is what wakes corrald, and it is on the
        // path of exit-detection latency (an fsync costs milliseconds, up
        // to tens on a busy disk). The record must survive a crash of
        // corrald, which the page cache does; after a power loss the
        // process is gone anyway and is recorded `lost`.
        fs::rename(&tmp, path)
    }

    /// Reads a record written by `write_atomic`; a symlink in its place
    /// is an error (ELOOP), not followed.
    pub fn read(path: &Path) -> io::Result<Self> {
        let mut bytes = Vec::new();
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?
            .read_to_end(&mut bytes)?;
        Self::from_bytes(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// Where the record of `run` lives in corrald's exits directory.
pub fn record_path(dir: &Path, run: u64) -> PathBuf {
    dir.join(run.to_string())
}

/// The temp file a record is written to before its rename (also the space
/// reserved for it): `<record>.tmp`, never read as a record by corrald.
pub fn record_tmp_path(record: &Path) -> PathBuf {
    let mut tmp = record.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

/// The run whose record has this file name (as `record_path` names it);
/// `None` for temp files and anything else.
pub fn record_run(file_name: &OsStr) -> Option<u64> {
    let name = file_name.to_str()?;
    let run: u64 = name.parse().ok()?;
    // `+7` or `07` parse too, but name no record: `record_path` wrote `7`.
    (run.to_string() == name).then_some(run)
}

/// Where the command stands in the sd_notify(3) protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyPhase {
    /// Nothing said yet (or only `STATUS=`): not ready.
    Waiting,
    /// `READY=1`.
    Ready,
    /// `RELOADING=1`, until the next `READY=1`.
    Reloading,
    /// `STOPPING=1`.
    Stopping,
}

/// Longest `STATUS=` text kept, in bytes (cut at a character boundary).
pub const MAX_STATUS_BYTES: usize = 1024;

/// Largest notify record read: a status of `MAX_STATUS_BYTES` escaped as
/// JSON (6 bytes a character at worst) and the fields around it.
const MAX_NOTIFY_RECORD: u64 = 8 * 1024;

/// What the command of one run last said over `NOTIFY_SOCKET`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyRecord {
    pub run: u64,
    pub phase: NotifyPhase,
    /// The last `STATUS=`, control characters removed, at most
    /// [`MAX_STATUS_BYTES`].
    pub status: String,
}

impl NotifyRecord {
    /// A run that has said nothing yet.
    pub fn new(run: u64) -> Self {
        NotifyRecord {
            run,
            phase: NotifyPhase::Waiting,
            status: String::new(),
        }
    }

    /// Writes the record to a temp file and renames it to `path`, as
    /// [`ExitRecord::write_atomic`] does (a reader never sees half).
    pub fn write_atomic(&self, path: &Path) -> io::Result<()> {
        let mut bytes = serde_json::to_vec(self).map_err(io::Error::other)?;
        bytes.push(b'\n');
        let tmp = record_tmp_path(path);
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        file.write_all(&bytes)?;
        drop(file);
        fs::rename(&tmp, path)
    }

    /// Reads a record written by `write_atomic` (not through a symlink,
    /// and no more than a record can hold).
    pub fn read(path: &Path) -> io::Result<Self> {
        let mut bytes = Vec::new();
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?
            .take(MAX_NOTIFY_RECORD)
            .read_to_end(&mut bytes)?;
        serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// Suffix of a notify record's file name.
const NOTIFY_SUFFIX: &str = ".notify";

/// Where the notify record of the run whose exit record is `record`
/// lives: `<record>.notify`, next to it.
pub fn notify_path(record: &Path) -> PathBuf {
    let mut path = record.as_os_str().to_owned();
    path.push(NOTIFY_SUFFIX);
    PathBuf::from(path)
}

/// The run whose notify record has this file name (as `notify_path`
/// names it); `None` for anything else, its temp file included.
pub fn notify_run(file_name: &OsStr) -> Option<u64> {
    let name = file_name.to_str()?.strip_suffix(NOTIFY_SUFFIX)?;
    record_run(OsStr::new(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fork_answers_round_trip_and_nonsense_is_refused() {
        for a in [
            ForkAnswer::Forked { pid: 1234 },
            ForkAnswer::Failed {
                errno: libc::EAGAIN,
            },
        ] {
            assert_eq!(ForkAnswer::from_bytes(&a.to_bytes()).unwrap(), a);
        }
        assert!(matches!(
            ForkAnswer::from_bytes(&[1, 2]),
            Err(Error::Closed)
        ));
        for v in [0, i32::MIN] {
            assert!(matches!(
                ForkAnswer::from_bytes(&v.to_ne_bytes()),
                Err(Error::ForkAnswer(_))
            ));
        }
    }

    #[test]
    fn notify_record_names_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = notify_path(&record_path(dir.path(), 34));
        assert_eq!(path, dir.path().join("34.notify"));
        assert_eq!(notify_run(path.file_name().unwrap()), Some(34));
        for other in ["34", "34.notify.tmp", "034.notify", ".notify", "x.notify"] {
            assert_eq!(notify_run(OsStr::new(other)), None, "{other:?}");
        }
        // A notify record is never taken for an exit record.
        assert_eq!(record_run(path.file_name().unwrap()), None);
        let rec = NotifyRecord {
            run: 34,
            phase: NotifyPhase::Ready,
            status: "serving \"x\"".into(),
        };
        rec.write_atomic(&path).unwrap();
        assert_eq!(NotifyRecord::read(&path).unwrap(), rec);
        assert!(!dir.path().join("34.notify.tmp").exists());
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "{\"run\":34,\"phase\":\"ready\",\"status\":\"serving \\\"x\\\"\"}\n"
        );
    }

    #[test]
    fn reply_wire_format() {
        let ok = LaunchReply::Started { pid: 1234 };
        assert_eq!(ok.to_line(), "ok 1234\n");
        assert_eq!(LaunchReply::from_line(b"ok 1234\n").unwrap(), ok);
        let err = LaunchReply::Failed {
            errno: 2,
            message: "No such file or directory (os error 2)".into(),
        };
        assert_eq!(
            err.to_line(),
            "err 2 No such file or directory (os error 2)\n"
        );
        let bare = LaunchReply::from_line(b"err 22\n").unwrap();
        assert_eq!(
            bare,
            LaunchReply::Failed {
                errno: 22,
                message: String::new()
            }
        );
        let multi = LaunchReply::Failed {
            errno: 22,
            message: "a\nb".into(),
        };
        assert_eq!(multi.to_line(), "err 22 a b\n");
        for bad in [
            "",
            "ok 12",
            "ok\n",
            "ok x\n",
            "err x y\n",
            "ok 12\r\n",
            "hi\n",
        ] {
            assert!(LaunchReply::from_line(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn go_wire_format() {
        assert_eq!(Go.to_line(), "go\n");
        assert_eq!(Go::from_line(b"go\n").unwrap(), Go);
        assert!(matches!(Go::from_line(b"go"), Err(Error::Closed)));
        assert!(matches!(Go::from_line(b""), Err(Error::Closed)));
        assert!(matches!(Go::from_line(b"gogo\n"), Err(Error::NotGo(w)) if w == "gogo"));
    }

    #[test]
    fn spec_wire_format() {
        let line = r#"{"id":"12","run":34,"argv":["npm","run","dev"],"cwd":"/home/u/p","env":["PATH=/usr/bin","K=V"],"log_dir":"/state/logs/12","log_max_bytes":10485760,"log_files":5,"exit_file":"/state/exits/34"}"#;
        let spec = LaunchSpec::from_line(format!("{line}\n").as_bytes()).unwrap();
        assert_eq!(spec.run, 34);
        assert_eq!(spec.exit_file, Path::new("/state/exits/34"));
        assert_eq!(spec.to_line().unwrap(), format!("{line}\n"));
        assert!(matches!(
            LaunchSpec::from_line(line.as_bytes()),
            Err(Error::Closed)
        ));
    }

    #[test]
    fn spec_over_the_line_limit_is_not_sent() {
        // The shim stops reading at the limit and would exit without a
        // word; corrald must fail with the reason instead.
        let mut spec = LaunchSpec::from_line(&spec_line(1)).unwrap();
        spec.env.push("X".repeat(MAX_CONTROL_LINE));
        assert!(matches!(spec.to_line(), Err(Error::TooLong { .. })));
    }

    fn spec_line(run: u64) -> Vec<u8> {
        format!(
            "{{\"id\":\"1\",\"run\":{run},\"argv\":[],\"cwd\":\"/\",\"env\":[],\"log_dir\":\"/l\",\
             \"log_max_bytes\":1,\"log_files\":1,\"exit_file\":\"/e\"}}\n"
        )
        .into_bytes()
    }

    #[test]
    fn exit_record_from_status() {
        // Status words as the kernel encodes them (see wait(2)).
        let exited = ExitRecord::from_wait_status(1, 2, 3 << 8, 9);
        assert_eq!(
            (exited.code, exited.signal, exited.core_dumped),
            (3, 0, false)
        );
        let killed = ExitRecord::from_wait_status(1, 2, libc::SIGKILL, 9);
        assert_eq!((killed.code, killed.signal), (-1, libc::SIGKILL));
        let cored = ExitRecord::from_wait_status(1, 2, libc::SIGSEGV | 0x80, 9);
        assert!(cored.core_dumped);
    }

    #[test]
    fn exit_record_written_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = record_path(dir.path(), 34);
        let rec = ExitRecord {
            run: 34,
            pid: 1234,
            code: 3,
            signal: 0,
            core_dumped: false,
            exited_at_us: 1_764_000_000_000_000,
            oom_kills: None,
        };
        ExitRecord::reserve(&path).unwrap();
        assert!(dir.path().join("34.tmp").exists());
        rec.write_atomic(&path).unwrap();
        assert_eq!(ExitRecord::read(&path).unwrap(), rec);
        assert!(!dir.path().join("34.tmp").exists());
        let json = fs::read_to_string(&path).unwrap();
        assert_eq!(
            json,
            "{\"run\":34,\"pid\":1234,\"code\":3,\"signal\":0,\"core_dumped\":false,\"exited_at_us\":1764000000000000}\n"
        );
    }

    #[test]
    fn record_names() {
        assert_eq!(record_path(Path::new("/x"), 34), Path::new("/x/34"));
        assert_eq!(record_tmp_path(Path::new("/x/34")), Path::new("/x/34.tmp"));
        assert_eq!(record_run(OsStr::new("34")), Some(34));
        for other in ["34.tmp", "+34", "034", "", "x", "-1"] {
            assert_eq!(record_run(OsStr::new(other)), None, "{other:?}");
        }
    }

    fn any_spec() -> impl Strategy<Value = LaunchSpec> {
        (
            any::<String>(),
            any::<u64>(),
            prop::collection::vec(any::<String>(), 0..4),
            any::<String>(),
            prop::collection::vec(any::<String>(), 0..4),
            any::<String>(),
            any::<u64>(),
            any::<u32>(),
            any::<String>(),
        )
            .prop_map(
                |(id, run, argv, cwd, env, log_dir, log_max_bytes, log_files, exit_file)| {
                    LaunchSpec {
                        id,
                        run,
                        argv,
                        cwd: cwd.into(),
                        env,
                        log_dir: log_dir.into(),
                        log_max_bytes,
                        log_files,
                        exit_file: exit_file.into(),
                        user: (run % 2 == 0).then(|| Credentials {
                            uid: log_files,
                            gid: log_files / 2,
                            groups: vec![log_files, 7],
                        }),
                        journal: (run % 3 == 0).then(|| JournalFields {
                            name: format!("n{log_max_bytes}"),
                            workspace: format!("w\n{log_files}"),
                        }),
                        tty: run % 5 == 0,
                        notify: run % 7 == 0,
                    }
                },
            )
    }

    fn any_reply() -> impl Strategy<Value = LaunchReply> {
        prop_oneof![
            any::<u32>().prop_map(|pid| LaunchReply::Started { pid }),
            (any::<i32>(), any::<String>())
                .prop_map(|(errno, message)| LaunchReply::Failed { errno, message }),
        ]
    }

    fn any_record() -> impl Strategy<Value = ExitRecord> {
        (
            any::<u64>(),
            any::<u32>(),
            any::<i32>(),
            any::<i32>(),
            any::<bool>(),
            any::<u64>(),
        )
            .prop_map(
                |(run, pid, code, signal, core_dumped, exited_at_us)| ExitRecord {
                    run,
                    pid,
                    code,
                    signal,
                    core_dumped,
                    exited_at_us,
                    oom_kills: None,
                },
            )
    }

    proptest! {
        #[test]
        fn spec_round_trips(spec in any_spec()) {
            let line = spec.to_line().unwrap();
            // One line: the reader stops at the first `\n`.
            prop_assert_eq!(line.find('\n'), Some(line.len() - 1));
            prop_assert_eq!(LaunchSpec::from_line(line.as_bytes()).unwrap(), spec);
        }

        #[test]
        fn reply_round_trips(reply in any_reply()) {
            let line = reply.to_line();
            prop_assert_eq!(line.find('\n'), Some(line.len() - 1));
            // What the encoder sends is what the decoder gives back, up to
            // the line breaks it had to blank out.
            let expected = match reply {
                LaunchReply::Failed { errno, message } => LaunchReply::Failed {
                    errno,
                    message: message.replace(['\n', '\r'], " "),
                },
                started => started,
            };
            prop_assert_eq!(LaunchReply::from_line(line.as_bytes()).unwrap(), expected);
        }

        #[test]
        fn exit_record_round_trips(record in any_record()) {
            let bytes = record.to_bytes().unwrap();
            prop_assert_eq!(ExitRecord::from_bytes(&bytes).unwrap(), record);
        }

        #[test]
        fn record_name_round_trips(run in any::<u64>()) {
            let path = record_path(Path::new("/exits"), run);
            prop_assert_eq!(record_run(path.file_name().unwrap()), Some(run));
            let tmp = record_tmp_path(&path);
            prop_assert_eq!(record_run(tmp.file_name().unwrap()), None);
        }

        #[test]
        fn decoders_reject_garbage_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = LaunchSpec::from_line(&bytes);
            let _ = LaunchReply::from_line(&bytes);
            let _ = ExitRecord::from_bytes(&bytes);
            let _ = Go::from_line(&bytes);
            let _ = record_run(std::os::unix::ffi::OsStrExt::from_bytes(&bytes[..]));
            // Without its `\n`, no line decodes.
            let cut: Vec<u8> = bytes.iter().copied().filter(|&b| b != b'\n').collect();
            prop_assert!(LaunchSpec::from_line(&cut).is_err());
            prop_assert!(LaunchReply::from_line(&cut).is_err());
            prop_assert!(Go::from_line(&cut).is_err());
        }

        #[test]
        fn reply_decoder_rejects_near_misses(pid in "[0-9]{1,12}", junk in "[^0-9+]{1,3}") {
            // Text around a valid reply makes it nonsense, not a reply.
            for line in [
                format!("ok {pid}{junk}\n"),
                format!("ok {junk}{pid}\n"),
                format!("err {junk} message\n"),
            ] {
                prop_assert!(LaunchReply::from_line(line.as_bytes()).is_err(), "{:?}", line);
            }
        }
    }
}
