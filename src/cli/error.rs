//! What can go wrong in `corralctl` after its arguments parsed, and how
//! each failure reads on stderr and which exit code it gives. Agent errors
//! are recognised by their D-Bus name through `api::Error`, so the message
//! the agent wrote is shown as is, with its short name for scripts.

use crate::api;

/// Bus the CLI talks on, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    Session,
    System,
}

impl Bus {
    fn name(self) -> &'static str {
        match self {
            Bus::Session => "session",
            Bus::System => "system",
        }
    }

    fn how_to_start(self) -> &'static str {
        match self {
            Bus::Session => "corrald --user",
            Bus::System => "systemctl start corrald",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The agent answered with one of its own errors.
    #[error("{message} ({short})")]
    Agent {
        short: &'static str,
        message: String,
    },
    /// Another D-Bus error (bus policy, an older agent without a method, …).
    #[error("{message} ({name})")]
    Bus { name: String, message: String },
    #[error("corrald is not running on the {} bus (start it with: {})", .0.name(), .0.how_to_start())]
    NotRunning(Bus),
    #[error("cannot connect to the {} bus: {source}", .bus.name())]
    Connect { bus: Bus, source: zbus::Error },
    #[error("cannot reach the {} bus of {host} through ssh and systemd-stdio-bridge: {source}", .bus.name())]
    Remote {
        host: String,
        bus: Bus,
        source: Box<zbus::Error>,
    },
    #[error("D-Bus: {0}")]
    Transport(zbus::Error),
    #[error("no process with id or name '{0}'")]
    NoSuchProcess(String),
    #[error("name '{name}' is ambiguous: {candidates}; use an id")]
    Ambiguous { name: String, candidates: String },
    /// A flag value that parsed but cannot be used (exit code 2, like clap's).
    #[error("{0}")]
    Usage(String),
    #[error("cannot write output: {0}")]
    Output(std::io::Error),
    /// Several operations failed; each was reported as it happened.
    #[error("{0} of the operations failed")]
    Partial(usize),
}

pub type Result<T> = std::result::Result<T, CliError>;

/// D-Bus daemon errors that mean "nobody owns org.corral.Supervisor1".
const NO_OWNER: [&str; 2] = [
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
];

impl CliError {
    /// Classifies an error of a call to the agent on `bus`.
    pub fn from_call(bus: Bus, e: zbus::Error) -> CliError {
        if let Some(name) = error_name(&e) {
            if NO_OWNER.contains(&name.as_str()) {
                return CliError::NotRunning(bus);
            }
        }
        match api::Error::from(e) {
            api::Error::ZBus(e) => match e {
                zbus::Error::MethodError(name, msg, _) => CliError::Bus {
                    message: msg.unwrap_or_else(|| "no message".into()),
                    name: name.to_string(),
                },
                zbus::Error::FDO(fdo) => {
                    let name = zbus::DBusError::name(fdo.as_ref()).to_string();
                    let message = zbus::DBusError::description(fdo.as_ref())
                        .unwrap_or("no message")
                        .to_string();
                    CliError::Bus { name, message }
                }
                other => CliError::Transport(other),
            },
            agent => CliError::Agent {
                short: agent.short_name(),
                message: agent.message(),
            },
        }
    }

    /// The process exit code: 2 for usage errors (as clap), 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }
}

fn error_name(e: &zbus::Error) -> Option<String> {
    match e {
        zbus::Error::MethodError(name, _, _) => Some(name.to_string()),
        zbus::Error::FDO(fdo) => Some(zbus::DBusError::name(fdo.as_ref()).to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_errors_read_as_message_and_short_name() {
        let e = zbus::Error::FDO(Box::new(zbus::fdo::Error::ServiceUnknown(
            "The name is not activatable".into(),
        )));
        let err = CliError::from_call(Bus::Session, e);
        assert_eq!(
            err.to_string(),
            "corrald is not running on the session bus (start it with: corrald --user)"
        );
        let err = CliError::from_call(
            Bus::Session,
            zbus::Error::FDO(Box::new(zbus::fdo::Error::AccessDenied("policy".into()))),
        );
        assert_eq!(
            err.to_string(),
            "policy (org.freedesktop.DBus.Error.AccessDenied)"
        );
        assert_eq!(err.exit_code(), 1);
        assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
    }

    fn method_error(name: &str, msg: &str) -> zbus::Error {
        let reply = zbus::Message::method_call("/", "Start")
            .unwrap()
            .build(&())
            .unwrap();
        zbus::Error::MethodError(
            zbus::names::OwnedErrorName::try_from(name).unwrap(),
            Some(msg.to_string()),
            reply,
        )
    }

    #[test]
    fn corral_error_names_map_to_short_names() {
        for short in [
            "NotFound",
            "InvalidArgument",
            "AccessDenied",
            "SpawnFailed",
            "Busy",
        ] {
            let e = method_error(&format!("org.corral.Supervisor1.Error.{short}"), "it broke");
            let err = CliError::from_call(Bus::System, e);
            assert_eq!(err.to_string(), format!("it broke ({short})"));
        }
        let e = method_error("org.freedesktop.DBus.Error.NameHasNoOwner", "gone");
        assert_eq!(
            CliError::from_call(Bus::System, e).to_string(),
            "corrald is not running on the system bus (start it with: systemctl start corrald)"
        );
        let e = method_error("org.freedesktop.DBus.Error.UnknownMethod", "no Foo");
        assert_eq!(
            CliError::from_call(Bus::Session, e).to_string(),
            "no Foo (org.freedesktop.DBus.Error.UnknownMethod)"
        );
    }
}
