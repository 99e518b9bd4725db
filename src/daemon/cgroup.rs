//! Usage of one cgroup — memory, CPU time, tasks, I/O, OOM kills — read
//! straight from cgroupfs on pure v2 (`Unified`), hybrid (v1 controllers plus
//! a cgroup2 mount at `<root>/unified`) and v1-only (`Legacy`) layouts.
//!
//! The hierarchy root is injected (normally `/sys/fs/cgroup`), so tests run
//! against fixture trees captured from real machines. This module only
//! reads: it never creates, writes to or removes anything under the root.
//!
//! It does not use cgroups-rs on purpose: that crate hard-codes
//! `/sys/fs/cgroup`, picks v1 on hybrid hosts and ignores the unified mount,
//! and returns 0 instead of an error when a file cannot be read.
//!
//! `read_usage` runs for every supervised process every second, so each
//! file is read with one `open` and plain `read`s into a per-thread buffer
//! that is reused, and parsed in place without allocating.

mod live;

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What went wrong reading a cgroup, and where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cgroup directory (or the hierarchy root) does not exist.
    #[error("cgroup not found: {}", path.display())]
    NotFound { path: PathBuf },
    /// A file exists but could not be read.
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file was read but its content is not what the kernel writes.
    #[error("cannot parse {}: {detail}", path.display())]
    Parse { path: PathBuf, detail: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// How cgroupfs is mounted below the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Pure cgroup v2: one cgroup2 mount at the root.
    Unified,
    /// v1 controllers, each on `<root>/<controller>`, plus a cgroup2 mount
    /// at `<root>/unified` that holds no controllers but still has
    /// `cpu.stat`, `cgroup.events` and `cgroup.procs` for every cgroup.
    Hybrid,
    /// v1 controllers only.
    Legacy,
}

/// Usage counters of one cgroup. A field is `None` when its controller file
/// does not exist (controller not enabled or not mounted, older kernel).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes charged now (v2 `memory.current`, v1 `memory.usage_in_bytes`).
    pub memory_current: Option<u64>,
    /// High-water mark (v2 `memory.peak` since Linux 5.19, v1
    /// `memory.max_usage_in_bytes`).
    pub memory_peak: Option<u64>,
    /// CPU time consumed, in nanoseconds.
    pub cpu_usage_nsec: Option<u64>,
    /// Processes and threads (`pids.current`).
    pub tasks_current: Option<u64>,
    /// Bytes read from block devices, summed over devices.
    pub io_read_bytes: Option<u64>,
    /// Bytes written to block devices, summed over devices.
    pub io_write_bytes: Option<u64>,
    /// Processes killed by the OOM killer in this cgroup.
    pub oom_kills: Option<u64>,
}

/// A cgroup hierarchy rooted at an injectable path.
#[derive(Debug, Clone)]
pub struct CgroupFs {
    root: PathBuf,
    layout: Layout,
}

/// v1 controller directories that tell a legacy mount apart from an empty
/// directory. On some distributions cpu and cpuacct share `cpu,cpuacct`.
const V1_DIRS: &[&str] = &["systemd", "memory", "pids", "cpuacct", "cpu,cpuacct"];

/// Files are small (a few hundred bytes); `io.stat` grows with the number of
/// devices, and the buffer grows with it once and is then reused.
const BUF_CAPACITY: usize = 4096;

thread_local! {
    static BUF: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(BUF_CAPACITY));
}

impl CgroupFs {
    /// Finds out how cgroupfs is mounted below `root` (normally
    /// `/sys/fs/cgroup`): v2 iff `<root>/cgroup.controllers` exists, hybrid
    /// iff `<root>/unified/cgroup.controllers` exists, else v1 if any v1
    /// controller directory is there. `NotFound` if none of these is.
    pub fn detect(root: impl Into<PathBuf>) -> Result<CgroupFs> {
        let root = root.into();
        let layout = if root.join("cgroup.controllers").is_file() {
            Layout::Unified
        } else if root.join("unified/cgroup.controllers").is_file() {
            Layout::Hybrid
        } else if V1_DIRS.iter().any(|d| root.join(d).is_dir()) {
            Layout::Legacy
        } else {
            return Err(Error::NotFound { path: root });
        };
        Ok(CgroupFs { root, layout })
    }

