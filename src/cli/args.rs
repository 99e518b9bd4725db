//! The `corralctl` command line as clap derive types, plus the value
//! parsers that turn flag text into typed values. Every malformed value is
//! rejected here, so it becomes a clap usage error (exit 2) naming the flag;
//! nothing in this file talks to the bus.

use std::time::Duration;

use clap::builder::PossibleValuesParser;
use clap::{Args, Parser, Subcommand};

use crate::api::{OnUnhealthy, RestartMode, State, StatusRange};

use crate::config::{parse_duration, parse_size};

use super::format::parse_signal;

/// Control corrald, the corral process supervisor, over D-Bus.
#[derive(Debug, Parser)]
#[command(name = "corralctl", version, propagate_version = true)]
pub struct Cli {
    /// Talk to the system agent on the system bus (default: the user's agent on the session bus).
    #[arg(long, global = true)]
    pub system: bool,
    /// Operate on a remote host, like systemctl -H: ssh to [USER@]HOST and speak D-Bus through systemd-stdio-bridge there.
    #[arg(short = 'H', long = "host", global = true, value_name = "[USER@]HOST")]
    pub host: Option<String>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a command under supervision, in its own systemd scope; prints its id.
    Start(Box<StartArgs>),
    /// List processes, ended ones included.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show everything known about one process, with recent events and output.
    Status(StatusArgs),
    /// List the TCP and UDP ports every running process listens on.
    Ports(ListArgs),
    /// Stop processes (SIGTERM, then SIGKILL after the agent's stop timeout).
    Stop(MatchArgs),
    /// Send a signal to a process's main process and its process group.
    Kill(KillArgs),
    /// Stop a process (if running) and start it again with the same id.
    Restart(IdArg),
    /// Stop (if running) and forget processes; their events stay.
    #[command(visible_alias = "remove")]
    Rm(MatchArgs),
    /// Show the agent's event history, of one process or of all.
    Events(EventsArgs),
    /// Show a process's output.
    Logs(LogsArgs),
    /// Supervise a process that is already running (it and its descendants move into a new scope); prints its id.
    Track(TrackArgs),
    /// Forget processes without stopping them (they keep running in their scope).
    Untrack(IdArg),
    /// Chart a process's usage history (CPU, memory, tasks) with min/avg/max.
    Stats(StatsArgs),
    /// Live full-screen view of every process (a plain table when stdout is not a terminal).
    Top,
    /// Print every process's and workspace's usage and state in the OpenMetrics text format.
    Metrics,
    /// Connect this terminal to a process started with -t (detach: Ctrl-]).
    Attach(AttachArgs),
    /// Start a command on a terminal and attach to it at once (like `docker run -it`).
    Run(Box<RunArgs>),
    /// Write TEXT to a process's terminal, as if typed (no newline added).
    Send(SendArgs),
    /// Change the limits of a process or a workspace at once; they stay for later runs.
    Limit(LimitArgs),
    /// Freeze every process of a workspace (systemd's freezer, cgroup v2 only).
    Freeze(WorkspaceArg),
    /// Resume a frozen workspace.
    Thaw(WorkspaceArg),
    /// List workspaces with their totals, limits and frozen state.
    Workspaces,
    /// Bring a project's workspace to its corral.toml: start what is missing in dependency order, restart what changed.
    Up(ProjectArgs),
    /// Stop a project's processes, dependents first.
    Down(DownArgs),
    /// Write a corral.toml from a Procfile.
    Import(ImportArgs),
}

