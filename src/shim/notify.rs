//! The sd_notify(3) protocol for a command whose spec asks for it
//! (`notify`): the shim binds a datagram socket, names it to the command
//! in `NOTIFY_SOCKET`, and a thread of its own reads what the command
//! says and writes it down as a [`NotifyRecord`] for corrald. Only what
//! corral shows is understood: `READY=1`, `RELOADING=1`, `STOPPING=1`
//! and `STATUS=`; everything else (`MAINPID=`, `WATCHDOG=1`, `FDSTORE=1`,
//! …) is ignored.
//!
//! The socket is abstract and autobound (`@` and five hex digits the
//! kernel picks), not a path: an abstract name needs no directory the
//! command's user can reach (system mode runs it as another user, and
//! the state directory is root's) and cannot be squatted beforehand.
//! Anyone in the network namespace may send to it, so a sender is
//! believed only if its credentials (`SCM_CREDENTIALS`) name a process in
//! the shim's own cgroup — the scope — as systemd checks a service's; a
//! sender already gone by the time it is checked (`systemd-notify`
//! without a barrier) is believed if it ran as the command's user.
//!
//! Bounded: a datagram over [`MAX_DATAGRAM`] bytes is dropped whole, fds
//! passed along are closed unread, and at most [`MAX_PER_SECOND`]
//! datagrams a second are read (the rest wait in the socket's queue, and
//! senders block or get `EAGAIN`).

use std::fs;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{self, sockopt, ControlMessageOwned, MsgFlags, UnixAddr};

use super::protocol::{notify_path, NotifyPhase, NotifyRecord, MAX_STATUS_BYTES};

/// Largest datagram understood; sd_notify messages are a few lines.
pub(super) const MAX_DATAGRAM: usize = 4096;

/// Most datagrams read in one second.
pub(super) const MAX_PER_SECOND: u32 = 64;

/// The most fds one `SCM_RIGHTS` message can carry (the kernel's
/// `SCM_MAX_FD`): room for all of them, so none is left open unseen
/// behind a truncated control buffer.
const SCM_MAX_FD: usize = 253;

/// The bound socket, before its thread runs.
pub(super) struct Listener {
    socket: UnixDatagram,
    name: String,
}

impl Listener {
    /// Binds an autobound abstract socket that receives its senders'
    /// credentials.
    pub(super) fn open() -> io::Result<Listener> {
        // CLOEXEC (std's default): the command gets the name, not the fd.
        let socket = UnixDatagram::unbound()?;
        // An address of the family alone asks the kernel for a unique
        // abstract name (unix(7), "Autobind feature").
        socket::bind(socket.as_raw_fd(), &UnixAddr::new_unnamed()).map_err(io::Error::from)?;
        socket::setsockopt(&socket, sockopt::PassCred, &true).map_err(io::Error::from)?;
        let addr: UnixAddr = socket::getsockname(socket.as_raw_fd()).map_err(io::Error::from)?;
        let Some(name) = addr.as_abstract() else {
            return Err(io::Error::other("the socket was not autobound"));
        };
        let name = format!("@{}", String::from_utf8_lossy(name));
        Ok(Listener { socket, name })
    }

    /// `NOTIFY_SOCKET`'s value: `@` and the abstract name.
    pub(super) fn address(&self) -> &str {
        &self.name
    }

    /// Reads on its own thread for as long as the shim lives, writing
    /// each change next to `exit_file` (`protocol::notify_path`). `uid`
    /// is the command's user.
    pub(super) fn serve(self, run: u64, exit_file: PathBuf, uid: u32) -> io::Result<()> {
        let judge = Judge {
            scope: read_cgroups(&fs::read_to_string("/proc/self/cgroup").unwrap_or_default()),
            uid,
        };
        std::thread::Builder::new()
            .name("notify".into())
            .stack_size(128 * 1024)
            .spawn(move || self.receive(run, &exit_file, &judge))
            .map(drop)
    }

    fn receive(self, run: u64, exit_file: &std::path::Path, judge: &Judge) {
        let path = notify_path(exit_file);
        let mut record = NotifyRecord::new(run);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut limit = RateLimit::new();
        loop {
            limit.wait();
            let datagram = match self.recv(&mut buf) {
                Ok(Some(d)) => d,
                Ok(None) => continue,
                // Not a socket problem that waiting mends: stop listening;
                // the command runs on, not ready.
                Err(_) => return,
            };
            if !judge.believes(datagram.sender) || !apply(&mut record, &buf[..datagram.len]) {
                continue;
            }
            // After the exit corrald deletes the run's records; a late
            // word from a leftover process must not bring this one back.
            if exit_file.exists() {
                return;
            }
            let _ = record.write_atomic(&path);
        }
    }

