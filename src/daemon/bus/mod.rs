//! The D-Bus face of the agent: the manager and per-process objects, the
//! ObjectManager, and the task that turns supervisor events into objects
//! and signals. Decodes and checks arguments, forwards typed commands,
//! maps errors to `org.corral.Supervisor1.Error.*`. No supervision here.

mod auth;
mod login;
mod manager;
mod objects;
mod process;
mod workspace;

use zbus::object_server::SignalEmitter;
use zbus::zvariant::{ObjectPath, Value};

use crate::api::{self, Error as BusError};
use crate::daemon::supervisor::{self, Event, Handle};

pub use auth::{Action, Auth, Caller};
pub use manager::Manager;
pub use process::ProcessObject;

/// What every object of the agent needs: the supervisor and the judge.
#[derive(Clone)]
pub struct Ctx {
    pub handle: Handle,
    pub auth: Auth,
    pub projects: crate::daemon::projects::Projects,
}

impl From<supervisor::Error> for BusError {
    fn from(e: supervisor::Error) -> Self {
        use supervisor::Error as E;
        match e {
            E::NotFound(m) => BusError::NotFound(m),
            E::InvalidArgument(m) => BusError::InvalidArgument(m),
            E::SpawnFailed(m) => BusError::SpawnFailed(m),
            E::Systemd(m) => BusError::SystemdError(m),
            E::Busy(m) => BusError::Busy(m),
            E::Storage(m) => BusError::StorageFailed(m),
            E::LimitExceeded(m) => BusError::LimitExceeded(m),
            E::NotSupported(m) => BusError::NotSupported(m),
            E::NoTerminal(m) => BusError::NoTerminal(m),
            E::NotTrackable(m) => BusError::NotTrackable(m),
            E::InvalidProject(m) => BusError::InvalidProject(m),
        }
    }
}

/// Who a system-mode process of `uid` runs as: their login's ids and
/// variables (for operations that act for them later, such as a project
/// bring-up the agent resumes at start).
pub(crate) async fn run_as_uid(uid: u32) -> Result<supervisor::RunAs, supervisor::Error> {
    login::run_as(uid.to_string(), None)
        .await
        .map_err(|e| supervisor::Error::InvalidArgument(e.message()))
}

/// Emits each project step as `ProjectStep` (user mode: the bus is the
/// user's own).
pub async fn publish_project_steps(
    conn: zbus::Connection,
    mut steps: tokio::sync::mpsc::UnboundedReceiver<(u32, String, crate::daemon::projects::Step)>,
) {
    while let Some((_, workspace, (process, action, detail))) = steps.recv().await {
        let Ok(emitter) = SignalEmitter::new(&conn, api::MANAGER_PATH) else {
            return;
        };
        let sent = Manager::project_step(&emitter, &workspace, &process, &action, &detail).await;
        if let Err(e) = sent {
            tracing::debug!("ProjectStep not sent: {e}");
        }
    }
}

/// The agent stopped answering (shutting down).
pub(crate) fn gone() -> BusError {
    BusError::Busy("the agent is shutting down".into())
}

/// Serves the manager and the ObjectManager at their path, and announces
/// changes of the storage health as PropertiesChanged of `StorageError`.
pub async fn serve(
    conn: &zbus::Connection,
    ctx: Ctx,
    mut storage: tokio::sync::watch::Receiver<Option<String>>,
) -> zbus::Result<()> {
    let server = conn.object_server();
    // Our own ObjectManager: GetManagedObjects shows each caller only
    // what it may see (zbus's would show every object to everyone).
    server
        .at(api::MANAGER_PATH, objects::Objects::new(ctx.clone()))
        .await?;
    server
        .at(api::MANAGER_PATH, Manager::new(ctx, storage.clone()))
        .await?;
    let iface = server.interface::<_, Manager>(api::MANAGER_PATH).await?;
    tokio::spawn(async move {
        while storage.changed().await.is_ok() {
            let emitter = iface.signal_emitter();
            if let Err(e) = iface.get().await.storage_error_changed(emitter).await {
                tracing::warn!("announcing the storage state: {e}");
            }
        }
    });
    Ok(())
}

