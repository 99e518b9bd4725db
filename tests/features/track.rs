//! Track and Untrack: a `python3 -m http.server` started outside corral,
//! with a child it forked, taken over whole; its usage, stop, end seen by
//! its pidfd (`untracked-exit`, no code), untrack, Restart as a launched
//! process, adoption across an agent restart, and the named refusals.

use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

const LIMIT: Duration = Duration::from_secs(15);

/// A server "someone started in a terminal": not the test's child (the
/// outer shell exits, so it is reparented), with a `sleep` it forked.
struct Outside {
    pid: u32,
    child: u32,
    port: u16,
}

impl Outside {
    fn start() -> Outside {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let script = format!(
            "(sleep 1000 & exec python3 -m http.server {port} --bind 127.0.0.1) >/dev/null 2>&1 & echo $!"
        );
        let out = run(Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::piped()));
        let pid: u32 = text(&out.stdout).trim().parse().expect("server pid");
        let child = wait_for(LIMIT, "the server's child", || {
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .ok()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        });
        let o = Outside { pid, child, port };
        wait_for(LIMIT, "the server to answer", || o.answers().then_some(()));
        o
    }

    fn answers(&self) -> bool {
        TcpStream::connect(("127.0.0.1", self.port)).is_ok()
    }

    fn signal(&self, pid: u32, signal: i32) {
        // SAFETY: kill(2) of processes this test started.
        unsafe { libc::kill(pid as i32, signal) };
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        self.signal(self.pid, libc::SIGKILL);
        self.signal(self.child, libc::SIGKILL);
    }
}

fn track(agent: &Agent, o: &Outside, extra: &[&str]) -> String {
    let pid = o.pid.to_string();
    let mut args = vec!["track"];
    args.extend_from_slice(extra);
    args.push(&pid);
    agent.ctl_ok(&args).trim().to_string()
}

#[test]
fn a_tracked_tree_moves_whole_is_counted_and_stops_whole() {
    if !testbed_available() {
        return;
    }
    let agent = Agent::start();
    let o = Outside::start();
    let id = track(&agent, &o, &["--name", "web"]);
    let p = agent.wait_state(&id, "running", LIMIT);
    assert_eq!(p["tracked"], true, "{p}");
    assert_eq!(p["pid"], o.pid, "{p}");
    assert_eq!(p["name"], "web");
    let cg = p["control_group"].as_str().unwrap().to_string();
    assert!(cg.ends_with(&format!("app-corral-web-{id}.scope")), "{cg}");
    let pids = cgroup_pids(&cg);
    assert!(
        pids.contains(&o.pid) && pids.contains(&o.child),
        "{pids:?} lacks {} or {}",
        o.pid,
        o.child
    );
    // Usage comes from the new scope's cgroup.
    wait_for(LIMIT, "usage of the tracked tree", || {
        let p = agent.get(&id);
        (p["tasks"].as_u64().unwrap_or(0) >= 2 || p["memory_bytes"].as_u64().unwrap_or(0) > 0)
            .then_some(())
    });
    assert_eq!(process_property(&id, "Tracked"), "b true");
    // The relaunch recipe is the process's own.
    // (argv[0] as the kernel shows it: a pyenv shim execs a full path.)
    let argv = p["command"].as_array().unwrap();
    assert!(argv[0].as_str().unwrap().ends_with("python3"), "{argv:?}");
    assert_eq!(
        argv[1..],
        [
            "-m",
            "http.server",
            &o.port.to_string(),
            "--bind",
            "127.0.0.1"
        ]
    );
    let status = agent.ctl_ok(&["status", &id]);
    assert!(status.contains("output not captured"), "{status}");
    agent.ctl_ok(&["stop", &id]);
    let p = agent.wait_state(&id, "stopped", LIMIT);
    assert_eq!(p["exit_reason"], "stopped");
    wait_gone(o.pid, LIMIT);
    wait_gone(o.child, LIMIT);
}

