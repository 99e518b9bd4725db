//! Tests of the whole file: specs, errors with their places, order,
//! hashes and the committed JSON Schema.

use std::path::{Path, PathBuf};

use super::*;
use crate::api::{HealthCheck, OnUnhealthy, ProbeKind};

const SHOP: &str = r#"workspace = "shop"

[defaults]
restart = "on-failure"
env = { LOG = "info" }

[processes.db]
command = ["python3", "db.py"]
cwd = "services/db"
env = { PORT = "5433" }
env_file = ".env"
health = { tcp = "127.0.0.1:5433", interval = "500ms" }
memory_max = "512M"

[processes.api]
command = "python3 api.py"
depends_on = { db = "healthy" }
instances = 2
port = 8000
restart_delay = "1s"
restart_limit_interval = "1500ms"
cpu_quota = "50%"
cpu_weight = 200
health = { log = "listening on" }

[processes.worker]
command = ["./worker"]
depends_on = ["api"]
restart = "always"
env_file = [".env", "worker.env"]
env = { LOG = "debug" }
persistent = true
tty = true
watch = ["src/**/*.rs"]
health = { notify = true }
"#;

/// A project dir with the shop's env files; returns (dir, file path).
fn shop_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), "SECRET=s1\nPORT=1\n").unwrap();
    std::fs::write(dir.path().join("worker.env"), "SECRET=s2\n").unwrap();
    let file = dir.path().join("corral.toml");
    std::fs::write(&file, SHOP).unwrap();
    (dir, file)
}

fn inherited() -> Vec<(String, String)> {
    vec![
        ("PATH".into(), "/usr/bin".into()),
        ("LOG".into(), "caller".into()),
        ("BAD=KEY".into(), "x".into()),
    ]
}

