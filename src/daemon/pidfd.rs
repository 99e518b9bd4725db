//! A pidfd of a supervised command's main process, held for its run, so
//! that `Kill` reaches that process (and its process group) and never a
//! process that got its PID after it died. Opened by PID and then checked
//! to live in the run's cgroup: a pidfd pins one process, so a check made
//! after opening cannot be fooled by PID reuse.
//!
//! Raw syscalls through libc: rustix's `pidfd_send_signal` takes no flags
//! (`PIDFD_SIGNAL_PROCESS_GROUP` is one) and no signal number above the
//! named ones without an `unsafe` constructor.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::daemon::launch;

/// `PIDFD_SIGNAL_PROCESS_GROUP` (Linux 6.9): signal the process group
/// whose id is the pidfd's process, as `kill(-pid)` does, but resolved
/// through the pidfd. Older kernels answer EINVAL.
const PIDFD_SIGNAL_PROCESS_GROUP: libc::c_uint = 1 << 2;

#[derive(Debug)]
pub struct Pidfd {
    fd: OwnedFd,
    pid: u32,
}

impl Pidfd {
    /// Opens a pidfd for `pid`.
    pub fn open(pid: u32) -> io::Result<Pidfd> {
        let Ok(raw) = libc::pid_t::try_from(pid) else {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        };
        if raw <= 1 {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        // SAFETY: pidfd_open(2) takes a PID and flags, no pointers.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just gave us this fd; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
        Ok(Pidfd { fd, pid })
    }

    /// Opens a pidfd for `pid` and checks, through it, that the process
    /// is in `control_group` (systemd's name of the run's cgroup): the
    /// PID may have been reused between the moment it was learnt and the
    /// open, but not once the pidfd exists.
    pub fn open_in(pid: u32, control_group: &str) -> io::Result<Pidfd> {
        let pidfd = Pidfd::open(pid)?;
        let cg = launch::read_control_group(pid)?;
        if cg != control_group {
            return Err(io::Error::other(format!(
                "pid {pid} is in {cg}, not in {control_group}"
            )));
        }
        // The /proc read above is of whoever has the PID now; the process
        // of the pidfd is that one only if it is still alive.
        pidfd.send(0, 0)?;
        Ok(pidfd)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A second fd of the same pidfd, to wait on (it polls readable once
    /// the process has exited) while this one stays for signalling.
    pub fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }

    /// SIGKILL to the process alone; ESRCH once it has exited.
    pub fn kill(&self) -> io::Result<()> {
        self.send(libc::SIGKILL, 0)
    }

    /// pidfd_send_signal(2); signal 0 checks that the process exists.
    fn send(&self, signal: i32, flags: libc::c_uint) -> io::Result<()> {
        // SAFETY: a valid pidfd, a signal number, a null siginfo (the
        // kernel fills in a kill(2)-like one) and flags.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                flags,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Signals the command and the process group it leads (the shim makes
    /// it a group leader), as Ctrl-C in a terminal would. ESRCH once the
    /// process has exited: nothing is ever signalled by a bare PID that
    /// might belong to someone else by now.
    ///
    /// On Linux ≥ 6.9 the group is signalled through the pidfd. Before,
    /// the group gets `kill(-pid)` only after the pidfd showed the leader
    /// alive: while it lives, its PID (the group's id) cannot be reused.
    /// A command that left its group (setsid) gets the signal alone.
    pub fn signal_job(&self, signal: i32) -> io::Result<()> {
        match self.send(signal, PIDFD_SIGNAL_PROCESS_GROUP) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            // Its group is empty: the leader moved to another one.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return self.send(signal, 0),
            Err(e) => return Err(e),
        }
        self.send(0, 0)?;
        // SAFETY: kill(2) has no memory-safety preconditions.
        if unsafe { libc::kill(-(self.pid as libc::pid_t), signal) } == 0 {
            return Ok(());
        }
        self.send(signal, 0)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::Command;

    use super::*;

    /// Regression: Kill signalled `main_pid` with kill(2), and a PID is
    /// reused once its process is reaped. Through the pidfd, a reaped
    /// process is ESRCH, whoever holds its number now.
    #[test]
    fn a_pidfd_of_a_reaped_child_refuses_to_signal() {
        let mut child = Command::new("true").process_group(0).spawn().unwrap();
        let pidfd = Pidfd::open(child.id()).unwrap();
        assert!(child.wait().unwrap().success());
        let err = pidfd.signal_job(libc::SIGTERM).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH), "{err}");
        assert_eq!(
            pidfd.send(libc::SIGKILL, 0).unwrap_err().raw_os_error(),
            Some(libc::ESRCH)
        );
    }

    /// The whole job gets the signal: the leader and the children it did
    /// not move to another group.
    #[test]
    fn a_live_leader_and_its_group_are_signalled() {
        let mut child = Command::new("sh")
            .args(["-c", "sleep 30 & echo $! ; wait"])
            .stdout(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let sleeper: u32 = line.trim().parse().unwrap();
        let sleeper_fd = Pidfd::open(sleeper).unwrap();
        Pidfd::open(child.id())
            .unwrap()
            .signal_job(libc::SIGTERM)
            .unwrap();
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGTERM));
        // The sleeper got it too. It is not ours to reap, so look for its
        // exit: a pidfd polls readable once its process has died.
        let mut pfd = libc::pollfd {
            fd: sleeper_fd.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, 5000) };
        assert_eq!(ready, 1, "the group member {sleeper} outlived the signal");
    }

    #[test]
    fn open_in_checks_the_cgroup() {
        let me = std::process::id();
        let cg = launch::read_control_group(me).unwrap();
        assert_eq!(Pidfd::open_in(me, &cg).unwrap().pid(), me);
        assert!(Pidfd::open_in(me, "/elsewhere.scope").is_err());
    }
}