    /// The layout `detect` found; the agent only branches on it inside
    /// this module, tests check it.
    #[cfg(test)]
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Whether the cgroup exists (see [`CgroupFs::read_usage`] for the
    /// path format). Tests only: the agent learns a scope is gone from
    /// systemd and from `read_populated`.
    #[cfg(test)]
    pub fn exists(&self, control_group: &str) -> bool {
        match self.main_dir(control_group) {
            Ok(dir) => dir.is_dir(),
            Err(_) => false,
        }
    }

    /// Reads all usage counters of `control_group`, systemd's
    /// `ControlGroup` property: a path relative to the hierarchy root with a
    /// leading `/`, e.g. `/app.slice/app-corral.slice/app-corral-web-3.scope`.
    ///
    /// A missing controller file gives `None` for its field; a missing
    /// cgroup directory gives `NotFound`, also when it vanishes mid-read.
    pub fn read_usage(&self, control_group: &str) -> Result<Usage> {
        let cg = rel(control_group)?;
        BUF.with(|buf| {
            // A reentrant call cannot happen (nothing here calls back into
            // read_usage), but fall back to a fresh buffer rather than panic.
            match buf.try_borrow_mut() {
                Ok(mut buf) => self.read_usage_into(cg, &mut buf),
                Err(_) => self.read_usage_into(cg, &mut Vec::with_capacity(BUF_CAPACITY)),
            }
        })
    }

    fn read_usage_into(&self, cg: &str, buf: &mut Vec<u8>) -> Result<Usage> {
        let mut r = Reader {
            buf,
            missing: false,
        };
        let usage = match self.layout {
            Layout::Unified => {
                let mut p = self.root.join(cg);
                let memory_current = r.single(&mut p, "memory.current")?;
                let memory_peak = r.single(&mut p, "memory.peak")?;
                let cpu_usec = r.keyed(&mut p, "cpu.stat", b"usage_usec")?;
                let tasks_current = r.single(&mut p, "pids.current")?;
                let (io_read_bytes, io_write_bytes) = r.io_stat(&mut p)?;
                let oom_kills = r.keyed(&mut p, "memory.events", b"oom_kill")?;
                Usage {
                    memory_current,
                    memory_peak,
                    cpu_usage_nsec: cpu_usec.map(|us| us.saturating_mul(1000)),
                    tasks_current,
                    io_read_bytes,
                    io_write_bytes,
                    oom_kills,
                }
            }
            Layout::Hybrid | Layout::Legacy => {
                let mut p = self.controller_dir("memory", cg);
                let memory_current = r.single(&mut p, "memory.usage_in_bytes")?;
                let memory_peak = r.single(&mut p, "memory.max_usage_in_bytes")?;
                let oom_kills = r.keyed(&mut p, "memory.oom_control", b"oom_kill")?;
                let tasks_current =
                    r.single(&mut self.controller_dir("pids", cg), "pids.current")?;
                let cpu_usage_nsec = self.read_v1_cpu(&mut r, cg)?;
                let (io_read_bytes, io_write_bytes) =
                    r.blkio(&mut self.controller_dir("blkio", cg))?;
                Usage {
                    memory_current,
                    memory_peak,
                    cpu_usage_nsec,
                    tasks_current,
                    io_read_bytes,
                    io_write_bytes,
                    oom_kills,
                }
            }
        };
        // Every missing file takes this path, so a cgroup that does not
        // exist (or was removed between two reads) is told apart from one
        // whose controllers are off at the cost of one stat, and only then.
        if r.missing {
            let dir = self.main_dir(cg)?;
            if !dir.is_dir() {
                return Err(Error::NotFound { path: dir });
            }
        }
        Ok(usage)
    }

    /// Only the CPU time of a cgroup (one file on v2 and hybrid): what the
    /// periodic tick needs for CPU %, at a sixth of `read_usage`'s cost.
    /// `Ok(None)` when no hierarchy provides it.
    pub fn read_cpu_nsec(&self, control_group: &str) -> Result<Option<u64>> {
        let cg = rel(control_group)?;
        BUF.with(|buf| {
            let mut fresh;
            let mut borrowed;
            let buf: &mut Vec<u8> = match buf.try_borrow_mut() {
                Ok(b) => {
                    borrowed = b;
                    &mut borrowed
                }
                Err(_) => {
                    fresh = Vec::with_capacity(BUF_CAPACITY);
                    &mut fresh
                }
            };
            let mut r = Reader {
                buf,
                missing: false,
            };
            let nsec = match self.layout {
                Layout::Unified => r
                    .keyed(&mut self.root.join(cg), "cpu.stat", b"usage_usec")?
                    .map(|us| us.saturating_mul(1000)),
                Layout::Hybrid | Layout::Legacy => self.read_v1_cpu(&mut r, cg)?,
            };
            if r.missing && nsec.is_none() {
                let dir = self.main_dir(cg)?;
                if !dir.is_dir() {
                    return Err(Error::NotFound { path: dir });
                }
            }
            Ok(nsec)
        })
    }

    /// CPU time on v1 layouts. On hybrid, systemd does not create scopes in
    /// the v1 cpuacct hierarchy, but the unified one has `cpu.stat` for
    /// every cgroup, controller or not; cpuacct is the fallback.
    fn read_v1_cpu(&self, r: &mut Reader<'_>, cg: &str) -> Result<Option<u64>> {
        if self.layout == Layout::Hybrid {
            let usec = r.keyed(
                &mut self.controller_dir("unified", cg),
                "cpu.stat",
                b"usage_usec",
            )?;
            if let Some(us) = usec {
                return Ok(Some(us.saturating_mul(1000)));
            }
        }
        for dir in ["cpuacct", "cpu,cpuacct"] {
            let nsec = r.single(&mut self.controller_dir(dir, cg), "cpuacct.usage")?;
            if nsec.is_some() {
                return Ok(nsec);
            }
        }
        Ok(None)
    }

    /// PIDs in the cgroup (`cgroup.procs`: the v2 or unified hierarchy, on
    /// v1 the name=systemd one, else memory). Not sorted; may hold zombies.
    pub fn read_procs(&self, control_group: &str) -> Result<Vec<u32>> {
        let cg = rel(control_group)?;
        let mut path = self.procs_path(cg);
        if self.layout == Layout::Legacy && !path.exists() {
            path = self.controller_dir("memory", cg).join("cgroup.procs");
        }
        let content = read_existing(&path)?;
        let mut pids = Vec::new();
        for line in content.split(|&b| b == b'\n') {
            let line = trim(line);
            if line.is_empty() {
                continue;
            }
            let pid = parse_u64(line)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| parse_error(&path, "not a pid", line))?;
            pids.push(pid);
        }
        Ok(pids)
    }

