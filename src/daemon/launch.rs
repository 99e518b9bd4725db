//! Starting a command without ever letting it run outside its scope: spawn
//! `corral-shim` held on a control socket, let systemd move it into the
//! new scope, then release it to fork+exec the command. Also finds the
//! shim and main process of a scope we adopt after an agent restart.
//! Knows no systemd, no SQLite. Every message to and from the shim is
//! encoded and decoded by `crate::shim::protocol`; nothing here reads the
//! shim's output by hand.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    self, sockopt, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};
use nix::sys::time::{TimeVal, TimeValLike};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::daemon::pidfd::Pidfd;
use crate::shim::protocol::{self, ForkAnswer, Go, LaunchReply, LaunchSpec, FORK_REQUEST};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot run the shim {path}: {source}")]
    Shim {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("shim control channel: {0}")]
    Control(std::io::Error),
    /// The command itself could not be started; `message` has the OS error.
    #[error("{message}")]
    Spawn { errno: i32, message: String },
    #[error("shim protocol: {0}")]
    Protocol(#[from] protocol::Error),
    #[error("shim did not answer within {0:?}")]
    NoAnswer(Duration),
}

pub type Result<T> = std::result::Result<T, Error>;

/// How long `release` waits for the shim's reply. It answers right after
/// fork+exec; a long silence means it is wedged, and the caller must not
/// wait forever.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Name of the shim binary (also its `comm` in /proc, used to find it).
pub const SHIM_NAME: &str = "corral-shim";

/// Where the shim binary is: `$CORRAL_SHIM`, next to the running corrald,
/// or the packaged location.
pub fn find_shim() -> PathBuf {
    if let Some(p) = std::env::var_os("CORRAL_SHIM") {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            let p = dir.join(SHIM_NAME);
            if p.exists() {
                return p;
            }
        }
    }
    PathBuf::from("/usr/libexec/corral").join(SHIM_NAME)
}

/// A shim that has its spec and waits for `go`.
pub struct Held {
    pub shim_pid: u32,
    control: BufReader<UnixStream>,
    keep: Keep,
}

/// What corrald holds of a shim process: its `Child` when corrald spawned
/// it (dropping that leaves the reaping to tokio), or a pidfd when the
/// fork server forked it (the server's kernel-side reaping frees the PID
/// at exit; the pidfd never signals a process that took it over).
enum Keep {
    Child(tokio::process::Child),
    Forked(Pidfd),
}

/// A shim spawned and waiting on its control socket for a spec. Dropping
/// it closes the socket: the shim reads end-of-file and exits having run
/// nothing.
pub struct Spawned {
    pub shim_pid: u32,
    control: UnixStream,
    keep: Keep,
}

/// Shims spawned ahead of need, each blocked reading its control socket:
/// a launch takes one and writes its spec, so the shim's fork+exec (most
/// of a millisecond) is off the Start reply's path. One is spawned to
/// replace each one taken, in the background; an empty pool (a storm of
/// Starts, or `shim_pool = 0`) spawns on demand as before. Every shim,
/// pooled or not, is forked by the fork server (`crate::shim::server`, a
/// shim corrald starts once), which skips the exec and the dynamic
/// loading each shim would otherwise pay; when the server cannot be had,
/// corrald spawns the shim itself. A new shim is in the agent's cgroup
/// until systemd moves it into its scope; if the agent dies, its pooled
/// shims read end-of-file and exit, and so does the server.
pub struct ShimPool {
    shim: PathBuf,
    size: usize,
    idle: Mutex<Vec<Spawned>>,
    /// Spawns under way, counted so a burst of takes does not overfill.
    coming: AtomicUsize,
    /// The fork server new shims come from (`crate::shim::server`).
    server: Mutex<ServerSlot>,
}

/// The fork server, if one runs, and how often one failed in a row:
/// after [`SERVER_ATTEMPTS`] failures corrald stops starting it and
/// spawns every shim itself.
#[derive(Default)]
struct ServerSlot {
    server: Option<ForkServer>,
    failures: u32,
}

const SERVER_ATTEMPTS: u32 = 3;

/// How long a fork request may take. The server answers in well under a
/// millisecond; past this it is wedged, and is replaced.
const SERVER_TIMEOUT: Duration = Duration::from_secs(5);

