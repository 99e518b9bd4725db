//! `corral-shim`: the per-process parent that owns one supervised child,
//! its exit status and its output, so both survive corrald dying (the model
//! is podman's conmon). [`protocol`] is how corrald talks to it; its types
//! are re-exported here.
//!
//! Parts: this file is the shim's main line (handshake, then run);
//! `child` starts, waits for and records the child; `output` logs its
//! pipes; `tty` runs it on a pseudo-terminal and serves that to attached
//! clients ([`terminal`] is their protocol); `journal` copies the lines
//! to the journal when asked; `notify` serves sd_notify(3) when asked;
//! `server` is the fork server corrald starts the shims from.
//!
//! The shim must stay tiny and single-purpose: std, libc, serde_json,
//! memmap2 and `crate::logfile` only — no tokio, zbus or tracing. One shim
//! lives next to every supervised process for as long as it runs, so its
//! memory is paid per process: a single thread with a blocking poll loop
//! over its pipes and the child's pidfd, and a read buffer whose pages are
//! resident only once output arrives, measures ~170 KiB PSS (BENCHMARK.md,
//! 1000 running), where an async runtime would add its threads, their
//! stacks and a reactor, all to watch two pipes.
//! `shim_links_no_async_runtime` below enforces the boundary. It
//! must never panic either, since nobody would see the message (its
//! stderr is /dev/null).

mod child;
mod journal;
mod notify;
mod oom;
mod output;
pub mod protocol;
mod server;
pub mod terminal;
mod tty;

use crate::clock::now_us;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

pub use protocol::{Credentials, ExitRecord, JournalFields, LaunchReply, LaunchSpec, CONTROL_FD};

use child::Waiter;
use output::{pump, Log, Source};
use protocol::{Go, MAX_CONTROL_LINE};

/// Shim exit code when the handshake did not reach `go`: nothing was run.
pub const EXIT_NO_GO: i32 = 1;

/// Shim exit code when the child could not be started (after `err`).
pub const EXIT_SPAWN_FAILED: i32 = 127;

/// Signals the shim ignores (a scope stop sends SIGTERM to every process in
/// it, and the shim must outlive its child to record the exit). The child
/// gets every signal reset (`child`), because ignored dispositions survive
/// exec.
const SHIM_IGNORED: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGPIPE];

/// Runs the shim; returns its exit code: 0 after the child exited and its
/// output reached EOF, `EXIT_NO_GO`, or `EXIT_SPAWN_FAILED`.
pub fn main() -> i32 {
    // The fork server returns here only in a child it forked for a shim.
    if server::is_server_socket() {
        if let Some(code) = server::serve() {
            return code;
        }
    }
    prepare_process();
    let Ok(control) = take_control() else {
        return EXIT_NO_GO;
    };
    let mut reader = BufReader::new(&control);
    let spec = match read_control_line(&mut reader).map(|line| LaunchSpec::from_line(&line)) {
        Err(_) | Ok(Err(protocol::Error::Closed)) => return EXIT_NO_GO,
        Ok(spec) => spec,
    };
    // Nothing may run without `go`: corrald died or gave up, and a child
    // started now would run outside its scope.
    let go = read_control_line(&mut reader).map(|line| Go::from_line(&line));
    if !matches!(go, Ok(Ok(Go))) {
        return EXIT_NO_GO;
    }
    drop(reader);
    match spec {
        Ok(spec) => run(spec, control),
        // A bad spec is still answered after `go`, so corrald always gets
        // ok or err at the same point of the protocol.
        Err(e) => {
            reply(
                &control,
                &LaunchReply::Failed {
                    errno: libc::EINVAL,
                    message: e.to_string(),
                },
            );
            EXIT_SPAWN_FAILED
        }
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
    close_inherited_fds();
}

/// The lowest fd that is neither stdin, stdout nor stderr.
const FIRST_FREE_FD: RawFd = 3;

/// Closes every fd above stderr so the child inherits none of corrald's
/// (the shim opens everything else with CLOEXEC itself).
fn close_inherited_fds() {
    // SAFETY: close_range(2) closes fds; none above fd 2 is owned by Rust
    // code yet. Linux ≥ 5.9; older kernels take the /proc path.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            FIRST_FREE_FD as libc::c_uint,
            libc::c_uint::MAX,
            0,
        )
    };
    if rc == 0 {
        return;
    }
    let Ok(dir) = fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd >= FIRST_FREE_FD)
        .collect();
    // The directory's own fd is in the list but closed by now; EBADF from
    // closing it again is harmless.
    for fd in fds {
        // SAFETY: see above; these fds are not owned by any Rust object.
        unsafe { libc::close(fd) };
    }
}