    /// Whether any process is in the cgroup or below it: `populated` in
    /// `cgroup.events` (v2, or the unified hierarchy on hybrid — a file that
    /// inotify reports changes of); on v1, a non-empty `cgroup.procs`, which
    /// does not look at child cgroups.
    pub fn read_populated(&self, control_group: &str) -> Result<bool> {
        let cg = rel(control_group)?;
        match self.layout {
            Layout::Unified | Layout::Hybrid => {
                let mut path = self.main_dir(cg)?;
                path.push("cgroup.events");
                let content = read_existing(&path)?;
                match find_key(&content, b"populated") {
                    Some(b"0") => Ok(false),
                    Some(b"1") => Ok(true),
                    Some(other) => Err(parse_error(&path, "populated is not 0 or 1", other)),
                    None => Err(parse_error(&path, "no populated line", &content)),
                }
            }
            Layout::Legacy => Ok(!self.read_procs(control_group)?.is_empty()),
        }
    }

    /// The directory whose existence is the cgroup's: the one systemd
    /// always creates (v2 root, unified on hybrid, name=systemd on v1).
    fn main_dir(&self, control_group: &str) -> Result<PathBuf> {
        let cg = rel(control_group)?;
        Ok(match self.layout {
            Layout::Unified => self.root.join(cg),
            Layout::Hybrid => self.controller_dir("unified", cg),
            Layout::Legacy => self.controller_dir("systemd", cg),
        })
    }

    fn procs_path(&self, cg: &str) -> PathBuf {
        let dir = match self.layout {
            Layout::Unified => self.root.join(cg),
            Layout::Hybrid => self.controller_dir("unified", cg),
            Layout::Legacy => self.controller_dir("systemd", cg),
        };
        dir.join("cgroup.procs")
    }

    fn controller_dir(&self, controller: &str, cg: &str) -> PathBuf {
        let mut p = self.root.join(controller);
        p.push(cg);
        p
    }
}

/// Percent of ONE CPU used between two samples of a cgroup's CPU time
/// (100.0 = one full core; a process busy on two cores shows 200.0).
/// 0.0 when the interval is zero or negative, or the counter went back
/// (a new cgroup under the same name).
pub fn cpu_percent(prev_cpu_nsec: u64, prev_at: Instant, cpu_nsec: u64, at: Instant) -> f64 {
    let Some(interval) = at.checked_duration_since(prev_at) else {
        return 0.0;
    };
    let interval_nsec = interval.as_nanos();
    if interval_nsec == 0 {
        return 0.0;
    }
    let used = cpu_nsec.saturating_sub(prev_cpu_nsec);
    used as f64 * 100.0 / interval_nsec as f64
}

