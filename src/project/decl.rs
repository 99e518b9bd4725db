//! One process of a project resolved and checked: its raw keys turned into
//! typed values (durations, sizes, health check, readiness, watch globs),
//! its env files read, its paths made absolute. Each error names the key
//! it comes from, in the process's table or in `[defaults]`. The
//! `StartSpec` of one instance is built here too; whole-file checks
//! (names, cycles) are `mod`'s.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde::Serialize;

use crate::api::{
    HealthCheck, OnUnhealthy, ProbeKind, RestartMode, StartSpec, MAX_LABEL_VALUE_LEN,
};
use crate::config::{parse_duration, parse_size};

use super::env::read_env_file;
use super::error::{KeyPath, Result, Source};
use super::file::{Command, Condition, DependsOn, Quota, RawHealth, RawProcess, Size};
use super::watch::{WatchLabel, LABEL_WATCH};

/// Most copies of one process.
pub const MAX_INSTANCES: u32 = 64;

/// `watch_debounce` when unset.
const DEFAULT_DEBOUNCE_MS: u64 = 300;

/// A process as declared, resolved: what `start_spec` and `spec_hash`
/// read, and the keys a `StartSpec` cannot carry (`memory_high`,
/// `cpu_weight`, `io_weight`, a `log` readiness, `watch`, `depends_on`) for the
/// caller to act on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessDecl {
    pub name: String,
    pub command: Vec<String>,
    /// Absolute.
    pub cwd: String,
    /// The env files' variables in order, then `env`, later ones winning.
    pub env: BTreeMap<String, String>,
    pub depends_on: BTreeMap<String, Condition>,
    /// 1 to [`MAX_INSTANCES`].
    pub instances: u32,
    /// Base port: instance i gets `PORT=port+i`.
    pub port: Option<u16>,
    pub restart: Option<RestartMode>,
    pub restart_delay_ms: Option<u64>,
    pub restart_delay_max_ms: Option<u64>,
    pub restart_limit: Option<u32>,
    pub restart_limit_interval_sec: Option<u32>,
    pub restart_reset_sec: Option<u32>,
    pub memory_max: Option<u64>,
    pub memory_high: Option<u64>,
    /// Percent of one CPU.
    pub cpu_quota: Option<f64>,
    pub cpu_weight: Option<u64>,
    pub tasks_max: Option<u64>,
    pub io_weight: Option<u64>,
    pub persistent: Option<bool>,
    pub tty: Option<bool>,
    /// A `tcp`, `http` or `exec` probe.
    pub health: Option<HealthCheck>,
    /// A `log` or `notify` check: when the process counts as ready
    /// (`healthy` for `depends_on`). `notify` travels as the `Notify`
    /// spec key (the agent shows `NotifyState`); no API key carries `log`.
    pub readiness: Option<Readiness>,
    pub watch: Option<Watch>,
}

/// When a process without a probe counts as ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Readiness {
    /// An output line matches this regex (checked to compile).
    Log { pattern: String },
    /// It sent sd_notify `READY=1`.
    Notify,
}

/// Restart on file changes: globs checked to compile with `globset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Watch {
    pub paths: Vec<String>,
    pub ignore: Vec<String>,
    pub debounce_ms: u64,
}

impl Watch {
    /// What the `corral.watch` label of a process in `cwd` carries.
    pub fn label(&self, cwd: &str) -> WatchLabel {
        WatchLabel {
            base: cwd.to_string(),
            paths: self.paths.clone(),
            ignore: self.ignore.clone(),
            debounce_ms: self.debounce_ms,
        }
    }
}

impl ProcessDecl {
    /// `NAME` for a single instance, else `NAME-i`.
    pub fn instance_name(&self, index: u32) -> String {
        if self.instances == 1 {
            self.name.clone()
        } else {
            format!("{}-{index}", self.name)
        }
    }

    /// The variables instance `index` gets on top of the declared ones.
    pub fn instance_env(&self, index: u32) -> Vec<(String, String)> {
        let mut env = vec![("CORRAL_INSTANCE".to_string(), index.to_string())];
        if let Some(p) = self.port {
            env.push(("PORT".into(), (u32::from(p) + index).to_string()));
        }
        env
    }

