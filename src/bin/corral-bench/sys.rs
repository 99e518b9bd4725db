//! Readers of /proc for the footprint and terminal figures (RSS, CPU
//! ticks, parents, PSS of the shims) and the description of the machine
//! the run happened on.

use std::process::Command;

/// `VmRSS` of `pid` in KiB.
pub fn read_rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// utime + stime of `pid` in clock ticks (threads that ended included).
pub fn read_cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised comm: state is field 3, utime 14, stime 15.
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The parent of `pid` (field 4 of `/proc/PID/stat`).
pub fn read_ppid(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub fn read_comm(pid: u32) -> Option<String> {
    Some(
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()?
            .trim()
            .to_string(),
    )
}

pub fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Memory of one process from `smaps_rollup`, KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rollup {
    pub rss: u64,
    pub pss: u64,
    /// Private_Clean + Private_Dirty: what the process alone costs.
    pub uss: u64,
}

pub fn read_rollup(pid: u32) -> Option<Rollup> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let mut r = Rollup::default();
    for l in s.lines() {
        let mut w = l.split_whitespace();
        let (Some(k), Some(v)) = (w.next(), w.next().and_then(|v| v.parse::<u64>().ok())) else {
            continue;
        };
        match k {
            "Rss:" => r.rss = v,
            "Pss:" => r.pss = v,
            "Private_Clean:" | "Private_Dirty:" => r.uss += v,
            _ => {}
        }
    }
    Some(r)
}

/// Every pid whose comm is `comm` (in our PID namespace).
pub fn pids_by_comm(comm: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| read_comm(*p).as_deref() == Some(comm))
        .collect()
}

/// Whether `pid` is in a corral scope (a supervised process's shim, not
/// one of the agent's pooled shims still waiting in the agent's cgroup).
pub fn in_corral_scope(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .is_ok_and(|c| c.contains("/app-corral-") && c.contains(".scope"))
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_default()
}

/// The machine: nproc, CPU model, kernel, memory, versions, date.
pub fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    serde_json::json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "kernel": format!("{} {}", read("/proc/sys/kernel/osrelease"), read("/proc/sys/kernel/version")),
        "mem_total_mib": mem_kb / 1024,
        "systemd": first_line("systemctl", &["--version"]),
        "dbus": first_line("dbus-daemon", &["--version"]),
        "cgroups": if std::path::Path::new("/sys/fs/cgroup/unified").exists() { "hybrid (v1 controllers + unified v2)" } else { "v2" },
        "date_utc": first_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        "corral_rev": std::env::var("CORRAL_BENCH_REV").unwrap_or_default(),
    })
}

/// Whole-machine CPU time from /proc/stat: (busy, total) in ticks, all
/// CPUs. /proc/stat is not namespaced, so this sees everything on the
/// machine — including work that is not ours and competes with it.
pub fn read_machine_cpu() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let line = s.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Measures how busy the whole machine was between `new` and `percent`.
pub struct Busy(Option<(u64, u64)>);

impl Busy {
    pub fn new() -> Busy {
        Busy(read_machine_cpu())
    }

    /// Busy share of all CPUs since `new`, percent.
    pub fn percent(&self) -> Option<f64> {
        let (b0, t0) = self.0?;
        let (b1, t1) = read_machine_cpu()?;
        (t1 > t0).then(|| (b1 - b0) as f64 / (t1 - t0) as f64 * 100.0)
    }
}

/// Memory cgroups on the machine, live and dying (`/proc/cgroups`): a
/// removed scope's memory cgroup lingers until its page cache is gone.
pub fn memory_cgroups() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/cgroups").ok()?;
    s.lines()
        .find(|l| l.starts_with("memory\t"))?
        .split('\t')
        .nth(2)?
        .parse()
        .ok()
}

/// Writes dirty pages back and drops the page cache (root only).
pub fn drop_caches() -> std::io::Result<()> {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3")
}
