//! `corral-shim`: the per-process parent that owns one supervised child,
//! its exit status and its output, so both survive corrald dying (the model
//! is podman's conmon). Also the wire types corrald uses to talk to it.
//!
//! Protocol, on the control socket inherited as fd 3:
//! corrald → shim: one line of JSON (`LaunchSpec`), then `go\n` once the
//! shim sits in its scope. Shim → corrald: `ok <pid>\n` or
//! `err <errno> <message>\n`, then the socket is closed. The exit is
//! reported by atomically renaming a JSON `ExitRecord` into `exit_file`.
//!
//! The shim must stay tiny and single-purpose: std, libc and serde_json
//! only — no tokio, zbus or tracing — and it must never panic, since
//! nobody would see the message (its stderr is /dev/null).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::logfile::{LogWriter, MAX_LINE_BYTES};

/// The fd on which the shim finds its control socket.
pub const CONTROL_FD: RawFd = 3;

/// The line corrald sends to let the held child run.
pub const GO_LINE: &str = "go\n";

/// Shim exit code when the handshake did not reach `go`: nothing was run.
pub const EXIT_NO_GO: i32 = 1;

/// Shim exit code when the child could not be started (after `err`).
pub const EXIT_SPAWN_FAILED: i32 = 127;

/// Bound on the spec line, so a confused peer cannot make the shim grow.
const MAX_CONTROL_LINE: u64 = 1 << 20;

/// Pipe read size: big enough that a child writing 10 MB/s costs a few
/// hundred reads a second.
const READ_BUF: usize = 64 * 1024;

/// Signals the shim ignores (a scope stop sends SIGTERM to every process in
/// it, and the shim must outlive its child to record the exit) and resets
/// for the child, because ignored dispositions survive exec.
const SHIM_IGNORED: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGPIPE];

/// After the child exits, how many zero-timeout poll rounds may drain
/// output it left in the pipes before `s exited` is logged; bounded because
/// a grandchild can keep writing forever.
const EXIT_DRAIN_ROUNDS: u32 = 64;

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
}

