//! corrald among its neighbours, against the real systemd user manager
//! and session bus of the testbed: as a `Type=notify` service (READY,
//! STATUS, watchdog), as a source of desktop notifications (this test owns
//! org.freedesktop.Notifications on the bus and records the calls), and
//! reached by `corralctl -H` through a real `systemd-stdio-bridge` (with a
//! stand-in `ssh` that runs the remote command here). The journal and a
//! real sshd are checked in the VM tier (tests/vm/desktop-remote.sh).

mod common;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(30);

macro_rules! need_testbed {
    () => {
        if !testbed_available() {
            return;
        }
    };
}

fn systemctl_show(unit: &str, prop: &str) -> String {
    let out = run(Command::new("systemctl").args(["--user", "show", "-P", prop, unit]));
    text(&out.stdout).trim().to_string()
}

/// Stops the transient unit even when the test fails.
struct Unit(&'static str);

impl Drop for Unit {
    fn drop(&mut self) {
        run(Command::new("systemctl").args(["--user", "stop", self.0]));
        run(Command::new("systemctl").args(["--user", "reset-failed", self.0]));
    }
}

#[test]
fn under_systemd_run_type_notify_the_agent_is_ready_and_reports_its_status() {
    need_testbed!();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("corrald.toml");
    std::fs::write(&config, "sample_interval = 1\nstop_timeout = 3\n").unwrap();
    let unit = Unit("corrald-notify-test.service");
    let mut cmd = Command::new("systemd-run");
    cmd.args([
        "--user",
        "--quiet",
        "-p",
        "Type=notify",
        "-p",
        "WatchdogSec=2s",
        "--unit",
        unit.0,
    ]);
    for var in [
        "DBUS_SESSION_BUS_ADDRESS",
        "XDG_RUNTIME_DIR",
        "HOME",
        "PATH",
    ] {
        if let Ok(v) = std::env::var(var) {
            cmd.arg(format!("--setenv={var}={v}"));
        }
    }
    cmd.arg(format!(
        "--setenv=CORRAL_SHIM={}",
        bin("corral-shim").display()
    ))
    .arg(bin("corrald"))
    .args(["--user", "--config"])
    .arg(&config)
    .arg("--state-dir")
    .arg(dir.path().join("state"));
    // systemd-run waits for the start job, which for Type=notify ends
    // only at READY=1.
    let out = run(&mut cmd);
    assert!(out.status.success(), "systemd-run: {}", text(&out.stderr));
    assert_eq!(systemctl_show(unit.0, "ActiveState"), "active");
    assert_eq!(
        systemctl_show(unit.0, "StatusText"),
        "supervising 0 processes"
    );

    let ctl = |args: &[&str]| {
        let out = run(Command::new(bin("corralctl")).args(args));
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout).trim().to_string()
    };
    let sleeper = ctl(&["start", "--name", "nap", "--", "sleep", "600"]);
    let failing = ctl(&["start", "--name", "bad", "--", "sh", "-c", "exit 3"]);
    wait_for(T, "the status line", || {
        (systemctl_show(unit.0, "StatusText") == "supervising 1 process (1 failed)").then_some(())
    });

    // Three watchdog intervals: pings arrive, so the unit was not
    // restarted (same main pid, no restarts).
    let pid = systemctl_show(unit.0, "MainPID");
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(systemctl_show(unit.0, "ActiveState"), "active");
    assert_eq!(systemctl_show(unit.0, "MainPID"), pid);
    assert_eq!(systemctl_show(unit.0, "NRestarts"), "0");
    ctl(&["rm", &sleeper, &failing]);
}

/// Calls of `Notify` received: (summary, body).
type Calls = Arc<Mutex<Vec<(String, String)>>>;

/// A notification server standing in for the desktop's.
struct Server(Calls);

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl Server {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        _app_name: String,
        _replaces_id: u32,
        _app_icon: String,
        summary: String,
        body: String,
        _actions: Vec<String>,
        _hints: HashMap<String, zbus::zvariant::OwnedValue>,
        _expire_timeout: i32,
    ) -> u32 {
        let mut calls = self.0.lock().unwrap();
        calls.push((summary, body));
        calls.len() as u32
    }
}

/// Owns org.freedesktop.Notifications on the session bus from a thread
/// of its own until the test ends.
fn notification_server() -> Calls {
    let calls = Calls::default();
    let served = calls.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let conn = zbus::connection::Builder::session()
                .unwrap()
                .name("org.freedesktop.Notifications")
                .unwrap()
                .serve_at("/org/freedesktop/Notifications", Server(served))
                .unwrap()
                .build()
                .await
                .unwrap();
            ready_tx.send(()).unwrap();
            std::future::pending::<()>().await;
            drop(conn);
        });
    });
    ready_rx.recv_timeout(T).expect("notification server up");
    calls
}

#[test]
fn a_crash_loop_is_one_desktop_notification_naming_process_and_workspace() {
    need_testbed!();
    let calls = notification_server();
    let agent = Agent::start();
    let id = agent.start_cmd(&[
        "--name",
        "flaky",
        "--workspace",
        "shop",
        "--restart",
        "on-failure",
        "--restart-delay",
        "50ms",
        "--restart-limit",
        "3",
        "--",
        "sh",
        "-c",
        "exit 3",
    ]);
    let view = wait_for(T, "the crash loop", || {
        let v = agent.get(&id);
        (v["exit_reason"] == "crash-loop").then_some(v)
    });
    assert_eq!(view["state"], "failed");
    wait_for(T, "a notification", || {
        (!calls.lock().unwrap().is_empty()).then_some(())
    });
    // The restarts before the give-up are not notified, nor is the
    // give-up twice.
    std::thread::sleep(Duration::from_secs(1));
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let (summary, body) = &calls[0];
    assert_eq!(summary, "flaky is in a crash loop");
    assert!(body.contains("workspace shop"), "{body}");
    assert!(body.contains(&format!("corralctl logs {id}")), "{body}");
}

#[test]
fn host_option_reaches_the_agent_through_ssh_and_the_stdio_bridge() {
    need_testbed!();
    let agent = Agent::start();
    let id = agent.start_cmd(&["--name", "far", "--", "sleep", "600"]);
    // A stand-in for ssh that records its arguments and, as ssh does,
    // runs the remote command line through a shell, here.
    let bin_dir = tempfile::tempdir().unwrap();
    let args_file = bin_dir.path().join("args");
    let ssh = bin_dir.path().join("ssh");
    std::fs::write(
        &ssh,
        format!(
            "#!/bin/sh\necho \"$@\" > {}\nshift 3\nexec sh -c \"$*\"\n",
            args_file.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = run(Command::new(bin("corralctl"))
        .args(["-H", "tester@build1", "--json", "list"])
        .env("PATH", path));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["id"], id.as_str(), "{list}");
    assert_eq!(list[0]["name"], "far");
    assert_eq!(
        std::fs::read_to_string(&args_file).unwrap().trim(),
        "-xT -- tester@build1 systemd-stdio-bridge \
         --bus-path=unix:path=${XDG_RUNTIME_DIR:-/run/user/$(id -u)}/bus"
    );
    agent.ctl_ok(&["rm", &id]);
}
