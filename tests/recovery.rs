//! Survive and recover: restart policies, agent death and restarts,
//! output capture, persistence, retention and faults — on the real
//! systemd + D-Bus harness, like `integration.rs`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

// Generous bounds: the VM tier runs under software emulation.
const T: Duration = Duration::from_secs(30);

macro_rules! need_testbed {
    () => {
        if !testbed_available() {
            return;
        }
    };
}

fn events_of(agent: &Agent, id: &str) -> String {
    agent.ctl_ok(&["events", "-n", "1000", id])
}

#[test]
fn crash_loop_ends_in_failed_with_backoff_recorded() {
    need_testbed!();
    let agent = Agent::start();
    let id = agent.start_cmd(&[
        "--restart",
        "on-failure",
        "--restart-delay",
        "100ms",
        "--restart-limit",
        "3",
        "--restart-limit-interval",
        "60s",
        "--",
        "sh",
        "-c",
        "sleep 0.2; exit 1",
    ]);
    wait_for(Duration::from_secs(30), "crash-loop verdict", || {
        (process_property(&id, "ExitReason") == "s \"crash-loop\"").then_some(())
    });
    let p = agent.get(&id);
    assert_eq!(p["state"], "failed");
    assert_eq!(p["restarts"], 3, "{p}");
    assert_eq!(p["exit_code"], 1);
    let ev = events_of(&agent, &id);
    for d in [
        "restart in 100 ms",
        "restart in 200 ms",
        "restart in 400 ms",
        "crash-loop",
    ] {
        assert!(ev.contains(d), "missing {d:?} in events:\n{ev}");
    }
    // A manual restart starts the counting over: the loop runs its full
    // course again (3 more automatic restarts) before the next verdict.
    agent.ctl_ok(&["restart", &id]);
    wait_for(Duration::from_secs(60), "second crash-loop verdict", || {
        let ev = events_of(&agent, &id);
        let after = ev.split("restart requested").nth(1)?;
        after.contains("crash-loop").then(|| after.to_string())
    });
    let ev = events_of(&agent, &id);
    let after = ev.split("restart requested").nth(1).unwrap_or_default();
    assert_eq!(after.matches("restart-scheduled").count(), 3, "{ev}");
}

#[test]
fn always_restarts_a_clean_exit_in_a_new_scope_with_the_same_id() {
    need_testbed!();
    let agent = Agent::start();
    let gate = Gate::new();
    let id = agent.start_cmd(&[
        "--restart",
        "always",
        "--restart-delay",
        "50ms",
        "--",
        "sh",
        "-c",
        &gate.script(0),
    ]);
    let first = agent.wait_state(&id, "running", T)["pid"].clone();
    gate.open();
    let p = wait_for(T, "an automatic restart", || {
        let p = agent.get(&id);
        (p["restarts"].as_u64() >= Some(1) && p["state"] == "running" && p["pid"] != first)
            .then_some(p)
    });
    // An automatic restart runs in a scope of its own name (the old one
    // may still be going away); a client's Restart keeps the first name.
    assert_eq!(
        p["unit"],
        format!("app-corral-sh-{id}-r{}.scope", p["restarts"])
    );
    // Stop cancels the policy: stopped, with no restart scheduled.
    agent.ctl_ok(&["stop", &id]);
    let p = agent.get(&id);
    assert_eq!(p["state"], "stopped");
    assert!(p["next_restart_at"].is_null(), "{p}");
}