    /// The spec of instance `index`: `inherited`, then the declared
    /// environment, then the instance's variables, later ones winning.
    /// No labels; the project adds them.
    pub fn start_spec(
        &self,
        workspace: &str,
        index: u32,
        inherited: &[(String, String)],
    ) -> StartSpec {
        let mut env: BTreeMap<&str, &str> = inherited
            .iter()
            // What the agent would refuse; one odd variable of the
            // caller's must not fail the whole start (as `corralctl start`).
            .filter(|(k, v)| valid_env_key(k) && !v.contains('\0'))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        env.extend(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let own = self.instance_env(index);
        env.extend(own.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        StartSpec {
            command: self.command.clone(),
            name: Some(self.instance_name(index)),
            working_directory: Some(self.cwd.clone()),
            environment: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
            workspace: Some(workspace.to_string()),
            memory_max: self.memory_max,
            cpu_quota: self.cpu_quota,
            tasks_max: self.tasks_max,
            restart: self.restart.map(|r| r.as_str().to_string()),
            restart_delay_ms: self.restart_delay_ms,
            restart_delay_max_ms: self.restart_delay_max_ms,
            restart_reset_sec: self.restart_reset_sec,
            restart_limit: self.restart_limit,
            restart_limit_interval_sec: self.restart_limit_interval_sec,
            persistent: self.persistent,
            tty: self.tty,
            health_check: self.health.clone(),
            notify: (self.readiness == Some(Readiness::Notify)).then_some(true),
            ..StartSpec::default()
        }
    }
}

fn valid_env_key(k: &str) -> bool {
    !k.is_empty() && !k.contains(['=', '\0'])
}

/// Where a process's keys are: its own table, or `[defaults]` for a key
/// it took from there.
pub struct Keys {
    own: KeyPath,
    own_keys: BTreeSet<String>,
    defaults: KeyPath,
}

impl Keys {
    /// `own_keys`: the keys the process's table sets itself.
    pub fn new(name: &str, own_keys: BTreeSet<String>) -> Keys {
        Keys {
            own: KeyPath::root().key("processes").key(name),
            own_keys,
            defaults: KeyPath::root().key("defaults"),
        }
    }

    pub fn process(&self) -> &KeyPath {
        &self.own
    }

    pub fn of(&self, field: &str) -> KeyPath {
        if self.own_keys.contains(field) {
            self.own.key(field)
        } else {
            self.defaults.key(field)
        }
    }
}

/// Resolves and checks one process. `names` are all the file's processes.
pub fn resolve(
    src: &Source<'_>,
    dir: &Path,
    names: &BTreeSet<String>,
    name: &str,
    keys: &Keys,
    raw: &RawProcess,
) -> Result<ProcessDecl> {
    let err = |field: &str, msg: String| src.error(&keys.of(field), msg);
    let command = match &raw.command {
        Command::Shell(s) if s.trim().is_empty() => {
            return Err(err("command", "must not be empty".into()))
        }
        Command::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
        Command::Argv(v) => v.clone(),
    };
    let cwd = dir.join(raw.cwd.as_deref().unwrap_or(""));
    let cwd = cwd
        .to_str()
        .ok_or_else(|| err("cwd", format!("{} is not valid UTF-8", cwd.display())))?
        .trim_end_matches('/')
        .to_string();
    let cwd = if cwd.is_empty() { "/".into() } else { cwd };

    let mut env = BTreeMap::new();
    if let Some(files) = &raw.env_file {
        let many = matches!(files, super::file::Paths::Many(_));
        for (i, f) in files.as_slice().iter().enumerate() {
            let key = keys.of("env_file");
            let key = if many { key.index(i) } else { key };
            let vars = read_env_file(&dir.join(f)).map_err(|e| src.error(&key, e))?;
            env.extend(vars);
        }
    }
    for (k, v) in raw.env.iter().flatten() {
        if !valid_env_key(k) {
            let msg = "not a variable name (empty, or has '=' or NUL)";
            return Err(src.error(&keys.of("env").key(k), msg));
        }
        env.insert(k.clone(), v.clone());
    }

    let depends_on: BTreeMap<String, Condition> = match &raw.depends_on {
        None => BTreeMap::new(),
        Some(DependsOn::Names(ns)) => ns.iter().map(|n| (n.clone(), Condition::Started)).collect(),
        Some(DependsOn::Conditions(m)) => m.clone(),
    };
    for dep in depends_on.keys() {
        if !names.contains(dep) {
            let msg = format!("no process named '{dep}' in this file");
            return Err(src.error(&keys.process().key("depends_on").key(dep), msg));
        }
    }

    let instances = raw.instances.unwrap_or(1);
    if !(1..=MAX_INSTANCES).contains(&instances) {
        let msg = format!("{instances} is not in 1..={MAX_INSTANCES}");
        return Err(src.error(&keys.process().key("instances"), msg));
    }
    if let Some(p) = raw.port {
        if p == 0 || u32::from(p) + instances - 1 > u32::from(u16::MAX) {
            let msg = format!(
                "ports {p} to {} are not all in 1..=65535",
                u32::from(p) + instances - 1
            );
            return Err(src.error(&keys.process().key("port"), msg));
        }
    }

    let restart = match &raw.restart {
        None => None,
        Some(r) => Some(RestartMode::parse(r).ok_or_else(|| {
            err(
                "restart",
                format!("'{r}' is not one of {}", RestartMode::NAMES.join(", ")),
            )
        })?),
    };
    let millis = |field: &str, v: &Option<String>| -> Result<Option<u64>> {
        v.as_deref()
            .map(|t| {
                duration_ms(t).ok_or_else(|| {
                    err(
                        field,
                        format!("'{t}' is not a duration (e.g. \"500ms\", \"2s\", \"1m\")"),
                    )
                })
            })
            .transpose()
    };
    // Whole seconds rounded up: "500ms" must not become 0 (refused for an
    // interval, "no reset" for a reset).
    let secs = |field: &str, v: &Option<String>| -> Result<Option<u32>> {
        millis(field, v)?
            .map(|ms| u32::try_from(ms.div_ceil(1000)).map_err(|_| err(field, "too long".into())))
            .transpose()
    };
    let size = |field: &str, v: &Option<Size>| -> Result<Option<u64>> {
        let bytes = match v {
            None => return Ok(None),
            Some(Size::Bytes(n)) => Some(*n),
            Some(Size::Text(t)) => parse_size(t),
        };
        match bytes {
            Some(0) => Err(err(field, "must be greater than 0".into())),
            Some(n) => Ok(Some(n)),
            None => Err(err(
                field,
                "not a size (e.g. 1048576, \"512M\", \"1G\")".into(),
            )),
        }
    };
    let weight = |field: &str, v: Option<u64>| -> Result<Option<u64>> {
        match v {
            Some(w) if !(1..=10_000).contains(&w) => {
                Err(err(field, format!("{w} is not in 1..=10000")))
            }
            w => Ok(w),
        }
    };
    let cpu_quota = match &raw.cpu_quota {
        None => None,
        Some(Quota::Percent(p)) => Some(*p),
        Some(Quota::Text(t)) => Some(
            t.trim()
                .strip_suffix('%')
                .unwrap_or(t)
                .trim()
                .parse::<f64>()
                .map_err(|_| {
                    err(
                        "cpu_quota",
                        format!("'{t}' is not a percentage like \"50%\""),
                    )
                })?,
        ),
    };
    let (health, readiness) = match &raw.health {
        None => (None, None),
        Some(h) => health(src, &keys.of("health"), h)?,
    };
    let watch = watch(src, keys, raw, &cwd)?;
    Ok(ProcessDecl {
        name: name.to_string(),
        command,
        cwd,
        env,
        depends_on,
        instances,
        port: raw.port,
        restart,
        restart_delay_ms: millis("restart_delay", &raw.restart_delay)?,
        restart_delay_max_ms: millis("restart_delay_max", &raw.restart_delay_max)?,
        restart_limit: raw.restart_limit,
        restart_limit_interval_sec: secs("restart_limit_interval", &raw.restart_limit_interval)?,
        restart_reset_sec: secs("restart_reset", &raw.restart_reset)?,
        memory_max: size("memory_max", &raw.memory_max)?,
        memory_high: size("memory_high", &raw.memory_high)?,
        cpu_quota,
        cpu_weight: weight("cpu_weight", raw.cpu_weight)?,
        tasks_max: raw.tasks_max,
        io_weight: weight("io_weight", raw.io_weight)?,
        persistent: raw.persistent,
        tty: raw.tty,
        health,
        readiness,
        watch,
    })
}

fn duration_ms(text: &str) -> Option<u64> {
    parse_duration(text).and_then(|d| u64::try_from(d.as_millis()).ok())
}

/// `health`: a probe for the API's `HealthCheck`, checked by its own
/// decoder, or a readiness check.
fn health(
    src: &Source<'_>,
    at: &KeyPath,
    h: &RawHealth,
) -> Result<(Option<HealthCheck>, Option<Readiness>)> {
    const KINDS: &str = "tcp, http, exec, log, notify";
    let kinds = [
        ("tcp", h.tcp.is_some()),
        ("http", h.http.is_some()),
        ("exec", h.exec.is_some()),
        ("log", h.log.is_some()),
        ("notify", h.notify.is_some()),
    ];
    let set: Vec<&str> = kinds.iter().filter(|(_, s)| *s).map(|(k, _)| *k).collect();
    let kind = match set[..] {
        [] => return Err(src.error(at, format!("needs one of {KINDS}"))),
        [k] => k,
        [first, second, ..] => {
            let msg = format!("only one of {KINDS}; '{first}' is set too");
            return Err(src.error(&at.key(second), msg));
        }
    };
    let probe_keys = [
        ("interval", h.interval.is_some()),
        ("timeout", h.timeout.is_some()),
        ("retries", h.retries.is_some()),
        ("start_period", h.start_period.is_some()),
        ("on_unhealthy", h.on_unhealthy.is_some()),
        ("expect_status", h.expect_status.is_some()),
        ("expect_body", h.expect_body.is_some()),
    ];
    let readiness = match (&h.log, h.notify) {
        (Some(pattern), _) => Some(Readiness::Log {
            pattern: pattern.clone(),
        }),
        (_, Some(true)) => Some(Readiness::Notify),
        (_, Some(false)) => {
            let msg = "only `true` (leave `health` out for no check)";
            return Err(src.error(&at.key("notify"), msg));
        }
        _ => None,
    };
    if let Some(r) = readiness {
        if let Some((k, _)) = probe_keys.iter().find(|(_, s)| *s) {
            let msg = format!("only for the tcp, http and exec probes, not {kind}");
            return Err(src.error(&at.key(k), msg));
        }
        if let Readiness::Log { pattern } = &r {
            regex::Regex::new(pattern).map_err(|e| src.error(&at.key("log"), e))?;
        }
        return Ok((None, Some(r)));
    }
    let ms = |key: &str, v: &Option<String>, default: u64| -> Result<u64> {
        match v {
            None => Ok(default),
            Some(t) => duration_ms(t).ok_or_else(|| {
                src.error(
                    &at.key(key),
                    format!("'{t}' is not a duration (e.g. \"500ms\", \"2s\")"),
                )
            }),
        }
    };
    let (probe, command, address) = match (&h.tcp, &h.http, &h.exec) {
        (Some(a), _, _) => (ProbeKind::Tcp, vec![], a.clone()),
        (_, Some(u), _) => (ProbeKind::Http, vec![], u.clone()),
        (_, _, Some(Command::Shell(s))) => (
            ProbeKind::Exec,
            vec!["/bin/sh".into(), "-c".into(), s.clone()],
            String::new(),
        ),
        (_, _, Some(Command::Argv(v))) => (ProbeKind::Exec, v.clone(), String::new()),
        _ => return Err(src.error(at, format!("needs one of {KINDS}"))),
    };
    let on_unhealthy = match &h.on_unhealthy {
        None => OnUnhealthy::None,
        Some(o) => OnUnhealthy::parse(o).ok_or_else(|| {
            let msg = format!("'{o}' is not one of {}", OnUnhealthy::NAMES.join(", "));
            src.error(&at.key("on_unhealthy"), msg)
        })?,
    };
    let expect_status = h
        .expect_status
        .as_deref()
        .map(|s| {
            s.parse()
                .map_err(|e: String| src.error(&at.key("expect_status"), e))
        })
        .transpose()?;
    let check = HealthCheck {
        kind: probe,
        command,
        address,
        interval_ms: ms("interval", &h.interval, 1000)?,
        timeout_ms: ms("timeout", &h.timeout, 1000)?,
        start_period_ms: ms("start_period", &h.start_period, 0)?,
        retries: h.retries.unwrap_or(3),
        on_unhealthy,
        expect_status,
        expect_body: h.expect_body.clone(),
    };
    // The API's decoder holds the rules (bounds, http:// only); run the
    // check through it rather than restating them.
    let dict: std::result::Result<HashMap<_, _>, _> = check
        .to_dict()
        .into_iter()
        .map(|(k, v)| v.try_into_owned().map(|v| (k, v)))
        .collect();
    dict.map_err(|e| e.to_string())
        .and_then(HealthCheck::from_dict)
        .map_err(|e| src.error(&at.key(kind), e))?;
    Ok((Some(check), None))
}

/// `watch`, `watch_ignore`, `watch_debounce`: globs must compile and be
/// relative to `cwd`, and the whole must fit the `corral.watch` label.
fn watch(src: &Source<'_>, keys: &Keys, raw: &RawProcess, cwd: &str) -> Result<Option<Watch>> {
    let Some(paths) = &raw.watch else {
        let stray = [
            ("watch_ignore", raw.watch_ignore.is_some()),
            ("watch_debounce", raw.watch_debounce.is_some()),
        ];
        return match stray.iter().find(|(_, s)| *s) {
            Some((k, _)) => Err(src.error(&keys.of(k), "needs `watch`")),
            None => Ok(None),
        };
    };
    let ignore = raw.watch_ignore.clone().unwrap_or_default();
    for (field, globs) in [("watch", paths), ("watch_ignore", &ignore)] {
        for (i, g) in globs.iter().enumerate() {
            let at = keys.of(field).index(i);
            // Changed paths are matched relative to `cwd`: these could
            // never match.
            if g.starts_with('/') || g.split('/').any(|part| part == "..") {
                let msg = format!("'{g}' must be relative to the process's cwd, inside it");
                return Err(src.error(&at, msg));
            }
            super::watch::glob(g).map_err(|e| src.error(&at, e))?;
        }
    }
    let debounce_ms = match &raw.watch_debounce {
        None => DEFAULT_DEBOUNCE_MS,
        Some(t) => duration_ms(t).ok_or_else(|| {
            src.error(
                &keys.of("watch_debounce"),
                format!("'{t}' is not a duration (e.g. \"300ms\")"),
            )
        })?,
    };
    let w = Watch {
        paths: paths.clone(),
        ignore,
        debounce_ms,
    };
    let len = w.label(cwd).encode().len();
    if len > MAX_LABEL_VALUE_LEN {
        let msg = format!(
            "the watch settings take {len} bytes as the `{LABEL_WATCH}` label, \
             more than {MAX_LABEL_VALUE_LEN}: use fewer or shorter globs"
        );
        return Err(src.error(&keys.of("watch"), msg));
    }
    Ok(Some(w))
}

/// Maps a message of `StartSpec::validate` (which names the D-Bus key)
/// to the file key it comes from.
pub fn spec_key(message: &str) -> Option<&'static str> {
    const KEYS: &[(&str, &str)] = &[
        ("Command", "command"),
        ("Name", ""),
        ("WorkingDirectory", "cwd"),
        ("Environment", "env"),
        ("MemoryMax", "memory_max"),
        ("CPUQuota", "cpu_quota"),
        ("TasksMax", "tasks_max"),
        ("Restart", "restart"),
        ("RestartDelayMs", "restart_delay"),
        ("RestartDelayMaxMs", "restart_delay_max"),
        ("RestartResetSec", "restart_reset"),
        ("RestartLimit", "restart_limit"),
        ("RestartLimitIntervalSec", "restart_limit_interval"),
    ];
    KEYS.iter()
        .find(|(dbus, _)| {
            message
                .strip_prefix(dbus)
                .is_some_and(|rest| rest.starts_with([':', '[']))
        })
        .map(|(_, file)| *file)
}
