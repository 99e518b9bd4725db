//! The agent's settings: corrald's command line, and `corrald.toml`
//! decoded, validated and defaulted. Every key is optional; an unknown key
//! or a bad value is a startup error naming the key (serde's
//! `deny_unknown_fields` plus our own range checks). [`KEYS`] documents
//! every key once, for the man page and the example config. This module
//! reads one file and the environment; it starts nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{0}")]
    Environment(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Which bus and which defaults: a user's agent or the system one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    User,
    System,
}

/// corrald's command line (here, not in the binary, so that the man page
/// generator renders the same definition).
#[derive(Debug, clap::Parser)]
#[command(
    name = "corrald",
    version,
    about = "The corral agent: supervises processes as transient systemd scopes and serves org.corral.Supervisor1 on D-Bus."
)]
pub struct Args {
    /// Serve on the session bus with the user's systemd manager (default).
    #[arg(long, conflicts_with = "system")]
    pub user: bool,
    /// Serve on the system bus with the system manager.
    #[arg(long)]
    pub system: bool,
    /// Config file (default: $XDG_CONFIG_HOME/corral/corrald.toml or /etc/corral/corrald.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Directory for the database, exit records and logs (overrides the config).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

/// One `corrald.toml` key as users read it in corrald.toml(5) and in the
/// example config.
pub struct KeyDoc {
    pub name: &'static str,
    /// The default, as TOML (`None`: it depends on the mode, see `default_text`).
    pub default: Option<&'static str>,
    /// The default in words, where no single TOML value states it.
    pub default_text: &'static str,
    pub doc: &'static str,
}

/// Every key of `corrald.toml`, in the order the docs list them. A test
/// checks this list against the parser's fields and defaults.
/// Bound of `shim_pool`: each waiting shim costs memory and a process.
const MAX_SHIM_POOL: u32 = 64;

pub const KEYS: &[KeyDoc] = &[
    KeyDoc {
        name: "state_dir",
        default: None,
        default_text: "$XDG_STATE_HOME/corral (~/.local/state/corral) for --user, /var/lib/corral for --system",
        doc: "Directory of the database, exit records and output logs; an absolute path. --state-dir overrides it.",
    },
    KeyDoc {
        name: "sample_interval",
        default: Some("10"),
        default_text: "",
        doc: "How often usage is sampled; CPU percent is computed over this interval. At least 1s.",
    },
    KeyDoc {
        name: "stop_timeout",
        default: Some("10"),
        default_text: "",
        doc: "Grace period of Stop between SIGTERM and SIGKILL. Greater than 0.",
    },
    KeyDoc {
        name: "retention",
        default: Some("\"7d\""),
        default_text: "",
        doc: "Ended processes, their logs and their events older than this are removed.",
    },
    KeyDoc {
        name: "max_events",
        default: Some("100000"),
        default_text: "",
        doc: "Cap on the number of stored events; the oldest go first. At least 100.",
    },
    KeyDoc {
        name: "log_max_size",
        default: Some("\"10M\""),
        default_text: "",
        doc: "Size at which a process's output log is rotated. At least 4K.",
    },
    KeyDoc {
        name: "log_files",
        default: Some("5"),
        default_text: "",
        doc: "Output log files kept per process, the current one included. At least 1.",
    },
    KeyDoc {
        name: "restart_delay_ms",
        default: Some("100"),
        default_text: "",
        doc: "Default RestartDelayMs: first delay before a restart, in milliseconds.",
    },
    KeyDoc {
        name: "restart_delay_max_ms",
        default: Some("30000"),
        default_text: "",
        doc: "Default RestartDelayMaxMs: the doubling restart delay stops growing here. Not below restart_delay_ms.",
    },
    KeyDoc {
        name: "restart_reset_sec",
        default: Some("60"),
        default_text: "",
        doc: "Default RestartResetSec: a process running this long has its restart delay reset.",
    },
    KeyDoc {
        name: "restart_limit",
        default: Some("5"),
        default_text: "",
        doc: "Default RestartLimit: restarts allowed within restart_limit_interval_sec before the process is failed.",
    },
    KeyDoc {
        name: "restart_limit_interval_sec",
        default: Some("60"),
        default_text: "",
        doc: "Default RestartLimitIntervalSec: the window of restart_limit. Greater than 0.",
    },
    KeyDoc {
        name: "max_processes_per_owner",
        default: Some("1000"),
        default_text: "",
        doc: "Cap on the processes one user may have, ended ones included until removed or pruned; Start beyond it fails with LimitExceeded. At least 1.",
    },
    KeyDoc {
        name: "shim_pool",
        default: Some("2"),
        default_text: "",
        doc: "Shims kept spawned and waiting, so a Start does not wait for one to fork and exec (each costs about 200 KiB while it waits). 0 spawns on demand. At most 64.",
    },
    KeyDoc {
        name: "journal_forward",
        default: Some("false"),
        default_text: "",
        doc: "Also send every output line of every process to the journal, with the fields CORRAL_ID, CORRAL_NAME, CORRAL_WORKSPACE and CORRAL_STREAM (journalctl --user CORRAL_WORKSPACE=shop). The log files are kept either way.",
    },
    KeyDoc {
        name: "notifications",
        default: Some("true"),
        default_text: "",
        doc: "Desktop notifications (org.freedesktop.Notifications) when a process enters a crash loop, is OOM-killed, or fails and will not be restarted. The system agent (--system) has no desktop and sends none, whatever this says.",
    },
    KeyDoc {
        name: "history",
        default: Some("true"),
        default_text: "",
        doc: "Keep each running process's usage (CPU, memory, tasks, IO) in the database at every sample_interval, for `corralctl stats` and History. The tick then reads all usage files, not just CPU time.",
    },
    KeyDoc {
        name: "history_raw_retention",
        default: Some("\"1h\""),
        default_text: "",
        doc: "How long the samples of every tick are kept; older ones survive only as history_resolution averages. At least history_resolution.",
    },
    KeyDoc {
        name: "history_resolution",
        default: Some("\"5m\""),
        default_text: "",
        doc: "Width of the averages the history keeps beyond history_raw_retention. At least sample_interval; unset, it grows with a longer sample_interval (and so do the retentions, to stay in order).",
    },
    KeyDoc {
        name: "history_retention",
        default: Some("\"7d\""),
        default_text: "",
        doc: "How long the averages are kept. At least history_raw_retention.",
    },
    KeyDoc {
        name: "metrics_listen",
        default: Some("\"\""),
        default_text: "",
        doc: "Empty: no listener. Else serve the OpenMetrics text of `corralctl metrics` over HTTP at /metrics on this address (e.g. \"127.0.0.1:9101\"). A loopback address unless metrics_allow_remote: it tells anyone who connects what runs here.",
    },
    KeyDoc {
        name: "metrics_allow_remote",
        default: Some("false"),
        default_text: "",
        doc: "Let metrics_listen be a non-loopback address.",
    },
];

/// A duration or size written either as a bare number (seconds / bytes)
/// or as a string with a unit (`"500ms"`, `"7d"`, `"10M"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Amount {
    Number(u64),
    Float(f64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: Option<PathBuf>,
    sample_interval: Option<Amount>,
    stop_timeout: Option<Amount>,
    retention: Option<Amount>,
    max_events: Option<u64>,
    log_max_size: Option<Amount>,
    log_files: Option<u32>,
    restart_delay_ms: Option<u64>,
    restart_delay_max_ms: Option<u64>,
    restart_reset_sec: Option<u32>,
    restart_limit: Option<u32>,
    restart_limit_interval_sec: Option<u32>,
    max_processes_per_owner: Option<u32>,
    shim_pool: Option<u32>,
    journal_forward: Option<bool>,
    notifications: Option<bool>,
    history: Option<bool>,
    history_raw_retention: Option<Amount>,
    history_resolution: Option<Amount>,
    history_retention: Option<Amount>,
    metrics_listen: Option<String>,
    metrics_allow_remote: Option<bool>,
}

/// Validated settings. Defaults are documented in README ("Configuration").
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub mode: Mode,
    /// SQLite file, exit records and logs live here.
    pub state_dir: PathBuf,
    /// How often usage is sampled (CPU % is computed over this interval).
    pub sample_interval: Duration,
    /// SIGTERM → SIGKILL grace period of Stop.
    pub stop_timeout: Duration,
    /// How long ended processes (and their events and logs) are kept.
    pub retention: Duration,
    /// Cap on rows in the events table; the oldest go first.
    pub max_events: u64,
    /// Size at which a process's output log is rotated.
    pub log_max_size: u64,
    /// Log files kept per process, the current one included.
    pub log_files: u32,
    pub restart_delay_ms: u64,
    pub restart_delay_max_ms: u64,
    pub restart_reset_sec: u32,
    pub restart_limit: u32,
    pub restart_limit_interval_sec: u32,
    /// Cap on the processes one uid may have (ended ones included, until
    /// removed or pruned).
    pub max_processes_per_owner: u32,
    /// Shims kept spawned ahead of need (`launch::ShimPool`).
    pub shim_pool: u32,
    /// Copy output lines to the journal (the shim sends them).
    pub journal_forward: bool,
    /// Desktop notifications on failures; always false in system mode.
    pub notifications: bool,
    /// Usage history: on, and how long each tier is kept and how wide
    /// the averages are (store/history.rs).
    pub history: bool,
    pub history_raw_retention: Duration,
    pub history_resolution: Duration,
    pub history_retention: Duration,
    /// Where /metrics is served (checked: loopback unless allowed).
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl Config {
    /// Defaults for `mode`, with paths from the environment
    /// (`XDG_STATE_HOME`, `HOME`) in user mode.
    pub fn defaults(mode: Mode) -> Result<Config> {
        Ok(Config {
            mode,
            state_dir: default_state_dir(mode)?,
            sample_interval: Duration::from_secs(10),
            stop_timeout: Duration::from_secs(10),
            retention: Duration::from_secs(7 * 24 * 3600),
            max_events: 100_000,
            log_max_size: 10 * 1024 * 1024,
            log_files: 5,
            restart_delay_ms: 100,
            restart_delay_max_ms: 30_000,
            restart_reset_sec: 60,
            restart_limit: 5,
            restart_limit_interval_sec: 60,
            max_processes_per_owner: 1000,
            shim_pool: 2,
            journal_forward: false,
            notifications: mode == Mode::User,
            history: true,
            history_raw_retention: Duration::from_secs(3600),
            history_resolution: Duration::from_secs(300),
            history_retention: Duration::from_secs(7 * 24 * 3600),
            metrics_listen: None,
        })
    }

    /// Where the config file is looked for when `--config` is not given.
    pub fn default_path(mode: Mode) -> Result<PathBuf> {
        match mode {
            Mode::System => Ok(PathBuf::from("/etc/corral/corrald.toml")),
            Mode::User => Ok(xdg_dir("XDG_CONFIG_HOME", ".config")?.join("corral/corrald.toml")),
        }
    }

    /// Loads `path`; a missing file means all defaults unless `required`.
    pub fn load(mode: Mode, path: &Path, required: bool) -> Result<Config> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => String::new(),
            Err(source) => {
                return Err(Error::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Config::parse(mode, &text).map_err(|message| Error::Invalid {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses TOML text over the defaults. The error names the key.
    pub fn parse(mode: Mode, text: &str) -> std::result::Result<Config, String> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| e.to_string().trim().to_string())?;
        let mut c = Config::defaults(mode).map_err(|e| e.to_string())?;
        if let Some(d) = raw.state_dir {
            if !d.is_absolute() {
                return Err(format!(
                    "state_dir: '{}' is not an absolute path",
                    d.display()
                ));
            }
            c.state_dir = d;
        }
        if let Some(a) = raw.sample_interval {
            c.sample_interval = duration("sample_interval", &a)?;
            if c.sample_interval < Duration::from_secs(1) {
                return Err("sample_interval: must be at least 1s".into());
            }
        }
        if let Some(a) = raw.stop_timeout {
            c.stop_timeout = duration("stop_timeout", &a)?;
            if c.stop_timeout.is_zero() {
                return Err("stop_timeout: must be greater than 0".into());
            }
        }
        if let Some(a) = raw.retention {
            c.retention = duration("retention", &a)?;
        }
        if let Some(n) = raw.max_events {
            if n < 100 {
                return Err("max_events: must be at least 100".into());
            }
            c.max_events = n;
        }
        if let Some(a) = raw.log_max_size {
            c.log_max_size = size("log_max_size", &a)?;
            if c.log_max_size < 4096 {
                return Err("log_max_size: must be at least 4K".into());
            }
        }
        if let Some(n) = raw.log_files {
            if n == 0 {
                return Err("log_files: must be at least 1".into());
            }
            c.log_files = n;
        }
        c.restart_delay_ms = raw.restart_delay_ms.unwrap_or(c.restart_delay_ms);
        c.restart_delay_max_ms = raw.restart_delay_max_ms.unwrap_or(c.restart_delay_max_ms);
        if c.restart_delay_max_ms < c.restart_delay_ms {
            return Err("restart_delay_max_ms: smaller than restart_delay_ms".into());
        }
        c.restart_reset_sec = raw.restart_reset_sec.unwrap_or(c.restart_reset_sec);
        c.restart_limit = raw.restart_limit.unwrap_or(c.restart_limit);
        c.restart_limit_interval_sec = raw
            .restart_limit_interval_sec
            .unwrap_or(c.restart_limit_interval_sec);
        if c.restart_limit_interval_sec == 0 {
            return Err("restart_limit_interval_sec: must be greater than 0".into());
        }
        if let Some(n) = raw.max_processes_per_owner {
            if n == 0 {
                return Err("max_processes_per_owner: must be at least 1".into());
            }
            c.max_processes_per_owner = n;
        }
        if let Some(n) = raw.shim_pool {
            if n > MAX_SHIM_POOL {
                return Err(format!("shim_pool: at most {MAX_SHIM_POOL}"));
            }
            c.shim_pool = n;
        }
        c.journal_forward = raw.journal_forward.unwrap_or(c.journal_forward);
        // The system agent has no desktop session to notify.
        c.notifications = c.mode == Mode::User && raw.notifications.unwrap_or(c.notifications);
        c.history = raw.history.unwrap_or(c.history);
        for (key, value, field) in [
            (
                "history_raw_retention",
                &raw.history_raw_retention,
                &mut c.history_raw_retention,
            ),
            (
                "history_resolution",
                &raw.history_resolution,
                &mut c.history_resolution,
            ),
            (
                "history_retention",
                &raw.history_retention,
                &mut c.history_retention,
            ),
        ] {
            if let Some(a) = value {
                *field = duration(key, a)?;
            }
        }
        // Unset tiers follow a slow tick rather than refuse it: a config
        // that set only sample_interval = 600 stays valid.
        if raw.history_resolution.is_none() {
            c.history_resolution = c.history_resolution.max(c.sample_interval);
        }
        if raw.history_raw_retention.is_none() {
            c.history_raw_retention = c.history_raw_retention.max(c.history_resolution);
        }
        if raw.history_retention.is_none() {
            c.history_retention = c.history_retention.max(c.history_raw_retention);
        }
        if c.history_resolution < c.sample_interval {
            return Err("history_resolution: must be at least sample_interval".into());
        }
        if c.history_raw_retention < c.history_resolution {
            return Err("history_raw_retention: must be at least history_resolution".into());
        }
        if c.history_retention < c.history_raw_retention {
            return Err("history_retention: must be at least history_raw_retention".into());
        }
        if let Some(text) = raw.metrics_listen.filter(|t| !t.is_empty()) {
            let addr: std::net::SocketAddr = text.parse().map_err(|_| {
                format!("metrics_listen: '{text}' is not an address like 127.0.0.1:9101")
            })?;
            if !addr.ip().is_loopback() && !raw.metrics_allow_remote.unwrap_or(false) {
                return Err(format!(
                    "metrics_listen: {addr} is not a loopback address; set metrics_allow_remote = true to serve metrics to the network"
                ));
            }
            c.metrics_listen = Some(addr);
        }
        Ok(c)
    }
}

fn xdg_dir(var: &str, fallback: &str) -> Result<PathBuf> {
    if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(v));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| Error::Environment(format!("neither {var} nor HOME is set")))?;
    Ok(PathBuf::from(home).join(fallback))
}

fn default_state_dir(mode: Mode) -> Result<PathBuf> {
    match mode {
        Mode::System => Ok(PathBuf::from("/var/lib/corral")),
        Mode::User => Ok(xdg_dir("XDG_STATE_HOME", ".local/state")?.join("corral")),
    }
}

/// `"1.5s"`, `"500ms"`, `"10m"`, `"2h"`, `"7d"`, or a number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "" | "s" | "sec" => 1.0,
        "ms" => 0.001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => return None,
    };
    // try_from: `from_secs_f64` panics past u64::MAX seconds ("1e30d").
    Duration::try_from_secs_f64(n * mult).ok()
}