#[test]
fn twenty_processes_survive_kill_9_of_the_agent() {
    need_testbed!();
    let mut agent = Agent::start();
    let mut ids = Vec::new();
    for i in 0..19 {
        ids.push(agent.start_cmd(&["--name", &format!("p{i}"), "--", "sleep", "600"]));
    }
    let gate = Gate::new();
    let short = agent.start_cmd(&["--name", "short", "--", "sh", "-c", &gate.script(3)]);
    let before: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| agent.wait_state(id, "running", T))
        .collect();
    let short_pid = agent.wait_state(&short, "running", T)["pid"]
        .as_u64()
        .unwrap() as u32;
    agent.kill(libc::SIGKILL);
    // While no agent runs, `short` exits 3.
    let short_pid_gone = Instant::now();
    gate.open();
    wait_gone(short_pid, T);
    for p in &before {
        assert!(
            alive(p["pid"].as_u64().unwrap() as u32),
            "workload died with the agent: {p}"
        );
    }
    agent.spawn();
    eprintln!("agent back after {:?}", short_pid_gone.elapsed());
    for p in &before {
        let id = p["id"].as_str().unwrap();
        let now = agent.get(id);
        assert_eq!(now["state"], "running", "{now}");
        assert_eq!(now["pid"], p["pid"], "same PID after re-adoption");
    }
    let s = agent.get(&short);
    assert_eq!(
        (s["state"].as_str(), s["exit_code"].as_i64()),
        (Some("failed"), Some(3)),
        "{s}"
    );
    assert_eq!(agent.list(&[]).len(), 20, "no duplicates");
    // One scope per running process (the ended one's goes as soon as its
    // shim has drained the last output).
    wait_for(T, "19 active scopes", || {
        let scopes = run(Command::new("systemctl").args([
            "--user",
            "list-units",
            "--no-legend",
            "--state=active",
            "app-corral-*.scope",
        ]));
        (text(&scopes.stdout).lines().count() == 19).then_some(())
    });
    // Usage continues for adopted processes.
    assert!(agent.get(&ids[0])["memory_bytes"].as_u64().is_some());
}

#[test]
fn sigterm_of_the_agent_leaves_the_workload_running() {
    need_testbed!();
    let mut agent = Agent::start();
    let id = agent.start_cmd(&["--", "sleep", "600"]);
    let pid = agent.wait_state(&id, "running", T)["pid"].as_u64().unwrap() as u32;
    agent.kill(libc::SIGTERM);
    assert!(alive(pid));
    agent.spawn();
    assert_eq!(agent.get(&id)["pid"], pid);
}

#[test]
fn a_process_that_ended_while_the_agent_was_down_gets_its_restart_policy() {
    need_testbed!();
    let mut agent = Agent::start();
    let gate = Gate::new();
    let id = agent.start_cmd(&["--restart", "on-failure", "--", "sh", "-c", &gate.script(4)]);
    let pid = agent.wait_state(&id, "running", T)["pid"].as_u64().unwrap() as u32;
    agent.kill(libc::SIGKILL);
    gate.open();
    wait_gone(pid, T);
    agent.spawn();
    let p = wait_for(T, "restarted", || {
        let p = agent.get(&id);
        (p["restarts"].as_u64() >= Some(1)).then_some(p)
    });
    assert_eq!(p["exit_code"].as_i64().unwrap_or(4), 4);
}