    /// One datagram: its length and sender, `None` if it is to be
    /// dropped unread (too long, interrupted).
    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<Received>> {
        let mut iov = [IoSliceMut::new(buf)];
        let mut cmsg = nix::cmsg_space!(libc::ucred, [RawFd; SCM_MAX_FD]);
        // MSG_TRUNC: the datagram's real length, so a long one is seen.
        let flags = MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_TRUNC;
        let msg = match socket::recvmsg::<()>(
            self.socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            flags,
        ) {
            Ok(msg) => msg,
            Err(Errno::EINTR | Errno::EAGAIN | Errno::ENOBUFS) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut sender = None;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                match c {
                    ControlMessageOwned::ScmCredentials(creds) => {
                        sender = Some((creds.pid(), creds.uid()));
                    }
                    ControlMessageOwned::ScmRights(fds) => {
                        for fd in fds {
                            // SAFETY: the kernel just installed these fds
                            // for us; nothing else owns them.
                            drop(unsafe { OwnedFd::from_raw_fd(fd) });
                        }
                    }
                    _ => {}
                }
            }
        }
        if msg.flags.contains(MsgFlags::MSG_TRUNC) || msg.bytes > MAX_DATAGRAM {
            return Ok(None);
        }
        Ok(Some(Received {
            len: msg.bytes,
            sender,
        }))
    }
}

struct Received {
    len: usize,
    /// pid and uid from `SCM_CREDENTIALS`.
    sender: Option<(libc::pid_t, libc::uid_t)>,
}

/// Who is believed: processes of the scope, or the command's user.
struct Judge {
    /// The shim's cgroups that systemd tracks units by; empty if unknown.
    scope: Vec<(String, String)>,
    uid: u32,
}

impl Judge {
    fn believes(&self, sender: Option<(libc::pid_t, libc::uid_t)>) -> bool {
        let Some((pid, uid)) = sender else {
            return false;
        };
        if self.scope.is_empty() {
            return uid == self.uid;
        }
        match fs::read_to_string(format!("/proc/{pid}/cgroup")) {
            Ok(text) => within(&self.scope, &read_cgroups(&text)),
            // Gone already (or in a pid namespace we cannot see, pid 0).
            Err(_) => uid == self.uid,
        }
    }
}

/// The `/proc/<pid>/cgroup` lines that place a process in a unit: the
/// unified hierarchy (`0::`) and the named `name=systemd` one (legacy
/// and hybrid hosts), as (controllers, path). A process at the root
/// (`/`) is in no unit, so the root gives nothing to compare.
fn read_cgroups(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let tracked = controllers.is_empty() || controllers == "name=systemd";
            (tracked && path != "/").then(|| (controllers.to_owned(), path.to_owned()))
        })
        .collect()
}

