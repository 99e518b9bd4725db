//! What a client sends: the `Start` spec and the filter of `List` /
//! `StopMatching` / `RemoveMatching`, as `a{sv}` dictionaries. Decoding is
//! strict — an unknown key or a value of the wrong D-Bus type is an error
//! naming the key, never silently ignored — because a typo in `MemoryMax`
//! must not start an unlimited process.

use std::collections::{BTreeMap, HashMap};

use zbus::zvariant::{OwnedValue, Type, Value};

use super::{RestartMode, State, WireValue};

/// Longest name, workspace or session we accept (bytes); unit names are
/// limited to 255 bytes and these end up inside them. Also the longest
/// `Labels` key.
pub const MAX_LABEL_LEN: usize = 128;

/// Most `Command` arguments, and most `Environment` entries.
pub const MAX_ARGS: usize = 4096;

/// `Command`, `Environment` and `WorkingDirectory` together, in bytes as
/// they travel to the shim ([`wire_len`]). The shim reads a spec line of
/// at most 1 MiB (`shim::protocol::MAX_CONTROL_LINE`); the other half is
/// for the agent's own environment, the JSON around the strings and the
/// paths corrald adds, so a spec that passes `validate` always fits.
pub const MAX_PAYLOAD: usize = 512 * 1024;

/// Longest `WorkingDirectory` (Linux's `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;

/// Most `Labels`, and the longest label value (bytes).
pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL_VALUE_LEN: usize = 4096;

/// The size of `s` as a JSON string's contents, or more: the spec reaches
/// the shim as JSON, where a control character may take 6 bytes (`\u0001`)
/// and `"` or `\\` take 2. An upper bound is enough to keep the line short.
pub fn wire_len(s: &str) -> usize {
    s.bytes()
        .map(|b| match b {
            0..=0x1f => 6,
            b'"' | b'\\' => 2,
            _ => 1,
        })
        .sum()
}

