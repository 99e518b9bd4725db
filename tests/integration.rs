//! Integration suite: the real `corrald`, `corralctl` and `busctl` against
//! a real systemd user manager and a real dbus-daemon (tests/testbed, or
//! the caller's own session). Run through `scripts/test`; one test at a
//! time, since there is one bus name per bus.

mod common;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use futures_util::StreamExt;

// Generous bounds: the VM tier runs under software emulation.
const T: Duration = Duration::from_secs(30);

macro_rules! need_testbed {
    () => {
        if !testbed_available() {
            return;
        }
    };
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

#[test]
fn start_via_corralctl_runs_inside_its_scope() {
    need_testbed!();
    let agent = Agent::start();
    let id = agent.start_cmd(&[
        "--name",
        "web",
        "--workspace",
        "my-proj",
        "--",
        "sleep",
        "300",
    ]);
    let p = agent.wait_state(&id, "running", T);
    let pid = p["pid"].as_u64().expect("pid") as u32;
    let unit = p["unit"].as_str().unwrap().to_string();
    assert_eq!(unit, format!("app-corral-web-{id}.scope"));
    // The command itself (not just the shim) is inside the scope, in the
    // workspace's slice (the '-' in "my-proj" escaped, not nested).
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        cg.contains(&format!("/app-corral-my\\x2dproj.slice/{unit}")),
        "{cg}"
    );
    assert_eq!(
        p["control_group"].as_str().unwrap().rsplit('/').next(),
        Some(unit.as_str())
    );
    let status = run(Command::new("systemctl").args(["--user", "status", "--no-pager", &unit]));
    let status_text = text(&status.stdout);
    assert!(status_text.contains("active (running)"), "{status_text}");
    assert!(status_text.contains(&pid.to_string()), "{status_text}");
    assert_eq!(p["workspace"], "my-proj");
    assert_eq!(p["name"], "web");
    // The command's parent is its shim, which the fork server forked
    // (README "Launching, race-free"): a corral-shim whose parent is
    // corrald. A shim corrald had to spawn itself would be its child.
    let comm = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    let ppid = |pid: u32| corral::daemon::track::parent_of(pid).unwrap();
    let shim = ppid(pid);
    assert_eq!(comm(shim), "corral-shim\n");
    let server = ppid(shim);
    assert_eq!(
        comm(server),
        "corral-shim\n",
        "the shim's parent is not the fork server"
    );
    assert_eq!(ppid(server), agent.pid());
}

#[test]
fn start_via_busctl_and_read_properties() {
    need_testbed!();
    let agent = Agent::start();
    let out = busctl_manager(&[
        "Start",
        "a{sv}",
        "3",
        "Command",
        "as",
        "2",
        "sleep",
        "300",
        "Workspace",
        "s",
        "bus",
        "Labels",
        "a{ss}",
        "1",
        "team",
        "core",
    ]);
    assert!(out.status.success(), "busctl Start: {}", text(&out.stderr));
    let reply = text(&out.stdout);
    // so "<id>" "/org/corral/Supervisor1/process/<id>"
    let id = reply.split('"').nth(1).expect("id in reply").to_string();
    assert!(
        reply.contains(&format!("/org/corral/Supervisor1/process/{id}")),
        "{reply}"
    );
    agent.wait_state(&id, "running", T);
    assert_eq!(process_property(&id, "State"), "s \"running\"");
    assert_eq!(process_property(&id, "Workspace"), "s \"bus\"");
    assert!(process_property(&id, "Labels").contains("\"team\" \"core\""));
    let pid: u32 = process_property(&id, "MainPID")
        .trim_start_matches("u ")
        .parse()
        .unwrap();
    assert!(alive(pid));
    assert_eq!(process_property(&id, "ExitCode"), "i -1");
    // ObjectManager lists the process object with its interface.
    let objs = run(Command::new("busctl").args([
        "--user",
        "call",
        "org.corral.Supervisor1",
        "/org/corral/Supervisor1",
        "org.freedesktop.DBus.ObjectManager",
        "GetManagedObjects",
    ]));
    let objs = text(&objs.stdout);
    assert!(
        objs.contains(&format!("/org/corral/Supervisor1/process/{id}"))
            && objs.contains("org.corral.Supervisor1.Process"),
        "{objs}"
    );
}

