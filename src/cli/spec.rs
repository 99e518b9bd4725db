//! `corralctl start` flags → `api::StartSpec`, so a command runs as it
//! would from the caller's shell: same directory, same environment. The
//! caller's directory and environment are passed in, never read here, so
//! the mapping is testable; the agent still validates the result.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::api::{self, StartSpec};

use super::args::{EnvArg, HealthArgs, StartArgs, Supervise};

/// What `start` takes from the calling process.
pub struct Caller {
    /// The current directory, or why it is unknown (deleted, no access).
    pub current_dir: Result<PathBuf, String>,
    pub env: Vec<(OsString, OsString)>,
}

impl Caller {
    /// The real caller: `getcwd` (already free of symlinks) and `environ`.
    pub fn current() -> Caller {
        let current_dir = std::env::current_dir()
            .map(|d| std::fs::canonicalize(&d).unwrap_or(d))
            .map_err(|e| e.to_string());
        Caller {
            current_dir,
            env: std::env::vars_os().collect(),
        }
    }
}

/// Sets the keys of `spec` that say how to supervise (`start`, `track`).
pub fn supervise(a: &Supervise, spec: &mut StartSpec) {
    spec.name = a.name.clone();
    spec.workspace = a.workspace.clone();
    spec.session = a.session.clone();
    spec.labels = a.label.iter().cloned().collect();
    spec.memory_max = a.memory_max;
    spec.cpu_quota = a.cpu_quota;
    spec.tasks_max = a.tasks_max;
    spec.restart = a.restart.clone();
    // Only an explicit flag is sent, so the agent's default stays in charge.
    spec.persistent = a.persistent.then_some(true);
}

/// Builds the spec; the error is a message about one flag.
pub fn build_spec(args: &StartArgs, caller: &Caller) -> Result<StartSpec, String> {
    let mut spec = StartSpec::new(args.command.clone());
    supervise(&args.supervise, &mut spec);
    spec.working_directory = Some(working_directory(args.cwd.as_deref(), &caller.current_dir)?);
    spec.environment = environment(&caller.env, args.clean_env, &args.env);
    spec.clean_environment = args.clean_env.then_some(true);
    spec.restart_delay_ms = args
        .restart_delay
        .map(|d| millis("--restart-delay", d))
        .transpose()?;
    spec.restart_delay_max_ms = args
        .restart_delay_max
        .map(|d| millis("--restart-delay-max", d))
        .transpose()?;
    spec.restart_limit = args.restart_limit;
    spec.restart_limit_interval_sec = args
        .restart_limit_interval
        .map(|d| seconds_up("--restart-limit-interval", d))
        .transpose()?;
    spec.restart_reset_sec = args
        .restart_reset
        .map(|d| seconds_up("--restart-reset", d))
        .transpose()?;
    spec.tty = args.tty.then_some(true);
    spec.notify = args.notify.then_some(true);
    spec.user = args.run_as.clone();
    spec.health_check = health_check(&args.health)?;
    Ok(spec)
}

/// The `HealthCheck` key from the `--health-*` flags, if a probe is given.
fn health_check(a: &HealthArgs) -> Result<Option<api::HealthCheck>, String> {
    let (kind, command, address) = match (&a.health_exec, &a.health_tcp, &a.health_http) {
        (Some(cmd), _, _) => (
            api::ProbeKind::Exec,
            vec!["sh".to_string(), "-c".to_string(), cmd.clone()],
            String::new(),
        ),
        (_, Some(addr), _) => (api::ProbeKind::Tcp, vec![], addr.clone()),
        (_, _, Some(url)) => (api::ProbeKind::Http, vec![], url.clone()),
        _ => return Ok(None),
    };
    let ms =
        |flag: &str, d: Option<Duration>, default: u64| d.map_or(Ok(default), |d| millis(flag, d));
    Ok(Some(api::HealthCheck {
        kind,
        command,
        address,
        interval_ms: ms("--health-interval", a.health_interval, 1000)?,
        timeout_ms: ms("--health-timeout", a.health_timeout, 1000)?,
        start_period_ms: ms("--health-start-period", a.health_start_period, 0)?,
        retries: a.health_retries.unwrap_or(3),
        on_unhealthy: a
            .on_unhealthy
            .as_deref()
            .and_then(api::OnUnhealthy::parse)
            .unwrap_or(api::OnUnhealthy::None),
        expect_status: a.health_expect_status,
        expect_body: a.health_expect_body.clone(),
    }))
}

