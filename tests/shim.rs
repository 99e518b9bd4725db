//! Drives the real `corral-shim` binary through its control protocol, the
//! way corrald does but without systemd: a socketpair end as stdin, the spec,
//! `go`, the reply, then the log files and the exit record it leaves.
//!
//! Waits are bounded polls (`wait_for`), never a fixed sleep. Every child
//! started here is killed by process group when its guard drops, so a
//! failing test leaves nothing running.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use corral::logfile::{read_lines, LogLine};
use corral::shim::protocol::{notify_path, ForkAnswer, NotifyPhase, NotifyRecord};
use corral::shim::{Credentials, ExitRecord, LaunchSpec};

const SHIM: &str = env!("CARGO_BIN_EXE_corral-shim");
const TIMEOUT: Duration = Duration::from_secs(5);

/// Polls `cond` every 10 ms for up to `limit`; panics with `what` on timeout.
fn wait_for_within<T>(limit: Duration, what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_for<T>(what: &str, cond: impl FnMut() -> Option<T>) -> T {
    wait_for_within(TIMEOUT, what, cond)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// A test's scratch directory with the layout corrald would create.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("exits")).unwrap();
        Scratch { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn log_dir(&self) -> PathBuf {
        self.path().join("logs/12")
    }

    fn exit_file(&self) -> PathBuf {
        self.path().join("exits/34")
    }

    fn spec(&self, argv: &[&str]) -> LaunchSpec {
        LaunchSpec {
            id: "12".into(),
            run: 34,
            argv: argv.iter().map(|s| s.to_string()).collect(),
            cwd: self.path().to_path_buf(),
            env: vec!["PATH=/usr/bin:/bin".into()],
            log_dir: self.log_dir(),
            log_max_bytes: 1 << 20,
            log_files: 3,
            exit_file: self.exit_file(),
            user: None,
            journal: None,
            tty: false,
            notify: false,
        }
    }

    fn lines(&self) -> Vec<LogLine> {
        read_lines(&self.log_dir(), None, None).unwrap()
    }

    /// The texts of the child's stdout lines, in order.
    fn stdout(&self) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| l.stream == 'o')
            .map(|l| l.text)
            .collect()
    }

    fn wait_exit_record(&self) -> ExitRecord {
        wait_for("the exit file", || ExitRecord::read(&self.exit_file()).ok())
    }
}

/// A running shim (and, once known, its child's process group).
struct Shim {
    proc: Child,
    control: BufReader<UnixStream>,
    child_pid: Option<i32>,
}

impl Shim {
    /// Starts the shim with one end of a socketpair as stdin, as corrald does.
    fn spawn() -> Self {
        Self::spawn_with_control(true)
    }

    fn spawn_with_control(with_control: bool) -> Self {
        Self::spawn_from(with_control, || Ok(()))
    }

