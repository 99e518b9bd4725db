//! Restarting a process when its files change (`watch` in corral.toml):
//! a consumer of the supervisor's events that keeps one inotify watcher
//! per active process labeled [`LABEL_WATCH`], and restarts it through
//! the supervisor's [`Handle`] once its files have been quiet for the
//! debounce time. It owns no process state and never blocks the actor.
//!
//! What is watched: the label's base directory (the process's working
//! directory, which it must equal) and its subdirectories, each with a
//! watch of its own, new ones as they appear. A change is a file created,
//! written and closed, touched, deleted or moved; it counts when its path
//! relative to the base matches a `paths` glob and no `ignore` glob.
//! `.git/`, `target/` and `node_modules/` are neither walked nor matched
//! unless a `paths` glob names the directory as one of its parts
//! (`target/**/*.rs`). Symlinks are not followed.
//!
//! Bounds: [`MAX_WATCHES_PER_PROCESS`] and [`MAX_WATCHES`] in all, the
//! kernel's `fs.inotify.max_user_watches`, and [`MAX_DEPTH`] /
//! [`MAX_WALK_ENTRIES`] per walk (walks run on the blocking pool). Past a
//! bound the watcher keeps what it has, logs a warning naming the process
//! and the limit, and records it as a `watch` event of the process.
//!
//! In system mode the agent watches for processes of other users: it
//! enters only directories their owner owns or anyone may read, so a
//! restart cannot tell them about files they could not list.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use globset::GlobSet;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use tokio::sync::mpsc;

use super::store::{ProcessId, Store};
use super::supervisor::{Access, Command, Event, Handle};
use crate::api::{Filter, ProcessView, State};
use crate::project::watch::{glob, WatchLabel, LABEL_WATCH};

/// Most directories watched for one process.
pub const MAX_WATCHES_PER_PROCESS: usize = 4096;

/// Most directories watched for all processes together.
pub const MAX_WATCHES: usize = 8192;

/// Deepest directory watched below the base.
pub const MAX_DEPTH: usize = 32;

/// Most directory entries one walk looks at.
pub const MAX_WALK_ENTRIES: usize = 100_000;

/// Directories skipped unless a glob names them: their churn (builds,
/// installs, git's own files) is not a source change.
const NOISE: [&str; 3] = [".git", "target", "node_modules"];

/// Changes waiting for the debounce; more are dropped (the pending ones
/// already make a restart due).
const CHANGES_QUEUED: usize = 256;

/// What each directory's watch reports.
fn dir_mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::CLOSE_WRITE
        | WatchMask::ATTRIB
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::ONLYDIR
        | WatchMask::DONT_FOLLOW
        | WatchMask::EXCL_UNLINK
}

/// Feeds the supervisor's events to the watchers until they end.
pub async fn run(handle: Handle, store: Store, mut events: mpsc::UnboundedReceiver<Event>) {
    let mut watchers = Watchers {
        ctx: Arc::new(Ctx {
            handle: handle.clone(),
            store,
            total: Arc::new(AtomicUsize::new(0)),
            // SAFETY: geteuid(2) cannot fail.
            agent_uid: unsafe { libc::geteuid() },
        }),
        running: HashMap::new(),
    };
    // Processes that were running before the agent started. An event
    // queued meanwhile may be older than the list; the restart checks the
    // process again, so a watcher that outlived it costs only watches
    // until its next event.
    let all = handle
        .ask(|reply| Command::List {
            filter: Filter::default(),
            access: Access::All,
            reply,
        })
        .await;
    for view in all.iter().flatten() {
        watchers.update(view);
    }
    while let Some(event) = events.recv().await {
        match event {
            Event::Added(view) | Event::Changed { view, .. } => watchers.update(&view),
            Event::Removed(id) => watchers.forget(&id),
            Event::HealthChanged { .. } => {}
        }
    }
}

/// What every watcher shares.
struct Ctx {
    handle: Handle,
    store: Store,
    /// Watches held by all watchers.
    total: Arc<AtomicUsize>,
    agent_uid: u32,
}

/// The watcher of each process, by id.
struct Watchers {
    ctx: Arc<Ctx>,
    running: HashMap<String, Running>,
}

