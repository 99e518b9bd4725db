//! Section "peers" (issue 14 item 1): corral next to pm2 and supervisord,
//! each measured in this run on the same rows — start one process, start a
//! batch (one CLI call each, and the tool's batch form), crash →
//! replacement, the daemon's RSS and CPU at 0, 200 (and 1,000) processes,
//! status of every process from the CLI, the memory a tool reports for a
//! process tree against the tree's real PSS, and the processes a stop
//! leaves behind. The peers are installed by the bench itself (npm, a
//! Python venv) into a cache under the target directory and reused; a peer
//! that cannot be installed is noted and skipped. Each tool runs with a
//! private daemon (corral: its own corrald; pm2: a fresh `PM2_HOME`;
//! supervisord: a private config and socket) that is shut down — and
//! whatever it started swept by PID — before the next one starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use tokio::process::{Child, Command};

use super::agent::{fresh_dir, wait_stamp, Agent};
use corral::project::MAX_PROCESSES;

use super::probe::{self, STAMP};
use super::{list_workspace, measure_window, ms, remove_all, spec, stamp_cmd, wall_ms, Bench};

const SEC: &str = "8 peers";
const PM2_VERSION: &str = "6.0.14";
const SUPERVISOR_VERSION: &str = "4.3.0";
/// The most one CLI call (or an install) may take.
const CLI_LIMIT: Duration = Duration::from_secs(120);
const INSTALL_LIMIT: Duration = Duration::from_secs(600);
/// Children of the memory tree, each holding `TREE_MB` MiB.
const TREE_CHILDREN: usize = 4;
const TREE_MB: usize = 20;
/// Processes of the stop tree while it runs: the shell, a plain child, a
/// double-forked one, a `setsid` one, and a `setsid` shell with a child.
const STOP_TREE: usize = 6;

/// The memory tree: `sh FILE MARKER PYTHON MB N`; N children that each
/// write MB MiB and sleep. Every process has MARKER in
/// its argv.
const MEM_TREE: &str = r#"m=$1; py=$2; mb=$3
for i in $(seq "$4"); do
  "$py" -c 'import sys, time; b = b"x" * (int(sys.argv[2]) << 20); time.sleep(100000)' "$m" "$mb" &
done
wait
"#;

/// The stop tree: `sh FILE MARKER BENCH`; children that stay in the
/// parent's process group, leave it by a double fork, or start sessions
/// of their own. Every process has MARKER in its argv.
const STOP_TREE_SH: &str = r#"m=$1; b=$2
"$b" __stamp "$m/a" &
( "$b" __stamp "$m/b" & )
setsid "$b" __stamp "$m/c" &
setsid sh -c '"$0" __stamp "$1/d" & wait' "$b" "$m" &
wait
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Corral,
    Pm2,
    Supervisord,
}

impl Tool {
    fn key(self) -> &'static str {
        match self {
            Tool::Corral => "corral",
            Tool::Pm2 => "pm2",
            Tool::Supervisord => "supervisord",
        }
    }
}

/// One tool under comparison with its private daemon.
struct Peer {
    tool: Tool,
    /// corralctl, pm2 or supervisorctl.
    ctl: PathBuf,
    /// Private: stamp files, config, PM2_HOME, logs.
    dir: PathBuf,
    /// corrald, pm2's God daemon or supervisord.
    daemon_pid: u32,
    agent: Option<Agent>,
    /// supervisord runs in the foreground as our child.
    child: Option<Child>,
}

