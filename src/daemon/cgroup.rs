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
//! The tick reads usage of every supervised process every second, so the
//! files are read into a per-thread buffer that is reused and parsed in
//! place without allocating, and the tick keeps each sampled cgroup's
//! files open between reads ([`Sampler`]), re-reading them with `pread`.

mod live;
mod sampler;

pub use sampler::Sampler;

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
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
        self.usage_with(control_group, None)
    }

    /// `read_usage` through the files `kept` holds open, opening those it
    /// lacks into it; `None` opens and closes each file.
    fn usage_with(&self, control_group: &str, kept: Option<&mut Kept>) -> Result<Usage> {
        self.read_fields(control_group, kept, true, true)
    }

    /// What the history stores but the CPU time, which the tick reads
    /// first: memory, tasks and IO, without the peak and the OOM count —
    /// three files instead of six, on the tick that reads every running
    /// process's cgroup each second.
    fn history_usage_but_cpu_with(
        &self,
        control_group: &str,
        kept: Option<&mut Kept>,
    ) -> Result<Usage> {
        self.read_fields(control_group, kept, false, false)
    }

    /// Usage of `control_group`; the peak and the OOM count only if
    /// `full`, the CPU time only if `with_cpu`.
    fn read_fields(
        &self,
        control_group: &str,
        kept: Option<&mut Kept>,
        full: bool,
        with_cpu: bool,
    ) -> Result<Usage> {
        let cg = rel(control_group)?;
        with_buf(|buf| {
            let mut r = Reader::new(self, cg, buf, kept);
            let usage = match self.layout {
                Layout::Unified => {
                    let memory_current = r.single(UsageFile::V2MemoryCurrent)?;
                    let memory_peak = r.single_if(full, UsageFile::V2MemoryPeak)?;
                    let cpu_usec = if with_cpu {
                        r.keyed(UsageFile::V2CpuStat, b"usage_usec")?
                    } else {
                        None
                    };
                    let tasks_current = r.single(UsageFile::V2Pids)?;
                    let (io_read_bytes, io_write_bytes) = r.io_stat()?;
                    let oom_kills = if full {
                        r.keyed(UsageFile::V2MemoryEvents, b"oom_kill")?
                    } else {
                        None
                    };
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
                    let memory_current = r.single(UsageFile::V1MemoryUsage)?;
                    let memory_peak = r.single_if(full, UsageFile::V1MemoryMaxUsage)?;
                    let oom_kills = if full {
                        r.keyed(UsageFile::V1OomControl, b"oom_kill")?
                    } else {
                        None
                    };
                    let tasks_current = r.single(UsageFile::V1Pids)?;
                    let cpu_usage_nsec = if with_cpu { r.v1_cpu()? } else { None };
                    let (io_read_bytes, io_write_bytes) = r.blkio()?;
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
            r.check_exists()?;
            Ok(usage)
        })
    }

    /// Only the CPU time of a cgroup (one file on v2 and hybrid): what the
    /// periodic tick needs for CPU %, at a sixth of `read_usage`'s cost.
    /// `Ok(None)` when no hierarchy provides it.
    #[cfg(test)]
    pub fn read_cpu_nsec(&self, control_group: &str) -> Result<Option<u64>> {
        self.cpu_nsec_with(control_group, None)
    }

    /// `read_cpu_nsec` through `kept`, as for [`CgroupFs::usage_with`].
    fn cpu_nsec_with(&self, control_group: &str, kept: Option<&mut Kept>) -> Result<Option<u64>> {
        let cg = rel(control_group)?;
        with_buf(|buf| {
            let mut r = Reader::new(self, cg, buf, kept);
            let nsec = match self.layout {
                Layout::Unified => r
                    .keyed(UsageFile::V2CpuStat, b"usage_usec")?
                    .map(|us| us.saturating_mul(1000)),
                Layout::Hybrid | Layout::Legacy => r.v1_cpu()?,
            };
            if nsec.is_none() {
                r.check_exists()?;
            }
            Ok(nsec)
        })
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

/// Runs `f` with this thread's reusable buffer.
fn with_buf<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    BUF.with(|buf| {
        // A reentrant call cannot happen (nothing here calls back into a
        // read), but fall back to a fresh buffer rather than panic.
        match buf.try_borrow_mut() {
            Ok(mut buf) => f(&mut buf),
            Err(_) => f(&mut Vec::with_capacity(BUF_CAPACITY)),
        }
    })
}

/// Every file a usage read may need, on any layout.
#[derive(Debug, Clone, Copy)]
enum UsageFile {
    V2MemoryCurrent,
    V2MemoryPeak,
    V2CpuStat,
    V2Pids,
    V2IoStat,
    V2MemoryEvents,
    V1MemoryUsage,
    V1MemoryMaxUsage,
    V1OomControl,
    V1Pids,
    /// `cpu.stat` of the unified hierarchy on hybrid hosts.
    UnifiedCpuStat,
    CpuacctUsage,
    CpuCpuacctUsage,
    V1Blkio,
}

impl UsageFile {
    const COUNT: usize = 14;

    /// The hierarchy (`None`: the root, for v2) and the file name.
    fn place(self) -> (Option<&'static str>, &'static str) {
        use UsageFile::*;
        match self {
            V2MemoryCurrent => (None, "memory.current"),
            V2MemoryPeak => (None, "memory.peak"),
            V2CpuStat => (None, "cpu.stat"),
            V2Pids => (None, "pids.current"),
            V2IoStat => (None, "io.stat"),
            V2MemoryEvents => (None, "memory.events"),
            V1MemoryUsage => (Some("memory"), "memory.usage_in_bytes"),
            V1MemoryMaxUsage => (Some("memory"), "memory.max_usage_in_bytes"),
            V1OomControl => (Some("memory"), "memory.oom_control"),
            V1Pids => (Some("pids"), "pids.current"),
            UnifiedCpuStat => (Some("unified"), "cpu.stat"),
            CpuacctUsage => (Some("cpuacct"), "cpuacct.usage"),
            CpuCpuacctUsage => (Some("cpu,cpuacct"), "cpuacct.usage"),
            V1Blkio => (Some("blkio"), "blkio.throttle.io_service_bytes"),
        }
    }
}

/// How often, in reads of a [`Kept`], a file found missing is looked for
/// again (a controller enabled later makes it appear).
const MISSING_RECHECK: u32 = 60;

/// One usage file of a [`Kept`] cgroup.
#[derive(Debug, Default)]
enum Slot {
    #[default]
    Unopened,
    /// Did not exist at this read of the cgroup.
    Missing(u32),
    Open(File),
}

/// The usage files of one cgroup, kept open between reads and re-read
/// with `pread` at offset 0: cgroupfs files are kernfs seq files, which
/// produce their content afresh on a read at offset 0 (v1 and v2 alike),
/// so the path walk and the open/close of every read are saved. Files
/// are opened when first read. Once the cgroup is removed a read of a
/// kept file fails (`ENODEV`); the holder then drops this and reads by
/// path, which tells a gone cgroup from a new one of the same name.
#[derive(Debug, Default)]
struct Kept {
    slots: [Slot; UsageFile::COUNT],
    reads: u32,
}

impl Kept {
    /// Reads `file` into `buf`; `Ok(false)` if it does not exist.
    fn load(
        &mut self,
        file: UsageFile,
        path: impl FnOnce() -> PathBuf,
        buf: &mut Vec<u8>,
    ) -> io::Result<bool> {
        let slot = &mut self.slots[file as usize];
        match slot {
            Slot::Open(f) => return pread_into(f, buf).map(|()| true),
            Slot::Missing(at) if self.reads.wrapping_sub(*at) < MISSING_RECHECK => {
                return Ok(false)
            }
            Slot::Missing(_) | Slot::Unopened => {}
        }
        match File::open(path()) {
            Ok(f) => {
                pread_into(&f, buf)?;
                *slot = Slot::Open(f);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                *slot = Slot::Missing(self.reads);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Open files held.
    #[cfg(test)]
    fn open_files(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s, Slot::Open(_)))
            .count()
    }
}

/// Reads usage files of one cgroup into a shared buffer, through a
/// [`Kept`] or by path; remembers whether any file was missing so the
/// caller can check the cgroup itself still exists.
struct Reader<'a> {
    fs: &'a CgroupFs,
    cg: &'a str,
    buf: &'a mut Vec<u8>,
    kept: Option<&'a mut Kept>,
    missing: bool,
    /// A file was read through `kept`.
    found: bool,
}

impl<'a> Reader<'a> {
    fn new(
        fs: &'a CgroupFs,
        cg: &'a str,
        buf: &'a mut Vec<u8>,
        mut kept: Option<&'a mut Kept>,
    ) -> Self {
        if let Some(k) = kept.as_deref_mut() {
            k.reads = k.reads.wrapping_add(1);
        }
        Reader {
            fs,
            cg,
            buf,
            kept,
            missing: false,
            found: false,
        }
    }

    fn path(&self, file: UsageFile) -> PathBuf {
        Reader::path_of(self.fs, self.cg, file)
    }

    /// Reads `file` into the buffer. `Ok(false)` if it does not exist.
    fn load(&mut self, file: UsageFile) -> Result<bool> {
        let res = match self.kept.as_deref_mut() {
            Some(kept) => {
                let (fs, cg) = (self.fs, self.cg);
                let res = kept.load(file, || Reader::path_of(fs, cg, file), self.buf);
                self.found |= matches!(res, Ok(true));
                res
            }
            None => read_into(&self.path(file), self.buf).map(|()| true),
        };
        match res {
            Ok(found) => {
                self.missing |= !found;
                Ok(found)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.missing = true;
                Ok(false)
            }
            Err(source) => Err(Error::Io {
                path: self.path(file),
                source,
            }),
        }
    }

    fn path_of(fs: &CgroupFs, cg: &str, file: UsageFile) -> PathBuf {
        let (hierarchy, name) = file.place();
        let mut p = match hierarchy {
            Some(h) => fs.root.join(h),
            None => fs.root.clone(),
        };
        p.push(cg);
        p.push(name);
        p
    }

    /// Where a file was missing: `NotFound` if the cgroup itself is gone.
    /// Every missing file takes this path, so a cgroup that does not exist
    /// (or was removed between two reads) is told apart from one whose
    /// controllers are off at the cost of one stat, and only then. A file
    /// read through kept-open files proves the cgroup is there (a removed
    /// one's fail), which saves that stat on every tick.
    fn check_exists(&self) -> Result<()> {
        if self.missing && !self.found {
            let dir = self.fs.main_dir(self.cg)?;
            if !dir.is_dir() {
                return Err(Error::NotFound { path: dir });
            }
        }
        Ok(())
    }

    /// `single(file)` if `read`, else `None` without touching the file.
    fn single_if(&mut self, read: bool, file: UsageFile) -> Result<Option<u64>> {
        if read {
            self.single(file)
        } else {
            Ok(None)
        }
    }

    /// A file holding one number, like `memory.current`.
    fn single(&mut self, file: UsageFile) -> Result<Option<u64>> {
        if !self.load(file)? {
            return Ok(None);
        }
        let v = trim(self.buf);
        parse_u64(v)
            .map(Some)
            .ok_or_else(|| parse_error(&self.path(file), "not a number", v))
    }

    /// A flat-keyed file (`key value` lines, like `cpu.stat`). A key the
    /// kernel does not write (older kernel) gives `None`.
    fn keyed(&mut self, file: UsageFile, key: &[u8]) -> Result<Option<u64>> {
        if !self.load(file)? {
            return Ok(None);
        }
        match find_key(self.buf, key) {
            None => Ok(None),
            Some(v) => parse_u64(v)
                .map(Some)
                .ok_or_else(|| parse_error(&self.path(file), "not a number", v)),
        }
    }

    /// CPU time on v1 layouts. On hybrid, systemd does not create scopes in
    /// the v1 cpuacct hierarchy, but the unified one has `cpu.stat` for
    /// every cgroup, controller or not; cpuacct is the fallback.
    fn v1_cpu(&mut self) -> Result<Option<u64>> {
        if self.fs.layout == Layout::Hybrid {
            if let Some(us) = self.keyed(UsageFile::UnifiedCpuStat, b"usage_usec")? {
                return Ok(Some(us.saturating_mul(1000)));
            }
        }
        for file in [UsageFile::CpuacctUsage, UsageFile::CpuCpuacctUsage] {
            let nsec = self.single(file)?;
            if nsec.is_some() {
                return Ok(nsec);
            }
        }
        Ok(None)
    }

    /// v2 `io.stat`: one line per device, `MAJ:MIN rbytes=N wbytes=N …`.
    /// Exists only while the io controller is enabled for the cgroup; with
    /// no I/O yet it is empty, which is zero bytes.
    fn io_stat(&mut self) -> Result<(Option<u64>, Option<u64>)> {
        let file = UsageFile::V2IoStat;
        if !self.load(file)? {
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
                    .ok_or_else(|| parse_error(&self.path(file), "bad value", field))?;
                *sum = sum.saturating_add(n);
            }
        }
        Ok((Some(read), Some(written)))
    }

    /// v1 `blkio.throttle.io_service_bytes`: `MAJ:MIN Read N`,
    /// `MAJ:MIN Write N`, … per device, then `Total N` over all operations
    /// and devices. Read and Write are summed over devices.
    fn blkio(&mut self) -> Result<(Option<u64>, Option<u64>)> {
        let file = UsageFile::V1Blkio;
        if !self.load(file)? {
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
                .ok_or_else(|| parse_error(&self.path(file), "bad value", line))?;
            *sum = sum.saturating_add(n);
        }
        Ok((Some(read), Some(written)))
    }
}

/// Reads a whole kept-open file into `buf` (cleared first) with `pread`
/// from offset 0, which makes cgroupfs produce it afresh.
///
/// A read that leaves room in the buffer ends it: cgroup files are
/// seq_files, whose read fills the buffer unless the content ends first,
/// and asking again for the end-of-file `0` would make the kernel
/// generate the whole file a second time (half of the tick's cost).
fn pread_into(file: &File, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(BUF_CAPACITY);
        }
        let start = buf.len();
        buf.resize(buf.capacity(), 0);
        let room = buf.len() - start;
        match file.read_at(&mut buf[start..], start as u64) {
            Ok(n) if n < room => {
                buf.truncate(start + n);
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
        let room = buf.len() - start;
        // A short read ends it, as for `pread_into`.
        match file.read(&mut buf[start..]) {
            Ok(n) if n < room => {
                buf.truncate(start + n);
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
    fn kept_files_read_what_path_reads() {
        const USER_SCOPE: &str = "/user.slice/user-1000.slice/user@1000.service/app.slice/\
                                  app-corral.slice/app-corral-ws.slice/app-corral-web-4.scope";
        for (tree, cg) in [("v2", SCOPE), ("v2", USER_SCOPE), ("hybrid", SCOPE)] {
            let fs = CgroupFs::detect(fixture(tree)).unwrap();
            let mut kept = Kept::default();
            for _ in 0..2 {
                assert_eq!(
                    fs.usage_with(cg, Some(&mut kept)).unwrap(),
                    fs.read_usage(cg).unwrap(),
                    "{tree} {cg}"
                );
                assert_eq!(
                    fs.cpu_nsec_with(cg, Some(&mut kept)).unwrap(),
                    fs.read_cpu_nsec(cg).unwrap(),
                    "{tree} {cg}"
                );
                // The history's read: the same figures, less the CPU time,
                // the peak and the OOM count, which the fixtures have.
                let full = fs.read_usage(cg).unwrap();
                assert!(full.memory_peak.is_some() && full.oom_kills.is_some());
                let history = Usage {
                    memory_peak: None,
                    oom_kills: None,
                    cpu_usage_nsec: None,
                    ..full
                };
                assert_eq!(
                    fs.history_usage_but_cpu_with(cg, Some(&mut kept)).unwrap(),
                    history,
                    "{tree} {cg}"
                );
                assert_eq!(fs.history_usage_but_cpu_with(cg, None).unwrap(), history);
            }
            assert!(kept.open_files() > 0);
            let mut kept = Kept::default();
            assert!(matches!(
                fs.usage_with("/no/such.scope", Some(&mut kept)),
                Err(Error::NotFound { .. })
            ));
        }
    }

    #[test]
    fn kept_files_see_each_new_value() {
        let dir = tree(&[
            ("cgroup.controllers", "cpu memory pids\n"),
            ("a.scope/memory.current", "4096\n"),
            (
                "a.scope/cpu.stat",
                "usage_usec 5\nuser_usec 3\nsystem_usec 2\n",
            ),
            ("a.scope/pids.current", "12\n"),
        ]);
        let fs = CgroupFs::detect(dir.path()).unwrap();
        let mut kept = Kept::default();
        let first = fs.usage_with("/a.scope", Some(&mut kept)).unwrap();
        assert_eq!(first.memory_current, Some(4096));
        assert_eq!(first.cpu_usage_nsec, Some(5000));
        assert_eq!(first.tasks_current, Some(12));
        assert_eq!(kept.open_files(), 3);
        // Rewritten in place (same inode, as cgroupfs content changes):
        // shorter, and longer than before.
        let scope = dir.path().join("a.scope");
        fs::write(scope.join("memory.current"), "8\n").unwrap();
        fs::write(
            scope.join("cpu.stat"),
            "usage_usec 123456789\nuser_usec 1\n",
        )
        .unwrap();
        let second = fs.usage_with("/a.scope", Some(&mut kept)).unwrap();
        assert_eq!(second.memory_current, Some(8));
        assert_eq!(second.cpu_usage_nsec, Some(123_456_789_000));
        assert_eq!(second.tasks_current, Some(12));
        assert_eq!(
            fs.cpu_nsec_with("/a.scope", Some(&mut kept)).unwrap(),
            Some(123_456_789_000)
        );
        assert_eq!(kept.open_files(), 3, "nothing reopened");
    }

    #[test]
    fn kept_files_find_a_file_that_appears_later() {
        let dir = tree(&[
            ("cgroup.controllers", "cpu memory\n"),
            ("a.scope/cpu.stat", "usage_usec 5\n"),
        ]);
        let fs = CgroupFs::detect(dir.path()).unwrap();
        let mut kept = Kept::default();
        assert_eq!(
            fs.usage_with("/a.scope", Some(&mut kept))
                .unwrap()
                .tasks_current,
            None
        );
        fs::write(dir.path().join("a.scope/pids.current"), "3\n").unwrap();
        let reads = (1..=MISSING_RECHECK)
            .map(|_| {
                fs.usage_with("/a.scope", Some(&mut kept))
                    .unwrap()
                    .tasks_current
            })
            .collect::<Vec<_>>();
        assert_eq!(reads.last(), Some(&Some(3)));
        assert!(reads[..reads.len() - 1].iter().all(Option::is_none));
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
