//! The agent's D-Bus errors: one enum, one name each, stable forever.
//! Every variant carries a human message; clients print it as is.

/// Errors returned over D-Bus as `org.corral.Supervisor1.Error.<Variant>`.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.corral.Supervisor1.Error")]
pub enum Error {
    /// A transport error on the client side (never sent by the agent).
    #[zbus(error)]
    ZBus(zbus::Error),
    /// No process with that id (or it was removed).
    NotFound(String),
    /// The request itself is wrong: a missing or unknown key, a wrong type,
    /// an empty command, a relative or missing directory, a bad signal.
    InvalidArgument(String),
    /// The caller may not do this (system mode, polkit said no).
    AccessDenied(String),
    /// The command could not be started (executable missing, not
    /// executable, cwd vanished): the OS error is in the message.
    SpawnFailed(String),
    /// systemd refused or failed an operation; its error name is in the message.
    SystemdError(String),
    /// The process is in a state that does not allow this right now
    /// (e.g. Restart while it is still starting).
    Busy(String),
    /// The agent could not record the request (its database failed); nothing
    /// was started or changed.
    StorageFailed(String),
    /// A configured cap was reached (`max_processes_per_owner`).
    LimitExceeded(String),
    /// This host cannot do it: a limit whose cgroup controller is not
    /// delegated here, the freezer without cgroup v2.
    NotSupported(String),
    /// The process has no terminal to attach to or send to: started
    /// without `Tty` (its stdin is /dev/null), or not running.
    NoTerminal(String),
    /// `Track` refused the process (PID 1, a kernel thread, corral's own,
    /// already supervised, another user's).
    NotTrackable(String),
    /// A project file (`corral.toml`) that cannot be used: unreadable,
    /// malformed, an unknown key, a cycle, a missing env file; the message
    /// names the file, line and key.
    InvalidProject(String),
}

impl Error {
    /// The short name (`NotFound`, …) of a D-Bus error, for tests and CLI output.
    pub fn short_name(&self) -> &'static str {
        match self {
            Error::ZBus(_) => "Transport",
            Error::NotFound(_) => "NotFound",
            Error::InvalidArgument(_) => "InvalidArgument",
            Error::AccessDenied(_) => "AccessDenied",
            Error::SpawnFailed(_) => "SpawnFailed",
            Error::SystemdError(_) => "SystemdError",
            Error::Busy(_) => "Busy",
            Error::StorageFailed(_) => "StorageFailed",
            Error::LimitExceeded(_) => "LimitExceeded",
            Error::NotSupported(_) => "NotSupported",
            Error::NoTerminal(_) => "NoTerminal",
            Error::NotTrackable(_) => "NotTrackable",
            Error::InvalidProject(_) => "InvalidProject",
        }
    }

    /// The message without the error name.
    pub fn message(&self) -> String {
        match self {
            Error::ZBus(zbus::Error::MethodError(name, Some(msg), _)) => {
                format!("{msg} ({name})")
            }
            Error::ZBus(e) => e.to_string(),
            Error::NotFound(m)
            | Error::InvalidArgument(m)
            | Error::AccessDenied(m)
            | Error::SpawnFailed(m)
            | Error::SystemdError(m)
            | Error::Busy(m)
            | Error::StorageFailed(m)
            | Error::LimitExceeded(m)
            | Error::NotSupported(m)
            | Error::NotTrackable(m)
            | Error::InvalidProject(m) => m.clone(),
            Error::NoTerminal(m) => m.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::DBusError;

    #[test]
    fn error_names_are_stable() {
        let cases = [
            (Error::NotFound(String::new()), "NotFound"),
            (Error::InvalidArgument(String::new()), "InvalidArgument"),
            (Error::AccessDenied(String::new()), "AccessDenied"),
            (Error::SpawnFailed(String::new()), "SpawnFailed"),
            (Error::SystemdError(String::new()), "SystemdError"),
            (Error::Busy(String::new()), "Busy"),
            (Error::StorageFailed(String::new()), "StorageFailed"),
            (Error::NotSupported(String::new()), "NotSupported"),
            (Error::NoTerminal(String::new()), "NoTerminal"),
            (Error::NotTrackable(String::new()), "NotTrackable"),
            (Error::InvalidProject(String::new()), "InvalidProject"),
        ];
        for (err, short) in cases {
            assert_eq!(
                err.name().as_str(),
                format!("org.corral.Supervisor1.Error.{short}")
            );
            assert_eq!(err.short_name(), short);
        }
    }
}
