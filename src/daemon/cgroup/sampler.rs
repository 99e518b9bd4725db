//! The usage files of the cgroups the tick samples, kept open from tick
//! to tick ([`Kept`]) so that sampling a thousand processes every second
//! is a `pread` per figure instead of a path walk, an open and a close.
//!
//! A cgroup's files are opened when the tick first reads it and closed
//! when a tick no longer lists it (its run ended) or a read of them fails
//! (the cgroup was removed; the read is then done by path, as without
//! this). Open files are bounded: at most half the soft `RLIMIT_NOFILE`
//! (corrald raises it to the hard limit at start), the other half left to
//! pidfds, sockets, the database and logs; cgroups past that budget are
//! read by path. (The real agent's sampler keeps its files in a file table
//! of its own thread, `supervisor::host`, where the limit applies to them
//! alone; the budget stays as it was.) Past it or not, every sampled
//! cgroup's last reading is remembered, so the quiet shortcuts below cost
//! no file at all: when each cgroup kept six files (a budget of 1,666
//! cgroups at a hard limit of 20,000), the cgroups past it were read in
//! full, six opens each, every second, and the agent's CPU per process
//! doubled past ~1,700 processes (BENCHMARK.md, scaling curve).
//!
//! A cgroup's CPU time counts its descendants', so the history tick first
//! reads the parent of the sampled cgroups (a workspace's slice): when
//! the parent used no CPU since the last tick, none of its cgroups did,
//! and their quiet figures are carried over without reading each one.

use hashbrown::HashMap;

use super::{CgroupFs, Kept, Result, Usage};

/// Files a cgroup holds open at most: six usage files on any layout.
const FILES_PER_CGROUP: usize = 6;

/// A quiet cgroup's figures are carried over for at most this many ticks
/// before they are read in full again.
const QUIET_TICKS: u64 = 10;

/// What the tick remembers of the sampled cgroups, by control group path:
/// their last readings, and their files kept open within the budget.
/// hashbrown's map for `entry_ref` (one lookup per cgroup and tick, the
/// key cloned only when inserted) and its foldhash hasher: the paths are
/// the agent's own unit names, not a client's keys.
#[derive(Debug)]
pub struct Sampler {
    kept: HashMap<String, Entry>,
    /// Entries of `kept` that hold files.
    with_files: usize,
    /// The parents of the sampled cgroups, read once a tick.
    parents: HashMap<String, Parent>,
    /// Cgroups whose files may be kept open at once.
    max_kept: usize,
    tick: u64,
}

#[derive(Debug, Default)]
struct Entry {
    /// Its files, kept open within the budget; `None` past it (read by path).
    files: Option<Kept>,
    /// The last tick that listed the cgroup.
    tick: u64,
    /// The history tick's last full reading, and the tick it was made.
    last: Option<(Usage, u64)>,
    /// The last tick at which the CPU time was known to be `last`'s: read
    /// then, or its parent's unchanged since an earlier such tick.
    verified: u64,
}

/// A parent of sampled cgroups: its CPU time at the last tick that read it.
#[derive(Debug, Default)]
struct Parent {
    files: Kept,
    tick: u64,
    cpu: Option<u64>,
    /// This tick's verdict: the tick since which it used no CPU.
    quiet_since: Option<u64>,
}

impl Sampler {
    /// A sampler keeping files open within the budget of this process's
    /// current open-files limit.
    pub fn from_rlimit() -> Sampler {
        Sampler::with_budget(nofile_soft_limit() / 2)
    }

    /// A sampler keeping at most `max_files` files open.
    pub fn with_budget(max_files: usize) -> Sampler {
        Sampler {
            kept: HashMap::new(),
            with_files: 0,
            parents: HashMap::new(),
            max_kept: max_files / FILES_PER_CGROUP,
            tick: 0,
        }
    }

    /// The tick with history on: what the history stores of `cgs` (no
    /// peak, no OOM count), which are every cgroup being sampled; files of
    /// cgroups not among them are closed.
    ///
    /// The CPU time is read first. A cgroup that used none since the last
    /// tick ran no task, so it forked nothing and allocated nothing: its
    /// other figures are carried over (one file read instead of four, for
    /// what is most of a dev machine's processes most of the time). What
    /// changes without running — memory the kernel reclaims, writeback
    /// counted as its IO — is caught by a full read at least every
    /// [`QUIET_TICKS`] ticks. And a cgroup whose parent used no CPU since
    /// the cgroup's CPU time was last known is not read at all.
    pub fn tick_usage(&mut self, fs: &CgroupFs, cgs: &[String]) -> Vec<Result<Usage>> {
        self.tick += 1;
        let out = cgs
            .iter()
            .map(|cg| {
                let quiet_since = match cg.rsplit_once('/') {
                    Some((parent, _)) if !parent.is_empty() => self.parent_quiet(fs, parent),
                    _ => None,
                };
                self.history_read(fs, cg, quiet_since)
            })
            .collect();
        self.close_unlisted();
        out
    }

