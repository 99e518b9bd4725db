//! The fork server: one `corral-shim` that corrald starts once, next to
//! itself, and asks for every other shim. Each request carries a new
//! control socket (`SCM_RIGHTS`); the server forks, the child puts that
//! socket on its stdin and goes on as an ordinary shim (`super::main`),
//! and the server answers with the child's PID.
//!
//! Why: a shim started by fork+exec pays the exec, the dynamic loader and
//! libc's CPU-feature probing (`cpuid`, which traps to the hypervisor in a
//! virtual machine) before it reads a byte — most of a millisecond of CPU
//! per process here, where a fork of this small, single-threaded process
//! costs a tenth of that, and its children share its pages. corrald falls
//! back to fork+exec whenever the server is missing or misbehaves.
//!
//! The server is told apart from a shim by its stdin: a `SOCK_SEQPACKET`
//! socket (one request per datagram), where a shim's control socket is a
//! stream. It stays single-threaded, so a fork copies one consistent
//! thread, and it lets the kernel reap its children (SIGCHLD ignored):
//! corrald watches a forked shim through a pidfd, not by waiting for it.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{self, sockopt, ControlMessageOwned, MsgFlags, SockType};

use super::protocol::ForkAnswer;
use super::CONTROL_FD;

/// Whether stdin is a fork server's request socket.
pub(super) fn is_server_socket() -> bool {
    // SAFETY: fd 0 is open for the life of the process (std or /dev/null).
    let stdin = unsafe { BorrowedFd::borrow_raw(CONTROL_FD) };
    socket::getsockopt(&stdin, sockopt::SockType).is_ok_and(|t| t == SockType::SeqPacket)
}

/// Serves fork requests until corrald closes its end. Returns
/// `Some(code)` in the server, to exit with; `None` in a new child, which
/// then runs as a shim with its control socket on stdin.
pub(super) fn serve() -> Option<i32> {
    // SAFETY: setsid/signal take no pointers and install no handler. The
    // server leaves corrald's session, so a Ctrl-C meant for a corrald
    // run in a terminal does not reach it (corrald closing the socket
    // ends it). Each child sets SIGCHLD back to SIG_DFL first thing
    // (`prepare_process`).
    unsafe {
        libc::setsid();
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
    }
    loop {
        let answer = match next_request() {
            Ok(Request::Shim(fd)) => {
                // SAFETY: this process has one thread, so the child gets a
                // consistent copy of everything (allocator included).
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    // SAFETY: dup2 onto fd 0 closes the request socket in
                    // the child, which must not hold it.
                    if unsafe { libc::dup2(fd.as_raw_fd(), CONTROL_FD) } < 0 {
                        // SAFETY: _exit(2) ends the child at once.
                        unsafe { libc::_exit(super::EXIT_NO_GO) };
                    }
                    return None;
                }
                match pid {
                    p if p > 0 => ForkAnswer::Forked { pid: p as u32 },
                    _ => ForkAnswer::Failed {
                        errno: Errno::last_raw(),
                    },
                }
            }
            // corrald's bug, not a reason to stop serving.
            Ok(Request::NoFd) => ForkAnswer::Failed {
                errno: libc::EINVAL,
            },
            Ok(Request::End) => return Some(0),
            Err(Errno::EINTR) => continue,
            Err(_) => return Some(1),
        };
        let sent = socket::send(CONTROL_FD, &answer.to_bytes(), MsgFlags::MSG_NOSIGNAL);
        if sent != Ok(ForkAnswer::LEN) {
            // corrald is gone; a child forked just now reads end-of-file
            // on its control socket and exits having run nothing.
            return Some(0);
        }
    }
}

enum Request {
    /// A new shim's control socket.
    Shim(OwnedFd),
    /// A request that carried no descriptor.
    NoFd,
    /// corrald closed its end.
    End,
}

/// One request: a datagram that should carry exactly one descriptor. Any
/// more are closed (those that did not fit the buffer, by the kernel).
fn next_request() -> nix::Result<Request> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let msg = socket::recvmsg::<()>(
        CONTROL_FD,
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    if msg.bytes == 0 {
        return Ok(Request::End);
    }
    let mut fds: Vec<OwnedFd> = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: the kernel just installed these fds for us; nothing
            // else owns them.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    Ok(fds.into_iter().next().map_or(Request::NoFd, Request::Shim))
}
