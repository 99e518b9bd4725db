//! The OpenMetrics text of every process and workspace: one renderer for
//! `corralctl metrics` and the agent's `/metrics` listener, so both print
//! the same names (README "History, top and metrics" lists them). Every
//! process series carries the labels `id`, `name`, `workspace`, `state`;
//! a figure the cgroup does not provide is left out, never written as 0.
//!
//! Every family is typed `gauge`: the one type the OpenMetrics text and
//! the Prometheus 0.0.4 text (what promtool lints and node_exporter's
//! textfile collector reads) spell alike — a counter's family is `x` in
//! one and `x_total` in the other. The cumulative families (CPU seconds,
//! IO bytes, restarts, OOM kills) only grow within a run; `rate()` works
//! on them all the same.

use std::collections::BTreeMap;
use std::fmt::Write;

use zbus::zvariant::Value;

use super::{ProcessView, State, UNSET};

/// The `Content-Type` of the text [`render`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One process as the metrics show it: its view, and what other parts of
/// the agent may add to a `List` record (absent from older agents).
#[derive(Debug, Clone, PartialEq)]
pub struct Metered {
    pub view: ProcessView,
    /// `Health` (`none|starting|healthy|unhealthy`), where served.
    pub health: Option<String>,
    /// `OOMKills`, where served.
    pub oom_kills: Option<u64>,
}

impl Metered {
    /// `view` plus the optional figures, read from the record's dictionary
    /// by `get` (a `List` record, or the agent's own `to_dict`).
    pub fn new<'v>(view: ProcessView, get: impl Fn(&str) -> Option<&'v Value<'v>>) -> Metered {
        let (health, oom_kills) = extras(get);
        Metered {
            view,
            health,
            oom_kills,
        }
    }
}

/// `Health` and `OOMKills` from a process record, where it has them.
pub fn extras<'v>(get: impl Fn(&str) -> Option<&'v Value<'v>>) -> (Option<String>, Option<u64>) {
    let health = get("Health").and_then(|v| match v {
        Value::Str(s) => Some(s.to_string()),
        _ => None,
    });
    let oom_kills = get("OOMKills").and_then(|v| match v {
        Value::U32(n) => Some(u64::from(*n)),
        Value::U64(n) => Some(*n),
        _ => None,
    });
    (health, oom_kills)
}

/// One metric family: its name, unit and help.
struct Family {
    name: &'static str,
    unit: &'static str,
    help: &'static str,
}

const fn family(name: &'static str, unit: &'static str, help: &'static str) -> Family {
    Family { name, unit, help }
}

const PROCESS_RUNNING: Family = family(
    "corral_process_running",
    "",
    "1 while the process runs, else 0.",
);
const PROCESS_RESTARTS: Family = family(
    "corral_process_restarts",
    "",
    "Automatic restarts since the process was created (or its backoff was reset).",
);
const PROCESS_CPU: Family = family(
    "corral_process_cpu_seconds",
    "seconds",
    "CPU time used by the process's scope in its current run.",
);
const PROCESS_MEMORY: Family = family(
    "corral_process_memory_bytes",
    "bytes",
    "Memory charged to the process's scope.",
);
const PROCESS_TASKS: Family = family(
    "corral_process_tasks",
    "",
    "Processes and threads in the process's scope.",
);
const PROCESS_IO_READ: Family = family(
    "corral_process_io_read_bytes",
    "bytes",
    "Bytes read from block devices by the scope in its current run.",
);
const PROCESS_IO_WRITE: Family = family(
    "corral_process_io_write_bytes",
    "bytes",
    "Bytes written to block devices by the scope in its current run.",
);
const PROCESS_HEALTHY: Family = family(
    "corral_process_healthy",
    "",
    "1 while the health check passes, 0 while starting or unhealthy; absent without a check.",
);
const PROCESS_OOM: Family = family(
    "corral_process_oom_kills",
    "",
    "Processes of the scope killed by the OOM killer.",
);
const WORKSPACE_PROCESSES: Family = family(
    "corral_workspace_processes",
    "",
    "Processes of the workspace in each state.",
);
const WORKSPACE_CPU: Family = family(
    "corral_workspace_cpu_seconds",
    "seconds",
    "CPU time of the workspace's running processes, summed.",
);
const WORKSPACE_MEMORY: Family = family(
    "corral_workspace_memory_bytes",
    "bytes",
    "Memory of the workspace's running processes, summed.",
);
const WORKSPACE_TASKS: Family = family(
    "corral_workspace_tasks",
    "",
    "Tasks of the workspace's running processes, summed.",
);

/// A label value escaped as the exposition formats want it.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Writes families one at a time: header, then its samples.
struct Writer {
    out: String,
}

impl Writer {
    fn family(&mut self, f: &Family, samples: &[(String, String)]) {
        if samples.is_empty() {
            return;
        }
        let _ = writeln!(self.out, "# TYPE {} gauge", f.name);
        if !f.unit.is_empty() {
            let _ = writeln!(self.out, "# UNIT {} {}", f.name, f.unit);
        }
        let _ = writeln!(self.out, "# HELP {} {}", f.name, f.help);
        for (labels, value) in samples {
            let _ = writeln!(self.out, "{}{{{labels}}} {value}", f.name);
        }
    }
}

fn known(v: u64) -> Option<u64> {
    (v != UNSET).then_some(v)
}