    /// The tick since which `parent` used no CPU, if it used none since
    /// it was last read; read once a tick, through kept files (within
    /// the budget; past it, or when it cannot be read, `None`).
    fn parent_quiet(&mut self, fs: &CgroupFs, parent: &str) -> Option<u64> {
        let tick = self.tick;
        let room = self.with_files + self.parents.len() < self.max_kept;
        let p = if room {
            self.parents.entry_ref(parent).or_default()
        } else {
            self.parents.get_mut(parent)?
        };
        if p.tick == tick {
            return p.quiet_since;
        }
        let Ok(now) = fs.cpu_nsec_with(parent, Some(&mut p.files)) else {
            self.parents.remove(parent);
            return None;
        };
        p.quiet_since = match (p.cpu, now) {
            (Some(before), Some(now)) if before == now => Some(p.tick),
            _ => None,
        };
        p.cpu = now;
        p.tick = tick;
        p.quiet_since
    }

    fn history_read(&mut self, fs: &CgroupFs, cg: &str, quiet_since: Option<u64>) -> Result<Usage> {
        let tick = self.tick;
        let by_path = || -> Result<Usage> {
            Ok(Usage {
                cpu_usage_nsec: fs.cpu_nsec_with(cg, None)?,
                ..fs.history_usage_but_cpu_with(cg, None)?
            })
        };
        let Some(entry) = self.entry(cg, true) else {
            return by_path();
        };
        let had_files = entry.files.is_some();
        // Its parent used no CPU since its CPU time was last known: nor did it.
        if let (Some(since), Some((last, at))) = (quiet_since, entry.last) {
            if entry.verified >= since && tick - at < QUIET_TICKS {
                entry.verified = tick;
                return Ok(last);
            }
        }
        match history_read_kept(fs, cg, entry, tick) {
            Ok(u) => Ok(u),
            Err(e) => {
                self.forget(cg);
                if had_files {
                    by_path()
                } else {
                    Err(e)
                }
            }
        }
    }

    /// The tick with history off: only the CPU time of `cgs`, as for
    /// [`Sampler::tick_usage`].
    pub fn tick_cpu_nsec(&mut self, fs: &CgroupFs, cgs: &[String]) -> Vec<Result<Option<u64>>> {
        self.tick(fs, cgs, CgroupFs::cpu_nsec_with)
    }

    /// All usage of `cgs` on demand: through the files the tick keeps
    /// open where it does (opening those it lacks), else by path.
    pub fn usage(&mut self, fs: &CgroupFs, cgs: &[String]) -> Vec<Result<Usage>> {
        cgs.iter()
            .map(|cg| self.read(fs, cg, false, CgroupFs::usage_with))
            .collect()
    }

    fn tick<T>(
        &mut self,
        fs: &CgroupFs,
        cgs: &[String],
        read: impl Fn(&CgroupFs, &str, Option<&mut Kept>) -> Result<T>,
    ) -> Vec<Result<T>> {
        self.tick += 1;
        let out = cgs
            .iter()
            .map(|cg| self.read(fs, cg, true, &read))
            .collect();
        self.close_unlisted();
        out
    }

    /// Forgets the cgroups this tick did not list, closing their files.
    fn close_unlisted(&mut self) {
        let tick = self.tick;
        self.kept.retain(|_, e| e.tick == tick);
        self.with_files = self.kept.values().filter(|e| e.files.is_some()).count();
        self.parents.retain(|_, p| p.tick == tick);
    }

    /// Forgets `cg`, closing its files.
    fn forget(&mut self, cg: &str) {
        if let Some(e) = self.kept.remove(cg) {
            if e.files.is_some() {
                self.with_files -= 1;
            }
        }
    }

    /// What is remembered of `cg`; a tick (`listed`) first remembers it —
    /// with kept files if the budget allows — and marks it listed.
    fn entry(&mut self, cg: &str, listed: bool) -> Option<&mut Entry> {
        let tick = self.tick;
        let entry = if listed {
            let room = self.with_files + self.parents.len() < self.max_kept;
            let with_files = &mut self.with_files;
            self.kept.entry_ref(cg).or_insert_with(|| {
                *with_files += usize::from(room);
                Entry {
                    files: room.then(Kept::default),
                    ..Entry::default()
                }
            })
        } else {
            self.kept.get_mut(cg)?
        };
        if listed {
            entry.tick = tick;
        }
        Some(entry)
    }

