//! `org.corral.Supervisor1.Manager` at `/org/corral/Supervisor1`.

use std::collections::HashMap;

use zbus::interface;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue, Value};

use super::{gone, login, Action, Caller, Ctx};
use crate::api::{self, Error, Filter, StartSpec};
use crate::config::Mode;
use crate::daemon::supervisor::{Access, Command, Reply, RunAs};

pub struct Manager {
    ctx: Ctx,
    storage: tokio::sync::watch::Receiver<Option<String>>,
}

impl Manager {
    pub fn new(ctx: Ctx, storage: tokio::sync::watch::Receiver<Option<String>>) -> Self {
        Manager { ctx, storage }
    }

    /// StopMatching and RemoveMatching: decode the filter, check, ask.
    async fn matching(
        &self,
        hdr: &Header<'_>,
        filter_dict: HashMap<String, OwnedValue>,
        make: impl FnOnce(Filter, Access, Reply<Vec<String>>) -> Command,
    ) -> Result<Vec<String>, Error> {
        let filter = filter(filter_dict)?;
        let caller = self.ctx.auth.caller(hdr).await?;
        self.ctx.auth.require(&caller, Action::ManageOwn).await?;
        let access = self.ctx.auth.access(&caller).await;
        Ok(self
            .ctx
            .handle
            .ask(|reply| make(filter, access, reply))
            .await
            .ok_or_else(gone)??)
    }

    /// Who a new process belongs to: the agent's user (user mode), else
    /// the caller, or the spec's `User` when that is authorized.
    async fn run_as(&self, caller: &Caller, spec: &StartSpec) -> Result<RunAs, Error> {
        match (self.ctx.auth.mode(), &spec.user) {
            (Mode::User, None) => Ok(RunAs {
                uid: caller.uid,
                credentials: None,
                login_env: None,
                home: None,
            }),
            (Mode::User, Some(_)) => Err(Error::InvalidArgument(
                "User: only the system agent (corrald --system) starts processes as another user"
                    .into(),
            )),
            (Mode::System, None) => {
                login::run_as(caller.uid.to_string(), Some(caller.groups.clone())).await
            }
            (Mode::System, Some(user)) => {
                self.ctx.auth.require(caller, Action::StartAsUser).await?;
                login::run_as(user.clone(), None).await
            }
        }
    }
}

fn filter(dict: HashMap<String, OwnedValue>) -> Result<Filter, Error> {
    Filter::from_dict(dict).map_err(Error::InvalidArgument)
}

#[interface(name = "org.corral.Supervisor1.Manager")]
impl Manager {
    /// Start(a{sv} spec) -> (s id, o process)
    async fn start(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        spec: HashMap<String, OwnedValue>,
    ) -> Result<(String, OwnedObjectPath), Error> {
        let spec = Box::new(StartSpec::from_dict(spec).map_err(Error::InvalidArgument)?);
        let caller = self.ctx.auth.caller(&hdr).await?;
        self.ctx.auth.require(&caller, Action::ManageOwn).await?;
        let run_as = self.run_as(&caller, &spec).await?;
        let id = self
            .ctx
            .handle
            .ask(|reply| Command::Start {
                spec,
                run_as,
                reply,
            })
            .await
            .ok_or_else(gone)??;
        let path =
            OwnedObjectPath::try_from(api::process_path(&id)).map_err(|e| Error::ZBus(e.into()))?;
        Ok((id, path))
    }

    /// List(a{sv} filter) -> aa{sv}
    async fn list(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        filter_dict: HashMap<String, OwnedValue>,
    ) -> Result<Vec<HashMap<String, Value<'static>>>, Error> {
        let filter = filter(filter_dict)?;
        let caller = self.ctx.auth.caller(&hdr).await?;
        let access = self.ctx.auth.access(&caller).await;
        let views = self
            .ctx
            .handle
            .ask(|reply| Command::List {
                filter,
                access,
                reply,
            })
            .await
            .ok_or_else(gone)?;
        Ok(views.iter().map(|v| v.to_dict()).collect())
    }

    /// StopMatching(a{sv} filter) -> as
    async fn stop_matching(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        filter_dict: HashMap<String, OwnedValue>,
    ) -> Result<Vec<String>, Error> {
        self.matching(&hdr, filter_dict, |filter, access, reply| {
            Command::StopMatching {
                filter,
                access,
                reply,
            }
        })
        .await
    }

    /// RemoveMatching(a{sv} filter) -> as
    async fn remove_matching(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        filter_dict: HashMap<String, OwnedValue>,
    ) -> Result<Vec<String>, Error> {
        self.matching(&hdr, filter_dict, |filter, access, reply| {
            Command::RemoveMatching {
                filter,
                access,
                reply,
            }
        })
        .await
    }

    /// Events(s id, u limit) -> a(tsss)
    async fn events(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        id: String,
        limit: u32,
    ) -> Result<Vec<(u64, String, String, String)>, Error> {
        let id = Some(id).filter(|s| !s.is_empty());
        let limit = if limit == 0 { 1000 } else { limit.min(100_000) };
        let caller = self.ctx.auth.caller(&hdr).await?;
        let access = self.ctx.auth.access(&caller).await;
        let rows = self
            .ctx
            .handle
            .ask(|reply| Command::Events {
                id,
                access,
                limit,
                reply,
            })
            .await
            .ok_or_else(gone)??;
        Ok(rows
            .into_iter()
            .map(|(at, pid, kind, detail)| (at, pid.to_string(), kind, detail))
            .collect())
    }

    /// Logs(s id, u lines, t since_us) -> a(tss)
    async fn logs(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        id: String,
        lines: u32,
        since_us: u64,
    ) -> Result<Vec<(u64, String, String)>, Error> {
        let caller = self.ctx.auth.caller(&hdr).await?;
        let access = self.ctx.auth.access(&caller).await;
        let lines = self
            .ctx
            .handle
            .ask(|reply| Command::Logs {
                id,
                access,
                lines,
                since_us,
                reply,
            })
            .await
            .ok_or_else(gone)??;
        Ok(lines
            .into_iter()
            .map(|l| (l.ts_us, l.stream.to_string(), l.text))
            .collect())
    }

    #[zbus(signal)]
    pub async fn process_state_changed(
        emitter: &SignalEmitter<'_>,
        id: &str,
        process: ObjectPath<'_>,
        old_state: &str,
        new_state: &str,
    ) -> zbus::Result<()>;

    /// The last error writing the database, empty while writes succeed.
    /// Supervision goes on while it is set; state is rewritten once writes
    /// work again.
    #[zbus(property)]
    fn storage_error(&self) -> String {
        self.storage.borrow().clone().unwrap_or_default()
    }

    #[zbus(property)]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }
}
