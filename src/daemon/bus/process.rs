//! `org.corral.Supervisor1.Process`, one object per process. Properties
//! come from the last view the supervisor published (exact for state),
//! refreshed through the supervisor when the usage in it is older than 1 s.

// BTreeMap and State: types in the property table's rows.
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use zbus::interface;

use super::gone;
use crate::api::{self, Error, ProcessView, State, WireValue};
use crate::daemon::supervisor::{Command, Handle};

pub struct ProcessObject {
    id: String,
    handle: Handle,
    cache: Mutex<(Instant, ProcessView)>,
}

const FRESH: Duration = Duration::from_secs(1);

impl ProcessObject {
    pub fn new(view: ProcessView, handle: Handle) -> Self {
        ProcessObject {
            id: view.id.clone(),
            handle,
            cache: Mutex::new((Instant::now(), view)),
        }
    }

    pub fn set_view(&self, view: ProcessView) {
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = (Instant::now(), view);
    }

    async fn view(&self) -> ProcessView {
        {
            let c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if c.0.elapsed() < FRESH {
                return c.1.clone();
            }
        }
        let id = self.id.clone();
        match self.handle.ask(|reply| Command::Get { id, reply }).await {
            Some(Ok(v)) => {
                self.set_view(v.clone());
                v
            }
            // Removed or shutting down: the last view is the best answer.
            _ => self
                .cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .1
                .clone(),
        }
    }

    async fn call(
        &self,
        make: impl FnOnce(String, crate::daemon::supervisor::Reply<()>) -> Command,
    ) -> Result<(), Error> {
        let id = self.id.clone();
        Ok(self
            .handle
            .ask(|reply| make(id, reply))
            .await
            .ok_or_else(gone)??)
    }
}

/// Emits the interface: its four methods and one property getter per row
/// of `api::process_properties!` (zbus wants a fn per property). Each
/// getter returns its field in D-Bus form, so the name and the type on
/// the bus are the table's.
macro_rules! process_interface {
    ($($field:ident: $ty:ty = $name:literal, $json:literal, $absent:expr, $shown:ident, $announced:literal;)*) => {
        #[interface(name = "org.corral.Supervisor1.Process")]
        impl ProcessObject {
            /// SIGTERM to every process of the scope, SIGKILL after the stop timeout;
            /// returns once the process has ended.
            async fn stop(&self) -> Result<(), Error> {
                self.call(|id, reply| Command::Stop { id, reply }).await
            }

            /// Sends `signal` to the main process and its process group.
            async fn kill(&self, signal: i32) -> Result<(), Error> {
                self.call(|id, reply| Command::Kill { id, signal, reply })
                    .await
            }

            /// Stops (if running) and starts again in a new scope; same id.
            async fn restart(&self) -> Result<(), Error> {
                self.call(|id, reply| Command::Restart { id, reply }).await
            }

            /// Stops (if running) and forgets the process; its events stay.
            async fn remove(&self) -> Result<(), Error> {
                self.call(|id, reply| Command::Remove { id, reply }).await
            }

            $(
                #[zbus(property, name = $name)]
                async fn $field(&self) -> <$ty as WireValue>::Wire {
                    self.view().await.$field.to_wire()
                }
            )*
        }
    };
}

api::process_properties!(process_interface);