#[test]
fn an_outside_kill_is_seen_as_untracked_exit_with_no_code() {
    if !testbed_available() {
        return;
    }
    let agent = Agent::start();
    let o = Outside::start();
    let id = track(&agent, &o, &[]);
    agent.wait_state(&id, "running", LIMIT);
    o.signal(o.pid, libc::SIGTERM);
    // Seen by the pidfd, within the latency of a launched process's exit.
    let p = agent.wait_state(&id, "exited", Duration::from_secs(5));
    assert_eq!(p["exit_reason"], "untracked-exit", "{p}");
    assert!(p["exit_code"].is_null(), "an exit code was invented: {p}");
    // The child it left behind does not outlive it in the scope.
    wait_gone(o.child, LIMIT);
}

#[test]
fn untrack_leaves_the_tree_running_outside_corrals_scopes() {
    if !testbed_available() {
        return;
    }
    let agent = Agent::start();
    let o = Outside::start();
    let id = track(&agent, &o, &["--name", "keep"]);
    agent.wait_state(&id, "running", LIMIT);
    agent.ctl_ok(&["untrack", &id]);
    assert!(agent.list(&[]).iter().all(|p| p["id"] != id.as_str()));
    let cg = std::fs::read_to_string(format!("/proc/{}/cgroup", o.pid)).unwrap();
    assert!(cg.contains("corral-untracked-keep-"), "{cg}");
    assert!(alive(o.pid) && alive(o.child) && o.answers());
    let events = agent.ctl_ok(&["events", "-n", "100"]);
    assert!(events.contains("untracked"), "{events}");
    // The next agent (same state) does not stop it either. (Killed, not
    // dropped: the test agent's Drop stops corral's whole slice.)
    let mut agent = agent;
    agent.kill(libc::SIGKILL);
    agent.spawn();
    agent.list(&[]);
    assert!(alive(o.pid) && o.answers());
    let _ =
        run(Command::new("systemctl").args(["--user", "stop", "corral-untracked-keep-*.scope"]));
}

#[test]
fn restart_launches_a_tracked_process_as_a_supervised_one() {
    if !testbed_available() {
        return;
    }
    let agent = Agent::start();
    let o = Outside::start();
    let id = track(&agent, &o, &["--name", "again"]);
    agent.wait_state(&id, "running", LIMIT);
    agent.ctl_ok(&["restart", &id]);
    let p = agent.wait_state(&id, "running", LIMIT);
    assert_eq!(p["tracked"], false, "{p}");
    assert_ne!(p["pid"], o.pid);
    wait_gone(o.pid, LIMIT);
    wait_for(LIMIT, "the relaunched server to answer", || {
        o.answers().then_some(())
    });
    agent.ctl_ok(&["stop", &id]);
    agent.wait_state(&id, "stopped", LIMIT);
}

#[test]
fn a_tracked_process_is_adopted_after_an_agent_restart() {
    if !testbed_available() {
        return;
    }
    let mut agent = Agent::start();
    let o = Outside::start();
    let id = track(&agent, &o, &[]);
    agent.wait_state(&id, "running", LIMIT);
    agent.kill(libc::SIGKILL);
    agent.spawn();
    let p = agent.wait_state(&id, "running", LIMIT);
    assert_eq!(p["tracked"], true, "{p}");
    let events = agent.ctl_ok(&["events", &id]);
    assert!(events.contains("re-adopted"), "{events}");
    // Its pidfd was opened again: the end is still seen by event.
    o.signal(o.pid, libc::SIGKILL);
    let p = agent.wait_state(&id, "exited", Duration::from_secs(5));
    assert_eq!(p["exit_reason"], "untracked-exit", "{p}");
}

#[test]
fn refusals_have_names() {
    if !testbed_available() {
        return;
    }
    let agent = Agent::start();
    let refused = |pid: &str, want: &str| {
        let out = agent.ctl(&["track", pid]);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "track {pid} succeeded");
        assert!(
            err.contains("(NotTrackable)") && err.contains(want),
            "track {pid}: {err}"
        );
    };
    refused("1", "PID 1");
    refused(&agent.pid().to_string(), "corrald itself");
    let o = Outside::start();
    let id = track(&agent, &o, &[]);
    agent.wait_state(&id, "running", LIMIT);
    refused(&o.pid.to_string(), "already supervised");
    // Its child is in corral's scope now: refused as well.
    refused(&o.child.to_string(), "already supervised");
    let gone = agent.ctl(&["track", "4000000"]);
    assert!(
        text(&gone.stderr).contains("(NotFound)"),
        "{}",
        text(&gone.stderr)
    );
}

