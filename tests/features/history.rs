//! History, `top` and metrics (issue 11 items 6-8): `stats` shows samples
//! and retention prunes them; `top` renders in a real terminal (tmux) and
//! reacts to keys; promtool accepts `corralctl metrics` and the /metrics
//! listener's text.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;
use serde_json::Value as Json;

const T: Duration = Duration::from_secs(30);

macro_rules! need_testbed {
    () => {
        if !testbed_available() {
            return;
        }
    };
}

/// Short tiers so a test sees sampling, rollup and retention in seconds.
const FAST_HISTORY: &str = "sample_interval = 1\nstop_timeout = 3\nhistory_resolution = \"2s\"\nhistory_raw_retention = \"2s\"\nhistory_retention = \"4s\"\n";

fn points(agent: &Agent, id: &str) -> Vec<Json> {
    let out = agent.ctl_ok(&["--json", "stats", id, "--since", "1h"]);
    serde_json::from_str::<Vec<Json>>(&out).unwrap_or_else(|e| panic!("stats --json: {e}: {out}"))
}

#[test]
fn stats_shows_samples_and_retention_prunes_them() {
    need_testbed!();
    let agent = Agent::start_with(FAST_HISTORY);
    let id = agent.start_cmd(&["--name", "sleeper", "--", "sleep", "600"]);
    agent.wait_state(&id, "running", T);
    let first = wait_for(T, "three samples", || {
        let p = points(&agent, &id);
        (p.len() >= 3 && p.iter().any(|p| p["memory_bytes"].as_u64().is_some())).then_some(p)
    });
    assert!(
        first.iter().all(|p| p["tasks"].as_u64() != Some(0)),
        "{first:?}"
    );
    let page = agent.ctl_ok(&["stats", "sleeper", "--since", "10m"]);
    assert!(
        page.starts_with(&format!("process {id} (sleeper): ")),
        "{page}"
    );
    for label in ["cpu", "memory", "tasks"] {
        assert!(
            page.lines()
                .any(|l| l.starts_with(label) && l.contains("max ")),
            "{label}: {page}"
        );
    }
    // Retention: the first point goes (raw after 2 s, its average after
    // 4 s), and the history never holds more than the tiers allow.
    let t0 = first[0]["at_us"].as_u64().unwrap();
    wait_for(T, "the oldest sample pruned", || {
        let p = points(&agent, &id);
        (p[0]["at_us"].as_u64().unwrap() > t0 + 2_000_000).then_some(())
    });
    let kept = points(&agent, &id);
    assert!(
        kept.len() <= 8,
        "raw 2 s + 4 s of 2 s averages (+ the ticks in flight): {kept:?}"
    );
    // An unknown process is a named error, not an empty chart.
    let out = agent.ctl(&["stats", "999999"]);
    assert!(!out.status.success());
}

/// promtool's verdict on `text`; None when promtool is not installed.
fn promtool(text: &str) -> Option<(bool, String)> {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Some((
        out.status.success(),
        format!("{}{}", text_of(&out.stdout), text_of(&out.stderr)),
    ))
}

