//! Live limits and workspaces on the wire: the `SetLimits(a{sv})` keys of
//! processes and workspaces ([`Limits`]), what a workspace object shows
//! ([`WorkspaceView`]) and its object path. Units follow the `Start` spec:
//! bytes for memory, percent of one CPU for `CPUQuota`.

use std::collections::HashMap;

use zbus::zvariant::{OwnedValue, Value};

use super::MANAGER_PATH;

/// Interface of the workspace objects.
pub const WORKSPACE_INTERFACE: &str = "org.corral.Supervisor1.Workspace";

/// systemd's "no limit" for byte and task counts (`infinity`).
pub const NO_LIMIT: u64 = u64::MAX;

/// Resource limits of a scope or slice, every one optional (unset: the
/// unit's own default). Kept in the process's config and the workspace's
/// row as JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// `MemoryMax` t: bytes; [`NO_LIMIT`] lifts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_max: Option<u64>,
    /// `MemoryHigh` t: bytes (throttling, not killing); [`NO_LIMIT`] lifts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_high: Option<u64>,
    /// `CPUQuota` d: percent of one CPU (200 = two cores); 0 lifts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_quota: Option<f64>,
    /// `CPUWeight` t: 1..=10000 (systemd's default is 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_weight: Option<u64>,
    /// `TasksMax` t: processes and threads; [`NO_LIMIT`] lifts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks_max: Option<u64>,
    /// `IOWeight` t: 1..=10000 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_weight: Option<u64>,
}

/// A limit key and the cgroup v2 controller that enforces it.
pub struct LimitKey {
    pub name: &'static str,
    pub controller: &'static str,
    /// systemd also applies it through a v1 controller (hybrid and v1
    /// hosts); `MemoryHigh` exists on cgroup v2 only.
    pub v1: bool,
}

impl Limits {
    /// Every key `SetLimits` takes, with its controller.
    pub const KEYS: &[LimitKey] = &[
        LimitKey {
            name: "MemoryMax",
            controller: "memory",
            v1: true,
        },
        LimitKey {
            name: "MemoryHigh",
            controller: "memory",
            v1: false,
        },
        LimitKey {
            name: "CPUQuota",
            controller: "cpu",
            v1: true,
        },
        LimitKey {
            name: "CPUWeight",
            controller: "cpu",
            v1: true,
        },
        LimitKey {
            name: "TasksMax",
            controller: "pids",
            v1: true,
        },
        LimitKey {
            name: "IOWeight",
            controller: "io",
            v1: true,
        },
    ];

    /// Decodes and checks a `SetLimits` argument. The error is the message
    /// of an `InvalidArgument` reply and names the key.
    pub fn from_dict(dict: HashMap<String, OwnedValue>) -> Result<Limits, String> {
        if dict.is_empty() {
            return Err("no limit given".into());
        }
        let mut l = Limits::default();
        for (key, value) in dict {
            match key.as_str() {
                "MemoryMax" => l.memory_max = Some(positive(&key, &value)?),
                "MemoryHigh" => l.memory_high = Some(positive(&key, &value)?),
                "TasksMax" => l.tasks_max = Some(positive(&key, &value)?),
                "CPUWeight" => l.cpu_weight = Some(weight(&key, &value)?),
                "IOWeight" => l.io_weight = Some(weight(&key, &value)?),
                "CPUQuota" => {
                    let q = f64::try_from(&value).map_err(|_| wrong_type(&key, "d", &value))?;
                    if !q.is_finite() || !(0.0..=100_000.0).contains(&q) {
                        return Err(format!("CPUQuota: {q} is not a percentage in [0, 100000]"));
                    }
                    l.cpu_quota = Some(q);
                }
                other => {
                    let known: Vec<&str> = Limits::KEYS.iter().map(|k| k.name).collect();
                    return Err(format!(
                        "unknown limit '{other}' (known: {})",
                        known.join(", ")
                    ));
                }
            }
        }
        Ok(l)
    }

    /// Encodes the set limits (the `Limits` property, a `SetLimits` call).
    pub fn to_dict(&self) -> HashMap<String, Value<'static>> {
        let mut d = HashMap::new();
        let mut put = |k: &str, v: Option<Value<'static>>| {
            if let Some(v) = v {
                d.insert(k.to_string(), v);
            }
        };
        put("MemoryMax", self.memory_max.map(Value::from));
        put("MemoryHigh", self.memory_high.map(Value::from));
        put("CPUQuota", self.cpu_quota.map(Value::from));
        put("CPUWeight", self.cpu_weight.map(Value::from));
        put("TasksMax", self.tasks_max.map(Value::from));
        put("IOWeight", self.io_weight.map(Value::from));
        d
    }

    /// The keys set in `self`, in [`Limits::KEYS`] order.
    pub fn set_keys(&self) -> Vec<&'static LimitKey> {
        let set = [
            self.memory_max.is_some(),
            self.memory_high.is_some(),
            self.cpu_quota.is_some(),
            self.cpu_weight.is_some(),
            self.tasks_max.is_some(),
            self.io_weight.is_some(),
        ];
        Limits::KEYS
            .iter()
            .zip(set)
            .filter_map(|(k, s)| s.then_some(k))
            .collect()
    }

    /// `self` with every limit `newer` sets replaced by newer's.
    pub fn merged(self, newer: Limits) -> Limits {
        Limits {
            memory_max: newer.memory_max.or(self.memory_max),
            memory_high: newer.memory_high.or(self.memory_high),
            cpu_quota: newer.cpu_quota.or(self.cpu_quota),
            cpu_weight: newer.cpu_weight.or(self.cpu_weight),
            tasks_max: newer.tasks_max.or(self.tasks_max),
            io_weight: newer.io_weight.or(self.io_weight),
        }
    }
}

