//! Who a system-mode process runs as: the caller's passwd entry (or, for
//! root's `User` key, the named user's) turned into the ids the shim
//! drops to and the login variables the process starts with.

use nix::unistd::{Gid, Uid, User};

use crate::api::Error;
use crate::daemon::supervisor::RunAs;
use crate::shim::Credentials;

/// `user`: a name or a decimal uid. `groups`: the supplementary groups
/// the bus reported for the caller (used when it is the caller itself);
/// otherwise the user's groups come from the group database.
pub async fn run_as(user: String, groups: Option<Vec<u32>>) -> Result<RunAs, Error> {
    tokio::task::spawn_blocking(move || lookup(&user, groups))
        .await
        .map_err(|e| Error::InvalidArgument(format!("looking up user: {e}")))?
}

fn lookup(user: &str, groups: Option<Vec<u32>>) -> Result<RunAs, Error> {
    let found = match user.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(user),
    };
    let pw = found
        .map_err(|e| Error::InvalidArgument(format!("User: looking up '{user}': {e}")))?
        .ok_or_else(|| Error::InvalidArgument(format!("User: no such user '{user}'")))?;
    let groups = match groups {
        Some(g) => g,
        None => {
            let name = std::ffi::CString::new(pw.name.clone())
                .map_err(|_| Error::InvalidArgument(format!("User: bad name '{}'", pw.name)))?;
            nix::unistd::getgrouplist(&name, pw.gid)
                .map_err(|e| Error::InvalidArgument(format!("User: groups of '{user}': {e}")))?
                .into_iter()
                .map(Gid::as_raw)
                .collect()
        }
    };
    let home = pw.dir.to_string_lossy().into_owned();
    let login_env = vec![
        ("HOME".to_string(), home.clone()),
        ("USER".to_string(), pw.name.clone()),
        ("LOGNAME".to_string(), pw.name.clone()),
        ("SHELL".to_string(), pw.shell.to_string_lossy().into_owned()),
    ];
    Ok(RunAs {
        uid: pw.uid.as_raw(),
        credentials: Some(Credentials {
            uid: pw.uid.as_raw(),
            gid: pw.gid.as_raw(),
            groups,
        }),
        login_env: Some(login_env),
        home: Some(home),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_by_name_and_uid_with_its_login_variables() {
        for who in ["root", "0"] {
            let r = lookup(who, Some(vec![0])).unwrap();
            assert_eq!(r.uid, 0);
            let c = r.credentials.unwrap();
            assert_eq!((c.uid, c.gid, c.groups), (0, 0, vec![0]));
            let env = r.login_env.unwrap();
            assert!(env.contains(&("USER".into(), "root".into())), "{env:?}");
            assert!(env.iter().any(|(k, _)| k == "SHELL"));
        }
        let e = lookup("no-such-user-here", None).unwrap_err();
        assert_eq!(e.short_name(), "InvalidArgument");
    }
}
