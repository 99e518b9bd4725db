//! Client proxies of the two interfaces. The method and property lists
//! here are the contract the agent's `#[interface]` impls must serve; the
//! Process properties come from the table in `view`.

// BTreeMap and State: types in the property table's rows.
use std::collections::{BTreeMap, HashMap};

use zbus::proxy;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

use super::{process_properties, State, WireValue};

/// One event row: (time µs since epoch, process id, kind, detail).
pub type EventRow = (u64, String, String, String);
/// One log line: (time µs since epoch, stream `o`/`e`/`s`, text).
pub type LogRow = (u64, String, String);

#[proxy(
    interface = "org.corral.Supervisor1.Manager",
    default_service = "org.corral.Supervisor1",
    default_path = "/org/corral/Supervisor1"
)]
pub trait Manager {
    /// Starts a command in a new scope; returns its id and object path.
    /// (Calls that change something let polkit ask the user to
    /// authenticate, in system mode, where an agent is running.)
    #[zbus(allow_interactive_auth)]
    fn start(&self, spec: HashMap<String, Value<'_>>) -> zbus::Result<(String, OwnedObjectPath)>;

    /// Takes over a running process and its descendants; returns its id
    /// and object path.
    #[zbus(allow_interactive_auth)]
    fn track(
        &self,
        pid: u32,
        options: HashMap<String, Value<'_>>,
    ) -> zbus::Result<(String, OwnedObjectPath)>;

    /// Every known process matching the filter, ended ones included.
    fn list(
        &self,
        filter: HashMap<String, Value<'_>>,
    ) -> zbus::Result<Vec<HashMap<String, OwnedValue>>>;

    /// Stops every active process matching the filter; returns their ids.
    #[zbus(allow_interactive_auth)]
    fn stop_matching(&self, filter: HashMap<String, Value<'_>>) -> zbus::Result<Vec<String>>;

    /// Removes every process matching the filter (stopping live ones).
    #[zbus(allow_interactive_auth)]
    fn remove_matching(&self, filter: HashMap<String, Value<'_>>) -> zbus::Result<Vec<String>>;

    /// The newest `limit` events, of one process (`id`) or of all (`""`), oldest first.
    fn events(&self, id: &str, limit: u32) -> zbus::Result<Vec<EventRow>>;

    /// The last `lines` lines of a process's output (0 = all kept), since a
    /// time (µs since epoch, 0 = any), oldest first.
    fn logs(&self, id: &str, lines: u32, since_us: u64) -> zbus::Result<Vec<LogRow>>;

    /// A process's usage since a time (µs since epoch, 0 = all kept), in
    /// steps of at least `step_ms`; see `HistoryRow`.
    fn history(
        &self,
        id: &str,
        since_us: u64,
        step_ms: u64,
    ) -> zbus::Result<Vec<super::HistoryRow>>;

    /// Brings the project file's workspace to the file (the named
    /// processes and their dependencies, or all); answers, when done,
    /// (instance, action, detail) for each.
    #[zbus(allow_interactive_auth)]
    fn up(
        &self,
        file: &str,
        names: &[String],
        options: HashMap<String, Value<'_>>,
    ) -> zbus::Result<Vec<(String, String, String)>>;

    /// Stops the project's processes (the named ones and their
    /// dependents, or all), dependents first.
    #[zbus(allow_interactive_auth)]
    fn down(
        &self,
        file: &str,
        names: &[String],
        options: HashMap<String, Value<'_>>,
    ) -> zbus::Result<Vec<(String, String, String)>>;

    /// One step of an `Up`/`Down` as it happens (user mode).
    #[zbus(signal)]
    fn project_step(
        &self,
        workspace: &str,
        process: &str,
        action: &str,
        detail: &str,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    fn process_state_changed(
        &self,
        id: &str,
        process: zbus::zvariant::ObjectPath<'_>,
        old_state: &str,
        new_state: &str,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    fn health_changed(
        &self,
        id: &str,
        process: zbus::zvariant::ObjectPath<'_>,
        old_health: &str,
        new_health: &str,
    ) -> zbus::Result<()>;

    /// The last database write error; empty while writes succeed.
    #[zbus(property)]
    fn storage_error(&self) -> zbus::Result<String>;

    /// The agent's version.
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
}

/// The Process proxy: its methods and one property per row of
/// `process_properties!`, typed as the agent serves them.
macro_rules! process_proxy {
    ($($field:ident: $ty:ty = $name:literal, $json:literal, $absent:expr, $shown:ident, $announced:literal;)*) => {
        #[proxy(
            interface = "org.corral.Supervisor1.Process",
            default_service = "org.corral.Supervisor1"
        )]
        pub trait Process {
            #[zbus(allow_interactive_auth)]
            fn stop(&self) -> zbus::Result<()>;
            #[zbus(allow_interactive_auth)]
            fn kill(&self, signal: i32) -> zbus::Result<()>;
            #[zbus(allow_interactive_auth)]
            fn restart(&self) -> zbus::Result<()>;
            #[zbus(allow_interactive_auth)]
            fn remove(&self) -> zbus::Result<()>;
            #[zbus(allow_interactive_auth)]
            fn open_terminal(&self) -> zbus::Result<zbus::zvariant::OwnedFd>;
            #[zbus(allow_interactive_auth)]
            fn send_input(&self, data: &[u8]) -> zbus::Result<()>;
            fn untrack(&self) -> zbus::Result<()>;

            $(
                #[zbus(property, name = $name)]
                fn $field(&self) -> zbus::Result<<$ty as WireValue>::Wire>;
            )*
        }
    };
}

process_properties!(process_proxy);