#[derive(Debug, Args)]
pub struct ProjectArgs {
    /// The project file (default: corral.toml in this directory or the nearest parent).
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<std::path::PathBuf>,
    /// Only these processes (and, for `up`, what they depend on; for `down`, what depends on them).
    #[arg(value_name = "NAMES")]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// Forget the processes too (their events stay).
    #[arg(long)]
    pub rm: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The Procfile to read.
    #[arg(value_name = "PROCFILE")]
    pub procfile: std::path::PathBuf,
    /// The workspace to declare (default: the directory's name).
    #[arg(long, short = 'w')]
    pub workspace: Option<String>,
    /// Write here instead of standard output (refuses to overwrite).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Process id or unique name.
    #[arg(
        value_name = "ID",
        required_unless_present = "workspace",
        conflicts_with = "workspace"
    )]
    pub id: Option<String>,
    /// The workspace (its slice) instead of one process.
    #[arg(long, short = 'w')]
    pub workspace: Option<String>,
    /// Hard memory limit: 512M, 2G (binary units), bytes, or infinity.
    #[arg(long, value_name = "SIZE", value_parser = parse_limit_size)]
    pub memory_max: Option<u64>,
    /// Memory above which the processes are throttled and reclaimed (cgroup v2 only).
    #[arg(long, value_name = "SIZE", value_parser = parse_limit_size)]
    pub memory_high: Option<u64>,
    /// CPU limit in percent of one CPU (200 = two cores); 0 lifts it.
    #[arg(long, value_name = "PERCENT", value_parser = parse_quota)]
    pub cpu_quota: Option<f64>,
    /// CPU weight, 1-10000 (default 100).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub cpu_weight: Option<u64>,
    /// Most processes and threads, or infinity.
    #[arg(long, value_name = "N", value_parser = parse_limit_count)]
    pub tasks_max: Option<u64>,
    /// I/O weight, 1-10000 (default 100).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub io_weight: Option<u64>,
}

#[derive(Debug, Args)]
pub struct WorkspaceArg {
    /// The workspace.
    #[arg(long, short = 'w', required = true)]
    pub workspace: String,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Process id or unique name.
    #[arg(value_name = "ID")]
    pub id: String,
    /// Start of the range: a duration ago (10m, 2h, 7d) or a unix timestamp in seconds.
    #[arg(long, value_name = "WHEN", value_parser = parse_since, default_value = "1h")]
    pub since: Since,
}

/// `KEY=VALUE` for `--env`, or a bare `KEY` meaning "the caller's value".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvArg {
    Set(String, String),
    Inherit(String),
}

/// How to supervise the process: what `start` and `track` both take.
#[derive(Debug, Args)]
pub struct Supervise {
    /// Name shown in lists and usable instead of the id (default: the
    /// basename of the command).
    #[arg(long)]
    pub name: Option<String>,
    /// Workspace to group the process in (default: the agent's `default`).
    #[arg(long, short = 'w')]
    pub workspace: Option<String>,
    /// Free-form session key to group the process in.
    #[arg(long, short = 's')]
    pub session: Option<String>,
    /// Attach a label. Repeatable.
    #[arg(long, short = 'l', value_name = "KEY=VALUE", value_parser = parse_label)]
    pub label: Vec<(String, String)>,
    /// Memory limit of its scope, e.g. 512M, 2G (binary units) or bytes.
    #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
    pub memory_max: Option<u64>,
    /// CPU limit of its scope in percent of one CPU (50 = half a core, 200 = two cores).
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    pub cpu_quota: Option<f64>,
    /// Limit on the number of tasks (processes and threads) of its scope.
    #[arg(long, value_name = "N")]
    pub tasks_max: Option<u64>,
    /// Restart policy (a tracked process is launched again as recorded from /proc).
    #[arg(long, value_name = "POLICY", value_parser = PossibleValuesParser::new(RestartMode::NAMES))]
    pub restart: Option<String>,
    /// Relaunch the process when the agent starts and its scope is gone.
    #[arg(long)]
    pub persistent: bool,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    #[command(flatten)]
    pub supervise: Supervise,
    /// Working directory (default: the current directory).
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<std::path::PathBuf>,
    /// Set an environment variable; a bare KEY copies the caller's value. Repeatable.
    #[arg(long, short = 'e', value_name = "KEY=VALUE", value_parser = parse_env_arg)]
    pub env: Vec<EnvArg>,
    /// Run with only the --env entries as the environment (neither the
    /// caller's nor the agent's).
    #[arg(long)]
    pub clean_env: bool,
    /// First restart delay, doubled on each restart (e.g. 100ms, 2s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub restart_delay: Option<Duration>,
    /// Cap of the doubling restart delay (e.g. 30s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub restart_delay_max: Option<Duration>,
    /// Restarts allowed within --restart-limit-interval before the process is declared failed.
    #[arg(long, value_name = "N")]
    pub restart_limit: Option<u32>,
    /// Window of --restart-limit (e.g. 60s); rounded up to whole seconds.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub restart_limit_interval: Option<Duration>,
    /// Uptime after which the restart backoff starts over (e.g. 60s); rounded up to whole seconds.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub restart_reset: Option<Duration>,
    /// Run on a pseudo-terminal, to attach to later (`corralctl attach`).
    #[arg(long, short = 't')]
    pub tty: bool,
    /// The command reports readiness with sd_notify (READY=1, STATUS=...) on $NOTIFY_SOCKET.
    #[arg(long)]
    pub notify: bool,
    /// System agent only: run as this user (name or uid); root, or an admin after authentication.
    #[arg(long, value_name = "USER")]
    pub run_as: Option<String>,
    #[command(flatten)]
    pub health: HealthArgs,
    /// The command and its arguments (put `--` before it when it has options).
    #[arg(
        value_name = "CMD",
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}

