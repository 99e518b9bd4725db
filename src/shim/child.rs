//! The shim's child: starting it with a clean process state, waiting for
//! it apart from the output loop, and writing its exit record the moment
//! it dies. Owns nothing of the log; see `output` for that.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use super::now_us;
use super::protocol::{ExitRecord, LaunchSpec};

/// `TERM` of a PTY command whose spec's environment sets none.
const DEFAULT_TERM: &str = "xterm-256color";

/// Starts the spec's command with exactly its environment and cwd, in its
/// own process group, its output on pipes — or, given a terminal's
/// `slave` side, in its own session with that terminal as its stdin,
/// stdout, stderr and controlling terminal.
pub(super) fn spawn_child(spec: &LaunchSpec, slave: Option<&OwnedFd>) -> io::Result<Child> {
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
    let session = slave.is_some();
    match slave {
        None => {
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                // Its own process group, so corrald can signal the whole job.
                .process_group(0);
        }
        Some(slave) => {
            if !spec.env.iter().any(|e| e.starts_with("TERM=")) {
                cmd.env("TERM", DEFAULT_TERM);
            }
            // No process_group here: setsid in the hook makes the child a
            // session and group leader (pgid = pid, as corrald expects),
            // and fails for a child that already leads a group.
            cmd.stdin(slave.try_clone()?)
                .stdout(slave.try_clone()?)
                .stderr(slave.try_clone()?);
        }
    }
    match &spec.user {
        None => {
            cmd.current_dir(&spec.cwd);
            // SAFETY: the hook only makes async-signal-safe calls
            // (rt_sigaction, sigemptyset, sigprocmask, umask, getrlimit,
            // setrlimit, setsid, ioctl) and allocates nothing.
            unsafe {
                cmd.pre_exec(move || {
                    reset_process_state_for_exec()?;
                    take_terminal(session)
                })
            };
        }
        Some(user) => {
            // Everything the hook needs is made here, before the fork.
            let drop = PrivilegeDrop {
                uid: user.uid,
                gid: user.gid,
                groups: user.groups.iter().map(|&g| g as libc::gid_t).collect(),
                cwd: std::ffi::CString::new(spec.cwd.as_os_str().as_encoded_bytes())
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "cwd has a NUL"))?,
            };
            // SAFETY: as above, plus setgroups, setresgid, setresuid,
            // getresuid, getresgid and chdir on data prepared before the
            // fork; nothing allocates.
            unsafe {
                cmd.pre_exec(move || {
                    reset_process_state_for_exec()?;
                    // Before the drop: the terminal belongs to the shim's
                    // user, and TIOCSCTTY needs no privilege either way.
                    take_terminal(session)?;
                    drop.apply()
                })
            };
        }
    }
    cmd.spawn()
}