#[test]
fn persistent_processes_come_back_when_their_scope_is_gone() {
    need_testbed!();
    let mut agent = Agent::start();
    let keep = agent.start_cmd(&["--name", "keep", "--persistent", "--", "sleep", "600"]);
    let lose = agent.start_cmd(&["--name", "lose", "--", "sleep", "600"]);
    let keep_pid = agent.wait_state(&keep, "running", T)["pid"].clone();
    agent.wait_state(&lose, "running", T);
    agent.kill(libc::SIGKILL);
    // As after a reboot or logout: the scopes are gone behind corral's back.
    let out = run(Command::new("systemctl").args([
        "--user",
        "stop",
        "app-corral-keep-*.scope",
        "app-corral-lose-*.scope",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    agent.spawn();
    let k = agent.wait_state(&keep, "running", T);
    assert_ne!(k["pid"], keep_pid, "relaunched, not the old process");
    assert!(events_of(&agent, &keep).contains("relaunching"));
    let l = agent.get(&lose);
    assert_eq!(
        l["state"], "failed",
        "non-persistent: recorded, not relaunched: {l}"
    );
    // Its shim outlived the SIGTERM and recorded how the command ended.
    assert_eq!(process_property(&lose, "ExitReason"), "s \"signal\"");
    assert_eq!(l["exit_signal"], 15, "{l}");
}

#[test]
fn output_is_captured_in_order_and_readable_over_cli_and_dbus() {
    need_testbed!();
    let agent = Agent::start();
    // Two pipes carry no common order: lines written back to back on both
    // can be read in either order, so the writer pauses between streams
    // (README, "Output and logs").
    let id = agent.start_cmd(&[
        "--",
        "sh",
        "-c",
        "echo one; sleep 0.1; echo two >&2; sleep 0.1; echo three; exit 0",
    ]);
    agent.wait_state(&id, "exited", T);
    let out = agent.ctl_ok(&["logs", &id]);
    let one = out.find("one").expect("one");
    let two = out.find("two").expect("two");
    let three = out.find("three").expect("three");
    assert!(one < two && two < three, "{out}");
    let bus = busctl_manager(&["Logs", "sut", &id, "0", "0"]);
    let bus = text(&bus.stdout);
    assert!(
        bus.contains("\"e\" \"two\"") && bus.contains("\"o\" \"one\""),
        "{bus}"
    );
    let tail = agent.ctl_ok(&["logs", "-n", "1", &id]);
    assert!(
        !tail.contains("one"),
        "-n 1 gives only the last line: {tail}"
    );
}

#[test]
fn output_survives_the_agent() {
    need_testbed!();
    let mut agent = Agent::start();
    let id = agent.start_cmd(&[
        "--",
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo line$i; sleep 0.05; done",
    ]);
    agent.wait_state(&id, "running", T);
    agent.kill(libc::SIGKILL);
    // The log file grows while no agent runs.
    let log = agent.state_dir().join("logs").join(&id).join("output.log");
    let count = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let at_kill = count();
    wait_for(T, "20 more lines with the agent down", || {
        (count() >= at_kill + 20).then_some(())
    });
    agent.spawn();
    let pid = agent.get(&id)["pid"].as_u64().unwrap() as u32;
    assert!(alive(pid), "no SIGPIPE death while the agent was away");
    let logs = agent.ctl_ok(&["logs", "-n", "1000", &id]);
    let n = logs.lines().filter(|l| l.contains("line")).count();
    assert!(
        n >= 20,
        "output kept flowing while the agent was down ({n} lines):\n{logs}"
    );
}

#[test]
fn a_fast_printer_stays_within_the_log_cap() {
    need_testbed!();
    let agent = Agent::start_with(
        "sample_interval = 1\nstop_timeout = 3\nlog_max_size = \"1M\"\nlog_files = 3\n",
    );
    // Output as fast as it goes for 15 s, bounded by time rather than
    // bytes: the VM tier's emulated CPU prints a few MB/s where the host
    // prints hundreds (300 MB took over 120 s there), and either is many
    // times the 3 MiB cap.
    let id = agent.start_cmd(&[
        "--",
        "sh",
        "-c",
        "timeout 15 sh -c \"tr '\\0' x < /dev/zero | fold -w 99\"; exit 0",
    ]);
    agent.wait_state(&id, "exited", Duration::from_secs(120));
    let dir = agent.state_dir().join("logs").join(&id);
    let mut total = 0;
    let mut files = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        total += e.metadata().unwrap().len();
        files += 1;
    }
    // Three files: the cap was reached and the log rotated, no further.
    assert_eq!(files, 3, "{files} files");
    assert!(total <= 3 * (1 << 20) + 200, "logs use {total} bytes");
    let last = agent.ctl_ok(&["logs", "-n", "5", &id]);
    assert!(last.contains("xxxx"), "{last}");
}

#[test]
fn retention_removes_old_ended_processes_with_their_logs() {
    need_testbed!();
    let mut agent = Agent::start_with("sample_interval = 1\nstop_timeout = 3\nretention = 1\n");
    let id = agent.start_cmd(&["--", "sh", "-c", "echo bye"]);
    agent.wait_state(&id, "exited", T);
    let live = agent.start_cmd(&["--", "sleep", "600"]);
    agent.wait_state(&live, "running", T);
    let logs = agent.state_dir().join("logs").join(&id);
    assert!(logs.exists());
    std::thread::sleep(Duration::from_millis(1500));
    agent.kill(libc::SIGTERM);
    agent.spawn(); // retention runs at start (and periodically)
    let ids: Vec<String> = agent
        .list(&[])
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids,
        vec![live],
        "the ended process is gone, the live one stays"
    );
    assert!(!logs.exists(), "its log went with it");
}

#[test]
fn a_kill_9_during_a_storm_of_starts_loses_nothing_it_answered() {
    need_testbed!();
    let mut agent = Agent::start();
    let ctl = bin("corralctl");
    let mut clients: Vec<std::process::Child> = (0..100)
        .map(|i| {
            Command::new(&ctl)
                .args([
                    "start",
                    "--name",
                    &format!("s{i}"),
                    "--workspace",
                    "storm",
                    "--",
                    "sleep",
                    "600",
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    // Kill the agent once some starts have been answered.
    // Bounded generously: 100 clients at once are slow under emulation.
    wait_for(Duration::from_secs(180), "first starts recorded", || {
        let db = rusqlite::Connection::open(agent.db_path()).ok()?;
        let n: i64 = db
            .query_row(
                "SELECT COUNT(*) FROM processes WHERE state = 'running'",
                [],
                |r| r.get(0),
            )
            .ok()?;
        (n >= 10).then_some(())
    });
    agent.kill(libc::SIGKILL);
    let mut answered = Vec::new();
    for c in clients.iter_mut() {
        let out = c.wait().unwrap();
        let _ = out;
    }
    for c in clients {
        let out = c.wait_with_output().unwrap();
        if out.status.success() {
            answered.push(text(&out.stdout).trim().to_string());
        }
    }
    agent.spawn();
    let all = agent.list(&["--workspace", "storm"]);
    for id in &answered {
        let p = all
            .iter()
            .find(|p| p["id"] == id.as_str())
            .unwrap_or_else(|| panic!("answered {id} lost"));
        assert_eq!(p["state"], "running", "{p}");
    }
    let running: Vec<&serde_json::Value> = all.iter().filter(|p| p["state"] == "running").collect();
    assert!(
        all.iter()
            .all(|p| p["state"] == "running" || p["state"] == "failed"),
        "{all:?}"
    );
    // Exactly once: one live scope per running process, no strays.
    let scopes = run(Command::new("systemctl").args([
        "--user",
        "list-units",
        "--no-legend",
        "--state=active",
        "app-corral-*.scope",
    ]));
    let scopes = text(&scopes.stdout);
    wait_for(Duration::from_secs(120), "stray scopes stopped", || {
        let s = run(Command::new("systemctl").args([
            "--user",
            "list-units",
            "--no-legend",
            "--state=active",
            "app-corral-*.scope",
        ]));
        (text(&s.stdout).lines().count() == running.len()).then_some(())
    });
    eprintln!(
        "answered {} of 100; {} running after restart; scopes before settling: {}",
        answered.len(),
        running.len(),
        scopes.lines().count()
    );
    let mut names: Vec<&str> = running
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), running.len(), "a name started twice");
}

#[test]
fn daemon_reload_and_reexec_lose_nothing() {
    need_testbed!();
    let agent = Agent::start();
    let id = agent.start_cmd(&["--", "sleep", "600"]);
    let pid = agent.wait_state(&id, "running", T)["pid"].clone();
    for verb in ["daemon-reload", "daemon-reexec"] {
        let out = run(Command::new("systemctl").args(["--user", verb]));
        assert!(out.status.success(), "{verb}: {}", text(&out.stderr));
        wait_for(T, "manager back", || {
            run(Command::new("busctl").args(["--user", "status", "org.freedesktop.systemd1"]))
                .status
                .success()
                .then_some(())
        });
    }
    assert_eq!(agent.get(&id)["pid"], pid);
    // Still fully supervised: a new start, an exit, and a stop all work.
    let other = agent.start_cmd(&["--", "sh", "-c", "sleep 0.5; exit 2"]);
    agent.wait_state(&other, "failed", T);
    agent.ctl_ok(&["stop", &id]);
    assert_eq!(agent.get(&id)["state"], "stopped");
}

#[test]
fn a_full_state_disk_is_reported_and_writes_resume() {
    need_testbed!();
    if std::env::var("CORRAL_TEST_MODE").as_deref() != Ok("testbed") {
        eprintln!(
            "SKIPPED: needs the private mount namespace of tests/testbed to mount a small tmpfs"
        );
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("corral-full.")
        .tempdir()
        .unwrap();
    let mnt = dir.path().join("state");
    std::fs::create_dir(&mnt).unwrap();
    let out = run(Command::new("mount").args([
        "-t",
        "tmpfs",
        "-o",
        "size=4m",
        "tmpfs",
        mnt.to_str().unwrap(),
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let state = mnt.join("s");
    let agent = Agent::start_at(
        "sample_interval = 1\nstop_timeout = 3\n",
        Some(state.clone()),
    );
    let id = agent.start_cmd(&["--", "sh", "-c", "sleep 2; exit 5"]);
    agent.wait_state(&id, "running", T);
    // Fill the disk.
    let filler = mnt.join("filler");
    let _ = run(Command::new("dd").args([
        "if=/dev/zero",
        &format!("of={}", filler.display()),
        "bs=64k",
    ]));
    // The exit is still seen and reported; the write error shows on the bus.
    agent.wait_state(&id, "failed", T);
    let err = wait_for(T, "StorageError set", || {
        let out = run(Command::new("busctl").args([
            "--user",
            "get-property",
            "org.corral.Supervisor1",
            "/org/corral/Supervisor1",
            "org.corral.Supervisor1.Manager",
            "StorageError",
        ]));
        let v = text(&out.stdout);
        (v.trim() != "s \"\"").then_some(v)
    });
    assert!(err.contains("full") || err.contains("disk"), "{err}");
    // A new Start is refused cleanly while nothing can be recorded.
    let out = agent.ctl(&["start", "--", "sleep", "600"]);
    if !out.status.success() {
        assert!(
            text(&out.stderr).contains("StorageFailed"),
            "{}",
            text(&out.stderr)
        );
    }
    std::fs::remove_file(&filler).unwrap();
    wait_for(Duration::from_secs(20), "StorageError cleared", || {
        let out = run(Command::new("busctl").args([
            "--user",
            "get-property",
            "org.corral.Supervisor1",
            "/org/corral/Supervisor1",
            "org.corral.Supervisor1.Manager",
            "StorageError",
        ]));
        (text(&out.stdout).trim() == "s \"\"").then_some(())
    });
    // The exit that happened while the disk was full is in the database now.
    let db = rusqlite::Connection::open(state.join("corral.db")).unwrap();
    let code: Option<i64> = db
        .query_row(
            "SELECT exit_code FROM runs WHERE process_id = ?1 ORDER BY id DESC LIMIT 1",
            [id.parse::<i64>().unwrap()],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(code, Some(5));
    drop(agent);
}

#[test]
fn a_corrupt_or_newer_database_is_a_clear_error() {
    need_testbed!();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&state)
        .unwrap();
    std::fs::write(state.join("corral.db"), vec![0x5au8; 16384]).unwrap();
    let out =
        run(Command::new(bin("corrald")).args(["--user", "--state-dir", state.to_str().unwrap()]));
    assert!(!out.status.success());
    let e = text(&out.stderr);
    assert!(
        e.contains("corral.db") && e.contains("not a database"),
        "{e}"
    );
    std::fs::remove_file(state.join("corral.db")).unwrap();
    let db = rusqlite::Connection::open(state.join("corral.db")).unwrap();
    db.pragma_update(None, "user_version", 99).unwrap();
    drop(db);
    let out =
        run(Command::new(bin("corrald")).args(["--user", "--state-dir", state.to_str().unwrap()]));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("schema version 99"),
        "{}",
        text(&out.stderr)
    );
}

/// The state directory holds callers' environments: corrald refuses one
/// that group or others can enter, before writing anything into it.
#[test]
fn a_state_dir_open_to_others_is_refused() {
    need_testbed!();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out =
        run(Command::new(bin("corrald")).args(["--user", "--state-dir", state.to_str().unwrap()]));
    assert!(!out.status.success());
    let e = text(&out.stderr);
    assert!(e.contains("mode 0755 lets group or others in"), "{e}");
    assert!(!state.join("corral.db").exists());
}

/// Regression (found by the benchmark): with `RestartDelayMs=0` the next
/// run's scope, which has the same name, was created while the previous
/// one was still being torn down (`UnitExists`), and the loop stopped for
/// good as `spawn-failed`.
#[test]
fn restart_with_zero_delay_waits_for_the_previous_scope() {
    need_testbed!();
    let agent = Agent::start();
    // Each run leaves behind a daemonized child that ignores SIGTERM, so
    // its scope lingers for the stop timeout (3 s) after the run ended.
    let id = agent.start_cmd(&[
        "--restart",
        "on-failure",
        "--restart-delay",
        "0",
        "--restart-limit",
        "1000",
        "--",
        "sh",
        "-c",
        "setsid sh -c 'trap \"\" TERM; sleep 60' & sleep 0.05; exit 1",
    ]);
    wait_for(Duration::from_secs(60), "3 restarts", || {
        (agent.get(&id)["restarts"].as_u64() >= Some(3)).then_some(())
    });
    let ev = events_of(&agent, &id);
    assert!(!ev.contains("spawn-failed"), "{ev}");
    agent.ctl_ok(&["stop", &id]);
}

fn user_units(pattern: &str) -> Vec<String> {
    let out = run(Command::new("systemctl").args([
        "--user",
        "list-units",
        "--plain",
        "--no-legend",
        "--state=active",
        pattern,
    ]));
    text(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn unit_property(unit: &str, prop: &str) -> String {
    let out = run(Command::new("systemctl").args(["--user", "show", "-P", prop, unit]));
    text(&out.stdout).trim().to_string()
}

/// An immediate restart (`RestartDelayMs=0`) runs in the scope made while
/// the last run ran, where a shim waited, so it does not wait for
/// systemd; the new run gets its own standby, and a stop leaves no scope
/// of the process behind.
#[test]
fn an_immediate_restart_runs_in_the_scope_made_ahead_and_a_stop_leaves_none() {
    need_testbed!();
    let agent = Agent::start();
    let gate = Gate::new();
    let id = agent.start_cmd(&[
        "--restart",
        "always",
        "--restart-delay",
        "0",
        "--",
        "sh",
        "-c",
        &gate.script(0),
    ]);
    let first = agent.wait_state(&id, "running", T);
    let pattern = format!("app-corral-sh-{id}-s*.scope");
    let standby = wait_for(T, "a standby scope", || {
        let units = user_units(&pattern);
        (units.len() == 1).then(|| units[0].clone())
    });
    let standby_cg = unit_property(&standby, "ControlGroup");
    // Nothing runs in it yet but the shim waiting for the next run.
    let waiting = cgroup_pids(&standby_cg);
    assert_eq!(waiting.len(), 1, "{standby}: {waiting:?}");
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", waiting[0])).unwrap_or_default();
    assert_eq!(comm.trim(), "corral-shim");
    gate.open();
    let p = wait_for(T, "the restart", || {
        let p = agent.get(&id);
        (p["restarts"] == 1 && p["state"] == "running" && p["pid"] != first["pid"]).then_some(p)
    });
    assert_eq!(p["unit"], standby.as_str(), "{p}");
    assert_eq!(p["control_group"], standby_cg.as_str(), "{p}");
    let pid = p["pid"].as_u64().unwrap_or(0) as u32;
    assert!(cgroup_pids(&standby_cg).contains(&pid), "{p}");
    // The run now in it has a standby of its own.
    wait_for(T, "the next standby scope", || {
        let mut units = user_units(&pattern);
        units.retain(|u| *u != standby);
        (units.len() == 1).then_some(())
    });
    agent.ctl_ok(&["stop", &id]);
    wait_for(T, "no scope of the process left", || {
        user_units(&format!("app-corral-sh-{id}*.scope"))
            .is_empty()
            .then_some(())
    });
}
