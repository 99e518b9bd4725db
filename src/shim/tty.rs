//! PTY mode: the pseudo-terminal the command runs on and the unix socket
//! on which the shim serves it to attached clients (`shim::terminal` is
//! the protocol). One poll loop, like `output::pump`, owns the master
//! side: what the command writes goes to the log (lines, `\r` dropped),
//! to a scrollback ring replayed to each new client, and to every client;
//! keys come in from the client holding the keyboard, scripted input from
//! anyone. Because the shim owns the socket, attached clients never
//! notice corrald dying or restarting.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::child::{ExitNote, Waiter, POLL_INTERVAL_MS};
use super::output::{log_exit, pollfd, read_buffer, Log, Source, EXIT_DRAIN_ROUNDS};
use super::terminal::{Decoder, Frame, SCROLLBACK};

/// Window size of the terminal until a client sends its own.
const INITIAL_ROWS: u16 = 24;
const INITIAL_COLS: u16 = 80;

/// Output queued for one client before it counts as stuck and is
/// disconnected: a stalled viewer must neither stall the command nor
/// grow the shim.
const MAX_CLIENT_BACKLOG: usize = 1 << 20;

/// Input queued for a command that does not read it; more is dropped.
const MAX_PENDING_INPUT: usize = 64 * 1024;

/// Reads of the terminal per poll round, at most: enough to drain what a
/// fast printer left, few enough that clients are still served.
const READS_PER_WAKEUP: usize = 16;

/// Most clients at once; more are refused (closed on accept).
const MAX_CLIENTS: usize = 32;

/// How long the last output may take to reach each client when the
/// command's terminal closes.
const FINAL_FLUSH: Duration = Duration::from_millis(200);

/// A fresh terminal pair: the master stays with the shim, the slave goes
/// to the child (and is closed here once it runs, so the master reads
/// EOF when the last process holding the terminal is gone).
pub(super) struct Pty {
    pub(super) master: OwnedFd,
    pub(super) slave: OwnedFd,
}

