//! `org.corral.Supervisor1.Process`, one object per process. Properties
//! come from the last view the supervisor published (exact for state),
//! refreshed through the supervisor when the usage in it is older than 1 s.

// BTreeMap and State: types in the property table's rows.
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use zbus::interface;
use zbus::message::Header;

use super::{gone, Action, Ctx};
use crate::api::{self, Error, ProcessView, State, WireValue, UNSET};
use crate::config::Mode;
use crate::daemon::supervisor::{Access, Command};

pub struct ProcessObject {
    id: String,
    ctx: Ctx,
    cache: Mutex<(Instant, ProcessView)>,
}

/// What a process of another user looks like to a caller without
/// manage-all: exactly what zbus answers for a path that does not exist.
fn unknown(path: &str) -> zbus::fdo::Error {
    zbus::fdo::Error::UnknownObject(format!("Unknown object '{path}'"))
}

/// What a process method answers with: corral's own errors, or — for a
/// process the caller may not see — the bus's own `UnknownObject` under
/// its standard name, as for a path that does not exist (zbus would send
/// an `fdo::Error` wrapped in `api::Error` under its generic name).
#[derive(Debug)]
pub enum MethodError {
    Corral(Error),
    Hidden(zbus::fdo::Error),
}

impl From<Error> for MethodError {
    fn from(e: Error) -> Self {
        MethodError::Corral(e)
    }
}

impl From<zbus::Error> for MethodError {
    fn from(e: zbus::Error) -> Self {
        MethodError::Corral(Error::ZBus(e))
    }
}

impl zbus::DBusError for MethodError {
    fn create_reply(&self, hdr: &Header<'_>) -> zbus::Result<zbus::message::Message> {
        match self {
            MethodError::Corral(e) => e.create_reply(hdr),
            MethodError::Hidden(e) => e.create_reply(hdr),
        }
    }

    fn name(&self) -> zbus::names::ErrorName<'_> {
        match self {
            MethodError::Corral(e) => e.name(),
            MethodError::Hidden(e) => e.name(),
        }
    }

    fn description(&self) -> Option<&str> {
        match self {
            MethodError::Corral(e) => e.description(),
            MethodError::Hidden(e) => e.description(),
        }
    }
}

/// Properties left out of broadcast signals (InterfacesAdded) in system
/// mode, where every user hears them: they may hold secrets.
const PRIVATE: [&str; 3] = ["Command", "WorkingDirectory", "Labels"];

const FRESH: Duration = Duration::from_secs(1);

impl ProcessObject {
    pub fn new(view: ProcessView, ctx: Ctx) -> Self {
        ProcessObject {
            id: view.id.clone(),
            ctx,
            cache: Mutex::new((Instant::now(), view)),
        }
    }

