//! Where the terminal of a PTY process is served: the shim's attach
//! socket of the current run (`shim::terminal::socket_path`). The actor
//! only names it; the bus connects (`OpenTerminal`, `SendInput`), so a
//! slow shim never holds up the actor.

use std::path::PathBuf;

use super::{Access, Error, Supervisor};
use crate::api::State;

impl Supervisor {
    /// The socket of `id`'s terminal, if it runs on one now.
    pub(super) fn terminal_socket(&self, id: &str, access: Access) -> Result<PathBuf, Error> {
        let pid = self.find(id, access)?;
        let p = self.procs.get(&pid).ok_or_else(|| super::not_found(pid))?;
        if !p.config.tty {
            return Err(Error::NoTerminal(format!(
                "process {pid} has no terminal (started without Tty): its stdin is /dev/null"
            )));
        }
        if p.state() != State::Running {
            return Err(Error::NoTerminal(format!(
                "process {pid} is {}: its terminal exists only while it runs",
                p.state().as_str()
            )));
        }
        let dir = self.logs_dir.join(pid.to_string());
        Ok(crate::shim::terminal::socket_path(&dir, p.run.id.0))
    }
}
