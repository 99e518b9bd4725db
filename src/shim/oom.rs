//! The OOM-kill count of the shim's own cgroup, read when its child died
//! of SIGKILL and put in the exit record. The shim reads it because it is
//! still in the scope: by the time corrald handles the record, systemd may
//! have removed the emptied cgroup (on hybrid hosts the v1 counter is not
//! kept by any parent). Plain `std`: the shim links neither tokio nor zbus.

use std::path::Path;

/// Where cgroupfs is mounted; the shim runs on the host's.
const ROOT: &str = "/sys/fs/cgroup";

/// `oom_kill` of this process's memory cgroup: v2's `memory.events`, or
/// v1's `memory.oom_control` (hybrid and v1 hosts). `None` if unreadable.
pub fn own_count() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    count_in(Path::new(ROOT), &cgroups)
}

/// The count for the memberships listed in `proc_cgroup` (the format of
/// `/proc/self/cgroup`) under the hierarchy `root`.
fn count_in(root: &Path, proc_cgroup: &str) -> Option<u64> {
    let mut v2 = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "memory") {
            let file = root.join("memory").join(path).join("memory.oom_control");
            if let Some(n) = read_key(&file) {
                return Some(n);
            }
        } else if controllers.is_empty() {
            v2 = Some(root.join(path).join("memory.events"));
        }
    }
    read_key(&v2?)
}

fn read_key(file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_v2_and_v1_counts() {
        let d = tempfile::tempdir().unwrap();
        let scope = "app.slice/a.scope";
        std::fs::create_dir_all(d.path().join(scope)).unwrap();
        std::fs::write(
            d.path().join(scope).join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .unwrap();
        assert_eq!(count_in(d.path(), "0::/app.slice/a.scope\n"), Some(1));
        std::fs::create_dir_all(d.path().join("memory").join(scope)).unwrap();
        std::fs::write(
            d.path()
                .join("memory")
                .join(scope)
                .join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        let hybrid = "7:memory:/app.slice/a.scope\n0::/app.slice/a.scope\n";
        assert_eq!(count_in(d.path(), hybrid), Some(2));
        assert_eq!(count_in(d.path(), "0::/gone.scope\n"), None);
    }
}