    fn owner_uid(&self) -> u32 {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).1.owner
    }

    /// May the sender of `hdr` see this process? (Reading asks polkit
    /// nothing for one's own, and never interactively.)
    async fn visible(&self, hdr: &Header<'_>) -> zbus::fdo::Result<()> {
        let auth = &self.ctx.auth;
        if auth.mode() == Mode::User {
            return Ok(());
        }
        let caller = auth
            .caller(hdr)
            .await
            .map_err(|e| zbus::fdo::Error::AccessDenied(e.message()))?;
        if caller.uid == self.owner_uid() || auth.check(&caller, Action::ManageAll, false).await {
            Ok(())
        } else {
            Err(unknown(&api::process_path(&self.id)))
        }
    }

    /// The access a method call on this process gets, or the error that
    /// answers it: another user's process does not exist for the caller
    /// unless manage-all is granted (interactively where allowed); one's
    /// own needs manage-own.
    async fn access(&self, hdr: &Header<'_>) -> Result<Access, MethodError> {
        let auth = &self.ctx.auth;
        let caller = auth.caller(hdr).await?;
        let Some(access) = auth.access_to(&caller, self.owner_uid()).await else {
            return Err(MethodError::Hidden(unknown(&api::process_path(&self.id))));
        };
        auth.require(&caller, Action::ManageOwn).await?;
        Ok(access)
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
        let access = Access::All; // checked by the caller of view()
        match self
            .ctx
            .handle
            .ask(|reply| Command::Get { id, access, reply })
            .await
        {
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

    /// A fresh connection to the shim serving this process's terminal
    /// (README "Terminals"); the caller must be allowed to manage it.
    async fn terminal(
        &self,
        hdr: &Header<'_>,
    ) -> Result<std::os::unix::net::UnixStream, MethodError> {
        let access = self.access(hdr).await?;
        let id = self.id.clone();
        let path = self
            .ctx
            .handle
            .ask(|reply| Command::Terminal { id, access, reply })
            .await
            .ok_or_else(gone)?
            .map_err(Error::from)?;
        let no_terminal = |e: std::io::Error| {
            Error::NoTerminal(format!(
                "cannot reach the terminal of process {}: {e}",
                self.id
            ))
        };
        let stream = tokio::net::UnixStream::connect(&path)
            .await
            .map_err(no_terminal)?;
        let stream = stream.into_std().map_err(no_terminal)?;
        // The client gets an ordinary blocking socket.
        stream.set_nonblocking(false).map_err(no_terminal)?;
        Ok(stream)
    }

    async fn call(
        &self,
        hdr: &Header<'_>,
        make: impl FnOnce(String, Access, crate::daemon::supervisor::Reply<()>) -> Command,
    ) -> Result<(), MethodError> {
        let access = self.access(hdr).await?;
        let id = self.id.clone();
        Ok(self
            .ctx
            .handle
            .ask(|reply| make(id, access, reply))
            .await
            .ok_or_else(gone)?
            .map_err(Error::from)?)
    }
}

/// Emits the interface: its methods and one property getter per row
/// of `api::process_properties!` (zbus wants a fn per property). Each
/// getter returns its field in D-Bus form, so the name and the type on
/// the bus are the table's.
macro_rules! process_interface {
    ($($field:ident: $ty:ty = $name:literal, $json:literal, $absent:expr, $shown:ident, $announced:literal;)*) => {
        #[interface(name = "org.corral.Supervisor1.Process")]
        impl ProcessObject {
            /// SIGTERM to every process of the scope, SIGKILL after the stop timeout;
            /// returns once the process has ended.
            async fn stop(&self, #[zbus(header)] hdr: Header<'_>) -> Result<(), MethodError> {
                self.call(&hdr, |id, access, reply| Command::Stop { id, access, reply })
                    .await
            }

            /// Sends `signal` to the main process and its process group.
            async fn kill(&self, #[zbus(header)] hdr: Header<'_>, signal: i32) -> Result<(), MethodError> {
                self.call(&hdr, |id, access, reply| Command::Kill {
                    id,
                    access,
                    signal,
                    reply,
                })
                .await
            }

            /// Stops (if running) and starts again in a new scope; same id.
            async fn restart(&self, #[zbus(header)] hdr: Header<'_>) -> Result<(), MethodError> {
                self.call(&hdr, |id, access, reply| Command::Restart { id, access, reply })
                    .await
            }

            /// Stops (if running) and forgets the process; its events stay.
            async fn remove(&self, #[zbus(header)] hdr: Header<'_>) -> Result<(), MethodError> {
                self.call(&hdr, |id, access, reply| Command::Remove { id, access, reply })
                    .await
            }

            /// Changes limits of the running scope at once and keeps them for
            /// later runs (README "Live limits"); keys not given stay.
            async fn set_limits(
                &self,
                #[zbus(header)] hdr: Header<'_>,
                limits: std::collections::HashMap<String, zbus::zvariant::OwnedValue>,
            ) -> Result<(), MethodError> {
                let limits = api::Limits::from_dict(limits).map_err(Error::InvalidArgument)?;
                self.call(&hdr, |id, access, reply| Command::SetLimits {
                    id,
                    access,
                    limits,
                    reply,
                })
                .await
            }

            /// A socket connected to the process's terminal, speaking the
            /// framed protocol of `shim::terminal` (README "Terminals").
            async fn open_terminal(
                &self,
                #[zbus(header)] hdr: Header<'_>,
            ) -> Result<zbus::zvariant::OwnedFd, MethodError> {
                let stream = self.terminal(&hdr).await?;
                Ok(std::os::fd::OwnedFd::from(stream).into())
            }

            /// Writes `data` to the process's terminal, whoever holds its
            /// keyboard (at most 64 KiB).
            async fn send_input(
                &self,
                #[zbus(header)] hdr: Header<'_>,
                data: Vec<u8>,
            ) -> Result<(), MethodError> {
                use crate::shim::terminal::{Frame, MAX_PAYLOAD};
                if data.len() > MAX_PAYLOAD {
                    return Err(Error::InvalidArgument(format!(
                        "SendInput: {} bytes is over the {MAX_PAYLOAD}-byte limit",
                        data.len()
                    ))
                    .into());
                }
                let stream = self.terminal(&hdr).await?;
                let frame = Frame::Send(data).encode();
                tokio::task::spawn_blocking(move || {
                    use std::io::Write;
                    // A wedged shim must not keep the call (and a thread) forever.
                    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
                    (&stream).write_all(&frame)
                })
                .await
                .map_err(|e| Error::NoTerminal(e.to_string()))?
                .map_err(|e| Error::NoTerminal(format!("writing to the terminal: {e}")))?;
                Ok(())
            }

            /// Forgets the process without stopping it: it keeps running,
            /// in a scope corral no longer owns.
            async fn untrack(&self, #[zbus(header)] hdr: Header<'_>) -> Result<(), MethodError> {
                self.call(&hdr, |id, access, reply| Command::Untrack { id, access, reply })
                    .await
            }

            $(
                #[zbus(property, name = $name)]
                async fn $field(
                    &self,
                    #[zbus(header)] hdr: Option<Header<'_>>,
                ) -> zbus::fdo::Result<<$ty as WireValue>::Wire> {
                    match &hdr {
                        Some(hdr) => self.visible(hdr).await?,
                        // No caller: the value goes into a signal that
                        // every user of the system bus hears.
                        None if self.ctx.auth.mode() == Mode::System
                            && PRIVATE.contains(&$name) =>
                        {
                            let absent: $ty = $absent;
                            return Ok(absent.to_wire());
                        }
                        None => {}
                    }
                    Ok(self.view().await.$field.to_wire())
                }
            )*
        }
    };
}

api::process_properties!(process_interface);
