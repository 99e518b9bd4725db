//! What clients see of one process, and the one table of its properties:
//! each row gives the D-Bus property of `org.corral.Supervisor1.Process`
//! (also the key of a `List` record, so a record and `busctl introspect`
//! read the same), the `corralctl --json` key and how an unknown value
//! shows. The record, its decoding and the JSON object here, and the
//! agent's property getters, are all generated from that table.

use std::collections::{BTreeMap, HashMap};

use serde::ser::{Serialize, SerializeMap, Serializer};
use zbus::zvariant::{OwnedValue, Value};

use super::{Health, HealthResult, ListenPort, NotifyState, PortHolder, State, WireValue};

// The table names its types from the crate root: it is expanded in the
// proxy and the agent's bus module too.

/// systemd's "not set" for usage counters; clients show it as unknown.
pub const UNSET: u64 = u64::MAX;

/// One process as clients see it. Usage fields are `UNSET` when the cgroup
/// does not provide them (or the process has no live scope).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProcessView {
    pub id: String,
    pub name: String,
    pub command: Vec<String>,
    pub working_directory: String,
    pub workspace: String,
    pub session: String,
    /// The uid the process runs as and that may manage it (`Owner`).
    pub owner: u32,
    pub labels: BTreeMap<String, String>,
    pub state: State,
    pub main_pid: u32,
    pub unit: String,
    pub control_group: String,
    pub exit_code: i32,
    pub exit_signal: i32,
    /// Why the last run ended (an `ExitReason` name), empty while it runs.
    pub exit_reason: String,
    pub started_at: u64,
    pub exited_at: u64,
    pub restarts: u32,
    pub restart_policy: String,
    /// µs since epoch of the next automatic restart, 0 when none is due.
    pub next_restart_at: u64,
    pub persistent: bool,
    /// Runs on a pseudo-terminal (`Tty`): `OpenTerminal` and `SendInput` work.
    pub tty: bool,
    pub memory_current: u64,
    pub memory_peak: u64,
    pub cpu_usage_nsec: u64,
    pub cpu_percent: f64,
    pub tasks_current: u64,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
    /// Runs of this process ended by the OOM killer.
    pub oom_kills: u32,
    /// PSI avg10 by `memory.some` … `io.full`; empty where the kernel has
    /// none (or nothing runs).
    pub pressure: BTreeMap<String, f64>,
    /// The current run was taken over by `Track`, not launched by corral:
    /// no exit code, no captured output.
    pub tracked: bool,
    /// `none` without a health check or while not running.
    pub health: Health,
    /// The last probe results, oldest first: (time µs, passed, message).
    pub health_results: Vec<HealthResult>,
    /// The sockets it listens on (TCP) or is bound to (UDP), sorted;
    /// empty while not running.
    pub listen_ports: Vec<ListenPort>,
    /// While not running: who holds the ports it expects to use.
    pub port_holders: Vec<PortHolder>,
    /// A `Notify` process's readiness in its current run; `None` (empty
    /// on the wire) for other processes and while not running.
    pub notify_state: NotifyState,
    /// The last `STATUS=` a `Notify` process sent in its current run
    /// (at most 1 KiB, no control characters).
    pub status_text: String,
}