fn wrong_type(key: &str, want: &str, value: &OwnedValue) -> String {
    format!(
        "{key}: expected D-Bus type '{want}', got '{}'",
        value.value_signature()
    )
}

fn positive(key: &str, value: &OwnedValue) -> Result<u64, String> {
    let v = u64::try_from(value).map_err(|_| wrong_type(key, "t", value))?;
    if v == 0 {
        return Err(format!("{key}: must be greater than 0"));
    }
    Ok(v)
}

fn weight(key: &str, value: &OwnedValue) -> Result<u64, String> {
    let v = u64::try_from(value).map_err(|_| wrong_type(key, "t", value))?;
    if !(1..=10_000).contains(&v) {
        return Err(format!("{key}: {v} is not in 1..=10000"));
    }
    Ok(v)
}

/// Pressure stall figures (PSI `avg10`, percent of the last 10 s) by
/// `<resource>.<some|full>`, e.g. `memory.full`; a resource the kernel
/// does not report has no keys.
pub type Pressure = std::collections::BTreeMap<String, f64>;

/// What a workspace object shows. Totals are `UNSET` when the slice has
/// no cgroup (nothing runs in it) or the controller is not there.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkspaceView {
    pub name: String,
    pub owner: u32,
    /// Processes corral knows in it, in any state.
    pub processes: u32,
    /// Of those, the ones with a live scope.
    pub running: u32,
    pub unit: String,
    pub memory_current: u64,
    pub cpu_usage_nsec: u64,
    pub tasks_current: u64,
    pub limits: Limits,
    /// Whether the slice is frozen (false where the freezer is missing).
    pub frozen: bool,
    pub pressure: Pressure,
}

/// An object-path element the way sd-bus (`sd_bus_path_encode`) and
/// zbus's systemd users write it: every byte outside `[A-Za-z0-9]` as
/// `_xx` (lower-case hex), the empty string as `_`.
pub fn path_element(s: &str) -> String {
    if s.is_empty() {
        return "_".into();
    }
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

/// Object path of a workspace: `/org/corral/Supervisor1/workspace/<name>`
/// with the name escaped by [`path_element`]. In system mode the owner's
/// uid follows (`<name>_<uid>`, itself escaped), because users' workspaces
/// of one name are distinct slices.
pub fn workspace_path(name: &str, owner: Option<u32>) -> String {
    let elem = match owner {
        None => path_element(name),
        Some(uid) => format!("{}_{uid}", path_element(name)),
    };
    format!("{MANAGER_PATH}/workspace/{elem}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(pairs: Vec<(&str, Value<'_>)>) -> HashMap<String, OwnedValue> {
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.try_to_owned().unwrap()))
            .collect()
    }

    #[test]
    fn limits_decode_strictly_and_name_the_key() {
        let l = Limits::from_dict(dict(vec![
            ("MemoryMax", Value::from(1u64 << 20)),
            ("CPUQuota", Value::from(50.0)),
            ("IOWeight", Value::from(200u64)),
        ]))
        .unwrap();
        assert_eq!(l.memory_max, Some(1 << 20));
        assert_eq!(l.cpu_quota, Some(50.0));
        assert_eq!(l.io_weight, Some(200));
        let names: Vec<&str> = l.set_keys().iter().map(|k| k.name).collect();
        assert_eq!(names, ["MemoryMax", "CPUQuota", "IOWeight"]);
        for (pairs, want) in [
            (
                vec![("Memory", Value::from(1u64))],
                "unknown limit 'Memory'",
            ),
            (
                vec![("MemoryMax", Value::from("1G"))],
                "MemoryMax: expected D-Bus type 't', got 's'",
            ),
            (vec![("TasksMax", Value::from(0u64))], "TasksMax: must be"),
            (
                vec![("CPUWeight", Value::from(0u64))],
                "CPUWeight: 0 is not",
            ),
            (vec![("CPUQuota", Value::from(-1.0))], "CPUQuota: -1 is not"),
            (vec![], "no limit given"),
        ] {
            let err = Limits::from_dict(dict(pairs)).unwrap_err();
            assert!(err.starts_with(want), "{err}");
        }
    }

    #[test]
    fn merging_keeps_older_limits_not_given_again() {
        let old = Limits {
            memory_max: Some(1),
            tasks_max: Some(5),
            ..Default::default()
        };
        let new = Limits {
            memory_max: Some(2),
            ..Default::default()
        };
        let m = old.merged(new);
        assert_eq!((m.memory_max, m.tasks_max), (Some(2), Some(5)));
    }

    #[test]
    fn workspace_paths_escape_like_sd_bus() {
        assert_eq!(
            workspace_path("my-proj", None),
            "/org/corral/Supervisor1/workspace/my_2dproj"
        );
        assert_eq!(
            workspace_path("default", Some(1000)),
            "/org/corral/Supervisor1/workspace/default_1000"
        );
        assert_eq!(path_element(""), "_");
        assert_eq!(path_element("a_b"), "a_5fb");
        // Every escaped name is a valid path.
        zbus::zvariant::ObjectPath::try_from(workspace_path("é ./x", None)).unwrap();
    }
}
