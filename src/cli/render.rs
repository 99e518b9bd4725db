//! What `corralctl` prints: the list table, the status page, event and log
//! lines, and the JSON objects of `--json`. Pure functions of the agent's
//! records and the current time. The JSON key set is a public interface
//! (scripts parse it): a process's keys come from the property table in
//! `api` (`ProcessJson`), and are pinned by the tests here.

use serde::Serialize;

use crate::api::{
    cpu_percent_known, EventRow, ListenPort, LogRow, ProcessJson, ProcessView, State, UNSET,
};

use super::format::{
    format_bytes, format_cpu_time, format_duration, format_opt_bytes, format_relative,
    format_time_us, format_time_us_ms, render_table, sanitize, shell_join, signal_name, Align,
};

fn known(n: u64) -> Option<u64> {
    (n != UNSET).then_some(n)
}

/// The CPU% cell and figure: only while it means something.
fn cpu_percent(v: &ProcessView) -> Option<f64> {
    cpu_percent_known(v).then_some(v.cpu_percent)
}

#[derive(Debug, Serialize)]
pub struct EventJson {
    pub time_us: u64,
    pub id: String,
    pub kind: String,
    pub detail: String,
}

impl From<&EventRow> for EventJson {
    fn from((t, id, kind, detail): &EventRow) -> Self {
        EventJson {
            time_us: *t,
            id: id.clone(),
            kind: kind.clone(),
            detail: detail.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct LogJson {
    pub time_us: u64,
    /// `stdout`, `stderr` or `system` (a line the agent wrote itself).
    pub stream: String,
    pub text: String,
}

fn stream_name(s: &str) -> &str {
    match s {
        "o" => "stdout",
        "e" => "stderr",
        "s" => "system",
        other => other,
    }
}

impl From<&LogRow> for LogJson {
    fn from((t, stream, text): &LogRow) -> Self {
        LogJson {
            time_us: *t,
            stream: stream_name(stream).to_string(),
            text: text.clone(),
        }
    }
}

/// `status --json`: the list object plus recent events and output.
#[derive(Serialize)]
pub struct StatusJson<'a> {
    #[serde(flatten)]
    pub process: ProcessJson<'a>,
    pub events: Vec<EventJson>,
    pub logs: Vec<LogJson>,
}

/// The STATE cell: the state, and for ended processes how they ended
/// (`exited 0`, `failed 3`, `failed SIGKILL`, `failed oom-kill`), plus
/// `(restarting)` while an automatic restart is due.
pub fn state_text(v: &ProcessView) -> String {
    let mut s = match v.state {
        State::Starting | State::Running | State::Stopping | State::Stopped => {
            v.state.as_str().to_string()
        }
        State::Exited | State::Failed => {
            let how = match v.exit_reason.as_str() {
                "oom-kill" | "spawn-failed" | "crash-loop" | "lost" => v.exit_reason.clone(),
                _ if v.exit_signal > 0 => signal_name(v.exit_signal),
                _ if v.exit_code >= 0 => v.exit_code.to_string(),
                _ => String::new(),
            };
            if how.is_empty() {
                v.state.as_str().to_string()
            } else {
                format!("{} {how}", v.state)
            }
        }
    };
    if !v.state.is_active() && v.next_restart_at != 0 {
        s.push_str(" (restarting)");
    }
    s
}

fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        sanitize(s)
    }
}

fn uptime(v: &ProcessView, now_us: u64) -> Option<String> {
    (v.state.is_active() && v.started_at != 0)
        .then(|| format_duration(now_us.saturating_sub(v.started_at) / 1_000_000))
}

/// The `List` keys [`list_table`] reads (its `Keys` option), and
/// `Persistent` for the logout warning given after it.
pub const LIST_TABLE_KEYS: &[&str] = &[
    "Id",
    "Name",
    "Workspace",
    "State",
    "ExitReason",
    "ExitSignal",
    "ExitCode",
    "NextRestartAt",
    "Health",
    "MainPID",
    "MemoryCurrent",
    "CPUPercent",
    "CPUUsageNSec",
    "StartedAt",
    "ListenPorts",
    "Command",
    "Persistent",
];

