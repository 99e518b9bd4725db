//! `corralctl -H [USER@]HOST`: the bus of another machine, reached the way
//! `systemctl -H` reaches it. ssh runs `systemd-stdio-bridge` there, which
//! connects to the remote bus and relays D-Bus over its stdin/stdout; here
//! ssh's stdin and stdout are one end of a socket pair and zbus speaks on
//! the other, so every command works unchanged. Authentication is ssh's;
//! on the remote bus the calls come from the ssh user, and polkit (system
//! bus) judges that user.

use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};

use zbus::connection::Builder;
use zbus::Connection;

use super::error::Bus;

/// The remote user's session bus, as the remote shell (ssh runs the
/// command through it) expands it: `$XDG_RUNTIME_DIR/bus`, or where
/// pam_systemd would put it. Named by path rather than by the bridge's
/// `--user`, which systemd 252 (Debian 12) ignores, bridging to the
/// system bus instead.
const REMOTE_SESSION_BUS: &str = "--bus-path=unix:path=${XDG_RUNTIME_DIR:-/run/user/$(id -u)}/bus";

/// The ssh command line: no X11 forwarding, no tty (D-Bus is binary), the
/// bridge to the system bus or to the user's session bus.
pub fn ssh_args(host: &str, bus: Bus) -> Vec<String> {
    let mut args = vec![
        "-xT".to_string(),
        "--".to_string(),
        host.to_string(),
        "systemd-stdio-bridge".to_string(),
    ];
    if bus == Bus::Session {
        args.push(REMOTE_SESSION_BUS.into());
    }
    args
}

/// Starts ssh and connects to the remote bus through it. ssh's stderr
/// stays the terminal's, for host-key questions and its own errors; it
/// ends when corralctl closes its end of the pair (at exit).
pub async fn connect(host: &str, bus: Bus) -> zbus::Result<Connection> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    let theirs = OwnedFd::from(theirs);
    Command::new("ssh")
        .args(ssh_args(host, bus))
        .stdin(Stdio::from(theirs.try_clone()?))
        .stdout(Stdio::from(theirs))
        .spawn()
        .map_err(|e| zbus::Error::Failure(format!("cannot run ssh: {e}")))?;
    ours.set_nonblocking(true)?;
    let stream = tokio::net::UnixStream::from_std(ours)?;
    // The bridge is an sd-bus server that accepts ANONYMOUS (checked with
    // systemd 252). EXTERNAL would send our local uid, which means
    // nothing on the remote host; the bridge itself connects to the bus
    // as the ssh user, and that is who the agent sees.
    Builder::unix_stream(stream)
        .auth_mechanism(zbus::AuthMechanism::Anonymous)
        .build()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_runs_the_bridge_to_the_chosen_bus() {
        assert_eq!(
            ssh_args("ann@build1", Bus::Session),
            [
                "-xT",
                "--",
                "ann@build1",
                "systemd-stdio-bridge",
                "--bus-path=unix:path=${XDG_RUNTIME_DIR:-/run/user/$(id -u)}/bus"
            ]
        );
        assert_eq!(
            ssh_args("build1", Bus::System),
            ["-xT", "--", "build1", "systemd-stdio-bridge"]
        );
    }
}
