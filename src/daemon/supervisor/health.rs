//! Health checks: the per-run state machine (`Tracker`: start period,
//! retries, the last results), the probes (exec, TCP connect, HTTP GET),
//! the task that runs them every interval — off the actor, each result
//! coming back as `Fact::HealthProbed` — and what the actor does with a
//! result: record it, announce a change (event row, properties,
//! `HealthChanged`), restart an unhealthy process when asked to.
//!
//! An `exec` probe runs in the process's scope, with its environment and
//! working directory: spawned held (a `sh` waiting for a line), attached
//! to the scope with `AttachProcessesToUnit`, then released to `exec` the
//! command — so its usage counts to the process, like `docker exec`.
//! HTTP is one hand-written `GET` over a `TcpStream` (status line only;
//! `http://` only): an HTTP client crate would be most of the agent's
//! dependency tree for that.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::host::Scopes;
use super::proc::AfterStop;
use super::{Event, Fact, Msg, Supervisor};
use crate::api::{Health, HealthCheck, HealthResult, OnUnhealthy, ProbeKind, State};
use crate::daemon::store::{ProcessId, RunId};

/// The health of one run.
pub struct Tracker {
    pub health: Health,
    failures: u32,
    started: Instant,
    /// The newest [`crate::api::HEALTH_RESULTS_KEPT`] results, oldest first.
    pub results: VecDeque<HealthResult>,
}

impl Tracker {
    pub fn new(started: Instant) -> Tracker {
        Tracker {
            health: Health::Starting,
            failures: 0,
            started,
            results: VecDeque::new(),
        }
    }

    /// Records one probe result at `now`; returns the new health when it
    /// changed. A pass makes it healthy at once; `Retries` consecutive
    /// failures make it unhealthy; failures before the first pass within
    /// the start period do not count (the program is still coming up).
    pub fn record(
        &mut self,
        check: &HealthCheck,
        result: HealthResult,
        now: Instant,
    ) -> Option<Health> {
        let ok = result.1;
        self.results.push_back(result);
        while self.results.len() > crate::api::HEALTH_RESULTS_KEPT {
            self.results.pop_front();
        }
        let old = self.health;
        if ok {
            self.failures = 0;
            self.health = Health::Healthy;
        } else {
            let grace = Duration::from_millis(check.start_period_ms);
            let starting = old == Health::Starting && now.duration_since(self.started) < grace;
            if !starting {
                self.failures = self.failures.saturating_add(1);
                if self.failures >= check.retries {
                    self.health = Health::Unhealthy;
                }
            }
        }
        (self.health != old).then_some(self.health)
    }
}

/// A run's health: its tracker and its probing task, which ends with it.
pub struct HealthRun {
    pub tracker: Tracker,
    task: AbortHandle,
}

impl Drop for HealthRun {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Supervisor {
    /// Starts probing the current run of `id`, if it has a check.
    pub(super) fn start_probing(&mut self, id: ProcessId) {
        let Some(p) = self.procs.get(&id) else { return };
        let Some(check) = p.config.health.clone() else {
            return;
        };
        let cx = ProbeContext {
            env: super::starting::launch_env(&self.base_env, &p.config),
            cwd: p.config.cwd.clone(),
            scope: Some((self.host.scopes.clone(), p.run.unit.clone())),
        };
        let run = p.run.id;
        let tx = self.tx.clone();
        let clock = self.host.clock.clone();
        let every = Duration::from_millis(check.interval_ms);
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let (ok, message) = probe(&check, &cx).await;
                let result = (clock.now_us(), ok, message);
                if tx
                    .send(Msg::Fact(Fact::HealthProbed { id, run, result }))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        })
        .abort_handle();
        if let Some(p) = self.procs.get_mut(&id) {
            p.health = Some(HealthRun {
                tracker: Tracker::new(Instant::now()),
                task,
            });
        }
    }

    pub(super) async fn health_probed(&mut self, id: ProcessId, run: RunId, result: HealthResult) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        if p.run.id != run || p.state() != State::Running {
            return;
        }
        let (Some(check), Some(h)) = (p.config.health.as_ref(), p.health.as_mut()) else {
            return;
        };
        let old = h.tracker.health;
        let message = result.2.clone();
        let Some(new) = h.tracker.record(check, result, Instant::now()) else {
            return;
        };
        let restart = new == Health::Unhealthy && check.on_unhealthy == OnUnhealthy::Restart;
        tracing::info!(%id, "health {old} -> {new} ({message})");
        let detail = format!("{old} -> {new}: {message}");
        let now = self.now_us();
        let _ = self
            .store
            .call(move |db| db.add_event(id, Some(run), "health", &detail, now))
            .await;
        self.changed(id, State::Running);
        self.publish(Event::HealthChanged {
            id: id.to_string(),
            old,
            new,
        });
        if restart {
            self.begin_stop(id, AfterStop::Recover, None).await;
        }
    }
}

