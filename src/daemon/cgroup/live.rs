//! What the live controls need to know of a cgroup, read like the rest of
//! this module: whether a controller can enforce a limit there, its
//! pressure stall figures (PSI) and whether it is frozen.

use std::path::PathBuf;

use super::{find_key, rel, CgroupFs, Layout};
use crate::api::Pressure;

/// v1 hierarchy directories of a v2 controller name (systemd maps the v2
/// settings onto them on hybrid and v1 hosts).
fn v1_dirs(controller: &str) -> &'static [&'static str] {
    match controller {
        "memory" => &["memory"],
        "pids" => &["pids"],
        "cpu" => &["cpu", "cpu,cpuacct"],
        "io" => &["blkio"],
        _ => &[],
    }
}

impl CgroupFs {
    /// The cgroup2 directory of `control_group`, or of its nearest
    /// ancestor that exists (a slice has no directory while empty).
    fn nearest_v2_dir(&self, control_group: &str) -> Option<PathBuf> {
        let base = match self.layout {
            Layout::Unified => self.root.clone(),
            Layout::Hybrid => self.root.join("unified"),
            Layout::Legacy => return None,
        };
        let mut dir = base.join(rel(control_group).ok()?);
        while !dir.is_dir() {
            if !dir.pop() || !dir.starts_with(&base) {
                return None;
            }
        }
        Some(dir)
    }

    /// Whether systemd can enforce a limit of `controller` on
    /// `control_group`: on cgroup v2 the controller must be in the cgroup's
    /// `cgroup.controllers` (delegated to this manager); on hybrid and v1
    /// hosts, a limit systemd maps to v1 (`v1`) needs that hierarchy
    /// mounted, and a v2-only one cannot be enforced at all.
    pub fn enforceable(&self, control_group: &str, controller: &str, v1: bool) -> bool {
        match self.layout {
            Layout::Unified => self
                .nearest_v2_dir(control_group)
                .and_then(|d| std::fs::read_to_string(d.join("cgroup.controllers")).ok())
                .is_some_and(|c| c.split_whitespace().any(|w| w == controller)),
            Layout::Hybrid | Layout::Legacy => {
                v1 && v1_dirs(controller)
                    .iter()
                    .any(|d| self.root.join(d).is_dir())
            }
        }
    }

    /// PSI `avg10` of memory, CPU and I/O, `some` and `full`, from the
    /// cgroup2 files (the unified hierarchy on hybrid hosts). A file the
    /// kernel does not have (no PSI, `psi=0`) leaves its keys out.
    pub fn read_pressure(&self, control_group: &str) -> Pressure {
        let mut out = Pressure::new();
        let Ok(cg) = rel(control_group) else {
            return out;
        };
        let dir = match self.layout {
            Layout::Unified => self.root.join(cg),
            Layout::Hybrid => self.root.join("unified").join(cg),
            Layout::Legacy => return out,
        };
        for res in ["memory", "cpu", "io"] {
            let Ok(text) = std::fs::read_to_string(dir.join(format!("{res}.pressure"))) else {
                continue;
            };
            for line in text.lines() {
                let mut words = line.split_whitespace();
                let Some(kind @ ("some" | "full")) = words.next() else {
                    continue;
                };
                let avg10 = words
                    .find_map(|w| w.strip_prefix("avg10="))
                    .and_then(|v| v.parse::<f64>().ok());
                if let Some(v) = avg10 {
                    out.insert(format!("{res}.{kind}"), v);
                }
            }
        }
        out
    }

    /// `Some(frozen)` where systemd can freeze the cgroup (pure cgroup v2
    /// with `cgroup.freeze`; an empty slice with no directory is thawed),
    /// `None` where it cannot.
    pub fn frozen(&self, control_group: &str) -> Option<bool> {
        if self.layout != Layout::Unified {
            return None;
        }
        let dir = self.root.join(rel(control_group).ok()?);
        if !dir.is_dir() {
            // Nothing runs: thawed, if the hierarchy has the freezer.
            return self
                .nearest_v2_dir(control_group)
                .filter(|d| d != &self.root)
                .map(|d| d.join("cgroup.freeze").exists())
                .unwrap_or(true)
                .then_some(false);
        }
        if !dir.join("cgroup.freeze").exists() {
            return None;
        }
        let events = std::fs::read(dir.join("cgroup.events")).ok()?;
        Some(find_key(&events, b"frozen") == Some(b"1"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let p = d.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        d
    }

    const CG: &str = "/app.slice/app-corral-w.slice/app-corral-x-1.scope";

    #[test]
    fn v2_enforces_only_delegated_controllers() {
        let d = tree(&[
            ("cgroup.controllers", "cpu io memory pids"),
            (
                "app.slice/app-corral-w.slice/cgroup.controllers",
                "cpu memory pids",
            ),
            (
                "app.slice/app-corral-w.slice/app-corral-x-1.scope/cgroup.controllers",
                "memory pids",
            ),
        ]);
        let fs = CgroupFs::detect(d.path()).unwrap();
        assert!(fs.enforceable(CG, "memory", true));
        assert!(!fs.enforceable(CG, "cpu", true));
        // An empty slice: its nearest existing ancestor decides.
        let gone = "/app.slice/app-corral-w.slice/app-corral-y-2.scope";
        assert!(fs.enforceable(gone, "cpu", true));
        assert!(!fs.enforceable(gone, "io", true));
    }

    #[test]
    fn hybrid_maps_to_v1_hierarchies_and_has_no_v2_only_limits() {
        let d = tree(&[
            ("unified/cgroup.controllers", ""),
            ("memory/tasks", ""),
            ("pids/tasks", ""),
        ]);
        let fs = CgroupFs::detect(d.path()).unwrap();
        assert!(fs.enforceable(CG, "memory", true));
        assert!(
            !fs.enforceable(CG, "memory", false),
            "MemoryHigh is v2-only"
        );
        assert!(!fs.enforceable(CG, "io", true), "no blkio mount");
        assert_eq!(fs.frozen(CG), None, "systemd freezes on pure v2 only");
    }

    #[test]
    fn pressure_and_freezer_read_from_v2_files() {
        let dir = CG.trim_start_matches('/');
        let d = tree(&[
            ("cgroup.controllers", "memory"),
            (
                &format!("{dir}/memory.pressure"),
                "some avg10=1.50 avg60=0.00 avg300=0.00 total=9\nfull avg10=0.25 avg60=0.00 avg300=0.00 total=3\n",
            ),
            (&format!("{dir}/cpu.pressure"), "some avg10=7.00 avg60=0.00 avg300=0.00 total=1\n"),
            (&format!("{dir}/cgroup.freeze"), "1\n"),
            (&format!("{dir}/cgroup.events"), "populated 1\nfrozen 1\n"),
        ]);
        let fs = CgroupFs::detect(d.path()).unwrap();
        let p = fs.read_pressure(CG);
        assert_eq!(p.get("memory.some"), Some(&1.5));
        assert_eq!(p.get("memory.full"), Some(&0.25));
        assert_eq!(p.get("cpu.some"), Some(&7.0));
        assert!(!p.contains_key("io.some"), "{p:?}");
        assert_eq!(fs.frozen(CG), Some(true));
    }
}