struct Running {
    /// The label it watches for; another one means a new watcher.
    label: String,
    task: tokio::task::AbortHandle,
}

impl Watchers {
    /// Starts, keeps or ends `view`'s watcher: one runs while the process
    /// is active and labeled.
    fn update(&mut self, view: &ProcessView) {
        let label = view
            .labels
            .get(LABEL_WATCH)
            .filter(|_| view.state.is_active());
        let Some(label) = label else {
            self.forget(&view.id);
            return;
        };
        if self
            .running
            .get(&view.id)
            .is_some_and(|r| r.label == *label)
        {
            return;
        }
        self.forget(&view.id);
        let config = match WatchLabel::decode(label) {
            Ok(c) if c.base == view.working_directory => c,
            Ok(c) => {
                tracing::warn!(
                    process = view.id,
                    "not watching: {LABEL_WATCH} base {} is not the working directory {}",
                    c.base,
                    view.working_directory
                );
                return;
            }
            Err(e) => {
                tracing::warn!(
                    process = view.id,
                    "not watching: bad {LABEL_WATCH} label: {e}"
                );
                return;
            }
        };
        let matcher = match Matcher::new(&config.paths, &config.ignore) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(process = view.id, "not watching: {e}");
                return;
            }
        };
        let watcher = Watcher {
            ctx: self.ctx.clone(),
            id: view.id.clone(),
            name: view.name.clone(),
            owner: view.owner,
            label: label.clone(),
            base: PathBuf::from(&config.base),
            matcher: Arc::new(matcher),
            debounce: Duration::from_millis(config.debounce_ms),
        };
        let task = tokio::spawn(watcher.run()).abort_handle();
        let label = label.clone();
        self.running
            .insert(view.id.clone(), Running { label, task });
    }

    /// Ends `id`'s watcher: dropping its inotify instance removes every
    /// watch it had.
    fn forget(&mut self, id: &str) {
        if let Some(r) = self.running.remove(id) {
            r.task.abort();
        }
    }
}

/// Which changed paths count.
#[derive(Debug)]
struct Matcher {
    paths: GlobSet,
    ignore: GlobSet,
    /// The [`NOISE`] directories a `paths` glob names.
    named: Vec<&'static str>,
}

impl Matcher {
    fn new(paths: &[String], ignore: &[String]) -> Result<Matcher, globset::Error> {
        let set = |globs: &[String]| -> Result<GlobSet, globset::Error> {
            let mut b = GlobSet::builder();
            for g in globs {
                b.add(glob(g)?);
            }
            b.build()
        };
        let named = NOISE
            .into_iter()
            .filter(|n| paths.iter().any(|g| g.split('/').any(|part| part == *n)))
            .collect();
        Ok(Matcher {
            paths: set(paths)?,
            ignore: set(ignore)?,
            named,
        })
    }

    /// Whether a change of the file at `rel` (relative to the base)
    /// restarts the process.
    fn matches(&self, rel: &str) -> bool {
        let dir = rel.rsplit_once('/').map_or("", |(d, _)| d);
        !self.skips_dir(dir) && self.paths.is_match(rel) && !self.ignore.is_match(rel)
    }

    /// Whether the directory `rel` (relative to the base, "" for it) is
    /// noise: neither walked nor matched.
    fn skips_dir(&self, rel: &str) -> bool {
        rel.split('/')
            .any(|part| NOISE.contains(&part) && !self.named.contains(&part))
    }
}

/// Why a watcher stopped adding watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    Kernel,
    PerProcess,
    Total,
    Depth,
    Entries,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::Kernel => write!(
                f,
                "the kernel's limit of inotify watches (fs.inotify.max_user_watches; raise it with sysctl)"
            ),
            Limit::PerProcess => write!(f, "corral's limit of {MAX_WATCHES_PER_PROCESS} watched directories per process"),
            Limit::Total => write!(f, "corral's limit of {MAX_WATCHES} watched directories in all"),
            Limit::Depth => write!(f, "corral's limit of {MAX_DEPTH} directory levels"),
            Limit::Entries => write!(f, "corral's limit of {MAX_WALK_ENTRIES} entries walked at once"),
        }
    }
}