#[test]
fn a_three_process_file_gives_the_expected_specs() {
    let (dir, file) = shop_dir();
    let root = std::path::absolute(dir.path()).unwrap();
    let root = root.to_str().unwrap();
    let p = Project::load(&file).unwrap();
    assert_eq!(p.workspace(), "shop");
    let labels = |name: &str, i: u32| {
        BTreeMap::from([
            (LABEL_PROJECT.to_string(), format!("{root}/corral.toml")),
            (LABEL_SPEC_HASH.to_string(), p.spec_hash(name, i).unwrap()),
        ])
    };
    // The worker watches files: the agent learns what from its label.
    let mut worker_labels = labels("worker", 0);
    worker_labels.insert(
        watch::LABEL_WATCH.into(),
        format!(r#"{{"base":"{root}","paths":["src/**/*.rs"],"ignore":[],"debounce_ms":300}}"#),
    );
    let env = |kv: &[&str]| kv.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let db = p.start_spec("db", 0, &inherited()).unwrap();
    let want_db = StartSpec {
        command: vec!["python3".into(), "db.py".into()],
        name: Some("db".into()),
        working_directory: Some(format!("{root}/services/db")),
        // Env file under `env`, `env` under the instance's variables;
        // the caller's unusable variable is dropped.
        environment: env(&[
            "CORRAL_INSTANCE=0",
            "LOG=info",
            "PATH=/usr/bin",
            "PORT=5433",
            "SECRET=s1",
        ]),
        workspace: Some("shop".into()),
        labels: labels("db", 0),
        memory_max: Some(512 << 20),
        restart: Some("on-failure".into()),
        health_check: Some(HealthCheck {
            kind: ProbeKind::Tcp,
            command: vec![],
            address: "127.0.0.1:5433".into(),
            interval_ms: 500,
            timeout_ms: 1000,
            start_period_ms: 0,
            retries: 3,
            on_unhealthy: OnUnhealthy::None,
            expect_status: None,
            expect_body: None,
        }),
        ..StartSpec::default()
    };
    assert_eq!(db, want_db);

    let api1 = p.start_spec("api", 1, &inherited()).unwrap();
    let want_api1 = StartSpec {
        command: vec!["/bin/sh".into(), "-c".into(), "python3 api.py".into()],
        name: Some("api-1".into()),
        working_directory: Some(root.to_string()),
        environment: env(&[
            "CORRAL_INSTANCE=1",
            "LOG=info",
            "PATH=/usr/bin",
            "PORT=8001",
        ]),
        workspace: Some("shop".into()),
        labels: labels("api", 1),
        cpu_quota: Some(50.0),
        restart: Some("on-failure".into()),
        restart_delay_ms: Some(1000),
        restart_limit_interval_sec: Some(2),
        ..StartSpec::default()
    };
    assert_eq!(api1, want_api1);
    let api = &p.processes()["api"];
    assert_eq!(api.cpu_weight, Some(200));
    assert_eq!(
        api.readiness,
        Some(Readiness::Log {
            pattern: "listening on".into()
        })
    );
    assert_eq!(
        api.depends_on,
        BTreeMap::from([("db".into(), Condition::Healthy)])
    );

    let worker = p.start_spec("worker", 0, &[]).unwrap();
    let want_worker = StartSpec {
        command: vec!["./worker".into()],
        name: Some("worker".into()),
        working_directory: Some(root.to_string()),
        // worker.env wins over .env; `env` over both and over [defaults].
        environment: env(&["CORRAL_INSTANCE=0", "LOG=debug", "PORT=1", "SECRET=s2"]),
        workspace: Some("shop".into()),
        labels: worker_labels,
        restart: Some("always".into()),
        persistent: Some(true),
        tty: Some(true),
        // sd_notify readiness is the agent's to see: the `Notify` key.
        notify: Some(true),
        ..StartSpec::default()
    };
    assert_eq!(worker, want_worker);
    assert_eq!(p.processes()["worker"].readiness, Some(Readiness::Notify));
    assert_eq!(
        p.processes()["worker"].watch,
        Some(Watch {
            paths: vec!["src/**/*.rs".into()],
            ignore: vec![],
            debounce_ms: 300
        })
    );
    for spec in [db, api1, worker] {
        spec.validate().unwrap();
    }
    assert!(matches!(
        p.start_spec("api", 2, &[]),
        Err(ProjectError::NoProcess { .. })
    ));
}

/// The place and key of the error `text` gives, as `(line, col, key, message)`.
fn error_of(text: &str) -> (usize, usize, String, String) {
    match Project::parse(text, Path::new("corral.toml")) {
        Err(ProjectError::Invalid {
            line,
            col,
            key,
            message,
            ..
        }) => (line, col, key, message),
        other => panic!("not an Invalid error: {other:?} for\n{text}"),
    }
}

#[test]
fn each_error_names_its_line_and_key() {
    let a = "[processes.a]\ncommand = \"x\"\n";
    let cases: Vec<(String, usize, &str, &str)> = vec![
        (format!("{a}comand2 = 1\n"), 3, "processes.a.comand2", "unknown field `comand2`"),
        (format!("{a}instances = \"2\"\n"), 3, "processes.a.instances", "invalid type: string \"2\", expected u32"),
        (format!("{a}instances = 65\n"), 3, "processes.a.instances", "65 is not in 1..=64"),
        (format!("{a}port = 65535\ninstances = 2\n"), 3, "processes.a.port", "ports 65535 to 65536 are not all in 1..=65535"),
        ("[processes.a]\ncommand = 5\n".into(), 2, "processes.a.command", "a string (run by /bin/sh -c) or an array of strings (argv)"),
        ("[processes.a]\ncwd = \"x\"\n".into(), 1, "processes.a", "missing field `command`"),
        (format!("{a}restart_delay = \"5x\"\n"), 3, "processes.a.restart_delay", "'5x' is not a duration"),
        (format!("{a}restart_delay = \"2d\"\n"), 3, "processes.a.restart_delay", "RestartDelayMs: 172800000 is above the maximum 86400000"),
        (format!("{a}memory_max = \"5Q\"\n"), 3, "processes.a.memory_max", "not a size"),
        (format!("{a}cpu_quota = \"lots\"\n"), 3, "processes.a.cpu_quota", "'lots' is not a percentage"),
        (format!("{a}restart = \"sometimes\"\n"), 3, "processes.a.restart", "'sometimes' is not one of no, on-failure, always"),
        (format!("[defaults]\nrestart = \"sometimes\"\n{a}"), 2, "defaults.restart", "'sometimes' is not one of"),
        (format!("[defaults]\nrestart = \"always\"\n{a}restart = \"x\"\n"), 5, "processes.a.restart", "'x' is not one of"),
        (format!("{a}depends_on = {{ dbx = \"healthy\" }}\n"), 3, "processes.a.depends_on.dbx", "no process named 'dbx' in this file"),
        (format!("{a}depends_on = [\"b\", \"dbx\"]\n[processes.b]\ncommand = \"y\"\n"), 3, "processes.a.depends_on.dbx", "no process named 'dbx' in this file"),
        (format!("{a}depends_on = {{ b = \"healthy\" }}\n[processes.b]\ncommand = \"y\"\n"), 3, "processes.a.depends_on.b", "'b' has no `health` check to wait for"),
        (format!("{a}depends_on = {{ b = \"soon\" }}\n[processes.b]\ncommand = \"y\"\n"), 3, "processes.a.depends_on", "an array of process names or a table"),
        (format!("{a}env_file = \"nope.env\"\n"), 3, "processes.a.env_file", "nope.env: No such file or directory"),
        (format!("{a}env_file = [\"nope.env\"]\n"), 3, "processes.a.env_file[0]", "nope.env: No such file"),
        (format!("{a}env = {{ \"A=B\" = \"1\" }}\n"), 3, "processes.a.env.A=B", "not a variable name"),
        (format!("{a}health = {{ log = \"(\" }}\n"), 3, "processes.a.health.log", "regex parse error"),
        (format!("{a}health = {{ tcp = \"h:1\", http = \"http://h/\" }}\n"), 3, "processes.a.health.http", "only one of tcp, http, exec, log, notify; 'tcp' is set too"),
        (format!("{a}health = {{ http = \"https://h/\" }}\n"), 3, "processes.a.health.http", "HealthCheck.Address: 'https://h/' is not an http:// URL"),
        (format!("{a}health = {{ notify = true, retries = 2 }}\n"), 3, "processes.a.health.retries", "only for the tcp, http and exec probes, not notify"),
        (format!("{a}health = {{ interval = \"1s\" }}\n"), 3, "processes.a.health", "needs one of tcp, http, exec, log, notify"),
        (format!("{a}watch = [\"ok/*\", \"a/[b\"]\n"), 3, "processes.a.watch[1]", "unclosed character class"),
        (format!("{a}watch_debounce = \"1s\"\n"), 3, "processes.a.watch_debounce", "needs `watch`"),
        (format!("{a}watch = [\"/etc/*\"]\n"), 3, "processes.a.watch[0]", "'/etc/*' must be relative to the process's cwd"),
        (format!("{a}watch = [\"x\"]\nwatch_ignore = [\"../y\"]\n"), 4, "processes.a.watch_ignore[0]", "must be relative"),
        (format!("{a}watch = [{}]\n", vec!["\"src/**/a-rather-long-glob-of-files.rs\""; 120].join(", ")), 3, "processes.a.watch", "as the `corral.watch` label, more than 4096: use fewer or shorter globs"),
        ("[processes.\"a/b\"]\ncommand = \"x\"\n".into(), 1, "processes.a/b", "process name 'a/b' contains '/'"),
        ("[processes.\"a\\u0007\"]\ncommand = \"x\"\n".into(), 1, "processes.a\u{7}", "Name: contains a control character"),
        (format!("{a}instances = 2\n[processes.a-1]\ncommand = \"y\"\n"), 4, "processes.a-1", "instance name 'a-1' is also one of process 'a'"),
        (format!("workspace = \"\"\n{a}"), 1, "workspace", "Workspace: must not be empty"),
        (format!("{a}[processes.b]\ncommand = \"y\"\ndepends_on = [\"c\"]\n[processes.c]\ncommand = \"z\"\ndepends_on = {{ b = \"started\" }}\n"), 5, "processes.b.depends_on.c", "dependency cycle: b -> c -> b"),
        ("[processes.a\ncommand = 1\n".into(), 1, "", "invalid table header"),
    ];
    for (text, line, key, message) in cases {
        let (l, _, k, m) = error_of(&text);
        assert_eq!((l, k.as_str()), (line, key), "{m}\nfor\n{text}");
        assert!(
            m.contains(message),
            "{m:?} does not say {message:?}\nfor\n{text}"
        );
    }
}

#[test]
fn errors_show_as_path_line_col_key_message() {
    let text = "[processes.api]\ncommand = \"x\"\ndepends_on = { dbx = \"healthy\" }\n";
    let e = Project::parse(text, Path::new("corral.toml")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "corral.toml:3:16: processes.api.depends_on.dbx: no process named 'dbx' in this file"
    );
    let many: String = (0..=MAX_PROCESSES)
        .map(|i| format!("[processes.p{i}]\ncommand = \"x\"\n"))
        .collect();
    let (line, col, key, message) = error_of(&many);
    assert_eq!((line, col, key.as_str()), (1, 2, "processes"));
    assert_eq!(message, "257 processes, more than 256");
}

#[test]
fn order_is_deterministic_with_instances() {
    let (_dir, file) = shop_dir();
    let p = Project::load(&file).unwrap();
    let names = |v: Vec<Instance>| v.into_iter().map(|i| i.name).collect::<Vec<_>>();
    assert_eq!(
        names(p.order(&[]).unwrap()),
        ["db", "api-0", "api-1", "worker"]
    );
    assert_eq!(
        names(p.order(&["api".into()]).unwrap()),
        ["db", "api-0", "api-1"]
    );
    assert_eq!(
        names(p.stop_order(&["api".into()]).unwrap()),
        ["worker", "api-0", "api-1"]
    );
    assert_eq!(
        names(p.stop_order(&[]).unwrap()),
        ["worker", "api-0", "api-1", "db"]
    );
    let first = p.order(&[]).unwrap();
    assert_eq!(
        first[2],
        Instance {
            process: "api".into(),
            index: 1,
            name: "api-1".into()
        }
    );
    let e = p.order(&["nope".into()]).unwrap_err();
    assert!(
        e.to_string()
            .ends_with("corral.toml: no process named 'nope'"),
        "{e}"
    );
}

#[test]
fn cycles_are_named_in_the_error() {
    let text = "[processes.api]\ncommand = \"a\"\ndepends_on = [\"worker\"]\n\
                [processes.worker]\ncommand = \"w\"\ndepends_on = [\"api\"]\n";
    let e = Project::parse(text, Path::new("corral.toml")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "corral.toml:3:15: processes.api.depends_on.worker: dependency cycle: api -> worker -> api"
    );
}

/// Guards stability: the same file must hash the same in every build, or
/// every `up` after an upgrade would restart everything.
#[test]
fn spec_hash_is_stable_and_follows_what_is_declared() {
    let text =
        "workspace = \"shop\"\n[processes.web]\ncommand = [\"serve\", \"--port\", \"8000\"]\n\
                env = { A = \"1\" }\nrestart = \"always\"\n";
    let path = Path::new("/srv/shop/corral.toml");
    let p = Project::parse(text, path).unwrap();
    assert_eq!(
        p.spec_hash("web", 0).unwrap(),
        "4c91cd8d20f6c7c6290f50319e4e712ca5023b6753f47bb0db4beed5b15dcf76"
    );
    let other = Project::parse(&text.replace("8000", "8001"), path).unwrap();
    assert_ne!(
        other.spec_hash("web", 0).unwrap(),
        p.spec_hash("web", 0).unwrap()
    );
    // The watch settings are part of it: `up` restarts a process whose
    // watch changed, so its label is current.
    let watched = |extra: &str| {
        Project::parse(&format!("{text}watch = [\"src/**\"]\n{extra}"), path)
            .unwrap()
            .spec_hash("web", 0)
            .unwrap()
    };
    assert_ne!(watched(""), p.spec_hash("web", 0).unwrap());
    assert_ne!(watched("watch_debounce = \"1s\"\n"), watched(""));
    assert_ne!(watched("watch_ignore = [\"*.log\"]\n"), watched(""));
    // The caller's environment is not part of it.
    let label = |env: &[(String, String)]| {
        p.start_spec("web", 0, env).unwrap().labels[LABEL_SPEC_HASH].clone()
    };
    assert_eq!(label(&[]), label(&inherited()));
    assert_eq!(label(&[]), p.spec_hash("web", 0).unwrap());

    // An env file's content is.
    let (dir, file) = shop_dir();
    let before = Project::load(&file).unwrap().spec_hash("db", 0).unwrap();
    assert_eq!(
        Project::load(&file).unwrap().spec_hash("db", 0).unwrap(),
        before
    );
    std::fs::write(dir.path().join(".env"), "SECRET=s3\nPORT=1\n").unwrap();
    let after = Project::load(&file).unwrap().spec_hash("db", 0).unwrap();
    assert_ne!(before, after);
    // Instances differ from each other.
    let p = Project::load(&file).unwrap();
    assert_ne!(
        p.spec_hash("api", 0).unwrap(),
        p.spec_hash("api", 1).unwrap()
    );
}

/// `schema/corral.schema.json` is what editors use; it must match the
/// parser. Regenerate with
/// `CORRAL_UPDATE_SCHEMA=1 cargo test --lib project::tests::the_committed_schema_is_current`.
#[test]
fn the_committed_schema_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/corral.schema.json");
    let want = serde_json::to_string_pretty(&json_schema()).unwrap() + "\n";
    if std::env::var_os("CORRAL_UPDATE_SCHEMA").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{} is out of date; regenerate it with \
         CORRAL_UPDATE_SCHEMA=1 cargo test --lib project::tests::the_committed_schema_is_current",
        path.display()
    );
}

#[test]
fn the_schema_describes_the_keys() {
    let s = json_schema();
    let process = &s["$defs"]["RawProcess"];
    assert_eq!(process["required"], serde_json::json!(["command"]));
    assert_eq!(process["additionalProperties"], false);
    for key in [
        "depends_on",
        "instances",
        "health",
        "env_file",
        "watch",
        "restart_delay",
    ] {
        assert!(process["properties"][key].is_object(), "{key}");
    }
    assert!(s["$defs"]["RawDefaults"]["properties"]["command"].is_null());
    assert!(!s.to_string().contains("null"), "TOML has no null");
    assert_eq!(process["properties"]["instances"]["type"], "integer");
}