/// A health check for `start`: one probe kind and its timing.
#[derive(Debug, Args)]
#[group(skip)]
pub struct HealthArgs {
    /// Health check: run this shell command (`sh -c`) with the process's environment and directory; exit 0 passes.
    #[arg(long, value_name = "CMD", group = "probe", conflicts_with_all = ["health_tcp", "health_http"])]
    pub health_exec: Option<String>,
    /// Health check: a TCP connect to HOST:PORT passes.
    #[arg(
        long,
        value_name = "HOST:PORT",
        group = "probe",
        conflicts_with = "health_http"
    )]
    pub health_tcp: Option<String>,
    /// Health check: an HTTP GET of this http:// URL passes when answered with an expected status (default 200-399).
    #[arg(long, value_name = "URL", group = "probe")]
    pub health_http: Option<String>,
    /// With --health-http: the statuses that pass, one (204) or a range (200-299).
    // clap waives `requires` when a given flag conflicts with the required
    // one (--health-tcp does with --health-http): the conflicts cover that.
    #[arg(
        long,
        value_name = "RANGE",
        requires = "health_http",
        conflicts_with_all = ["health_exec", "health_tcp"]
    )]
    pub health_expect_status: Option<StatusRange>,
    /// With --health-http: text the response body must contain (its first 64 KiB are searched).
    #[arg(
        long,
        value_name = "TEXT",
        requires = "health_http",
        conflicts_with_all = ["health_exec", "health_tcp"]
    )]
    pub health_expect_body: Option<String>,
    /// Time between probes (default 1s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg, requires = "probe")]
    pub health_interval: Option<Duration>,
    /// Time a probe may take before it fails (default 1s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg, requires = "probe")]
    pub health_timeout: Option<Duration>,
    /// Consecutive failures that make the process unhealthy (default 3).
    #[arg(long, value_name = "N", requires = "probe")]
    pub health_retries: Option<u32>,
    /// Time after start during which failures do not count until a first pass (default 0s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg, requires = "probe")]
    pub health_start_period: Option<Duration>,
    /// What an unhealthy process gets (default none).
    #[arg(long, value_name = "ACTION", value_parser = PossibleValuesParser::new(OnUnhealthy::NAMES), requires = "probe")]
    pub on_unhealthy: Option<String>,
}

#[derive(Debug, Args)]
pub struct TrackArgs {
    #[command(flatten)]
    pub supervise: Supervise,
    /// The process id to take over.
    #[arg(value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: u32,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only processes of this workspace.
    #[arg(long, short = 'w')]
    pub workspace: Option<String>,
    /// Only processes of this session.
    #[arg(long, short = 's')]
    pub session: Option<String>,
    /// Only processes in this state.
    #[arg(long, value_parser = PossibleValuesParser::new(State::NAMES))]
    pub state: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Process id or unique name.
    #[arg(value_name = "ID")]
    pub id: String,
    /// Number of events and log lines to show.
    #[arg(long, short = 'n', default_value_t = 10)]
    pub lines: u32,
}

/// Ids, or a workspace/session filter: `stop` and `rm`.
#[derive(Debug, Args)]
pub struct MatchArgs {
    /// Process ids or unique names.
    #[arg(
        value_name = "ID",
        required_unless_present_any = ["workspace", "session"],
        conflicts_with_all = ["workspace", "session"]
    )]
    pub ids: Vec<String>,
    /// Every process of this workspace.
    #[arg(long, short = 'w')]
    pub workspace: Option<String>,
    /// Every process of this session.
    #[arg(long, short = 's')]
    pub session: Option<String>,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal name (TERM, SIGTERM, hup, …) or number.
    #[arg(long, short = 's', default_value = "TERM", value_parser = parse_signal_arg)]
    pub signal: i32,
    /// Process ids or unique names.
    #[arg(value_name = "ID", required = true)]
    pub ids: Vec<String>,
}