/// `--cwd` made absolute against the caller's directory, or the caller's
/// directory itself. A relative `--cwd` is canonicalized when it exists; a
/// missing one is passed on for the agent to refuse with its own message.
fn working_directory(
    flag: Option<&Path>,
    current: &Result<PathBuf, String>,
) -> Result<String, String> {
    let dir = match flag {
        Some(p) if p.is_absolute() => p.to_path_buf(),
        Some(p) => {
            let base = current.as_ref().map_err(|e| {
                format!(
                    "--cwd {}: cannot resolve against the current directory: {e}",
                    p.display()
                )
            })?;
            let joined = base.join(p);
            std::fs::canonicalize(&joined).unwrap_or(joined)
        }
        None => current
            .clone()
            .map_err(|e| format!("cannot determine the current directory ({e}); pass --cwd"))?,
    };
    dir.into_os_string().into_string().map_err(|d| {
        format!(
            "working directory {} is not valid UTF-8",
            Path::new(&d).display()
        )
    })
}

/// The caller's environment (unless `clean`) with `--env` entries on top,
/// as sorted `KEY=VALUE` strings. Entries D-Bus cannot carry (not UTF-8)
/// or the agent would refuse (NUL, empty or `=` in the key) are skipped
/// rather than failing the whole start over one odd variable.
pub fn environment(
    caller: &[(OsString, OsString)],
    clean: bool,
    entries: &[EnvArg],
) -> Vec<String> {
    let usable: BTreeMap<&str, &str> = caller
        .iter()
        .filter_map(|(k, v)| Some((k.to_str()?, v.to_str()?)))
        .filter(|(k, v)| !k.is_empty() && !k.contains(['=', '\0']) && !v.contains('\0'))
        .collect();
    let mut env: BTreeMap<&str, &str> = if clean {
        BTreeMap::new()
    } else {
        usable.clone()
    };
    for e in entries {
        match e {
            EnvArg::Set(k, v) => {
                env.insert(k, v);
            }
            // Like `docker run -e KEY`: copy the caller's value if it has one.
            EnvArg::Inherit(k) => {
                if let Some(v) = usable.get(k.as_str()) {
                    env.insert(k, v);
                }
            }
        }
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

fn millis(flag: &str, d: Duration) -> Result<u64, String> {
    u64::try_from(d.as_millis()).map_err(|_| format!("{flag}: too long"))
}

/// Whole seconds, rounded up: `500ms` must not become 0 (which the agent
/// refuses for an interval, and which would mean "no reset" for a reset).
fn seconds_up(flag: &str, d: Duration) -> Result<u32, String> {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    u32::try_from(s).map_err(|_| format!("{flag}: longer than {} seconds", u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args::{Cli, Command};
    use clap::Parser;

    fn start_args(args: &[&str]) -> StartArgs {
        let cli = Cli::try_parse_from(["corralctl", "start"].iter().chain(args)).unwrap();
        match cli.command {
            Command::Start(a) => *a,
            _ => panic!("not start"),
        }
    }

    fn caller() -> Caller {
        Caller {
            current_dir: Ok(PathBuf::from("/home/me/proj")),
            env: vec![
                ("PATH".into(), "/usr/bin".into()),
                ("HOME".into(), "/home/me".into()),
                ("KEEP".into(), "1".into()),
            ],
        }
    }

    #[test]
    fn runs_like_the_shell_by_default() {
        let spec = build_spec(&start_args(&["--", "npm", "run", "dev"]), &caller()).unwrap();
        assert_eq!(spec.command, ["npm", "run", "dev"]);
        assert_eq!(spec.working_directory.as_deref(), Some("/home/me/proj"));
        assert_eq!(
            spec.environment,
            ["HOME=/home/me", "KEEP=1", "PATH=/usr/bin"]
        );
        assert_eq!(spec.persistent, None);
        assert_eq!(spec.memory_max, None);
        assert!(spec.validate().is_ok());
        // Nothing unset is sent.
        let d = spec.to_dict();
        let mut keys: Vec<&str> = d.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["Command", "Environment", "WorkingDirectory"]);
    }

    #[test]
    fn env_flags_win_and_clean_env_drops_the_rest() {
        let a = start_args(&["-e", "PATH=/opt/bin", "--env", "NEW=x=y", "--", "true"]);
        let spec = build_spec(&a, &caller()).unwrap();
        assert_eq!(
            spec.environment,
            ["HOME=/home/me", "KEEP=1", "NEW=x=y", "PATH=/opt/bin"]
        );

        let a = start_args(&[
            "--clean-env",
            "--env",
            "A=1",
            "--env",
            "HOME",
            "--env",
            "MISSING",
            "--",
            "true",
        ]);
        let spec = build_spec(&a, &caller()).unwrap();
        assert_eq!(spec.environment, ["A=1", "HOME=/home/me"]);

        let a = start_args(&["--clean-env", "--", "true"]);
        assert!(build_spec(&a, &caller()).unwrap().environment.is_empty());
    }

    #[test]
    fn unusable_caller_variables_are_skipped() {
        use std::os::unix::ffi::OsStringExt;
        let env = vec![
            (OsString::from_vec(vec![0xff]), "x".into()),
            ("BAD".into(), OsString::from_vec(vec![b'a', 0xfe])),
            ("".into(), "x".into()),
            ("OK".into(), "".into()),
        ];
        assert_eq!(environment(&env, false, &[]), ["OK="]);
    }

    /// Every key the agent accepts has a flag: a key added to the spec
    /// without one fails here.
    #[test]
    fn every_flag_maps_to_its_key() {
        let a = start_args(&[
            "-e",
            "A=1",
            "--clean-env",
            "--name",
            "web",
            "-w",
            "proj",
            "-s",
            "s1",
            "--cwd",
            "/srv",
            "-l",
            "team=a",
            "--label",
            "k=v",
            "--memory-max",
            "512M",
            "--cpu-quota",
            "50",
            "--tasks-max",
            "64",
            "--restart",
            "on-failure",
            "--restart-delay",
            "100ms",
            "--restart-delay-max",
            "30s",
            "--restart-limit",
            "5",
            "--restart-limit-interval",
            "1m",
            "--restart-reset",
            "1500ms",
            "--persistent",
            "-t",
            "--notify",
            "--run-as",
            "alice",
            "--health-http",
            "http://127.0.0.1:8000/",
            "--health-interval",
            "500ms",
            "--health-retries",
            "2",
            "--health-start-period",
            "2s",
            "--on-unhealthy",
            "restart",
            "--health-expect-status",
            "200-299",
            "--health-expect-body",
            "ok",
            "--",
            "sleep",
            "9",
        ]);
        let spec = build_spec(&a, &caller()).unwrap();
        assert_eq!(spec.name.as_deref(), Some("web"));
        assert_eq!(spec.workspace.as_deref(), Some("proj"));
        assert_eq!(spec.session.as_deref(), Some("s1"));
        assert_eq!(spec.working_directory.as_deref(), Some("/srv"));
        assert_eq!(spec.labels.len(), 2);
        assert_eq!(spec.memory_max, Some(512 << 20));
        assert_eq!(spec.cpu_quota, Some(50.0));
        assert_eq!(spec.tasks_max, Some(64));
        assert_eq!(spec.restart.as_deref(), Some("on-failure"));
        assert_eq!(spec.restart_delay_ms, Some(100));
        assert_eq!(spec.restart_delay_max_ms, Some(30_000));
        assert_eq!(spec.restart_limit, Some(5));
        assert_eq!(spec.restart_limit_interval_sec, Some(60));
        assert_eq!(spec.restart_reset_sec, Some(2));
        assert_eq!(spec.persistent, Some(true));
        assert_eq!(spec.tty, Some(true));
        assert_eq!(spec.notify, Some(true));
        assert_eq!(spec.user.as_deref(), Some("alice"));
        assert_eq!(spec.environment, ["A=1"]);
        assert_eq!(spec.clean_environment, Some(true));
        let h = spec.health_check.clone().unwrap();
        assert_eq!(
            (h.kind, h.address.as_str(), h.interval_ms, h.timeout_ms),
            (api::ProbeKind::Http, "http://127.0.0.1:8000/", 500, 1000)
        );
        assert_eq!((h.retries, h.start_period_ms), (2, 2000));
        assert_eq!(h.on_unhealthy, api::OnUnhealthy::Restart);
        assert_eq!(h.expect_status, Some("200-299".parse().unwrap()));
        assert_eq!(h.expect_body.as_deref(), Some("ok"));
        assert!(spec.validate().is_ok());
        let mut sent: Vec<String> = spec.to_dict().into_keys().collect();
        sent.sort();
        let mut keys = StartSpec::KEYS.to_vec();
        keys.sort();
        assert_eq!(sent, keys);
    }

    #[test]
    fn relative_cwd_and_unknown_current_dir() {
        let a = start_args(&["--cwd", "sub/dir", "--", "true"]);
        let spec = build_spec(&a, &caller()).unwrap();
        assert_eq!(
            spec.working_directory.as_deref(),
            Some("/home/me/proj/sub/dir")
        );

        let lost = Caller {
            current_dir: Err("No such file or directory".into()),
            env: vec![],
        };
        let err = build_spec(&start_args(&["--", "true"]), &lost).unwrap_err();
        assert!(err.contains("--cwd"), "{err}");
        let spec = build_spec(&start_args(&["--cwd", "/tmp", "--", "true"]), &lost).unwrap();
        assert_eq!(spec.working_directory.as_deref(), Some("/tmp"));
    }

    /// The HTTP expectations need `--health-http`, and a range must parse.
    #[test]
    fn http_expectations_need_an_http_check() {
        let parse = |args: &[&str]| Cli::try_parse_from(["corralctl", "start"].iter().chain(args));
        use clap::error::ErrorKind;
        for flag in ["--health-expect-body=ok", "--health-expect-status=204"] {
            let err = parse(&[flag, "--", "true"]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument);
            for other in [["--health-tcp", "h:1"], ["--health-exec", "true"]] {
                let err = parse(&[&other[..], &[flag, "--", "true"]].concat()).unwrap_err();
                assert_eq!(err.kind(), ErrorKind::ArgumentConflict);
            }
        }
        let bad = [
            "--health-http",
            "http://h/",
            "--health-expect-status",
            "299-200",
        ];
        let err = parse(&[&bad[..], &["--", "true"]].concat()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        let a = start_args(&["--health-http", "http://h/", "--", "true"]);
        let h = build_spec(&a, &caller()).unwrap().health_check.unwrap();
        assert_eq!((h.expect_status, h.expect_body), (None, None));
    }

    #[test]
    fn out_of_range_durations_are_errors() {
        let a = start_args(&["--restart-reset", "200000d", "--", "true"]);
        assert!(build_spec(&a, &caller())
            .unwrap_err()
            .starts_with("--restart-reset"));
    }
}
