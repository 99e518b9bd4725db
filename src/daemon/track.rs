//! What `Track` learns from `/proc` about a process corral did not start:
//! whether it may be taken over at all (not PID 1, not a kernel thread,
//! not corral's own, not already in one of corral's scopes), whose it is,
//! its command line, working directory and environment (so `Restart` can
//! launch it again), and its descendants (to move the whole tree).
//!
//! Read directly, like `launch::read_control_group`: four small files per
//! process; the `procfs` crate would add a dependency tree for that.

use std::collections::HashMap;
use std::fs;
use std::io;

use crate::daemon::launch;

/// The kernel's `PF_KTHREAD` (flags field of `/proc/PID/stat`).
const PF_KTHREAD: u64 = 0x0020_0000;

/// Why a process cannot be tracked; `Gone` is a PID with no process.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Gone(String),
    NotTrackable(String),
}

/// A process as `/proc` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub pid: u32,
    pub uid: u32,
    pub argv: Vec<String>,
    pub cwd: String,
    /// `KEY=VALUE` entries of its environment at exec time.
    pub env: Vec<String>,
}

/// `ppid` and `flags` from `/proc/PID/stat` (the command name in it may
/// hold spaces and parentheses: fields are counted after the last `)`).
fn stat(pid: u32) -> io::Result<(u32, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other("malformed stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (num(1), num(6)) {
        (Some(ppid), Some(flags)) => Ok((ppid as u32, flags)),
        _ => Err(io::Error::other("malformed stat")),
    }
}

/// The parent of `pid`, from `/proc/PID/stat`.
pub fn parent_of(pid: u32) -> io::Result<u32> {
    stat(pid).map(|(ppid, _)| ppid)
}

/// The real uid from `/proc/PID/status`.
pub fn uid_of(pid: u32) -> io::Result<u32> {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other("no Uid in status"))
}

fn nul_list(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// Checks that `pid` may be tracked by an agent whose own PID is
/// `agent` and reads what a relaunch needs.
pub fn inspect(pid: u32, agent: u32) -> Result<Target, Refusal> {
    let refuse = |m: String| Err(Refusal::NotTrackable(m));
    if pid == 1 {
        return refuse("PID 1 is the init process; it cannot be tracked".into());
    }
    if pid == agent {
        return refuse(format!("PID {pid} is corrald itself"));
    }
    let gone = |e: io::Error| Refusal::Gone(format!("no process with PID {pid}: {e}"));
    let (ppid, flags) = stat(pid).map_err(gone)?;
    if pid == 2 || ppid == 2 || flags & PF_KTHREAD != 0 {
        return refuse(format!("PID {pid} is a kernel thread"));
    }
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).map_err(gone)?;
    if comm.trim_end() == launch::SHIM_NAME {
        return refuse(format!("PID {pid} is a corral shim"));
    }
    let cg = launch::read_control_group(pid).map_err(gone)?;
    if let Some(unit) = corral_scope(&cg) {
        return refuse(format!(
            "PID {pid} is already supervised by corral (in {unit})"
        ));
    }
    let uid = uid_of(pid).map_err(gone)?;
    let argv = nul_list(&fs::read(format!("/proc/{pid}/cmdline")).map_err(gone)?);
    if argv.is_empty() {
        return refuse(format!("PID {pid} has no command line (a zombie?)"));
    }
    let unreadable = |what: &str, e: io::Error| {
        Refusal::NotTrackable(format!("cannot read the {what} of PID {pid}: {e}"))
    };
    let cwd = fs::read_link(format!("/proc/{pid}/cwd"))
        .map_err(|e| unreadable("working directory", e))?
        .to_string_lossy()
        .into_owned();
    let env = nul_list(
        &fs::read(format!("/proc/{pid}/environ")).map_err(|e| unreadable("environment", e))?,
    );
    Ok(Target {
        pid,
        uid,
        argv,
        cwd,
        env,
    })
}

/// The corral scope a cgroup path is in, if any.
fn corral_scope(cg: &str) -> Option<&str> {
    cg.split('/')
        .find(|c| c.starts_with("app-corral-") && c.ends_with(".scope"))
}

/// `pid` and all its descendants, found by one scan of `/proc` (a child
/// names its parent; the kernel has no complete list the other way round
/// without walking every thread).
pub fn tree(pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Ok((ppid, _)) = stat(p) {
                children.entry(ppid).or_default().push(p);
            }
        }
    }
    descendants(pid, &children)
}

fn descendants(root: u32, children: &HashMap<u32, Vec<u32>>) -> Vec<u32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(kids) = children.get(&out[i]) {
            out.extend(kids.iter().filter(|k| **k != root));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_named() {
        let me = std::process::id();
        assert!(matches!(inspect(1, me), Err(Refusal::NotTrackable(m)) if m.contains("PID 1")));
        assert!(matches!(inspect(me, me), Err(Refusal::NotTrackable(m)) if m.contains("corrald")));
        // kthreadd, where the PID namespace shows it.
        if fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd") {
            assert!(
                matches!(inspect(2, me), Err(Refusal::NotTrackable(m)) if m.contains("kernel"))
            );
        }
        assert!(matches!(inspect(u32::MAX - 1, me), Err(Refusal::Gone(_))));
        assert_eq!(
            corral_scope("/a/app-corral-x.slice/app-corral-web-3.scope"),
            Some("app-corral-web-3.scope")
        );
        assert_eq!(corral_scope("/user.slice/session-1.scope"), None);
    }

    #[test]
    fn a_child_process_is_read_with_its_tree() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30; :"])
            .env("TRACK_TEST", "1")
            .current_dir("/tmp")
            .spawn()
            .unwrap();
        let pid = child.id();
        let t = (0..200)
            .find_map(|_| {
                std::thread::sleep(std::time::Duration::from_millis(10));
                let t = tree(pid);
                (t.len() == 3).then_some(t)
            })
            .unwrap_or_else(|| tree(pid));
        let target = inspect(pid, std::process::id()).unwrap();
        child.kill().unwrap();
        let _ = child.wait();
        for p in &t[1..] {
            // SAFETY: kill(2) of our own test's children.
            unsafe { libc::kill(*p as i32, libc::SIGKILL) };
        }
        assert_eq!(t.len(), 3, "{t:?}");
        assert_eq!(t[0], pid);
        assert_eq!(target.argv, ["sh", "-c", "sleep 30 & sleep 30; :"]);
        assert_eq!(target.cwd, "/tmp");
        assert!(target.env.contains(&"TRACK_TEST=1".to_string()));
        // SAFETY: getuid(2) has no preconditions.
        assert_eq!(target.uid, unsafe { libc::getuid() });
    }

    #[test]
    fn descendants_are_collected_breadth_first() {
        let children = HashMap::from([(1, vec![2, 3]), (3, vec![4]), (9, vec![10])]);
        assert_eq!(descendants(1, &children), [1, 2, 3, 4]);
        assert_eq!(descendants(9, &children), [9, 10]);
    }
}