/// `control_group` relative to the root. A `..` component would read
/// outside the hierarchy; systemd never reports one, so refuse it.
fn rel(control_group: &str) -> Result<&str> {
    let cg = control_group.trim_start_matches('/');
    if cg.split('/').any(|c| c == "..") {
        return Err(Error::Parse {
            path: PathBuf::from(control_group),
            detail: "control group path contains '..'".into(),
        });
    }
    Ok(cg)
}

/// Reads files of one cgroup into a shared buffer; remembers whether any
/// file was missing so the caller can check the cgroup itself still exists.
struct Reader<'a> {
    buf: &'a mut Vec<u8>,
    missing: bool,
}

impl Reader<'_> {
    /// Reads `dir/name` into the buffer. `Ok(false)` if it does not exist.
    fn load(&mut self, dir: &mut PathBuf, name: &str) -> Result<bool> {
        dir.push(name);
        let res = read_into(dir, self.buf);
        let out = match res {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.missing = true;
                Ok(false)
            }
            Err(source) => Err(Error::Io {
                path: dir.clone(),
                source,
            }),
        };
        dir.pop();
        out
    }

    /// A file holding one number, like `memory.current`.
    fn single(&mut self, dir: &mut PathBuf, name: &str) -> Result<Option<u64>> {
        if !self.load(dir, name)? {
            return Ok(None);
        }
        let v = trim(self.buf);
        parse_u64(v)
            .map(Some)
            .ok_or_else(|| parse_error(&dir.join(name), "not a number", v))
    }

    /// A flat-keyed file (`key value` lines, like `cpu.stat`). A key the
    /// kernel does not write (older kernel) gives `None`.
    fn keyed(&mut self, dir: &mut PathBuf, name: &str, key: &[u8]) -> Result<Option<u64>> {
        if !self.load(dir, name)? {
            return Ok(None);
        }
        match find_key(self.buf, key) {
            None => Ok(None),
            Some(v) => parse_u64(v)
                .map(Some)
                .ok_or_else(|| parse_error(&dir.join(name), "not a number", v)),
        }
    }

    /// v2 `io.stat`: one line per device, `MAJ:MIN rbytes=N wbytes=N …`.
    /// Exists only while the io controller is enabled for the cgroup; with
    /// no I/O yet it is empty, which is zero bytes.
    fn io_stat(&mut self, dir: &mut PathBuf) -> Result<(Option<u64>, Option<u64>)> {
        if !self.load(dir, "io.stat")? {
            return Ok((None, None));
        }
        let (mut read, mut written) = (0u64, 0u64);
        for line in self.buf.split(|&b| b == b'\n') {
            for field in line.split(|&b| b == b' ').skip(1) {
                let (sum, value) = if let Some(v) = field.strip_prefix(b"rbytes=") {
                    (&mut read, v)
                } else if let Some(v) = field.strip_prefix(b"wbytes=") {
                    (&mut written, v)
                } else {
                    continue;
                };
                let n = parse_u64(value)
                    .ok_or_else(|| parse_error(&dir.join("io.stat"), "bad value", field))?;
                *sum = sum.saturating_add(n);
            }
        }
        Ok((Some(read), Some(written)))
    }

    /// v1 `blkio.throttle.io_service_bytes`: `MAJ:MIN Read N`,
    /// `MAJ:MIN Write N`, … per device, then `Total N` over all operations
    /// and devices. Read and Write are summed over devices.
    fn blkio(&mut self, dir: &mut PathBuf) -> Result<(Option<u64>, Option<u64>)> {
        const NAME: &str = "blkio.throttle.io_service_bytes";
        if !self.load(dir, NAME)? {
            return Ok((None, None));
        }
        let (mut read, mut written) = (0u64, 0u64);
        for line in self.buf.split(|&b| b == b'\n') {
            let mut fields = line.split(|&b| b == b' ');
            let (Some(_dev), Some(op), Some(value)) = (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let sum = match op {
                b"Read" => &mut read,
                b"Write" => &mut written,
                _ => continue,
            };
            let n = parse_u64(trim(value))
                .ok_or_else(|| parse_error(&dir.join(NAME), "bad value", line))?;
            *sum = sum.saturating_add(n);
        }
        Ok((Some(read), Some(written)))
    }
}