/// One process's watches, counted against its own bound and the total.
struct Budget {
    total: Arc<AtomicUsize>,
    mine: AtomicUsize,
}

impl Budget {
    fn take(&self) -> Result<(), Limit> {
        if self.mine.load(Ordering::Relaxed) >= MAX_WATCHES_PER_PROCESS {
            return Err(Limit::PerProcess);
        }
        self.total
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < MAX_WATCHES).then_some(n + 1)
            })
            .map_err(|_| Limit::Total)?;
        self.mine.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn give(&self) {
        self.mine.fetch_sub(1, Ordering::Relaxed);
        self.total.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        self.total
            .fetch_sub(self.mine.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// What one walk added and found.
#[derive(Default)]
struct Walked {
    /// Each directory watched, relative to the base.
    dirs: Vec<(WatchDescriptor, String)>,
    /// Files seen (relative), when asked for: a new directory's files may
    /// have been written before its watch was added.
    files: Vec<String>,
    limit: Option<Limit>,
}

/// A walk of one directory tree, adding a watch on each directory.
struct Walk {
    watches: Watches,
    budget: Arc<Budget>,
    matcher: Arc<Matcher>,
    /// Only enter directories this uid may list (None: the agent's own).
    owner: Option<u32>,
}

impl Walk {
    /// Walks `rel` (relative to `base`) at most [`MAX_DEPTH`] levels
    /// below the base and [`MAX_WALK_ENTRIES`] entries; blocking.
    fn run(mut self, base: &Path, rel: String, files: bool) -> Walked {
        let mut out = Walked::default();
        let mut entries = 0usize;
        let mut stack = vec![rel];
        while let Some(rel) = stack.pop() {
            let abs = if rel.is_empty() {
                base.to_path_buf()
            } else {
                base.join(&rel)
            };
            if !self.may_enter(&abs) {
                continue;
            }
            if let Err(limit) = self.budget.take() {
                out.limit = Some(limit);
                break;
            }
            // Watch first, then list: a file written in between is seen
            // by one or the other.
            match self.watches.add(&abs, dir_mask()) {
                Ok(wd) => out.dirs.push((wd, rel.clone())),
                Err(e) => {
                    self.budget.give();
                    if e.raw_os_error() == Some(libc::ENOSPC) {
                        out.limit = Some(Limit::Kernel);
                        break;
                    }
                    // Gone or unreadable meanwhile: nothing to watch.
                    continue;
                }
            }
            let Ok(list) = std::fs::read_dir(&abs) else {
                continue;
            };
            for entry in list.flatten() {
                entries += 1;
                if entries > MAX_WALK_ENTRIES {
                    out.limit = Some(Limit::Entries);
                    return out;
                }
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let child = if rel.is_empty() {
                    name.into_owned()
                } else {
                    format!("{rel}/{name}")
                };
                // The entry's own type: a symlink is not followed.
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_dir() {
                    if self.matcher.skips_dir(&child) {
                        continue;
                    }
                    if child.split('/').count() > MAX_DEPTH {
                        out.limit.get_or_insert(Limit::Depth);
                        continue;
                    }
                    stack.push(child);
                } else if files {
                    out.files.push(child);
                }
            }
        }
        out
    }

    fn may_enter(&self, dir: &Path) -> bool {
        let Some(owner) = self.owner else {
            return true;
        };
        std::fs::symlink_metadata(dir)
            .is_ok_and(|m| m.is_dir() && (m.uid() == owner || m.mode() & 0o005 == 0o005))
    }
}

/// One process's watcher.
struct Watcher {
    ctx: Arc<Ctx>,
    id: String,
    name: String,
    owner: u32,
    label: String,
    base: PathBuf,
    matcher: Arc<Matcher>,
    debounce: Duration,
}

impl Watcher {
    async fn run(self) {
        let inotify = match Inotify::init() {
            Ok(i) => i,
            Err(e) => {
                // EMFILE here is fs.inotify.max_user_instances.
                let why = format!(
                    "cannot watch {}: inotify: {e} (fs.inotify.max_user_instances?)",
                    self.base.display()
                );
                self.report(&why).await;
                return;
            }
        };
        let watches = inotify.watches();
        let mut stream = match inotify.into_event_stream(vec![0u8; 16 * 1024]) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(process = self.id, "cannot watch: inotify: {e}");
                return;
            }
        };
        let budget = Arc::new(Budget {
            total: self.ctx.total.clone(),
            mine: AtomicUsize::new(0),
        });
        let walk = || Walk {
            watches: watches.clone(),
            budget: budget.clone(),
            matcher: self.matcher.clone(),
            owner: (self.owner != self.ctx.agent_uid).then_some(self.owner),
        };
        let warned = AtomicBool::new(false);
        let (changes_tx, mut changes_rx) = mpsc::channel::<String>(CHANGES_QUEUED);
        // By descriptor id: each watched directory, relative to the base.
        let mut dirs: HashMap<i32, (WatchDescriptor, String)> = HashMap::new();
        let mut removing = watches.clone();

        let read = async {
            // Moved in: the reader ending drops it, which ends the restarts.
            let changes_tx = changes_tx;
            let mut overflowed = false;
            let first = self.walk(walk(), String::new(), false).await;
            self.took(first, &mut dirs, &budget, &changes_tx, &warned)
                .await;
            while let Some(event) = stream.next().await {
                let event = match event {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(process = self.id, "watching files failed: {e}");
                        return;
                    }
                };
                if event.mask.contains(EventMask::Q_OVERFLOW) {
                    // Once: a tree that overflows the queue does it often.
                    if !overflowed {
                        overflowed = true;
                        tracing::warn!(
                            process = self.id,
                            "too many file changes at once; some were missed"
                        );
                    }
                    continue;
                }
                let wd = event.wd.get_watch_descriptor_id();
                if event.mask.contains(EventMask::IGNORED) {
                    // The directory is gone (or its watch was removed).
                    if dirs.remove(&wd).is_some() {
                        budget.give();
                    }
                    continue;
                }
                let (Some((_, dir)), Some(name)) = (dirs.get(&wd), &event.name) else {
                    continue;
                };
                let name = name.to_string_lossy();
                let rel = if dir.is_empty() {
                    name.into_owned()
                } else {
                    format!("{dir}/{name}")
                };
                if !event.mask.contains(EventMask::ISDIR) {
                    if self.matcher.matches(&rel) {
                        let _ = changes_tx.try_send(rel);
                    }
                } else if event.mask.contains(EventMask::MOVED_FROM) {
                    // Its watches would report under the old name; the
                    // MOVED_TO side (if inside the base) walks it again.
                    let prefix = format!("{rel}/");
                    let moved: Vec<WatchDescriptor> = dirs
                        .values()
                        .filter(|(_, d)| *d == rel || d.starts_with(&prefix))
                        .map(|(wd, _)| wd.clone())
                        .collect();
                    // Each removal comes back as IGNORED, which frees
                    // its budget.
                    for wd in moved {
                        let _ = removing.remove(wd);
                    }
                } else if event
                    .mask
                    .intersects(EventMask::CREATE | EventMask::MOVED_TO)
                    && !self.matcher.skips_dir(&rel)
                {
                    let walked = self.walk(walk(), rel, true).await;
                    self.took(walked, &mut dirs, &budget, &changes_tx, &warned)
                        .await;
                }
            }
        };
        let restart = async {
            while let Some(path) = quiet_after(&mut changes_rx, self.debounce).await {
                self.restart(&path).await;
            }
        };
        tokio::join!(read, restart);
    }

    /// Runs `walk` of `rel` on the blocking pool.
    async fn walk(&self, walk: Walk, rel: String, files: bool) -> Walked {
        let base = self.base.clone();
        tokio::task::spawn_blocking(move || walk.run(&base, rel, files))
            .await
            .unwrap_or_default()
    }

    /// Records what a walk added; its files that match are changes.
    async fn took(
        &self,
        walked: Walked,
        dirs: &mut HashMap<i32, (WatchDescriptor, String)>,
        budget: &Budget,
        changes: &mpsc::Sender<String>,
        warned: &AtomicBool,
    ) {
        for (wd, rel) in walked.dirs {
            // The kernel answers an inode watched already with its
            // existing descriptor: counted once.
            if dirs
                .insert(wd.get_watch_descriptor_id(), (wd, rel))
                .is_some()
            {
                budget.give();
            }
        }
        for f in walked.files {
            if self.matcher.matches(&f) {
                let _ = changes.try_send(f);
            }
        }
        if let Some(limit) = walked.limit {
            if !warned.swap(true, Ordering::Relaxed) {
                let why = format!(
                    "watching {} stopped at {} directories: {limit}; changes in the rest are not seen",
                    self.base.display(),
                    dirs.len()
                );
                self.report(&why).await;
            }
        }
    }

    /// Restarts the process, if it still runs with the same label: one
    /// stopped meanwhile is not started again, one (re)starting already
    /// runs the changed files. A Stop landing between the look and the
    /// Restart is the one window left (the supervisor has no conditional
    /// restart); the next `up` or `stop` settles it.
    async fn restart(&self, path: &str) {
        let id = self.id.clone();
        let view = self
            .ctx
            .handle
            .ask(|reply| Command::Get {
                id,
                access: Access::All,
                reply,
            })
            .await;
        let current = matches!(
            view,
            Some(Ok(ref v)) if v.state == State::Running && v.labels.get(LABEL_WATCH) == Some(&self.label)
        );
        if !current {
            return;
        }
        tracing::info!(
            process = self.id,
            name = self.name,
            "{path} changed: restarting"
        );
        self.record(&format!("{path} changed: restarting")).await;
        let id = self.id.clone();
        let answer = self
            .ctx
            .handle
            .ask(|reply| Command::Restart {
                id,
                access: Access::All,
                reply,
            })
            .await;
        if let Some(Err(e)) = answer {
            tracing::warn!(process = self.id, "restart after {path} changed: {e}");
        }
    }

    /// A warning in the log and among the process's events.
    async fn report(&self, why: &str) {
        tracing::warn!(process = self.id, name = self.name, "{why}");
        self.record(why).await;
    }

    async fn record(&self, detail: &str) {
        let Ok(n) = self.id.parse::<u64>() else {
            return;
        };
        let detail = detail.to_string();
        let now = crate::clock::now_us();
        let r = self
            .ctx
            .store
            .call(move |db| db.add_event(ProcessId(n), None, "watch", &detail, now))
            .await;
        if let Err(e) = r {
            tracing::warn!(process = self.id, "recording a watch event: {e}");
        }
    }
}

