//! Starting a command without ever letting it run outside its scope: spawn
//! `corral-shim` held on a control socket, let systemd move it into the
//! new scope, then release it to fork+exec the command (the shim's
//! protocol is in `crate::shim`). Also finds the shim and main process of
//! a scope we adopt after an agent restart. Knows no systemd, no SQLite.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::shim::LaunchSpec;

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
    #[error("shim answered nonsense: {0:?}")]
    Protocol(String),
}

pub type Result<T> = std::result::Result<T, Error>;

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
    // Dropping the handle lets tokio reap the shim in the background.
    _child: tokio::process::Child,
}

/// Spawns a held shim for `spec`.
pub async fn hold(shim: &Path, spec: &LaunchSpec) -> Result<Held> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(Error::Control)?;
    let fd = theirs.as_raw_fd();
    let mut cmd = tokio::process::Command::new(shim);
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .env_clear();
    // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                let flags = libc::fcntl(3, libc::F_GETFD);
                if flags < 0 || libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| Error::Shim {
        path: shim.to_path_buf(),
        source,
    })?;
    drop(theirs);
    let shim_pid = child.id().unwrap_or(0);
    ours.set_nonblocking(true).map_err(Error::Control)?;
    let mut control = BufReader::new(UnixStream::from_std(ours).map_err(Error::Control)?);
    let mut line = serde_json::to_vec(spec).map_err(|e| Error::Protocol(e.to_string()))?;
    line.push(b'\n');
    control
        .get_mut()
        .write_all(&line)
        .await
        .map_err(Error::Control)?;
    Ok(Held {
        shim_pid,
        control,
        _child: child,
    })
}

impl Held {
    /// Lets the shim exec the command; returns the command's PID.
    pub async fn release(mut self) -> Result<u32> {
        self.control
            .get_mut()
            .write_all(b"go\n")
            .await
            .map_err(Error::Control)?;
        let mut reply = String::new();
        // The shim answers right after fork+exec; a long silence means it
        // is wedged, and the caller must not wait forever.
        let read =
            tokio::time::timeout(Duration::from_secs(30), self.control.read_line(&mut reply)).await;
        match read {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(Error::Control(e)),
            Err(_) => return Err(Error::Protocol("no answer within 30s".into())),
        }
        parse_reply(reply.trim_end())
    }

    /// Gives up: the shim sees EOF before `go` and exits without running
    /// anything; SIGKILL makes sure of it.
    pub fn abandon(self) {
        // SAFETY: plain kill(2) of our own child, which has not been reaped
        // (we still hold its handle), so the PID cannot have been reused.
        unsafe {
            libc::kill(self.shim_pid as i32, libc::SIGKILL);
        }
    }
}

fn parse_reply(reply: &str) -> Result<u32> {
    if let Some(pid) = reply.strip_prefix("ok ") {
        return pid.parse().map_err(|_| Error::Protocol(reply.to_string()));
    }
    if let Some(rest) = reply.strip_prefix("err ") {
        let (errno, message) = rest.split_once(' ').unwrap_or((rest, ""));
        return Err(Error::Spawn {
            errno: errno.parse().unwrap_or(0),
            message: message.to_string(),
        });
    }
    if reply.is_empty() {
        return Err(Error::Protocol("shim exited before answering".into()));
    }
    Err(Error::Protocol(reply.to_string()))
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
    fn replies_are_parsed() {
        assert_eq!(parse_reply("ok 123").unwrap(), 123);
        match parse_reply("err 2 No such file or directory (os error 2)") {
            Err(Error::Spawn { errno, message }) => {
                assert_eq!(errno, 2);
                assert_eq!(message, "No such file or directory (os error 2)");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse_reply(""), Err(Error::Protocol(_))));
        assert!(matches!(parse_reply("ok x"), Err(Error::Protocol(_))));
    }

    #[test]
    fn own_control_group_is_readable() {
        let cg = read_control_group(std::process::id()).unwrap();
        assert!(cg.starts_with('/'), "{cg}");
    }
}
