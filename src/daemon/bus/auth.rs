//! Who is calling, and what they may do.
//!
//! User mode: the session bus is the boundary, as for `systemd --user` —
//! every caller is the agent's own user and may do everything. System
//! mode: the caller's uid and groups come from the bus daemon
//! (`GetConnectionCredentials`), never from arguments, and polkit decides
//! (`CheckAuthorization` with the caller's `system-bus-name` subject,
//! interactive only when the caller's message allows it). Root is always
//! authorized, as polkit itself would answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zbus::fdo::DBusProxy;
use zbus::message::{Flags, Header};
use zbus_polkit::policykit1::{AuthorityProxy, CheckAuthorizationFlags, Subject};

use crate::api::{self, Error};
use crate::config::Mode;
use crate::daemon::supervisor::Access;

/// The polkit actions (`polkit/org.corral.Supervisor1.policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Start, stop, restart, kill and remove one's own processes.
    ManageOwn,
    /// See and manage every user's processes.
    ManageAll,
    /// Start a process as another user (`User` spec key; root only).
    StartAsUser,
}

impl Action {
    pub fn id(self) -> &'static str {
        match self {
            Action::ManageOwn => api::ACTION_MANAGE_OWN,
            Action::ManageAll => api::ACTION_MANAGE_ALL,
            Action::StartAsUser => api::ACTION_START_AS_USER,
        }
    }
}

/// A caller as the bus daemon vouches for it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub uid: u32,
    /// Supplementary groups (the primary gid comes from passwd).
    pub groups: Vec<u32>,
    /// May polkit ask the user to authenticate for this call?
    pub interactive: bool,
    sender: Option<String>,
}

/// A kept answer of polkit's, non-interactive, per caller and action.
const KEEP: Duration = Duration::from_secs(2);
/// Connections remembered (unique names are never reused on a bus).
const MAX_CALLERS: usize = 4096;

#[derive(Clone)]
pub struct Auth {
    mode: Mode,
    own_uid: u32,
    dbus: Option<DBusProxy<'static>>,
    polkit: Option<AuthorityProxy<'static>>,
    callers: Arc<Mutex<Callers>>,
    kept: Arc<Mutex<Kept>>,
}