/// A server started by corral with an HTTP health check: SIGSTOP makes
/// it stop answering (the kernel still accepts connections, so only an
/// HTTP probe sees it), SIGCONT makes it answer again.
fn start_checked_server(agent: &Agent, extra: &[&str]) -> (String, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let url = format!("http://127.0.0.1:{port}/");
    let port_arg = port.to_string();
    let mut args = vec![
        "--name",
        "checked",
        "--health-http",
        &url,
        "--health-interval",
        "200ms",
        // Long enough that a server slowed by a busy machine (the VM
        // tier's emulated CPU shared with other work) still answers in
        // time; a stopped one fails it all the same.
        "--health-timeout",
        "1s",
        "--health-retries",
        "2",
    ];
    // A server that is slow to come up (the VM tier emulates its CPU; a
    // restarted one too) is not judged until it first answers, unless the
    // test asks for another start period.
    if !extra.contains(&"--health-start-period") {
        args.extend_from_slice(&["--health-start-period", "60s"]);
    }
    args.extend_from_slice(extra);
    args.extend_from_slice(&[
        "--",
        "python3",
        "-m",
        "http.server",
        &port_arg,
        "--bind",
        "127.0.0.1",
    ]);
    (agent.start_cmd(&args), port)
}

fn wait_health(agent: &Agent, id: &str, health: &str) -> serde_json::Value {
    let start = std::time::Instant::now();
    loop {
        let p = agent.get(id);
        if p["health"] == health {
            return p;
        }
        assert!(
            start.elapsed() < LIMIT,
            "{id} not {health} after {LIMIT:?}: {p}\nagent log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_http_check_follows_sigstop_and_sigcont() {
    if !testbed_available() {
        return;
    }
    let agent = Agent::start();
    let (id, _) = start_checked_server(&agent, &[]);
    let p = agent.wait_state(&id, "running", LIMIT);
    let pid = p["pid"].as_u64().unwrap() as i32;
    wait_health(&agent, &id, "healthy");
    // SAFETY: kill(2) of the process this test started through corral.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let p = wait_health(&agent, &id, "unhealthy");
    let last = p["health_results"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last[1], false, "{p}");
    assert!(last[2].as_str().unwrap().contains("timed out"), "{p}");
    assert_eq!(p["state"], "running", "OnUnhealthy=none must not act: {p}");
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    wait_health(&agent, &id, "healthy");
    let status = agent.ctl_ok(&["status", &id]);
    assert!(
        status.contains("Health: healthy (newest first: pass"),
        "{status}"
    );
    assert!(status.contains("HTTP 200"), "{status}");
    let events = agent.ctl_ok(&["events", &id]);
    assert!(events.contains("healthy -> unhealthy"), "{events}");
    assert!(events.contains("unhealthy -> healthy"), "{events}");
    let list = agent.ctl_ok(&["list"]);
    assert!(
        list.contains("HEALTH") && list.contains("healthy"),
        "{list}"
    );
}

/// `python3 -m http.server` answers `/` with a directory listing: a
/// check expecting that text passes, one expecting other text fails and
/// says why.
#[test]
fn an_http_check_reads_the_body_when_asked() {
    if !testbed_available() {
        return;
    }
    let agent = Agent::start();
    let (listing, _) = start_checked_server(
        &agent,
        &[
            "--health-expect-status",
            "200-299",
            "--health-expect-body",
            "Directory listing",
        ],
    );
    // No start period: it never passes, so it must turn unhealthy.
    let (missing, _) = start_checked_server(
        &agent,
        &[
            "--health-expect-body",
            "no-such-text",
            "--health-start-period",
            "0s",
        ],
    );
    let p = wait_health(&agent, &listing, "healthy");
    let last = p["health_results"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last[2], "HTTP 200, body has 'Directory listing'", "{p}");
    // Unhealthy at first too, while python is not yet listening.
    let lacks = "HTTP 200, body lacks 'no-such-text'";
    wait_for(LIMIT, "an unhealthy result for the body", || {
        let p = agent.get(&missing);
        let results = p["health_results"].as_array()?.clone();
        let last = results.last()?;
        (p["health"] == "unhealthy" && last[2] == lacks).then_some(())
    });
    agent.ctl_ok(&["stop", &listing]);
    agent.ctl_ok(&["stop", &missing]);
}

#[test]
fn an_unhealthy_process_is_restarted_when_asked() {
    if !testbed_available() {
        return;
    }
    let agent = Agent::start();
    let (id, port) = start_checked_server(&agent, &["--on-unhealthy", "restart"]);
    let p = agent.wait_state(&id, "running", LIMIT);
    let pid = p["pid"].as_u64().unwrap();
    wait_health(&agent, &id, "healthy");
    assert_eq!(p["restarts"], 0);
    // SAFETY: kill(2) of the process this test started through corral.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    let p = wait_for(LIMIT, "a restart of the unhealthy server", || {
        let p = agent.get(&id);
        (p["restarts"] == 1 && p["state"] == "running").then_some(p)
    });
    assert_ne!(p["pid"], pid, "{p}");
    wait_gone(pid as u32, LIMIT);
    wait_health(&agent, &id, "healthy");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
}