/// Where an exec probe runs: the process's environment, directory and
/// scope (`None`: no scope to join, in tests).
struct ProbeContext {
    env: Vec<String>,
    cwd: String,
    scope: Option<(Arc<dyn Scopes>, String)>,
}

/// Runs one probe within its timeout: (passed, what was seen).
async fn probe(check: &HealthCheck, cx: &ProbeContext) -> (bool, String) {
    let limit = Duration::from_millis(check.timeout_ms);
    let attempt = async {
        match check.kind {
            ProbeKind::Exec => exec(&check.command, cx).await,
            ProbeKind::Tcp => TcpStream::connect(check.address.as_str())
                .await
                .map(|_| "connected".to_string())
                .map_err(|e| format!("connect {}: {e}", check.address)),
            ProbeKind::Http => http_get(&check.address).await,
        }
    };
    match tokio::time::timeout(limit, attempt).await {
        Ok(Ok(m)) => (true, m),
        Ok(Err(m)) => (false, m),
        Err(_) => (false, format!("timed out after {} ms", check.timeout_ms)),
    }
}

/// Runs `argv` in the process's scope: `sh` holds it (`read` waits for
/// a line on its stdin) until systemd has attached it to the scope, then
/// `exec`s the command, so its first instruction runs there.
async fn exec(argv: &[String], cx: &ProbeContext) -> Result<String, String> {
    let program = argv.first().ok_or("no command")?;
    let mut child = tokio::process::Command::new("/bin/sh")
        .args(["-c", "read -r _ && exec \"$@\"", "corral-probe"])
        .args(argv)
        .env_clear()
        .envs(cx.env.iter().filter_map(|e| e.split_once('=')))
        .current_dir(&cx.cwd)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        // A probe past its timeout is dropped, and killed with it.
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run '{program}': {e}"))?;
    let mut hold = child.stdin.take().ok_or("no stdin to release the probe")?;
    if let (Some((scopes, unit)), Some(pid)) = (&cx.scope, child.id()) {
        scopes
            .attach(unit.clone(), vec![pid])
            .await
            .map_err(|e| format!("cannot run the probe in {unit}: {e}"))?;
    }
    hold.write_all(b"go\n")
        .await
        .map_err(|e| format!("releasing the probe: {e}"))?;
    drop(hold);
    let status = child
        .wait()
        .await
        .map_err(|e| format!("waiting for '{program}': {e}"))?;
    if status.success() {
        Ok("exit code 0".into())
    } else {
        Err(match status.code() {
            Some(c) => format!("exit code {c}"),
            None => format!("ended by {status}"),
        })
    }
}

/// `http://host[:port][/path]` as (host:port, host, path).
fn parse_url(url: &str) -> Result<(String, &str, &str), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("'{url}' is not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("'{url}' has no host"));
    }
    // A bracketed IPv6 address has colons of its own.
    let has_port = authority.rsplit_once(':').is_some_and(|(h, p)| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':')
    });
    let addr = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((addr, authority, path))
}

