//! File watches: a project process with `watch` brought up by `corralctl
//! up`, restarted once (one new run) after a burst of changes in a directory made after
//! it started (new directories get watches), with the cause among its
//! events; a changed file under an ignore glob or outside the globs
//! restarts nothing; an agent killed and started again watches again.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use crate::common::*;

const LIMIT: Duration = Duration::from_secs(30);

/// The `app` process of the workspace.
fn app(agent: &Agent) -> Json {
    agent
        .list(&["-w", "watched"])
        .into_iter()
        .find(|p| p["name"] == "app")
        .unwrap_or_else(|| panic!("no app process\nagent log:\n{}", agent.log()))
}

/// When its current run started, if it is running.
fn running_since(agent: &Agent) -> Option<u64> {
    let p = app(agent);
    (p["state"] == "running").then(|| p["started_at"].as_u64().expect("started_at"))
}

/// How many restarts the watcher made (it records each as an event).
fn watch_restarts(agent: &Agent, id: &str) -> usize {
    agent
        .ctl_ok(&["events", id, "-n", "1000"])
        .matches("changed: restarting")
        .count()
}

#[test]
fn a_watched_change_restarts_once_ignored_ones_do_not_and_a_new_agent_watches_too() {
    if !testbed_available() {
        return;
    }
    let mut agent = Agent::start();
    let dir = tempfile::Builder::new()
        .prefix("corral-watch.")
        .tempdir()
        .expect("tempdir");
    let file = dir.path().join("corral.toml");
    std::fs::write(
        &file,
        r#"
workspace = "watched"

[processes.app]
command = "echo started; exec sleep 1000"
watch = ["src/**/*.txt"]
watch_ignore = ["src/skip/**"]
watch_debounce = "200ms"
"#,
    )
    .unwrap();
    let out = run(Command::new(bin("corralctl"))
        .args(["up", "-f"])
        .arg(&file)
        .current_dir(dir.path()));
    assert!(out.status.success(), "up: {}", text(&out.stderr));
    let first = wait_for(LIMIT, "app to run", || running_since(&agent));
    let id = app(&agent)["id"].as_str().unwrap().to_string();

    // A burst in directories that did not exist when the watch began.
    let nested = dir.path().join("src/a");
    std::fs::create_dir_all(&nested).unwrap();
    std::fs::write(nested.join("b.txt"), "1").unwrap();
    std::fs::write(nested.join("b.txt"), "2").unwrap();
    // A client's restart (which this is) resets the `restarts` count, so
    // a new run is what shows it.
    let second = wait_for(LIMIT, "app to restart", || {
        running_since(&agent).filter(|s| *s != first)
    });
    let events = agent.ctl_ok(&["events", &id]);
    assert!(
        events.contains("src/a/b.txt changed: restarting"),
        "{events}"
    );
    assert_eq!(watch_restarts(&agent, &id), 1, "one burst, one restart");

    // Outside the globs, and under an ignore glob: nothing restarts.
    std::fs::write(dir.path().join("src/ignored.log"), "x").unwrap();
    std::fs::create_dir_all(dir.path().join("src/skip")).unwrap();
    std::fs::write(dir.path().join("src/skip/c.txt"), "x").unwrap();
    std::fs::write(dir.path().join("top.txt"), "x").unwrap();
    // Well past the debounce: a restart would have begun.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        assert_eq!(
            running_since(&agent),
            Some(second),
            "an ignored change restarted app\nagent log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(watch_restarts(&agent, &id), 1);

    // The watch is in the process's labels: an agent restarted (killed,
    // even) watches again. It watches a moment after it serves, so the
    // change is made again until a new run shows.
    agent.kill(libc::SIGKILL);
    agent.spawn();
    let mut n = 0;
    wait_for(LIMIT, "app to restart after the agent did", || {
        if n % 100 == 0 {
            std::fs::write(nested.join("b.txt"), n.to_string()).unwrap();
        }
        n += 1;
        running_since(&agent).filter(|s| *s != second)
    });
}