/// Reads a whole file into `buf` (cleared first) with plain `read`s: cgroup
/// files report a size of 0 or 4096 whatever they hold, so the size hint
/// `read_to_end` fetches with an extra syscall is no use.
fn read_into(path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut file = File::open(path)?;
    buf.clear();
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(BUF_CAPACITY);
        }
        let start = buf.len();
        buf.resize(buf.capacity(), 0);
        match file.read(&mut buf[start..]) {
            Ok(0) => {
                buf.truncate(start);
                return Ok(());
            }
            Ok(n) => buf.truncate(start + n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => buf.truncate(start),
            Err(e) => {
                buf.truncate(start);
                return Err(e);
            }
        }
    }
}

/// Reads a file that must exist; a missing one means the cgroup is gone.
fn read_existing(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            Error::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            Error::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// The value of `key` in a flat-keyed file (`key value` lines).
fn find_key<'a>(content: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    content.split(|&b| b == b'\n').find_map(|line| {
        line.strip_prefix(key)
            .and_then(|rest| rest.strip_prefix(b" "))
            .map(trim)
    })
}

fn trim(s: &[u8]) -> &[u8] {
    s.trim_ascii()
}

/// Decimal u64 without going through `str`; `None` on anything else,
/// including an empty string, a sign or overflow.
fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