    /// Starts the shim with `prepare` run in it before exec: the process
    /// state corrald might pass on.
    fn spawn_from(
        with_control: bool,
        prepare: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
    ) -> Self {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut cmd = Command::new(SHIM);
        // The control socket is the shim's stdin, as corrald passes it.
        if with_control {
            cmd.stdin(Stdio::from(OwnedFd::from(theirs)));
        } else {
            drop(theirs);
            cmd.stdin(Stdio::null());
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        // SAFETY: the caller's `prepare` runs only async-signal-safe calls.
        unsafe {
            cmd.pre_exec(prepare);
        }
        let proc = cmd.spawn().unwrap();
        drop(cmd);
        ours.set_read_timeout(Some(TIMEOUT)).unwrap();
        Shim {
            proc,
            control: BufReader::new(ours),
            child_pid: None,
        }
    }

    fn pid(&self) -> i32 {
        self.proc.id() as i32
    }

    fn send(&mut self, bytes: &[u8]) {
        self.control.get_mut().write_all(bytes).unwrap();
    }

    /// Sends spec + go and returns the reply line (without `\n`).
    fn launch(&mut self, spec: &LaunchSpec) -> String {
        self.send(spec.to_line().unwrap().as_bytes());
        self.send(b"go\n");
        let reply = self.read_reply();
        if let Some(pid) = reply.strip_prefix("ok ") {
            self.child_pid = pid.parse().ok();
        }
        reply
    }

    fn read_reply(&mut self) -> String {
        let mut line = String::new();
        self.control.read_line(&mut line).unwrap();
        assert!(line.ends_with('\n'), "reply {line:?} is not a full line");
        line.pop();
        line
    }

    /// Everything the shim still writes before closing the control socket.
    fn read_rest(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        self.control.read_to_end(&mut rest).unwrap();
        rest
    }

    fn wait(&mut self) -> ExitStatus {
        wait_for_within(Duration::from_secs(20), "the shim to exit", || {
            self.proc.try_wait().unwrap()
        })
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        // Only what this test started: the child's group, then the shim.
        if let Some(pid) = self.child_pid {
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

fn texts(lines: &[LogLine]) -> Vec<(char, String)> {
    lines.iter().map(|l| (l.stream, l.text.clone())).collect()
}

fn line(stream: char, text: &str) -> (char, String) {
    (stream, text.to_owned())
}

#[test]
fn logs_output_and_records_exit_code() {
    let scratch = Scratch::new();
    let started_us = now_us();
    let mut shim = Shim::spawn();
    let reply = shim.launch(&scratch.spec(&["sh", "-c", "echo out; echo err >&2; exit 3"]));
    let pid: u32 = reply
        .strip_prefix("ok ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected reply {reply:?}"));
    // The reply is the last thing on the control socket; then it is closed.
    assert_eq!(shim.read_rest(), b"");

    let record = scratch.wait_exit_record();
    assert_eq!(
        (
            record.run,
            record.pid,
            record.code,
            record.signal,
            record.core_dumped
        ),
        (34, pid, 3, 0, false)
    );
    assert!(record.exited_at_us >= started_us && record.exited_at_us <= now_us());
    assert!(!scratch.path().join("exits/34.tmp").exists());

    assert_eq!(shim.wait().code(), Some(0));
    let lines = scratch.lines();
    assert_eq!(
        texts(&lines),
        vec![
            line('s', &format!("started pid {pid}")),
            line('o', "out"),
            line('e', "err"),
            line('s', "exited code 3"),
        ]
    );
    assert!(lines.windows(2).all(|w| w[0].ts_us <= w[1].ts_us));
    assert!(lines[0].ts_us >= started_us);
    let mode = fs::metadata(scratch.log_dir())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o007, 0, "log dir is world-accessible: {mode:o}");
}

/// Notify mode: the child finds the shim's socket in `NOTIFY_SOCKET`
/// (replacing an inherited one), what it says there (a passed fd
/// notwithstanding) lands in the notify record next to the exit record,
/// and nothing is written there once the run has ended.
#[test]
fn notify_child_speaks_through_the_socket_into_the_record() {
    let scratch = Scratch::new();
    let gate = scratch.path().join("gate");
    let speaker = format!(
        "import array, os, socket, time\n\
         addr = os.environ['NOTIFY_SOCKET']\n\
         addr = '\\0' + addr[1:] if addr.startswith('@') else addr\n\
         s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
         fds = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', [0]))]\n\
         s.sendmsg([b'STATUS=one'], fds, 0, addr)\n\
         s.sendto(b'READY=1\\nSTATUS=two', addr)\n\
         while not os.path.exists({gate:?}): time.sleep(0.01)\n\
         s.sendto(b'STATUS=three', addr)\n"
    );
    let mut spec = scratch.spec(&["python3", "-c", &speaker]);
    spec.notify = true;
    spec.env.push("NOTIFY_SOCKET=/run/elsewhere/notify".into());
    let mut shim = Shim::spawn();
    let reply = shim.launch(&spec);
    assert!(reply.starts_with("ok "), "{reply}");
    let path = notify_path(&scratch.exit_file());
    let said = wait_for("the notify record", || {
        NotifyRecord::read(&path)
            .ok()
            .filter(|r| r.phase == NotifyPhase::Ready)
    });
    assert_eq!(
        said,
        NotifyRecord {
            run: 34,
            phase: NotifyPhase::Ready,
            status: "two".into()
        }
    );
    fs::write(&gate, b"").unwrap();
    let record = scratch.wait_exit_record();
    assert_eq!(record.code, 0, "{:?}", scratch.lines());
    assert_eq!(shim.wait().code(), Some(0));
    // `three` was sent while the child lived; it is kept or not, but the
    // record is whole and of this run.
    assert_eq!(NotifyRecord::read(&path).unwrap().run, 34);
}

/// PTY mode: the child sits on a terminal in its own session with TERM
/// set, its output (without the terminal's `\r`) is logged, the attach
/// socket (0600) takes scripted input and is gone after the exit.
#[test]
fn tty_child_runs_on_a_terminal_served_on_a_socket() {
    use corral::shim::terminal::{socket_path, Decoder, Frame};
    let scratch = Scratch::new();
    let mut spec = scratch.spec(&[
        "sh",
        "-c",
        r#"test -t 0 && test -t 1 && echo "tty $TERM"; read l; echo "got:$l""#,
    ]);
    spec.tty = true;
    let mut shim = Shim::spawn();
    assert!(shim.launch(&spec).starts_with("ok "));
    let socket = socket_path(&scratch.log_dir(), 34);
    let mode = fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let mut client = UnixStream::connect(&socket).unwrap();
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut decoder = Decoder::default();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let mut sent = false;
    // The shim closes the socket once the child's terminal is gone.
    loop {
        // Type only once the child has printed its first line: the
        // terminal echoes input at once, so typing earlier would put the
        // echo before that line in the log.
        if !sent && seen.windows(2).any(|w| w == b"\r\n") {
            client
                .write_all(&Frame::Send(b"hi\n".to_vec()).encode())
                .unwrap();
            sent = true;
        }
        let n = client.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        decoder.push(&buf[..n]);
        while let Some(Frame::Output(bytes)) = decoder.next_frame().unwrap() {
            seen.extend_from_slice(&bytes);
        }
    }
    assert!(sent, "the child printed no line before its terminal closed");
    let seen = String::from_utf8_lossy(&seen).into_owned();
    assert!(seen.contains("tty xterm-256color\r\n"), "{seen:?}");
    assert!(seen.contains("got:hi\r\n"), "{seen:?}");
    assert_eq!(scratch.wait_exit_record().code, 0);
    assert_eq!(shim.wait().code(), Some(0));
    assert!(!socket.exists());
    assert_eq!(scratch.stdout(), ["tty xterm-256color", "hi", "got:hi"]);
}

#[test]
fn records_terminating_signal() {
    // The shim ignores SIGTERM; a shell started with SIGTERM ignored cannot
    // undo it (POSIX), so this also proves pre_exec reset the disposition.
    let scratch = Scratch::new();
    let mut shim = Shim::spawn();
    let reply = shim.launch(&scratch.spec(&["sh", "-c", "kill -TERM $$; echo survived"]));
    assert!(reply.starts_with("ok "), "{reply:?}");
    let record = scratch.wait_exit_record();
    assert_eq!(
        (record.code, record.signal, record.core_dumped),
        (-1, libc::SIGTERM, false)
    );
    assert_eq!(shim.wait().code(), Some(0));
    let texts = texts(&scratch.lines());
    assert_eq!(texts.last().unwrap(), &line('s', "exited signal 15"));
    assert!(!texts.contains(&line('o', "survived")));
}

#[test]
fn child_gets_spec_env_cwd_and_clean_process_state() {
    let scratch = Scratch::new();
    let cwd = scratch.path().join("work dir");
    fs::create_dir(&cwd).unwrap();
    let mut spec = scratch.spec(&[
        "sh",
        "-c",
        r#"pwd
echo "K=$K"
echo "HOME=${HOME-unset}"
if [ -e /proc/self/fd/3 ]; then echo fd3=open; else echo fd3=closed; fi
echo "stdin=$(readlink /proc/self/fd/0)"
grep -E '^Sig(Blk|Ign):' /proc/self/status"#,
    ]);
    spec.cwd = cwd.clone();
    spec.env.push("K=V=W".into());
    spec.env.push("NOEQUALS".into());
    let mut shim = Shim::spawn();
    assert!(shim.launch(&spec).starts_with("ok "));
    scratch.wait_exit_record();
    assert_eq!(shim.wait().code(), Some(0));

    let out: Vec<String> = scratch.stdout();
    assert_eq!(out[0], cwd.to_str().unwrap());
    assert_eq!(out[1], "K=V=W");
    // The spec's env is the whole environment, not added to the shim's.
    assert_eq!(out[2], "HOME=unset");
    // The control socket must not leak into the child.
    assert_eq!(out[3], "fd3=closed");
    // The shim's stdin was the control socket; the child's is /dev/null.
    assert_eq!(out[4], "stdin=/dev/null");
    let mask = |name: &str| {
        let l = out.iter().find(|l| l.starts_with(name)).unwrap();
        u64::from_str_radix(l[name.len()..].trim(), 16).unwrap()
    };
    assert_eq!(mask("SigBlk:"), 0, "{out:?}");
    let shim_ignored = [libc::SIGHUP, libc::SIGINT, libc::SIGPIPE, libc::SIGTERM]
        .iter()
        .fold(0u64, |m, &s| m | 1 << (s - 1));
    assert_eq!(mask("SigIgn:") & shim_ignored, 0, "{out:?}");
}

/// What a command inherits is defined by the shim, not by whoever started
/// corrald: a shim started with signals ignored and blocked, umask 077
/// (as corrald runs) and a raised open-files limit gives its child default
/// dispositions, an empty mask, umask 022 and the services' soft limit.
#[test]
fn child_process_state_is_reset_whatever_the_shim_inherited() {
    let scratch = Scratch::new();
    let hard = {
        let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        lim.rlim_max
    };
    // SAFETY: async-signal-safe calls on local values, between fork and exec.
    let mut shim = Shim::spawn_from(true, move || unsafe {
        for sig in [libc::SIGUSR1, libc::SIGQUIT, libc::SIGRTMIN() + 3] {
            libc::signal(sig, libc::SIG_IGN);
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::umask(0o077);
        let lim = libc::rlimit {
            rlim_cur: hard,
            rlim_max: hard,
        };
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        Ok(())
    });
    let spec = scratch.spec(&[
        "sh",
        "-c",
        "grep -E '^(Sig(Blk|Ign)|Umask):' /proc/self/status; grep 'Max open files' /proc/self/limits",
    ]);
    assert!(shim.launch(&spec).starts_with("ok "));
    scratch.wait_exit_record();
    assert_eq!(shim.wait().code(), Some(0));
    let out: Vec<String> = scratch.stdout();
    let field = |name: &str| {
        let l = out.iter().find(|l| l.starts_with(name)).unwrap();
        l[name.len()..].trim().to_string()
    };
    assert_eq!(field("SigIgn:"), "0000000000000000", "{out:?}");
    assert_eq!(field("SigBlk:"), "0000000000000000", "{out:?}");
    assert_eq!(field("Umask:"), "0022", "{out:?}");
    let limits: Vec<String> = field("Max open files")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(limits[0], hard.min(1024).to_string(), "{out:?}");
    assert_eq!(
        limits[1],
        hard.to_string(),
        "the hard limit is kept: {out:?}"
    );
}

#[test]
fn missing_executable_is_reported_without_exit_file() {
    for (argv, cwd) in [
        (vec!["/nonexistent/corral-missing"], None),
        // Looked up in the spec's PATH.
        (vec!["corral-no-such-program", "arg"], None),
        (vec!["sh", "-c", "true"], Some("/nonexistent/dir")),
    ] {
        let scratch = Scratch::new();
        let mut spec = scratch.spec(&argv);
        if let Some(cwd) = cwd {
            spec.cwd = cwd.into();
        }
        let mut shim = Shim::spawn();
        assert_eq!(
            shim.launch(&spec),
            "err 2 No such file or directory (os error 2)",
            "{argv:?} in {cwd:?}"
        );
        assert_eq!(shim.read_rest(), b"");
        assert_eq!(shim.wait().code(), Some(127));
        assert!(!scratch.exit_file().exists());
        assert_eq!(
            fs::read_dir(scratch.path().join("exits")).unwrap().count(),
            0
        );
    }
}

#[test]
fn invalid_spec_is_answered_after_go() {
    let scratch = Scratch::new();
    let mut shim = Shim::spawn();
    shim.send(b"{\"run\":\"not a spec\"}\ngo\n");
    let reply = shim.read_reply();
    assert!(
        reply.starts_with("err 22 invalid launch spec: "),
        "{reply:?}"
    );
    assert_eq!(shim.wait().code(), Some(127));
    assert!(!scratch.exit_file().exists());
}

#[test]
fn nothing_runs_without_go() {
    // Each case must end the shim with 1 before the command could run: the
    // command would create `marker`, and the log dir only appears after go.
    let cases: [(&str, &[u8], bool); 4] = [
        ("closed after spec", b"", true),
        ("wrong word", b"gogo\n", true),
        ("go without newline", b"go", true),
        ("closed at once", b"", false),
    ];
    for (what, after_spec, send_spec) in cases {
        let scratch = Scratch::new();
        let marker = scratch.path().join("marker");
        let spec = scratch.spec(&["sh", "-c", &format!("touch '{}'", marker.display())]);
        let mut shim = Shim::spawn();
        if send_spec {
            shim.send(spec.to_line().unwrap().as_bytes());
        }
        shim.send(after_spec);
        shim.control
            .get_ref()
            .shutdown(std::net::Shutdown::Write)
            .unwrap();
        assert_eq!(shim.read_rest(), b"", "{what}: shim replied");
        assert_eq!(shim.wait().code(), Some(1), "{what}");
        assert!(!marker.exists(), "{what}: the command ran");
        assert!(!scratch.log_dir().exists(), "{what}: went past go");
        assert!(!scratch.exit_file().exists(), "{what}");
    }
}

#[test]
fn no_control_fd_exits_1() {
    let mut shim = Shim::spawn_with_control(false);
    assert_eq!(shim.wait().code(), Some(1));
}

#[test]
fn shim_survives_sigterm_and_still_records_exit() {
    let scratch = Scratch::new();
    let mut shim = Shim::spawn();
    let reply = shim.launch(&scratch.spec(&["sh", "-c", "echo ready; exec sleep 60"]));
    assert!(reply.starts_with("ok "), "{reply:?}");
    let child = shim.child_pid.unwrap();
    wait_for("the child's first line", || {
        texts(&scratch.lines())
            .contains(&line('o', "ready"))
            .then_some(())
    });
    // The shim left corrald's session; the child leads its own group.
    assert_eq!(unsafe { libc::getsid(shim.pid()) }, shim.pid());
    assert_eq!(unsafe { libc::getpgid(child) }, child);

    // What a scope stop (and a closing terminal) sends to every process.
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGPIPE] {
        assert_eq!(unsafe { libc::kill(shim.pid(), sig) }, 0);
    }
    // The child is not affected (it is signalled separately by the scope).
    assert_eq!(unsafe { libc::kill(child, 0) }, 0);
    assert!(!scratch.exit_file().exists());

    // A fatal signal takes effect inside kill(2), so a shim that reports
    // the child's death afterwards survived the signals above.
    assert_eq!(unsafe { libc::kill(-child, libc::SIGKILL) }, 0);
    let record = scratch.wait_exit_record();
    assert_eq!((record.code, record.signal), (-1, libc::SIGKILL));
    let status = shim.wait();
    assert_eq!((status.code(), status.signal()), (Some(0), None));
}

#[test]
fn exit_is_recorded_while_grandchild_holds_the_pipes() {
    let scratch = Scratch::new();
    // The background job keeps stdout open until the test creates
    // `release` (bounded to ~10 s in case the test dies first).
    let script = r#"(i=0; while [ ! -e release ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done; echo late) &
echo early
exit 0"#;
    let mut shim = Shim::spawn();
    assert!(shim
        .launch(&scratch.spec(&["sh", "-c", script]))
        .starts_with("ok "));
    let record = scratch.wait_exit_record();
    assert_eq!((record.code, record.signal), (0, 0));
    wait_for("the exit line in the log", || {
        texts(&scratch.lines())
            .contains(&line('s', "exited code 0"))
            .then_some(())
    });
    // Still draining the grandchild's output.
    assert!(shim.proc.try_wait().unwrap().is_none());
    fs::write(scratch.path().join("release"), b"").unwrap();
    assert_eq!(shim.wait().code(), Some(0));
    let texts = texts(&scratch.lines());
    assert_eq!(
        texts[1..],
        [
            line('o', "early"),
            line('s', "exited code 0"),
            line('o', "late")
        ]
    );
}

#[test]
fn fast_output_is_logged_completely_and_in_order() {
    let scratch = Scratch::new();
    let mut spec = scratch.spec(&["sh", "-c", "seq 1 300000; printf 'no newline'"]);
    spec.log_max_bytes = 64 << 20;
    let mut shim = Shim::spawn();
    assert!(shim.launch(&spec).starts_with("ok "));
    assert_eq!(shim.wait().code(), Some(0));
    let out = scratch.stdout();
    assert_eq!(out.len(), 300_001);
    for (i, text) in out[..300_000].iter().enumerate() {
        assert_eq!(*text, (i + 1).to_string());
    }
    // A partial last line is written at EOF.
    assert_eq!(out[300_000], "no newline");
}

#[test]
fn rotation_bounds_file_count_and_size() {
    let scratch = Scratch::new();
    let max = 64 * 1024;
    let mut spec = scratch.spec(&["sh", "-c", "seq 1 100000"]);
    spec.log_max_bytes = max;
    spec.log_files = 4;
    let mut shim = Shim::spawn();
    assert!(shim.launch(&spec).starts_with("ok "));
    assert_eq!(shim.wait().code(), Some(0));

    let mut names: Vec<String> = fs::read_dir(scratch.log_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["output.log", "output.log.1", "output.log.2", "output.log.3"]
    );
    for name in &names {
        let len = fs::metadata(scratch.log_dir().join(name)).unwrap().len();
        assert!(len <= max, "{name}: {len} > {max}");
    }
    let tail = read_lines(&scratch.log_dir(), Some(1001), None).unwrap();
    assert_eq!(tail.last().unwrap().text, "exited code 0");
    let numbers: Vec<u32> = tail[..1000]
        .iter()
        .map(|l| l.text.parse().unwrap())
        .collect();
    assert_eq!(numbers, (99_001..=100_000).collect::<Vec<_>>());
}

#[test]
fn long_lines_are_split_into_16k_pieces() {
    let scratch = Scratch::new();
    // 40000 bytes then a newline, then 20000 bytes without one.
    let mut spec = scratch.spec(&[
        "sh",
        "-c",
        "head -c 40000 /dev/zero | tr '\\0' a; echo; head -c 20000 /dev/zero | tr '\\0' b",
    ]);
    spec.log_max_bytes = 1 << 20;
    let mut shim = Shim::spawn();
    assert!(shim.launch(&spec).starts_with("ok "));
    assert_eq!(shim.wait().code(), Some(0));
    let lens: Vec<(char, usize)> = scratch
        .stdout()
        .iter()
        .map(|t| (t.chars().next().unwrap_or(' '), t.len()))
        .collect();
    assert_eq!(
        lens,
        [
            ('a', 16384),
            ('a', 16384),
            ('a', 7232),
            ('b', 16384),
            ('b', 3616)
        ]
    );
}

/// System mode: the child drops to the spec's uid, gid and supplementary
/// groups before its first instruction, and enters its working directory
/// as that user — a directory only root may enter is refused (EACCES),
/// never entered with root's rights.
/// System mode on a terminal: the session and controlling terminal are
/// set up before the privilege drop, and the terminal is the user's.
#[test]
fn tty_child_of_another_user_owns_its_terminal() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: dropping privileges needs root");
        return;
    }
    let scratch = Scratch::new();
    let mut spec = scratch.spec(&[
        "sh",
        "-c",
        r#"test -O "$(tty)" && echo owns-tty; id -u; exec </dev/tty && echo ctty"#,
    ]);
    spec.cwd = "/".into();
    spec.tty = true;
    spec.user = Some(Credentials {
        uid: 65534,
        gid: 65534,
        groups: vec![65534],
    });
    let mut shim = Shim::spawn();
    assert!(shim.launch(&spec).starts_with("ok "));
    assert_eq!(scratch.wait_exit_record().code, 0);
    assert_eq!(shim.wait().code(), Some(0));
    assert_eq!(scratch.stdout(), ["owns-tty", "65534", "ctty"]);
}