impl Pty {
    pub(super) fn open() -> io::Result<Pty> {
        let size = nix::pty::Winsize {
            ws_row: INITIAL_ROWS,
            ws_col: INITIAL_COLS,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pair = nix::pty::openpty(Some(&size), None).map_err(io::Error::from)?;
        for fd in [&pair.master, &pair.slave] {
            // The child gets the slave as fds 0-2 only, never the
            // originals; the master must not leak into it at all.
            set_fd_flag(
                fd.as_raw_fd(),
                libc::F_GETFD,
                libc::F_SETFD,
                libc::FD_CLOEXEC,
            )?;
        }
        set_fd_flag(
            pair.master.as_raw_fd(),
            libc::F_GETFL,
            libc::F_SETFL,
            libc::O_NONBLOCK,
        )?;
        Ok(Pty {
            master: pair.master,
            slave: pair.slave,
        })
    }

    /// System mode: the terminal belongs to the user the command runs as,
    /// as login(1) and sshd do, so programs that open it by name (`tty`,
    /// ssh, pinentry) may; the group stays `tty` for write(1).
    pub(super) fn give_to(&self, uid: u32) -> io::Result<()> {
        // SAFETY: fchown/fchmod on an fd we own.
        let rc = unsafe {
            libc::fchown(self.slave.as_raw_fd(), uid, libc::gid_t::MAX)
                | libc::fchmod(self.slave.as_raw_fd(), 0o620)
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

fn set_fd_flag(fd: RawFd, get: libc::c_int, set: libc::c_int, flag: libc::c_int) -> io::Result<()> {
    // SAFETY: fcntl get/set of flags on an fd we own.
    let flags = unsafe { libc::fcntl(fd, get) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, set, flags | flag) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The attach socket at `path`, owner-only. Sockets of earlier runs left
/// in the directory by a shim killed before it could remove them go
/// (corrald only ever connects to the current run's).
pub(super) fn listen(path: &Path) -> io::Result<Listener> {
    remove_stale_sockets(path);
    let listener = UnixListener::bind(path)?;
    let path = path.to_path_buf();
    let listener = Listener { listener, path };
    fs::set_permissions(&listener.path, fs::Permissions::from_mode(0o600))?;
    listener.listener.set_nonblocking(true)?;
    Ok(listener)
}

fn remove_stale_sockets(path: &Path) {
    let Some(dir) = path.parent() else {
        return;
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("tty-") && name.ends_with(".sock") {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// The bound socket; its file is removed when the shim is done with it.
pub(super) struct Listener {
    listener: UnixListener,
    path: PathBuf,
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// The newest [`SCROLLBACK`] bytes of output.
#[derive(Default)]
struct Ring(VecDeque<u8>);

impl Ring {
    fn push(&mut self, bytes: &[u8]) {
        let bytes = &bytes[bytes.len().saturating_sub(SCROLLBACK)..];
        let over = (self.0.len() + bytes.len()).saturating_sub(SCROLLBACK);
        self.0.drain(..over);
        self.0.extend(bytes);
    }
}

struct Client {
    id: u64,
    stream: UnixStream,
    decoder: Decoder,
    /// Encoded frames not yet written.
    out: Vec<u8>,
    /// Has sent its window size (and so took the keyboard once).
    sized: bool,
    /// Its last window size (rows, columns), 0×0 for none.
    size: (u16, u16),
    dead: bool,
}

impl Client {
    fn queue(&mut self, bytes: &[u8]) {
        for frame in Frame::chunks(bytes, Frame::Output) {
            self.out.extend_from_slice(&frame.encode());
        }
        if self.out.len() > MAX_CLIENT_BACKLOG {
            self.dead = true;
        }
    }

    fn flush(&mut self) {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => break,
                Ok(n) => drop(self.out.drain(..n)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.dead = true;
                    break;
                }
            }
        }
    }
}

/// The terminal side of the shim's state: who is attached, who types,
/// what is waiting to be written to the command.
struct Session {
    master: RawFd,
    ring: Ring,
    clients: Vec<Client>,
    /// The client whose keys reach the command: the newest that sent its
    /// window size (of those still connected).
    keyboard: Option<u64>,
    next_id: u64,
    to_child: Vec<u8>,
}

impl Session {
    fn output(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.ring.push(bytes);
        for client in &mut self.clients {
            client.queue(bytes);
        }
    }

    fn accept(&mut self, listener: &UnixListener) {
        while let Ok((stream, _)) = listener.accept() {
            if self.clients.len() >= MAX_CLIENTS || stream.set_nonblocking(true).is_err() {
                continue;
            }
            let mut client = Client {
                id: self.next_id,
                stream,
                decoder: Decoder::default(),
                out: Vec::new(),
                sized: false,
                size: (0, 0),
                dead: false,
            };
            self.next_id += 1;
            let (a, b) = self.ring.0.as_slices();
            client.queue(a);
            client.queue(b);
            self.clients.push(client);
        }
    }

    /// Reads what client `i` sent and acts on each whole frame.
    fn read_client(&mut self, i: usize, buf: &mut [u8]) {
        let Some(client) = self.clients.get_mut(i) else {
            return;
        };
        match client.stream.read(buf) {
            Ok(0) => client.dead = true,
            Ok(n) => client.decoder.push(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) => {}
            Err(_) => client.dead = true,
        }
        loop {
            let Some(client) = self.clients.get_mut(i) else {
                return;
            };
            let frame = match client.decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                // A client that speaks nonsense is hung up on.
                Err(_) => {
                    client.dead = true;
                    return;
                }
            };
            let id = client.id;
            match frame {
                Frame::Input(keys) if self.keyboard == Some(id) => self.input(&keys),
                Frame::Input(_) | Frame::Output(_) => {}
                Frame::Send(text) => self.input(&text),
                Frame::Resize { rows, cols } => {
                    client.size = (rows, cols);
                    if !client.sized {
                        client.sized = true;
                        self.keyboard = Some(id);
                    }
                    if self.keyboard == Some(id) {
                        self.resize(rows, cols);
                    }
                }
            }
        }
    }

    fn input(&mut self, bytes: &[u8]) {
        let room = MAX_PENDING_INPUT.saturating_sub(self.to_child.len());
        self.to_child
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
        self.write_input();
    }

    fn write_input(&mut self) {
        while !self.to_child.is_empty() {
            // SAFETY: write(2) from a live buffer of the given length.
            let n = unsafe {
                libc::write(
                    self.master,
                    self.to_child.as_ptr().cast(),
                    self.to_child.len(),
                )
            };
            if n <= 0 {
                // EAGAIN: the command is not reading; POLLOUT retries.
                // Any other error: the terminal is going away.
                if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                    return;
                }
                continue;
            }
            self.to_child.drain(..n as usize);
        }
    }

    /// Sets the terminal's size; the kernel sends SIGWINCH to its
    /// foreground process group when it changes.
    fn resize(&mut self, rows: u16, cols: u16) {
        if rows == 0 || cols == 0 {
            return;
        }
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from a live local.
        unsafe { libc::ioctl(self.master, libc::TIOCSWINSZ, &size) };
    }

    /// Drops the clients that left; the keyboard of one that did goes to
    /// the newest attacher still there, and the terminal takes its size.
    fn reap(&mut self) {
        self.clients.retain(|c| !c.dead);
        if self
            .keyboard
            .is_some_and(|k| !self.clients.iter().any(|c| c.id == k))
        {
            // Clients are kept in the order they connected.
            let next = self.clients.iter().rev().find(|c| c.sized);
            self.keyboard = next.map(|c| c.id);
            if let Some((rows, cols)) = next.map(|c| c.size) {
                self.resize(rows, cols);
            }
        }
    }

    /// The command's terminal closed: its last output to everyone, within
    /// [`FINAL_FLUSH`] each, then EOF.
    fn finish(self) {
        for mut client in self.clients {
            let blocking = client.stream.set_nonblocking(false).is_ok()
                && client.stream.set_write_timeout(Some(FINAL_FLUSH)).is_ok();
            if blocking {
                let _ = client.stream.write_all(&client.out);
            }
        }
    }
}

/// The PTY loop: serves the terminal until the command's side of it is
/// closed by every process and the exit has been logged.
pub(super) fn serve(
    master: OwnedFd,
    listener: Option<Listener>,
    log: &mut Log,
    mut waiter: Waiter,
) {
    let mut session = Session {
        master: master.as_raw_fd(),
        ring: Ring::default(),
        clients: Vec::new(),
        keyboard: None,
        next_id: 0,
        to_child: Vec::new(),
    };
    let mut source = Source::terminal(File::from(master));
    let mut buf = read_buffer();
    let mut exit: Option<ExitNote> = None;
    let mut exit_logged = false;
    let mut drain_rounds = 0u32;
    loop {
        if source.file.is_none() && exit_logged {
            break;
        }
        // Fixed slots first: master, listener, waiter; then the clients.
        let open = source.file.is_some();
        let mut fds = vec![pollfd(-1); 3];
        if open {
            fds[0] = pollfd(session.master);
            if !session.to_child.is_empty() {
                fds[0].events |= libc::POLLOUT;
            }
        }
        if let Some(l) = &listener {
            fds[1] = pollfd(l.listener.as_raw_fd());
        }
        if let Some(fd) = waiter.fd() {
            fds[2] = pollfd(fd);
        }
        for client in &session.clients {
            let mut p = pollfd(client.stream.as_raw_fd());
            if !client.out.is_empty() {
                p.events |= libc::POLLOUT;
            }
            fds.push(p);
        }
        let timeout = if exit.is_some() {
            0
        } else {
            waiter.poll_timeout()
        };
        // SAFETY: `fds` is a live, correctly sized array of pollfd
        // (negative fds are ignored by poll).
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS as u64));
        }
        let ready = |i: usize| n > 0 && fds.get(i).is_some_and(|p| p.revents != 0);
        let mut got_data = false;
        if ready(0) {
            if fds[0].revents & libc::POLLOUT != 0 {
                session.write_input();
            }
            // A terminal hands out at most a few KiB a read: take what is
            // there before polling (and flushing the log) again.
            for _ in 0..READS_PER_WAKEUP {
                let data = source.read_once(&mut buf, log);
                if data.is_empty() {
                    break;
                }
                got_data = true;
                session.output(data);
            }
            if source.file.is_none() {
                // Closed: its number may be reused by the next accept.
                session.master = -1;
                session.to_child.clear();
            }
        }
        for i in 0..session.clients.len() {
            if ready(3 + i) {
                session.read_client(i, &mut buf);
            }
        }
        for client in &mut session.clients {
            client.flush();
        }
        session.reap();
        if ready(1) {
            if let Some(l) = &listener {
                session.accept(&l.listener);
            }
        }
        if let Some(note) = waiter.check(ready(2)) {
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
    // Who connected before the socket goes still gets the output.
    if let Some(l) = &listener {
        session.accept(&l.listener);
    }
    session.finish();
    drop(listener);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session {
            // No terminal: input stays queued in `to_child` to be looked at.
            master: -1,
            ring: Ring::default(),
            clients: Vec::new(),
            keyboard: None,
            next_id: 0,
            to_child: Vec::new(),
        }
    }

    /// Connects a client; returns our end of it.
    fn connect(s: &mut Session) -> UnixStream {
        let dir = tempfile::tempdir().unwrap();
        let listener = listen(&dir.path().join("t.sock")).unwrap();
        let stream = UnixStream::connect(&listener.path).unwrap();
        s.accept(&listener.listener);
        stream
    }

    fn say(s: &mut Session, ours: &mut UnixStream, i: usize, frame: Frame) {
        ours.write_all(&frame.encode()).unwrap();
        s.read_client(i, &mut [0u8; 1024]);
    }

    #[test]
    fn the_newest_sized_client_has_the_keyboard() {
        let mut s = session();
        s.output(b"before");
        let mut a = connect(&mut s);
        let mut b = connect(&mut s);
        // Both got the scrollback.
        assert!(s.clients.iter().all(|c| c.out.ends_with(b"before")));
        // Not sized: no keyboard, its keys are dropped; `s` always goes in.
        say(&mut s, &mut a, 0, Frame::Input(b"x".to_vec()));
        say(&mut s, &mut a, 0, Frame::Send(b"s".to_vec()));
        assert_eq!(s.to_child, b"s");
        say(&mut s, &mut a, 0, Frame::Resize { rows: 0, cols: 0 });
        say(&mut s, &mut a, 0, Frame::Input(b"a".to_vec()));
        say(&mut s, &mut b, 1, Frame::Resize { rows: 5, cols: 9 });
        say(&mut s, &mut a, 0, Frame::Input(b"dropped".to_vec()));
        say(&mut s, &mut b, 1, Frame::Input(b"b".to_vec()));
        assert_eq!(s.to_child, b"sab");
        // b leaves: the keyboard goes back to a.
        drop(b);
        s.read_client(1, &mut [0u8; 16]);
        s.reap();
        assert_eq!(s.keyboard, Some(0));
        // Nonsense hangs up on the client.
        a.write_all(b"?\0\0\0\0").unwrap();
        s.read_client(0, &mut [0u8; 16]);
        s.reap();
        assert!(s.clients.is_empty() && s.keyboard.is_none());
    }

    #[test]
    fn the_size_follows_the_keyboard() {
        let pty = Pty::open().unwrap();
        let mut s = session();
        s.master = pty.master.as_raw_fd();
        let size = || {
            let mut ws = nix::pty::Winsize {
                ws_row: 0,
                ws_col: 0,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: TIOCGWINSZ writes one winsize into a live local.
            unsafe { libc::ioctl(pty.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
            (ws.ws_row, ws.ws_col)
        };
        assert_eq!(size(), (INITIAL_ROWS, INITIAL_COLS));
        let mut a = connect(&mut s);
        let mut b = connect(&mut s);
        say(
            &mut s,
            &mut a,
            0,
            Frame::Resize {
                rows: 30,
                cols: 100,
            },
        );
        assert_eq!(size(), (30, 100));
        say(&mut s, &mut b, 1, Frame::Resize { rows: 20, cols: 72 });
        // Not the keyboard's: ignored.
        say(
            &mut s,
            &mut a,
            0,
            Frame::Resize {
                rows: 31,
                cols: 101,
            },
        );
        assert_eq!(size(), (20, 72));
        drop(b);
        s.read_client(1, &mut [0u8; 16]);
        s.reap();
        assert_eq!(size(), (31, 101));
    }

    #[test]
    fn ring_keeps_the_newest_bytes() {
        let mut ring = Ring::default();
        ring.push(b"abc");
        ring.push(&vec![b'x'; SCROLLBACK - 1]);
        assert_eq!(ring.0.len(), SCROLLBACK);
        assert_eq!(ring.0.front(), Some(&b'c'));
        let big: Vec<u8> = (0..SCROLLBACK + 5).map(|i| i as u8).collect();
        ring.push(&big);
        assert_eq!(ring.0.iter().copied().collect::<Vec<u8>>(), big[5..]);
    }
}
