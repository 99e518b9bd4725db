//! The wire contract shared by `corrald` and `corralctl`: bus names and
//! paths, the start spec and process records as D-Bus dictionaries, error
//! names and the client proxies. Each contract is one table: the Process
//! properties (`view`: D-Bus name and type, `--json` key) and the spec
//! keys (`spec`); the agent's getters and the proxies are generated from
//! them. Depends on zbus and serde only; nothing here knows how a process
//! is supervised.

mod error;
mod health;
mod history;
mod lifecycle;
pub mod live;
pub mod metrics;
mod ports;
mod proxy;
mod spec;
mod view;
mod wire;

pub use error::Error;
pub use health::{HealthCheck, HealthResult, StatusRange, HEALTH_RESULTS_KEPT};
pub use history::{HistoryRow, HISTORY_MAX_POINTS};
pub use lifecycle::{ExitReason, Health, NotifyState, OnUnhealthy, ProbeKind, RestartMode, State};
pub use live::{workspace_path, Limits, Pressure, WorkspaceView, NO_LIMIT, WORKSPACE_INTERFACE};
pub use ports::{ListenPort, PortHolder};
pub use proxy::{EventRow, LogRow, ManagerProxy, ProcessProxy, ProcessStateChangedStream};
pub use spec::{
    wire_len, Filter, StartSpec, MAX_ARGS, MAX_LABEL_LEN, MAX_LABEL_VALUE_LEN, MAX_PATH_LEN,
    MAX_PAYLOAD,
};
pub(crate) use view::process_properties;
pub use view::{
    cpu_percent_known, ProcessJson, ProcessView, Property, RecordKeys, PATH_KEY, PROPERTIES, UNSET,
};
pub use wire::WireValue;

/// Well-known bus name the agent owns, on the session bus (`--user`) or
/// the system bus (`--system`).
pub const BUS_NAME: &str = "org.corral.Supervisor1";
/// The manager object; also serves `org.freedesktop.DBus.ObjectManager`.
pub const MANAGER_PATH: &str = "/org/corral/Supervisor1";
pub const MANAGER_INTERFACE: &str = "org.corral.Supervisor1.Manager";
pub const PROCESS_INTERFACE: &str = "org.corral.Supervisor1.Process";
/// polkit actions (system mode), defined in `polkit/org.corral.Supervisor1.policy`.
pub const ACTION_MANAGE_OWN: &str = "org.corral.Supervisor1.manage-own";
pub const ACTION_MANAGE_ALL: &str = "org.corral.Supervisor1.manage-all";
pub const ACTION_START_AS_USER: &str = "org.corral.Supervisor1.start-as-user";
/// Prefix of every error name the agent returns.
pub const ERROR_PREFIX: &str = "org.corral.Supervisor1.Error";

/// Object path of one process: `/org/corral/Supervisor1/process/<id>`.
/// Ids are decimal numbers, always valid path elements.
pub fn process_path(id: &str) -> String {
    format!("{MANAGER_PATH}/process/{id}")
}
