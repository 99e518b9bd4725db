//! What clients see of one process: its state and the record `List`
//! returns. Keys are the D-Bus property names of
//! `org.corral.Supervisor1.Process`, so a `List` entry and `busctl
//! introspect` of the object read the same.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use zbus::zvariant::{OwnedValue, Value};

use super::State;

/// systemd's "not set" for usage counters; clients show it as unknown.
pub const UNSET: u64 = u64::MAX;

/// One process as clients see it. Usage fields are `UNSET` when the cgroup
/// does not provide them (or the process has no live scope).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessView {
    pub id: String,
    pub name: String,
    pub command: Vec<String>,
    pub working_directory: String,
    pub workspace: String,
    pub session: String,
    pub labels: BTreeMap<String, String>,
    pub state: State,
    pub main_pid: u32,
    pub unit: String,
    pub control_group: String,
    pub exit_code: i32,
    pub exit_signal: i32,
    /// Why the last run ended: `exit`, `signal`, `stopped`, `oom-kill`,
    /// `spawn-failed`, `crash-loop`, `lost`, or empty while it runs.
    pub exit_reason: String,
    pub started_at: u64,
    pub exited_at: u64,
    pub restarts: u32,
    pub restart_policy: String,
    /// µs since epoch of the next automatic restart, 0 when none is due.
    pub next_restart_at: u64,
    pub persistent: bool,
    pub memory_current: u64,
    pub memory_peak: u64,
    pub cpu_usage_nsec: u64,
    pub cpu_percent: f64,
    pub tasks_current: u64,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
}

fn get<T: TryFrom<OwnedValue>>(d: &mut HashMap<String, OwnedValue>, k: &str) -> Option<T> {
    d.remove(k).and_then(|v| T::try_from(v).ok())
}

impl ProcessView {
    /// The `a{sv}` record of `List`, with `Path` added.
    pub fn to_dict(&self) -> HashMap<String, Value<'static>> {
        let mut d: HashMap<String, Value<'static>> = HashMap::with_capacity(32);
        let mut s = |k: &str, v: Value<'static>| {
            d.insert(k.to_string(), v);
        };
        s("Id", self.id.clone().into());
        s("Path", super::process_path(&self.id).into());
        s("Name", self.name.clone().into());
        s("Command", self.command.clone().into());
        s("WorkingDirectory", self.working_directory.clone().into());
        s("Workspace", self.workspace.clone().into());
        s("Session", self.session.clone().into());
        let labels: HashMap<String, String> = self.labels.clone().into_iter().collect();
        s("Labels", labels.into());
        s("State", self.state.as_str().into());
        s("MainPID", self.main_pid.into());
        s("Unit", self.unit.clone().into());
        s("ControlGroup", self.control_group.clone().into());
        s("ExitCode", self.exit_code.into());
        s("ExitSignal", self.exit_signal.into());
        s("ExitReason", self.exit_reason.clone().into());
        s("StartedAt", self.started_at.into());
        s("ExitedAt", self.exited_at.into());
        s("Restarts", self.restarts.into());
        s("Restart", self.restart_policy.clone().into());
        s("NextRestartAt", self.next_restart_at.into());
        s("Persistent", self.persistent.into());
        s("MemoryCurrent", self.memory_current.into());
        s("MemoryPeak", self.memory_peak.into());
        s("CPUUsageNSec", self.cpu_usage_nsec.into());
        s("CPUPercent", self.cpu_percent.into());
        s("TasksCurrent", self.tasks_current.into());
        s("IOReadBytes", self.io_read_bytes.into());
        s("IOWriteBytes", self.io_write_bytes.into());
        d
    }

    /// Decodes a `List` record; missing keys take neutral defaults so an
    /// older agent's records still decode.
    pub fn from_dict(mut d: HashMap<String, OwnedValue>) -> ProcessView {
        let state: String = get(&mut d, "State").unwrap_or_default();
        let labels: HashMap<String, String> = get(&mut d, "Labels").unwrap_or_default();
        ProcessView {
            id: get(&mut d, "Id").unwrap_or_default(),
            name: get(&mut d, "Name").unwrap_or_default(),
            command: get(&mut d, "Command").unwrap_or_default(),
            working_directory: get(&mut d, "WorkingDirectory").unwrap_or_default(),
            workspace: get(&mut d, "Workspace").unwrap_or_default(),
            session: get(&mut d, "Session").unwrap_or_default(),
            labels: labels.into_iter().collect(),
            state: State::parse(&state).unwrap_or(State::Failed),
            main_pid: get(&mut d, "MainPID").unwrap_or(0),
            unit: get(&mut d, "Unit").unwrap_or_default(),
            control_group: get(&mut d, "ControlGroup").unwrap_or_default(),
            exit_code: get(&mut d, "ExitCode").unwrap_or(-1),
            exit_signal: get(&mut d, "ExitSignal").unwrap_or(0),
            exit_reason: get(&mut d, "ExitReason").unwrap_or_default(),
            started_at: get(&mut d, "StartedAt").unwrap_or(0),
            exited_at: get(&mut d, "ExitedAt").unwrap_or(0),
            restarts: get(&mut d, "Restarts").unwrap_or(0),
            restart_policy: get(&mut d, "Restart").unwrap_or_default(),
            next_restart_at: get(&mut d, "NextRestartAt").unwrap_or(0),
            persistent: get(&mut d, "Persistent").unwrap_or(false),
            memory_current: get(&mut d, "MemoryCurrent").unwrap_or(UNSET),
            memory_peak: get(&mut d, "MemoryPeak").unwrap_or(UNSET),
            cpu_usage_nsec: get(&mut d, "CPUUsageNSec").unwrap_or(UNSET),
            cpu_percent: get(&mut d, "CPUPercent").unwrap_or(0.0),
            tasks_current: get(&mut d, "TasksCurrent").unwrap_or(UNSET),
            io_read_bytes: get(&mut d, "IOReadBytes").unwrap_or(UNSET),
            io_write_bytes: get(&mut d, "IOWriteBytes").unwrap_or(UNSET),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_record_round_trips() {
        let v = ProcessView {
            id: "7".into(),
            name: "web".into(),
            command: vec!["sleep".into(), "9".into()],
            working_directory: "/tmp".into(),
            workspace: "w".into(),
            session: "s".into(),
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
            memory_current: 100,
            memory_peak: 200,
            cpu_usage_nsec: UNSET,
            cpu_percent: 1.5,
            tasks_current: 3,
            io_read_bytes: UNSET,
            io_write_bytes: 5,
        };
        let owned = v
            .to_dict()
            .into_iter()
            .map(|(k, val)| (k, val.try_into_owned().unwrap()))
            .collect();
        assert_eq!(ProcessView::from_dict(owned), v);
    }
}