/// Waits for a change, then until `quiet` passes without another one;
/// answers the first path changed, or None once the sender has gone.
async fn quiet_after(changes: &mut mpsc::Receiver<String>, quiet: Duration) -> Option<String> {
    let first = changes.recv().await?;
    loop {
        match tokio::time::timeout(quiet, changes.recv()).await {
            Ok(Some(_)) => {}
            Ok(None) => return None,
            Err(_) => return Some(first),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(paths: &[&str], ignore: &[&str]) -> Matcher {
        let v = |g: &[&str]| g.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Matcher::new(&v(paths), &v(ignore)).unwrap()
    }

    #[test]
    fn globs_match_paths_relative_to_the_base_and_ignore_wins() {
        let m = matcher(&["src/**/*.rs", "*.toml"], &["src/gen/**"]);
        assert!(m.matches("src/main.rs"));
        assert!(m.matches("src/a/b/c.rs"));
        assert!(m.matches("Cargo.toml"));
        // `*` stays in its directory.
        assert!(!m.matches("sub/Cargo.toml"));
        assert!(!m.matches("src/main.rs.swp"));
        assert!(!m.matches("other/src/main.rs"));
        assert!(!m.matches("src/gen/x.rs"));
    }

    #[test]
    fn noise_directories_count_only_when_a_glob_names_them() {
        let m = matcher(&["**/*.js"], &[]);
        assert!(m.matches("app/x.js"));
        assert!(!m.matches("node_modules/x/index.js"));
        assert!(!m.matches("app/node_modules/y.js"));
        assert!(!m.matches(".git/hooks/a.js"));
        assert!(m.skips_dir("target") && m.skips_dir("a/target/debug"));
        assert!(!m.skips_dir("") && !m.skips_dir("app"));
        // A file merely named like one is not in it.
        let m = matcher(&["**/*"], &[]);
        assert!(m.matches("a/target"));
        assert!(!m.matches("a/target/x"));

        let m = matcher(&["node_modules/dep/**/*.js"], &[]);
        assert!(m.matches("node_modules/dep/lib/i.js"));
        assert!(!m.skips_dir("node_modules/dep"));
        assert!(m.skips_dir("target"));
    }

    /// Changes in a burst give one restart, `quiet` after the last one.
    #[tokio::test(start_paused = true)]
    async fn a_burst_of_changes_gives_one_restart_after_the_quiet_time() {
        let (tx, mut rx) = mpsc::channel(8);
        let quiet = Duration::from_millis(300);
        let start = tokio::time::Instant::now();
        let feed = tokio::spawn(async move {
            for p in ["a.rs", "b.rs", "c.rs"] {
                tx.send(p.to_string()).await.unwrap();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            // Quiet long enough, then one more, then gone.
            tokio::time::sleep(Duration::from_millis(400)).await;
            tx.send("d.rs".to_string()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1000)).await;
        });
        assert_eq!(quiet_after(&mut rx, quiet).await.as_deref(), Some("a.rs"));
        // The last change at 400ms, quiet until 700ms.
        assert_eq!(start.elapsed(), Duration::from_millis(700));
        assert_eq!(quiet_after(&mut rx, quiet).await.as_deref(), Some("d.rs"));
        assert_eq!(start.elapsed(), Duration::from_millis(1300));
        feed.await.unwrap();
        assert_eq!(quiet_after(&mut rx, quiet).await, None);
    }

    #[test]
    fn budgets_stop_at_the_per_process_bound_and_return_their_share() {
        let total = Arc::new(AtomicUsize::new(0));
        let b = Budget {
            total: total.clone(),
            mine: AtomicUsize::new(0),
        };
        for _ in 0..MAX_WATCHES_PER_PROCESS {
            b.take().unwrap();
        }
        assert_eq!(b.take(), Err(Limit::PerProcess));
        b.give();
        let other = Budget {
            total: total.clone(),
            mine: AtomicUsize::new(0),
        };
        total.store(MAX_WATCHES, Ordering::Relaxed);
        assert_eq!(other.take(), Err(Limit::Total));
        total.store(MAX_WATCHES_PER_PROCESS - 1, Ordering::Relaxed);
        drop(b);
        assert_eq!(total.load(Ordering::Relaxed), 0);
    }

    /// A walk watches the tree's directories, skipping noise, and lists
    /// a new directory's files.
    #[test]
    fn a_walk_watches_directories_and_skips_noise() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["src/a/b", "target/debug", "node_modules/x", "docs"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("src/a/b/f.txt"), "").unwrap();
        std::os::unix::fs::symlink(dir.path().join("docs"), dir.path().join("src/link")).unwrap();
        let inotify = Inotify::init().unwrap();
        let budget = Arc::new(Budget {
            total: Arc::new(AtomicUsize::new(0)),
            mine: AtomicUsize::new(0),
        });
        let walk = || Walk {
            watches: inotify.watches(),
            budget: budget.clone(),
            matcher: Arc::new(matcher(&["src/**/*.txt"], &[])),
            owner: None,
        };
        let walked = walk().run(dir.path(), String::new(), false);
        let mut dirs: Vec<String> = walked.dirs.into_iter().map(|(_, d)| d).collect();
        dirs.sort();
        assert_eq!(dirs, ["", "docs", "src", "src/a", "src/a/b"]);
        assert!(walked.files.is_empty() && walked.limit.is_none());
        assert_eq!(budget.mine.load(Ordering::Relaxed), 5);

        let walked = walk().run(dir.path(), "src/a".into(), true);
        let mut files = walked.files;
        files.sort();
        assert_eq!(files, ["src/a/b/f.txt"]);
    }
}