/// In the child of a PTY command: a new session, whose controlling
/// terminal becomes the one on fd 0 (so job control, `^C` and SIGHUP on
/// hang-up work as in any terminal). Nothing to do for pipes.
fn take_terminal(session: bool) -> io::Result<()> {
    if !session {
        return Ok(());
    }
    // SAFETY: setsid and ioctl(TIOCSCTTY) on fd 0 take no pointers.
    unsafe {
        if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// System mode: the ids the command runs as, applied in the child after
/// the fork and before its working directory is entered (so the kernel
/// checks that path as the user, never as root) and before exec.
struct PrivilegeDrop {
    uid: u32,
    gid: u32,
    groups: Vec<libc::gid_t>,
    cwd: std::ffi::CString,
}

impl PrivilegeDrop {
    /// setgroups → setresgid → setresuid (groups first: they cannot be
    /// changed once root is gone), verified, then chdir.
    fn apply(&self) -> io::Result<()> {
        let check = |rc: libc::c_int| {
            if rc == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        };
        // SAFETY: plain syscalls on values owned by self.
        unsafe {
            check(libc::setgroups(self.groups.len(), self.groups.as_ptr()))?;
            check(libc::setresgid(self.gid, self.gid, self.gid))?;
            check(libc::setresuid(self.uid, self.uid, self.uid))?;
            let (mut r, mut e, mut s) = (0, 0, 0);
            check(libc::getresuid(&mut r, &mut e, &mut s))?;
            let uids_ok = [r, e, s] == [self.uid; 3];
            check(libc::getresgid(&mut r, &mut e, &mut s))?;
            let gids_ok = [r, e, s] == [self.gid; 3];
            // Dropped for good: root could not be regained.
            let regained = self.uid != 0 && libc::setuid(0) == 0;
            if !uids_ok || !gids_ok || regained {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            check(libc::chdir(self.cwd.as_ptr()))?;
        }
        Ok(())
    }
}

/// The soft limit of open files a command starts with, as systemd gives
/// every service (`DefaultLimitNOFILE=1024:524288`): above `FD_SETSIZE`,
/// select(2) breaks. The hard limit is kept, so a command that needs more
/// raises its own soft limit, as systemd recommends.
const NOFILE_SOFT: libc::rlim_t = 1024;

/// Runs in the child between fork and exec, so that what the command
/// inherits is defined here and not by whoever started corrald:
/// - every signal back to SIG_DFL: exec resets handled signals but keeps
///   ignored ones (the shim's own, and any corrald inherited);
/// - an empty signal mask, which exec keeps too;
/// - umask 022 (corrald and the shims run with 077 for the state files);
/// - RLIMIT_NOFILE soft back to [`NOFILE_SOFT`] if higher (corrald raises
///   its own for its pidfds). Other limits are those the service manager
///   gave corrald, as to any service.
fn reset_process_state_for_exec() -> io::Result<()> {
    // SAFETY: async-signal-safe calls on local values.
    unsafe {
        // The raw syscall, because glibc's signal() refuses its two
        // internal real-time signals (32, 33), which can be inherited
        // ignored all the same. An all-zero kernel sigaction is SIG_DFL,
        // no flags, empty mask on every layout; 8 is the kernel's sigset
        // size. SIGKILL and SIGSTOP cannot be changed.
        let dfl = [0u64; 4];
        for sig in 1..=libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    dfl.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    8usize,
                );
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
        libc::umask(0o022);
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur > NOFILE_SOFT {
            lim.rlim_cur = NOFILE_SOFT;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// The exit as recorded, handed to the log loop.
pub(super) struct ExitNote {
    pub(super) record: ExitRecord,
    pub(super) write_error: Option<io::Error>,
}

/// Waits for the child apart from the output loop, so the exit record is
/// written the moment the child dies even while grandchildren keep its
/// pipes open.
pub(super) enum Waiter {
    /// The child's pidfd, polled by the output loop beside its pipes: it
    /// turns readable when the child exits, and it costs no thread — a
    /// second thread is ~50 KiB of each shim's private memory (its stack
    /// and its malloc arena), which every supervised process pays.
    Pidfd {
        fd: OwnedFd,
        pid: u32,
        run: u64,
        exit_file: PathBuf,
    },
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

/// How often the `Poll` fallback looks for the exit, and how long the
/// output loop backs off when poll(2) itself fails.
pub(super) const POLL_INTERVAL_MS: libc::c_int = 100;

impl Waiter {
    pub(super) fn start(pid: u32, run: u64, exit_file: PathBuf) -> Self {
        // SAFETY: pidfd_open(2) takes a PID and flags, no pointers.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if let Ok(fd) = RawFd::try_from(fd) {
            if fd >= 0 {
                // SAFETY: the kernel just returned this fd; nothing else owns it.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                return Waiter::Pidfd {
                    fd,
                    pid,
                    run,
                    exit_file,
                };
            }
        }
        // Kernels before 5.3 have no pidfd_open: a thread waits instead.
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
    pub(super) fn fd(&self) -> Option<RawFd> {
        match self {
            Waiter::Pidfd { fd, .. } => Some(fd.as_raw_fd()),
            Waiter::Thread { wake, .. } => Some(wake.as_raw_fd()),
            _ => None,
        }
    }

    pub(super) fn poll_timeout(&self) -> libc::c_int {
        match self {
            Waiter::Poll { .. } => POLL_INTERVAL_MS,
            _ => -1,
        }
    }

    /// Checks for the exit; `woken` says the wake fd polled readable.
    pub(super) fn check(&mut self, woken: bool) -> Option<ExitNote> {
        match self {
            Waiter::Pidfd { .. } if !woken => None,
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
            Waiter::Pidfd {
                pid,
                run,
                exit_file,
                ..
            }
            | Waiter::Poll {
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
    let mut record = match status {
        Some(status) => ExitRecord::from_wait_status(run, pid, status, at),
        None => ExitRecord {
            run,
            pid,
            code: -1,
            signal: 0,
            core_dumped: false,
            exited_at_us: at,
            oom_kills: None,
        },
    };
    if record.signal == libc::SIGKILL {
        record.oom_kills = super::oom::own_count();
    }
    ExitNote {
        record,
        write_error: record.write_atomic(exit_file).err(),
    }
}