    /// Reads `cg` through its kept files (see [`Sampler::entry`]). A
    /// failed read of kept files drops them and reads by path, which
    /// tells what the failure means.
    fn read<T>(
        &mut self,
        fs: &CgroupFs,
        cg: &str,
        listed: bool,
        read: impl Fn(&CgroupFs, &str, Option<&mut Kept>) -> Result<T>,
    ) -> Result<T> {
        let Some(files) = self.entry(cg, listed).and_then(|e| e.files.as_mut()) else {
            return read(fs, cg, None);
        };
        match read(fs, cg, Some(files)) {
            Ok(v) => Ok(v),
            Err(_) => {
                self.forget(cg);
                read(fs, cg, None)
            }
        }
    }

    /// Cgroups whose files are kept open.
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.kept.values().filter(|e| e.files.is_some()).count()
    }
}

/// The history tick's read of `cg` through its kept files: the CPU time,
/// then the rest unless the cgroup was quiet (see `tick_usage`).
fn history_read_kept(fs: &CgroupFs, cg: &str, entry: &mut Entry, tick: u64) -> Result<Usage> {
    let cpu = fs.cpu_nsec_with(cg, entry.files.as_mut())?;
    entry.verified = tick;
    if let Some((last, at)) = entry.last {
        if cpu.is_some() && last.cpu_usage_nsec == cpu && tick - at < QUIET_TICKS {
            return Ok(last);
        }
    }
    let usage = Usage {
        cpu_usage_nsec: cpu,
        ..fs.history_usage_but_cpu_with(cg, entry.files.as_mut())?
    };
    entry.last = Some((usage, tick));
    Ok(usage)
}