/// A TCP check of a loopback address is answered from the kernel's table
/// of listening sockets: healthy while the program listens, unhealthy
/// (with the reason) once it closes its socket, though it keeps running.
#[test]
fn a_tcp_check_follows_the_listening_socket() {
    if !testbed_available() {
        return;
    }
    let agent = Agent::start();
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let script = format!(
        "import socket, signal\n\
         s = socket.socket()\n\
         s.bind(('127.0.0.1', {port}))\n\
         s.listen()\n\
         signal.signal(signal.SIGUSR1, lambda *_: s.close())\n\
         while True: signal.pause()\n"
    );
    let address = format!("127.0.0.1:{port}");
    let id = agent.start_cmd(&[
        "--name",
        "listener",
        "--health-tcp",
        &address,
        "--health-interval",
        "200ms",
        "--health-retries",
        "1",
        "--health-start-period",
        "60s",
        "--",
        "python3",
        "-c",
        &script,
    ]);
    let p = agent.wait_state(&id, "running", LIMIT);
    let pid = p["pid"].as_u64().unwrap() as i32;
    let last = |p: &serde_json::Value| {
        p["health_results"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone()
    };
    let p = wait_health(&agent, &id, "healthy");
    assert_eq!(last(&p)[2], "accepting connections", "{p}");
    // SAFETY: kill(2) of the process this test started through corral.
    unsafe { libc::kill(pid, libc::SIGUSR1) };
    let p = wait_health(&agent, &id, "unhealthy");
    assert_eq!(last(&p)[1], false, "{p}");
    assert_eq!(last(&p)[2], format!("nothing listens on {address}"), "{p}");
    assert_eq!(p["state"], "running", "{p}");
}

#[test]
fn a_bad_health_check_is_refused_by_name() {
    if !testbed_available() {
        return;
    }
    let agent = Agent::start();
    let out = agent.ctl(&["start", "--health-http", "https://x/", "--", "true"]);
    let err = text(&out.stderr);
    assert!(
        err.contains("(InvalidArgument)") && err.contains("HealthCheck.Address"),
        "{err}"
    );
    let long = "x".repeat(5000);
    let out = agent.ctl(&[
        "start",
        "--health-http",
        "http://127.0.0.1:1/",
        "--health-expect-body",
        &long,
        "--",
        "true",
    ]);
    let err = text(&out.stderr);
    assert!(
        err.contains("(InvalidArgument)") && err.contains("HealthCheck.ExpectBody"),
        "{err}"
    );
}

#[test]
fn an_exec_check_runs_in_the_process_scope_and_environment() {
    if !testbed_available() {
        return;
    }
    let agent = Agent::start();
    let id = agent.start_cmd(&[
        "--name",
        "execd",
        "--env",
        "PROBE_X=7",
        "--health-exec",
        "grep -q app-corral-execd- /proc/self/cgroup && test \"$PROBE_X\" = 7",
        "--health-interval",
        "200ms",
        "--",
        "sleep",
        "1000",
    ]);
    agent.wait_state(&id, "running", LIMIT);
    let p = wait_health(&agent, &id, "healthy");
    assert_eq!(p["health_results"][0][2], "exit code 0", "{p}");
    agent.ctl_ok(&["stop", &id]);
    let p = agent.wait_state(&id, "stopped", LIMIT);
    assert_eq!(p["health"], "none", "{p}");
}

#[test]
fn children_forked_while_the_tree_moves_are_not_left_behind() {
    if !testbed_available() {
        return;
    }
    let agent = Agent::start();
    // Forks 200 children as fast as it can, so some are forked while
    // Track is scanning and moving the tree.
    let script = "i=0; while [ $i -lt 200 ]; do sleep 1000 & i=$((i+1)); done; exec sleep 1000";
    let out = run(Command::new("sh")
        .args(["-c", &format!("sh -c '{script}' >/dev/null 2>&1 & echo $!")])
        .stdout(Stdio::piped()));
    let pid: u32 = text(&out.stdout).trim().parse().expect("forker pid");
    let id = agent.ctl_ok(&["track", "--name", "forker", &pid.to_string()]);
    let id = id.trim();
    let p = agent.wait_state(id, "running", LIMIT);
    let cg = p["control_group"].as_str().unwrap().to_string();
    let children = |pid: u32| -> Vec<u32> {
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|c| c.parse().ok())
            .collect()
    };
    let all = wait_for(LIMIT, "200 children", || {
        let c = children(pid);
        (c.len() >= 200).then_some(c)
    });
    let in_scope = cgroup_pids(&cg);
    let left: Vec<&u32> = all.iter().filter(|c| !in_scope.contains(c)).collect();
    agent.ctl_ok(&["stop", id]);
    assert!(left.is_empty(), "left behind: {left:?}");
    wait_gone(pid, LIMIT);
}