impl LaunchSpec {
    /// The spec as corrald writes it: JSON on one line, `\n`-terminated.
    pub fn to_line(&self) -> serde_json::Result<String> {
        let mut line = serde_json::to_string(self)?;
        line.push('\n');
        Ok(line)
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
    /// Parses a reply line (with or without its `\n`).
    pub fn parse(line: &str) -> Option<Self> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        if let Some(pid) = line.strip_prefix("ok ") {
            return pid.parse().ok().map(|pid| LaunchReply::Started { pid });
        }
        let rest = line.strip_prefix("err ")?;
        let (errno, message) = rest.split_once(' ').unwrap_or((rest, ""));
        Some(LaunchReply::Failed {
            errno: errno.parse().ok()?,
            message: message.to_owned(),
        })
    }

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
        }
    }

    fn tmp_path(path: &Path) -> PathBuf {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        PathBuf::from(tmp)
    }

    /// Creates `<path>.tmp` filled with blanks, so the record written at
    /// exit overwrites space already allocated (a full disk cannot lose it).
    pub fn reserve(path: &Path) -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o640)
            .open(Self::tmp_path(path))?;
        file.write_all(&[b' '; RESERVED_RECORD_BYTES])?;
        file.sync_all()
    }

    /// Writes `<path>.tmp` (over its reserved space if any) and renames it
    /// to `path`, so a reader woken by IN_MOVED_TO always sees a whole
    /// record.
    pub fn write_atomic(&self, path: &Path) -> io::Result<()> {
        let tmp = Self::tmp_path(path);
        let mut json = serde_json::to_vec(self).map_err(io::Error::other)?;
        json.push(b'\n');
        // No truncate on open: shrinking afterwards never needs new space.
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o640)
            .open(&tmp)?;
        file.write_all(&json)?;
        file.set_len(json.len() as u64)?;
        drop(file);
        // No fsync: the rename is what wakes corrald, and it is on the
        // path of exit-detection latency (an fsync costs milliseconds, up
        // to tens on a busy disk). The record must survive a crash of
        // corrald, which the page cache does; after a power loss the
        // process is gone anyway and is recorded `lost`.
        fs::rename(&tmp, path)?;
        Ok(())
    }

    /// Reads a record written by `write_atomic`.
    pub fn read(path: &Path) -> io::Result<Self> {
        let bytes = fs::read(path)?;
        serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// Why the handshake ended without `go`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("control fd {CONTROL_FD} is not open")]
    NoControl(#[source] io::Error),
    #[error("reading the control socket")]
    Control(#[from] io::Error),
    #[error("control socket closed (or line too long) before a full line")]
    Closed,
    #[error("expected \"go\", got {0:?}")]
    NotGo(String),
}

/// Runs the shim; returns its exit code: 0 after the child exited and its
/// output reached EOF, `EXIT_NO_GO`, or `EXIT_SPAWN_FAILED`.
pub fn main() -> i32 {
    prepare_process();
    let control = match take_control() {
        Ok(control) => control,
        Err(_) => return EXIT_NO_GO,
    };
    let (spec, go) = {
        let mut reader = BufReader::new(&control);
        let spec = read_control_line(&mut reader);
        let go = match &spec {
            Ok(_) => read_control_line(&mut reader),
            Err(_) => Err(Error::Closed),
        };
        (spec, go)
    };
    // Nothing may run without `go`: corrald died or gave up, and a child
    // started now would run outside its scope.
    match go {
        Ok(line) if line == GO_LINE.trim_end() => {}
        _ => return EXIT_NO_GO,
    }
    let spec = spec.map(|line| serde_json::from_str::<LaunchSpec>(&line));
    match spec {
        Ok(Ok(spec)) => run(spec, control),
        // A bad spec is still answered after `go`, so corrald always gets
        // ok or err at the same point of the protocol.
        Ok(Err(e)) => {
            reply(
                &control,
                &LaunchReply::Failed {
                    errno: libc::EINVAL,
                    message: format!("invalid launch spec: {e}"),
                },
            );
            EXIT_SPAWN_FAILED
        }
        Err(_) => EXIT_NO_GO,
    }
}

/// Leaves corrald's session, sets the signal dispositions and drops stray
/// inherited fds, before anything else is opened.
fn prepare_process() {
    // SAFETY: setsid/signal take no pointers; the shim has no other threads
    // yet and installs no handlers, only SIG_IGN/SIG_DFL.
    unsafe {
        // Fails only if already a group leader, which is harmless.
        libc::setsid();
        for sig in SHIM_IGNORED {
            libc::signal(sig, libc::SIG_IGN);
        }
        // An ignored SIGCHLD (inheritable from the spawner) makes the kernel
        // reap children itself, and waitpid would never see the exit.
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
    }
    close_fds_above_control();
}

/// Closes every fd above the control socket so the child inherits none of
/// corrald's (the shim opens everything else with CLOEXEC itself).
fn close_fds_above_control() {
    let first = (CONTROL_FD + 1) as libc::c_uint;
    // SAFETY: close_range(2) closes fds; none above fd 3 is owned by Rust
    // code yet. Linux ≥ 5.9; older kernels take the /proc path.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, 0) };
    if rc == 0 {
        return;
    }
    let Ok(dir) = fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > CONTROL_FD)
        .collect();
    // The directory's own fd is in the list but closed by now; EBADF from
    // closing it again is harmless.
    for fd in fds {
        // SAFETY: see above; these fds are not owned by any Rust object.
        unsafe { libc::close(fd) };
    }
}

fn take_control() -> Result<UnixStream, Error> {
    // SAFETY: fcntl(F_GETFD/F_SETFD) only reads or sets fd flags.
    let flags = unsafe { libc::fcntl(CONTROL_FD, libc::F_GETFD) };
    if flags < 0 {
        return Err(Error::NoControl(io::Error::last_os_error()));
    }
    // The child must not inherit the socket: corrald sees EOF only when
    // every holder has closed it.
    // SAFETY: as above.
    unsafe { libc::fcntl(CONTROL_FD, libc::F_SETFD, flags | libc::FD_CLOEXEC) };
    // SAFETY: fd 3 is open (checked) and nothing else in the process owns it.
    Ok(unsafe { UnixStream::from_raw_fd(CONTROL_FD) })
}

/// Reads one `\n`-terminated line, returned without the `\n`.
fn read_control_line(reader: &mut BufReader<&UnixStream>) -> Result<String, Error> {
    let mut line = Vec::new();
    reader
        .by_ref()
        .take(MAX_CONTROL_LINE)
        .read_until(b'\n', &mut line)?;
    if line.pop() != Some(b'\n') {
        return Err(Error::Closed);
    }
    String::from_utf8(line)
        .map_err(|e| Error::NotGo(String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

fn reply(control: &UnixStream, reply: &LaunchReply) {
    // A dead corrald cannot be told; the child (if any) is supervised anyway.
    let mut control = control;
    let _ = control.write_all(reply.to_line().as_bytes());
}

/// Everything after `go`: start the child, answer, log, record the exit.
fn run(spec: LaunchSpec, control: UnixStream) -> i32 {
    let mut log = Log::new(&spec);
    // Claim the disk space of the exit record now: if the state disk fills
    // up while the command runs, its exit can still be recorded.
    if let Err(e) = ExitRecord::reserve(&spec.exit_file) {
        log.push(
            b's',
            now_us(),
            format!("exit record space not reserved: {e}").as_bytes(),
        );
    }
    let mut child = match spawn_child(&spec) {
        Ok(child) => child,
        Err(e) => {
            let failed = LaunchReply::Failed {
                errno: e.raw_os_error().unwrap_or(libc::EINVAL),
                message: e.to_string(),
            };
            // Also in the log, where `corralctl logs` users look first.
            log.push(b's', now_us(), format!("start failed: {e}").as_bytes());
            log.flush();
            // No run, no record: give the reserved space back.
            let _ = fs::remove_file(ExitRecord::tmp_path(&spec.exit_file));
            reply(&control, &failed);
            return EXIT_SPAWN_FAILED;
        }
    };
    let pid = child.id();
    let stdout = child.stdout.take().map(|p| File::from(OwnedFd::from(p)));
    let stderr = child.stderr.take().map(|p| File::from(OwnedFd::from(p)));
    // Dropping `Child` neither waits nor kills; the exit is reaped by pid.
    drop(child);
    reply(&control, &LaunchReply::Started { pid });
    drop(control);
    log.push(b's', now_us(), format!("started pid {pid}").as_bytes());
    log.flush();

    let waiter = Waiter::start(pid, spec.run, spec.exit_file.clone());
    pump(
        [Source::new(stdout, b'o'), Source::new(stderr, b'e')],
        &mut log,
        waiter,
    );
    0
}

fn spawn_child(spec: &LaunchSpec) -> io::Result<Child> {
    let Some((program, args)) = spec.argv.split_first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty argv"));
    };
    let mut cmd = Command::new(program);
    cmd.args(args).env_clear();
    for entry in &spec.env {
        if let Some((key, value)) = entry.split_once('=').filter(|(k, _)| !k.is_empty()) {
            cmd.env(key, value);
        }
    }
    cmd.current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so corrald can signal the whole job.
        .process_group(0);
    // SAFETY: the hook only calls async-signal-safe functions (signal,
    // sigemptyset, sigprocmask) and allocates nothing.
    unsafe { cmd.pre_exec(reset_signals_for_exec) };
    cmd.spawn()
}

/// Runs in the child between fork and exec: undoes the shim's ignored
/// signals and any blocked mask, both of which exec would keep.
fn reset_signals_for_exec() -> io::Result<()> {
    // SAFETY: async-signal-safe calls on a local sigset_t.
    unsafe {
        for sig in SHIM_IGNORED {
            if libc::signal(sig, libc::SIG_DFL) == libc::SIG_ERR {
                return Err(io::Error::last_os_error());
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The log as the shim sees it: best effort. If the directory cannot be
/// written, lines are dropped and opening is retried at most once a second,
/// but supervision goes on — the exit record matters more.
struct Log {
    dir: PathBuf,
    max_bytes: u64,
    files: u32,
    writer: Option<LogWriter>,
    last_attempt: Option<Instant>,
}

impl Log {
    fn new(spec: &LaunchSpec) -> Self {
        let mut log = Log {
            dir: spec.log_dir.clone(),
            max_bytes: spec.log_max_bytes,
            files: spec.log_files,
            writer: None,
            last_attempt: None,
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

    fn push(&mut self, stream: u8, ts_us: u64, bytes: &[u8]) {
        if let Some(writer) = self.writer() {
            // A failed write loses this line only; the next one retries.
            let _ = writer.push_line(stream, ts_us, bytes);
        }
    }

    fn flush(&mut self) {
        if let Some(writer) = self.writer.as_mut() {
            let _ = writer.flush();
        }
    }
}

/// One of the child's output pipes and its unfinished last line.
struct Source {
    file: Option<File>,
    stream: u8,
    pending: Vec<u8>,
}

impl Source {
    fn new(file: Option<File>, stream: u8) -> Self {
        Source {
            file,
            stream,
            pending: Vec::new(),
        }
    }

    /// One read; returns whether it produced bytes.
    fn read_once(&mut self, buf: &mut [u8], log: &mut Log) -> bool {
        let Some(file) = self.file.as_mut() else {
            return false;
        };
        match file.read(buf) {
            Ok(0) => {
                self.close(log);
                false
            }
            Ok(n) => {
                self.feed(&buf[..n], now_us(), log);
                true
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => false,
            Err(_) => {
                self.close(log);
                false
            }
        }
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
            log.push(self.stream, ts_us, &self.pending);
            self.pending.clear();
            data = &data[i + 1..];
        }
        while let Some(i) = data.iter().position(|&b| b == b'\n') {
            log.push(self.stream, ts_us, &data[..i]);
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
            log.push(self.stream, now_us(), &self.pending);
            self.pending.clear();
        }
        self.file = None;
    }
}

/// The exit as recorded, handed to the log loop.
struct ExitNote {
    record: ExitRecord,
    write_error: Option<io::Error>,
}

/// Waits for the child apart from the output loop, so the exit record is
/// written the moment the child dies even while grandchildren keep its
/// pipes open.
enum Waiter {
    /// A thread blocks in waitpid; `wake` becomes readable when it is done.
    Thread {
        notes: mpsc::Receiver<ExitNote>,
        wake: UnixStream,
        pid: u32,
        run: u64,
        exit_file: PathBuf,
    },
    /// Fallback if no thread or socketpair could be made: the loop polls
    /// waitpid(WNOHANG) every `POLL_INTERVAL_MS`.
    Poll {
        pid: u32,
        run: u64,
        exit_file: PathBuf,
    },
    Done,
}

const POLL_INTERVAL_MS: libc::c_int = 100;

impl Waiter {
    fn start(pid: u32, run: u64, exit_file: PathBuf) -> Self {
        let Ok((wake, mut wake_tx)) = UnixStream::pair() else {
            return Waiter::Poll {
                pid,
                run,
                exit_file,
            };
        };
        let (tx, notes) = mpsc::channel();
        let thread_exit_file = exit_file.clone();
        let spawned = std::thread::Builder::new()
            .name("wait".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let status = wait_blocking(pid);
                let _ = tx.send(record_exit(pid, run, &thread_exit_file, status));
                let _ = wake_tx.write_all(b"x");
            });
        match spawned {
            Ok(_) => Waiter::Thread {
                notes,
                wake,
                pid,
                run,
                exit_file,
            },
            Err(_) => Waiter::Poll {
                pid,
                run,
                exit_file,
            },
        }
    }

    /// The fd to poll for the exit, if any.
    fn fd(&self) -> Option<RawFd> {
        match self {
            Waiter::Thread { wake, .. } => Some(wake.as_raw_fd()),
            _ => None,
        }
    }

    fn poll_timeout(&self) -> libc::c_int {
        match self {
            Waiter::Poll { .. } => POLL_INTERVAL_MS,
            _ => -1,
        }
    }

    /// Checks for the exit; `woken` says the wake fd polled readable.
    fn check(&mut self, woken: bool) -> Option<ExitNote> {
        match self {
            Waiter::Thread {
                notes,
                wake,
                pid,
                run,
                exit_file,
            } => {
                if !woken {
                    return None;
                }
                match notes.try_recv() {
                    Ok(note) => {
                        *self = Waiter::Done;
                        Some(note)
                    }
                    Err(mpsc::TryRecvError::Empty) => {
                        let mut byte = [0u8; 16];
                        let _ = wake.read(&mut byte);
                        None
                    }
                    // The thread is gone without a note; it cannot panic,
                    // but if it did, keep waiting by polling.
                    Err(mpsc::TryRecvError::Disconnected) => {
                        *self = Waiter::Poll {
                            pid: *pid,
                            run: *run,
                            exit_file: std::mem::take(exit_file),
                        };
                        None
                    }
                }
            }
            Waiter::Poll {
                pid,
                run,
                exit_file,
            } => {
                let status = try_wait(*pid)?;
                let note = record_exit(*pid, *run, exit_file, status);
                *self = Waiter::Done;
                Some(note)
            }
            Waiter::Done => None,
        }
    }
}

/// The output loop: logs both pipes in the order their data was read until
/// both reach EOF and the exit has been logged.
fn pump(mut sources: [Source; 2], log: &mut Log, mut waiter: Waiter) {
    let mut buf = vec![0u8; READ_BUF];
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
                got_data |= sources[i].read_once(&mut buf, log);
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

fn log_exit(log: &mut Log, note: &ExitNote) {
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

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// waitpid status of `pid`, or `None` if it cannot be reaped (ECHILD).
fn wait_blocking(pid: u32) -> Option<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes only to `status`.
        let rc = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
        if rc > 0 {
            return Some(status);
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return None;
        }
    }
}

/// Like `wait_blocking` but does not block; `None` while the child runs.
/// An unreapable child counts as exited with an unknown status.
fn try_wait(pid: u32) -> Option<Option<libc::c_int>> {
    let mut status = 0;
    // SAFETY: waitpid writes only to `status`.
    let rc = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
    match rc {
        0 => None,
        rc if rc > 0 => Some(Some(status)),
        _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => None,
        _ => Some(None),
    }
}

/// Writes the exit record. An unknown status (the child could not be
/// reaped, which resetting SIGCHLD should rule out) is recorded as code -1,
/// signal 0 so corrald still learns that the process is gone.
fn record_exit(pid: u32, run: u64, exit_file: &Path, status: Option<libc::c_int>) -> ExitNote {
    let at = now_us();
    let record = match status {
        Some(status) => ExitRecord::from_wait_status(run, pid, status, at),
        None => ExitRecord {
            run,
            pid,
            code: -1,
            signal: 0,
            core_dumped: false,
            exited_at_us: at,
        },
    };
    ExitNote {
        record,
        write_error: record.write_atomic(exit_file).err(),
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_round_trip() {
        let ok = LaunchReply::Started { pid: 1234 };
        assert_eq!(ok.to_line(), "ok 1234\n");
        assert_eq!(LaunchReply::parse("ok 1234\n"), Some(ok));
        let err = LaunchReply::Failed {
            errno: 2,
            message: "No such file or directory (os error 2)".into(),
        };
        assert_eq!(
            err.to_line(),
            "err 2 No such file or directory (os error 2)\n"
        );
        assert_eq!(LaunchReply::parse(&err.to_line()), Some(err));
        let multi = LaunchReply::Failed {
            errno: 22,
            message: "a\nb".into(),
        };
        assert_eq!(multi.to_line(), "err 22 a b\n");
        for bad in ["", "ok", "ok x", "err x y", "hello"] {
            assert_eq!(LaunchReply::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn spec_wire_format_matches_protocol() {
        let line = r#"{"id":"12","run":34,"argv":["npm","run","dev"],"cwd":"/home/u/p","env":["PATH=/usr/bin","K=V"],"log_dir":"/state/logs/12","log_max_bytes":10485760,"log_files":5,"exit_file":"/state/exits/34"}"#;
        let spec: LaunchSpec = serde_json::from_str(line).unwrap();
        assert_eq!(spec.run, 34);
        assert_eq!(spec.exit_file, Path::new("/state/exits/34"));
        assert_eq!(spec.to_line().unwrap(), format!("{line}\n"));
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
        let path = dir.path().join("34");
        let rec = ExitRecord {
            run: 34,
            pid: 1234,
            code: 3,
            signal: 0,
            core_dumped: false,
            exited_at_us: 1_764_000_000_000_000,
        };
        rec.write_atomic(&path).unwrap();
        assert_eq!(ExitRecord::read(&path).unwrap(), rec);
        assert!(!dir.path().join("34.tmp").exists());
        let json = fs::read_to_string(&path).unwrap();
        assert_eq!(
            json,
            "{\"run\":34,\"pid\":1234,\"code\":3,\"signal\":0,\"core_dumped\":false,\"exited_at_us\":1764000000000000}\n"
        );
    }

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
