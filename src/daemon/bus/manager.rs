//! `org.corral.Supervisor1.Manager` at `/org/corral/Supervisor1`.

use std::collections::HashMap;

use zbus::interface;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue, Value};

use super::gone;
use crate::api::{self, Error, Filter, StartSpec};
use crate::daemon::supervisor::{Command, Handle, Reply};

pub struct Manager {
    handle: Handle,
    storage: tokio::sync::watch::Receiver<Option<String>>,
}

impl Manager {
    pub fn new(handle: Handle, storage: tokio::sync::watch::Receiver<Option<String>>) -> Self {
        Manager { handle, storage }
    }

    /// StopMatching and RemoveMatching: decode the filter, ask, answer.
    async fn matching(
        &self,
        filter_dict: HashMap<String, OwnedValue>,
        make: impl FnOnce(Filter, Reply<Vec<String>>) -> Command,
    ) -> Result<Vec<String>, Error> {
        let filter = filter(filter_dict)?;
        Ok(self
            .handle
            .ask(|reply| make(filter, reply))
            .await
            .ok_or_else(gone)??)
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
        spec: HashMap<String, OwnedValue>,
    ) -> Result<(String, OwnedObjectPath), Error> {
        let spec = Box::new(StartSpec::from_dict(spec).map_err(Error::InvalidArgument)?);
        let id = self
            .handle
            .ask(|reply| Command::Start { spec, reply })
            .await
            .ok_or_else(gone)??;
        let path =
            OwnedObjectPath::try_from(api::process_path(&id)).map_err(|e| Error::ZBus(e.into()))?;
        Ok((id, path))
    }

    /// List(a{sv} filter) -> aa{sv}
    async fn list(
        &self,
        filter_dict: HashMap<String, OwnedValue>,
    ) -> Result<Vec<HashMap<String, Value<'static>>>, Error> {
        let filter = filter(filter_dict)?;
        let views = self
            .handle
            .ask(|reply| Command::List { filter, reply })
            .await
            .ok_or_else(gone)?;
        Ok(views.iter().map(|v| v.to_dict()).collect())
    }

    /// StopMatching(a{sv} filter) -> as
    async fn stop_matching(
        &self,
        filter_dict: HashMap<String, OwnedValue>,
    ) -> Result<Vec<String>, Error> {
        self.matching(filter_dict, |filter, reply| Command::StopMatching {
            filter,
            reply,
        })
        .await
    }

    /// RemoveMatching(a{sv} filter) -> as
    async fn remove_matching(
        &self,
        filter_dict: HashMap<String, OwnedValue>,
    ) -> Result<Vec<String>, Error> {
        self.matching(filter_dict, |filter, reply| Command::RemoveMatching {
            filter,
            reply,
        })
        .await
    }

    /// Events(s id, u limit) -> a(tsss)
    async fn events(
        &self,
        id: String,
        limit: u32,
    ) -> Result<Vec<(u64, String, String, String)>, Error> {
        let id = Some(id).filter(|s| !s.is_empty());
        let limit = if limit == 0 { 1000 } else { limit.min(100_000) };
        let rows = self
            .handle
            .ask(|reply| Command::Events { id, limit, reply })
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
        id: String,
        lines: u32,
        since_us: u64,
    ) -> Result<Vec<(u64, String, String)>, Error> {
        let lines = self
            .handle
            .ask(|reply| Command::Logs {
                id,
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