#[derive(Debug, Args)]
pub struct IdArg {
    /// Process ids or unique names.
    #[arg(value_name = "ID", required = true)]
    pub ids: Vec<String>,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Process id or unique name (default: events of every process).
    #[arg(value_name = "ID")]
    pub id: Option<String>,
    /// Number of newest events to show.
    #[arg(long, short = 'n', default_value_t = 50)]
    pub lines: u32,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Process id or unique name.
    #[arg(
        value_name = "ID",
        required_unless_present = "workspace",
        conflicts_with = "workspace"
    )]
    pub id: Option<String>,
    /// Every process of this workspace, merged by time with a name prefix (across restarts).
    #[arg(long, short = 'w')]
    pub workspace: Option<String>,
    /// Only lines matching this regular expression.
    #[arg(long, value_name = "RE", value_parser = parse_regex)]
    pub grep: Option<regex::Regex>,
    /// Number of last lines to show (0 = every kept line).
    #[arg(long, short = 'n', default_value_t = 100)]
    pub lines: u32,
    /// Only lines since a time: a duration ago (10m, 2h) or a unix timestamp in seconds.
    #[arg(long, value_name = "WHEN", value_parser = parse_since)]
    pub since: Option<Since>,
    /// Keep printing new output until the process ends or Ctrl-C.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Prefix each line with its local time.
    #[arg(long, short = 't')]
    pub timestamps: bool,
    /// Prefix each line with its stream: `[out]`, `[err]` or `[sys]`.
    #[arg(long)]
    pub streams: bool,
    /// Keep terminal escape sequences (colours, cursor moves) instead of stripping them.
    #[arg(long)]
    pub raw: bool,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Process id or unique name.
    #[arg(value_name = "ID")]
    pub id: String,
    /// The key that detaches, leaving the process running: ctrl-A … ctrl-Z, ctrl-], ctrl-\, ctrl-^, ctrl-_.
    #[arg(long, value_name = "KEY", env = "CORRAL_DETACH_KEYS", default_value = "ctrl-]", value_parser = crate::cli::attach::parse_detach_key)]
    pub detach_keys: u8,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub start: StartArgs,
    /// The key that detaches, leaving the process running (as for `attach`).
    #[arg(long, value_name = "KEY", env = "CORRAL_DETACH_KEYS", default_value = "ctrl-]", value_parser = crate::cli::attach::parse_detach_key)]
    pub detach_keys: u8,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Process id or unique name.
    #[arg(value_name = "ID")]
    pub id: String,
    /// The bytes to write (use $'r\n' in bash for a newline).
    #[arg(value_name = "TEXT", allow_hyphen_values = true)]
    pub text: String,
}

/// What `--since` means, resolved against the clock only when used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Since {
    Ago(Duration),
    /// Seconds since the epoch.
    At(u64),
}

/// Unix timestamps are told apart from durations by size: no one asks for
/// logs "since 31 years ago", and no timestamp is below 1e9 (2001) anymore.
const TIMESTAMP_MIN: u64 = 1_000_000_000;

pub fn parse_since(s: &str) -> Result<Since, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<u64>() {
        if n >= TIMESTAMP_MIN {
            return Ok(Since::At(n));
        }
    }
    parse_duration(t)
        .map(Since::Ago)
        .ok_or_else(|| format!("'{s}' is neither a duration (10m, 2h) nor a unix timestamp"))
}

pub fn parse_env_arg(s: &str) -> Result<EnvArg, String> {
    if s.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    match s.split_once('=') {
        Some(("", _)) => Err(format!("'{s}' has an empty variable name")),
        Some((k, v)) => Ok(EnvArg::Set(k.to_string(), v.to_string())),
        None if s.is_empty() => Err("empty variable name".into()),
        None => Ok(EnvArg::Inherit(s.to_string())),
    }
}

pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("'{s}' is not KEY=VALUE")),
    }
}

pub fn parse_regex(s: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(s)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("not a usable regular expression: {e}"))
}