/// `list` as an aligned table, in the order given.
pub fn list_table(views: &[ProcessView], now_us: u64) -> String {
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            vec![
                v.id.clone(),
                dash(&v.name),
                dash(&v.workspace),
                state_text(v),
                match v.health {
                    crate::api::Health::None => "-".into(),
                    h => h.as_str().to_string(),
                },
                if v.main_pid == 0 {
                    "-".into()
                } else {
                    v.main_pid.to_string()
                },
                format_opt_bytes(v.memory_current),
                cpu_percent(v).map_or("-".into(), |p| format!("{p:.1}")),
                uptime(v, now_us).unwrap_or_else(|| "-".into()),
                ports_cell(v),
                shell_join(&v.command),
            ]
        })
        .collect();
    use Align::{Left as L, Right as R};
    render_table(
        Some(&[
            "ID",
            "NAME",
            "WORKSPACE",
            "STATE",
            "HEALTH",
            "PID",
            "MEM",
            "CPU%",
            "UPTIME",
            "PORTS",
            "COMMAND",
        ]),
        &rows,
        &[L, L, L, L, L, R, R, R, R, L, L],
    )
}

/// Most ports the list's cell names; the rest are counted.
const PORTS_SHOWN: usize = 3;

/// The PORTS cell: `:3000,:5353/udp`, `-` when none, `,+2` past
/// [`PORTS_SHOWN`] (`ports` and `status` show them all).
fn ports_cell(v: &ProcessView) -> String {
    let mut seen: Vec<String> = v.listen_ports.iter().map(ListenPort::short).collect();
    // One port on both IPv4 and IPv6 reads once.
    seen.dedup();
    if seen.is_empty() {
        return "-".into();
    }
    let more = seen.len().saturating_sub(PORTS_SHOWN);
    seen.truncate(PORTS_SHOWN);
    let mut cell = seen.join(",");
    if more > 0 {
        cell.push_str(&format!(",+{more}"));
    }
    cell
}

/// One row of `corralctl ports --json`.
#[derive(Debug, Serialize)]
pub struct PortJson<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub workspace: &'a str,
    #[serde(flatten)]
    pub port: &'a ListenPort,
}

/// Every listening port of `views`, one per row (`corralctl ports`).
pub fn port_rows(views: &[ProcessView]) -> Vec<PortJson<'_>> {
    views
        .iter()
        .flat_map(|v| {
            v.listen_ports.iter().map(|port| PortJson {
                id: &v.id,
                name: &v.name,
                workspace: &v.workspace,
                port,
            })
        })
        .collect()
}

/// `corralctl ports` as an aligned table.
pub fn ports_table(rows: &[PortJson<'_>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                dash(r.name),
                dash(r.workspace),
                r.port.proto.clone(),
                sanitize(&r.port.address),
                r.port.port.to_string(),
            ]
        })
        .collect();
    use Align::{Left as L, Right as R};
    render_table(
        Some(&["ID", "NAME", "WORKSPACE", "PROTO", "ADDRESS", "PORT"]),
        &rows,
        &[L, L, L, L, L, R],
    )
}

/// Event rows, one per line: local time, id (unless `with_id` is false),
/// kind, detail.
pub fn event_lines(events: &[EventRow], with_id: bool) -> String {
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|(t, id, kind, detail)| {
            let mut r = vec![format_time_us_ms(*t)];
            if with_id {
                r.push(sanitize(id));
            }
            r.push(sanitize(kind));
            r.push(sanitize(detail));
            r
        })
        .collect();
    render_table(None, &rows, &[])
}

/// One output line for `logs`: the text as the process wrote it (colour
/// escapes intact), optionally after its time and a stream tag.
pub fn log_line(row: &LogRow, timestamps: bool, streams: bool) -> String {
    let (t, stream, text) = row;
    let mut s = String::new();
    if timestamps {
        s.push_str(&format_time_us_ms(*t));
        s.push(' ');
    }
    if streams {
        s.push_str(match stream.as_str() {
            "o" => "[out] ",
            "e" => "[err] ",
            "s" => "[sys] ",
            _ => "[?] ",
        });
    }
    s.push_str(text);
    s
}