/// Defines `StartSpec` from its rows: each optional key's field, type and
/// D-Bus key, so decoding, encoding and the key list come from one place.
/// `Command`, the one required key, is written out here.
macro_rules! start_spec {
    ($($(#[$doc:meta])* $field:ident: $ty:ty = $key:literal,)*) => {
        /// A request to start one command. Every key but `Command` is
        /// optional: unset, it is not sent and the agent's default applies.
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct StartSpec {
            /// `Command`: argv; `argv[0]` is looked up in the spec's `PATH`.
            pub command: Vec<String>,
            $($(#[$doc])* pub $field: $ty,)*
        }

        impl StartSpec {
            /// Every key `Start` accepts.
            pub const KEYS: &[&str] = &["Command", $($key),*];

            fn set(&mut self, key: &str, value: OwnedValue) -> Result<(), String> {
                match key {
                    "Command" => self.command = typed(key, value)?,
                    $($key => self.$field = SpecField::decode(key, value)?,)*
                    other => return Err(format!("unknown spec key '{other}'")),
                }
                Ok(())
            }

            /// Encodes the spec for a `Start` call; unset keys are left out.
            pub fn to_dict(&self) -> HashMap<String, Value<'static>> {
                let mut d = HashMap::new();
                d.insert("Command".to_string(), self.command.to_wire().into());
                $(if let Some(v) = self.$field.encode() {
                    d.insert($key.to_string(), v);
                })*
                d
            }
        }
    };
}

start_spec! {
    /// Defaults to the basename of `argv[0]`.
    name: Option<String> = "Name",
    /// Absolute; defaults to the agent's home.
    working_directory: Option<String> = "WorkingDirectory",
    /// `KEY=VALUE` entries added to the agent's environment.
    environment: Vec<String> = "Environment",
    /// `Environment` is the whole environment instead of additions to the
    /// agent's.
    clean_environment: Option<bool> = "CleanEnvironment",
    /// Defaults to `default`.
    workspace: Option<String> = "Workspace",
    /// Free-form grouping key, empty when unset.
    session: Option<String> = "Session",
    labels: BTreeMap<String, String> = "Labels",
    /// Bytes.
    memory_max: Option<u64> = "MemoryMax",
    /// Percent of one CPU (50 = half a core, 200 = two).
    cpu_quota: Option<f64> = "CPUQuota",
    tasks_max: Option<u64> = "TasksMax",
    /// A `RestartMode` name.
    restart: Option<String> = "Restart",
    /// First restart delay, doubled each time.
    restart_delay_ms: Option<u64> = "RestartDelayMs",
    /// The cap of the doubling.
    restart_delay_max_ms: Option<u64> = "RestartDelayMaxMs",
    /// Uptime after which the backoff starts over.
    restart_reset_sec: Option<u32> = "RestartResetSec",
    /// Restarts within `RestartLimitIntervalSec` before the process is
    /// declared `failed` (crash loop).
    restart_limit: Option<u32> = "RestartLimit",
    restart_limit_interval_sec: Option<u32> = "RestartLimitIntervalSec",
    /// Relaunch at agent start when the scope is gone.
    persistent: Option<bool> = "Persistent",
    /// System mode: run as this user (name or uid) instead of the caller;
    /// needs `org.corral.Supervisor1.start-as-user` (root).
    user: Option<String> = "User",
    /// Run on a pseudo-terminal that clients attach to (README "Terminals").
    tty: Option<bool> = "Tty",
    /// A health check (see `api::HealthCheck`).
    health_check: Option<super::HealthCheck> = "HealthCheck",
    /// The command speaks sd_notify(3) on `NOTIFY_SOCKET` (README
    /// "Readiness"): `NotifyState` is `waiting` until it sends `READY=1`.
    notify: Option<bool> = "Notify",
}

/// How a spec field travels: an unset option or an empty list or map is
/// not sent, and a received key is type-checked before it is decoded.
trait SpecField: Sized {
    fn encode(&self) -> Option<Value<'static>>;
    fn decode(key: &str, value: OwnedValue) -> Result<Self, String>;
}

impl<T: WireValue> SpecField for Option<T> {
    fn encode(&self) -> Option<Value<'static>> {
        self.as_ref().map(|v| v.to_wire().into())
    }

    fn decode(key: &str, value: OwnedValue) -> Result<Self, String> {
        typed(key, value).map(Some)
    }
}

macro_rules! empty_is_unset {
    ($($t:ty),*) => {$(
        impl SpecField for $t {
            fn encode(&self) -> Option<Value<'static>> {
                (!self.is_empty()).then(|| self.to_wire().into())
            }

            fn decode(key: &str, value: OwnedValue) -> Result<Self, String> {
                typed(key, value)
            }
        }
    )*};
}

empty_is_unset!(Vec<String>, BTreeMap<String, String>);

impl SpecField for Option<super::HealthCheck> {
    fn encode(&self) -> Option<Value<'static>> {
        self.as_ref().map(|c| c.to_dict().into())
    }

    fn decode(key: &str, value: OwnedValue) -> Result<Self, String> {
        let got = value.value_signature().to_string();
        let dict = HashMap::<String, OwnedValue>::try_from(value)
            .map_err(|_| bad(key, format!("expected D-Bus type 'a{{sv}}', got '{got}'")))?;
        super::HealthCheck::from_dict(dict).map(Some)
    }
}

fn bad(key: &str, msg: impl std::fmt::Display) -> String {
    format!("{key}: {msg}")
}

/// Checks the D-Bus type of `value` before converting, so the error names
/// the key and the expected type instead of a generic "incorrect type".
fn typed<T: WireValue>(key: &str, value: OwnedValue) -> Result<T, String> {
    let sig = <T::Wire as Type>::SIGNATURE;
    let got = value.value_signature();
    if got != sig {
        return Err(bad(
            key,
            format!("expected D-Bus type '{sig}', got '{got}'"),
        ));
    }
    T::Wire::try_from(value)
        .ok()
        .and_then(T::from_wire)
        .ok_or_else(|| bad(key, format!("not a valid '{sig}' value")))
}

