//! Terminals (issue 13): processes started with `-t` run on a
//! pseudo-terminal that `corralctl attach`, `run -t`, `send` and the
//! `OpenTerminal` fd reach. Driven through a real terminal: a tmux server
//! on a private socket runs `corralctl attach`, typed into with
//! `send-keys` and read with `capture-pane`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::common::{bin, run, testbed_available, text, wait_for, Agent};

const WAIT: Duration = Duration::from_secs(15);

/// A shell loop that answers each line it reads, on a terminal.
const ECHO_LOOP: &str = r#"echo ready; while read l; do echo "got:$l"; done"#;

/// A private tmux server; killed on drop.
struct Tmux {
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmux {
    fn new() -> Tmux {
        let dir = tempfile::tempdir().expect("tempdir");
        Tmux {
            socket: dir.path().join("tmux.sock"),
            _dir: dir,
        }
    }

    fn cmd(&self, args: &[&str]) -> String {
        let out = run(Command::new("tmux")
            .arg("-f")
            .arg("/dev/null")
            .arg("-S")
            .arg(&self.socket)
            .args(args));
        assert!(out.status.success(), "tmux {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    }

    /// A detached 100x30 session running `command` (a shell line); the
    /// pane stays after the command exits so its last words can be read.
    fn session(&self, name: &str, command: &str) {
        self.cmd(&[
            "new-session",
            "-d",
            "-x",
            "100",
            "-y",
            "30",
            "-s",
            name,
            command,
        ]);
        // Too late for a command that exits at once, which none here does.
        let _ = run(Command::new("tmux").arg("-S").arg(&self.socket).args([
            "set-option",
            "-t",
            name,
            "remain-on-exit",
            "on",
        ]));
    }

    /// `corralctl attach ID` in a new session.
    fn attach(&self, name: &str, id: &str) {
        self.session(name, &format!("{} attach {id}", bin("corralctl").display()));
    }

    fn keys(&self, name: &str, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", name];
        args.extend_from_slice(keys);
        self.cmd(&args);
    }

    /// Types `line` and Enter.
    fn type_line(&self, name: &str, line: &str) {
        self.keys(name, &["-l", line]);
        self.keys(name, &["Enter"]);
    }

    fn screen(&self, name: &str, escapes: bool) -> String {
        let mut args = vec!["capture-pane", "-p", "-t", name];
        if escapes {
            args.push("-e");
        }
        self.cmd(&args)
    }

    /// Waits until the pane shows `what`; returns the screen.
    fn wait_screen(&self, name: &str, what: &str) -> String {
        let mut last = String::new();
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(WAIT, what, || {
                last = self.screen(name, false);
                last.contains(what).then(|| last.clone())
            })
        }));
        found.unwrap_or_else(|_| panic!("pane {name} never showed {what:?}; it shows:\n{last}"))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = run(Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server"));
    }
}

fn start_tty(agent: &Agent, script: &str) -> String {
    agent.start_cmd(&["-t", "--", "sh", "-c", script])
}

fn logs(agent: &Agent, id: &str, extra: &[&str]) -> String {
    let mut args = vec!["logs", id];
    args.extend_from_slice(extra);
    agent.ctl_ok(&args)
}

#[test]
fn a_read_loop_and_a_python_repl_answer_typed_input() {
    if !testbed_available() {
        return;
    }
    let agent = Agent::start();
    let tmux = Tmux::new();
    let id = start_tty(&agent, ECHO_LOOP);
    agent.wait_state(&id, "running", WAIT);
    tmux.attach("loop", &id);
    tmux.wait_screen("loop", "ready");
    tmux.type_line("loop", "hello there");
    tmux.wait_screen("loop", "got:hello there");
    // The log has the same lines, without the terminal's `\r`.
    let log = logs(&agent, &id, &[]);
    assert!(log.lines().any(|l| l == "got:hello there"), "{log:?}");

    let py = agent.start_cmd(&["-t", "--", "python3", "-q"]);
    agent.wait_state(&py, "running", WAIT);
    tmux.attach("py", &py);
    tmux.wait_screen("py", ">>>");
    tmux.type_line("py", "6 * 7");
    tmux.wait_screen("py", "42");
}

#[test]
fn colours_reach_the_terminal_and_logs_strip_them() {
    if !testbed_available() {
        return;
    }
    let agent = Agent::start();
    let tmux = Tmux::new();
    let id = start_tty(&agent, r#"printf '\033[31mRED\033[0m\n'; exec sleep 600"#);
    agent.wait_state(&id, "running", WAIT);
    wait_for(WAIT, "RED in the log", || {
        logs(&agent, &id, &[]).contains("RED").then_some(())
    });
    // Attached later: the scrollback replays it, colour and all.
    tmux.attach("c", &id);
    tmux.wait_screen("c", "RED");
    let coloured = tmux.screen("c", true);
    assert!(coloured.contains("\x1b[31mRED"), "{coloured:?}");
    assert!(logs(&agent, &id, &[]).lines().any(|l| l == "RED"));
    assert!(logs(&agent, &id, &["--raw"]).contains("\x1b[31mRED\x1b[0m"));
}

#[test]
fn a_resize_is_seen_inside() {
    if !testbed_available() {
        return;
    }
    let agent = Agent::start();
    let tmux = Tmux::new();
    let id = start_tty(
        &agent,
        r#"echo ready; while read l; do echo "cols=$(tput cols)"; done"#,
    );
    agent.wait_state(&id, "running", WAIT);
    tmux.attach("r", &id);
    tmux.wait_screen("r", "ready");
    tmux.type_line("r", "");
    tmux.wait_screen("r", "cols=100");
    tmux.cmd(&["resize-window", "-t", "r", "-x", "72", "-y", "20"]);
    // SIGWINCH reaches corralctl, then the size reaches the terminal.
    wait_for(WAIT, "cols=72", || {
        tmux.type_line("r", "");
        std::thread::sleep(Duration::from_millis(100));
        tmux.screen("r", false).contains("cols=72").then_some(())
    });
}

#[test]
fn detach_leaves_it_running_and_reattach_replays() {
    if !testbed_available() {
        return;
    }
    let agent = Agent::start();
    let tmux = Tmux::new();
    let id = start_tty(&agent, ECHO_LOOP);
    agent.wait_state(&id, "running", WAIT);
    tmux.attach("a", &id);
    tmux.wait_screen("a", "ready");
    tmux.type_line("a", "before detach");
    tmux.wait_screen("a", "got:before detach");
    tmux.keys("a", &["C-]"]);
    tmux.wait_screen("a", "keeps running");
    assert_eq!(agent.get(&id)["state"], "running");
    // Another detach key, from the environment.
    let ctl = bin("corralctl");
    tmux.session(
        "b",
        &format!("CORRAL_DETACH_KEYS=ctrl-x {} attach {id}", ctl.display()),
    );
    // Recent output, replayed before anything new is typed.
    tmux.wait_screen("b", "got:before detach");
    tmux.type_line("b", "after");
    tmux.wait_screen("b", "got:after");
    // Ctrl-] is now just a key for the process: still attached.
    tmux.keys("b", &["C-]"]);
    tmux.type_line("b", "still");
    tmux.wait_screen("b", "still");
    tmux.keys("b", &["C-x"]);
    tmux.wait_screen("b", "keeps running");
    assert_eq!(agent.get(&id)["state"], "running");
}

#[test]
fn an_attached_session_survives_kill_9_of_the_agent() {
    if !testbed_available() {
        return;
    }
    let mut agent = Agent::start();
    let tmux = Tmux::new();
    let id = start_tty(&agent, ECHO_LOOP);
    agent.wait_state(&id, "running", WAIT);
    tmux.attach("a", &id);
    tmux.wait_screen("a", "ready");
    agent.kill(libc::SIGKILL);
    tmux.type_line("a", "agent gone");
    tmux.wait_screen("a", "got:agent gone");
    agent.spawn();
    agent.wait_state(&id, "running", WAIT);
    tmux.attach("b", &id);
    tmux.type_line("b", "agent back");
    tmux.wait_screen("b", "got:agent back");
    // Both watch; the first sees the second's answer too.
    tmux.wait_screen("a", "got:agent back");
}

#[test]
fn run_t_takes_ctrl_c_and_survives_the_window_closing() {
    if !testbed_available() {
        return;
    }
    let agent = Agent::start();
    let tmux = Tmux::new();
    let ctl = bin("corralctl");
    tmux.session(
        "run",
        &format!("{} run -t --name repl -- python3 -q", ctl.display()),
    );
    tmux.wait_screen("run", ">>>");
    // Ctrl-C is the process's: Python reports it and goes on.
    tmux.keys("run", &["C-c"]);
    tmux.wait_screen("run", "KeyboardInterrupt");
    tmux.cmd(&["kill-session", "-t", "run"]);
    let listed = agent.list(&[]);
    let repl = listed.iter().find(|p| p["name"] == "repl").expect("listed");
    assert_eq!(repl["state"], "running", "{repl}");
    // Still usable: attach again and evaluate.
    let id = repl["id"].as_str().expect("id").to_string();
    tmux.attach("again", &id);
    tmux.type_line("again", "2 + 2");
    tmux.wait_screen("again", "4");
    // Without a terminal, and over before it could be attached: its
    // output is printed all the same.
    let quick = agent.ctl_ok(&["run", "-t", "--", "sh", "-c", "echo quick; exit 0"]);
    assert!(quick.contains("quick"), "{quick:?}");
}

#[test]
fn send_writes_to_the_terminal_and_refuses_pipes() {
    if !testbed_available() {
        return;
    }
    let agent = Agent::start();
    let id = start_tty(&agent, ECHO_LOOP);
    agent.wait_state(&id, "running", WAIT);
    agent.ctl_ok(&["send", &id, "scripted\n"]);
    wait_for(WAIT, "got:scripted in the log", || {
        logs(&agent, &id, &[])
            .contains("got:scripted")
            .then_some(())
    });
    let piped = agent.start_cmd(&["--", "sleep", "600"]);
    agent.wait_state(&piped, "running", WAIT);
    let out = agent.ctl(&["send", &piped, "x"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("NoTerminal") && err.contains("/dev/null"),
        "{err}"
    );
}

/// The `OpenTerminal` fd of process `id`, as a socket whose reads give up
/// after 200 ms (so a waiting loop can look again).
fn open_terminal(id: &str) -> std::os::unix::net::UnixStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let fd: std::os::fd::OwnedFd = rt.block_on(async {
        let conn = zbus::Connection::session().await.expect("session bus");
        let process = corral::api::ProcessProxy::builder(&conn)
            .path(corral::api::process_path(id))
            .expect("path")
            .build()
            .await
            .expect("proxy");
        process.open_terminal().await.expect("OpenTerminal").into()
    });
    let socket = std::os::unix::net::UnixStream::from(fd);
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    socket
}

/// Takes the keyboard of the terminal behind `socket` (a 30x100 window),
/// types `input`, and reads its output until `done` holds for all of it.
fn type_and_read(
    socket: &mut std::os::unix::net::UnixStream,
    input: &[u8],
    what: &str,
    done: impl Fn(&[u8]) -> bool,
) {
    use corral::shim::terminal::{Decoder, Frame};
    use std::io::{Read, Write};

    socket
        .write_all(
            &Frame::Resize {
                rows: 30,
                cols: 100,
            }
            .encode(),
        )
        .expect("resize");
    socket
        .write_all(&Frame::Input(input.to_vec()).encode())
        .expect("input");
    let mut decoder = Decoder::default();
    let mut seen = Vec::new();
    wait_for(WAIT, what, || {
        let mut buf = [0u8; 4096];
        if let Ok(n) = socket.read(&mut buf) {
            decoder.push(&buf[..n]);
        }
        while let Ok(Some(frame)) = decoder.next_frame() {
            if let Frame::Output(bytes) = frame {
                seen.extend_from_slice(&bytes);
            }
        }
        done(&seen).then_some(())
    });
}

#[test]
fn the_open_terminal_fd_works_from_a_small_client() {
    if !testbed_available() {
        return;
    }
    let agent = Agent::start();
    let id = start_tty(&agent, ECHO_LOOP);
    agent.wait_state(&id, "running", WAIT);
    let mut socket = open_terminal(&id);
    // The window size first (takes the keyboard), then a line.
    type_and_read(
        &mut socket,
        b"from dbus\n",
        "got:from dbus on the fd",
        |seen| text(seen).contains("got:from dbus"),
    );
}

#[test]
fn a_pty_process_keeps_its_restart_policy() {
    if !testbed_available() {
        return;
    }
    let agent = Agent::start();
    let id = agent.start_cmd(&[
        "-t",
        "--restart",
        "always",
        "--restart-delay",
        "100ms",
        "--",
        "sh",
        "-c",
        "echo tick; sleep 0.3; exit 3",
    ]);
    wait_for(WAIT, "two restarts", || {
        (agent.get(&id)["restarts"].as_u64() >= Some(2)).then_some(())
    });
    let ticks = logs(&agent, &id, &[]);
    assert!(ticks.matches("tick").count() >= 2, "{ticks}");
}

/// A printer as fast as it can go, on a terminal and on pipes: every
/// line reaches the log, in order. (What the terminal costs in time is a
/// figure of the benchmark, section "terminal", not a test.)
#[test]
fn a_fast_printer_loses_no_line_through_a_terminal() {
    if !testbed_available() {
        return;
    }
    const LINES: u64 = 20_000;
    let agent = Agent::start();
    for tty in [true, false] {
        let n = LINES.to_string();
        let mut args = vec!["--", "seq", "1", n.as_str()];
        if tty {
            args.insert(0, "-t");
        }
        let id = agent.start_cmd(&args);
        agent.wait_state(&id, "exited", Duration::from_secs(60));
        let log = logs(&agent, &id, &["-n", "0", "--streams"]);
        let out: Vec<&str> = log
            .lines()
            .filter_map(|l| l.strip_prefix("[out] "))
            .collect();
        assert_eq!(first_difference(&out, LINES), None, "tty {tty}");
    }
}

/// Where `got` first differs from 1..=n, if anywhere (the lists are too
/// long to print whole).
fn first_difference<'a>(got: &[&'a str], n: u64) -> Option<(usize, Option<&'a str>)> {
    let want = (1..=n).map(|i| i.to_string());
    (0..got.len().max(n as usize))
        .zip(want.map(Some).chain(std::iter::repeat(None)))
        .find(|(i, w)| got.get(*i).copied() != w.as_deref())
        .map(|(i, _)| (i, got.get(i).copied()))
}