/// The properties of `org.corral.Supervisor1.Process`, one row each.
///
/// *if absent*: what a `List` record that lacks the key (from an older
/// agent) decodes to. *shown in JSON*: `always`; `set`, i.e. null while
/// the value equals its *if absent* value (unknown, or not happened yet);
/// or a predicate on the view. *announced*: carried in the
/// PropertiesChanged sent when the process changes state.
///
/// Rows are in the order `corralctl list --json` prints its keys: the
/// first eighteen are its documented contract, extras follow. Adding a
/// property is a field in `ProcessView`, a row here, and its value where
/// the supervisor builds the view.
///
/// The rows are handed to the macro `$then`, which generates from them:
/// `record_and_json` below, `process_interface` in the agent's bus module.
macro_rules! process_properties {
    ($then:ident) => {
        $then! {
            // field:           type                     = D-Bus name,         --json key,          if absent,       shown in JSON,     announced
            id:                 String                   = "Id",               "id",                String::new(),   always,            false;
            name:               String                   = "Name",             "name",              String::new(),   always,            false;
            workspace:          String                   = "Workspace",        "workspace",         String::new(),   always,            false;
            session:            String                   = "Session",          "session",           String::new(),   always,            false;
            state:              State                    = "State",            "state",             State::Failed,   always,            true;
            main_pid:           u32                      = "MainPID",          "pid",               0,               set,               true;
            unit:               String                   = "Unit",             "unit",              String::new(),   always,            true;
            control_group:      String                   = "ControlGroup",     "control_group",     String::new(),   always,            true;
            exit_code:          i32                      = "ExitCode",         "exit_code",         -1,              set,               true;
            exit_signal:        i32                      = "ExitSignal",       "exit_signal",       0,               set,               true;
            restarts:           u32                      = "Restarts",         "restarts",          0,               always,            true;
            memory_current:     u64                      = "MemoryCurrent",    "memory_bytes",      UNSET,           set,               true;
            memory_peak:        u64                      = "MemoryPeak",       "memory_peak_bytes", UNSET,           set,               false;
            cpu_usage_nsec:     u64                      = "CPUUsageNSec",     "cpu_usage_nsec",    UNSET,           set,               false;
            cpu_percent:        f64                      = "CPUPercent",       "cpu_percent",       0.0,             cpu_percent_known, true;
            tasks_current:      u64                      = "TasksCurrent",     "tasks",             UNSET,           set,               false;
            started_at:         u64                      = "StartedAt",        "started_at",        0,               set,               true;
            exited_at:          u64                      = "ExitedAt",         "exited_at",         0,               set,               true;
            command:            Vec<String>              = "Command",          "command",           Vec::new(),      always,            false;
            working_directory:  String                   = "WorkingDirectory", "working_directory", String::new(),   always,            false;
            labels:             BTreeMap<String, String> = "Labels",           "labels",            BTreeMap::new(), always,            false;
            exit_reason:        String                   = "ExitReason",       "exit_reason",       String::new(),   set,               true;
            restart_policy:     String                   = "Restart",          "restart",           String::new(),   always,            false;
            next_restart_at:    u64                      = "NextRestartAt",    "next_restart_at",   0,               set,               true;
            persistent:         bool                     = "Persistent",       "persistent",        false,           always,            false;
            io_read_bytes:      u64                      = "IOReadBytes",      "io_read_bytes",     UNSET,           set,               false;
            io_write_bytes:     u64                      = "IOWriteBytes",     "io_write_bytes",    UNSET,           set,               false;
            owner:              u32                      = "Owner",            "owner",             u32::MAX,        always,            false;
            oom_kills:          u32                      = "OOMKills",         "oom_kills",         0,               always,            true;
            pressure:           BTreeMap<String, f64>    = "Pressure",         "pressure",          BTreeMap::new(), always,            false;
            tty:                bool                     = "Tty",              "tty",               false,           always,            false;
            tracked:            bool                     = "Tracked",          "tracked",           false,           always,            true;
            health:             crate::api::Health       = "Health",           "health",            crate::api::Health::None, always,   true;
            health_results:     Vec<crate::api::HealthResult> = "HealthResults", "health_results",  Vec::new(),      always,            false;
            listen_ports:       Vec<crate::api::ListenPort> = "ListenPorts",  "ports",             Vec::new(),      always,            true;
            port_holders:       Vec<crate::api::PortHolder> = "PortHolders",  "port_holders",      Vec::new(),      always,            true;
            notify_state:       crate::api::NotifyState  = "NotifyState",      "notify_state",      crate::api::NotifyState::None, set, true;
            status_text:        String                   = "StatusText",       "status_text",       String::new(),   set,               true;
        }
    };
}
pub(crate) use process_properties;

/// The CPU percentage has no "unset" of its own: it means something only
/// while CPU time is known, and only while the scope lives.
pub fn cpu_percent_known(v: &ProcessView) -> bool {
    v.state.is_active()
        && v.cpu_usage_nsec != UNSET
        && v.cpu_percent.is_finite()
        && v.cpu_percent >= 0.0
}

/// One property: its D-Bus name and value.
pub struct Property {
    pub name: &'static str,
    /// In the PropertiesChanged sent when the process changes state.
    pub announced: bool,
    pub get: fn(&ProcessView) -> Value<'static>,
}

/// Whether the JSON shows a field's value (else null); see the table.
macro_rules! shown {
    (always, $v:ident, $field:ident, $absent:expr) => {
        true
    };
    (set, $v:ident, $field:ident, $absent:expr) => {
        $v.$field != $absent
    };
    ($known:ident, $v:ident, $field:ident, $absent:expr) => {
        $known($v)
    };
}