impl ShimPool {
    /// A pool keeping `size` shims of `shim` ready; call `fill` inside the
    /// runtime to spawn them.
    pub fn new(shim: PathBuf, size: usize) -> Arc<ShimPool> {
        Arc::new(ShimPool {
            shim,
            size,
            idle: Mutex::new(Vec::with_capacity(size)),
            coming: AtomicUsize::new(0),
            server: Mutex::new(ServerSlot::default()),
        })
    }

    /// A new shim waiting for its spec: forked by the fork server, or
    /// spawned by corrald when the server cannot be had. Blocks for a
    /// fork request (well under a millisecond), or for a spawn when the
    /// server is started or cannot be used; the pool calls it on the
    /// blocking pool, `take` (a standby scope, one at a time) inline.
    fn spawn(&self) -> Result<Spawned> {
        let mut slot = self.server.lock().unwrap_or_else(|p| p.into_inner());
        if slot.failures < SERVER_ATTEMPTS {
            if slot.server.is_none() {
                match ForkServer::start(&self.shim) {
                    Ok(s) => slot.server = Some(s),
                    Err(e) => {
                        slot.failures += 1;
                        tracing::warn!("shim fork server not started: {e}");
                    }
                }
            }
            if let Some(server) = slot.server.as_mut() {
                match server.fork() {
                    Ok(s) => {
                        slot.failures = 0;
                        return Ok(s);
                    }
                    Err(e) => {
                        slot.failures += 1;
                        tracing::warn!("shim fork server failed ({e}); replaced on the next spawn");
                        if let Some(s) = slot.server.take() {
                            s.stop();
                        }
                    }
                }
            }
        }
        drop(slot);
        spawn_shim(&self.shim)
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Spawned>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tops the pool up in the background (the fork+exec runs on the
    /// blocking pool, not on a runtime thread).
    pub fn fill(self: &Arc<Self>) {
        let have = self.idle().len() + self.coming.load(Ordering::Acquire);
        for _ in have..self.size {
            self.coming.fetch_add(1, Ordering::AcqRel);
            let pool = self.clone();
            tokio::task::spawn_blocking(move || {
                match pool.spawn() {
                    Ok(s) => pool.idle().push(s),
                    Err(e) => tracing::warn!("shim pool: {e}"),
                }
                pool.coming.fetch_sub(1, Ordering::AcqRel);
            });
        }
    }

    /// A shim holding `spec`, not yet released: a pooled one if there is
    /// one alive, else a fresh one.
    pub async fn hold(self: &Arc<Self>, spec: &LaunchSpec) -> Result<Held> {
        let line = spec.to_line()?;
        if let Some(s) = self.take_pooled() {
            match give_spec(s, &line).await {
                Ok(held) => return Ok(held),
                // Killed while waiting (by someone else): spawn a new one.
                Err(e) => tracing::debug!("pooled shim gone: {e}"),
            }
        }
        // None pooled (a burst drained it): spawned on the blocking pool,
        // as the pool's own refills are. posix_spawn holds the calling
        // thread until the shim has exec'd, which on a runtime thread
        // stalled every other task there (replies, job signals).
        let pool = self.clone();
        let spawned = tokio::task::spawn_blocking(move || pool.spawn())
            .await
            .map_err(|e| Error::Shim {
                path: self.shim.clone(),
                source: std::io::Error::other(e),
            })??;
        give_spec(spawned, &line).await
    }

    /// A shim waiting for a spec, to be given one later: a standby scope
    /// (`Spawned::hold`).
    pub fn take(self: &Arc<Self>) -> Result<Spawned> {
        match self.take_pooled() {
            Some(s) => Ok(s),
            None => self.spawn(),
        }
    }

    fn take_pooled(self: &Arc<Self>) -> Option<Spawned> {
        let pooled = self.idle().pop();
        if pooled.is_some() {
            self.fill();
        }
        pooled
    }
}

impl Spawned {
    /// Gives the waiting shim its spec; it then waits for `go`.
    pub async fn hold(self, spec: &LaunchSpec) -> Result<Held> {
        give_spec(self, &spec.to_line()?).await
    }
}

/// Spawns a shim with its control socket as its stdin
/// (`protocol::CONTROL_FD`); it waits there. Nothing runs between fork and
/// exec, so std spawns it with `posix_spawn`: a vfork that shares corrald's
/// memory until the exec, where a fork copied corrald's page tables and
/// then took a copy-on-write fault for every page corrald wrote while the
/// child lived (a fifth of corrald's CPU when bringing up hundreds of
/// processes).
fn spawn_shim(shim: &Path) -> Result<Spawned> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(Error::Control)?;
    let mut cmd = tokio::process::Command::new(shim);
    cmd.stdin(std::process::Stdio::from(OwnedFd::from(theirs)))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .env_clear();
    let child = cmd.spawn().map_err(|source| Error::Shim {
        path: shim.to_path_buf(),
        source,
    })?;
    // Our copy of the shim's end must go, or the shim would never see EOF.
    drop(cmd);
    let shim_pid = child.id().unwrap_or(0);
    ours.set_nonblocking(true).map_err(Error::Control)?;
    let control = UnixStream::from_std(ours).map_err(Error::Control)?;
    Ok(Spawned {
        shim_pid,
        control,
        keep: Keep::Child(child),
    })
}

/// A running fork server: its request socket (`SOCK_SEQPACKET`, one
/// request and one answer per datagram) and its process.
struct ForkServer {
    sock: OwnedFd,
    child: std::process::Child,
}

impl ForkServer {
    fn start(shim: &Path) -> std::io::Result<ForkServer> {
        let (ours, theirs) = socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        socket::setsockopt(
            &ours,
            sockopt::ReceiveTimeout,
            &TimeVal::seconds(SERVER_TIMEOUT.as_secs() as i64),
        )?;
        // std spawns with posix_spawn here too (nothing runs between fork
        // and exec); the server leaves corrald's session itself.
        let child = std::process::Command::new(shim)
            .stdin(std::process::Stdio::from(theirs))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .env_clear()
            .spawn()?;
        Ok(ForkServer { sock: ours, child })
    }

