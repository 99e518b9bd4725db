//! The child side of the benchmark: modes the bench binary runs in when it
//! is itself the supervised command (`__stamp`) or a one-shot client
//! (`__start-once`). They are picked in `main` before anything else runs,
//! so `__stamp` records the time as close to exec as a Rust program can.

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// argv[1] of the stamp mode.
pub const STAMP: &str = "__stamp";
/// argv[1] of the one-shot client mode.
pub const START_ONCE: &str = "__start-once";

pub fn realtime_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Runs a child mode if argv asks for one; otherwise returns.
pub fn maybe_run() {
    let args: Vec<OsString> = std::env::args_os().collect();
    match args.get(1).and_then(|a| a.to_str()) {
        Some(STAMP) => stamp(&args[2..]),
        Some(START_ONCE) => start_once(),
        _ => {}
    }
}

/// `__stamp FILE [EXIT_AFTER_MS [CODE]]`: appends `start <ns> <pid>` and
/// this process's `/proc/self/cgroup` (lines prefixed `cg `) to FILE in one
/// write; then either sleeps forever or, after EXIT_AFTER_MS, appends
/// `exit <ns>` and exits with CODE. Times are CLOCK_REALTIME nanoseconds,
/// comparable with the bench's own clock readings.
fn stamp(args: &[OsString]) -> ! {
    let now = realtime_ns(SystemTime::now());
    let Some(file) = args.first() else {
        std::process::exit(2);
    };
    let file = Path::new(file);
    let cg = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut text = format!("start {now} {}\n", std::process::id());
    for l in cg.lines() {
        text.push_str("cg ");
        text.push_str(l);
        text.push('\n');
    }
    append(file, &text);
    let num = |i: usize| -> Option<u64> { args.get(i)?.to_str()?.parse().ok() };
    match num(1) {
        None => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        Some(ms) => {
            std::thread::sleep(Duration::from_millis(ms));
            let code = num(2).unwrap_or(0) as i32;
            append(file, &format!("exit {}\n", realtime_ns(SystemTime::now())));
            std::process::exit(code)
        }
    }
}

fn append(file: &Path, text: &str) {
    // One write(2) with O_APPEND: runs of a restarting process never
    // interleave, and a reader sees whole lines.
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
    {
        let _ = f.write_all(text.as_bytes());
    }
}

/// `__start-once`: what a command-line client does — connect to the
/// session bus, call `Start` for `true` in the bench workspace, print the
/// id, exit. The parent times the whole process.
fn start_once() -> ! {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(_) => std::process::exit(3),
    };
    let r: zbus::Result<String> = rt.block_on(async {
        let conn = zbus::Connection::session().await?;
        let mgr = corral::api::ManagerProxy::new(&conn).await?;
        let mut spec = corral::api::StartSpec::new(vec!["true".into()]);
        spec.workspace = Some(crate::WORKSPACE.into());
        Ok(mgr.start(spec.to_dict()).await?.0)
    });
    match r {
        Ok(id) => {
            println!("{id}");
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1)
        }
    }
}

/// What a stamp file says.
#[derive(Debug, Default, Clone)]
pub struct Stamps {
    /// (time ns, pid) of each `start` line, in file order (one per run).
    pub starts: Vec<(u64, u32)>,
    /// Time ns of each `exit` line.
    pub exits: Vec<u64>,
    /// The cgroup lines of the first run.
    pub cgroup: Vec<String>,
}

impl Stamps {
    /// The runs after the first `warm` whose previous run's exit is
    /// stamped, as (run index, exit ns of the run before it).
    pub fn restarts(&self, warm: usize) -> impl Iterator<Item = (usize, u64)> + '_ {
        ((warm + 1)..self.starts.len().min(self.exits.len() + 1)).map(|k| (k, self.exits[k - 1]))
    }
}

impl Stamps {
    /// Parses the complete lines of `text`.
    pub fn parse(text: &str) -> Stamps {
        let mut s = Stamps::default();
        let complete = match text.rfind('\n') {
            Some(i) => &text[..=i],
            None => "",
        };
        for l in complete.lines() {
            let mut w = l.split_whitespace();
            match w.next() {
                Some("start") => {
                    let t = w.next().and_then(|x| x.parse().ok()).unwrap_or(0);
                    let p = w.next().and_then(|x| x.parse().ok()).unwrap_or(0);
                    s.starts.push((t, p));
                }
                Some("exit") => s
                    .exits
                    .push(w.next().and_then(|x| x.parse().ok()).unwrap_or(0)),
                Some("cg") if s.starts.len() == 1 => s.cgroup.push(l[3..].to_string()),
                _ => {}
            }
        }
        s
    }

    pub fn read(file: &Path) -> Stamps {
        Stamps::parse(&std::fs::read_to_string(file).unwrap_or_default())
    }

    /// The cgroup path in the unified (`0::`) or name=systemd hierarchy.
    pub fn scope_cgroup(&self) -> Option<&str> {
        let unified = self.cgroup.iter().find_map(|l| l.strip_prefix("0::"));
        unified.or_else(|| {
            self.cgroup
                .iter()
                .find_map(|l| l.split_once(":name=systemd:").map(|(_, p)| p))
        })
    }
}