macro_rules! record_and_json {
    ($($field:ident: $ty:ty = $name:literal, $json:literal, $absent:expr, $shown:ident, $announced:literal;)*) => {
        /// Every property of the Process interface, in table order.
        pub const PROPERTIES: &[Property] = &[$(Property {
            name: $name,
            announced: $announced,
            get: |v| v.$field.to_wire().into(),
        }),*];

        impl ProcessView {
            /// Decodes a `List` record; a missing or mistyped key takes its
            /// absent value, so an older agent's records still decode.
            pub fn from_dict(mut d: HashMap<String, OwnedValue>) -> ProcessView {
                ProcessView {
                    $($field: take::<$ty>(&mut d, $name).unwrap_or($absent),)*
                }
            }
        }

        impl Serialize for ProcessJson<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let v = self.0;
                let mut map = s.serialize_map(Some(PROPERTIES.len()))?;
                $(map.serialize_entry($json, &shown!($shown, v, $field, $absent).then_some(&v.$field))?;)*
                map.end()
            }
        }
    };
}

process_properties!(record_and_json);

fn take<T: WireValue>(d: &mut HashMap<String, OwnedValue>, key: &str) -> Option<T> {
    let wire = T::Wire::try_from(d.remove(key)?).ok()?;
    T::from_wire(wire)
}

impl ProcessView {
    /// The `a{sv}` record of `List`: every property, plus `Path`.
    pub fn to_dict(&self) -> HashMap<String, Value<'static>> {
        self.to_dict_keys(&RecordKeys::default())
    }

    /// The `List` record with only the keys `keys` selects.
    pub fn to_dict_keys(&self, keys: &RecordKeys) -> HashMap<String, Value<'static>> {
        let mut d: HashMap<String, Value<'static>> = PROPERTIES
            .iter()
            .enumerate()
            .filter(|(i, _)| keys.has(*i))
            .map(|(_, p)| (p.name.to_string(), (p.get)(self)))
            .collect();
        if keys.has(PROPERTIES.len()) {
            d.insert(PATH_KEY.into(), super::process_path(&self.id).into());
        }
        d
    }
}

/// The record key beside the properties: the process's object path.
pub const PATH_KEY: &str = "Path";

/// Which keys a `List` record carries (its `Keys` option): all of them by
/// default. A client showing a few columns asks for those only, so
/// neither side builds, sends and decodes the other thirty-odd values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordKeys {
    /// By index into [`PROPERTIES`], then `Path`; `None` is every key.
    wanted: Option<Vec<bool>>,
}

impl RecordKeys {
    /// At most this many names in a `Keys` option (twice the keys there
    /// are: repeats are allowed, a flood is not).
    pub const MAX_NAMES: usize = 2 * (PROPERTIES.len() + 1);

    /// The keys named; an unknown name is an error that lists the known.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<RecordKeys, String> {
        if names.len() > Self::MAX_NAMES {
            return Err(format!(
                "Keys: {} names, more than {}",
                names.len(),
                Self::MAX_NAMES
            ));
        }
        let mut wanted = vec![false; PROPERTIES.len() + 1];
        for name in names {
            let name = name.as_ref();
            let i = PROPERTIES
                .iter()
                .position(|p| p.name == name)
                .or((name == PATH_KEY).then_some(PROPERTIES.len()))
                .ok_or_else(|| {
                    let known: Vec<&str> = PROPERTIES.iter().map(|p| p.name).collect();
                    format!(
                        "Keys: unknown key '{}' (known: {}, {PATH_KEY})",
                        name.escape_debug(),
                        known.join(", ")
                    )
                })?;
            wanted[i] = true;
        }
        Ok(RecordKeys {
            wanted: Some(wanted),
        })
    }

    fn has(&self, i: usize) -> bool {
        self.wanted
            .as_ref()
            .is_none_or(|w| w.get(i).copied().unwrap_or(false))
    }
}