fn check_text(key: &str, s: &str, allow_empty: bool) -> Result<(), String> {
    if s.contains('\0') {
        return Err(bad(key, "contains a NUL byte"));
    }
    if !allow_empty && s.is_empty() {
        return Err(bad(key, "must not be empty"));
    }
    Ok(())
}

fn check_label(key: &str, s: &str) -> Result<(), String> {
    check_text(key, s, false)?;
    if s.len() > MAX_LABEL_LEN {
        return Err(bad(key, format!("longer than {MAX_LABEL_LEN} bytes")));
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(bad(key, "contains a control character"));
    }
    Ok(())
}

impl StartSpec {
    /// A spec running `command` with every other key unset.
    pub fn new(command: Vec<String>) -> Self {
        StartSpec {
            command,
            ..Default::default()
        }
    }

    /// Decodes and validates a spec received over D-Bus. The error is the
    /// message of an `InvalidArgument` reply.
    pub fn from_dict(dict: HashMap<String, OwnedValue>) -> Result<StartSpec, String> {
        let mut spec = StartSpec::default();
        let mut have_command = false;
        for (key, value) in dict {
            have_command |= key == "Command";
            spec.set(&key, value)?;
        }
        if !have_command {
            return Err("Command: required".into());
        }
        spec.validate()?;
        Ok(spec)
    }

    /// The process's name: `Name`, or the basename of `argv[0]` (the whole
    /// `argv[0]` if that ends in `/`).
    pub fn name_or_default(&self) -> &str {
        if let Some(n) = &self.name {
            return n;
        }
        let argv0 = self.command.first().map(String::as_str).unwrap_or("");
        argv0
            .rsplit('/')
            .next()
            .filter(|s| !s.is_empty())
            .unwrap_or(argv0)
    }

