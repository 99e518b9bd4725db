//! Shared pieces of the integration suite: a real `corrald` on the real
//! session bus of the harness (or of the caller's own session in
//! `CORRAL_TEST_MODE=session`), the real `corralctl` and `busctl`, and
//! bounded polls instead of sleeps.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

/// Returns false (and says why) when no real systemd + bus is available;
/// with CORRAL_TEST_REQUIRE=1 (set by scripts/test) that is a failure.
pub fn testbed_available() -> bool {
    let mode = std::env::var("CORRAL_TEST_MODE").unwrap_or_default();
    if mode == "testbed" || mode == "session" {
        return true;
    }
    if std::env::var_os("CORRAL_TEST_REQUIRE").is_some() {
        panic!("CORRAL_TEST_REQUIRE is set but CORRAL_TEST_MODE is neither testbed nor session");
    }
    eprintln!(
        "SKIPPED: no private systemd + D-Bus; run scripts/test (or set CORRAL_TEST_MODE=session)"
    );
    false
}

/// Where the binaries under test are: `CORRAL_BIN_DIR` (VM tier) or cargo's.
pub fn bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("CORRAL_BIN_DIR") {
        return Path::new(&dir).join(name);
    }
    match name {
        "corrald" => PathBuf::from(env!("CARGO_BIN_EXE_corrald")),
        "corralctl" => PathBuf::from(env!("CARGO_BIN_EXE_corralctl")),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_corral-shim")),
    }
}

/// Polls `f` every 10 ms until it returns Some, for at most `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A running corrald with its own state directory.
pub struct Agent {
    pub child: Option<Child>,
    pub state: tempfile::TempDir,
    pub config: PathBuf,
    state_dir: PathBuf,
}

impl Agent {
    /// Starts corrald with a small config and waits until it owns its name.
    pub fn start() -> Agent {
        Self::start_with("sample_interval = 1\nstop_timeout = 3\n")
    }

    pub fn start_with(config_text: &str) -> Agent {
        Self::start_at(config_text, None)
    }

    /// Like `start_with`, with the state directory somewhere given.
    pub fn start_at(config_text: &str, state_dir: Option<PathBuf>) -> Agent {
        let state = tempfile::Builder::new()
            .prefix("corral-test.")
            .tempdir()
            .expect("tempdir");
        let config = state.path().join("corrald.toml");
        std::fs::write(&config, config_text).expect("write config");
        let state_dir = state_dir.unwrap_or_else(|| state.path().join("state"));
        let mut a = Agent {
            child: None,
            state,
            config,
            state_dir,
        };
        a.spawn();
        a
    }

    pub fn state_dir(&self) -> PathBuf {
        self.state_dir.clone()
    }

    pub fn db_path(&self) -> PathBuf {
        self.state_dir().join("corral.db")
    }

