//! The terminal protocol: what flows on the unix socket a shim serves for
//! a PTY process (`shim::tty`), and on the fd `OpenTerminal` hands out,
//! both ends in one file like `protocol`: every frame's encoder next to
//! its decoder. Used by the shim, corrald (`SendInput`, `OpenTerminal`)
//! and `corralctl attach` / `send`.
//!
//! A frame is one type byte, the payload length as a big-endian `u32`,
//! then the payload (at most [`MAX_PAYLOAD`] bytes):
//!
//! - `o` shim → client: output of the terminal, escape sequences kept.
//!   On connect the shim first replays its scrollback ([`SCROLLBACK`]).
//! - `i` client → shim: keys; written to the terminal only from the
//!   client holding the keyboard, dropped from the others.
//! - `w` client → shim: the client's window size, rows then columns,
//!   each a big-endian `u16`. The first `w` of a client takes the
//!   keyboard (newest attacher wins); the holder's sizes are applied to
//!   the terminal (TIOCSWINSZ, which sends the command SIGWINCH). A
//!   client without a window (stdin no terminal) sends 0×0: it takes the
//!   keyboard and leaves the size as it is.
//! - `s` client → shim: scripted input (`SendInput`): always written,
//!   whoever holds the keyboard.
//!
//! The decoder never panics on any input (property-tested below). Part of
//! the shim, so std and libc only — see the `shim` module doc.

use std::path::{Path, PathBuf};

/// Largest payload of one frame; a longer one is a protocol error.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// How much recent output the shim keeps and replays to a new client.
pub const SCROLLBACK: usize = 64 * 1024;

/// Type byte and length.
const HEADER: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Output(Vec<u8>),
    Input(Vec<u8>),
    Resize { rows: u16, cols: u16 },
    Send(Vec<u8>),
}

/// Why a byte stream is not a frame stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("unknown terminal frame type {0:#04x}")]
    UnknownType(u8),
    #[error("terminal frame of {0} bytes is over the {MAX_PAYLOAD}-byte limit")]
    TooLong(usize),
    #[error("window size frame of {0} bytes (expected 4)")]
    BadResize(usize),
}

impl Frame {
    /// The frame on the wire. A payload over [`MAX_PAYLOAD`] must be split
    /// by the caller ([`Frame::chunks`]).
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload): (u8, &[u8]) = match self {
            Frame::Output(b) => (b'o', b),
            Frame::Input(b) => (b'i', b),
            Frame::Send(b) => (b's', b),
            Frame::Resize { rows, cols } => {
                let mut out = header(b'w', 4);
                out.extend_from_slice(&rows.to_be_bytes());
                out.extend_from_slice(&cols.to_be_bytes());
                return out;
            }
        };
        let mut out = header(kind, payload.len());
        out.extend_from_slice(payload);
        out
    }

    /// `bytes` as frames of at most [`MAX_PAYLOAD`] each, made by `make`.
    pub fn chunks(bytes: &[u8], make: fn(Vec<u8>) -> Frame) -> impl Iterator<Item = Frame> + '_ {
        bytes.chunks(MAX_PAYLOAD).map(move |c| make(c.to_vec()))
    }
}

fn header(kind: u8, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + len);
    out.push(kind);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out
}

/// Reassembles frames from reads of any size.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, `None` until one has arrived, or an error
    /// after which the stream cannot be trusted (the caller hangs up).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, Error> {
        let Some(head) = self.buf.get(..HEADER) else {
            return Ok(None);
        };
        let kind = head[0];
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if !matches!(kind, b'o' | b'i' | b'w' | b's') {
            return Err(Error::UnknownType(kind));
        }
        if len > MAX_PAYLOAD {
            return Err(Error::TooLong(len));
        }
        if kind == b'w' && len != 4 {
            return Err(Error::BadResize(len));
        }
        if self.buf.len() < HEADER + len {
            return Ok(None);
        }
        let payload: Vec<u8> = self.buf.drain(..HEADER + len).skip(HEADER).collect();
        Ok(Some(match kind {
            b'o' => Frame::Output(payload),
            b'i' => Frame::Input(payload),
            b's' => Frame::Send(payload),
            _ => Frame::Resize {
                rows: u16::from_be_bytes([payload[0], payload[1]]),
                cols: u16::from_be_bytes([payload[2], payload[3]]),
            },
        }))
    }
}

/// The socket of run `run`, in the process's log directory (reachable by
/// the agent and the owner only, 0750, the socket itself 0600). One per
/// run, so a shim that is still draining after its child exited never
/// removes the socket of the next run. corrald derives it again after a
/// restart; nothing needs to be stored.
pub fn socket_path(log_dir: &Path, run: u64) -> PathBuf {
    log_dir.join(format!("tty-{run}.sock"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_frame() -> impl Strategy<Value = Frame> {
        let bytes = || prop::collection::vec(any::<u8>(), 0..300);
        prop_oneof![
            bytes().prop_map(Frame::Output),
            bytes().prop_map(Frame::Input),
            bytes().prop_map(Frame::Send),
            (any::<u16>(), any::<u16>()).prop_map(|(rows, cols)| Frame::Resize { rows, cols }),
        ]
    }

    #[test]
    fn wire_format() {
        assert_eq!(Frame::Input(b"ab".to_vec()).encode(), b"i\0\0\0\x02ab");
        assert_eq!(
            Frame::Resize {
                rows: 30,
                cols: 100
            }
            .encode(),
            b"w\0\0\0\x04\0\x1e\0\x64"
        );
        let mut d = Decoder::default();
        d.push(b"x\0\0\0\0");
        assert_eq!(d.next_frame(), Err(Error::UnknownType(b'x')));
        let mut d = Decoder::default();
        d.push(b"o\xff\xff\xff\xff");
        assert!(matches!(d.next_frame(), Err(Error::TooLong(_))));
        let mut d = Decoder::default();
        d.push(b"w\0\0\0\x02ab");
        assert_eq!(d.next_frame(), Err(Error::BadResize(2)));
    }

    #[test]
    fn long_output_is_split_into_frames() {
        let bytes = vec![7u8; MAX_PAYLOAD * 2 + 1];
        let frames: Vec<Frame> = Frame::chunks(&bytes, Frame::Output).collect();
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[2], Frame::Output(vec![7]));
    }

    proptest! {
        #[test]
        fn frames_round_trip_across_any_split(
            frames in prop::collection::vec(any_frame(), 0..6),
            cut in any::<usize>(),
        ) {
            let wire: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
            let cut = if wire.is_empty() { 0 } else { cut % wire.len() };
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for part in [&wire[..cut], &wire[cut..]] {
                d.push(part);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            prop_assert_eq!(got, frames);
        }

        #[test]
        fn decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut d = Decoder::default();
            d.push(&bytes);
            while let Ok(Some(_)) = d.next_frame() {}
        }
    }
}
