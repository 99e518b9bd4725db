//! Project files: a real three-tier project (a TCP "database" that becomes
//! ready only when the test opens its gate, an HTTP API that needs it
//! healthy and reads an `.env` file, a worker that needs the API started)
//! brought up with `corralctl up`: order and conditions, a second `up`
//! that changes nothing, an edit that restarts one process and its
//! dependents, an agent killed midway that finishes the bring-up after its
//! restart without duplicates, `down` in reverse order, merged logs, a
//! failed dependency holding its dependents, a bad file refused with its
//! line and key before anything starts.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value as Json;

use crate::common::*;

const LIMIT: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A project directory with its `corral.toml`.
struct Project {
    dir: tempfile::TempDir,
    /// A file the database waits for (stays once made).
    gate: PathBuf,
    db_port: u16,
    api_port: u16,
    workspace: String,
}

const DB: &str = r#"
import os, socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(os.environ["PORT"])))
s.listen(16)
print("db ready", flush=True)
while True:
    c, _ = s.accept()
    c.close()
"#;

const API: &str = r#"
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
print("api using", os.environ["DB_URL"], flush=True)
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

impl Project {
    fn open_gate(&self) {
        std::fs::write(&self.gate, b"").expect("open the gate");
    }

    fn new(workspace: &str) -> Project {
        let dir = tempfile::Builder::new()
            .prefix("corral-project.")
            .tempdir()
            .expect("tempdir");
        std::fs::write(dir.path().join("db.py"), DB).unwrap();
        std::fs::write(dir.path().join("api.py"), API).unwrap();
        let gate = dir.path().join("gate");
        let p = Project {
            dir,
            gate,
            db_port: free_port(),
            api_port: free_port(),
            workspace: workspace.to_string(),
        };
        std::fs::write(
            p.dir.path().join(".env"),
            format!("DB_URL=tcp://127.0.0.1:{}\n", p.db_port),
        )
        .unwrap();
        p.write("sleep 1000");
        p
    }

    /// Writes the file; `worker` is the worker's shell command.
    fn write(&self, worker: &str) {
        // The database waits for the gate: the test decides when it is ready.
        let gate = format!(
            "while [ ! -e {} ]; do sleep 0.02; done",
            self.gate.display()
        );
        let text = format!(
            r#"
workspace = "{ws}"

[processes.db]
command = ["sh", "-c", "{gate}; exec python3 db.py"]
env = {{ PORT = "{db}" }}
health = {{ tcp = "127.0.0.1:{db}", interval = "200ms" }}

[processes.api]
command = "exec python3 api.py"
env_file = ".env"
env = {{ PORT = "{api}" }}
depends_on = {{ db = "healthy" }}
health = {{ http = "http://127.0.0.1:{api}/", interval = "200ms" }}

[processes.worker]
command = "echo worker started; exec {worker}"
depends_on = ["api"]
"#,
            ws = self.workspace,
            db = self.db_port,
            api = self.api_port,
        );
        std::fs::write(self.file(), text).unwrap();
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("corral.toml")
    }

    /// Runs corralctl in the project's directory.
    fn ctl(&self, args: &[&str]) -> std::process::Output {
        run(Command::new(bin("corralctl"))
            .args(args)
            .current_dir(self.dir.path()))
    }

