//! `corralctl limit`, `freeze`, `thaw` and `workspaces`: live limits and
//! the workspace objects. Workspaces are found by name in the agent's
//! `GetManagedObjects` (their paths escape the name, and in system mode
//! carry the owner), so the CLI never builds a workspace path itself.

use std::collections::HashMap;

use serde::Serialize;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};
use zbus::Connection;

use super::args::LimitArgs;
use super::error::{Bus, CliError, Result};
use super::format::{format_cpu_time, format_opt_bytes, render_table, sanitize, Align};
use crate::api::{self, UNSET};

/// One workspace as `corralctl workspaces` shows it.
#[derive(Debug, Serialize)]
pub struct WorkspaceRow {
    pub name: String,
    pub owner: u32,
    pub processes: u32,
    pub running: u32,
    pub unit: String,
    /// Null when unknown (nothing runs, or no memory controller).
    pub memory_bytes: Option<u64>,
    pub cpu_usage_nsec: Option<u64>,
    pub tasks: Option<u64>,
    pub frozen: bool,
    /// `SetLimits` keys and values.
    pub limits: serde_json::Map<String, serde_json::Value>,
    pub pressure: HashMap<String, f64>,
    #[serde(skip)]
    path: OwnedObjectPath,
}

fn known(v: u64) -> Option<u64> {
    (v != UNSET).then_some(v)
}

fn get<T: TryFrom<OwnedValue>>(props: &HashMap<String, OwnedValue>, key: &str) -> Option<T> {
    props.get(key)?.try_clone().ok()?.try_into().ok()
}

fn limit_json(v: &OwnedValue) -> serde_json::Value {
    if let Ok(n) = u64::try_from(v) {
        serde_json::Value::from(n)
    } else if let Ok(f) = f64::try_from(v) {
        serde_json::Value::from(f)
    } else {
        serde_json::Value::Null
    }
}

/// Every workspace the caller may see.
pub async fn workspaces(conn: &Connection, bus: Bus) -> Result<Vec<WorkspaceRow>> {
    let om = zbus::fdo::ObjectManagerProxy::builder(conn)
        .destination(api::BUS_NAME)
        .and_then(|b| b.path(api::MANAGER_PATH))
        .map_err(|e| CliError::from_call(bus, e))?
        .build()
        .await
        .map_err(|e| CliError::from_call(bus, e))?;
    let objects = om
        .get_managed_objects()
        .await
        .map_err(|e| CliError::from_call(bus, e.into()))?;
    let mut rows: Vec<WorkspaceRow> = objects
        .into_iter()
        .filter_map(|(path, ifaces)| {
            let p = ifaces
                .into_iter()
                .find(|(name, _)| name.as_str() == api::WORKSPACE_INTERFACE)?
                .1;
            let limits: HashMap<String, OwnedValue> = get(&p, "Limits").unwrap_or_default();
            Some(WorkspaceRow {
                name: get(&p, "Name").unwrap_or_default(),
                owner: get(&p, "Owner").unwrap_or(u32::MAX),
                processes: get(&p, "Processes").unwrap_or(0),
                running: get(&p, "Running").unwrap_or(0),
                unit: get(&p, "Unit").unwrap_or_default(),
                memory_bytes: get(&p, "MemoryCurrent").and_then(known),
                cpu_usage_nsec: get(&p, "CPUUsageNSec").and_then(known),
                tasks: get(&p, "TasksCurrent").and_then(known),
                frozen: get(&p, "Frozen").unwrap_or(false),
                limits: limits
                    .iter()
                    .map(|(k, v)| (k.clone(), limit_json(v)))
                    .collect(),
                pressure: get(&p, "Pressure").unwrap_or_default(),
                path,
            })
        })
        .collect();
    rows.sort_by(|a, b| (&a.name, a.owner).cmp(&(&b.name, b.owner)));
    Ok(rows)
}

/// The table of `corralctl workspaces`.
pub fn workspaces_table(rows: &[WorkspaceRow]) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|w| {
            let mut limits: Vec<String> =
                w.limits.iter().map(|(k, v)| format!("{k}={v}")).collect();
            limits.sort();
            vec![
                sanitize(&w.name),
                format!("{}/{}", w.running, w.processes),
                format_opt_bytes(w.memory_bytes.unwrap_or(UNSET)),
                w.cpu_usage_nsec.map_or("-".into(), format_cpu_time),
                w.tasks.map_or("-".into(), |t| t.to_string()),
                if w.frozen { "frozen" } else { "-" }.to_string(),
                if limits.is_empty() {
                    "-".into()
                } else {
                    limits.join(" ")
                },
            ]
        })
        .collect();
    use Align::{Left, Right};
    render_table(
        Some(&[
            "WORKSPACE",
            "RUNNING",
            "MEMORY",
            "CPU",
            "TASKS",
            "FROZEN",
            "LIMITS",
        ]),
        &body,
        &[Left, Right, Right, Right, Right, Left, Left],
    )
}

/// The object of workspace `name`: the caller's own when several owners
/// have one of that name (root in system mode sees everyone's).
pub async fn workspace_path(conn: &Connection, bus: Bus, name: &str) -> Result<OwnedObjectPath> {
    let rows = workspaces(conn, bus).await?;
    let mut named: Vec<WorkspaceRow> = rows.into_iter().filter(|w| w.name == name).collect();
    if named.len() > 1 {
        let me = nix::unistd::getuid().as_raw();
        named.retain(|w| w.owner == me);
    }
    match named.len() {
        1 => Ok(named.remove(0).path),
        0 => Err(CliError::Usage(format!(
            "no workspace '{name}' with a process in it"
        ))),
        _ => Err(CliError::Usage(format!("workspace '{name}' is ambiguous"))),
    }
}

/// The `SetLimits` argument of the flags given.
pub fn limits_dict(a: &LimitArgs) -> Result<HashMap<String, Value<'static>>> {
    let mut d = HashMap::new();
    let mut put = |k: &str, v: Option<Value<'static>>| {
        if let Some(v) = v {
            d.insert(k.to_string(), v);
        }
    };
    put("MemoryMax", a.memory_max.map(Value::from));
    put("MemoryHigh", a.memory_high.map(Value::from));
    put("CPUQuota", a.cpu_quota.map(Value::from));
    put("CPUWeight", a.cpu_weight.map(Value::from));
    put("TasksMax", a.tasks_max.map(Value::from));
    put("IOWeight", a.io_weight.map(Value::from));
    if d.is_empty() {
        return Err(CliError::Usage(
            "give at least one of --memory-max, --memory-high, --cpu-quota, --cpu-weight, --tasks-max, --io-weight".into(),
        ));
    }
    Ok(d)
}

/// Calls a method of `interface` at `path` with `body`.
pub async fn call<B>(
    conn: &Connection,
    bus: Bus,
    path: &OwnedObjectPath,
    interface: &str,
    method: &str,
    body: &B,
) -> Result<()>
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
{
    conn.call_method(Some(api::BUS_NAME), path, Some(interface), method, body)
        .await
        .map(drop)
        .map_err(|e| CliError::from_call(bus, e))
}