/// Takes the control socket off stdin: moved to a CLOEXEC fd, because the
/// child must not inherit it (corrald sees EOF only when every holder has
/// closed it), with `/dev/null` put on fd 0 in its place. Anything but a
/// socket on stdin (a shim run by hand) is no control socket.
fn take_control() -> io::Result<UnixStream> {
    // SAFETY: fstat fills the zeroed struct it is given.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(CONTROL_FD, &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) only makes a new fd.
    let fd = unsafe { libc::fcntl(CONTROL_FD, libc::F_DUPFD_CLOEXEC, FIRST_FREE_FD) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just made and nothing else owns it.
    let control = unsafe { UnixStream::from_raw_fd(fd) };
    let null = File::open("/dev/null")?;
    // SAFETY: dup2 onto fd 0, which no Rust object owns.
    if unsafe { libc::dup2(null.as_raw_fd(), CONTROL_FD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(control)
}

/// Reads one line with its `\n`, or what came before EOF or the length
/// limit (which the protocol's decoders reject).
fn read_control_line(reader: &mut BufReader<&UnixStream>) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    reader
        .by_ref()
        .take(MAX_CONTROL_LINE as u64)
        .read_until(b'\n', &mut line)?;
    Ok(line)
}

fn reply(control: &UnixStream, reply: &LaunchReply) {
    // A dead corrald cannot be told; the child (if any) is supervised anyway.
    let mut control = control;
    let _ = control.write_all(reply.to_line().as_bytes());
}

/// Everything after `go`: start the child, answer, log, record the exit.
fn run(mut spec: LaunchSpec, control: UnixStream) -> i32 {
    let mut log = Log::new(&spec);
    let pty = if spec.tty {
        let owned = |pty: tty::Pty| match &spec.user {
            Some(user) => pty.give_to(user.uid).map(|()| pty),
            None => Ok(pty),
        };
        match tty::Pty::open().and_then(owned) {
            Ok(pty) => Some(pty),
            Err(e) => return spawn_failed(e, &mut log, &control),
        }
    } else {
        None
    };
    // Bound before the reply: once corrald says running, attaching works.
    let listener = match pty
        .is_some()
        .then(|| tty::listen(&terminal::socket_path(&spec.log_dir, spec.run)))
    {
        Some(Err(e)) => {
            let note = format!("terminal socket not served (attach unavailable): {e}");
            log.push(b's', now_us(), note.as_bytes());
            None
        }
        Some(Ok(listener)) => Some(listener),
        None => None,
    };
    let notify = if spec.notify {
        match notify::Listener::open() {
            Ok(listener) => {
                // Ours replaces one the command would otherwise inherit
                // from whoever started corrald.
                spec.env.retain(|e| !e.starts_with("NOTIFY_SOCKET="));
                spec.env
                    .push(format!("NOTIFY_SOCKET={}", listener.address()));
                Some(listener)
            }
            Err(e) => {
                let note = format!("notify socket not served (never ready): {e}");
                log.push(b's', now_us(), note.as_bytes());
                None
            }
        }
    } else {
        None
    };
    let mut child = match child::spawn_child(&spec, pty.as_ref().map(|p| &p.slave)) {
        Ok(child) => child,
        Err(e) => return spawn_failed(e, &mut log, &control),
    };
    let pid = child.id();
    let stdout = child.stdout.take().map(|p| File::from(OwnedFd::from(p)));
    let stderr = child.stderr.take().map(|p| File::from(OwnedFd::from(p)));
    // Dropping `Child` neither waits nor kills; the exit is reaped by pid.
    drop(child);
    reply(&control, &LaunchReply::Started { pid });
    drop(control);
    // Claim the disk space of the exit record now: if the state disk fills
    // up while the command runs, its exit can still be recorded. After the
    // reply, not before the spawn: its fsync (≈ 0.3 ms on ext4 here) is
    // then off the Start path; the waiter, which writes over it, starts
    // only below.
    if let Err(e) = ExitRecord::reserve(&spec.exit_file) {
        log.push(
            b's',
            now_us(),
            format!("exit record space not reserved: {e}").as_bytes(),
        );
    }
    log.push(b's', now_us(), format!("started pid {pid}").as_bytes());
    log.flush();

    if let Some(listener) = notify {
        // SAFETY: getuid cannot fail.
        let uid = spec
            .user
            .as_ref()
            .map_or(unsafe { libc::getuid() }, |u| u.uid);
        if let Err(e) = listener.serve(spec.run, spec.exit_file.clone(), uid) {
            let note = format!("notify socket not read (never ready): {e}");
            log.push(b's', now_us(), note.as_bytes());
        }
    }
    let waiter = Waiter::start(pid, spec.run, spec.exit_file.clone());
    match pty {
        Some(tty::Pty { master, slave }) => {
            // Only the command's processes may hold the terminal, or its
            // master would never read EOF.
            drop(slave);
            tty::serve(master, listener, &mut log, waiter);
        }
        None => pump(
            [Source::new(stdout, b'o'), Source::new(stderr, b'e')],
            &mut log,
            waiter,
        ),
    }
    0
}

/// The command could not be started: say why, to corrald and in the log.
fn spawn_failed(e: io::Error, log: &mut Log, control: &UnixStream) -> i32 {
    let failed = LaunchReply::Failed {
        errno: e.raw_os_error().unwrap_or(libc::EINVAL),
        message: e.to_string(),
    };
    // Also in the log, where `corralctl logs` users look first.
    log.push(b's', now_us(), format!("start failed: {e}").as_bytes());
    log.flush();
    reply(control, &failed);
    EXIT_SPAWN_FAILED
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Names the shim's code must not mention. Built with `concat!` so this
    /// file's own text does not contain them.
    const FORBIDDEN: [&str; 3] = [
        concat!("tok", "io"),
        concat!("zb", "us"),
        concat!("trac", "ing"),
    ];

    /// A path into this crate, spelled so that this file does not match.
    const CRATE_PATH: &str = concat!("crate", "::");

    /// Modules of this crate the shim may use: its own and the log format.
    /// Anything else (`daemon`, `api`, ...) links the async stack.
    const ALLOWED_CRATE_PATHS: [&str; 3] = ["crate::shim", "crate::logfile", "crate::clock"];

    /// What in `source` pulls in an async runtime or the bus; comments are
    /// skipped, so the module docs may say why.
    fn async_uses(source: &str) -> Vec<String> {
        let mut found = Vec::new();
        for line in source.lines() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for name in FORBIDDEN {
                if code.contains(name) {
                    found.push(format!("{name}: {code}"));
                }
            }
            for (i, _) in code.match_indices(CRATE_PATH) {
                let path = &code[i..];
                let local = code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_');
                if !local && !ALLOWED_CRATE_PATHS.iter().any(|p| path.starts_with(p)) {
                    found.push(format!("crate path: {code}"));
                }
            }
        }
        found
    }

    #[test]
    fn shim_links_no_async_runtime() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![root.join("logfile.rs"), root.join("clock.rs")];
        for entry in std::fs::read_dir(root.join("shim")).unwrap() {
            files.push(entry.unwrap().path());
        }
        files.retain(|p| p.extension().is_some_and(|e| e == "rs"));
        assert!(files.len() >= 4, "{files:?}");
        for file in files {
            let source = std::fs::read_to_string(&file).unwrap();
            assert_eq!(async_uses(&source), Vec::<String>::new(), "{file:?}");
        }
    }

    #[test]
    fn async_uses_catches_runtime_and_daemon_paths() {
        let bad = [
            concat!("use tok", "io::net::UnixStream;"),
            concat!(
                "    let rt = tok",
                "io::runtime::Builder::new_current_thread();"
            ),
            concat!("use zb", "us::Connection;"),
            concat!("use crate", "::daemon::launch;"),
            concat!("    let e = crate", "::api::Error::NotFound;"),
        ];
        for line in bad {
            assert_eq!(async_uses(line).len(), 1, "{line:?}");
        }
        let fine = concat!(
            "//! no tok",
            "io here\n",
            "use crate::logfile::LogWriter;\n",
            "use super::protocol::LaunchSpec;\n"
        );
        assert_eq!(async_uses(fine), Vec::<String>::new());
    }
}