/// `"512M"`, `"1G"`, `"64K"`, `"1024"` (bytes); binary multiples.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().trim_end_matches(['B', 'b', 'i']) {
        "" => 1,
        "K" | "k" => 1 << 10,
        "M" | "m" => 1 << 20,
        "G" | "g" => 1 << 30,
        "T" | "t" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn duration(key: &str, a: &Amount) -> std::result::Result<Duration, String> {
    let d = match a {
        Amount::Number(n) => Some(Duration::from_secs(*n)),
        Amount::Float(f) if f.is_finite() && *f >= 0.0 => Some(Duration::from_secs_f64(*f)),
        Amount::Float(_) => None,
        Amount::Text(t) => parse_duration(t),
    };
    d.ok_or_else(|| format!("{key}: not a duration (e.g. 10, \"500ms\", \"7d\")"))
}

fn size(key: &str, a: &Amount) -> std::result::Result<u64, String> {
    let n = match a {
        Amount::Number(n) => Some(*n),
        Amount::Float(_) => None,
        Amount::Text(t) => parse_size(t),
    };
    n.ok_or_else(|| format!("{key}: not a size (e.g. 10485760, \"10M\")"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> std::result::Result<Config, String> {
        std::env::set_var("HOME", "/home/test");
        Config::parse(Mode::User, text)
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.sample_interval, Duration::from_secs(10));
        assert_eq!(c.stop_timeout, Duration::from_secs(10));
        assert_eq!(c.log_files, 5);
    }

    #[test]
    fn units_and_numbers() {
        let c = parse("sample_interval = \"1500ms\"\nretention = \"2d\"\nlog_max_size = \"1M\"\nstop_timeout = 3").unwrap();
        assert_eq!(c.sample_interval, Duration::from_millis(1500));
        assert_eq!(c.retention, Duration::from_secs(2 * 86400));
        assert_eq!(c.log_max_size, 1 << 20);
        assert_eq!(c.stop_timeout, Duration::from_secs(3));
    }

    #[test]
    fn errors_name_the_key() {
        for (text, key) in [
            ("bogus = 1", "bogus"),
            ("sample_interval = \"0.5s\"", "sample_interval"),
            ("sample_interval = \"soon\"", "sample_interval"),
            ("log_files = 0", "log_files"),
            ("log_max_size = \"10X\"", "log_max_size"),
            ("state_dir = \"relative\"", "state_dir"),
            ("max_events = -1", "max_events"),
            (
                "history_resolution = \"1m\"\nhistory_raw_retention = \"30s\"",
                "history_raw_retention",
            ),
            (
                "sample_interval = 10\nhistory_resolution = 5",
                "history_resolution",
            ),
            ("metrics_listen = \"0.0.0.0:9101\"", "metrics_listen"),
            ("metrics_listen = \"localhost\"", "metrics_listen"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    /// The fields serde knows for `RawConfig`, read from its unknown-field
    /// error ("unknown field `x`, expected one of `a`, `b`").
    fn raw_fields() -> Vec<String> {
        let err = toml::from_str::<RawConfig>("not_a_key = 1")
            .unwrap_err()
            .to_string();
        let list = err.split("expected one of").nth(1).expect(&err);
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(String::from)
            .collect()
    }

    #[test]
    fn key_docs_list_every_key_with_its_default() {
        let documented: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
        assert_eq!(
            documented,
            raw_fields(),
            "KEYS must list RawConfig's fields in order"
        );
        let mut text = String::new();
        for k in KEYS {
            match k.default {
                Some(v) => text.push_str(&format!("{} = {v}\n", k.name)),
                None => assert!(!k.default_text.is_empty(), "{}: no default given", k.name),
            }
        }
        assert_eq!(
            parse(&text).unwrap(),
            parse("").unwrap(),
            "documented defaults:\n{text}"
        );
    }

    #[test]
    fn notifications_default_on_for_users_and_never_in_system_mode() {
        assert!(parse("").unwrap().notifications);
        assert!(!parse("notifications = false").unwrap().notifications);
        let system = Config::parse(Mode::System, "notifications = true").unwrap();
        assert!(!system.notifications);
        assert!(parse("journal_forward = true").unwrap().journal_forward);
        assert_eq!(parse("").unwrap().shim_pool, 2);
        assert_eq!(parse("shim_pool = 0").unwrap().shim_pool, 0);
        assert!(parse("shim_pool = 65").unwrap_err().contains("shim_pool"));
        assert!(!parse("").unwrap().journal_forward);
    }

    #[test]
    fn history_tiers_follow_a_slow_tick_and_metrics_stay_on_loopback() {
        let c = parse("sample_interval = 600").unwrap();
        assert_eq!(c.history_resolution, Duration::from_secs(600));
        assert_eq!(c.history_raw_retention, Duration::from_secs(3600));
        let c = parse("sample_interval = 7200").unwrap();
        assert_eq!(c.history_raw_retention, Duration::from_secs(7200));
        assert!(parse("").unwrap().metrics_listen.is_none());
        let local = parse("metrics_listen = \"[::1]:9101\"").unwrap();
        assert_eq!(local.metrics_listen, "[::1]:9101".parse().ok());
        let open = parse("metrics_listen = \"0.0.0.0:9101\"\nmetrics_allow_remote = true").unwrap();
        assert_eq!(open.metrics_listen, "0.0.0.0:9101".parse().ok());
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("-1"), None);
        // Regression: a huge value panicked in Duration::from_secs_f64.
        assert_eq!(parse_duration("99999999999999999999999d"), None);
    }
}