#[test]
fn child_runs_as_the_specs_user_and_enters_cwd_as_that_user() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: dropping privileges needs root");
        return;
    }
    let scratch = Scratch::new();
    let user = Credentials {
        uid: 65534,
        gid: 65534,
        groups: vec![65534, 100],
    };
    let mut spec = scratch.spec(&[
        "sh",
        "-c",
        "pwd; grep -E '^(Uid|Gid|Groups):' /proc/self/status",
    ]);
    spec.cwd = "/".into();
    spec.user = Some(user.clone());
    let mut shim = Shim::spawn();
    assert!(shim.launch(&spec).starts_with("ok "));
    scratch.wait_exit_record();
    assert_eq!(shim.wait().code(), Some(0));
    let out: Vec<String> = scratch
        .stdout()
        .iter()
        .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        out,
        [
            "/",
            "Uid: 65534 65534 65534 65534",
            "Gid: 65534 65534 65534 65534",
            "Groups: 100 65534",
        ]
    );
    // A directory of root's, mode 0700: nobody may not enter it.
    let private = scratch.path().join("private");
    fs::create_dir(&private).unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
    let mut spec = scratch.spec(&["sh", "-c", "true"]);
    spec.cwd = private;
    spec.user = Some(user);
    let mut shim = Shim::spawn();
    assert_eq!(shim.launch(&spec), "err 13 Permission denied (os error 13)");
}

