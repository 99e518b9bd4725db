//! The raw `corral.toml` format: serde structs that mirror the file key
//! for key, so the parser, the JSON Schema for editors (`schemars`) and
//! the Procfile importer (serialisation) share one definition. Every table
//! denies unknown keys. Values stay as written (durations and sizes as
//! text); checking and resolving them is `decl`'s job, not this module's.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "corral.toml",
    description = "A corral project: the processes `corralctl up` starts, with their dependencies."
)]
pub struct RawFile {
    /// The workspace of every process of this file; default: the name of
    /// the file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// Keys that apply to every process that does not set them (`env` is
    /// merged, the process's variables winning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<RawDefaults>,
    /// The processes, by name.
    #[serde(default)]
    pub processes: BTreeMap<String, RawProcess>,
}

/// A command: a string is run by `/bin/sh -c`, an array is the argv.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "a string (run by /bin/sh -c) or an array of strings (argv)"
)]
pub enum Command {
    Shell(String),
    Argv(Vec<String>),
}

/// One path or several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged, expecting = "a path or an array of paths")]
pub enum Paths {
    One(String),
    Many(Vec<String>),
}

impl Paths {
    pub fn as_slice(&self) -> &[String] {
        match self {
            Paths::One(p) => std::slice::from_ref(p),
            Paths::Many(ps) => ps,
        }
    }
}

/// Bytes, or text with a binary unit (`"512M"`, `"1G"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged, expecting = "a number of bytes or a size like \"512M\"")]
pub enum Size {
    Bytes(u64),
    Text(String),
}

/// Percent of one CPU: a number (`50`) or text (`"50%"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "a percentage of one CPU: a number or text like \"50%\""
)]
pub enum Quota {
    Percent(f64),
    Text(String),
}

/// What a process waits for of each process it depends on.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Condition {
    /// The dependency has been started.
    Started,
    /// Its health check (or readiness check) passed.
    Healthy,
    /// It exited with status 0.
    CompletedSuccessfully,
}

impl Condition {
    /// The name as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Started => "started",
            Condition::Healthy => "healthy",
            Condition::CompletedSuccessfully => "completed-successfully",
        }
    }
}

/// `depends_on`: names (each `started`) or a table of name = condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "an array of process names or a table of name = \"started\" | \"healthy\" | \"completed-successfully\""
)]
pub enum DependsOn {
    Names(Vec<String>),
    Conditions(BTreeMap<String, Condition>),
}

/// `health`: exactly one of `tcp`, `http`, `exec`, `log`, `notify`, and
/// for the probes (`tcp`, `http`, `exec`) how often and how strictly.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// Probe: connect to `host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    /// Probe: GET this `http://` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// Probe: run this command; exit status 0 passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<Command>,
    /// Readiness: ready once an output line matches this regex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// Readiness: ready once the process sends sd_notify `READY=1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<bool>,
    /// Time between probes (`"1s"`, `"500ms"`); default 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Time a probe may take; default 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Consecutive failures that make the process unhealthy; default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Grace time after start when failures do not count; default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<String>,
    /// `none` (default) or `restart`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_unhealthy: Option<String>,
    /// `http`: the statuses that pass, `"204"` or `"200-299"`; default 200-399.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<String>,
    /// `http`: text the response body must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_body: Option<String>,
}

/// Defines `RawDefaults` (the keys `[defaults]` may set) and `RawProcess`
/// (those plus the keys only a process has), so the two cannot drift, and
/// `RawProcess::apply_defaults`.
macro_rules! process_keys {
    ($($(#[$doc:meta])* $field:ident: $ty:ty,)*) => {
        /// `[defaults]`: keys every process gets unless it sets them.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct RawDefaults {
            $($(#[$doc])*
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub $field: Option<$ty>,)*
        }

        /// `[processes.NAME]`: one process (or `instances` of it).
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct RawProcess {
            /// What to run: a string for `/bin/sh -c`, or an argv array.
            pub command: Command,
            /// Processes started first: an array of names (each
            /// `started`) or a table of name = condition.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub depends_on: Option<DependsOn>,
            /// How many copies, 1 to 64; copy i is named `NAME-i` (just
            /// `NAME` when 1) and gets `CORRAL_INSTANCE=i`.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub instances: Option<u32>,
            /// Base port: copy i gets `PORT=port+i`.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub port: Option<u16>,
            $($(#[$doc])*
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub $field: Option<$ty>,)*
        }

        impl RawProcess {
            /// A process running `command` with every other key unset.
            pub fn new(command: Command) -> RawProcess {
                RawProcess {
                    command,
                    depends_on: None,
                    instances: None,
                    port: None,
                    $($field: None,)*
                }
            }

            /// Takes each key it does not set from `d`; `env` is merged.
            pub fn apply_defaults(&mut self, d: &RawDefaults) {
                if let (Some(own), Some(common)) = (&mut self.env, &d.env) {
                    for (k, v) in common {
                        own.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
                $(if self.$field.is_none() {
                    self.$field = d.$field.clone();
                })*
            }
        }
    };
}

process_keys! {
    /// Working directory, relative to this file's directory; default: it.
    cwd: String,
    /// Environment variables, over those of the env files.
    env: BTreeMap<String, String>,
    /// `.env` files read in order (relative to this file), later ones
    /// winning.
    env_file: Paths,
    /// A health check (`tcp`, `http`, `exec`) or readiness check (`log`,
    /// `notify`).
    health: RawHealth,
    /// `no`, `on-failure` or `always`.
    restart: String,
    /// First restart delay (`"500ms"`), doubled each time.
    restart_delay: String,
    /// The cap of the doubling.
    restart_delay_max: String,
    /// Restarts within `restart_limit_interval` before the process fails.
    restart_limit: u32,
    /// The window of `restart_limit` (`"1m"`).
    restart_limit_interval: String,
    /// Uptime after which the backoff starts over.
    restart_reset: String,
    /// Memory hard limit (`"512M"` or bytes).
    memory_max: Size,
    /// Memory throttling threshold (`"384M"` or bytes).
    memory_high: Size,
    /// CPU limit: percent of one CPU (`50`, `"200%"`).
    cpu_quota: Quota,
    /// Relative CPU weight, 1 to 10000.
    cpu_weight: u64,
    /// Most tasks (processes and threads).
    tasks_max: u64,
    /// Relative IO weight, 1 to 10000.
    io_weight: u64,
    /// Relaunch when the agent starts and the process is gone.
    persistent: bool,
    /// Run on a pseudo-terminal.
    tty: bool,
    /// Globs (relative to `cwd`; `*` stays in a directory, `**` crosses
    /// them) whose changes restart the process. `.git`, `target` and
    /// `node_modules` only when a glob names them.
    watch: Vec<String>,
    /// Globs whose changes are ignored (over `watch`).
    watch_ignore: Vec<String>,
    /// Quiet time after a change before restarting; default 300ms.
    watch_debounce: String,
}