    /// Checks everything that can be checked without touching the system.
    pub fn validate(&self) -> Result<(), String> {
        if self.command.is_empty() {
            return Err("Command: must not be empty".into());
        }
        if self.command.len() > MAX_ARGS {
            return Err(format!(
                "Command: {} arguments, more than {MAX_ARGS}",
                self.command.len()
            ));
        }
        if self.environment.len() > MAX_ARGS {
            return Err(format!(
                "Environment: {} entries, more than {MAX_ARGS}",
                self.environment.len()
            ));
        }
        for (i, arg) in self.command.iter().enumerate() {
            check_text(&format!("Command[{i}]"), arg, i > 0)?;
        }
        match &self.name {
            Some(n) => check_label("Name", n)?,
            // The default name becomes a unit name and a label like a
            // given one; set `Name` when `argv[0]` does not make one.
            None => check_label("Name", self.name_or_default())
                .map_err(|e| format!("{e} (derived from Command[0]; set Name)"))?,
        }
        if let Some(w) = &self.workspace {
            check_label("Workspace", w)?;
        }
        if let Some(u) = &self.user {
            check_label("User", u)?;
        }
        if let Some(s) = &self.session {
            check_label("Session", s)?;
        }
        if let Some(d) = &self.working_directory {
            check_text("WorkingDirectory", d, false)?;
            if d.len() > MAX_PATH_LEN {
                return Err(format!(
                    "WorkingDirectory: longer than {MAX_PATH_LEN} bytes"
                ));
            }
            if !d.starts_with('/') {
                return Err(format!("WorkingDirectory: '{d}' is not an absolute path"));
            }
        }
        let payload: usize = self
            .command
            .iter()
            .chain(&self.environment)
            .chain(&self.working_directory)
            .map(|s| wire_len(s))
            .sum();
        if payload > MAX_PAYLOAD {
            return Err(format!(
                "Command, Environment and WorkingDirectory: {payload} bytes together, more than {MAX_PAYLOAD}"
            ));
        }
        for e in &self.environment {
            check_text("Environment", e, false)?;
            match e.split_once('=') {
                Some((k, _)) if !k.is_empty() => {}
                _ => return Err(format!("Environment: '{e}' is not KEY=VALUE")),
            }
        }
        if self.labels.len() > MAX_LABELS {
            return Err(format!(
                "Labels: {} labels, more than {MAX_LABELS}",
                self.labels.len()
            ));
        }
        for (k, v) in &self.labels {
            check_label("Labels key", k)?;
            check_text("Labels value", v, true)?;
            if v.len() > MAX_LABEL_VALUE_LEN {
                return Err(format!(
                    "Labels value of '{k}': longer than {MAX_LABEL_VALUE_LEN} bytes"
                ));
            }
        }
        if self.memory_max == Some(0) {
            return Err("MemoryMax: must be greater than 0".into());
        }
        if self.tasks_max == Some(0) {
            return Err("TasksMax: must be greater than 0".into());
        }
        if let Some(q) = self.cpu_quota {
            if !q.is_finite() || q <= 0.0 || q > 100_000.0 {
                return Err(format!("CPUQuota: {q} is not a percentage in (0, 100000]"));
            }
        }
        if let Some(r) = &self.restart {
            if RestartMode::parse(r).is_none() {
                return Err(format!(
                    "Restart: '{r}' is not one of {}",
                    RestartMode::NAMES.join(", ")
                ));
            }
        }
        if let (Some(d), Some(m)) = (self.restart_delay_ms, self.restart_delay_max_ms) {
            if m < d {
                return Err("RestartDelayMaxMs: smaller than RestartDelayMs".into());
            }
        }
        if self.restart_limit_interval_sec == Some(0) {
            return Err("RestartLimitIntervalSec: must be greater than 0".into());
        }
        // Bounds that keep the backoff arithmetic and its timers sane: a
        // restart further away than a day is no restart policy.
        const DAY_MS: u64 = 86_400_000;
        const DAY_SEC: u64 = 86_400;
        let bounds = [
            ("RestartDelayMs", self.restart_delay_ms, DAY_MS),
            ("RestartDelayMaxMs", self.restart_delay_max_ms, DAY_MS),
            (
                "RestartResetSec",
                self.restart_reset_sec.map(u64::from),
                DAY_SEC,
            ),
            ("RestartLimit", self.restart_limit.map(u64::from), 10_000),
            (
                "RestartLimitIntervalSec",
                self.restart_limit_interval_sec.map(u64::from),
                DAY_SEC,
            ),
        ];
        for (key, value, max) in bounds {
            if let Some(v) = value.filter(|&v| v > max) {
                return Err(format!("{key}: {v} is above the maximum {max}"));
            }
        }
        Ok(())
    }
}

/// Which processes a `List`, `StopMatching` or `RemoveMatching` call means.
/// Every set field must match; an empty filter matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub workspace: Option<String>,
    pub session: Option<String>,
    pub state: Option<State>,
}

impl Filter {
    pub fn from_dict(dict: HashMap<String, OwnedValue>) -> Result<Filter, String> {
        let mut f = Filter::default();
        for (key, value) in dict {
            let k = key.as_str();
            match k {
                "Workspace" => f.workspace = Some(typed(k, value)?),
                "Session" => f.session = Some(typed(k, value)?),
                "State" => {
                    let s: String = typed(k, value)?;
                    let state = State::parse(&s).ok_or_else(|| {
                        format!("State: '{s}' is not one of {}", State::NAMES.join(", "))
                    })?;
                    f.state = Some(state);
                }
                other => return Err(format!("unknown filter key '{other}'")),
            }
        }
        Ok(f)
    }