    /// Asks for one shim: sends it the shim's end of a new control socket
    /// and reads back its PID (or a negative errno).
    fn fork(&mut self) -> std::io::Result<Spawned> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        let fds = [theirs.as_raw_fd()];
        socket::sendmsg::<()>(
            self.sock.as_raw_fd(),
            &[IoSlice::new(&FORK_REQUEST)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )?;
        // Ours must go, or the shim would never see EOF.
        drop(theirs);
        let mut answer = [0u8; ForkAnswer::LEN];
        let n = loop {
            match socket::recv(self.sock.as_raw_fd(), &mut answer, MsgFlags::empty()) {
                Err(Errno::EINTR) => continue,
                r => break r?,
            }
        };
        let pid = match ForkAnswer::from_bytes(&answer[..n]).map_err(std::io::Error::other)? {
            ForkAnswer::Forked { pid } => pid,
            ForkAnswer::Failed { errno } => return Err(std::io::Error::from_raw_os_error(errno)),
        };
        // The new shim is blocked reading the control socket we hold, so
        // it is alive and its PID is its own while we open the pidfd.
        let pidfd = Pidfd::open(pid)?;
        ours.set_nonblocking(true)?;
        Ok(Spawned {
            shim_pid: pid,
            control: UnixStream::from_std(ours)?,
            keep: Keep::Forked(pidfd),
        })
    }

    /// Ends a server that failed: SIGKILL, then reap it.
    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn give_spec(s: Spawned, line: &str) -> Result<Held> {
    let mut control = BufReader::new(s.control);
    control
        .get_mut()
        .write_all(line.as_bytes())
        .await
        .map_err(Error::Control)?;
    Ok(Held {
        shim_pid: s.shim_pid,
        control,
        keep: s.keep,
    })
}

impl Held {
    /// Lets the shim exec the command; returns the command's PID.
    pub async fn release(mut self) -> Result<u32> {
        self.control
            .get_mut()
            .write_all(Go.to_line().as_bytes())
            .await
            .map_err(Error::Control)?;
        let mut reply = Vec::new();
        let read =
            tokio::time::timeout(REPLY_TIMEOUT, self.control.read_until(b'\n', &mut reply)).await;
        match read {
            Ok(Ok(_)) => reply_result(&reply),
            Ok(Err(e)) => Err(Error::Control(e)),
            Err(_) => Err(Error::NoAnswer(REPLY_TIMEOUT)),
        }
    }

