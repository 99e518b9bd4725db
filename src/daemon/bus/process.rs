//! `org.corral.Supervisor1.Process`, one object per process. Properties
//! come from the last view the supervisor published (exact for state),
//! refreshed through the supervisor when the usage in it is older than 1 s.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use zbus::interface;

use super::gone;
use crate::api::{Error, ProcessView};
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

    #[zbus(property)]
    async fn id(&self) -> String {
        self.id.clone()
    }
    #[zbus(property)]
    async fn name(&self) -> String {
        self.view().await.name
    }
    #[zbus(property)]
    async fn command(&self) -> Vec<String> {
        self.view().await.command
    }
    #[zbus(property)]
    async fn working_directory(&self) -> String {
        self.view().await.working_directory
    }
    #[zbus(property)]
    async fn workspace(&self) -> String {
        self.view().await.workspace
    }
    #[zbus(property)]
    async fn session(&self) -> String {
        self.view().await.session
    }
    #[zbus(property)]
    async fn labels(&self) -> HashMap<String, String> {
        self.view().await.labels.into_iter().collect()
    }
    #[zbus(property)]
    async fn state(&self) -> String {
        self.view().await.state.as_str().to_string()
    }
    #[zbus(property, name = "MainPID")]
    async fn main_pid(&self) -> u32 {
        self.view().await.main_pid
    }
    #[zbus(property)]
    async fn unit(&self) -> String {
        self.view().await.unit
    }
    #[zbus(property)]
    async fn control_group(&self) -> String {
        self.view().await.control_group
    }
    #[zbus(property)]
    async fn exit_code(&self) -> i32 {
        self.view().await.exit_code
    }
    #[zbus(property)]
    async fn exit_signal(&self) -> i32 {
        self.view().await.exit_signal
    }
    #[zbus(property)]
    async fn exit_reason(&self) -> String {
        self.view().await.exit_reason
    }
    #[zbus(property)]
    async fn started_at(&self) -> u64 {
        self.view().await.started_at
    }
    #[zbus(property)]
    async fn exited_at(&self) -> u64 {
        self.view().await.exited_at
    }
    #[zbus(property)]
    async fn restarts(&self) -> u32 {
        self.view().await.restarts
    }
    #[zbus(property, name = "Restart")]
    async fn restart_policy(&self) -> String {
        self.view().await.restart_policy
    }
    #[zbus(property)]
    async fn next_restart_at(&self) -> u64 {
        self.view().await.next_restart_at
    }
    #[zbus(property)]
    async fn persistent(&self) -> bool {
        self.view().await.persistent
    }
    #[zbus(property)]
    async fn memory_current(&self) -> u64 {
        self.view().await.memory_current
    }
    #[zbus(property)]
    async fn memory_peak(&self) -> u64 {
        self.view().await.memory_peak
    }
    #[zbus(property, name = "CPUUsageNSec")]
    async fn cpu_usage_nsec(&self) -> u64 {
        self.view().await.cpu_usage_nsec
    }
    #[zbus(property, name = "CPUPercent")]
    async fn cpu_percent(&self) -> f64 {
        self.view().await.cpu_percent
    }
    #[zbus(property)]
    async fn tasks_current(&self) -> u64 {
        self.view().await.tasks_current
    }
    #[zbus(property, name = "IOReadBytes")]
    async fn io_read_bytes(&self) -> u64 {
        self.view().await.io_read_bytes
    }
    #[zbus(property, name = "IOWriteBytes")]
    async fn io_write_bytes(&self) -> u64 {
        self.view().await.io_write_bytes
    }
}