/// Unique bus name -> (uid, supplementary groups).
type Callers = HashMap<String, (u32, Vec<u32>)>;
/// (unique bus name, action) -> (when asked, answer).
type Kept = HashMap<(String, Action), (Instant, bool)>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Auth {
    pub async fn new(conn: &zbus::Connection, mode: Mode) -> zbus::Result<Auth> {
        // SAFETY: geteuid(2) cannot fail and has no preconditions.
        let own_uid = unsafe { libc::geteuid() };
        let (dbus, polkit) = match mode {
            Mode::User => (None, None),
            Mode::System => (
                Some(DBusProxy::new(conn).await?),
                Some(AuthorityProxy::new(conn).await?),
            ),
        };
        Ok(Auth {
            mode,
            own_uid,
            dbus,
            polkit,
            callers: Arc::default(),
            kept: Arc::default(),
        })
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The caller of the message with `hdr`.
    pub async fn caller(&self, hdr: &Header<'_>) -> Result<Caller, Error> {
        let interactive = hdr.primary().flags().contains(Flags::AllowInteractiveAuth);
        let Some(dbus) = &self.dbus else {
            return Ok(Caller {
                uid: self.own_uid,
                groups: vec![],
                interactive,
                sender: None,
            });
        };
        let sender = hdr
            .sender()
            .ok_or_else(|| Error::AccessDenied("message without a sender".into()))?
            .to_string();
        if let Some((uid, groups)) = lock(&self.callers).get(&sender).cloned() {
            return Ok(Caller {
                uid,
                groups,
                interactive,
                sender: Some(sender),
            });
        }
        let creds = dbus
            .get_connection_credentials(
                hdr.sender()
                    .cloned()
                    .map(Into::into)
                    .ok_or_else(|| Error::AccessDenied("message without a sender".into()))?,
            )
            .await
            .map_err(|e| Error::AccessDenied(format!("who is calling: {e}")))?;
        let uid = creds
            .unix_user_id()
            .ok_or_else(|| Error::AccessDenied("the bus did not say the caller's uid".into()))?;
        let groups = creds.unix_group_ids().cloned().unwrap_or_default();
        let mut callers = lock(&self.callers);
        if callers.len() >= MAX_CALLERS {
            callers.clear();
        }
        callers.insert(sender.clone(), (uid, groups.clone()));
        Ok(Caller {
            uid,
            groups,
            interactive,
            sender: Some(sender),
        })
    }

    /// Whether `caller` may do `action`; `interactive` lets polkit ask
    /// (only if the caller's message allowed it).
    pub async fn check(&self, caller: &Caller, action: Action, interactive: bool) -> bool {
        let (Some(polkit), Some(sender)) = (&self.polkit, &caller.sender) else {
            return true; // user mode: the session bus is the boundary
        };
        if caller.uid == 0 {
            return true;
        }
        let interactive = interactive && caller.interactive;
        let key = (sender.clone(), action);
        if !interactive {
            if let Some((at, ok)) = lock(&self.kept).get(&key) {
                if at.elapsed() < KEEP {
                    return *ok;
                }
            }
        }
        let subject = Subject {
            subject_kind: "system-bus-name".into(),
            subject_details: [(
                "name".to_string(),
                zbus::zvariant::Value::from(sender.as_str()),
            )]
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.try_to_owned().ok()?)))
            .collect(),
        };
        let flags = if interactive {
            CheckAuthorizationFlags::AllowUserInteraction.into()
        } else {
            Default::default()
        };
        let ok = match polkit
            .check_authorization(&subject, action.id(), &HashMap::new(), flags, "")
            .await
        {
            Ok(r) => r.is_authorized,
            Err(e) => {
                tracing::warn!(action = action.id(), "polkit: {e}");
                false
            }
        };
        let mut kept = lock(&self.kept);
        if kept.len() >= MAX_CALLERS {
            kept.clear();
        }
        kept.insert(key, (Instant::now(), ok));
        ok
    }

    /// `check`, interactively where allowed, as an error when denied.
    pub async fn require(&self, caller: &Caller, action: Action) -> Result<(), Error> {
        if self.check(caller, action, true).await {
            Ok(())
        } else {
            Err(Error::AccessDenied(format!(
                "not authorized for {} (uid {})",
                action.id(),
                caller.uid
            )))
        }
    }

    /// Whose processes `caller` sees in lists: everyone's for root or a
    /// holder of manage-all (asked without interaction), else their own.
    pub async fn access(&self, caller: &Caller) -> Access {
        if self.mode == Mode::User || self.check(caller, Action::ManageAll, false).await {
            Access::All
        } else {
            Access::Owner(caller.uid)
        }
    }

    /// Access to one process owned by `owner`: the caller's own, or
    /// anyone's with manage-all (interactive where allowed). None: the
    /// process must look as if it did not exist.
    pub async fn access_to(&self, caller: &Caller, owner: u32) -> Option<Access> {
        if self.mode == Mode::User {
            return Some(Access::All);
        }
        if caller.uid == owner {
            return Some(Access::Owner(owner));
        }
        self.check(caller, Action::ManageAll, true)
            .await
            .then_some(Access::All)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_ids_are_the_policy_files() {
        let policy = include_str!("../../../polkit/org.corral.Supervisor1.policy");
        for a in [Action::ManageOwn, Action::ManageAll, Action::StartAsUser] {
            assert!(a.id().starts_with("org.corral.Supervisor1."));
            assert!(
                policy.contains(&format!("<action id=\"{}\">", a.id())),
                "{} missing from the policy file",
                a.id()
            );
        }
    }
}