/// The soft limit of open files; 1024 (systemd's default) if unknown.
fn nofile_soft_limit() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// Two scopes on a v2 tree.
    fn two_scopes() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("cgroup.controllers"), "cpu memory\n").unwrap();
        for (scope, cpu) in [("a.scope", 1), ("b.scope", 2)] {
            let d = dir.path().join(scope);
            fs::create_dir(&d).unwrap();
            fs::write(d.join("cpu.stat"), format!("usage_usec {cpu}\n")).unwrap();
            fs::write(d.join("memory.current"), "4096\n").unwrap();
        }
        dir
    }

    fn cgs(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_tick_keeps_the_listed_cgroups_only() {
        let dir = two_scopes();
        let fs = CgroupFs::detect(dir.path()).unwrap();
        let mut s = Sampler::with_budget(100);
        let both = cgs(&["/a.scope", "/b.scope"]);
        let cpu: Vec<_> = s
            .tick_cpu_nsec(&fs, &both)
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(cpu, vec![Some(1000), Some(2000)]);
        assert_eq!(s.kept(), 2);
        // On demand: kept files where there are, no new ones kept.
        let u = s.usage(&fs, &cgs(&["/a.scope", "/b.scope"]));
        assert_eq!(u[1].as_ref().unwrap().memory_current, Some(4096));
        assert_eq!(s.kept(), 2);
        let u = s.tick_usage(&fs, &cgs(&["/b.scope"]));
        assert_eq!(u[0].as_ref().unwrap().cpu_usage_nsec, Some(2000));
        assert_eq!(s.kept(), 1, "a.scope is no longer listed");
        s.tick_usage(&fs, &[]);
        assert_eq!(s.kept(), 0);
    }

    #[test]
    fn a_quiet_cgroup_is_read_in_full_only_every_few_ticks() {
        let dir = two_scopes();
        let fs = CgroupFs::detect(dir.path()).unwrap();
        let mut s = Sampler::with_budget(100);
        let a = cgs(&["/a.scope"]);
        let memory = |s: &mut Sampler| s.tick_usage(&fs, &a)[0].as_ref().unwrap().memory_current;
        assert_eq!(memory(&mut s), Some(4096));
        let scope = dir.path().join("a.scope");
        fs::write(scope.join("memory.current"), "8192\n").unwrap();
        // No CPU used: carried over.
        assert_eq!(memory(&mut s), Some(4096));
        // CPU used: read.
        fs::write(scope.join("cpu.stat"), "usage_usec 7\n").unwrap();
        assert_eq!(memory(&mut s), Some(8192));
        // Quiet again, yet the memory falls (reclaim): seen within
        // QUIET_TICKS ticks, and not at once.
        fs::write(scope.join("memory.current"), "100\n").unwrap();
        let seen: Vec<_> = (0..QUIET_TICKS).map(|_| memory(&mut s)).collect();
        assert_eq!(seen[0], Some(8192), "{seen:?}");
        assert_eq!(seen.last(), Some(&Some(100)), "{seen:?}");
        // Past the budget, read by path, the same: carried over while
        // quiet, read once it used CPU.
        let mut s = Sampler::with_budget(0);
        assert_eq!(memory(&mut s), Some(100));
        assert_eq!(s.kept(), 0);
        fs::write(scope.join("memory.current"), "200\n").unwrap();
        assert_eq!(memory(&mut s), Some(100));
        fs::write(scope.join("cpu.stat"), "usage_usec 8\n").unwrap();
        assert_eq!(memory(&mut s), Some(200));
    }

    #[test]
    fn cgroups_of_a_quiet_parent_are_not_read() {
        // Within the budget, and past it: room for the parent's files only.
        quiet_parent(100, 2);
        quiet_parent(FILES_PER_CGROUP, 0);
    }

    /// The quiet-parent case with `budget` files; `kept` scopes keep files.
    fn quiet_parent(budget: usize, kept: usize) {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("cgroup.controllers"), "cpu memory\n").unwrap();
        let slice = dir.path().join("w.slice");
        for d in [&slice, &slice.join("a.scope")] {
            fs::create_dir(d).unwrap();
            fs::write(d.join("cpu.stat"), "usage_usec 5\n").unwrap();
            fs::write(d.join("memory.current"), "4096\n").unwrap();
        }
        let scope = slice.join("a.scope");
        let fs = CgroupFs::detect(dir.path()).unwrap();
        let mut s = Sampler::with_budget(budget);
        let a = cgs(&["/w.slice/a.scope"]);
        let cpu = |s: &mut Sampler| s.tick_usage(&fs, &a)[0].as_ref().unwrap().cpu_usage_nsec;
        assert_eq!(cpu(&mut s), Some(5000));
        // The scope's own figure changes, its parent's does not: the
        // scope is not read (a real tree cannot do this; it shows the
        // read was skipped).
        fs::write(scope.join("cpu.stat"), "usage_usec 6\n").unwrap();
        assert_eq!(cpu(&mut s), Some(5000));
        assert_eq!(cpu(&mut s), Some(5000));
        // The parent used CPU: its cgroups are read again.
        fs::write(slice.join("cpu.stat"), "usage_usec 9\n").unwrap();
        assert_eq!(cpu(&mut s), Some(6000));
        // Quiet again; yet every QUIET_TICKS ticks a full read.
        fs::write(scope.join("cpu.stat"), "usage_usec 7\n").unwrap();
        let seen: Vec<_> = (0..QUIET_TICKS).map(|_| cpu(&mut s)).collect();
        assert_eq!(seen[0], Some(6000), "{seen:?}");
        assert_eq!(seen.last(), Some(&Some(7000)), "{seen:?}");
        // A cgroup first listed under a quiet parent is read.
        fs::create_dir(slice.join("b.scope")).unwrap();
        fs::write(slice.join("b.scope/cpu.stat"), "usage_usec 3\n").unwrap();
        let both = cgs(&["/w.slice/a.scope", "/w.slice/b.scope"]);
        let u = s.tick_usage(&fs, &both);
        assert_eq!(u[1].as_ref().unwrap().cpu_usage_nsec, Some(3000));
        assert_eq!(s.parents.len(), 1);
        assert_eq!(s.kept(), kept);
        s.tick_usage(&fs, &[]);
        assert_eq!(s.parents.len(), 0, "a parent of nothing listed is closed");
    }

    #[test]
    fn past_the_budget_cgroups_are_read_by_path() {
        let dir = two_scopes();
        let fs = CgroupFs::detect(dir.path()).unwrap();
        let mut s = Sampler::with_budget(FILES_PER_CGROUP);
        let both = cgs(&["/a.scope", "/b.scope"]);
        let u: Vec<_> = s
            .tick_usage(&fs, &both)
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(s.kept(), 1);
        assert_eq!(u[0], fs.read_usage("/a.scope").unwrap());
        assert_eq!(u[1], fs.read_usage("/b.scope").unwrap());
        assert!(matches!(
            s.tick_usage(&fs, &cgs(&["/gone.scope"]))[0],
            Err(crate::daemon::cgroup::Error::NotFound { .. })
        ));
        assert_eq!(s.kept(), 0);
    }
}