#[test]
fn memory_of_a_forking_tree_is_counted_whole() {
    need_testbed!();
    let agent = Agent::start();
    // Three children each holding 50 MB: dd fills its 50 MB buffer and
    // then blocks writing it into a pipe nobody reads. Plain coreutils, so
    // it runs in the VM guest too.
    let script =
        "for i in 1 2 3; do dd if=/dev/zero bs=50M count=1 2>/dev/null | sleep 300 & done; wait";
    let id = agent.start_cmd(&["--name", "tree", "--", "sh", "-c", script]);
    agent.wait_state(&id, "running", T);
    let p = wait_for(T, "memory >= 150 MB", || {
        let p = agent.get(&id);
        (p["memory_bytes"].as_u64().unwrap_or(0) >= 150 << 20).then_some(p)
    });
    assert!(p["tasks"].as_u64().unwrap() >= 4, "{p}");
    assert!(p["memory_peak_bytes"].as_u64().unwrap() >= 150 << 20, "{p}");
}

#[test]
fn cpu_time_and_percent_come_from_the_cgroup() {
    need_testbed!();
    let agent = Agent::start();
    let id = agent.start_cmd(&["--name", "spin", "--", "sh", "-c", "while :; do :; done"]);
    agent.wait_state(&id, "running", T);
    let p = wait_for(T, "cpu% > 20", || {
        let p = agent.get(&id);
        (p["cpu_percent"].as_f64().unwrap_or(0.0) > 20.0).then_some(p)
    });
    assert!(p["cpu_usage_nsec"].as_u64().unwrap() > 100_000_000, "{p}");
    // pids.current counts threads: the shim (2) and sh.
    assert!(p["tasks"].as_u64().unwrap() >= 2, "{p}");
}