/// Whether `theirs` is in every cgroup of `scope`, or below it (a
/// delegated scope may have sub-groups).
fn within(scope: &[(String, String)], theirs: &[(String, String)]) -> bool {
    scope.iter().all(|(controllers, path)| {
        theirs.iter().any(|(c, p)| {
            c == controllers
                && p.strip_prefix(path.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    })
}

/// Applies one datagram's `VAR=value` lines (sd_notify(3)) to `record`;
/// says whether it changed. `MAINPID=` is ignored: the run's main
/// process is the shim's child, whose exit ends the run, and no other
/// process can take its place.
pub(super) fn apply(record: &mut NotifyRecord, datagram: &[u8]) -> bool {
    let before = record.clone();
    for line in datagram.split(|&b| b == b'\n') {
        match line {
            b"READY=1" => record.phase = NotifyPhase::Ready,
            b"RELOADING=1" => record.phase = NotifyPhase::Reloading,
            b"STOPPING=1" => record.phase = NotifyPhase::Stopping,
            _ => {
                if let Some(text) = line.strip_prefix(b"STATUS=") {
                    record.status = sanitize(text);
                }
            }
        }
    }
    *record != before
}

/// A status as text a terminal can show: valid UTF-8 (invalid bytes
/// replaced), no control characters, at most [`MAX_STATUS_BYTES`].
fn sanitize(text: &[u8]) -> String {
    let mut out = String::new();
    for c in String::from_utf8_lossy(text).chars() {
        if c.is_control() {
            continue;
        }
        if out.len() + c.len_utf8() > MAX_STATUS_BYTES {
            break;
        }
        out.push(c);
    }
    out
}

/// At most [`MAX_PER_SECOND`] reads in any one-second window.
struct RateLimit {
    window: Instant,
    count: u32,
}

impl RateLimit {
    fn new() -> Self {
        RateLimit {
            window: Instant::now(),
            count: 0,
        }
    }

    /// Sleeps out the rest of the window once it is used up.
    fn wait(&mut self) {
        let elapsed = self.window.elapsed();
        if elapsed >= Duration::from_secs(1) {
            self.window = Instant::now();
            self.count = 0;
        } else if self.count >= MAX_PER_SECOND {
            std::thread::sleep(Duration::from_secs(1) - elapsed);
            self.window = Instant::now();
            self.count = 0;
        }
        self.count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    fn applied(datagrams: &[&[u8]]) -> NotifyRecord {
        let mut record = NotifyRecord::new(7);
        for d in datagrams {
            apply(&mut record, d);
        }
        record
    }

    #[test]
    fn datagrams_set_phase_and_status() {
        let r = applied(&[b"STATUS=warming up"]);
        assert_eq!(
            (r.phase, r.status.as_str()),
            (NotifyPhase::Waiting, "warming up")
        );
        let r = applied(&[b"STATUS=warming", b"READY=1\nSTATUS=serving\n"]);
        assert_eq!(
            (r.phase, r.status.as_str()),
            (NotifyPhase::Ready, "serving")
        );
        let r = applied(&[b"READY=1", b"RELOADING=1\nMONOTONIC_USEC=5"]);
        assert_eq!(r.phase, NotifyPhase::Reloading);
        let r = applied(&[b"READY=1", b"RELOADING=1", b"READY=1"]);
        assert_eq!(r.phase, NotifyPhase::Ready);
        let r = applied(&[b"READY=1", b"STOPPING=1"]);
        assert_eq!(r.phase, NotifyPhase::Stopping);
        // An empty STATUS= clears it.
        let r = applied(&[b"STATUS=x", b"STATUS="]);
        assert_eq!(r.status, "");
    }

    #[test]
    fn other_assignments_and_near_misses_change_nothing() {
        let mut r = NotifyRecord::new(7);
        for d in [
            &b"MAINPID=1"[..],
            b"WATCHDOG=1",
            b"READY=0",
            b"READY=1 ",
            b" READY=1",
            b"ready=1",
            b"FDSTORE=1\nFDNAME=x",
            b"",
            b"\xff\xfe",
        ] {
            assert!(!apply(&mut r, d), "{d:?}");
        }
        assert_eq!(r, NotifyRecord::new(7));
        assert!(apply(&mut r, b"READY=1"));
        assert!(!apply(&mut r, b"READY=1"), "the same again is no change");
    }

    #[test]
    fn status_is_sanitized_and_bounded() {
        let r = applied(&[b"STATUS=a\x1b[31mred\x07\tb\xffc"]);
        assert_eq!(r.status, "a[31mredb\u{fffd}c");
        let long = [b"STATUS=".as_slice(), &"é".repeat(600).into_bytes()].concat();
        let r = applied(&[&long]);
        assert_eq!(r.status.len(), MAX_STATUS_BYTES);
        assert!(r.status.chars().all(|c| c == 'é'));
    }

    #[test]
    fn cgroup_lines_and_membership() {
        let hybrid =
            "12:cpu,cpuacct:/x\n1:name=systemd:/user.slice/a.scope\n0::/user.slice/a.scope\n";
        let scope = read_cgroups(hybrid);
        assert_eq!(scope.len(), 2);
        let child =
            read_cgroups("1:name=systemd:/user.slice/a.scope/sub\n0::/user.slice/a.scope\n");
        assert!(within(&scope, &child));
        let neighbour =
            read_cgroups("1:name=systemd:/user.slice/a.scope2\n0::/user.slice/a.scope2\n");
        assert!(!within(&scope, &neighbour));
        let half = read_cgroups("0::/user.slice/a.scope\n");
        assert!(!within(&scope, &half));
        assert!(read_cgroups("0::/\n").is_empty());
    }

    #[test]
    fn a_sender_of_this_cgroup_is_believed_and_its_datagram_read() {
        let listener = Listener::open().unwrap();
        let name = listener.address().strip_prefix('@').unwrap().to_owned();
        let addr = <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(name.as_bytes()).unwrap();
        let client = UnixDatagram::unbound().unwrap();
        client.send_to_addr(b"READY=1\nSTATUS=up", &addr).unwrap();
        // One over the size limit, then a fd along with a message.
        client
            .send_to_addr(&vec![b'x'; MAX_DATAGRAM + 1], &addr)
            .unwrap();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let got = listener.recv(&mut buf).unwrap().unwrap();
        assert_eq!(&buf[..got.len], b"READY=1\nSTATUS=up");
        let own = (std::process::id() as libc::pid_t, unsafe { libc::getuid() });
        assert_eq!(got.sender, Some(own));
        let self_cgroup = fs::read_to_string("/proc/self/cgroup").unwrap();
        let judge = Judge {
            scope: read_cgroups(&self_cgroup),
            uid: own.1,
        };
        assert!(judge.believes(got.sender));
        assert!(!judge.believes(None));
        // Of this uid but in another unit: not believed; gone (pid 0, not
        // in /proc): believed only with the command's uid.
        let elsewhere = Judge {
            scope: vec![(String::new(), "/other.slice/b.scope".into())],
            uid: own.1,
        };
        assert!(!elsewhere.believes(got.sender));
        assert!(elsewhere.believes(Some((0, own.1))));
        assert!(!elsewhere.believes(Some((0, own.1 + 1))));
        assert!(listener.recv(&mut buf).unwrap().is_none(), "too long");
    }
}
