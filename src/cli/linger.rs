//! The warning that persistent processes die at logout unless the user
//! lingers: without `loginctl enable-linger`, systemd-logind stops the
//! user's manager, with every scope in it, when the last session ends.
//! Given once per login session (a stamp in `$XDG_RUNTIME_DIR`, which
//! logind removes at logout), on stderr, never in `--json` output.

use std::path::{Path, PathBuf};

use crate::api::ProcessView;

/// Where logind records lingering users (one empty file per user name).
const LINGER_DIR: &str = "/var/lib/systemd/linger";

/// A warning that may be due: the user does not linger and was not
/// warned in this session. Checked before asking the agent anything.
pub struct Due {
    user: String,
    stamp: PathBuf,
}

/// Whether the warning may be due for the calling user.
pub fn due() -> Option<Due> {
    let user = nix::unistd::User::from_uid(nix::unistd::getuid()).ok()??;
    let stamp = std::env::var_os("XDG_RUNTIME_DIR")
        .map(|d| PathBuf::from(d).join("corral/linger-warned"))?;
    due_at(&user.name, Path::new(LINGER_DIR), stamp)
}

fn due_at(user: &str, linger_dir: &Path, stamp: PathBuf) -> Option<Due> {
    if linger_dir.join(user).exists() || stamp.exists() {
        return None;
    }
    Some(Due {
        user: user.to_string(),
        stamp,
    })
}

impl Due {
    /// The warning if `views` has live persistent processes; records that
    /// it was given.
    pub fn warning(&self, views: &[ProcessView]) -> Option<String> {
        let persistent = views
            .iter()
            .filter(|v| v.persistent && v.state.is_active())
            .count();
        if persistent == 0 {
            return None;
        }
        // Best effort: a stamp that cannot be written means the warning
        // repeats, which is better than never giving it.
        if let Some(dir) = self.stamp.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::write(&self.stamp, b"");
        let user = &self.user;
        Some(format!(
            "warning: {persistent} persistent process(es) will be stopped when you log out, \
             because lingering is off for {user}; to keep them running: loginctl enable-linger {user}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::State;

    fn view(persistent: bool, state: State) -> ProcessView {
        let mut v = ProcessView::from_dict(Default::default());
        v.persistent = persistent;
        v.state = state;
        v
    }

    #[test]
    fn warns_once_about_live_persistent_processes_without_linger() {
        let dir = tempfile::tempdir().unwrap();
        let linger = dir.path().join("linger");
        let stamp = dir.path().join("run/corral/linger-warned");
        std::fs::create_dir(&linger).unwrap();
        let due = due_at("ann", &linger, stamp.clone()).unwrap();
        let quiet = [view(false, State::Running), view(true, State::Exited)];
        assert_eq!(due.warning(&quiet), None);
        let live = [view(true, State::Running)];
        let w = due.warning(&live).unwrap();
        assert!(w.contains("loginctl enable-linger ann"), "{w}");
        assert!(due_at("ann", &linger, stamp.clone()).is_none(), "twice");
        std::fs::remove_file(&stamp).unwrap();
        std::fs::write(linger.join("ann"), b"").unwrap();
        assert!(due_at("ann", &linger, stamp).is_none(), "lingering");
    }
}