/// A fork server and its request socket, as corrald runs it.
struct Server {
    proc: Child,
    sock: OwnedFd,
}

impl Server {
    fn start() -> Self {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let proc = Command::new(SHIM)
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Server { proc, sock: ours }
    }

    /// Sends one request carrying `fds` and returns the answer.
    fn request(&self, fds: &[i32]) -> ForkAnswer {
        use nix::sys::socket::{recv, sendmsg, ControlMessage, MsgFlags};
        use std::os::fd::AsRawFd;
        let cmsg = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
        sendmsg::<()>(
            self.sock.as_raw_fd(),
            &[std::io::IoSlice::new(&corral::shim::protocol::FORK_REQUEST)],
            cmsgs,
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        let mut answer = [0u8; ForkAnswer::LEN];
        let n = recv(self.sock.as_raw_fd(), &mut answer, MsgFlags::empty()).unwrap();
        ForkAnswer::from_bytes(&answer[..n]).unwrap()
    }

    /// A new shim, forked by the server, behind `control`.
    fn fork(&self) -> (i32, BufReader<UnixStream>) {
        use std::os::fd::AsRawFd;
        let (ours, theirs) = UnixStream::pair().unwrap();
        let ForkAnswer::Forked { pid } = self.request(&[theirs.as_raw_fd()]) else {
            panic!("the server did not fork");
        };
        let pid = pid as i32;
        drop(theirs);
        ours.set_read_timeout(Some(TIMEOUT)).unwrap();
        (pid, BufReader::new(ours))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

/// The fork server (`corral::shim::server`): each request with a control
/// socket gets a new shim, the server's child, that runs a command like a
/// shim corrald spawned itself and is reaped by the kernel when it exits;
/// a request without a socket is refused and the server goes on; the
/// server ends when corrald's end of its socket closes.
#[test]
fn fork_server_forks_working_shims_and_ends_with_its_socket() {
    let mut server = Server::start();
    let server_pid = server.proc.id() as i32;

    assert_eq!(
        server.request(&[]),
        ForkAnswer::Failed {
            errno: libc::EINVAL
        }
    );

    for round in 0..2 {
        let scratch = Scratch::new();
        let (shim_pid, mut control) = server.fork();
        assert_eq!(
            corral::daemon::track::parent_of(shim_pid as u32).ok(),
            Some(server_pid as u32),
            "round {round}"
        );
        assert_eq!(
            fs::read_to_string(format!("/proc/{shim_pid}/comm")).unwrap(),
            "corral-shim\n"
        );
        let spec = scratch.spec(&["sh", "-c", "echo forked; exit 4"]);
        control
            .get_mut()
            .write_all(spec.to_line().unwrap().as_bytes())
            .unwrap();
        control.get_mut().write_all(b"go\n").unwrap();
        let mut reply = String::new();
        control.read_line(&mut reply).unwrap();
        let pid: u32 = reply
            .trim_end()
            .strip_prefix("ok ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected reply {reply:?}"));
        let record = scratch.wait_exit_record();
        assert_eq!((record.pid, record.code), (pid, 4));
        // Exited and reaped: no zombie keeps the PID.
        wait_for("the forked shim to be reaped", || {
            (!Path::new(&format!("/proc/{shim_pid}")).exists()).then_some(())
        });
        assert_eq!(scratch.stdout(), vec!["forked".to_string()]);
    }

    // A shim whose corrald goes away before `go` runs nothing and exits.
    let (idle_pid, control) = server.fork();
    drop(control);
    wait_for("the idle shim to exit", || {
        (!Path::new(&format!("/proc/{idle_pid}")).exists()).then_some(())
    });

    let sock = std::mem::replace(
        &mut server.sock,
        std::fs::File::open("/dev/null").unwrap().into(),
    );
    drop(sock);
    let status = wait_for("the server to exit", || server.proc.try_wait().unwrap());
    assert_eq!(status.code(), Some(0));
}
