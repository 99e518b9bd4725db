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

use std::io;
use std::os::fd::RawFd;

use super::CONTROL_FD;

/// Whether stdin is a fork server's request socket.
pub(super) fn is_server_socket() -> bool {
    let mut ty: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `ty`.
    let rc = unsafe {
        libc::getsockopt(
            CONTROL_FD,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut ty as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    rc == 0 && ty == libc::SOCK_SEQPACKET
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
        let fd = match recv_fd(CONTROL_FD) {
            Ok(Some(fd)) => fd,
            Ok(None) => return Some(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Some(1),
        };
        // SAFETY: this process has one thread, so the child gets a
        // consistent copy of everything (allocator included).
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: dup2 onto fd 0 closes the request socket in the
            // child, which must not hold it; `fd` is ours to close.
            unsafe {
                if libc::dup2(fd, CONTROL_FD) < 0 {
                    libc::_exit(super::EXIT_NO_GO);
                }
                libc::close(fd);
            }
            return None;
        }
        let answer: i32 = if pid < 0 {
            -io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EAGAIN)
        } else {
            pid
        };
        // SAFETY: `fd` came from recvmsg and nothing else owns it.
        unsafe { libc::close(fd) };
        let bytes = answer.to_ne_bytes();
        // SAFETY: send(2) reads `bytes.len()` bytes from a live buffer.
        let sent = unsafe {
            libc::send(
                CONTROL_FD,
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if sent != bytes.len() as isize {
            // corrald is gone; a child forked just now reads end-of-file
            // on its control socket and exits having run nothing.
            return Some(0);
        }
    }
}

/// One request: a datagram carrying exactly one descriptor. `None` at
/// end-of-file. A request without a descriptor is corrald's bug, not a
/// reason to stop serving: it gets -EINVAL.
fn recv_fd(sock: RawFd) -> io::Result<Option<RawFd>> {
    loop {
        let mut byte = [0u8; 1];
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: byte.len(),
        };
        // Room for one fd, aligned for cmsghdr.
        let mut cmsg = [0u64; 8];
        // SAFETY: a zeroed msghdr is valid; the pointers set below outlive
        // the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cmsg) as _;
        // SAFETY: recvmsg writes into the buffers `msg` points to.
        let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Ok(None);
        }
        let mut got = None;
        // SAFETY: the CMSG_* macros walk the control buffer recvmsg filled
        // and stay within msg_controllen.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(c).cast::<RawFd>();
                    let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                        / std::mem::size_of::<RawFd>();
                    for i in 0..count {
                        let fd = data.add(i).read_unaligned();
                        match got {
                            None => got = Some(fd),
                            // More than one: keep the first, close the rest.
                            Some(_) => {
                                libc::close(fd);
                            }
                        }
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        match got {
            Some(fd) => return Ok(Some(fd)),
            None => {
                let bytes = (-libc::EINVAL).to_ne_bytes();
                // SAFETY: as in `serve`.
                unsafe { libc::send(sock, bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL) };
            }
        }
    }
}