    /// Gives up: the shim sees EOF before `go` and exits without running
    /// anything; SIGKILL makes sure of it.
    pub fn abandon(self) {
        // Neither signals a process that took over the shim's PID: tokio
        // knows whether it reaped its child, a pidfd whether its process
        // lives.
        match self.keep {
            Keep::Child(mut child) => {
                let _ = child.start_kill();
            }
            Keep::Forked(pidfd) => {
                let _ = pidfd.kill();
            }
        }
    }
}

/// The command's PID from the shim's reply line, or why there is none.
fn reply_result(line: &[u8]) -> Result<u32> {
    match LaunchReply::from_line(line)? {
        LaunchReply::Started { pid } => Ok(pid),
        LaunchReply::Failed { errno, message } => Err(Error::Spawn { errno, message }),
    }
}

/// The cgroup of `pid` as systemd's ControlGroup names it: the unified
/// (`0::`) line, or `name=systemd` on a legacy-only machine.
pub fn read_control_group(pid: u32) -> std::io::Result<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let mut fallback = None;
    for line in text.lines() {
        if let Some(path) = line.strip_prefix("0::") {
            if path != "/" {
                return Ok(path.to_string());
            }
        }
        if let Some((_, path)) = line.split_once(":name=systemd:") {
            fallback = Some(path.to_string());
        }
    }
    fallback.ok_or_else(|| std::io::Error::other(format!("no cgroup line for pid {pid}")))
}

/// Finds, among `pids` (a scope's cgroup.procs), the shim and the command
/// it runs: the shim is the process named `corral-shim`, the command its
/// child. Used to re-adopt a live scope after an agent restart.
pub fn find_shim_and_main(pids: &[u32]) -> Option<(u32, u32)> {
    for &pid in pids {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim_end() == SHIM_NAME {
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            let main = children
                .split_whitespace()
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            return Some((pid, main));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_decoded() {
        assert_eq!(reply_result(b"ok 123\n").unwrap(), 123);
        match reply_result(b"err 2 No such file or directory (os error 2)\n") {
            Err(Error::Spawn { errno, message }) => {
                assert_eq!(errno, 2);
                assert_eq!(message, "No such file or directory (os error 2)");
            }
            other => panic!("{other:?}"),
        }
        // The shim exited before answering.
        assert!(matches!(
            reply_result(b""),
            Err(Error::Protocol(protocol::Error::Closed))
        ));
        assert!(matches!(reply_result(b"ok x\n"), Err(Error::Protocol(_))));
    }

    /// Regression: corrald's hand-written reply parser took `err x ...`
    /// (an errno that is no number) for a spawn failure with errno 0, and
    /// `ok 12\r` for PID 12, where the shim's own decoder rejects both.
    #[test]
    fn daemon_accepted_replies_the_shim_calls_nonsense() {
        for line in [&b"err x boom\n"[..], b"ok 12\r\n", b"ok 12 \n"] {
            assert!(
                matches!(reply_result(line), Err(Error::Protocol(_))),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    /// Regression: corrald trimmed the end of an `err` reply, so a message
    /// ending in blanks (or in a line break the shim blanked out) read
    /// differently on the two ends.
    #[test]
    fn err_reply_message_lost_its_trailing_blanks() {
        let sent = LaunchReply::Failed {
            errno: 8,
            message: "bad interpreter\n".into(),
        };
        match reply_result(sent.to_line().as_bytes()) {
            Err(Error::Spawn { errno: 8, message }) => assert_eq!(message, "bad interpreter "),
            other => panic!("{other:?}"),
        }
    }

    /// A shim path that is no fork server (`true` exits at once): every
    /// spawn still gets a shim, spawned by corrald itself, and after
    /// SERVER_ATTEMPTS failures in a row no server is started any more.
    /// The server's own behaviour is tested on the real binary in
    /// tests/shim.rs.
    #[tokio::test]
    async fn without_a_fork_server_shims_are_spawned_directly() {
        let pool = ShimPool::new(PathBuf::from("/bin/true"), 0);
        for _ in 0..SERVER_ATTEMPTS + 2 {
            let s = pool.spawn().unwrap();
            assert!(matches!(s.keep, Keep::Child(_)));
        }
        let slot = pool.server.lock().unwrap();
        assert_eq!(slot.failures, SERVER_ATTEMPTS);
        assert!(slot.server.is_none());
    }

    #[test]
    fn own_control_group_is_readable() {
        let cg = read_control_group(std::process::id()).unwrap();
        assert!(cg.starts_with('/'), "{cg}");
    }
}