/// Applies supervisor events to the object tree, in order: adds and
/// removes process objects (ObjectManager signals follow) and emits
/// PropertiesChanged + ProcessStateChanged.
pub async fn publish_events(
    conn: zbus::Connection,
    ctx: Ctx,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
) {
    let server = conn.object_server();
    let mut workspaces = std::collections::BTreeSet::new();
    if let Err(e) = workspace::sync(&conn, &ctx, &mut workspaces).await {
        tracing::warn!("publishing the workspaces on the bus: {e}");
    }
    let mut membership = false;
    while let Some(ev) = rx.recv().await {
        // Processes come and go with their workspaces.
        membership |= matches!(ev, Event::Added(_) | Event::Removed(_));
        let r: zbus::Result<()> = async {
            match ev {
                Event::Added(view) => {
                    let path = api::process_path(&view.id);
                    server
                        .at(path.as_str(), ProcessObject::new(view, ctx.clone()))
                        .await?;
                }
                Event::Removed(id) => {
                    let path = api::process_path(&id);
                    server.remove::<ProcessObject, _>(path.as_str()).await?;
                }
                Event::HealthChanged { id, old, new } => {
                    let obj =
                        ObjectPath::try_from(api::process_path(&id)).map_err(zbus::Error::from)?;
                    let manager = SignalEmitter::new(&conn, api::MANAGER_PATH)?;
                    Manager::health_changed(&manager, &id, obj, old.as_str(), new.as_str()).await?;
                }
                Event::Changed { view, old } => {
                    let path = api::process_path(&view.id);
                    let iface = match server.interface::<_, ProcessObject>(path.as_str()).await {
                        Ok(i) => i,
                        Err(_) => {
                            // Known to the supervisor from start-up: publish now.
                            server
                                .at(path.as_str(), ProcessObject::new(view.clone(), ctx.clone()))
                                .await?;
                            server.interface::<_, ProcessObject>(path.as_str()).await?
                        }
                    };
                    iface.get().await.set_view(view.clone());
                    // The properties the table marks as announced.
                    let changed: std::collections::HashMap<&str, Value<'_>> = api::PROPERTIES
                        .iter()
                        .filter(|p| p.announced)
                        .map(|p| (p.name, (p.get)(&view)))
                        .collect();
                    let emitter = iface.signal_emitter();
                    zbus::fdo::Properties::properties_changed(
                        emitter,
                        zbus::names::InterfaceName::from_static_str_unchecked(
                            api::PROCESS_INTERFACE,
                        ),
                        changed,
                        std::borrow::Cow::Borrowed(&[]),
                    )
                    .await?;
                    let obj = ObjectPath::try_from(path.as_str()).map_err(zbus::Error::from)?;
                    let manager = SignalEmitter::new(&conn, api::MANAGER_PATH)?;
                    Manager::process_state_changed(
                        &manager,
                        &view.id,
                        obj,
                        old.as_str(),
                        view.state.as_str(),
                    )
                    .await?;
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = r {
            tracing::warn!("publishing a process event on the bus: {e}");
        }
        // Once per burst, when no event waits: a sync asks the supervisor
        // for every workspace (a walk of every process), so a burst of
        // adds costs one walk, not one per process.
        if membership && rx.is_empty() {
            membership = false;
            if let Err(e) = workspace::sync(&conn, &ctx, &mut workspaces).await {
                tracing::warn!("publishing the workspaces on the bus: {e}");
            }
        }
    }
}

/// Publishes every process the supervisor knows at start-up.
pub async fn publish_existing(conn: &zbus::Connection, ctx: &Ctx) -> zbus::Result<()> {
    let views = ctx
        .handle
        .ask(|reply| supervisor::Command::List {
            filter: api::Filter::default(),
            access: supervisor::Access::All,
            reply,
        })
        .await
        .unwrap_or_default();
    let server = conn.object_server();
    for v in views {
        let path = api::process_path(&v.id);
        server
            .at(path.as_str(), ProcessObject::new(v, ctx.clone()))
            .await?;
    }
    Ok(())
}