/// A process as `corralctl list --json` prints it: an object with the
/// table's JSON keys in table order, null for values not known.
pub struct ProcessJson<'a>(pub &'a ProcessView);

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ProcessView {
        ProcessView {
            id: "7".into(),
            name: "web".into(),
            command: vec!["sleep".into(), "9".into()],
            working_directory: "/tmp".into(),
            workspace: "w".into(),
            session: "s".into(),
            owner: 1000,
            labels: [("a".to_string(), "b".to_string())].into(),
            state: State::Running,
            main_pid: 42,
            unit: "app-corral-web-7.scope".into(),
            control_group: "/app.slice/x".into(),
            exit_code: -1,
            exit_signal: 0,
            exit_reason: String::new(),
            started_at: 1,
            exited_at: 0,
            restarts: 2,
            restart_policy: "always".into(),
            next_restart_at: 0,
            persistent: true,
            tty: true,
            memory_current: 100,
            memory_peak: 200,
            cpu_usage_nsec: UNSET,
            cpu_percent: 1.5,
            tasks_current: 3,
            io_read_bytes: UNSET,
            io_write_bytes: 5,
            oom_kills: 1,
            pressure: [("memory.some".to_string(), 0.5)].into(),
            tracked: true,
            health: Health::Healthy,
            health_results: vec![(3, true, "HTTP 200".into())],
            listen_ports: vec![ListenPort {
                proto: "udp".into(),
                address: "::".into(),
                port: 5353,
            }],
            port_holders: vec![PortHolder {
                port: 3000,
                pid: 0,
                description: "another user's process".into(),
            }],
            notify_state: NotifyState::Ready,
            status_text: "serving".into(),
        }
    }

    #[test]
    fn list_record_round_trips() {
        let v = sample();
        let owned = v
            .to_dict()
            .into_iter()
            .map(|(k, val)| (k, val.try_into_owned().unwrap()))
            .collect();
        assert_eq!(ProcessView::from_dict(owned), v);
    }

    #[test]
    fn a_record_carries_only_the_keys_asked_for() {
        let v = sample();
        let keys = RecordKeys::from_names(&["Id", "State", "Path", "State"]).unwrap();
        let d = v.to_dict_keys(&keys);
        let mut got: Vec<&str> = d.keys().map(String::as_str).collect();
        got.sort();
        assert_eq!(got, ["Id", "Path", "State"]);
        assert_eq!(v.to_dict().len(), PROPERTIES.len() + 1);
        let err = RecordKeys::from_names(&["Id", "Nope\n"]).unwrap_err();
        assert!(
            err.starts_with("Keys: unknown key 'Nope\\n' (known: Id, Name,"),
            "{err}"
        );
        let flood = vec!["Id"; RecordKeys::MAX_NAMES + 1];
        assert!(RecordKeys::from_names(&flood).is_err());
        assert!(RecordKeys::from_names(&vec!["Id"; RecordKeys::MAX_NAMES]).is_ok());
    }

    /// The D-Bus names and types, the JSON keys (in their order) and what
    /// PropertiesChanged carries are public: a change must be deliberate.
    #[test]
    fn the_contract_is_unchanged() {
        let want = "\
            Id s id|Name s name|Workspace s workspace|Session s session|\
            State s state *|MainPID u pid *|Unit s unit *|\
            ControlGroup s control_group *|ExitCode i exit_code *|\
            ExitSignal i exit_signal *|Restarts u restarts *|\
            MemoryCurrent t memory_bytes *|MemoryPeak t memory_peak_bytes|\
            CPUUsageNSec t cpu_usage_nsec|CPUPercent d cpu_percent *|\
            TasksCurrent t tasks|StartedAt t started_at *|ExitedAt t exited_at *|\
            Command as command|WorkingDirectory s working_directory|\
            Labels a{ss} labels|ExitReason s exit_reason *|Restart s restart|\
            NextRestartAt t next_restart_at *|Persistent b persistent|\
            IOReadBytes t io_read_bytes|IOWriteBytes t io_write_bytes|Owner u owner|\
            OOMKills u oom_kills *|Pressure a{sd} pressure|Tty b tty|\
            Tracked b tracked *|Health s health *|\
            HealthResults a(tbs) health_results|ListenPorts a(ssq) ports *|\
            PortHolders a(qus) port_holders *|NotifyState s notify_state *|\
            StatusText s status_text *";
        let v = sample();
        // The top-level keys, in the order they are written.
        let json = serde_json::to_value(ProcessJson(&v)).unwrap();
        let text = serde_json::to_string(&ProcessJson(&v)).unwrap();
        let mut in_order: Vec<&String> = json.as_object().unwrap().keys().collect();
        in_order.sort_by_key(|k| text.find(&format!("\"{k}\":")));
        let got: Vec<String> = PROPERTIES
            .iter()
            .zip(in_order)
            .map(|(p, k)| {
                let sig = (p.get)(&v).value_signature().to_string();
                let star = if p.announced { " *" } else { "" };
                format!("{} {sig} {k}{star}", p.name)
            })
            .collect();
        assert_eq!(got.join("|"), want);
    }
}
