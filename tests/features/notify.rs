//! sd_notify readiness: a process started with `--notify` finds its
//! socket in `NOTIFY_SOCKET`; what it says there shows as `NotifyState`
//! and `StatusText` (D-Bus, `list --json`, `status`), waiting → ready,
//! kept across an agent restart and started over by a new run. A sender
//! outside the process's scope is not believed; `systemd-notify`, which
//! real services use, is.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::time::Duration;

use crate::common::*;

const LIMIT: Duration = Duration::from_secs(20);

/// Sends `STATUS=warming`, then `STATUS=still warming` once `one` exists
/// in the directory, then `READY=1` and `STATUS=serving` once `two` does.
const SPEAKER: &str = r#"
import os, socket, sys, time
addr = os.environ['NOTIFY_SOCKET']
if addr.startswith('@'):
    addr = '\0' + addr[1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
def gate(name):
    while not os.path.exists(os.path.join(sys.argv[1], name)):
        time.sleep(0.02)
s.sendto(b'STATUS=warming', addr)
gate('one')
s.sendto(b'STATUS=still warming', addr)
gate('two')
s.sendto(b'READY=1\nSTATUS=serving', addr)
time.sleep(1000)
"#;

/// Waits until the record says `state` and `status`.
fn wait_notify(agent: &Agent, id: &str, state: &str, status: &str) -> serde_json::Value {
    wait_for(
        LIMIT,
        &format!("{id} to be {state} with '{status}'"),
        || {
            let v = agent.get(id);
            (v["notify_state"] == state && v["status_text"] == status).then_some(v)
        },
    )
}

/// `NOTIFY_SOCKET` of a running process, from its environment.
fn notify_socket(pid: u64) -> String {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    environ
        .split(|&b| b == 0)
        .find_map(|e| e.strip_prefix(b"NOTIFY_SOCKET="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .expect("NOTIFY_SOCKET in the environment")
}

#[test]
fn a_notify_process_goes_from_waiting_to_ready_with_its_status() {
    if !testbed_available() {
        return;
    }
    let mut agent = Agent::start();
    let gates = tempfile::tempdir().expect("tempdir");
    let dir = gates.path().to_str().expect("utf-8 path");
    let id = agent.start_cmd(&[
        "--name", "svc", "--notify", "--", "python3", "-c", SPEAKER, dir,
    ]);
    let v = wait_notify(&agent, &id, "waiting", "warming");
    assert_eq!(v["state"], "running");
    assert_eq!(process_property(&id, "NotifyState"), "s \"waiting\"");
    let page = agent.ctl_ok(&["status", &id]);
    assert!(page.contains("Ready: waiting"), "{page}");
    assert!(page.contains("Status: warming\n"), "{page}");

    // Someone outside the scope (this test, same uid) says READY=1: not
    // believed. Datagrams are read in order, so once the process's next
    // word shows, the forged one was read and dropped.
    let socket = notify_socket(v["pid"].as_u64().expect("pid"));
    let name = socket.strip_prefix('@').expect("an abstract socket");
    let addr = SocketAddr::from_abstract_name(name).expect("address");
    let forger = UnixDatagram::unbound().expect("socket");
    forger
        .send_to_addr(b"READY=1\nSTATUS=forged", &addr)
        .expect("send");
    std::fs::write(Path::new(dir).join("one"), b"").expect("gate one");
    let v = wait_notify(&agent, &id, "waiting", "still warming");
    assert_eq!(v["state"], "running");

    std::fs::write(Path::new(dir).join("two"), b"").expect("gate two");
    wait_notify(&agent, &id, "ready", "serving");
    assert_eq!(process_property(&id, "NotifyState"), "s \"ready\"");
    assert_eq!(process_property(&id, "StatusText"), "s \"serving\"");
    let page = agent.ctl_ok(&["status", &id]);
    assert!(page.contains("Ready: yes\n"), "{page}");
    assert!(page.contains("Status: serving\n"), "{page}");
    assert!(page.contains("waiting -> ready"), "{page}");

    // An agent killed and started again reads what was said meanwhile.
    agent.kill(libc::SIGKILL);
    agent.spawn();
    let v = agent.get(&id);
    assert_eq!(
        (&v["notify_state"], &v["status_text"]),
        (&serde_json::json!("ready"), &serde_json::json!("serving")),
        "{v}"
    );

    // A new run starts over at waiting.
    std::fs::remove_file(Path::new(dir).join("one")).expect("close one");
    std::fs::remove_file(Path::new(dir).join("two")).expect("close two");
    agent.ctl_ok(&["restart", &id]);
    wait_notify(&agent, &id, "waiting", "warming");

    // Stopped, it is neither ready nor waiting.
    agent.ctl_ok(&["stop", &id]);
    let v = agent.wait_state(&id, "stopped", LIMIT);
    assert!(
        v["notify_state"].is_null() && v["status_text"].is_null(),
        "{v}"
    );
}

#[test]
fn systemd_notify_is_believed_and_other_processes_have_no_notify_state() {
    if !testbed_available() {
        return;
    }
    let agent = Agent::start();
    let plain = agent.start_cmd(&["--name", "plain", "--", "sleep", "1000"]);
    agent.wait_state(&plain, "running", LIMIT);
    let v = agent.get(&plain);
    assert!(
        v["notify_state"].is_null() && v["status_text"].is_null(),
        "{v}"
    );
    assert_eq!(process_property(&plain, "NotifyState"), "s \"\"");

    let has_systemd_notify = std::process::Command::new("systemd-notify")
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_systemd_notify {
        eprintln!("systemd-notify not installed: its part is skipped");
        return;
    }
    let id = agent.start_cmd(&[
        "--name",
        "svc",
        "--notify",
        "--",
        "sh",
        "-c",
        "systemd-notify --status='up and running' && systemd-notify --ready && exec sleep 1000",
    ]);
    wait_notify(&agent, &id, "ready", "up and running");
}
