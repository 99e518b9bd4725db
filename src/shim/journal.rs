//! Optional forwarding of the child's output lines to the journal, one
//! datagram per line in systemd's native protocol
//! (<https://systemd.io/JOURNAL_NATIVE_PROTOCOL/>), with the fields that
//! let `journalctl CORRAL_WORKSPACE=shop` find them. The log file stays
//! the record (`output`); the journal is a copy and is best effort: no
//! socket, a full socket buffer or a refused send drops the copy of the
//! line, never the line, and never stalls the shim. std only, as the rest
//! of the shim.

use std::os::unix::net::UnixDatagram;
use std::path::Path;

use super::protocol::LaunchSpec;

/// journald's native socket (the same path for the system and the user
/// journal: journald files entries of user services by their uid).
const SOCKET: &str = "/run/systemd/journal/socket";

/// The open datagram socket and the fields every entry of this process
/// carries, encoded once.
pub(super) struct Journal {
    socket: UnixDatagram,
    fixed: Vec<u8>,
}

impl Journal {
    /// None unless the spec asks for forwarding and journald listens.
    pub(super) fn open(spec: &LaunchSpec) -> Option<Journal> {
        Self::open_at(spec, Path::new(SOCKET))
    }

    fn open_at(spec: &LaunchSpec, path: &Path) -> Option<Journal> {
        let fields = spec.journal.as_ref()?;
        let socket = UnixDatagram::unbound().ok()?;
        socket.connect(path).ok()?;
        // A stuck journald must not stall the output pump (and with it
        // the child writing into a full pipe): drop the copy instead.
        socket.set_nonblocking(true).ok()?;
        let mut fixed = Vec::new();
        push_field(&mut fixed, "SYSLOG_IDENTIFIER", fields.name.as_bytes());
        push_field(&mut fixed, "CORRAL_ID", spec.id.as_bytes());
        push_field(&mut fixed, "CORRAL_NAME", fields.name.as_bytes());
        push_field(&mut fixed, "CORRAL_WORKSPACE", fields.workspace.as_bytes());
        Some(Journal { socket, fixed })
    }

    /// Sends one log record (`stream` as in `crate::logfile`).
    pub(super) fn send(&self, stream: u8, line: &[u8]) {
        let _ = self.socket.send(&self.entry(stream, line));
    }

    fn entry(&self, stream: u8, line: &[u8]) -> Vec<u8> {
        // syslog(3) levels: info for stdout, err for stderr, notice for
        // the shim's own notes (started, exited).
        let (name, priority) = match stream {
            b'o' => ("stdout", "6"),
            b'e' => ("stderr", "3"),
            _ => ("shim", "5"),
        };
        let mut entry = Vec::with_capacity(self.fixed.len() + line.len() + 64);
        entry.extend_from_slice(&self.fixed);
        push_field(&mut entry, "CORRAL_STREAM", name.as_bytes());
        push_field(&mut entry, "PRIORITY", priority.as_bytes());
        push_field(&mut entry, "MESSAGE", line);
        entry
    }
}

/// Appends `KEY=value\n`, or, when the value holds a newline, the
/// binary-safe form: `KEY\n`, the length as 64-bit little endian, the
/// bytes, `\n`.
fn push_field(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    out.extend_from_slice(key.as_bytes());
    if value.contains(&b'\n') {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shim::protocol::JournalFields;

    fn spec(journal: Option<JournalFields>) -> LaunchSpec {
        LaunchSpec {
            id: "12".into(),
            run: 1,
            argv: vec![],
            cwd: "/".into(),
            env: vec![],
            log_dir: "/l".into(),
            log_max_bytes: 1,
            log_files: 1,
            exit_file: "/e".into(),
            user: None,
            journal,
            tty: false,
            notify: false,
        }
    }

    fn shop() -> Option<JournalFields> {
        Some(JournalFields {
            name: "web".into(),
            workspace: "shop".into(),
        })
    }

    #[test]
    fn plain_and_binary_safe_fields() {
        let mut out = Vec::new();
        push_field(&mut out, "A", b"one line");
        push_field(&mut out, "B", b"two\nlines");
        let mut want = b"A=one line\nB\n".to_vec();
        want.extend_from_slice(&9u64.to_le_bytes());
        want.extend_from_slice(b"two\nlines\n");
        assert_eq!(out, want);
    }

    /// One datagram per line, read back from a socket standing in for
    /// journald's: the fields `journalctl` matches on, and the priority
    /// of each stream.
    #[test]
    fn entries_carry_the_process_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let journald = UnixDatagram::bind(&path).unwrap();
        let journal = Journal::open_at(&spec(shop()), &path).unwrap();
        journal.send(b'o', b"listening on :8080");
        journal.send(b'e', b"oops");
        let mut buf = [0u8; 4096];
        let n = journald.recv(&mut buf).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            "SYSLOG_IDENTIFIER=web\nCORRAL_ID=12\nCORRAL_NAME=web\nCORRAL_WORKSPACE=shop\n\
             CORRAL_STREAM=stdout\nPRIORITY=6\nMESSAGE=listening on :8080\n"
        );
        let n = journald.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(
            text.ends_with("CORRAL_STREAM=stderr\nPRIORITY=3\nMESSAGE=oops\n"),
            "{text}"
        );
    }

    #[test]
    fn off_unless_asked_and_silent_without_journald() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let _journald = UnixDatagram::bind(&path).unwrap();
        assert!(Journal::open_at(&spec(None), &path).is_none());
        assert!(Journal::open_at(&spec(shop()), &dir.path().join("absent")).is_none());
    }
}