/// Waits for the ProcessStateChanged signal of `id` reaching `state`.
async fn next_state(
    stream: &mut corral::api::ProcessStateChangedStream,
    id: &str,
    state: &str,
) -> (String, u64) {
    let fut = async {
        while let Some(sig) = stream.next().await {
            let a = sig.args().expect("args");
            if a.id == id && a.new_state == state {
                return (a.old_state.to_string(), now_us());
            }
        }
        panic!("signal stream ended");
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .expect("state signal within 10s")
}

#[tokio::test]
async fn exits_are_recorded_and_signalled_by_events_not_the_tick() {
    need_testbed!();
    // A 60 s tick: anything seen sooner came from an event.
    let agent = Agent::start_with("sample_interval = 60\nstop_timeout = 3\n");
    let conn = zbus::Connection::session().await.unwrap();
    let mgr = corral::api::ManagerProxy::new(&conn).await.unwrap();
    let mut stream = mgr.receive_process_state_changed().await.unwrap();

    let id = agent.start_cmd(&["--", "sh", "-c", "sleep 1; exit 3"]);
    let (old, seen) = next_state(&mut stream, &id, "failed").await;
    assert_eq!(old, "running");
    let p = agent.get(&id);
    assert_eq!(p["exit_code"], 3);
    assert!(p["exit_signal"].is_null(), "{p}");
    let exited = p["exited_at"].as_u64().unwrap();
    let latency_ms = seen.saturating_sub(exited) as f64 / 1000.0;
    eprintln!("exit -> signal: {latency_ms:.1} ms");
    assert!(
        latency_ms < 5_000.0,
        "exit seen after {latency_ms} ms: not event-driven"
    );

    // SIGKILL from outside corral: failed with the signal.
    let id = agent.start_cmd(&["--", "sleep", "300"]);
    let pid = agent.wait_state(&id, "running", T)["pid"].as_u64().unwrap();
    let before = now_us();
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let (_, seen) = next_state(&mut stream, &id, "failed").await;
    eprintln!(
        "kill -9 -> signal: {:.1} ms",
        (seen - before) as f64 / 1000.0
    );
    let p = agent.get(&id);
    assert_eq!(p["exit_signal"], 9, "{p}");
    assert!(p["exit_code"].is_null(), "{p}");

    // A clean exit is `exited`.
    let id = agent.start_cmd(&["--", "sh", "-c", "sleep 0.5"]);
    next_state(&mut stream, &id, "exited").await;
    assert_eq!(agent.get(&id)["exit_code"], 0);

    // A process that exits at once still goes starting -> running -> exited.
    let id = agent.start_cmd(&["--", "true"]);
    agent.wait_state(&id, "exited", T);
}

#[test]
fn kill_signals_the_process_and_a_signal_we_sent_is_a_stop() {
    need_testbed!();
    let agent = Agent::start();
    let id = agent.start_cmd(&["--", "sleep", "300"]);
    agent.wait_state(&id, "running", T);
    agent.ctl_ok(&["kill", "-s", "TERM", &id]);
    let p = agent.wait_state(&id, "stopped", T);
    assert_eq!(p["exit_signal"], 15, "{p}");
}

#[test]
fn stop_kills_the_whole_tree_including_setsid_children() {
    need_testbed!();
    let agent = Agent::start();
    let id = agent.start_cmd(&["--", "sh", "-c", "setsid sleep 1000 & sleep 1000"]);
    let p = agent.wait_state(&id, "running", T);
    let cg = p["control_group"].as_str().unwrap().to_string();
    let pids = wait_for(T, "4 processes in the scope", || {
        let v = cgroup_pids(&cg);
        (v.len() >= 4).then_some(v)
    });
    let started = Instant::now();
    agent.ctl_ok(&["stop", &id]);
    eprintln!("stop took {:?}", started.elapsed());
    let p = agent.get(&id);
    assert_eq!(p["state"], "stopped", "stop returns once stopped: {p}");
    for pid in pids {
        assert!(!alive(pid), "pid {pid} survived the stop");
    }
    let unit = p["unit"].as_str().unwrap();
    let out = run(Command::new("systemctl").args(["--user", "is-active", unit]));
    assert!(!out.status.success(), "scope still active after stop");
}

#[test]
fn a_main_exit_takes_leftover_children_with_it() {
    need_testbed!();
    let agent = Agent::start();
    // The main process exits at once, leaving a daemonized child behind.
    let id = agent.start_cmd(&["--", "sh", "-c", "setsid sleep 1000 & sleep 0.5; exit 0"]);
    let p = agent.wait_state(&id, "exited", T);
    let unit = p["unit"].as_str().unwrap().to_string();
    wait_for(T, "leftover scope gone", || {
        let out = run(Command::new("systemctl").args(["--user", "is-active", &unit]));
        (!out.status.success()).then_some(())
    });
}

#[test]
fn every_error_name_is_reachable_with_real_bad_input() {
    need_testbed!();
    let agent = Agent::start();
    // Through busctl, which prints the agent's message: each names the
    // offending key or value. The error names are checked with zbus below.
    let cases = [
        ("Start a{sv} 1 Command as 0", "Command: must not be empty"),
        ("Start a{sv} 1 Name s x", "Command: required"),
        (
            "Start a{sv} 2 Command as 1 true Bogus s x",
            "unknown spec key 'Bogus'",
        ),
        (
            "Start a{sv} 2 Command as 1 true MemoryMax s 1G",
            "MemoryMax: expected D-Bus type 't'",
        ),
        (
            "Start a{sv} 2 Command as 1 true WorkingDirectory s relative/dir",
            "is not an absolute path",
        ),
        (
            "Start a{sv} 2 Command as 1 true WorkingDirectory s /nonexistent/dir",
            "'/nonexistent/dir'",
        ),
        (
            "Start a{sv} 2 Command as 1 true Environment as 1 NOEQUALS",
            "is not KEY=VALUE",
        ),
        (
            "Start a{sv} 1 Command as 1 /no/such/binary",
            "No such file or directory",
        ),
        (
            "Start a{sv} 1 Command as 1 no-such-command-anywhere",
            "No such file or directory",
        ),
        ("Logs sut 999 10 0", "no process with id '999'"),
        ("List a{sv} 1 State s zombie", "State: 'zombie'"),
        (
            "List a{sv} 1 Keys as 2 Id Bogus",
            "Keys: unknown key 'Bogus'",
        ),
        (
            "List a{sv} 1 Keys s Id",
            "Keys: expected an array of strings",
        ),
        (
            "StopMatching a{sv} 2 Workspace s w Keys as 1 Id",
            "unknown filter key 'Keys'",
        ),
        ("StopMatching a{sv} 0", "Workspace or Session is required"),
    ];
    for (call, message) in cases {
        let args: Vec<&str> = call.split_whitespace().collect();
        let out = busctl_manager(&args);
        assert!(!out.status.success(), "{call} succeeded");
        let e = text(&out.stderr);
        assert!(e.contains(message), "{call}: {e}");
    }
    // Error names, checked exactly with a D-Bus client.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use std::collections::HashMap;
        use zbus::zvariant::Value;
        let conn = zbus::Connection::session().await.unwrap();
        let mgr = corral::api::ManagerProxy::new(&conn).await.unwrap();
        let name_of = |r: zbus::Result<(String, zbus::zvariant::OwnedObjectPath)>| match r {
            Err(zbus::Error::MethodError(n, m, _)) => (n.to_string(), m.unwrap_or_default()),
            other => panic!("expected an error, got {other:?}"),
        };
        let spec = |pairs: Vec<(&str, Value<'static>)>| -> HashMap<String, Value<'static>> {
            pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
        };
        let cmd = |c: &str| Value::from(vec![c.to_string()]);
        let (n, m) = name_of(
            mgr.start(spec(vec![("Command", Value::from(Vec::<String>::new()))]))
                .await,
        );
        assert_eq!(n, "org.corral.Supervisor1.Error.InvalidArgument");
        assert!(m.contains("Command"), "{m}");
        let (n, m) = name_of(
            mgr.start(spec(vec![
                ("Command", cmd("true")),
                ("MemoryMax", Value::from(5u32)),
            ]))
            .await,
        );
        assert_eq!(n, "org.corral.Supervisor1.Error.InvalidArgument");
        assert!(m.contains("MemoryMax") && m.contains("'t'"), "{m}");
        let (n, m) = name_of(
            mgr.start(spec(vec![("Command", cmd("/no/such/binary"))]))
                .await,
        );
        assert_eq!(n, "org.corral.Supervisor1.Error.SpawnFailed");
        assert!(m.contains("No such file or directory"), "{m}");
        let (n, _) = name_of(
            mgr.start(spec(vec![
                ("Command", cmd("true")),
                ("WorkingDirectory", Value::from("/nonexistent")),
            ]))
            .await,
        );
        assert_eq!(n, "org.corral.Supervisor1.Error.InvalidArgument");

        // SystemdError: the scope name is taken by a unit corral did not make.
        let (id, _) = mgr
            .start(spec(vec![
                (
                    "Command",
                    Value::from(vec!["sleep".to_string(), "300".to_string()]),
                ),
                ("Name", Value::from("clash")),
            ]))
            .await
            .unwrap();
        let next: u64 = id.parse::<u64>().unwrap() + 1;
        let blocker = format!("app-corral-clash-{next}.scope");
        let mut squatter = Command::new("systemd-run")
            .args([
                "--user",
                "--scope",
                "--quiet",
                &format!("--unit={blocker}"),
                "sleep",
                "300",
            ])
            .spawn()
            .unwrap();
        wait_for(T, "squatter scope", || {
            run(Command::new("systemctl").args(["--user", "is-active", &blocker]))
                .status
                .success()
                .then_some(())
        });
        let (n, m) = name_of(
            mgr.start(spec(vec![
                ("Command", cmd("true")),
                ("Name", Value::from("clash")),
            ]))
            .await,
        );
        assert_eq!(n, "org.corral.Supervisor1.Error.SystemdError");
        assert!(m.contains("UnitExists"), "{m}");
        // The failed Start left no process behind, and did not touch the squatter.
        let listed = mgr.list(HashMap::new()).await.unwrap();
        assert!(listed
            .iter()
            .all(|d| corral::api::ProcessView::from_dict(d.clone()).id != next.to_string()));
        assert!(
            run(Command::new("systemctl").args(["--user", "is-active", &blocker]))
                .status
                .success()
        );
        let _ = squatter.kill();
        let _ = squatter.wait();

        // NotFound and Busy.
        match mgr.logs("424242", 1, 0).await {
            Err(zbus::Error::MethodError(n, _, _)) => {
                assert_eq!(n.as_str(), "org.corral.Supervisor1.Error.NotFound")
            }
            other => panic!("{other:?}"),
        }
        let (id, path) = mgr
            .start(spec(vec![("Command", cmd("true"))]))
            .await
            .unwrap();
        let proc_ = corral::api::ProcessProxy::builder(&conn)
            .path(path)
            .unwrap()
            .build()
            .await
            .unwrap();
        wait_for(T, "true to exit", || {
            (agent.get(&id)["state"] == "exited").then_some(())
        });
        match proc_.kill(15).await {
            Err(zbus::Error::MethodError(n, _, _)) => {
                assert_eq!(n.as_str(), "org.corral.Supervisor1.Error.Busy")
            }
            other => panic!("{other:?}"),
        }
        match proc_.kill(0).await {
            Err(zbus::Error::MethodError(n, _, _)) => {
                assert_eq!(n.as_str(), "org.corral.Supervisor1.Error.InvalidArgument")
            }
            other => panic!("{other:?}"),
        }
    });
    // corralctl reports the agent's message and exits non-zero.
    let out = agent.ctl(&["start", "--cwd", "/nonexistent", "--", "true"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("InvalidArgument"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_failed_start_leaves_no_row_and_no_scope() {
    need_testbed!();
    let agent = Agent::start();
    let out = agent.ctl(&["start", "--name", "ghost", "--", "/no/such/binary"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("SpawnFailed"),
        "{}",
        text(&out.stderr)
    );
    assert!(agent.list(&[]).is_empty());
    // The shim exits once it has reported the failure; its scope, empty,
    // goes with it.
    wait_for(T, "no ghost scope", || {
        let units = run(Command::new("systemctl").args([
            "--user",
            "list-units",
            "--all",
            "--no-legend",
            "app-corral-ghost*",
        ]));
        text(&units.stdout).trim().is_empty().then_some(())
    });
    let db = rusqlite::Connection::open(agent.db_path()).unwrap();
    let rows: i64 = db
        .query_row("SELECT COUNT(*) FROM processes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0);
}

#[test]
fn history_is_in_the_sqlite_file() {
    need_testbed!();
    let agent = Agent::start();
    let id = agent.start_cmd(&["--", "sh", "-c", "exit 7"]);
    agent.wait_state(&id, "failed", T);
    let db = rusqlite::Connection::open(agent.db_path()).unwrap();
    let mut stmt = db
        .prepare("SELECT kind, detail FROM events WHERE process_id = ?1 ORDER BY id")
        .unwrap();
    let rows: Vec<(String, String)> = stmt
        .query_map([id.parse::<i64>().unwrap()], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(rows[0].0, "created", "{rows:?}");
    assert!(
        rows.iter().any(|(_, d)| d.contains("starting -> running")),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .any(|(_, d)| d.contains("running -> failed") && d.contains("code 7")),
        "{rows:?}"
    );
    let code: i64 = db
        .query_row(
            "SELECT exit_code FROM runs WHERE process_id = ?1",
            [id.parse::<i64>().unwrap()],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(code, 7);
    // The same history over the CLI.
    let ev = agent.ctl_ok(&["events", &id]);
    assert!(ev.contains("running -> failed"), "{ev}");
}

#[test]
fn workspaces_filter_and_stop_or_remove_together() {
    need_testbed!();
    let agent = Agent::start();
    let a1 = agent.start_cmd(&[
        "--workspace",
        "alpha",
        "--session",
        "s1",
        "--",
        "sleep",
        "300",
    ]);
    let a2 = agent.start_cmd(&[
        "--workspace",
        "alpha",
        "--session",
        "s2",
        "--",
        "sleep",
        "300",
    ]);
    let b1 = agent.start_cmd(&[
        "--workspace",
        "beta",
        "--session",
        "s1",
        "--",
        "sleep",
        "300",
    ]);
    for id in [&a1, &a2, &b1] {
        agent.wait_state(id, "running", T);
    }
    let ids = |v: Vec<serde_json::Value>| {
        let mut v: Vec<String> = v
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids(agent.list(&["--workspace", "alpha"])), {
        let mut v = vec![a1.clone(), a2.clone()];
        v.sort();
        v
    });
    assert_eq!(
        ids(agent.list(&["--session", "s1", "--workspace", "beta"])),
        vec![b1.clone()]
    );
    agent.ctl_ok(&["stop", "--workspace", "alpha"]);
    assert_eq!(agent.get(&a1)["state"], "stopped");
    assert_eq!(agent.get(&a2)["state"], "stopped");
    assert_eq!(agent.get(&b1)["state"], "running");
    assert_eq!(ids(agent.list(&["--state", "running"])), vec![b1.clone()]);
    agent.ctl_ok(&["rm", "--session", "s1"]);
    let left = ids(agent.list(&[]));
    assert_eq!(left, vec![a2.clone()], "a1 and b1 (session s1) removed");
    // Removing keeps the history.
    let ev = agent.ctl_ok(&["events", "-n", "500"]);
    assert!(ev.contains("removed"), "{ev}");
}

#[test]
fn restart_makes_a_new_run_with_the_same_id() {
    need_testbed!();
    let agent = Agent::start();
    let id = agent.start_cmd(&["--", "sleep", "300"]);
    let before = agent.wait_state(&id, "running", T);
    agent.ctl_ok(&["restart", &id]);
    let after = agent.wait_state(&id, "running", T);
    assert_ne!(before["pid"], after["pid"]);
    assert!(!alive(before["pid"].as_u64().unwrap() as u32));
    assert_eq!(after["unit"], before["unit"]);
}

#[test]
fn processes_outlive_the_agent_and_are_readopted() {
    need_testbed!();
    let mut agent = Agent::start();
    let long = agent.start_cmd(&["--name", "long", "--", "sleep", "300"]);
    let gate = Gate::new();
    let short = agent.start_cmd(&["--name", "short", "--", "sh", "-c", &gate.script(3)]);
    let p_long = agent.wait_state(&long, "running", T);
    let short_pid = agent.wait_state(&short, "running", T)["pid"]
        .as_u64()
        .unwrap() as u32;
    agent.kill(libc::SIGKILL);
    // While the agent is down the short one exits.
    gate.open();
    wait_gone(short_pid, T);
    assert!(
        alive(p_long["pid"].as_u64().unwrap() as u32),
        "workload died with the agent"
    );
    agent.spawn();
    let again = agent.get(&long);
    assert_eq!(again["state"], "running");
    assert_eq!(again["pid"], p_long["pid"]);
    let s = agent.get(&short);
    assert_eq!(s["state"], "failed", "{s}");
    assert_eq!(s["exit_code"], 3, "{s}");
    assert_eq!(agent.list(&[]).len(), 2, "no duplicates");
    // Still supervised: stop works on the adopted one.
    agent.ctl_ok(&["stop", &long]);
    assert!(!alive(p_long["pid"].as_u64().unwrap() as u32));
}

#[test]
fn config_errors_name_the_key() {
    need_testbed!();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "sample_interval = \"0.1s\"\n").unwrap();
    let out = run(Command::new(bin("corrald")).args(["--config", cfg.to_str().unwrap()]));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("sample_interval"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(&cfg, "no_such_key = 1\n").unwrap();
    let out = run(Command::new(bin("corrald")).args(["--config", cfg.to_str().unwrap()]));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no_such_key"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn corralctl_start_runs_like_a_shell_would() {
    need_testbed!();
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let out = run(Command::new(bin("corralctl"))
        .args(["start", "--", "sh", "-c", "pwd; echo \"var=$MY_VAR\""])
        .current_dir(dir.path())
        .env("MY_VAR", "from-the-caller"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    agent.wait_state(&id, "exited", T);
    let logs = agent.ctl_ok(&["logs", &id]);
    let cwd = dir.path().canonicalize().unwrap();
    assert!(logs.contains(cwd.to_str().unwrap()), "{logs}");
    assert!(logs.contains("var=from-the-caller"), "{logs}");
    // --clean-env: only what is given, neither the caller's nor the agent's.
    let id = agent.start_cmd(&["--clean-env", "--env", "ONLY=this", "--", "/usr/bin/env"]);
    agent.wait_state(&id, "exited", T);
    let logs = agent.ctl_ok(&["logs", &id]);
    assert!(logs.contains("ONLY=this"), "{logs}");
    assert!(!logs.contains("HOME="), "{logs}");
}

/// `logs -f` returns once the process has ended, with every line and the
/// shim's `exited …` line (README "Output and logs"). The race it guards
/// (the shim logs its last lines after it records the exit) is too short
/// to hit here: this checks the contract, not the race.
#[test]
fn logs_f_follows_to_the_last_line_and_returns() {
    need_testbed!();
    let agent = Agent::start();
    let id = agent.start_cmd(&[
        "--",
        "sh",
        "-c",
        "echo first; sleep 1; seq 1 20000; echo last-line",
    ]);
    agent.wait_state(&id, "running", T);
    let mut follow = Command::new(bin("corralctl"))
        .args(["logs", "-f", "-n", "0", &id])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read while it runs: 20,000 lines are more than a pipe holds.
    let mut stdout = follow.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
        out
    });
    let status = wait_for(T, "logs -f to return", || follow.try_wait().unwrap());
    assert!(status.success());
    let out = reader.join().unwrap();
    assert!(out.contains("first"), "{out}");
    let tail = &out[out.floor_char_boundary(out.len().saturating_sub(300))..];
    for line in ["\n20000\n", "last-line", "exited code 0"] {
        assert!(
            out.contains(line),
            "{line:?} missing; the output ends: {tail}"
        );
    }
}

#[test]
fn io_bytes_come_from_io_stat_where_the_io_controller_is_delegated() {
    need_testbed!();
    let agent = Agent::start();
    let gate = Gate::new();
    // Write 8 MB to a real block device (not tmpfs), synced, then wait.
    let script = format!(
        "f=/var/tmp/corral-io.$$; dd if=/dev/zero of=$f bs=1M count=8 conv=fsync 2>/dev/null; rm -f $f; {}",
        gate.script(0)
    );
    let id = agent.start_cmd(&["--", "sh", "-c", &script]);
    let p = agent.wait_state(&id, "running", T);
    let cg = p["control_group"].as_str().unwrap().to_string();
    // Only a cgroup v2 hierarchy with the io controller has io.stat.
    let has_io_stat = std::path::Path::new(&format!("/sys/fs/cgroup{cg}/io.stat")).exists();
    if has_io_stat {
        let p = wait_for(T, "8 MB written", || {
            let p = agent.get(&id);
            (p["io_write_bytes"].as_u64().unwrap_or(0) >= 8 << 20).then_some(p)
        });
        eprintln!("io.stat: wrote {} bytes", p["io_write_bytes"]);
    } else {
        // Hybrid host (v1 blkio is not set up by the user manager): unknown, not 0.
        assert!(p["io_write_bytes"].is_null(), "{p}");
        eprintln!("no io.stat for {cg}: I/O reported as unknown");
    }
    gate.open();
    agent.wait_state(&id, "exited", T);
}

/// The logout warning: a user who does not linger is told, once per login
/// session (a stamp in `$XDG_RUNTIME_DIR`), that `--persistent` processes
/// end at logout; `list` gives it from the records it just listed.
#[test]
fn list_warns_once_that_persistent_processes_end_at_logout() {
    need_testbed!();
    let agent = Agent::start();
    let id = agent.start_cmd(&["--persistent", "--name", "db", "--", "sleep", "300"]);
    agent.wait_state(&id, "running", T);
    let runtime = tempfile::tempdir().unwrap();
    let list = || {
        run(Command::new(bin("corralctl"))
            .arg("list")
            .env("XDG_RUNTIME_DIR", runtime.path()))
    };
    let user = text(&run(Command::new("id").arg("-un")).stdout)
        .trim()
        .to_string();
    let lingers = std::path::Path::new("/var/lib/systemd/linger")
        .join(&user)
        .exists();
    let first = list();
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(
        text(&first.stdout).contains("db"),
        "{}",
        text(&first.stdout)
    );
    let warning = format!("1 persistent process(es) will be stopped when you log out, because lingering is off for {user}");
    if lingers {
        assert!(
            !text(&first.stderr).contains("lingering"),
            "{}",
            text(&first.stderr)
        );
        return;
    }
    assert!(
        text(&first.stderr).contains(&warning),
        "{:?}",
        text(&first.stderr)
    );
    let again = list();
    assert!(again.status.success());
    assert!(
        !text(&again.stderr).contains("lingering"),
        "{:?}",
        text(&again.stderr)
    );
}

/// `List`'s `Keys` option: each record carries the keys asked for and no
/// other; without it, every property and `Path`.
#[tokio::test(flavor = "current_thread")]
async fn list_carries_only_the_keys_asked_for() {
    need_testbed!();
    let agent = Agent::start();
    let id = agent.start_cmd(&["--name", "k", "--", "sleep", "300"]);
    agent.wait_state(&id, "running", T);
    let conn = zbus::Connection::session().await.unwrap();
    let mgr = corral::api::ManagerProxy::new(&conn).await.unwrap();
    let keys = zbus::zvariant::Value::from(vec!["Id", "State", "Path"]);
    let some = mgr
        .list(std::collections::HashMap::from([(
            "Keys".to_string(),
            keys,
        )]))
        .await
        .unwrap();
    assert_eq!(some.len(), 1);
    let mut got: Vec<&str> = some[0].keys().map(String::as_str).collect();
    got.sort();
    assert_eq!(got, ["Id", "Path", "State"]);
    assert_eq!(<&str>::try_from(&some[0]["Id"]).unwrap(), id);
    let all = mgr.list(std::collections::HashMap::new()).await.unwrap();
    assert_eq!(all[0].len(), corral::api::PROPERTIES.len() + 1);
}