/// With a 60 s tick, anything seen sooner came from an event: the
/// tracked process's end (its pidfd) and its health (`HealthChanged`;
/// a Track option here).
#[tokio::test]
async fn a_tracked_end_and_health_changes_arrive_as_signals() {
    use futures_util::StreamExt;
    if !testbed_available() {
        return;
    }
    let agent = Agent::start_with("sample_interval = 60\nstop_timeout = 3\n");
    let conn = zbus::Connection::session().await.unwrap();
    let mgr = corral::api::ManagerProxy::new(&conn).await.unwrap();
    let mut states = mgr.receive_process_state_changed().await.unwrap();
    let mut health = mgr.receive_health_changed().await.unwrap();
    let o = Outside::start();
    let check = corral::api::HealthCheck {
        kind: corral::api::ProbeKind::Tcp,
        command: vec![],
        address: format!("127.0.0.1:{}", o.port),
        interval_ms: 200,
        timeout_ms: 500,
        start_period_ms: 0,
        retries: 1,
        on_unhealthy: corral::api::OnUnhealthy::None,
        expect_status: None,
        expect_body: None,
    };
    let options = std::collections::HashMap::from([(
        "HealthCheck".to_string(),
        zbus::zvariant::Value::from(check.to_dict()),
    )]);
    let (id, _) = mgr.track(o.pid, options).await.unwrap();
    let within = Duration::from_secs(5);
    let changed = tokio::time::timeout(within, async {
        while let Some(sig) = health.next().await {
            let a = sig.args().unwrap();
            if a.id == id {
                return (a.old_health.to_string(), a.new_health.to_string());
            }
        }
        panic!("signal stream ended");
    })
    .await
    .expect("HealthChanged within 5 s");
    assert_eq!(changed, ("starting".to_string(), "healthy".to_string()));
    o.signal(o.pid, libc::SIGKILL);
    let t = std::time::Instant::now();
    tokio::time::timeout(within, async {
        while let Some(sig) = states.next().await {
            let a = sig.args().unwrap();
            if a.id == id && a.new_state == "exited" {
                return;
            }
        }
        panic!("signal stream ended");
    })
    .await
    .expect("the end of a tracked process is an event");
    eprintln!("tracked exit -> signal: {:?}", t.elapsed());
    let p = agent.get(&id);
    assert_eq!(p["exit_reason"], "untracked-exit", "{p}");
    assert_eq!(p["health"], "none", "{p}");
}
