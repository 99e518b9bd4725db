//! The local end of a process's terminal, for `corralctl attach` and
//! `run -t`: the caller's terminal in raw mode, its keys sent to the shim
//! as `i` frames and its size as `w` frames (at start and on SIGWINCH),
//! the process's output written out as it comes (`shim::terminal` is the
//! protocol). The detach key, the process ending, or this terminal going
//! away (SIGHUP) ends the session; the process keeps running in all
//! three unless it ended by itself. The terminal is restored on every
//! path out.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use nix::sys::termios::{self, SetArg, Termios};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::shim::terminal::{Decoder, Frame};

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The detach key: the process runs on.
    Detached,
    /// The process's terminal closed: it ended.
    Closed,
    /// This terminal went away (SIGHUP) or corralctl was told to stop.
    HungUp,
}

/// `ctrl-X` → the byte that key sends: ctrl-A … ctrl-Z and the five
/// punctuation controls (`ctrl-@ [ \ ] ^ _`).
pub fn parse_detach_key(s: &str) -> Result<u8, String> {
    let bad = || format!("'{s}' is not a control key like ctrl-] or ctrl-a");
    let key = s
        .strip_prefix("ctrl-")
        .or_else(|| s.strip_prefix("Ctrl-"))
        .ok_or_else(bad)?;
    match key.as_bytes() {
        [c @ (b'@'..=b'_')] => Ok(c ^ 0x40),
        [c @ b'a'..=b'z'] => Ok(c.to_ascii_uppercase() ^ 0x40),
        _ => Err(bad()),
    }
}

/// Raw mode for the caller's terminal while it lives; the settings it
/// had are put back on drop.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// `None` when stdin is no terminal (input is then passed on as is).
    fn enter() -> io::Result<Option<RawMode>> {
        let stdin = io::stdin();
        let Ok(saved) = termios::tcgetattr(stdin.as_fd()) else {
            return Ok(None);
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).map_err(io::Error::from)?;
        Ok(Some(RawMode { saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(io::stdin().as_fd(), SetArg::TCSADRAIN, &self.saved);
    }
}

/// The caller's window size as a `w` frame, if stdin is a terminal.
fn window_size() -> Option<Frame> {
    let mut size: libc::winsize = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into a live local.
    let rc = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_row > 0 && size.ws_col > 0).then_some(Frame::Resize {
        rows: size.ws_row,
        cols: size.ws_col,
    })
}

/// Reads stdin on a plain thread: a blocking read cannot be cancelled,
/// and a tokio blocking task would hold the runtime open at exit. The
/// thread ends with the process.
fn stdin_chunks() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut stdin = io::stdin().lock();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// Runs one attached session on `terminal` (from `OpenTerminal`).
pub async fn session(terminal: OwnedFd, detach: u8) -> io::Result<Ended> {
    let socket = std::os::unix::net::UnixStream::from(terminal);
    socket.set_nonblocking(true)?;
    let (mut from_shim, mut to_shim) = tokio::net::UnixStream::from_std(socket)?.into_split();
    let mut winch = signal(SignalKind::window_change())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let raw = RawMode::enter()?;
    // Sending our size first takes the keyboard (newest attacher); 0×0
    // takes it without a size when stdin is no terminal.
    let size = window_size().unwrap_or(Frame::Resize { rows: 0, cols: 0 });
    to_shim.write_all(&size.encode()).await?;
    let mut keys = stdin_chunks();
    let mut keys_open = true;
    let mut decoder = Decoder::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut stdout = io::stdout();
    let ended = loop {
        tokio::select! {
            n = from_shim.read(&mut buf) => {
                let n = n?;
                if n == 0 {
                    break Ended::Closed;
                }
                decoder.push(&buf[..n]);
                while let Some(frame) = decoder.next_frame().map_err(io::Error::other)? {
                    if let Frame::Output(bytes) = frame {
                        stdout.write_all(&bytes)?;
                    }
                }
                stdout.flush()?;
            }
            chunk = keys.recv(), if keys_open => {
                let Some(chunk) = chunk else {
                    keys_open = false;
                    continue;
                };
                let (before, detached) = match chunk.iter().position(|&b| b == detach) {
                    Some(i) => (&chunk[..i], true),
                    None => (&chunk[..], false),
                };
                if !before.is_empty() {
                    to_shim.write_all(&Frame::Input(before.to_vec()).encode()).await?;
                }
                if detached {
                    break Ended::Detached;
                }
            }
            _ = winch.recv() => {
                if let Some(size) = window_size() {
                    to_shim.write_all(&size.encode()).await?;
                }
            }
            _ = hangup.recv() => break Ended::HungUp,
            _ = term.recv() => break Ended::HungUp,
        }
    };
    drop(raw);
    Ok(ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys() {
        assert_eq!(parse_detach_key("ctrl-]"), Ok(0x1d));
        assert_eq!(parse_detach_key("ctrl-a"), Ok(0x01));
        assert_eq!(parse_detach_key("ctrl-Z"), Ok(0x1a));
        assert_eq!(parse_detach_key("ctrl-@"), Ok(0x00));
        assert_eq!(parse_detach_key("Ctrl-_"), Ok(0x1f));
        for bad in ["]", "ctrl-", "ctrl-ab", "ctrl-1", "alt-x"] {
            assert!(parse_detach_key(bad).is_err(), "{bad}");
        }
    }
}