/// "(code 3)", "(signal SIGKILL, oom-kill)": how a run ended, for status.
fn ending(v: &ProcessView) -> String {
    let mut parts = Vec::new();
    if v.exit_signal > 0 {
        parts.push(format!("signal {}", signal_name(v.exit_signal)));
    } else if v.exit_code >= 0 {
        parts.push(format!("exit code {}", v.exit_code));
    }
    if !["", "exit", "signal", v.state.as_str()].contains(&v.exit_reason.as_str()) {
        parts.push(sanitize(&v.exit_reason));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

fn when(us: u64, now_us: u64) -> String {
    format!("{} ({})", format_time_us(us), format_relative(us, now_us))
}

/// The `status` page, modelled on `systemctl status`.
/// The `Ready` line of a `Notify` process; none for others.
fn ready_text(state: crate::api::NotifyState) -> Option<&'static str> {
    use crate::api::NotifyState;
    match state {
        NotifyState::None => None,
        NotifyState::Waiting => Some("waiting (no READY=1 yet)"),
        NotifyState::Ready => Some("yes"),
        NotifyState::Reloading => Some("reloading"),
        NotifyState::Stopping => Some("stopping"),
    }
}

pub fn status_page(v: &ProcessView, events: &[EventRow], logs: &[LogRow], now_us: u64) -> String {
    let mut fields: Vec<(&str, String)> = Vec::new();
    let state = if v.state.is_active() {
        match v.started_at {
            0 => v.state.as_str().to_string(),
            t => format!("{} since {}", v.state, when(t, now_us)),
        }
    } else {
        let mut s = format!("{}{}", v.state, ending(v));
        if v.exited_at != 0 {
            s.push_str(&format!(" since {}", when(v.exited_at, now_us)));
        }
        s
    };
    fields.push(("State", state));
    if v.main_pid != 0 {
        fields.push(("Main PID", v.main_pid.to_string()));
    }
    fields.push(("Unit", dash(&v.unit)));
    fields.push(("CGroup", dash(&v.control_group)));
    fields.push(("Workspace", dash(&v.workspace)));
    fields.push(("Session", dash(&v.session)));
    fields.push(("Command", shell_join(&v.command)));
    fields.push(("Directory", dash(&v.working_directory)));
    if v.tracked {
        fields.push((
            "Tracked",
            "yes: started outside corral; output not captured, exit code unknown".into(),
        ));
    }
    if !v.labels.is_empty() {
        let labels: Vec<String> = v
            .labels
            .iter()
            .map(|(k, val)| sanitize(&format!("{k}={val}")))
            .collect();
        fields.push(("Labels", labels.join(", ")));
    }
    let mut mem = format_opt_bytes(v.memory_current);
    if v.memory_peak != UNSET {
        mem.push_str(&format!(" (peak {})", format_bytes(v.memory_peak)));
    }
    fields.push(("Memory", mem));
    let mut cpu = format_cpu_time(v.cpu_usage_nsec);
    if let Some(p) = cpu_percent(v) {
        cpu.push_str(&format!(" ({p:.1}%)"));
    }
    fields.push(("CPU", cpu));
    fields.push((
        "Tasks",
        known(v.tasks_current).map_or("-".into(), |n| n.to_string()),
    ));
    fields.push((
        "IO",
        format!(
            "{} read, {} written",
            format_opt_bytes(v.io_read_bytes),
            format_opt_bytes(v.io_write_bytes)
        ),
    ));
    let mut restarts = format!("{} (policy {})", v.restarts, dash(&v.restart_policy));
    if v.next_restart_at != 0 {
        restarts.push_str(&format!(
            ", next {}",
            format_relative(v.next_restart_at, now_us)
        ));
    }
    fields.push(("Restarts", restarts));
    fields.push(("Persistent", if v.persistent { "yes" } else { "no" }.into()));
    if v.tty {
        fields.push(("Terminal", "yes (corralctl attach)".into()));
    }

    if !v.listen_ports.is_empty() {
        let ports: Vec<String> = v
            .listen_ports
            .iter()
            .map(|p| sanitize(&p.to_string()))
            .collect();
        fields.push(("Ports", ports.join(", ")));
    }
    if !v.port_holders.is_empty() {
        let held: Vec<String> = v
            .port_holders
            .iter()
            .map(|h| format!("port {} held by {}", h.port, sanitize(&h.description)))
            .collect();
        fields.push(("Ports", held.join("; ")));
    }
    if v.health != crate::api::Health::None || !v.health_results.is_empty() {
        let results: Vec<String> = v
            .health_results
            .iter()
            .rev()
            .map(|(t, ok, m)| {
                let mark = if *ok { "pass" } else { "fail" };
                format!("{mark} {} {}", format_time_us_ms(*t), sanitize(m))
            })
            .collect();
        let mut h = v.health.as_str().to_string();
        if !results.is_empty() {
            h.push_str(&format!(" (newest first: {})", results.join("; ")));
        }
        fields.push(("Health", h));
    }
    if let Some(ready) = ready_text(v.notify_state) {
        fields.push(("Ready", ready.into()));
    }
    if !v.status_text.is_empty() {
        fields.push(("Status", sanitize(&v.status_text)));
    }
    if v.started_at != 0 {
        fields.push(("Started", when(v.started_at, now_us)));
    }
    if v.exited_at != 0 {
        fields.push(("Exited", when(v.exited_at, now_us)));
    }

    let mut out = format!("● {} {}: {}\n", v.id, dash(&v.name), state_text(v));
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 2;
    for (k, val) in &fields {
        out.push_str(&format!("{k:>width$}: {val}\n"));
    }
    out.push_str(&format!("\nLast {} events:\n", events.len()));
    for line in event_lines(events, false).lines() {
        out.push_str(&format!("  {line}\n"));
    }
    out.push_str(&format!("\nLast {} log lines:\n", logs.len()));
    for row in logs {
        out.push_str(&format!("  {}\n", log_line(row, false, false)));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn view() -> ProcessView {
        ProcessView {
            id: "7".into(),
            name: "wéb".into(),
            command: vec!["sleep".into(), "9".into()],
            working_directory: "/tmp".into(),
            workspace: "w".into(),
            owner: 1000,
            session: String::new(),
            labels: BTreeMap::new(),
            state: State::Running,
            main_pid: 42,
            unit: "app-corral-web-7.scope".into(),
            control_group: "/app.slice/app-corral-web-7.scope".into(),
            exit_code: -1,
            exit_signal: 0,
            exit_reason: String::new(),
            started_at: 1_000_000,
            exited_at: 0,
            restarts: 0,
            restart_policy: "no".into(),
            next_restart_at: 0,
            persistent: false,
            tty: false,
            memory_current: 12_900_000,
            memory_peak: UNSET,
            cpu_usage_nsec: 5_000_000,
            cpu_percent: 2.5,
            tasks_current: 3,
            io_read_bytes: UNSET,
            io_write_bytes: UNSET,
            oom_kills: 0,
            pressure: Default::default(),
            tracked: false,
            health: crate::api::Health::None,
            health_results: vec![],
            listen_ports: vec![
                port("tcp", "0.0.0.0", 3000),
                port("tcp", "::", 3000),
                port("udp", "127.0.0.1", 5433),
            ],
            port_holders: vec![],
            notify_state: crate::api::NotifyState::None,
            status_text: String::new(),
        }
    }

    fn port(proto: &str, address: &str, port: u16) -> ListenPort {
        ListenPort {
            proto: proto.into(),
            address: address.into(),
            port,
        }
    }

    const REQUIRED: [&str; 18] = [
        "id",
        "name",
        "workspace",
        "session",
        "state",
        "pid",
        "unit",
        "control_group",
        "exit_code",
        "exit_signal",
        "restarts",
        "memory_bytes",
        "memory_peak_bytes",
        "cpu_usage_nsec",
        "cpu_percent",
        "tasks",
        "started_at",
        "exited_at",
    ];

    fn json(v: &ProcessView) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::to_value(ProcessJson(v)).unwrap() {
            serde_json::Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn json_has_the_required_keys_first() {
        let text = serde_json::to_string(&ProcessJson(&view())).unwrap();
        // Key order as written: the required ones, in order, then extras.
        let mut at = 0;
        for k in REQUIRED {
            let pos = text
                .find(&format!("\"{k}\":"))
                .unwrap_or_else(|| panic!("{k} missing"));
            assert!(pos >= at, "{k} out of order");
            at = pos;
        }
        let m = json(&view());
        let extras: Vec<&str> = m
            .keys()
            .map(String::as_str)
            .filter(|k| !REQUIRED.contains(k))
            .collect();
        assert_eq!(m.len(), REQUIRED.len() + extras.len());
        for e in extras {
            assert!(
                text.find(&format!("\"{e}\":")).unwrap() > at,
                "{e} before the required keys"
            );
        }
    }

    #[test]
    fn json_nulls_for_unknown_values() {
        let m = json(&view());
        assert_eq!(m["state"], "running");
        assert_eq!(m["pid"], 42);
        assert_eq!(m["memory_bytes"], 12_900_000);
        assert!(m["memory_peak_bytes"].is_null());
        assert!(m["exit_code"].is_null());
        assert!(m["exit_signal"].is_null());
        assert!(m["exited_at"].is_null());
        assert_eq!(m["started_at"], 1_000_000);
        assert_eq!(m["cpu_percent"], 2.5);
        assert!(m["exit_reason"].is_null());

        let mut ended = view();
        ended.state = State::Failed;
        ended.main_pid = 0;
        ended.exit_code = 0;
        ended.exit_signal = 9;
        ended.exit_reason = "signal".into();
        ended.started_at = 0;
        ended.exited_at = 5;
        ended.memory_current = UNSET;
        ended.cpu_usage_nsec = UNSET;
        ended.tasks_current = UNSET;
        let m = json(&ended);
        for k in [
            "pid",
            "memory_bytes",
            "cpu_usage_nsec",
            "cpu_percent",
            "tasks",
            "started_at",
        ] {
            assert!(m[k].is_null(), "{k}");
        }
        assert_eq!(m["exit_code"], 0);
        assert_eq!(m["exit_signal"], 9);
        assert_eq!(m["exited_at"], 5);
        assert_eq!(m["exit_reason"], "signal");
    }

    #[test]
    fn status_json_adds_events_and_logs() {
        let s = StatusJson {
            process: ProcessJson(&view()),
            events: vec![EventJson::from(&(
                1,
                "7".into(),
                "started".into(),
                "pid 42".into(),
            ))],
            logs: vec![LogJson::from(&(2, "e".into(), "oops".into()))],
        };
        let v = serde_json::to_value(s).unwrap();
        assert_eq!(v["id"], "7");
        assert_eq!(v["events"][0]["kind"], "started");
        assert_eq!(v["logs"][0]["stream"], "stderr");
    }

    #[test]
    fn state_cells() {
        let mut v = view();
        assert_eq!(state_text(&v), "running");
        v.state = State::Exited;
        v.exit_code = 0;
        assert_eq!(state_text(&v), "exited 0");
        v.state = State::Failed;
        v.exit_code = 3;
        assert_eq!(state_text(&v), "failed 3");
        v.exit_code = -1;
        v.exit_signal = 9;
        assert_eq!(state_text(&v), "failed SIGKILL");
        v.exit_reason = "oom-kill".into();
        assert_eq!(state_text(&v), "failed oom-kill");
        v.next_restart_at = 5;
        assert_eq!(state_text(&v), "failed oom-kill (restarting)");
        v.state = State::Stopped;
        v.next_restart_at = 0;
        assert_eq!(state_text(&v), "stopped");
    }

    /// The table drawn from records holding only [`LIST_TABLE_KEYS`] is
    /// the table drawn from whole records: the keys cover every column.
    #[test]
    fn the_list_table_keys_cover_every_column() {
        let keys = crate::api::RecordKeys::from_names(LIST_TABLE_KEYS).unwrap();
        let mut exited = view();
        exited.id = "8".into();
        exited.state = State::Failed;
        exited.exit_signal = 9;
        exited.next_restart_at = 5;
        exited.persistent = true;
        exited.health = crate::api::Health::Unhealthy;
        let whole = [view(), exited];
        let partial: Vec<ProcessView> = whole
            .iter()
            .map(|v| {
                let d = v
                    .to_dict_keys(&keys)
                    .into_iter()
                    .map(|(k, val)| (k, val.try_into_owned().unwrap()))
                    .collect();
                ProcessView::from_dict(d)
            })
            .collect();
        assert_ne!(partial[1], whole[1], "the keys should be a subset");
        assert_eq!(partial[1].persistent, whole[1].persistent);
        assert_eq!(
            list_table(&partial, 9_000_000),
            list_table(&whole, 9_000_000)
        );
    }

    #[test]
    fn list_table_stays_aligned_with_utf8_names() {
        let mut b = view();
        b.id = "12".into();
        b.name = "x".into();
        b.state = State::Exited;
        b.exit_code = 0;
        b.main_pid = 0;
        b.memory_current = UNSET;
        b.listen_ports.clear();
        let out = list_table(&[view(), b], 193_000_000);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        let col = |l: &str, pat: &str| l.find(pat).map(|i| l[..i].chars().count());
        // COMMAND starts at the same column on every line.
        let c = col(lines[0], "COMMAND");
        assert_eq!(col(lines[1], "sleep 9"), c);
        assert_eq!(col(lines[2], "sleep 9"), c);
        assert_eq!(col(lines[1], "running"), col(lines[0], "STATE"));
        assert_eq!(col(lines[2], "exited 0"), col(lines[0], "STATE"));
        assert!(
            lines[1].contains("12.3M") && lines[1].contains("3m12s") && lines[1].contains("2.5")
        );
        assert!(lines[1].contains("wéb"));
        // One cell of ports, a port on both families once; none: a dash.
        assert_eq!(col(lines[1], ":3000,:5433/udp "), col(lines[0], "PORTS"));
        let at = col(lines[0], "PORTS").unwrap();
        let cell: String = lines[2].chars().skip(at).take(2).collect();
        assert_eq!(cell, "- ");
    }

    #[test]
    fn ports_list_every_socket_and_the_cell_counts_the_rest() {
        let v = view();
        let table = ports_table(&port_rows(std::slice::from_ref(&v)));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(
            lines[2].starts_with("7   wéb   w          tcp    ::"),
            "{table}"
        );
        let json = serde_json::to_value(port_rows(std::slice::from_ref(&v))).unwrap();
        assert_eq!(
            json[2],
            serde_json::json!({"id": "7", "name": "wéb", "workspace": "w",
                "proto": "udp", "address": "127.0.0.1", "port": 5433})
        );
        let mut many = v;
        many.listen_ports = (1..=5).map(|p| port("tcp", "::", p)).collect();
        assert_eq!(ports_cell(&many), ":1,:2,:3,+2");
    }

    #[test]
    fn status_page_mentions_the_essentials() {
        let mut v = view();
        v.state = State::Failed;
        v.exit_code = 3;
        v.exit_reason = "crash-loop".into();
        v.exited_at = 2_000_000;
        let page = status_page(
            &v,
            &[(1_000_000, "7".into(), "exited".into(), "code 3".into())],
            &[(1_500_000, "o".into(), "hello".into())],
            10_000_000,
        );
        assert!(page.starts_with("● 7 wéb: failed crash-loop\n"), "{page}");
        assert!(
            page.contains("State: failed (exit code 3, crash-loop) since"),
            "{page}"
        );
        assert!(page.contains("Main PID: 42"));
        assert!(page.contains("Memory: 12.3M"));
        assert!(page.contains("Last 1 events:"));
        assert!(page.contains("exited  code 3"));
        assert!(page.contains("  hello\n"));
        // Not running: who holds the ports it wants, not what it had.
        v.listen_ports.clear();
        v.port_holders = vec![crate::api::PortHolder {
            port: 3000,
            pid: 812,
            description: "PID 812 (python3), not supervised".into(),
        }];
        let page = status_page(&v, &[], &[], 10_000_000);
        assert!(
            page.contains("Ports: port 3000 held by PID 812 (python3), not supervised\n"),
            "{page}"
        );
        let page = status_page(&view(), &[], &[], 10_000_000);
        assert!(
            page.contains("Ports: tcp 0.0.0.0:3000, tcp [::]:3000, udp 127.0.0.1:5433\n"),
            "{page}"
        );
        assert!(
            !page.contains("Ready:") && !page.contains("Status:"),
            "{page}"
        );
        let mut v = view();
        v.notify_state = crate::api::NotifyState::Waiting;
        v.status_text = "warming \u{1b}[2J".into();
        let page = status_page(&v, &[], &[], 10_000_000);
        assert!(page.contains("Ready: waiting (no READY=1 yet)\n"), "{page}");
        assert!(!page.contains('\u{1b}'), "{page}");
        v.notify_state = crate::api::NotifyState::Ready;
        assert!(status_page(&v, &[], &[], 10_000_000).contains("Ready: yes\n"));
    }

    #[test]
    fn log_lines() {
        let row = (0, "e".to_string(), "boom".to_string());
        assert_eq!(log_line(&row, false, false), "boom");
        assert_eq!(log_line(&row, false, true), "[err] boom");
        assert!(log_line(&row, true, false).ends_with(" boom"));
    }
}