/// One `GET`; passes on a status of 200-399.
async fn http_get(url: &str) -> Result<String, String> {
    let (addr, host, path) = parse_url(url)?;
    let mut s = TcpStream::connect(&addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: corrald\r\nConnection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending the request: {e}"))?;
    // The status line is all we need; it comes first.
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = s
            .read(&mut buf)
            .await
            .map_err(|e| format!("reading the response: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or("");
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .filter(|_| line.starts_with("HTTP/"))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: '{}'", line.trim()))?;
    if (200..400).contains(&code) {
        Ok(format!("HTTP {code}"))
    } else {
        Err(format!("HTTP {code}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(retries: u32, start_period_ms: u64) -> HealthCheck {
        HealthCheck {
            kind: ProbeKind::Tcp,
            command: vec![],
            address: "127.0.0.1:1".into(),
            interval_ms: 1000,
            timeout_ms: 1000,
            start_period_ms,
            retries,
            on_unhealthy: OnUnhealthy::None,
        }
    }

    fn r(ok: bool) -> HealthResult {
        (0, ok, String::new())
    }

    #[tokio::test(start_paused = true)]
    async fn retries_count_consecutive_failures() {
        let c = check(3, 0);
        let mut t = Tracker::new(Instant::now());
        assert_eq!(t.health, Health::Starting);
        assert_eq!(t.record(&c, r(false), Instant::now()), None);
        assert_eq!(t.record(&c, r(true), Instant::now()), Some(Health::Healthy));
        assert_eq!(t.record(&c, r(false), Instant::now()), None);
        assert_eq!(t.record(&c, r(false), Instant::now()), None);
        // A pass in between starts the count over.
        assert_eq!(t.record(&c, r(true), Instant::now()), None);
        assert_eq!(t.record(&c, r(false), Instant::now()), None);
        assert_eq!(t.record(&c, r(false), Instant::now()), None);
        assert_eq!(
            t.record(&c, r(false), Instant::now()),
            Some(Health::Unhealthy)
        );
        assert_eq!(t.record(&c, r(false), Instant::now()), None);
        assert_eq!(t.record(&c, r(true), Instant::now()), Some(Health::Healthy));
        assert_eq!(t.results.len(), crate::api::HEALTH_RESULTS_KEPT);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_in_the_start_period_do_not_count() {
        let c = check(1, 5000);
        let start = Instant::now();
        let mut t = Tracker::new(start);
        for _ in 0..4 {
            tokio::time::advance(Duration::from_secs(1)).await;
            assert_eq!(t.record(&c, r(false), Instant::now()), None);
        }
        // Past the start period, one failure is enough (Retries = 1).
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            t.record(&c, r(false), Instant::now()),
            Some(Health::Unhealthy)
        );
        // A pass inside the start period ends it early.
        let mut t = Tracker::new(Instant::now());
        assert_eq!(t.record(&c, r(true), Instant::now()), Some(Health::Healthy));
        assert_eq!(
            t.record(&c, r(false), Instant::now()),
            Some(Health::Unhealthy)
        );
    }

    #[test]
    fn urls_parse_to_an_address_host_and_path() {
        assert_eq!(
            parse_url("http://127.0.0.1:8000/x?y").unwrap(),
            ("127.0.0.1:8000".to_string(), "127.0.0.1:8000", "/x?y")
        );
        assert_eq!(
            parse_url("http://example").unwrap(),
            ("example:80".to_string(), "example", "/")
        );
        assert!(parse_url("https://x").is_err());
        assert!(parse_url("http:///x").is_err());
    }

    #[tokio::test]
    async fn http_status_decides_and_tcp_connects() {
        use tokio::net::TcpListener;
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            for status in ["204 No Content", "503 Busy", "200 OK"] {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let reply = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
                s.write_all(reply.as_bytes()).await.unwrap();
            }
            let _ = l.accept().await;
        });
        let mut c = check(1, 0);
        c.kind = ProbeKind::Http;
        c.address = format!("http://{addr}/health");
        let cx = |env: &[&str]| ProbeContext {
            env: env.iter().map(|e| e.to_string()).collect(),
            cwd: "/tmp".into(),
            scope: None,
        };
        assert_eq!(probe(&c, &cx(&[])).await, (true, "HTTP 204".into()));
        assert_eq!(probe(&c, &cx(&[])).await, (false, "HTTP 503".into()));
        c.kind = ProbeKind::Tcp;
        c.address = addr.to_string();
        assert!(probe(&c, &cx(&[])).await.0);
        c.kind = ProbeKind::Exec;
        c.command = vec![
            "sh".into(),
            "-c".into(),
            "test \"$X\" = 1 && test \"$PWD\" = /tmp".into(),
        ];
        let path = "PATH=/usr/bin:/bin";
        assert!(probe(&c, &cx(&["X=1", path])).await.0);
        assert_eq!(
            probe(&c, &cx(&["X=2", path])).await,
            (false, "exit code 1".into())
        );
    }
}