pub fn parse_size_arg(s: &str) -> Result<u64, String> {
    parse_size(s).ok_or_else(|| format!("'{s}' is not a size (e.g. 512M, 2G, 1048576)"))
}

pub fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s).ok_or_else(|| format!("'{s}' is not a duration (e.g. 100ms, 30s, 5m)"))
}

pub fn parse_percent(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let t = t.strip_suffix('%').unwrap_or(t);
    match t.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a positive percentage (e.g. 50, 200)")),
    }
}

/// A size or `infinity` (no limit).
pub fn parse_limit_size(s: &str) -> Result<u64, String> {
    if s == "infinity" {
        return Ok(crate::api::NO_LIMIT);
    }
    parse_size_arg(s)
}

/// A count or `infinity` (no limit).
pub fn parse_limit_count(s: &str) -> Result<u64, String> {
    if s == "infinity" {
        return Ok(crate::api::NO_LIMIT);
    }
    s.parse::<u64>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("'{s}' is not a positive number or infinity"))
}

/// A `--cpu-quota` percentage; 0 lifts the quota.
pub fn parse_quota(s: &str) -> Result<f64, String> {
    if s.trim().trim_end_matches('%').trim() == "0" {
        return Ok(0.0);
    }
    parse_percent(s)
}

pub fn parse_signal_arg(s: &str) -> Result<i32, String> {
    parse_signal(s)
        .ok_or_else(|| format!("'{s}' is not a signal name (TERM, SIGKILL, hup) or number (1-64)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("corralctl").chain(args.iter().copied()))
    }

    #[test]
    fn start_takes_the_command_after_dashes_or_not() {
        let cli = parse(&["start", "--name", "x", "--", "ls", "-la", "--name"]).unwrap();
        let Command::Start(a) = cli.command else {
            panic!("not start")
        };
        assert_eq!(a.supervise.name.as_deref(), Some("x"));
        assert_eq!(a.command, ["ls", "-la", "--name"]);

        let cli = parse(&["--json", "start", "sleep", "-9"]).unwrap();
        assert!(cli.json);
        let Command::Start(a) = cli.command else {
            panic!("not start")
        };
        assert_eq!(a.command, ["sleep", "-9"]);
    }

    #[test]
    fn usage_errors_exit_2() {
        for args in [
            &["start"][..],
            &["start", "--memory-max", "lots", "--", "x"],
            &["start", "--restart", "sometimes", "--", "x"],
            &["start", "--env", "=v", "--", "x"],
            &["start", "--cpu-quota", "-5", "--", "x"],
            &["kill", "-s", "NOPE", "1"],
            &["stop"],
            &["stop", "1", "--workspace", "w"],
            &["list", "--state", "zombie"],
            &["logs", "1", "--since", "yesterday"],
            &["bogus"],
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn host_is_global() {
        let cli = parse(&["list", "-H", "ann@build1"]).unwrap();
        assert_eq!(cli.host.as_deref(), Some("ann@build1"));
    }

    #[test]
    fn global_flags_after_the_subcommand() {
        let cli = parse(&["list", "--json", "--system"]).unwrap();
        assert!(cli.json && cli.system);
    }

    #[test]
    fn since_tells_timestamps_from_durations() {
        assert_eq!(parse_since("10m"), Ok(Since::Ago(Duration::from_secs(600))));
        assert_eq!(parse_since("90"), Ok(Since::Ago(Duration::from_secs(90))));
        assert_eq!(parse_since("1700000000"), Ok(Since::At(1_700_000_000)));
        assert!(parse_since("-3").is_err());
    }

    #[test]
    fn env_and_label_args() {
        assert_eq!(
            parse_env_arg("A=b=c"),
            Ok(EnvArg::Set("A".into(), "b=c".into()))
        );
        assert_eq!(parse_env_arg("A="), Ok(EnvArg::Set("A".into(), "".into())));
        assert_eq!(parse_env_arg("HOME"), Ok(EnvArg::Inherit("HOME".into())));
        assert!(parse_env_arg("=x").is_err());
        assert!(parse_env_arg("").is_err());
        assert_eq!(parse_label("k=v"), Ok(("k".into(), "v".into())));
        assert!(parse_label("k").is_err());
        assert_eq!(parse_percent("50%"), Ok(50.0));
        assert!(parse_percent("0").is_err());
        assert!(parse_percent("NaN").is_err());
    }
}