/// The numeric fields of /proc/PID/stat after the command name (state,
/// which is not a number, read as 0): ppid is [1], utime [11], stime [12].
fn stat_fields(pid: u32) -> Vec<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after_name = stat.rsplit(')').next().unwrap_or_default();
    after_name
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect()
}

/// A shim that polled on a timer, or spun on a socket with nothing to
/// read, would show here: attached and idle, it must block. One tick of
/// slack: the wake-up that echoed the last key may be charged in the window.
#[test]
fn an_idle_attached_session_uses_no_cpu() {
    if !testbed_available() {
        return;
    }
    let agent = Agent::start();
    let id = agent.start_cmd(&["-t", "--", "cat"]);
    agent.wait_state(&id, "running", WAIT);
    let mut socket = open_terminal(&id);
    // Attached for sure: a key comes back as its echo.
    type_and_read(&mut socket, b"k", "the echo of k", |seen| {
        seen.contains(&b'k')
    });
    let main = agent.get(&id)["pid"].as_u64().expect("pid") as u32;
    let shim = stat_fields(main)[1] as u32;
    let ticks = || {
        let f = stat_fields(shim);
        f[11] + f[12]
    };
    let before = ticks();
    std::thread::sleep(Duration::from_secs(2));
    let idle = ticks() - before;
    assert!(idle <= 1, "the idle shim used {idle} clock ticks in 2 s");
    drop(socket);
}
