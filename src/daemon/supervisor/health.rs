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
//! HTTP is one `GET` over a `TcpStream` (`http://` only), its head parsed
//! by `httparse`: an HTTP client crate would be most of the agent's
//! dependency tree for that. The body is read only for `ExpectBody`, at
//! most [`BODY_LIMIT`] of it, chunked encoding decoded, and searched with
//! `memchr::memmem`.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::host::Clock;
use super::host::Scopes;
use super::local_checks::Enrolled;
use super::proc::AfterStop;
use super::{Event, Fact, Msg, Supervisor};
use crate::api::{Health, HealthCheck, OnUnhealthy, ProbeKind, State, StatusRange};
use crate::daemon::store::{ProcessId, RunId};

/// One probe's outcome as kept: (time µs, passed, message). The message
/// of a passing local check is a static text, so a thousand checks a
/// second keep (and allocate) no string each.
pub type Probed = (u64, bool, Cow<'static, str>);

/// The health of one run.
pub struct Tracker {
    pub health: Health,
    failures: u32,
    started: Instant,
    /// The newest [`crate::api::HEALTH_RESULTS_KEPT`] results, oldest first.
    pub results: VecDeque<Probed>,
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
    pub fn record(&mut self, check: &HealthCheck, result: Probed, now: Instant) -> Option<Health> {
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

/// A run's health: its tracker and its probing, which ends with it.
pub struct HealthRun {
    pub tracker: Tracker,
    _probing: Probing,
}

/// Who probes a run: a task of its own, or (a TCP check of a loopback
/// address) the shared schedule of `LocalChecks`. Held only to be
/// dropped with the run, which ends the probing.
#[allow(dead_code)]
enum Probing {
    Task(Aborted),
    Local(Enrolled),
}

/// A task aborted when dropped.
struct Aborted(AbortHandle);

impl Drop for Aborted {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Supervisor {
    /// Starts probing the current run of `id`, if it has a check.
    pub(super) fn start_probing(&mut self, id: ProcessId) {
        let Some(p) = self.procs.get(&id) else { return };
        let Some(check) = p.config.health.clone() else {
            return;
        };
        let run = p.run.id;
        let every = Duration::from_millis(check.interval_ms);
        let local = (check.kind == ProbeKind::Tcp)
            .then(|| crate::daemon::listeners::local_target(&check.address))
            .flatten();
        let probing = match local {
            Some(targets) => {
                let timeout = Duration::from_millis(check.timeout_ms);
                Probing::Local(self.local_checks.enroll(id, run, targets, every, timeout))
            }
            None => {
                let cx = ProbeContext {
                    // Only a command needs the environment (a copy per run).
                    env: match check.kind {
                        ProbeKind::Exec => super::starting::launch_env(&self.base_env, &p.config),
                        ProbeKind::Tcp | ProbeKind::Http => Vec::new(),
                    },
                    cwd: p.config.cwd.clone(),
                    scope: Some((self.host.scopes.clone(), p.run.unit.clone())),
                };
                let clock = self.host.clock.clone();
                let task = tokio::spawn(probe_every(id, run, check, cx, clock, self.tx.clone()));
                Probing::Task(Aborted(task.abort_handle()))
            }
        };
        if let Some(p) = self.procs.get_mut(&id) {
            p.health = Some(HealthRun {
                tracker: Tracker::new(Instant::now()),
                _probing: probing,
            });
        }
    }

    pub(super) async fn health_probed(&mut self, id: ProcessId, run: RunId, result: Probed) {
        if let Some(change) = self.record_probe(id, run, result) {
            self.health_changed(change).await;
        }
    }

    /// Records a result of the current run; says what changed, if the
    /// health did. Not async: most results change nothing, and a batch of
    /// a thousand is recorded without building a future for each.
    pub(super) fn record_probe(
        &mut self,
        id: ProcessId,
        run: RunId,
        result: Probed,
    ) -> Option<HealthChange> {
        let p = self.procs.get_mut(&id)?;
        if p.run.id != run || p.state() != State::Running {
            return None;
        }
        let (Some(check), Some(h)) = (p.config.health.as_ref(), p.health.as_mut()) else {
            return None;
        };
        let old = h.tracker.health;
        let message = result.2.clone();
        let new = h.tracker.record(check, result, Instant::now())?;
        let restart = new == Health::Unhealthy && check.on_unhealthy == OnUnhealthy::Restart;
        Some(HealthChange {
            id,
            run,
            old,
            new,
            message,
            restart,
        })
    }

    /// Announces a change of health (event row, properties, signal) and
    /// restarts an unhealthy process when asked to.
    pub(super) async fn health_changed(&mut self, c: HealthChange) {
        let (id, run, old, new) = (c.id, c.run, c.old, c.new);
        let message = c.message;
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
        if c.restart {
            self.begin_stop(id, AfterStop::Recover, None).await;
        }
    }
}

/// A run's health changed: from what to what, on which result, and
/// whether its check restarts it now.
pub(super) struct HealthChange {
    id: ProcessId,
    run: RunId,
    old: Health,
    new: Health,
    message: Cow<'static, str>,
    restart: bool,
}

/// Probes every interval, the first time one interval from now, and
/// sends each result to the actor until it is gone.
async fn probe_every(
    id: ProcessId,
    run: RunId,
    check: HealthCheck,
    cx: ProbeContext,
    clock: Arc<dyn Clock>,
    tx: mpsc::Sender<Msg>,
) {
    let every = Duration::from_millis(check.interval_ms);
    let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let (ok, message) = probe(&check, &cx).await;
        let result = (clock.now_us(), ok, Cow::Owned(message));
        let fact = Fact::HealthProbed { id, run, result };
        if tx.send(Msg::Fact(fact)).await.is_err() {
            break;
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
            ProbeKind::Http => {
                let statuses = check.expect_status.unwrap_or_default();
                http_get(&check.address, statuses, check.expect_body.as_deref()).await
            }
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

/// How much of a body is searched for `ExpectBody`: health endpoints
/// answer in bytes, and a probe must not buffer a whole page.
const BODY_LIMIT: usize = 64 * 1024;
/// The longest response head read: status line and headers.
const HEAD_LIMIT: usize = 16 * 1024;

/// How the body after the head ends.
enum Framing {
    Length(u64),
    Chunked,
    /// At the end of the connection (we asked for `Connection: close`).
    Close,
}

/// One `GET`; passes on a status in `statuses` and, when `body` is set, a
/// response body (its first [`BODY_LIMIT`] bytes) containing it.
async fn http_get(url: &str, statuses: StatusRange, body: Option<&str>) -> Result<String, String> {
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
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let (code, framing, head_len) = loop {
        let n = s
            .read(&mut buf)
            .await
            .map_err(|e| format!("reading the response: {e}"))?;
        if n == 0 {
            return Err("connection closed before a complete response head".into());
        }
        head.extend_from_slice(&buf[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 100];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&head) {
            Ok(httparse::Status::Complete(len)) => {
                let code = response.code.unwrap_or_default();
                break (code, framing(code, response.headers), len);
            }
            Ok(httparse::Status::Partial) if head.len() < HEAD_LIMIT => {}
            Ok(httparse::Status::Partial) => {
                return Err(format!("response head longer than {HEAD_LIMIT} bytes"))
            }
            Err(e) => return Err(format!("not an HTTP response: {e}")),
        }
    };
    if !statuses.contains(code) {
        return Err(format!("HTTP {code} (expected {statuses})"));
    }
    let Some(needle) = body else {
        return Ok(format!("HTTP {code}"));
    };
    // What came in after the head is the start of the body.
    let rest = std::io::Cursor::new(head.split_off(head_len));
    let (content, complete) = read_body(rest.chain(s), framing).await?;
    if memchr::memmem::find(&content, needle.as_bytes()).is_some() {
        return Ok(format!("HTTP {code}, body has '{}'", shown(needle)));
    }
    let searched = if complete {
        String::new()
    } else {
        format!(" (searched its first {} bytes)", content.len())
    };
    Err(format!(
        "HTTP {code}, body lacks '{}'{searched}",
        shown(needle)
    ))
}

/// The body's framing, from its status and headers (RFC 9112 §6.3).
fn framing(code: u16, headers: &[httparse::Header<'_>]) -> Framing {
    if matches!(code, 100..=199 | 204 | 304) {
        return Framing::Length(0);
    }
    let value = |name: &str| {
        headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    if value("transfer-encoding").is_some_and(|te| te.ends_with("chunked")) {
        return Framing::Chunked;
    }
    match value("content-length").and_then(|n| n.parse().ok()) {
        Some(n) => Framing::Length(n),
        None => Framing::Close,
    }
}

/// Reads up to [`BODY_LIMIT`] bytes of body; also says whether that was
/// all of it (false: more was sent, or a chunked body was cut short). Chunks are decoded, so a text split across two chunks is
/// still found.
async fn read_body(r: impl AsyncRead + Unpin, framing: Framing) -> Result<(Vec<u8>, bool), String> {
    let failed = |e: std::io::Error| format!("reading the body: {e}");
    let mut content = Vec::new();
    let limit = BODY_LIMIT as u64;
    match framing {
        Framing::Length(n) => {
            let mut r = r.take(n.min(limit));
            r.read_to_end(&mut content).await.map_err(failed)?;
            Ok((content, n <= limit))
        }
        Framing::Close => {
            // One byte past the limit tells a body that ends there from a longer one.
            let mut r = r.take(limit + 1);
            r.read_to_end(&mut content).await.map_err(failed)?;
            let complete = content.len() <= BODY_LIMIT;
            content.truncate(BODY_LIMIT);
            Ok((content, complete))
        }
        Framing::Chunked => {
            // Bounds the size lines too: the framing of a full body is far
            // below a second limit's worth of bytes.
            let mut r = BufReader::new(r.take(2 * limit));
            let mut line = Vec::new();
            loop {
                line.clear();
                r.read_until(b'\n', &mut line).await.map_err(failed)?;
                if line.is_empty() {
                    // Cut short, by the server or by the bound above.
                    return Ok((content, false));
                }
                let size = match httparse::parse_chunk_size(&line) {
                    Ok(httparse::Status::Complete((_, size))) => size,
                    _ => return Err("malformed chunked body".into()),
                };
                if size == 0 {
                    return Ok((content, true));
                }
                let room = limit - content.len() as u64;
                let got = (&mut r)
                    .take(size.min(room))
                    .read_to_end(&mut content)
                    .await
                    .map_err(failed)?;
                if size > room {
                    return Ok((content, false));
                }
                if (got as u64) < size {
                    return Err("chunked body ended early".into());
                }
                // The CRLF that ends the chunk's data.
                line.clear();
                r.read_until(b'\n', &mut line).await.map_err(failed)?;
            }
        }
    }
}

/// `ExpectBody` as quoted in a result: its first 40 characters.
fn shown(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
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
            expect_status: None,
            expect_body: None,
        }
    }

    fn r(ok: bool) -> Probed {
        (0, ok, Cow::Borrowed(""))
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
        assert_eq!(
            probe(&c, &cx(&[])).await,
            (false, "HTTP 503 (expected 200-399)".into())
        );
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

    /// Serves each canned response to one connection, in order.
    async fn serve(replies: Vec<String>) -> std::net::SocketAddr {
        use tokio::net::TcpListener;
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            for reply in replies {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                s.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn http_expectations_check_status_and_body() {
        let long = "HTTP/1.1 200 OK\r\n\r\n".to_string() + &"x".repeat(BODY_LIMIT) + "ok";
        let replies = [
            "HTTP/1.1 200 OK\r\n\r\nfine",
            "HTTP/1.1 204 No Content\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nstatus ok",
            "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbusy, not ok",
            // The text split across two chunks, with an extension.
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
             3;x=y\r\nall\r\n4\r\n is \r\n1\r\no\r\n1\r\nk\r\n0\r\n\r\n",
            "HTTP/1.0 200 OK\r\nServer: test\r\n\r\nclosed when done: ok",
        ];
        let addr = serve(
            replies
                .map(String::from)
                .into_iter()
                .chain([long])
                .collect(),
        )
        .await;
        let url = format!("http://{addr}/");
        let narrow: StatusRange = "204".parse().unwrap();
        let get = |statuses, body| http_get(&url, statuses, body);
        assert_eq!(
            get(narrow, None).await,
            Err("HTTP 200 (expected 204)".into())
        );
        assert_eq!(get(narrow, None).await, Ok("HTTP 204".into()));
        let any = StatusRange::default();
        assert_eq!(
            get(any, Some("ok")).await,
            Ok("HTTP 200, body has 'ok'".into())
        );
        // Past Content-Length is not the body.
        assert_eq!(
            get(any, Some("ok")).await,
            Err("HTTP 200, body lacks 'ok'".into())
        );
        assert_eq!(
            get(any, Some("all is ok")).await,
            Ok("HTTP 200, body has 'all is ok'".into())
        );
        assert!(get(any, Some("ok")).await.is_ok());
        assert_eq!(
            get(any, Some("ok")).await,
            Err(format!(
                "HTTP 200, body lacks 'ok' (searched its first {BODY_LIMIT} bytes)"
            ))
        );
    }

    #[test]
    fn long_expected_text_is_shortened_in_results() {
        assert_eq!(shown("ok"), "ok");
        let long = "é".repeat(50);
        assert_eq!(shown(&long), "é".repeat(40) + "…");
    }
}