/// Every process and workspace of `procs` in the OpenMetrics text format,
/// ending with `# EOF`.
pub fn render(procs: &[Metered]) -> String {
    let labels = |v: &ProcessView| {
        format!(
            "id=\"{}\",name=\"{}\",workspace=\"{}\",state=\"{}\"",
            escape(&v.id),
            escape(&v.name),
            escape(&v.workspace),
            v.state.as_str()
        )
    };
    let per = |f: &dyn Fn(&Metered) -> Option<String>| -> Vec<(String, String)> {
        procs
            .iter()
            .filter_map(|m| f(m).map(|value| (labels(&m.view), value)))
            .collect()
    };
    let active = |m: &Metered| m.view.state.is_active();
    let mut w = Writer { out: String::new() };
    w.family(
        &PROCESS_RUNNING,
        &per(&|m| Some(u8::from(m.view.state == State::Running).to_string())),
    );
    w.family(
        &PROCESS_RESTARTS,
        &per(&|m| Some(m.view.restarts.to_string())),
    );
    w.family(
        &PROCESS_CPU,
        &per(&|m| {
            active(m)
                .then_some(())
                .and(known(m.view.cpu_usage_nsec))
                .map(|n| (n as f64 / 1e9).to_string())
        }),
    );
    w.family(
        &PROCESS_MEMORY,
        &per(&|m| {
            active(m)
                .then_some(())
                .and(known(m.view.memory_current))
                .map(|n| n.to_string())
        }),
    );
    w.family(
        &PROCESS_TASKS,
        &per(&|m| {
            active(m)
                .then_some(())
                .and(known(m.view.tasks_current))
                .map(|n| n.to_string())
        }),
    );
    w.family(
        &PROCESS_IO_READ,
        &per(&|m| {
            active(m)
                .then_some(())
                .and(known(m.view.io_read_bytes))
                .map(|n| n.to_string())
        }),
    );
    w.family(
        &PROCESS_IO_WRITE,
        &per(&|m| {
            active(m)
                .then_some(())
                .and(known(m.view.io_write_bytes))
                .map(|n| n.to_string())
        }),
    );
    w.family(
        &PROCESS_HEALTHY,
        &per(&|m| match m.health.as_deref() {
            Some("healthy") => Some("1".into()),
            Some("starting" | "unhealthy") => Some("0".into()),
            _ => None,
        }),
    );
    w.family(&PROCESS_OOM, &per(&|m| m.oom_kills.map(|n| n.to_string())));

    #[derive(Default)]
    struct Totals {
        states: BTreeMap<&'static str, u64>,
        cpu_nsec: u64,
        memory: u64,
        tasks: u64,
    }
    let mut spaces: BTreeMap<&str, Totals> = BTreeMap::new();
    for m in procs {
        let t = spaces.entry(m.view.workspace.as_str()).or_default();
        *t.states.entry(m.view.state.as_str()).or_default() += 1;
        if active(m) {
            t.cpu_nsec += known(m.view.cpu_usage_nsec).unwrap_or(0);
            t.memory += known(m.view.memory_current).unwrap_or(0);
            t.tasks += known(m.view.tasks_current).unwrap_or(0);
        }
    }
    let ws = |name: &str| format!("workspace=\"{}\"", escape(name));
    let counts: Vec<(String, String)> = spaces
        .iter()
        .flat_map(|(name, t)| {
            t.states
                .iter()
                .map(move |(state, n)| (format!("{},state=\"{state}\"", ws(name)), n.to_string()))
        })
        .collect();
    w.family(&WORKSPACE_PROCESSES, &counts);
    let sums = |f: fn(&Totals) -> String| -> Vec<(String, String)> {
        spaces.iter().map(|(name, t)| (ws(name), f(t))).collect()
    };
    w.family(
        &WORKSPACE_CPU,
        &sums(|t| (t.cpu_nsec as f64 / 1e9).to_string()),
    );
    w.family(&WORKSPACE_MEMORY, &sums(|t| t.memory.to_string()));
    w.family(&WORKSPACE_TASKS, &sums(|t| t.tasks.to_string()));
    w.out.push_str("# EOF\n");
    w.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: &str, name: &str, state: State, memory: u64) -> ProcessView {
        let mut d = std::collections::HashMap::new();
        for (k, v) in [
            ("Id", id),
            ("Name", name),
            ("Workspace", "w"),
            ("State", state.as_str()),
        ] {
            d.insert(
                k.to_string(),
                zbus::zvariant::OwnedValue::try_from(Value::from(v)).unwrap(),
            );
        }
        d.insert(
            "MemoryCurrent".into(),
            zbus::zvariant::OwnedValue::from(memory),
        );
        ProcessView::from_dict(d)
    }

    #[test]
    fn labels_are_escaped_unknowns_left_out_and_the_text_ends_in_eof() {
        let running = Metered {
            view: view("1", "a \"b\"\\\n", State::Running, 4096),
            health: Some("healthy".into()),
            oom_kills: Some(2),
        };
        let unknown = Metered {
            view: view("2", "c", State::Running, UNSET),
            health: None,
            oom_kills: None,
        };
        let text = render(&[running, unknown]);
        let labels = r#"id="1",name="a \"b\"\\\n",workspace="w",state="running""#;
        assert!(
            text.contains(&format!("corral_process_memory_bytes{{{labels}}} 4096\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("corral_process_healthy{{{labels}}} 1\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("corral_process_oom_kills{{{labels}}} 2\n")),
            "{text}"
        );
        assert!(
            !text.contains("corral_process_memory_bytes{id=\"2\""),
            "{text}"
        );
        assert!(
            text.contains("corral_workspace_memory_bytes{workspace=\"w\"} 4096\n"),
            "{text}"
        );
        assert!(
            text.contains("corral_workspace_processes{workspace=\"w\",state=\"running\"} 2\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