    pub fn to_dict(&self) -> HashMap<String, Value<'static>> {
        let mut d = HashMap::new();
        let state = self.state.map(|s| s.as_str().to_string());
        for (k, v) in [
            ("Workspace", &self.workspace),
            ("Session", &self.session),
            ("State", &state),
        ] {
            if let Some(v) = v {
                d.insert(k.to_string(), Value::from(v.clone()));
            }
        }
        d
    }

    pub fn matches(&self, workspace: &str, session: &str, state: State) -> bool {
        self.workspace.as_deref().is_none_or(|w| w == workspace)
            && self.session.as_deref().is_none_or(|s| s == session)
            && self.state.is_none_or(|s| s == state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(d: HashMap<String, Value<'static>>) -> HashMap<String, OwnedValue> {
        d.into_iter()
            .map(|(k, v)| (k, v.try_into_owned().unwrap()))
            .collect()
    }

    fn dict(pairs: Vec<(&str, Value<'static>)>) -> HashMap<String, OwnedValue> {
        owned(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    #[test]
    fn round_trips_every_key() {
        let spec = StartSpec {
            command: vec!["sleep".into(), "1".into()],
            name: Some("web".into()),
            working_directory: Some("/tmp".into()),
            environment: vec!["A=1".into()],
            clean_environment: Some(true),
            workspace: Some("proj".into()),
            session: Some("s1".into()),
            labels: [("k".to_string(), "v".to_string())].into(),
            memory_max: Some(1 << 20),
            cpu_quota: Some(50.0),
            tasks_max: Some(10),
            restart: Some("on-failure".into()),
            restart_delay_ms: Some(100),
            restart_delay_max_ms: Some(1000),
            restart_reset_sec: Some(60),
            restart_limit: Some(5),
            restart_limit_interval_sec: Some(60),
            persistent: Some(true),
            user: Some("alice".into()),
            tty: Some(true),
            notify: Some(true),
            health_check: Some(crate::api::HealthCheck {
                kind: crate::api::ProbeKind::Tcp,
                command: vec![],
                address: "127.0.0.1:80".into(),
                interval_ms: 1000,
                timeout_ms: 1000,
                start_period_ms: 0,
                retries: 3,
                on_unhealthy: crate::api::OnUnhealthy::None,
                expect_status: None,
                expect_body: None,
            }),
        };
        let dict = spec.to_dict();
        // The keys and their D-Bus types are public: a change must be deliberate.
        let mut sent: Vec<String> = dict
            .iter()
            .map(|(k, v)| format!("{k} {}", v.value_signature()))
            .collect();
        sent.sort();
        assert_eq!(
            sent.join("|"),
            "CPUQuota d|CleanEnvironment b|Command as|Environment as|\
             HealthCheck a{sv}|Labels a{ss}|MemoryMax t|Name s|Notify b|Persistent b|Restart s|RestartDelayMaxMs t|\
             RestartDelayMs t|RestartLimit u|RestartLimitIntervalSec u|\
             RestartResetSec u|Session s|TasksMax t|Tty b|User s|WorkingDirectory s|Workspace s"
        );
        assert_eq!(dict.len(), StartSpec::KEYS.len());
        assert_eq!(StartSpec::from_dict(owned(dict)).unwrap(), spec);
    }

    #[test]
    fn rejects_bad_input_naming_the_key() {
        let cmd = || ("Command", Value::from(vec!["true".to_string()]));
        let cases: Vec<(Vec<(&str, Value<'static>)>, &str)> = vec![
            (vec![], "Command: required"),
            (
                vec![("Command", Value::from(Vec::<String>::new()))],
                "Command: must not be empty",
            ),
            (
                vec![("Command", Value::from(vec![String::new()]))],
                "Command[0]: must not be empty",
            ),
            (
                vec![cmd(), ("Bogus", Value::from(1u32))],
                "unknown spec key 'Bogus'",
            ),
            (
                vec![cmd(), ("MemoryMax", Value::from(5u32))],
                "MemoryMax: expected D-Bus type 't', got 'u'",
            ),
            (
                vec![cmd(), ("WorkingDirectory", Value::from("rel"))],
                "WorkingDirectory: 'rel' is not an absolute path",
            ),
            (
                vec![
                    cmd(),
                    ("Environment", Value::from(vec!["NOEQ".to_string()])),
                ],
                "Environment: 'NOEQ' is not KEY=VALUE",
            ),
            (
                vec![cmd(), ("Environment", Value::from(vec!["=v".to_string()]))],
                "Environment: '=v' is not KEY=VALUE",
            ),
            (
                vec![cmd(), ("CPUQuota", Value::from(-1.0f64))],
                "CPUQuota: -1 is not",
            ),
            (
                vec![cmd(), ("Restart", Value::from("sometimes"))],
                "Restart: 'sometimes' is not one of no, on-failure, always",
            ),
            (
                vec![cmd(), ("Name", Value::from("a\u{7}b"))],
                "Name: contains a control character",
            ),
            (
                vec![cmd(), ("Workspace", Value::from("x".repeat(200)))],
                "Workspace: longer than",
            ),
        ];
        for (pairs, want) in cases {
            let err = StartSpec::from_dict(dict(pairs)).unwrap_err();
            assert!(err.starts_with(want), "got {err:?}, want prefix {want:?}");
        }
    }

    /// Regression: a huge `RestartDelayMs` overflowed the backoff math
    /// (a panic in a debug build); restart values are bounded up front.
    #[test]
    fn restart_values_above_their_bounds_are_refused_naming_key_and_bound() {
        let cmd = || ("Command", Value::from(vec!["true".to_string()]));
        let cases: Vec<((&str, Value<'static>), &str)> = vec![
            (
                ("RestartDelayMs", Value::from(u64::MAX)),
                "RestartDelayMs: 18446744073709551615 is above the maximum 86400000",
            ),
            (
                ("RestartDelayMaxMs", Value::from(86_400_001u64)),
                "RestartDelayMaxMs: 86400001 is above the maximum 86400000",
            ),
            (
                ("RestartResetSec", Value::from(86_401u32)),
                "RestartResetSec: 86401 is above the maximum 86400",
            ),
            (
                ("RestartLimit", Value::from(10_001u32)),
                "RestartLimit: 10001 is above the maximum 10000",
            ),
            (
                ("RestartLimitIntervalSec", Value::from(u32::MAX)),
                "RestartLimitIntervalSec: 4294967295 is above the maximum 86400",
            ),
        ];
        for (pair, want) in cases {
            let err = StartSpec::from_dict(dict(vec![cmd(), pair])).unwrap_err();
            assert_eq!(err, want);
        }
        let at_the_bounds = dict(vec![
            cmd(),
            ("RestartDelayMs", Value::from(86_400_000u64)),
            ("RestartDelayMaxMs", Value::from(86_400_000u64)),
            ("RestartResetSec", Value::from(86_400u32)),
            ("RestartLimit", Value::from(10_000u32)),
            ("RestartLimitIntervalSec", Value::from(86_400u32)),
        ]);
        assert!(StartSpec::from_dict(at_the_bounds).is_ok());
    }

    /// Hardening: every list and string of a spec is bounded, at the
    /// bound accepted and one past it refused naming the key — the
    /// derived default name included.
    #[test]
    fn spec_sizes_are_bounded() {
        let ok = || StartSpec::new(vec!["true".into()]);
        let at_bounds = StartSpec {
            command: vec!["a".into(); MAX_ARGS],
            environment: vec!["K=v".into(); MAX_ARGS],
            name: Some("n".repeat(MAX_LABEL_LEN)),
            workspace: Some("w".repeat(MAX_LABEL_LEN)),
            session: Some("s".repeat(MAX_LABEL_LEN)),
            working_directory: Some(format!("/{}", "d".repeat(MAX_PATH_LEN - 1))),
            labels: (0..MAX_LABELS)
                .map(|i| (format!("{i:0>128}"), "v".repeat(MAX_LABEL_VALUE_LEN)))
                .collect(),
            ..ok()
        };
        at_bounds.validate().unwrap();
        let big = "x".repeat(MAX_PAYLOAD / 2);
        let cases: Vec<(StartSpec, &str)> = vec![
            (
                StartSpec::new(vec!["a".into(); MAX_ARGS + 1]),
                "Command: 4097 arguments, more than 4096",
            ),
            (
                StartSpec {
                    environment: vec!["K=v".into(); MAX_ARGS + 1],
                    ..ok()
                },
                "Environment: 4097 entries, more than 4096",
            ),
            (
                StartSpec {
                    environment: vec![format!("K={big}")],
                    command: vec!["true".into(), big.clone()],
                    ..ok()
                },
                "Command, Environment and WorkingDirectory: 524294 bytes together, more than 524288",
            ),
            // Control characters count as their JSON escapes.
            (
                StartSpec::new(vec!["true".into(), "\u{1}".repeat(MAX_PAYLOAD / 6 + 1)]),
                "Command, Environment and WorkingDirectory: 524296 bytes",
            ),
            (
                StartSpec {
                    working_directory: Some(format!("/{}", "d".repeat(MAX_PATH_LEN))),
                    ..ok()
                },
                "WorkingDirectory: longer than 4096 bytes",
            ),
            (
                StartSpec {
                    labels: (0..=MAX_LABELS).map(|i| (i.to_string(), String::new())).collect(),
                    ..ok()
                },
                "Labels: 65 labels, more than 64",
            ),
            (
                StartSpec {
                    labels: [("k".repeat(MAX_LABEL_LEN + 1), String::new())].into(),
                    ..ok()
                },
                "Labels key: longer than 128 bytes",
            ),
            (
                StartSpec {
                    labels: [("k".into(), "v".repeat(MAX_LABEL_VALUE_LEN + 1))].into(),
                    ..ok()
                },
                "Labels value of 'k': longer than 4096 bytes",
            ),
            (
                StartSpec {
                    session: Some("s".repeat(MAX_LABEL_LEN + 1)),
                    ..ok()
                },
                "Session: longer than 128 bytes",
            ),
            (
                StartSpec::new(vec![format!("/bin/{}", "n".repeat(MAX_LABEL_LEN + 1))]),
                "Name: longer than 128 bytes (derived from Command[0]; set Name)",
            ),
            (
                StartSpec::new(vec!["./a\u{1b}[2J".into()]),
                "Name: contains a control character (derived from Command[0]; set Name)",
            ),
        ];
        for (spec, want) in cases {
            let err = spec.validate().unwrap_err();
            assert!(err.starts_with(want), "got {err:?}, want prefix {want:?}");
        }
        // A long argv[0] is fine with a Name.
        let mut named = StartSpec::new(vec![format!("/bin/{}", "n".repeat(200))]);
        named.name = Some("short".into());
        named.validate().unwrap();
        assert_eq!(
            StartSpec::new(vec!["/usr/bin/env".into()]).name_or_default(),
            "env"
        );
        assert_eq!(
            StartSpec::new(vec!["dir/".into()]).name_or_default(),
            "dir/"
        );
    }

    #[test]
    fn filter_is_strict_and_matches() {
        let f = Filter::from_dict(dict(vec![("Workspace", Value::from("w"))])).unwrap();
        assert!(f.matches("w", "", State::Running));
        assert!(!f.matches("x", "", State::Running));
        let f = Filter::from_dict(dict(vec![("State", Value::from("failed"))])).unwrap();
        assert_eq!(f.state, Some(State::Failed));
        assert!(f.matches("w", "", State::Failed) && !f.matches("w", "", State::Exited));
        assert_eq!(
            Filter::from_dict(dict(vec![("State", Value::from("zombie"))])).unwrap_err(),
            "State: 'zombie' is not one of starting, running, stopping, stopped, exited, failed"
        );
        assert!(Filter::from_dict(dict(vec![("Foo", Value::from("x"))])).is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A value of any type a client could put in an `a{sv}`,
        /// strings with NUL and control bytes included.
        fn any_value() -> impl Strategy<Value = Value<'static>> {
            let text = || prop_oneof![any::<String>(), "[a-z/=.\\x00-\\x1f-]{0,12}"];
            prop_oneof![
                any::<bool>().prop_map(Value::from),
                any::<u32>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                any::<i32>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(Value::from),
                text().prop_map(Value::from),
                prop::collection::vec(text(), 0..5).prop_map(Value::from),
                prop::collection::hash_map(text(), text(), 0..4).prop_map(Value::from),
                prop::collection::vec(any::<u32>(), 0..4).prop_map(Value::from),
                text().prop_map(|s| Value::Value(Box::new(Value::from(s)))),
            ]
        }

        /// Known keys most of the time, so values get past the key check.
        fn any_key() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => prop::sample::select(StartSpec::KEYS).prop_map(String::from),
                1 => prop::sample::select(&["Workspace", "Session", "State"][..])
                    .prop_map(String::from),
                1 => any::<String>(),
            ]
        }

        fn any_dict() -> impl Strategy<Value = HashMap<String, OwnedValue>> {
            prop::collection::vec((any_key(), any_value()), 0..8)
                .prop_map(|pairs| owned(pairs.into_iter().collect()))
        }

        fn text() -> impl Strategy<Value = String> {
            "[a-zA-Z0-9 ./=_\\t\\n\"\\\\-]{1,16}"
        }

        /// A spec `validate` accepts, of random content.
        fn valid_spec() -> impl Strategy<Value = StartSpec> {
            let name = || prop::option::of("[a-z][a-z0-9 ._-]{0,20}");
            (
                ("[a-z/.]{0,10}[a-z]", prop::collection::vec(text(), 0..4)),
                (name(), name(), name(), name()),
                prop::option::of("/[a-z/]{0,20}"),
                prop::collection::vec(("[A-Z_]{1,8}", "[ -~]{0,10}"), 0..4),
                prop::collection::btree_map("[a-z]{1,8}", "[ -~]{0,10}", 0..4),
                (
                    prop::option::of(any::<bool>()),
                    prop::option::of(1..u64::MAX),
                    prop::option::of(0.01f64..1000.0),
                    prop::option::of(prop::sample::select(RestartMode::NAMES)),
                    prop::option::of(0..86_400_000u64),
                    prop::option::of(1..86_400u32),
                    prop::option::of(0..10_000u32),
                ),
            )
                .prop_map(|((argv0, args), (n, w, s, u), cwd, env, labels, rest)| {
                    let (flag, bytes, quota, restart, delay, secs, limit) = rest;
                    StartSpec {
                        command: std::iter::once(argv0).chain(args).collect(),
                        name: n,
                        workspace: w,
                        session: s,
                        user: u,
                        working_directory: cwd,
                        environment: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
                        labels,
                        clean_environment: flag,
                        persistent: flag.map(|f| !f),
                        memory_max: bytes,
                        tasks_max: bytes.map(|b| b % 100_000 + 1),
                        cpu_quota: quota,
                        restart: restart.map(String::from),
                        health_check: None,
                        restart_delay_ms: delay,
                        restart_delay_max_ms: delay,
                        restart_reset_sec: secs,
                        restart_limit: limit,
                        restart_limit_interval_sec: secs,
                        tty: flag,
                        notify: flag,
                    }
                })
        }

        proptest! {
            /// Whatever a client sends, decoding answers Ok or an error
            /// message — never a panic — and what it accepts is valid.
            #[test]
            fn any_dict_decodes_or_is_refused_without_panicking(dict in any_dict()) {
                if let Ok(spec) = StartSpec::from_dict(dict.clone()) {
                    prop_assert!(spec.validate().is_ok());
                    prop_assert!(!spec.name_or_default().is_empty());
                }
                let _ = Filter::from_dict(dict);
            }

            #[test]
            fn valid_specs_round_trip(spec in valid_spec()) {
                prop_assert_eq!(spec.validate(), Ok(()));
                let back = StartSpec::from_dict(owned(spec.to_dict()));
                prop_assert_eq!(back, Ok(spec));
            }

            #[test]
            fn filters_round_trip(
                workspace in prop::option::of(any::<String>()),
                session in prop::option::of(any::<String>()),
                state in prop::option::of(prop::sample::select(State::NAMES)),
            ) {
                let f = Filter {
                    workspace,
                    session,
                    state: state.and_then(State::parse),
                };
                prop_assert_eq!(Filter::from_dict(owned(f.to_dict())), Ok(f));
            }

            /// `wire_len` never counts less than the JSON the shim reads.
            #[test]
            fn wire_len_bounds_the_json_size(s in any::<String>()) {
                let json = serde_json::to_string(&s).unwrap();
                prop_assert!(wire_len(&s) >= json.len() - 2);
            }
        }
    }
}