impl Peer {
    /// A CLI call of this tool's control program.
    fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut c = Command::new(&self.ctl);
        match self.tool {
            Tool::Corral => {}
            Tool::Pm2 => {
                c.env("PM2_HOME", self.dir.join("home"));
            }
            Tool::Supervisord => {
                c.arg("-c").arg(self.dir.join("supervisord.conf"));
            }
        }
        c.args(args);
        c
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Runs `cmd` (no stdin, killed after [`CLI_LIMIT`]); fails on a non-zero
/// exit when `check`.
async fn run(mut cmd: Command, what: &str, check: bool) -> Result<Output> {
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(CLI_LIMIT, cmd.output())
        .await
        .with_context(|| format!("{what}: no answer in {} s", CLI_LIMIT.as_secs()))?
        .with_context(|| format!("running {what}"))?;
    if check && !out.status.success() {
        bail!(
            "{what}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Live (not zombie) processes whose argv contains `marker`, but not us.
fn pids_with(marker: &str) -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| p != me)
        .filter(|&p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .filter(|&p| alive(p))
        .collect()
}

/// SIGKILLs every process whose argv contains `marker`; returns how many.
fn sweep(marker: &str) -> usize {
    let pids = pids_with(marker);
    for &p in &pids {
        // SAFETY: kill(2); the pids carry our private marker in argv.
        unsafe { libc::kill(p as i32, libc::SIGKILL) };
    }
    pids.len()
}

/// Whether `pid` exists and is not a zombie: an orphan that ended may
/// wait a while for its reaper.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s.rsplit_once(')')?.1.split_whitespace().next()? != "Z"))
        .unwrap_or(false)
}

/// Waits until every file in `files` holds a start stamp; the latest
/// stamp, or None after `limit`.
async fn wait_all_stamped(files: &[PathBuf], limit: Duration) -> Option<u64> {
    let t = Instant::now();
    let mut pending: Vec<&PathBuf> = files.iter().collect();
    let mut latest = 0;
    loop {
        pending.retain(|f| match probe::Stamps::read(f).starts.first() {
            Some((ns, _)) => {
                latest = latest.max(*ns);
                false
            }
            None => true,
        });
        if pending.is_empty() {
            return Some(latest);
        }
        if t.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Where the peers are installed: `$CARGO_TARGET_DIR/bench-peers`, else
/// next to the directory of the binaries under test (`target/bench-peers`).
fn cache_dir(corrald: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => PathBuf::from(t).join("bench-peers"),
        None => corrald
            .parent()
            .and_then(Path::parent)
            .map(|t| t.join("bench-peers"))
            .unwrap_or_else(|| PathBuf::from("target/bench-peers")),
    }
}

/// Installs a peer into `dir` with `steps` unless a finished install is
/// there; returns the install's seconds (None when reused).
async fn install(dir: &Path, steps: &[Vec<String>]) -> Result<Option<f64>> {
    let done = dir.join(".installed");
    if done.exists() {
        return Ok(None);
    }
    let _ = std::fs::remove_dir_all(dir);
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let t = Instant::now();
    for step in steps {
        let mut c = Command::new(&step[0]);
        c.args(&step[1..]).stdin(Stdio::null()).kill_on_drop(true);
        let out = tokio::time::timeout(INSTALL_LIMIT, c.output())
            .await
            .with_context(|| format!("{}: over {} s", step.join(" "), INSTALL_LIMIT.as_secs()))?
            .with_context(|| format!("running {}", step[0]))?;
        if !out.status.success() {
            // Nothing half-installed is left to look like a cache.
            let _ = std::fs::remove_dir_all(dir);
            let err = String::from_utf8_lossy(&out.stderr);
            bail!(
                "{} failed ({}): {}",
                step.join(" "),
                out.status,
                super::tail(err.trim(), 2).replace('\n', " | ")
            );
        }
    }
    std::fs::write(&done, "")?;
    Ok(Some(t.elapsed().as_secs_f64()))
}

impl Bench {
    pub(super) async fn peers(&mut self) -> Result<()> {
        eprintln!("8 peers: corral, pm2 {PM2_VERSION} and supervisord {SUPERVISOR_VERSION} on the same rows");
        let cache = cache_dir(&self.bins.corrald);
        let pm2_dir = cache.join(format!("pm2-{PM2_VERSION}"));
        let sup_dir = cache.join(format!("supervisor-{SUPERVISOR_VERSION}"));
        let mut tools = vec![Tool::Corral];
        tools.extend(self.install_peers(&pm2_dir, &sup_dir).await);
        for tool in tools {
            let ctl = match tool {
                Tool::Corral => self.bins.corralctl.clone(),
                Tool::Pm2 => pm2_dir.join("node_modules/.bin/pm2"),
                Tool::Supervisord => sup_dir.join("bin/supervisorctl"),
            };
            self.same_start(tool);
            let dir = fresh_dir(&format!("corral-bench-peers-{}", tool.key()))?;
            let peer = match self.peer_up(tool, ctl, dir.clone(), &sup_dir).await {
                Ok(p) => p,
                Err(e) if tool == Tool::Corral => return Err(e),
                Err(e) => {
                    // A daemon that started has the directory in its argv.
                    sweep(&dir.display().to_string());
                    let _ = std::fs::remove_dir_all(&dir);
                    self.rep.notes.push(format!(
                        "8 peers: {} not measured, its daemon did not start: {e:#}",
                        tool.key()
                    ));
                    continue;
                }
            };
            let r = self.peer_rows(&peer).await;
            let down = self.peer_down(peer).await;
            if let Err(e) = r {
                self.rep.notes.push(format!(
                    "8 peers: {}: a row failed and the rows after it were skipped: {e:#}",
                    tool.key()
                ));
            }
            down?;
        }
        let n = self
            .plan
            .counts
            .iter()
            .copied()
            .find(|&n| n > 0)
            .unwrap_or(0);
        for (row, what) in [
            ("start", "start one → first instruction"),
            ("each", "start a batch, one call each → all running"),
            ("fill", "start a batch, batch form → all running"),
            ("restart", "crash → replacement's first instruction"),
            ("status", "status of every process (CLI)"),
        ] {
            let key = |t: &str| match row {
                "each" | "fill" | "status" => format!("peers.{row}.n{n}.{t}"),
                _ => format!("peers.{row}.{t}"),
            };
            let (c, p, s) = (key("corral"), key("pm2"), key("supervisord"));
            self.rep
                .ratio(&format!("{what}: corral / pm2"), &c, &p, None);
            self.rep
                .ratio(&format!("{what}: corral / supervisord"), &c, &s, None);
        }
        Ok(())
    }

    /// Gives each tool the same machine to start on: dirty pages written
    /// back and the page cache dropped. The sections before this one
    /// created and removed thousands of scopes, and a removed scope's
    /// memory cgroup lingers (dying) until its page cache is reclaimed,
    /// slowing every cgroup operation after it — corral's rows, not the
    /// peers', which make no cgroups. Each tool's daemon then loads its
    /// own files again before its first row.
    fn same_start(&mut self, tool: Tool) {
        let count = || super::sys::memory_cgroups().map_or("?".into(), |n| n.to_string());
        let before = count();
        let note = match super::sys::drop_caches() {
            Ok(()) => format!(
                "8 peers: {}: page cache dropped before its rows; memory cgroups (live and dying) {before} → {}",
                tool.key(),
                count(),
            ),
            Err(e) => format!(
                "8 peers: {}: could not drop the page cache before its rows ({e}); memory cgroups (live and dying) {before}",
                tool.key(),
            ),
        };
        self.rep.notes.push(note);
    }

    /// Installs pm2 and supervisord unless installed; the ones to measure.
    async fn install_peers(&mut self, pm2_dir: &Path, sup_dir: &Path) -> Vec<Tool> {
        let pm2 = pm2_dir.display().to_string();
        let sup = sup_dir.display().to_string();
        let pm2_steps = vec![[
            "npm",
            "install",
            "--prefix",
            &pm2,
            &format!("pm2@{PM2_VERSION}"),
            "--no-audit",
            "--no-fund",
        ]
        .map(String::from)
        .to_vec()];
        let sup_steps = vec![
            ["python3", "-m", "venv", &sup].map(String::from).to_vec(),
            [
                &format!("{sup}/bin/pip"),
                "install",
                "--quiet",
                &format!("supervisor=={SUPERVISOR_VERSION}"),
            ]
            .map(String::from)
            .to_vec(),
        ];
        let mut tools = vec![];
        for (tool, dir, steps) in [
            (Tool::Pm2, pm2_dir, pm2_steps),
            (Tool::Supervisord, sup_dir, sup_steps),
        ] {
            match install(dir, &steps).await {
                Ok(Some(secs)) => {
                    self.rep.notes.push(format!(
                        "8 peers: installed {} into {} in {secs:.1} s",
                        tool.key(),
                        dir.display()
                    ));
                    tools.push(tool);
                }
                Ok(None) => tools.push(tool),
                Err(e) => self.rep.notes.push(format!(
                    "8 peers: {} not measured, its install failed: {e:#}",
                    tool.key()
                )),
            }
        }
        tools
    }

    /// Starts `tool`'s private daemon, its files in `dir`.
    async fn peer_up(
        &mut self,
        tool: Tool,
        ctl: PathBuf,
        dir: PathBuf,
        sup_dir: &Path,
    ) -> Result<Peer> {
        let mut peer = Peer {
            tool,
            ctl,
            dir,
            daemon_pid: 0,
            agent: None,
            child: None,
        };
        match tool {
            Tool::Corral => {
                let agent = Agent::start(
                    &self.bins,
                    &self.ctl.conn,
                    self.plan.latency_interval_s,
                    &self.agent_config,
                )
                .await?;
                peer.daemon_pid = agent.pid;
                peer.agent = Some(agent);
            }
            Tool::Pm2 => {
                // Any pm2 command starts the God daemon; ping does nothing else.
                run(peer.cmd(["ping"]), "pm2 ping", true).await?;
                let pid = std::fs::read_to_string(peer.dir.join("home/pm2.pid"))
                    .context("reading pm2.pid")?;
                peer.daemon_pid = pid.trim().parse().context("pm2.pid")?;
            }
            Tool::Supervisord => {
                std::fs::write(peer.file("supervisord.conf"), self.supervisor_conf(&peer))?;
                let log = std::fs::File::create(peer.file("supervisord.out"))?;
                let child = Command::new(sup_dir.join("bin/supervisord"))
                    .arg("-n")
                    .arg("-c")
                    .arg(peer.file("supervisord.conf"))
                    .stdin(Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .kill_on_drop(true)
                    .spawn()
                    .context("starting supervisord")?;
                peer.daemon_pid = child.id().context("supervisord's pid")?;
                peer.child = Some(child);
                let t = Instant::now();
                while run(peer.cmd(["pid"]), "supervisorctl pid", true)
                    .await
                    .is_err()
                {
                    if t.elapsed() > Duration::from_secs(30) {
                        bail!(
                            "supervisord did not answer in 30 s: {}",
                            std::fs::read_to_string(peer.file("supervisord.out"))
                                .unwrap_or_default()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        Ok(peer)
    }

    /// supervisord can start only programs of its config: every program
    /// of every row is declared up front, none started.
    fn supervisor_conf(&self, p: &Peer) -> String {
        let d = p.dir.display();
        let bench = self.bins.bench.display();
        let mut c = format!(
            "[unix_http_server]\nfile={d}/supervisor.sock\n\n\
             [supervisord]\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\n\
             childlogdir={d}\nminfds=16384\n\n\
             [rpcinterface:supervisor]\n\
             supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
             [supervisorctl]\nserverurl=unix://{d}/supervisor.sock\n\n"
        );
        let quiet = "autostart=false\nautorestart=false\nstartsecs=0\n";
        c.push_str(&format!(
            "[program:one]\ncommand={bench} {STAMP} {d}/one-%(process_num)d 0 0\n\
             process_name=one_%(process_num)d\nnumprocs={}\n{quiet}\n",
            self.plan.warmup + self.plan.latency_n
        ));
        if let Some(n) = self.plan.counts.iter().copied().find(|&n| n > 0) {
            c.push_str(&format!(
                "[program:each]\ncommand={bench} {STAMP} {d}/each-%(process_num)d\n\
                 process_name=each_%(process_num)d\nnumprocs={n}\n{quiet}\n"
            ));
        }
        let mut have = 0;
        for &n in self.plan.counts.iter().filter(|&&n| n > 0) {
            c.push_str(&format!(
                "[program:fill{n}]\ncommand={bench} {STAMP} {d}/fill-%(process_num)d\n\
                 process_name=fill_%(process_num)d\nnumprocs={}\nnumprocs_start={have}\n{quiet}\n",
                n - have
            ));
            have = n;
        }
        c.push_str(&format!(
            "[program:crash]\ncommand={bench} {STAMP} {d}/crash {} 1\n\
             autostart=false\nautorestart=true\nstartsecs=0\n\n",
            self.plan.exit_after_ms
        ));
        c.push_str(&format!(
            "[program:memtree]\ncommand=sh {d}/mem-tree.sh {d}/mem-mark {} {TREE_MB} {TREE_CHILDREN}\n{quiet}\n",
            python()
        ));
        c.push_str(&format!(
            "[program:stoptree]\ncommand=sh {d}/stop-tree.sh {d}/stop-mark {bench}\n{quiet}\n"
        ));
        c
    }

    /// Stops the tool's daemon and sweeps whatever it left.
    async fn peer_down(&mut self, mut p: Peer) -> Result<()> {
        match p.tool {
            Tool::Corral => {
                let cleaned = remove_all(&self.ctl).await;
                if let Some(agent) = p.agent.take() {
                    agent.stop(&self.ctl.conn).await?;
                }
                cleaned?;
                self.sigs.take();
            }
            Tool::Pm2 => {
                let _ = run(p.cmd(["kill"]), "pm2 kill", false).await;
            }
            Tool::Supervisord => {
                let _ = run(p.cmd(["shutdown"]), "supervisorctl shutdown", false).await;
                if let Some(child) = p.child.as_mut() {
                    let _ = tokio::time::timeout(Duration::from_secs(15), child.wait()).await;
                }
            }
        }
        // `pm2 kill` may answer before the God daemon has exited.
        let t = Instant::now();
        while alive(p.daemon_pid) && t.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if alive(p.daemon_pid) && p.tool != Tool::Corral {
            // SAFETY: kill(2) of the daemon this section started.
            unsafe { libc::kill(p.daemon_pid as i32, libc::SIGKILL) };
            self.rep.notes.push(format!(
                "8 peers: {}'s daemon outlived its shutdown and was killed",
                p.tool.key()
            ));
        }
        if let Some(mut child) = p.child.take() {
            let _ = child.wait().await;
        }
        // Every process of the rows has the private directory in its argv.
        let dir = p.dir.display().to_string();
        let left = sweep(&dir);
        if left > 0 {
            self.rep.notes.push(format!(
                "8 peers: {left} processes started under {} outlived its shutdown and were killed",
                p.tool.key()
            ));
        }
        let _ = std::fs::remove_dir_all(&p.dir);
        Ok(())
    }

    async fn peer_rows(&mut self, p: &Peer) -> Result<()> {
        std::fs::write(p.file("mem-tree.sh"), MEM_TREE)?;
        std::fs::write(p.file("stop-tree.sh"), STOP_TREE_SH)?;
        // Footprint first, so "0 processes" is the daemon as it starts.
        eprintln!("8 peers: {}: batches, footprint, status", p.tool.key());
        self.peer_scale(p).await?;
        self.peer_clear(p).await?;
        eprintln!("8 peers: {}: start one", p.tool.key());
        self.peer_start_one(p).await?;
        self.peer_clear(p).await?;
        let each = self.plan.counts.iter().copied().find(|&n| n > 0);
        if let Some(n) = each {
            eprintln!("8 peers: {}: {n} starts, one call each", p.tool.key());
            self.peer_each(p, n).await?;
            self.peer_clear(p).await?;
        }
        eprintln!("8 peers: {}: crash → replacement", p.tool.key());
        self.peer_restart(p).await?;
        self.peer_clear(p).await?;
        eprintln!("8 peers: {}: memory of a tree", p.tool.key());
        self.peer_memory(p).await?;
        self.peer_clear(p).await?;
        eprintln!("8 peers: {}: stop of a tree", p.tool.key());
        self.peer_stop_tree(p).await?;
        self.peer_clear(p).await?;
        Ok(())
    }

    /// Ends and forgets every process of the tool between rows.
    async fn peer_clear(&mut self, p: &Peer) -> Result<()> {
        match p.tool {
            Tool::Corral => {
                remove_all(&self.ctl).await?;
                self.sigs.take();
            }
            Tool::Pm2 => {
                run(p.cmd(["delete", "all"]), "pm2 delete all", false).await?;
            }
            Tool::Supervisord => {
                run(p.cmd(["stop", "all"]), "supervisorctl stop all", false).await?;
            }
        }
        Ok(())
    }

    // ---- row 1: start one process until it runs ---------------------------

    async fn peer_start_one(&mut self, p: &Peer) -> Result<()> {
        let (n, warm) = (self.plan.latency_n, self.plan.warmup);
        let mut first = vec![];
        let mut errors = vec![];
        for i in 0..warm + n {
            let file = p.file(&format!("one-{i}"));
            let name = format!("one-{i}");
            let cmd = self.start_cmd(p, "one", i, Some(0));
            let wall0 = SystemTime::now();
            let r = run(cmd, &format!("{} start", p.tool.key()), true).await;
            if let Err(e) = r {
                errors.push(format!("{e:#}"));
                continue;
            }
            match wait_stamp(&file, 1, 1, Duration::from_secs(10)).await {
                Some(st) if i >= warm => first.push(wall_ms(wall0, st.starts[0].0)),
                Some(_) => {}
                None => errors.push(format!("{name}: no stamp within 10 s")),
            }
        }
        let key = format!("peers.start.{}", p.tool.key());
        let how = match p.tool {
            Tool::Corral => "`corralctl start`",
            Tool::Pm2 => "`pm2 start`",
            Tool::Supervisord => "`supervisorctl start` (program declared up front)",
        };
        self.rep.add_latency(
            SEC,
            &key,
            &format!(
                "{}: start one: {how} → command's first instruction",
                p.tool.key()
            ),
            first,
        );
        if !errors.is_empty() {
            self.rep.note_on(&key, &super::errors_note(&errors));
        }
        Ok(())
    }

    /// One CLI call starting the stamp process `{prefix}-{i}`, which
    /// stamps `{prefix}-{i}` in the tool's directory and exits after
    /// `exit_after` ms (or sleeps). supervisord starts the program
    /// `{prefix}:{prefix}_{i}` of its config.
    fn start_cmd(&self, p: &Peer, prefix: &str, i: usize, exit_after: Option<u64>) -> Command {
        let name = format!("{prefix}-{i}");
        let stamp = stamp_cmd(&self.bins, &p.file(&name), exit_after, 0);
        match p.tool {
            Tool::Corral => {
                let mut a: Vec<String> = ["start", "-w", super::WORKSPACE, "--name", &name, "--"]
                    .map(String::from)
                    .into();
                a.extend(stamp);
                p.cmd(a)
            }
            Tool::Pm2 => {
                let mut a: Vec<String> = vec!["start".into(), stamp[0].clone()];
                a.extend(["--name", &name, "--interpreter", "none"].map(String::from));
                if exit_after.is_some() {
                    a.push("--no-autorestart".into());
                }
                a.push("--".into());
                a.extend(stamp[1..].iter().cloned());
                p.cmd(a)
            }
            Tool::Supervisord => p.cmd(["start".to_string(), format!("{prefix}:{prefix}_{i}")]),
        }
    }

    // ---- row 2 (one call each): start a batch by single calls -------------

    async fn peer_each(&mut self, p: &Peer, n: usize) -> Result<()> {
        let tool = p.tool.key();
        let files: Vec<PathBuf> = (0..n).map(|i| p.file(&format!("each-{i}"))).collect();
        let wall0 = SystemTime::now();
        for i in 0..n {
            run(
                self.start_cmd(p, "each", i, None),
                &format!("{tool} start"),
                true,
            )
            .await?;
        }
        let last = wait_all_stamped(&files, Duration::from_secs(300)).await;
        let key = format!("peers.each.n{n}.{tool}");
        let how = match p.tool {
            Tool::Corral => "`corralctl start`",
            Tool::Pm2 => "`pm2 start`",
            Tool::Supervisord => "`supervisorctl start`",
        };
        self.rep.add(
            SEC,
            &key,
            &format!("{tool}: start {n}, one {how} each, in turn → all running"),
            "ms",
            last.map(|ns| wall_ms(wall0, ns)).into_iter().collect(),
        );
        if last.is_none() {
            self.rep
                .note_on(&key, "not every process stamped within 300 s");
        }
        Ok(())
    }

    // ---- rows 2, 4, 5: batches, daemon footprint, status ------------------

    async fn peer_scale(&mut self, p: &Peer) -> Result<()> {
        let tool = p.tool.key();
        let mut have = 0;
        for n in self.plan.counts.clone() {
            if n > have {
                let files: Vec<PathBuf> = (have..n).map(|i| p.file(&format!("fill-{i}"))).collect();
                let (cmd, how) = self.fill_cmd(p, have, n)?;
                let wall0 = SystemTime::now();
                let r = run(cmd, &format!("{tool} batch start"), true).await;
                let last = match r {
                    Ok(_) => wait_all_stamped(&files, Duration::from_secs(300)).await,
                    Err(e) => {
                        self.rep
                            .notes
                            .push(format!("8 peers: {tool}: batch start to {n}: {e:#}"));
                        None
                    }
                };
                let key = format!("peers.fill.n{n}.{tool}");
                self.rep.add(
                    SEC,
                    &key,
                    &format!(
                        "{tool}: start {} more (to {n}): {how} → all running",
                        n - have
                    ),
                    "ms",
                    last.map(|ns| wall_ms(wall0, ns)).into_iter().collect(),
                );
                if last.is_none() {
                    self.rep
                        .note_on(&key, "not every process stamped within 300 s");
                }
                have = n;
            }
            tokio::time::sleep(Duration::from_secs(self.plan.settle_s)).await;
            let w = measure_window(p.daemon_pid, Duration::from_secs(self.plan.window_s)).await;
            let daemon = match p.tool {
                Tool::Corral => "corrald",
                Tool::Pm2 => "pm2 God daemon",
                Tool::Supervisord => "supervisord",
            };
            self.rep.add(
                SEC,
                &format!("peers.rss.n{n}.{tool}"),
                &format!("{tool}: daemon RSS ({daemon}), {n} processes"),
                "MB",
                w.rss_mb.clone(),
            );
            if p.tool == Tool::Corral && n > 0 {
                // corral's per-process cost outside the daemon, for a fair
                // comparison: pm2 and supervisord have no such helper.
                let shims: Vec<u64> = super::sys::pids_by_comm("corral-shim")
                    .into_iter()
                    .filter(|&pid| super::sys::in_corral_scope(pid))
                    .filter_map(super::sys::read_rollup)
                    .map(|r| r.pss)
                    .collect();
                self.rep.note_on(
                    &format!("peers.rss.n{n}.{tool}"),
                    &format!(
                        "corrald alone; its {} corral-shim processes add {:.1} MB PSS together",
                        shims.len(),
                        shims.iter().sum::<u64>() as f64 * 1024.0 / 1e6
                    ),
                );
            }
            self.rep.add(
                SEC,
                &format!("peers.cpu.n{n}.{tool}"),
                &format!("{tool}: daemon CPU ({daemon}), {n} processes"),
                "s/min",
                vec![w.cpu_s_per_min],
            );
            self.rep.note_on(
                &format!("peers.cpu.n{n}.{tool}"),
                &format!(
                    "{:.0} s window, machine {:.0}% busy",
                    w.secs, w.machine_busy
                ),
            );
            if n > 0 {
                self.peer_status(p, n).await?;
            }
        }
        Ok(())
    }

    /// A project file of the stamping processes `range`, in a directory
    /// of its own (`corral.toml`).
    fn project_file(&self, p: &Peer, dir: &str, range: std::ops::Range<usize>) -> Result<PathBuf> {
        let bench = self.bins.bench.display().to_string();
        let dir = p.file(dir);
        std::fs::create_dir_all(&dir)?;
        let mut text = format!("workspace = \"{}\"\n", super::WORKSPACE);
        for i in range {
            let f = p.file(&format!("fill-{i}"));
            text.push_str(&format!(
                "[processes.fill{i}]\ncommand = [{:?}, {:?}, {:?}]\n",
                bench,
                STAMP,
                f.display().to_string()
            ));
        }
        let file = dir.join("corral.toml");
        std::fs::write(&file, text)?;
        Ok(file)
    }

    /// The batch form of each tool starting processes `have..n`.
    fn fill_cmd(&self, p: &Peer, have: usize, n: usize) -> Result<(Command, &'static str)> {
        let bench = self.bins.bench.display().to_string();
        Ok(match p.tool {
            Tool::Corral if n <= MAX_PROCESSES => {
                // `up` of a project holding every process so far: what a
                // user edits and brings up again.
                let file = self.project_file(p, &format!("project-{n}"), 0..n)?;
                (
                    p.cmd(["up".as_ref(), "-f".as_ref(), file.as_os_str()]),
                    "`corralctl up` of a project file",
                )
            }
            Tool::Corral => {
                // A file declares at most MAX_PROCESSES: the new processes
                // come in files of their own, brought up one after another.
                let mut c = Command::new("sh");
                // The paths are arguments, not script text: nothing to quote.
                c.args(["-c", r#"set -e; for f; do "$0" up -f "$f"; done"#]);
                c.arg(&p.ctl);
                for (k, from) in (have..n).step_by(MAX_PROCESSES).enumerate() {
                    let to = (from + MAX_PROCESSES).min(n);
                    c.arg(self.project_file(p, &format!("project-{n}-{k}"), from..to)?);
                }
                (
                    c,
                    "`corralctl up` of project files (at most 256 processes each), in turn",
                )
            }
            Tool::Pm2 => {
                let apps: Vec<serde_json::Value> = (have..n)
                    .map(|i| {
                        serde_json::json!({
                            "name": format!("fill-{i}"),
                            "script": bench,
                            "args": [STAMP, p.file(&format!("fill-{i}"))],
                            "interpreter": "none",
                        })
                    })
                    .collect();
                let file = p.file(&format!("fill-{n}.json"));
                std::fs::write(&file, serde_json::json!({ "apps": apps }).to_string())?;
                (
                    p.cmd(["start".as_ref(), file.as_os_str()]),
                    "`pm2 start` of an ecosystem file",
                )
            }
            Tool::Supervisord => (
                p.cmd(["start".to_string(), format!("fill{n}:*")]),
                "`supervisorctl start GROUP:*`",
            ),
        })
    }

    async fn peer_status(&mut self, p: &Peer, n: usize) -> Result<()> {
        let tool = p.tool.key();
        let args: &[&str] = match p.tool {
            Tool::Corral => &["list"],
            Tool::Pm2 => &["jlist"],
            Tool::Supervisord => &["status"],
        };
        let samples = if self.plan.quick { 10 } else { 30 };
        let mut times = vec![];
        for i in 0..self.plan.warmup + samples {
            let t = Instant::now();
            // supervisorctl status exits 3 when any program is not running.
            let out = run(
                p.cmd(args),
                &format!("{tool} status"),
                p.tool != Tool::Supervisord,
            )
            .await?;
            if i >= self.plan.warmup {
                times.push(ms(t.elapsed()));
            }
            if out.stdout.is_empty() {
                bail!("{tool} {}: printed nothing", args.join(" "));
            }
        }
        self.rep.add_latency(
            SEC,
            &format!("peers.status.n{n}.{tool}"),
            &format!("{tool}: `{}` of {n} processes (wall)", {
                let ctl = match p.tool {
                    Tool::Corral => "corralctl",
                    Tool::Pm2 => "pm2",
                    Tool::Supervisord => "supervisorctl",
                };
                format!("{ctl} {}", args.join(" "))
            }),
            times,
        );
        if p.tool == Tool::Corral {
            // Issue 14 item 4: `corralctl list` no slower than systemd's
            // own listing of the same units (and everything else it runs).
            let mut times = vec![];
            for i in 0..self.plan.warmup + samples {
                let mut cmd = Command::new("systemctl");
                cmd.args(["--user", "list-units", "--no-pager"]);
                let t = Instant::now();
                if let Err(e) = run(cmd, "systemctl --user list-units", true).await {
                    self.rep.notes.push(format!("baseline not measured: {e:#}"));
                    return Ok(());
                }
                if i >= self.plan.warmup {
                    times.push(ms(t.elapsed()));
                }
            }
            self.rep.add_latency(
                SEC,
                &format!("peers.status.n{n}.systemctl"),
                &format!("baseline: `systemctl --user list-units` with these {n} scopes (wall)"),
                times,
            );
            self.rep.ratio(
                &format!("`corralctl list` / `systemctl --user list-units`, {n} processes"),
                &format!("peers.status.n{n}.corral"),
                &format!("peers.status.n{n}.systemctl"),
                Some(("<= 1 (issue 14)", 1.0)),
            );
        }
        Ok(())
    }

    // ---- row 3: crash → replacement ---------------------------------------

    async fn peer_restart(&mut self, p: &Peer) -> Result<()> {
        let tool = p.tool.key();
        let (n, warm) = (self.plan.latency_n, self.plan.warmup);
        let life = self.plan.exit_after_ms;
        let file = p.file("crash");
        let stamp = stamp_cmd(&self.bins, &file, Some(life), 1);
        let how = match p.tool {
            Tool::Corral => {
                let mut s = spec(stamp);
                s.name = Some("crash".into());
                s.restart = Some("always".into());
                s.restart_delay_ms = Some(0);
                s.restart_limit = Some(10_000); // the most a spec may ask for
                s.restart_limit_interval_sec = Some(60);
                self.ctl.mgr.start(s.to_dict()).await?;
                "Start over D-Bus, RestartPolicy always, RestartDelayMs 0"
            }
            Tool::Pm2 => {
                let mut a: Vec<String> = vec!["start".into(), stamp[0].clone()];
                a.extend(
                    [
                        "--name",
                        "crash",
                        "--interpreter",
                        "none",
                        "--restart-delay",
                        "0",
                        "--max-restarts",
                        "100000",
                        "--",
                    ]
                    .map(String::from),
                );
                a.extend(stamp[1..].iter().cloned());
                run(p.cmd(a), "pm2 start", true).await?;
                "autorestart, --restart-delay 0, --max-restarts 100000"
            }
            Tool::Supervisord => {
                run(p.cmd(["start", "crash"]), "supervisorctl start", true).await?;
                "autorestart=true startsecs=0"
            }
        };
        let runs = warm + n + 1;
        let deadline = Instant::now() + Duration::from_secs(30 + runs as u64);
        let st = loop {
            let st = probe::Stamps::read(&file);
            if (st.starts.len() >= runs && st.exits.len() + 1 >= runs) || Instant::now() > deadline
            {
                break st;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let mut gaps = vec![];
        for k in (warm + 1)..st.starts.len().min(st.exits.len() + 1) {
            gaps.push((st.starts[k].0 as f64 - st.exits[k - 1] as f64) / 1e6);
        }
        let key = format!("peers.restart.{tool}");
        let got = gaps.len();
        self.rep.add_latency(
            SEC,
            &key,
            &format!(
                "{tool}: crash (exit 1 after {life} ms) → replacement's first instruction ({how})"
            ),
            gaps,
        );
        if got < n {
            self.rep.note_on(
                &key,
                &format!(
                    "only {} runs in {} s ({got} samples of {n})",
                    st.starts.len(),
                    30 + runs
                ),
            );
        }
        Ok(())
    }

    // ---- row 6: memory reported for a tree vs its PSS ---------------------

    async fn peer_memory(&mut self, p: &Peer) -> Result<()> {
        let tool = p.tool.key();
        let key = format!("peers.mem.{tool}");
        let label = format!(
            "{tool}: memory reported for a tree ({TREE_CHILDREN} children × {TREE_MB} MiB) / the tree's PSS"
        );
        let mark = p.file("mem-mark").display().to_string();
        let script = p.file("mem-tree.sh").display().to_string();
        let py = python();
        let (mb, kids) = (TREE_MB.to_string(), TREE_CHILDREN.to_string());
        let tree = ["sh", &script, &mark, &py, &mb, &kids];
        match p.tool {
            Tool::Corral => {
                let mut a = vec!["start", "-w", super::WORKSPACE, "--name", "memtree", "--"];
                a.extend(tree);
                run(p.cmd(a), "corralctl start", true).await?;
            }
            Tool::Pm2 => {
                let mut a = vec![
                    "start",
                    "sh",
                    "--name",
                    "memtree",
                    "--interpreter",
                    "none",
                    "--",
                ];
                a.extend(&tree[1..]);
                run(p.cmd(a), "pm2 start", true).await?;
            }
            Tool::Supervisord => {
                run(p.cmd(["start", "memtree"]), "supervisorctl start", true).await?;
            }
        }
        // Wait until every child holds its memory, then give the tool's
        // sampler time to see it.
        let want_kb = (TREE_CHILDREN * TREE_MB * 1024) as u64;
        let t = Instant::now();
        while tree_pss_kb(&mark).1 < want_kb {
            if t.elapsed() > Duration::from_secs(30) {
                bail!("{tool}: the memory tree did not reach {want_kb} KiB PSS in 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let reported: Option<f64> = match p.tool {
            Tool::Corral => list_workspace(&self.ctl, None)
                .await?
                .into_iter()
                .find(|v| v.name == "memtree")
                .map(|v| v.memory_current as f64),
            Tool::Pm2 => {
                let out = run(p.cmd(["jlist"]), "pm2 jlist", true).await?;
                pm2_memory(&String::from_utf8_lossy(&out.stdout), "memtree")
            }
            Tool::Supervisord => None,
        };
        let (procs, pss_kb) = tree_pss_kb(&mark);
        let real = pss_kb as f64 * 1024.0;
        match reported {
            Some(bytes) => {
                self.rep.add(SEC, &key, &label, "x", vec![bytes / real]);
                self.rep.note_on(
                    &key,
                    &format!(
                        "{} {:.1} MB, the tree's summed PSS {:.1} MB over {procs} processes",
                        match p.tool {
                            Tool::Corral => "MemoryCurrent (D-Bus List)",
                            _ => "pm2 jlist monit.memory",
                        },
                        bytes / 1e6,
                        real / 1e6
                    ),
                );
                if p.tool == Tool::Corral && bytes == 0.0 {
                    self.rep
                        .note_on(&key, "0: no memory controller reached corral's scopes here");
                }
            }
            None => {
                self.rep.add(SEC, &key, &label, "x", vec![]);
                self.rep.note_on(
                    &key,
                    &format!(
                        "not reported (supervisord shows no memory); the tree's PSS was {:.1} MB over {procs} processes",
                        real / 1e6
                    ),
                );
            }
        }
        self.peer_clear(p).await?;
        sweep(&mark);
        Ok(())
    }

    // ---- row 7: processes left after stopping a tree ----------------------

    async fn peer_stop_tree(&mut self, p: &Peer) -> Result<()> {
        let tool = p.tool.key();
        let mark = p.file("stop-mark");
        std::fs::create_dir_all(&mark)?;
        let m = mark.display().to_string();
        let script = p.file("stop-tree.sh").display().to_string();
        let bench = self.bins.bench.display().to_string();
        let tree = ["sh", &script, &m, &bench];
        let (start, stop, how) = match p.tool {
            Tool::Corral => {
                let mut a = vec!["start", "-w", super::WORKSPACE, "--name", "stoptree", "--"];
                a.extend(tree);
                (p.cmd(a), p.cmd(["stop", "stoptree"]), "`corralctl stop`")
            }
            Tool::Pm2 => {
                let mut a = vec![
                    "start",
                    "sh",
                    "--name",
                    "stoptree",
                    "--interpreter",
                    "none",
                    "--",
                ];
                a.extend(&tree[1..]);
                (p.cmd(a), p.cmd(["stop", "stoptree"]), "`pm2 stop`")
            }
            Tool::Supervisord => (
                p.cmd(["start", "stoptree"]),
                p.cmd(["stop", "stoptree"]),
                "`supervisorctl stop` (default stopasgroup/killasgroup=false)",
            ),
        };
        run(start, &format!("{tool} start"), true).await?;
        let stamps: Vec<PathBuf> = ["a", "b", "c", "d"].iter().map(|s| mark.join(s)).collect();
        let up = wait_all_stamped(&stamps, Duration::from_secs(10))
            .await
            .is_some();
        // The double fork's middle shell ends by itself; wait for the rest.
        let t = Instant::now();
        while pids_with(&m).len() != STOP_TREE && t.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let before = pids_with(&m).len();
        run(stop, &format!("{tool} stop"), true).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let left = pids_with(&m).len();
        let key = format!("peers.left.{tool}");
        self.rep.add(
            SEC,
            &key,
            &format!("{tool}: processes of a tree alive 2 s after {how}"),
            "procs",
            vec![left as f64],
        );
        self.rep.note_on(
            &key,
            &format!(
                "of {before} before the stop{}",
                if up {
                    ""
                } else {
                    "; not every child stamped in 10 s"
                }
            ),
        );
        self.peer_clear(p).await?;
        sweep(&m);
        Ok(())
    }
}

/// A Python for the memory tree: the system's, else the one on PATH.
fn python() -> String {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3".into()
    } else {
        "python3".into()
    }
}

/// (processes, summed PSS in KiB) of the processes whose argv holds `mark`.
fn tree_pss_kb(mark: &str) -> (usize, u64) {
    let pids = pids_with(mark);
    let pss = pids
        .iter()
        .filter_map(|&p| super::sys::read_rollup(p))
        .map(|r| r.pss)
        .sum();
    (pids.len(), pss)
}

/// `monit.memory` (bytes) of the app `name` in `pm2 jlist` output.
fn pm2_memory(jlist: &str, name: &str) -> Option<f64> {
    let start = jlist.find('[')?;
    let apps: Vec<serde_json::Value> = serde_json::from_str(jlist[start..].trim()).ok()?;
    let by_name: BTreeMap<&str, &serde_json::Value> = apps
        .iter()
        .filter_map(|a| Some((a.get("name")?.as_str()?, a)))
        .collect();
    by_name.get(name)?.get("monit")?.get("memory")?.as_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pm2_memory_of_one_app() {
        let out = r#"noise
[{"name":"a","monit":{"memory":10,"cpu":0}},{"name":"memtree","monit":{"memory":2048,"cpu":1}}]"#;
        assert_eq!(pm2_memory(out, "memtree"), Some(2048.0));
        assert_eq!(pm2_memory(out, "b"), None);
        assert_eq!(pm2_memory("garbage", "a"), None);
    }
}