fn text_of(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn check_with_promtool(what: &str, metrics: &str) {
    match promtool(metrics) {
        Some((ok, verdict)) => assert!(ok, "promtool rejects {what}: {verdict}\n{metrics}"),
        None if std::env::var_os("CORRAL_TEST_REQUIRE").is_some() => {
            panic!("promtool is not installed (Debian: prometheus); scripts/test installs it")
        }
        None => eprintln!("SKIPPED promtool check of {what}: promtool not installed"),
    }
}

/// One HTTP GET on loopback: (status line, body).
fn get(port: u16, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to /metrics");
    s.set_read_timeout(Some(T)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

#[test]
fn metrics_pass_promtool_from_the_cli_and_the_listener() {
    need_testbed!();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let agent = Agent::start_with(&format!(
        "{FAST_HISTORY}metrics_listen = \"127.0.0.1:{port}\"\n"
    ));
    let id = agent.start_cmd(&[
        "--name",
        "web \"quoted\"",
        "-w",
        "shop",
        "--",
        "sleep",
        "600",
    ]);
    agent.wait_state(&id, "running", T);
    let stopped = agent.start_cmd(&["--name", "done", "--", "true"]);
    agent.wait_state(&stopped, "exited", T);
    let cli = wait_for(T, "memory in the metrics", || {
        let m = agent.ctl_ok(&["metrics"]);
        m.contains("corral_process_memory_bytes{").then_some(m)
    });
    assert!(cli.ends_with("# EOF\n"), "{cli}");
    let labels =
        format!("id=\"{id}\",name=\"web \\\"quoted\\\"\",workspace=\"shop\",state=\"running\"");
    assert!(
        cli.contains(&format!("corral_process_running{{{labels}}} 1")),
        "{cli}"
    );
    assert!(
        cli.contains(&format!("corral_process_restarts{{{labels}}} 0")),
        "{cli}"
    );
    assert!(
        cli.contains("corral_workspace_processes{workspace=\"shop\",state=\"running\"} 1"),
        "{cli}"
    );
    check_with_promtool("corralctl metrics", &cli);

    let (status, body) = get(port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        body.ends_with("# EOF\n") && body.contains(&labels),
        "{body}"
    );
    check_with_promtool("/metrics", &body);
    let (status, _) = get(port, "/");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
}

#[test]
fn a_non_loopback_metrics_address_is_refused() {
    need_testbed!();
    let config = tempfile::tempdir().unwrap();
    let path = config.path().join("corrald.toml");
    std::fs::write(&path, "metrics_listen = \"0.0.0.0:9101\"\n").unwrap();
    let out = run(Command::new(bin("corrald"))
        .arg("--user")
        .arg("--config")
        .arg(&path));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("metrics_allow_remote"),
        "{}",
        text(&out.stderr)
    );
}

/// A tmux server of this test's own, so nothing else's sessions are touched.
struct Tmux(String);

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        run(Command::new("tmux").arg("-L").arg(&self.0).args(args))
    }

    fn pane(&self) -> String {
        text(&self.cmd(&["capture-pane", "-p", "-t", "top"]).stdout)
    }

    fn wait_pane(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        wait_for(T, what, || {
            let p = self.pane();
            f(&p).then_some(p)
        })
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

#[test]
fn top_renders_sorts_and_stops_in_a_real_terminal() {
    need_testbed!();
    let agent = Agent::start();
    let zeta = agent.start_cmd(&["--name", "zeta", "--", "sleep", "600"]);
    let alpha = agent.start_cmd(&["--name", "alpha", "--", "sleep", "600"]);
    agent.wait_state(&zeta, "running", T);
    agent.wait_state(&alpha, "running", T);

    // Not a terminal: one plain table.
    let plain = agent.ctl_ok(&["top"]);
    assert!(
        plain.contains("zeta") && plain.contains("alpha") && plain.contains("WORKSPACE"),
        "{plain}"
    );

    let tmux = Tmux(format!("corral-top-{}", std::process::id()));
    let ctl = bin("corralctl");
    let out = tmux.cmd(&[
        "new-session",
        "-d",
        "-x",
        "120",
        "-y",
        "40",
        "-s",
        "top",
        ctl.to_str().unwrap(),
        "top",
    ]);
    assert!(out.status.success(), "tmux: {}", text(&out.stderr));
    tmux.wait_pane("both processes on screen", |p| {
        p.contains("alpha") && p.contains("zeta")
    });
    tmux.cmd(&["send-keys", "-t", "top", "n"]);
    let pane = tmux.wait_pane("sorted by name", |p| p.contains("sorted by name"));
    let row = |name: &str| pane.lines().position(|l| l.contains(name)).unwrap();
    assert!(row("alpha") < row("zeta"), "{pane}");
    // The selection starts on the first row: alpha. Stop it.
    tmux.cmd(&["send-keys", "-t", "top", "s"]);
    agent.wait_state(&alpha, "stopped", T);
    tmux.wait_pane("alpha shown stopped", |p| {
        p.lines()
            .any(|l| l.contains("alpha") && l.contains("stopped"))
    });
    assert_eq!(agent.get(&zeta)["state"], "running");
    // Freeze: an agent without workspace objects answers with an error,
    // which the status line shows.
    tmux.cmd(&["send-keys", "-t", "top", "f"]);
    tmux.wait_pane("the freeze outcome", |p| {
        p.contains("freeze default:") || p.contains("frozen")
    });
    tmux.cmd(&["send-keys", "-t", "top", "q"]);
    wait_for(T, "top to quit", || {
        (!tmux.cmd(&["has-session", "-t", "top"]).status.success()).then_some(())
    });
}