    /// `corralctl --json up|down …`: the steps as (process, action).
    fn steps(&self, agent: &Agent, args: &[&str]) -> Vec<(String, String)> {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.ctl(&a);
        let json: Vec<Json> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "corralctl {args:?}: {e}: {}\n{}\nagent log:\n{}",
                text(&out.stdout),
                text(&out.stderr),
                agent.log()
            )
        });
        json.iter()
            .map(|s| {
                (
                    s["process"].as_str().unwrap_or_default().to_string(),
                    s["action"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// The workspace's processes by name (there must be one of each).
    fn processes(&self, agent: &Agent) -> std::collections::BTreeMap<String, Json> {
        let list = agent.list(&["-w", &self.workspace]);
        let mut by_name = std::collections::BTreeMap::new();
        for p in list {
            let name = p["name"].as_str().unwrap_or_default().to_string();
            assert!(
                by_name.insert(name.clone(), p).is_none(),
                "two processes named {name}"
            );
        }
        by_name
    }

    fn event_count(&self, agent: &Agent) -> usize {
        let out = agent.ctl_ok(&["--json", "events", "-n", "10000"]);
        serde_json::from_str::<Vec<Json>>(&out)
            .map(|v| v.len())
            .unwrap_or_else(|e| panic!("events --json: {e}: {out}"))
    }
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn started_at(p: &Json) -> u64 {
    p["started_at"].as_u64().expect("started_at")
}

/// Starts `up` in the background; it blocks until the gate opens.
fn up_in_background(p: &Project) -> std::process::Child {
    Command::new(bin("corralctl"))
        .args(["--json", "up"])
        .current_dir(p.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("corralctl up")
}

#[test]
fn up_starts_in_order_on_conditions_and_a_second_up_changes_nothing() {
    if !testbed_available() {
        return;
    }
    let agent = Agent::start();
    let p = Project::new("shop");
    let up = up_in_background(&p);
    // db runs; api waits for it to be healthy, so nothing else starts.
    wait_for(LIMIT, "db to run", || {
        let ps = p.processes(&agent);
        (ps.get("db").map(|d| d["state"] == "running") == Some(true)).then_some(())
    });
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        p.processes(&agent).keys().collect::<Vec<_>>(),
        ["db"],
        "api started before db was healthy"
    );
    p.open_gate();
    let out = up.wait_with_output().expect("up");
    assert!(out.status.success(), "up: {}", text(&out.stderr));
    let steps: Vec<Json> = serde_json::from_slice(&out.stdout).expect("up --json");
    let actions: Vec<(String, String)> = steps
        .iter()
        .map(|s| {
            (
                s["process"].as_str().unwrap().into(),
                s["action"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        pairs(&[("db", "started"), ("api", "started"), ("worker", "started")])
    );
    let ps = p.processes(&agent);
    // api started only after db listened, worker after api.
    // The time db became healthy (its event), which api waited for.
    let db_id = ps["db"]["id"].as_str().unwrap();
    let events = agent.ctl_ok(&["--json", "events", db_id]);
    let healthy = serde_json::from_str::<Vec<Json>>(&events)
        .unwrap()
        .iter()
        .find(|e| {
            e["kind"] == "health" && e["detail"].as_str().unwrap_or("").contains("-> healthy")
        })
        .and_then(|e| e["time_us"].as_u64())
        .unwrap_or_else(|| panic!("no health event of db: {events}"));
    assert!(
        started_at(&ps["api"]) >= healthy,
        "api started before db was healthy"
    );
    assert!(started_at(&ps["worker"]) >= started_at(&ps["api"]));
    // The .env file reached the API.
    logs(
        &agent,
        &ps["api"],
        &format!("api using tcp://127.0.0.1:{}", p.db_port),
    );

    // Merged logs: every process's lines, by time, with its name.
    let merged = agent.ctl_ok(&["--json", "logs", "-w", "shop", "-n", "0"]);
    let lines: Vec<Json> = merged
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let times: Vec<u64> = lines
        .iter()
        .map(|l| l["time_us"].as_u64().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "not by time: {merged}"
    );
    for (name, line) in [("db", "db ready"), ("worker", "worker started")] {
        assert!(
            lines.iter().any(|l| l["name"] == name && l["text"] == line),
            "{name}'s '{line}' missing: {merged}"
        );
    }
    let shown = agent.ctl_ok(&["logs", "-w", "shop", "--grep", "ready"]);
    assert_eq!(shown.trim(), "db     | db ready");

    // The API's port shows in list; a process that wants it names the API.
    let api_id = ps["api"]["id"].as_str().unwrap().to_string();
    let want = serde_json::json!([{"proto": "tcp", "address": "127.0.0.1", "port": p.api_port}]);
    wait_for(LIMIT, "the API's port in list --json", || {
        (agent.get(&api_id)["ports"] == want).then_some(())
    });
    let port = p.api_port.to_string();
    let clash = agent.start_cmd(&[
        "--name",
        "clash",
        "--restart",
        "no",
        "-e",
        &format!("PORT={port}"),
        "--",
        "python3",
        "-c",
        "import os, socket; socket.socket().bind(('127.0.0.1', int(os.environ['PORT'])))",
    ]);
    agent.wait_state(&clash, "failed", LIMIT);
    let holder = format!("api (id {api_id}, workspace shop)");
    wait_for(LIMIT, "status to name the port's holder", || {
        let page = agent.ctl_ok(&["status", &clash]);
        page.contains(&format!("port {port} held by {holder}"))
            .then_some(())
    });
    agent.ctl_ok(&["rm", &clash]);

    // A second up: nothing to do, no event.
    let before = p.event_count(&agent);
    assert_eq!(
        p.steps(&agent, &["up"]),
        pairs(&[
            ("db", "unchanged"),
            ("api", "unchanged"),
            ("worker", "unchanged")
        ])
    );
    assert_eq!(
        p.event_count(&agent),
        before,
        "a second up changed something"
    );
    assert_eq!(p.processes(&agent).len(), 3);
}

/// The time of the first line of `p`'s output containing `needle`.
fn logs(agent: &Agent, p: &Json, needle: &str) -> u64 {
    let id = p["id"].as_str().unwrap();
    wait_for(LIMIT, &format!("'{needle}' in the output of {id}"), || {
        let out = agent.ctl_ok(&["--json", "logs", id, "-n", "0"]);
        out.lines()
            .filter_map(|l| serde_json::from_str::<Json>(l).ok())
            .find(|l| l["text"].as_str().is_some_and(|t| t.contains(needle)))
            .and_then(|l| l["time_us"].as_u64())
    })
}

#[test]
fn an_edit_restarts_that_process_and_its_dependents_and_down_goes_in_reverse() {
    if !testbed_available() {
        return;
    }
    let agent = Agent::start();
    let p = Project::new("edit");
    p.open_gate();
    assert_eq!(
        p.steps(&agent, &["up"]),
        pairs(&[("db", "started"), ("api", "started"), ("worker", "started")])
    );
    let before = p.processes(&agent);
    // Only the worker's command changes: it alone restarts.
    p.write("sleep 1001");
    assert_eq!(
        p.steps(&agent, &["up"]),
        pairs(&[
            ("db", "unchanged"),
            ("api", "unchanged"),
            ("worker", "restarted")
        ])
    );
    let after = p.processes(&agent);
    assert_eq!(after["db"]["id"], before["db"]["id"]);
    assert_eq!(after["api"]["id"], before["api"]["id"]);
    assert_ne!(after["worker"]["id"], before["worker"]["id"]);
    assert!(after["worker"]["command"]
        .to_string()
        .contains("sleep 1001"));
    // The API's environment changes: it restarts, and so does the worker
    // that depends on it; the database does not.
    std::fs::write(
        p.dir.path().join(".env"),
        format!("DB_URL=tcp://127.0.0.1:{}/v2\n", p.db_port),
    )
    .unwrap();
    assert_eq!(
        p.steps(&agent, &["up"]),
        pairs(&[
            ("db", "unchanged"),
            ("api", "restarted"),
            ("worker", "restarted")
        ])
    );
    let ps = p.processes(&agent);
    assert_eq!(ps["db"]["id"], before["db"]["id"]);
    assert!(ps.values().all(|v| v["state"] == "running"), "{ps:?}");
    // A process dropped from the file is reported, not stopped.
    let text = std::fs::read_to_string(p.file()).unwrap();
    let cut = text.find("[processes.worker]").unwrap();
    std::fs::write(p.file(), &text[..cut]).unwrap();
    assert_eq!(
        p.steps(&agent, &["up"]),
        pairs(&[
            ("db", "unchanged"),
            ("api", "unchanged"),
            ("worker", "orphan")
        ])
    );
    std::fs::write(p.file(), &text).unwrap();

    // down: dependents first, and they ended first.
    assert_eq!(
        p.steps(&agent, &["down"]),
        pairs(&[("worker", "stopped"), ("api", "stopped"), ("db", "stopped")])
    );
    let ps = p.processes(&agent);
    let ended = |n: &str| ps[n]["exited_at"].as_u64().unwrap();
    assert!(
        ended("worker") <= ended("api") && ended("api") <= ended("db"),
        "{ps:?}"
    );
    // And up again brings the same processes back.
    assert_eq!(
        p.steps(&agent, &["up"]),
        pairs(&[("db", "started"), ("api", "started"), ("worker", "started")])
    );
    assert_eq!(p.processes(&agent)["db"]["id"], before["db"]["id"]);
}

#[test]
fn an_agent_killed_midway_finishes_the_bring_up_after_its_restart() {
    if !testbed_available() {
        return;
    }
    let mut agent = Agent::start();
    let p = Project::new("resume");
    let up = up_in_background(&p);
    wait_for(LIMIT, "db to run", || {
        let ps = p.processes(&agent);
        (ps.get("db").map(|d| d["state"] == "running") == Some(true)).then_some(())
    });
    // The bring-up waits for db; the agent dies; its client with it.
    agent.kill(libc::SIGKILL);
    let out = up.wait_with_output().expect("up");
    assert!(!out.status.success(), "up survived its agent");
    agent.spawn();
    p.open_gate();
    wait_for(LIMIT, "the bring-up to finish", || {
        let ps = p.processes(&agent);
        (ps.len() == 3 && ps.values().all(|v| v["state"] == "running")).then_some(())
    });
    // One of each (processes() insists), the database the same one.
    let ps = p.processes(&agent);
    assert_eq!(ps["db"]["id"], "1");
    // The operation is over: up now has nothing to do.
    assert_eq!(
        p.steps(&agent, &["up"]),
        pairs(&[
            ("db", "unchanged"),
            ("api", "unchanged"),
            ("worker", "unchanged")
        ])
    );
}

#[test]
fn a_failed_dependency_holds_its_dependents() {
    if !testbed_available() {
        return;
    }
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("corral.toml");
    std::fs::write(
        &file,
        r#"
workspace = "held"
[processes.migrate]
command = "exit 3"
restart = "no"
[processes.app]
command = "sleep 1000"
depends_on = { migrate = "completed-successfully" }
[processes.web]
command = "sleep 1000"
depends_on = ["app"]
"#,
    )
    .unwrap();
    let out = agent.ctl(&["up", "-f", &file.display().to_string()]);
    assert!(!out.status.success());
    let shown = text(&out.stdout);
    let line = |name: &str| {
        // The last: a `waiting` line may come first.
        let l = shown
            .lines()
            .rfind(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no line for {name}: {shown}"));
        l.split_whitespace().skip(1).collect::<Vec<_>>().join(" ")
    };
    assert_eq!(
        line("app"),
        "held dependency 'migrate' failed (exit code 3)"
    );
    assert!(
        line("web").starts_with("held dependency 'app' is held"),
        "{shown}"
    );
    let names: Vec<String> = agent
        .list(&["-w", "held"])
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["migrate"], "a held process was started");
}

#[test]
fn a_bad_file_is_refused_with_its_line_and_key_before_anything_starts() {
    if !testbed_available() {
        return;
    }
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("corral.toml");
    let write = |text: &str| std::fs::write(&file, text).unwrap();
    let refused = |expect: &str| {
        let out = agent.ctl(&["up", "-f", &file.display().to_string()]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains(expect), "expected '{expect}' in: {err}");
        // The agent refuses the same file itself, with a stable error name.
        let direct = busctl_manager(&["Up", "sasa{sv}", &file.display().to_string(), "0", "0"]);
        assert!(!direct.status.success());
        assert!(
            text(&direct.stderr).contains("InvalidProject")
                || text(&direct.stderr).contains(expect),
            "{}",
            text(&direct.stderr)
        );
    };
    write("[processes.a]\ncommand = \"true\"\nrestrat = \"always\"\n");
    refused("corral.toml:3:1: processes.a.restrat");
    write("[processes.a]\ncommand = \"true\"\ndepends_on = [\"b\"]\n[processes.b]\ncommand = \"true\"\ndepends_on = [\"a\"]\n");
    refused("dependency cycle");
    write("[processes.a]\ncommand = \"true\"\nenv_file = \"missing.env\"\n");
    refused("missing.env");
    assert!(agent.list(&[]).is_empty(), "something started");
}

#[test]
fn a_log_line_makes_a_process_ready_for_its_dependents() {
    if !testbed_available() {
        return;
    }
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let file = dir.path().join("corral.toml");
    std::fs::write(
        &file,
        format!(
            r#"
workspace = "logready"
[processes.server]
command = "echo booting; while [ ! -e {gate} ]; do sleep 0.02; done; echo ready in 12 ms; exec sleep 1000"
health = {{ log = "ready in \\d+ ms" }}
[processes.client]
command = "sleep 1000"
depends_on = {{ server = "healthy" }}
"#,
            gate = gate.display()
        ),
    )
    .unwrap();
    let mut up = Command::new(bin("corralctl"))
        .args(["up", "-f", &file.display().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("corralctl up");
    // "booting" matches nothing: the client waits.
    wait_for(LIMIT, "the server to boot", || {
        let ps = agent.list(&["-w", "logready"]);
        let server = ps.iter().find(|p| p["name"] == "server")?;
        let id = server["id"].as_str()?;
        let out = agent.ctl_ok(&["logs", id]);
        out.contains("booting").then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        agent.list(&["-w", "logready"]).len(),
        1,
        "client started early"
    );
    std::fs::write(&gate, b"").unwrap();
    let status = up.wait().expect("up");
    assert!(status.success());
    let names: Vec<String> = agent
        .list(&["-w", "logready"])
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["server", "client"]);
}

#[test]
fn an_sd_notify_ready_makes_a_process_ready_for_its_dependents() {
    if !testbed_available() {
        return;
    }
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let file = dir.path().join("corral.toml");
    let server = format!(
        "import os, socket, time\n\
         while not os.path.exists('{gate}'):\n    time.sleep(0.02)\n\
         addr = os.environ['NOTIFY_SOCKET']\n\
         addr = '\\0' + addr[1:] if addr.startswith('@') else addr\n\
         s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
         s.sendto(b'READY=1', addr)\n\
         time.sleep(1000)\n",
        gate = gate.display()
    );
    std::fs::write(dir.path().join("server.py"), server).unwrap();
    std::fs::write(
        &file,
        r#"
workspace = "notifyready"
[processes.server]
command = ["python3", "server.py"]
health = { notify = true }
[processes.client]
command = "sleep 1000"
depends_on = { server = "healthy" }
"#,
    )
    .unwrap();
    let mut up = Command::new(bin("corralctl"))
        .args(["up", "-f", &file.display().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("corralctl up");
    let server_id = wait_for(LIMIT, "the server to run", || {
        let ps = agent.list(&["-w", "notifyready"]);
        let s = ps.iter().find(|p| p["name"] == "server")?;
        (s["state"] == "running").then(|| s["id"].as_str().unwrap().to_string())
    });
    assert_eq!(agent.get(&server_id)["notify_state"], "waiting");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        agent.list(&["-w", "notifyready"]).len(),
        1,
        "client started early"
    );
    std::fs::write(&gate, b"").unwrap();
    let status = up.wait().expect("up");
    assert!(status.success());
    assert_eq!(agent.get(&server_id)["notify_state"], "ready");
    assert_eq!(agent.list(&["-w", "notifyready"]).len(), 2);
}

/// Instances that depend on nothing start together (a few at a time);
/// the steps still come in the file's order, their dependent starts after
/// all of them, and an edit of them restarts the dependent too.
#[test]
fn independent_instances_start_together_in_order_and_their_dependents_follow() {
    if !testbed_available() {
        return;
    }
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("corral.toml");
    let write = |command: &str| {
        let text = format!(
            r#"
workspace = "many"
[processes.many]
command = "{command}"
instances = 40
[processes.after]
command = "sleep 1000"
depends_on = ["many"]
"#
        );
        std::fs::write(&file, text).unwrap();
    };
    let f = file.display().to_string();
    let up = || -> Vec<(String, String)> {
        let out = agent.ctl(&["--json", "up", "-f", &f]);
        assert!(
            out.status.success(),
            "up: {}\nagent log:\n{}",
            text(&out.stderr),
            agent.log()
        );
        let steps: Vec<Json> = serde_json::from_slice(&out.stdout).expect("up --json");
        steps
            .iter()
            .map(|s| {
                (
                    s["process"].as_str().unwrap_or_default().to_string(),
                    s["action"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    let expect = |action: &str| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = (0..40)
            .map(|i| (format!("many-{i}"), action.to_string()))
            .collect();
        v.push(("after".into(), action.into()));
        v
    };

    write("sleep 1000");
    assert_eq!(up(), expect("started"));
    let list = agent.list(&["-w", "many"]);
    assert_eq!(list.len(), 41, "{list:?}");
    let at = |name: &str| {
        list.iter()
            .find(|p| p["name"] == name)
            .map(started_at)
            .unwrap_or_else(|| panic!("no {name}"))
    };
    let last = (0..40).map(|i| at(&format!("many-{i}"))).max().unwrap();
    assert!(at("after") >= last, "after started before every many-N");
    assert!(list.iter().all(|p| p["state"] == "running"), "{list:?}");

    assert_eq!(up(), expect("unchanged"));
    write("sleep 2000");
    assert_eq!(up(), expect("restarted"));
    assert_eq!(agent.list(&["-w", "many"]).len(), 41);
}