fn parse_error(path: &Path, what: &str, content: &[u8]) -> Error {
    const SHOWN: usize = 64;
    let shown = &content[..content.len().min(SHOWN)];
    Error::Parse {
        path: path.to_path_buf(),
        detail: format!("{what}: {:?}", String::from_utf8_lossy(shown)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::time::Duration;

    /// The ControlGroup systemd reported for the captured scopes (see
    /// tests/fixtures/cgroup/README.md).
    const SCOPE: &str = "/app.slice/app-corral.slice/app-corral-ws.slice/app-corral-web-3.scope";

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/cgroup")
            .join(name)
    }

    /// Writes `files` (path relative to the root, content) into a tempdir.
    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let p = dir.path().join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, content).unwrap();
        }
        dir
    }

    /// A copy of a fixture tree, to modify.
    fn copy_fixture(name: &str) -> tempfile::TempDir {
        fn copy(from: &Path, to: &Path) {
            fs::create_dir_all(to).unwrap();
            for entry in fs::read_dir(from).unwrap() {
                let entry = entry.unwrap();
                let target = to.join(entry.file_name());
                if entry.file_type().unwrap().is_dir() {
                    copy(&entry.path(), &target);
                } else {
                    fs::copy(entry.path(), target).unwrap();
                }
            }
        }
        let dir = tempfile::tempdir().unwrap();
        copy(&fixture(name), dir.path());
        dir
    }

    #[test]
    fn v2_fixture_is_unified() {
        let fs = CgroupFs::detect(fixture("v2")).unwrap();
        assert_eq!(fs.layout(), Layout::Unified);
    }

    #[test]
    fn v2_fixture_usage() {
        let fs = CgroupFs::detect(fixture("v2")).unwrap();
        let usage = fs.read_usage(SCOPE).unwrap();
        assert_eq!(
            usage,
            Usage {
                memory_current: Some(22_302_720),
                memory_peak: Some(23_420_928),
                cpu_usage_nsec: Some(9_796_670_000),
                tasks_current: Some(3),
                io_read_bytes: Some(21_770_240),
                io_write_bytes: Some(20_971_520),
                oom_kills: Some(0),
            }
        );
    }

    #[test]
    fn v2_fixture_procs_and_populated() {
        let fs = CgroupFs::detect(fixture("v2")).unwrap();
        assert!(fs.exists(SCOPE));
        assert_eq!(fs.read_procs(SCOPE).unwrap(), vec![274, 279, 281]);
        assert!(fs.read_populated(SCOPE).unwrap());
    }

    /// The path shape corral's scopes get: a scope in a user manager, where
    /// user@.service is delegated only cpu, memory and pids, so there is
    /// no io.stat.
    #[test]
    fn v2_fixture_user_manager_scope() {
        const USER_SCOPE: &str = "/user.slice/user-1000.slice/user@1000.service/app.slice/\
                                  app-corral.slice/app-corral-ws.slice/app-corral-web-4.scope";
        let fs = CgroupFs::detect(fixture("v2")).unwrap();
        assert_eq!(
            fs.read_usage(USER_SCOPE).unwrap(),
            Usage {
                memory_current: Some(13_414_400),
                memory_peak: Some(14_827_520),
                cpu_usage_nsec: Some(685_839_000),
                tasks_current: Some(2),
                io_read_bytes: None,
                io_write_bytes: None,
                oom_kills: Some(0),
            }
        );
        assert_eq!(fs.read_procs(USER_SCOPE).unwrap(), vec![296, 298]);
        assert!(fs.read_populated(USER_SCOPE).unwrap());
    }

    #[test]
    fn hybrid_fixture_is_hybrid() {
        let fs = CgroupFs::detect(fixture("hybrid")).unwrap();
        assert_eq!(fs.layout(), Layout::Hybrid);
    }

    #[test]
    fn hybrid_fixture_usage() {
        let fs = CgroupFs::detect(fixture("hybrid")).unwrap();
        let usage = fs.read_usage(SCOPE).unwrap();
        assert_eq!(
            usage,
            Usage {
                memory_current: Some(45_768_704),
                memory_peak: Some(53_772_288),
                // From unified/…/cpu.stat: the scope has no cpuacct cgroup.
                cpu_usage_nsec: Some(1_603_750_000),
                tasks_current: Some(1),
                // blkio was not mounted where this was captured.
                io_read_bytes: None,
                io_write_bytes: None,
                oom_kills: Some(0),
            }
        );
    }

    #[test]
    fn hybrid_fixture_procs_and_populated() {
        let fs = CgroupFs::detect(fixture("hybrid")).unwrap();
        assert!(fs.exists(SCOPE));
        assert_eq!(fs.read_procs(SCOPE).unwrap(), vec![49]);
        assert!(fs.read_populated(SCOPE).unwrap());
    }

    #[test]
    fn fixture_missing_cgroup_is_not_found() {
        for name in ["v2", "hybrid"] {
            let fs = CgroupFs::detect(fixture(name)).unwrap();
            let gone = "/app.slice/app-corral.slice/app-corral-gone.scope";
            assert!(!fs.exists(gone));
            assert!(matches!(fs.read_usage(gone), Err(Error::NotFound { .. })));
            assert!(matches!(fs.read_procs(gone), Err(Error::NotFound { .. })));
            assert!(matches!(
                fs.read_populated(gone),
                Err(Error::NotFound { .. })
            ));
        }
    }

    #[test]
    fn control_group_without_leading_slash_is_accepted() {
        let fs = CgroupFs::detect(fixture("v2")).unwrap();
        let usage = fs.read_usage(SCOPE.trim_start_matches('/')).unwrap();
        assert_eq!(usage.tasks_current, Some(3));
    }

    #[test]
    fn dotdot_in_control_group_is_refused() {
        let fs = CgroupFs::detect(fixture("v2")).unwrap();
        assert!(matches!(
            fs.read_usage("/app.slice/../../etc"),
            Err(Error::Parse { .. })
        ));
        assert!(!fs.exists("/.."));
    }

    #[test]
    fn detect_legacy() {
        let dir = tree(&[
            ("systemd/a.scope/cgroup.procs", "7\n8\n"),
            ("memory/a.scope/memory.usage_in_bytes", "4096\n"),
            ("cpuacct/a.scope/cpuacct.usage", "1234567\n"),
        ]);
        let fs = CgroupFs::detect(dir.path()).unwrap();
        assert_eq!(fs.layout(), Layout::Legacy);
        let usage = fs.read_usage("/a.scope").unwrap();
        assert_eq!(usage.memory_current, Some(4096));
        assert_eq!(usage.cpu_usage_nsec, Some(1_234_567));
        assert_eq!(usage.tasks_current, None);
        assert_eq!(fs.read_procs("/a.scope").unwrap(), vec![7, 8]);
        assert!(fs.read_populated("/a.scope").unwrap());
    }

    #[test]
    fn legacy_combined_cpu_cpuacct_and_empty_procs() {
        let dir = tree(&[
            ("systemd/a.scope/cgroup.procs", ""),
            ("cpu,cpuacct/a.scope/cpuacct.usage", "99\n"),
        ]);
        let fs = CgroupFs::detect(dir.path()).unwrap();
        assert_eq!(fs.layout(), Layout::Legacy);
        assert_eq!(fs.read_usage("/a.scope").unwrap().cpu_usage_nsec, Some(99));
        assert!(!fs.read_populated("/a.scope").unwrap());
    }

    #[test]
    fn detect_empty_or_missing_root_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            CgroupFs::detect(dir.path()),
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            CgroupFs::detect(dir.path().join("nope")),
            Err(Error::NotFound { .. })
        ));
    }

    #[test]
    fn v2_missing_memory_peak_is_none() {
        // Linux before 5.19 has no memory.peak.
        let dir = copy_fixture("v2");
        let scope = dir.path().join(SCOPE.trim_start_matches('/'));
        fs::remove_file(scope.join("memory.peak")).unwrap();
        let usage = CgroupFs::detect(dir.path())
            .unwrap()
            .read_usage(SCOPE)
            .unwrap();
        assert_eq!(usage.memory_peak, None);
        assert_eq!(usage.memory_current, Some(22_302_720));
    }

    #[test]
    fn v2_without_controllers_reads_cpu_only() {
        // A cgroup with no controller enabled still has cpu.stat.
        let dir = tree(&[
            ("cgroup.controllers", "cpu io memory pids\n"),
            ("a.scope/cgroup.events", "populated 0\nfrozen 0\n"),
            ("a.scope/cgroup.procs", ""),
            (
                "a.scope/cpu.stat",
                "usage_usec 5\nuser_usec 3\nsystem_usec 2\n",
            ),
        ]);
        let fs = CgroupFs::detect(dir.path()).unwrap();
        let usage = fs.read_usage("/a.scope").unwrap();
        assert_eq!(
            usage,
            Usage {
                cpu_usage_nsec: Some(5000),
                ..Usage::default()
            }
        );
        assert!(!fs.read_populated("/a.scope").unwrap());
        assert!(fs.read_procs("/a.scope").unwrap().is_empty());
    }

    #[test]
    fn v2_io_stat_sums_devices_and_empty_is_zero() {
        let dir = tree(&[
            ("cgroup.controllers", "io\n"),
            (
                "a.scope/io.stat",
                "254:0 rbytes=10 wbytes=20 rios=1 wios=1 dbytes=0 dios=0\n\
                 8:16 rbytes=5 wbytes=7 rios=1 wios=1 dbytes=0 dios=0\n",
            ),
            ("b.scope/io.stat", ""),
        ]);
        let fs = CgroupFs::detect(dir.path()).unwrap();
        let a = fs.read_usage("/a.scope").unwrap();
        assert_eq!((a.io_read_bytes, a.io_write_bytes), (Some(15), Some(27)));
        let b = fs.read_usage("/b.scope").unwrap();
        assert_eq!((b.io_read_bytes, b.io_write_bytes), (Some(0), Some(0)));
    }

    #[test]
    fn v1_blkio_sums_read_and_write_over_devices() {
        // Format of blkio.throttle.io_service_bytes as documented in the
        // kernel's cgroup-v1/blkio-controller.rst (no device had I/O on
        // the capture host, so this one is written by hand).
        let dir = tree(&[
            ("unified/cgroup.controllers", ""),
            ("unified/a.scope/cgroup.events", "populated 1\n"),
            (
                "blkio/a.scope/blkio.throttle.io_service_bytes",
                "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 8192\n8:0 Async 4096\n\
                 8:0 Discard 0\n8:0 Total 12288\n8:16 Read 1\n8:16 Write 2\n\
                 8:16 Sync 0\n8:16 Async 3\n8:16 Discard 0\n8:16 Total 3\nTotal 12291\n",
            ),
        ]);
        let usage = CgroupFs::detect(dir.path())
            .unwrap()
            .read_usage("/a.scope")
            .unwrap();
        assert_eq!(usage.io_read_bytes, Some(4097));
        assert_eq!(usage.io_write_bytes, Some(8194));
    }

    #[test]
    fn hybrid_falls_back_to_cpuacct_without_unified_cpu_stat() {
        let dir = tree(&[
            ("unified/cgroup.controllers", ""),
            ("unified/a.scope/cgroup.events", "populated 1\n"),
            ("cpuacct/a.scope/cpuacct.usage", "42\n"),
        ]);
        let usage = CgroupFs::detect(dir.path())
            .unwrap()
            .read_usage("/a.scope")
            .unwrap();
        assert_eq!(usage.cpu_usage_nsec, Some(42));
    }

    #[test]
    fn garbage_content_is_parse_error() {
        let cases: &[(&str, &str)] = &[
            ("a.scope/memory.current", "lots\n"),
            ("a.scope/memory.current", "-1\n"),
            ("a.scope/memory.current", ""),
            ("a.scope/memory.current", "99999999999999999999999\n"),
            ("a.scope/cpu.stat", "usage_usec x12\n"),
            ("a.scope/io.stat", "254:0 rbytes=1k wbytes=0\n"),
            ("a.scope/memory.events", "oom_kill many\n"),
        ];
        for (file, content) in cases {
            let dir = tree(&[("cgroup.controllers", ""), (file, content)]);
            let res = CgroupFs::detect(dir.path()).unwrap().read_usage("/a.scope");
            match res {
                Err(Error::Parse { path, .. }) => assert!(path.ends_with(file), "{path:?}"),
                other => panic!("{file} = {content:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn garbage_procs_and_events_are_parse_errors() {
        let dir = tree(&[
            ("cgroup.controllers", ""),
            ("a.scope/cgroup.procs", "12\nabc\n"),
            ("a.scope/cgroup.events", "frozen 0\n"),
            ("b.scope/cgroup.events", "populated yes\n"),
        ]);
        let fs = CgroupFs::detect(dir.path()).unwrap();
        assert!(matches!(
            fs.read_procs("/a.scope"),
            Err(Error::Parse { .. })
        ));
        assert!(matches!(
            fs.read_populated("/a.scope"),
            Err(Error::Parse { .. })
        ));
        assert!(matches!(
            fs.read_populated("/b.scope"),
            Err(Error::Parse { .. })
        ));
    }

    #[test]
    fn missing_key_is_none_not_error() {
        // memory.events before Linux 4.13 has no oom_kill line.
        let dir = tree(&[
            ("cgroup.controllers", ""),
            ("a.scope/memory.events", "low 0\nhigh 0\nmax 0\noom 0\n"),
        ]);
        let usage = CgroupFs::detect(dir.path())
            .unwrap()
            .read_usage("/a.scope")
            .unwrap();
        assert_eq!(usage.oom_kills, None);
    }

    #[test]
    fn unreadable_entry_is_io_error() {
        // A directory where a file should be: open works, read fails (EISDIR).
        let dir = tree(&[("cgroup.controllers", ""), ("a.scope/cgroup.procs", "")]);
        fs::create_dir(dir.path().join("a.scope/memory.current")).unwrap();
        let res = CgroupFs::detect(dir.path()).unwrap().read_usage("/a.scope");
        assert!(matches!(res, Err(Error::Io { .. })), "{res:?}");
    }

    #[test]
    fn large_file_is_read_whole() {
        // io.stat with many devices is larger than the initial buffer.
        let mut io = String::new();
        for minor in 0..200 {
            io.push_str(&format!(
                "8:{minor} rbytes=1 wbytes=2 rios=1 wios=1 dbytes=0 dios=0\n"
            ));
        }
        assert!(io.len() > BUF_CAPACITY * 2);
        let dir = tree(&[("cgroup.controllers", ""), ("a.scope/io.stat", &io)]);
        let usage = CgroupFs::detect(dir.path())
            .unwrap()
            .read_usage("/a.scope")
            .unwrap();
        assert_eq!(usage.io_read_bytes, Some(200));
        assert_eq!(usage.io_write_bytes, Some(400));
    }

    #[test]
    fn cpu_alone_matches_the_full_read() {
        for tree in ["v2", "hybrid"] {
            let fs = CgroupFs::detect(fixture(tree)).unwrap();
            let cg = "/app.slice/app-corral.slice/app-corral-ws.slice/app-corral-web-3.scope";
            assert_eq!(
                fs.read_cpu_nsec(cg).unwrap(),
                fs.read_usage(cg).unwrap().cpu_usage_nsec,
                "{tree}"
            );
            assert!(
                matches!(
                    fs.read_cpu_nsec("/no/such.scope"),
                    Err(Error::NotFound { .. })
                ),
                "{tree}"
            );
        }
    }

    #[test]
    fn cpu_percent_math() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(2);
        // One full core for two seconds.
        assert_eq!(cpu_percent(0, t0, 2_000_000_000, t1), 100.0);
        // Half a core.
        assert_eq!(cpu_percent(1_000, t0, 1_000_001_000, t1), 50.0);
        // Two cores busy.
        assert_eq!(cpu_percent(0, t0, 4_000_000_000, t1), 200.0);
        // Idle.
        assert_eq!(cpu_percent(7, t0, 7, t1), 0.0);
        // Zero and negative intervals.
        assert_eq!(cpu_percent(0, t0, 1_000, t0), 0.0);
        assert_eq!(cpu_percent(0, t1, 1_000, t0), 0.0);
        // Counter went back (a new cgroup under the same name).
        assert_eq!(cpu_percent(5_000, t0, 1_000, t1), 0.0);
        // Sub-second interval.
        let t2 = t0 + Duration::from_millis(250);
        assert_eq!(cpu_percent(0, t0, 25_000_000, t2), 10.0);
    }

    #[test]
    fn parse_u64_edges() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"+1"), None);
        assert_eq!(parse_u64(b"max"), None);
    }
}