    /// (Re)starts the corrald process on the same state directory.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state.path().join("corrald.log"))
            .expect("log file");
        let child = Command::new(bin("corrald"))
            .arg("--user")
            .arg("--config")
            .arg(&self.config)
            .arg("--state-dir")
            .arg(self.state_dir())
            .env("CORRAL_SHIM", bin("corral-shim"))
            .env("CORRAL_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn corrald");
        self.child = Some(child);
        let name_owned = || {
            let out =
                run(Command::new("busctl").args(["--user", "status", "org.corral.Supervisor1"]));
            out.status.success().then_some(())
        };
        let start = Instant::now();
        while name_owned().is_none() {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("corrald exited early ({status}); log:\n{}", self.log());
                }
            }
            // Generous: under the VM tier's CPU emulation an agent that
            // re-adopts a hundred processes (and publishes their objects)
            // takes tens of seconds before it owns its name.
            if start.elapsed() > Duration::from_secs(90) {
                panic!(
                    "corrald did not take its bus name in 90s; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("corrald.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends `signal` to corrald and reaps it.
    pub fn kill(&mut self, signal: i32) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) of our own unreaped child.
            unsafe {
                libc::kill(c.id() as i32, signal);
            }
            let _ = c.wait();
        }
        // Its bus name must be free before another corrald can start.
        wait_for(Duration::from_secs(10), "bus name released", || {
            let out =
                run(Command::new("busctl").args(["--user", "status", "org.corral.Supervisor1"]));
            (!out.status.success()).then_some(())
        });
    }

    /// Runs corralctl; returns the output whatever its status.
    pub fn ctl(&self, args: &[&str]) -> Output {
        run(Command::new(bin("corralctl")).args(args))
    }

    /// Runs corralctl and insists on success; returns stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "corralctl {args:?} failed: {}\n{}\nagent log:\n{}",
            out.status,
            text(&out.stderr),
            self.log()
        );
        text(&out.stdout)
    }

    /// `corralctl list --json` as JSON values.
    pub fn list(&self, extra: &[&str]) -> Vec<Json> {
        let mut args = vec!["--json", "list"];
        args.extend_from_slice(extra);
        let out = self.ctl_ok(&args);
        serde_json::from_str::<Vec<Json>>(&out)
            .unwrap_or_else(|e| panic!("list --json: {e}: {out}"))
    }

    pub fn get(&self, id: &str) -> Json {
        self.list(&[])
            .into_iter()
            .find(|p| p["id"] == id)
            .unwrap_or_else(|| panic!("process {id} not listed"))
    }

    /// Starts a command through corralctl; returns its id.
    pub fn start_cmd(&self, args: &[&str]) -> String {
        let mut a = vec!["start"];
        a.extend_from_slice(args);
        self.ctl_ok(&a).trim().to_string()
    }

    /// Waits until process `id` is in `state`; returns its record.
    pub fn wait_state(&self, id: &str, state: &str, limit: Duration) -> Json {
        let start = Instant::now();
        loop {
            let p = self.get(id);
            if p["state"] == state {
                return p;
            }
            if start.elapsed() > limit {
                panic!(
                    "timed out after {limit:?} waiting for process {id} to be {state}: {p}\nagent log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) of our own unreaped child.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGKILL);
            }
            let _ = c.wait();
        }
        // Leave no scope behind for the next test.
        let _ = run(Command::new("systemctl").args(["--user", "stop", "app-corral-*.scope"]));
        let _ = run(Command::new("systemctl").args(["--user", "stop", "app-corral.slice"]));
    }
}

/// `busctl --user call` on the manager.
pub fn busctl_manager(args: &[&str]) -> Output {
    let mut a = vec![
        "--user",
        "call",
        "org.corral.Supervisor1",
        "/org/corral/Supervisor1",
        "org.corral.Supervisor1.Manager",
    ];
    a.extend_from_slice(args);
    run(Command::new("busctl").args(&a))
}

/// `busctl --user get-property` of a process object.
pub fn process_property(id: &str, prop: &str) -> String {
    let path = format!("/org/corral/Supervisor1/process/{id}");
    let out = run(Command::new("busctl").args([
        "--user",
        "get-property",
        "org.corral.Supervisor1",
        &path,
        "org.corral.Supervisor1.Process",
        prop,
    ]));
    assert!(
        out.status.success(),
        "get-property {prop}: {}",
        text(&out.stderr)
    );
    text(&out.stdout).trim().to_string()
}

/// PIDs in the cgroup of a process (unified or name=systemd hierarchy).
pub fn cgroup_pids(control_group: &str) -> Vec<u32> {
    for root in [
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup/systemd",
        "/sys/fs/cgroup",
    ] {
        let p = format!("{root}{control_group}/cgroup.procs");
        if let Ok(t) = std::fs::read_to_string(&p) {
            return t.lines().filter_map(|l| l.parse().ok()).collect();
        }
    }
    vec![]
}

pub fn alive(pid: u32) -> bool {
    // A zombie still has /proc/<pid>; look at its state.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// A file a supervised `sh` waits for: lets a test decide exactly when a
/// process ends (e.g. while the agent is down) instead of guessing with
/// sleeps, which breaks on slow machines (the VM tier).
pub struct Gate {
    dir: tempfile::TempDir,
}

impl Gate {
    pub fn new() -> Gate {
        Gate {
            dir: tempfile::Builder::new()
                .prefix("corral-gate.")
                .tempdir()
                .expect("tempdir"),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("open")
    }

    /// A script that waits for the gate, then consumes it and exits `code`.
    pub fn script(&self, code: i32) -> String {
        let p = self.path();
        let p = p.display();
        format!("while [ ! -e {p} ]; do sleep 0.02; done; rm -f {p}; exit {code}")
    }

    pub fn open(&self) {
        std::fs::write(self.path(), b"").expect("open gate");
    }
}

/// Waits until `pid` has exited.
pub fn wait_gone(pid: u32, limit: Duration) {
    wait_for(limit, &format!("pid {pid} to exit"), || {
        (!alive(pid)).then_some(())
    });
}
