//! Section "terminal": what a terminal (issue 13) costs, each figure next
//! to a peer taken in the same run — keypress → echo through an attached
//! terminal (the `OpenTerminal` fd and the frame protocol of
//! `corral::shim::terminal`, as an IDE attaches) against the same `cat`
//! under script(1); a printer (`seq 1 N`) on a terminal against the same
//! on pipes, with script(1) of it for context and every line checked in
//! the log; and the CPU of an attached, idle session. Blocking socket I/O
//! runs on its own thread, so the bench's runtime never sits in a read.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use corral::api::{LogRow, ManagerProxy, ProcessProxy, ProcessView};
use corral::shim::terminal::{Decoder, Frame};

use super::{error_name, list_workspace, ms, spec, sys, Bench};

const SEC: &str = "7 terminal";

/// How long one key may go without its echo before the section fails.
const ECHO_LIMIT: Duration = Duration::from_secs(10);

/// One read's wait: short, so [`ECHO_LIMIT`] is checked between reads.
const READ_WAIT: Duration = Duration::from_millis(200);

/// A terminal with `cat` on it, typed into one key at a time.
enum Typist {
    /// corral's: the `OpenTerminal` socket, in frames.
    Corral {
        socket: UnixStream,
        decoder: Decoder,
    },
    /// script(1)'s: its stdin and stdout, unix sockets rather than pipes
    /// so that reads can time out as on corral's socket.
    Script {
        child: Child,
        keys: UnixStream,
        screen: UnixStream,
    },
}

impl Typist {
    fn corral(fd: OwnedFd) -> Result<Typist> {
        let mut socket = UnixStream::from(fd);
        socket.set_read_timeout(Some(READ_WAIT))?;
        // The first window size takes the keyboard.
        socket.write_all(
            &Frame::Resize {
                rows: 30,
                cols: 100,
            }
            .encode(),
        )?;
        Ok(Typist::Corral {
            socket,
            decoder: Decoder::default(),
        })
    }

    /// `cat` under script(1). Its stdin is not a terminal, so it leaves
    /// ECHO on for the terminal it makes (script(1) `--echo auto`): the
    /// kernel echoes each key, as on corral's terminal.
    fn script() -> Result<Typist> {
        let (keys, their_keys) = UnixStream::pair()?;
        let (screen, their_screen) = UnixStream::pair()?;
        screen.set_read_timeout(Some(READ_WAIT))?;
        let child = Command::new("script")
            .args(["-q", "-c", "cat", "/dev/null"])
            .stdin(OwnedFd::from(their_keys))
            .stdout(OwnedFd::from(their_screen))
            .stderr(Stdio::null())
            .spawn()
            .context("spawning script(1)")?;
        Ok(Typist::Script {
            child,
            keys,
            screen,
        })
    }

    fn send(&mut self, key: u8) -> std::io::Result<()> {
        match self {
            Typist::Corral { socket, .. } => socket.write_all(&Frame::Input(vec![key]).encode()),
            Typist::Script { keys, .. } => keys.write_all(&[key]),
        }
    }

    /// Appends what the terminal shows next to `seen`; nothing if it
    /// stays silent for [`READ_WAIT`].
    fn read_into(&mut self, seen: &mut Vec<u8>) -> Result<()> {
        let mut buf = [0u8; 4096];
        let from = match self {
            Typist::Corral { socket, .. } => socket,
            Typist::Script { screen, .. } => screen,
        };
        let n = match from.read(&mut buf) {
            Ok(0) => bail!("the terminal closed"),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(())
            }
            Err(e) => return Err(e.into()),
        };
        match self {
            Typist::Corral { decoder, .. } => {
                decoder.push(&buf[..n]);
                while let Some(frame) = decoder.next_frame()? {
                    if let Frame::Output(bytes) = frame {
                        seen.extend_from_slice(&bytes);
                    }
                }
            }
            Typist::Script { .. } => seen.extend_from_slice(&buf[..n]),
        }
        Ok(())
    }

    /// Time from writing `key` to reading its echo. `cat` reads whole
    /// lines and no Enter is typed, so the echo is all that comes back.
    fn key_to_echo(&mut self, key: u8) -> Result<Duration> {
        let mut seen = Vec::new();
        let t = Instant::now();
        self.send(key)?;
        while !seen.contains(&key) {
            if t.elapsed() > ECHO_LIMIT {
                bail!("no echo of {:?} within {ECHO_LIMIT:?}", key as char);
            }
            self.read_into(&mut seen)?;
        }
        Ok(t.elapsed())
    }
}

impl Drop for Typist {
    fn drop(&mut self) {
        if let Typist::Script { child, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Keypress → echo samples (ms) of corral's terminal and script(1)'s,
/// one key each in turn so both see the same moments of a shared
/// machine; the first `warm` of each are dropped (they include script(1)
/// starting up). The canonical line of `cat` holds 4,095 characters, so
/// `warm + keys` must stay below that.
fn type_keys(
    corral: &mut Typist,
    script: &mut Typist,
    warm: usize,
    keys: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let (mut ours, mut theirs) = (vec![], vec![]);
    for i in 0..warm + keys {
        let key = b'a' + (i % 26) as u8;
        let a = corral.key_to_echo(key).context("corral's terminal")?;
        let b = script.key_to_echo(key).context("script(1)")?;
        if i >= warm {
            ours.push(ms(a));
            theirs.push(ms(b));
        }
    }
    Ok((ours, theirs))
}

/// Every line of a process's output, paging through `Logs` as
/// `corralctl logs -n 0` does: a page holds every line of its last
/// timestamp, so the next one starts there and skips those.
async fn read_log(mgr: &ManagerProxy<'_>, id: &str) -> Result<Vec<LogRow>> {
    let mut all = mgr.logs(id, 0, 0).await?;
    while let Some(last) = all.last().map(|r| r.0) {
        let seen = all.iter().rev().take_while(|r| r.0 == last).count();
        let page = mgr.logs(id, 0, last).await?;
        let before = all.len();
        all.extend(page.into_iter().skip(seen));
        if all.len() == before {
            break;
        }
    }
    Ok(all)
}

/// Where the stdout lines of `log` first differ from `1..=n`, if they do.
fn first_difference(log: &[LogRow], n: u64) -> Option<String> {
    let mut got = log.iter().filter(|r| r.1 == "o").map(|r| r.2.as_str());
    for want in 1..=n {
        match got.next() {
            Some(line) if line == want.to_string() => {}
            Some(line) => return Some(format!("line {want} is {line:?}")),
            None => return Some(format!("the log ends before line {want}")),
        }
    }
    got.next().map(|extra| format!("{extra:?} after line {n}"))
}

impl Bench {
    pub(super) async fn terminal_cost(&mut self) -> Result<()> {
        self.keypress_to_echo().await?;
        super::remove_all(&self.ctl).await?;
        self.fast_printer().await?;
        self.end_section().await?;
        Ok(())
    }

    async fn view(&self, id: &str) -> Result<ProcessView> {
        list_workspace(&self.ctl, None)
            .await?
            .into_iter()
            .find(|v| v.id == id)
            .with_context(|| format!("process {id} is not listed"))
    }

    /// Keypress → echo through corral's terminal and script(1)'s, then
    /// the shim's CPU while the client stays attached and nobody types.
    async fn keypress_to_echo(&mut self) -> Result<()> {
        let (warm, keys) = (self.plan.warmup, self.plan.terminal_keys);
        eprintln!("terminal: {keys} keys → echo, corral's terminal and script(1) in turn");
        let mut cat = spec(vec!["cat".into()]);
        cat.tty = Some(true);
        let (id, path) = self.ctl.mgr.start(cat.to_dict()).await?;
        let process = ProcessProxy::builder(&self.ctl.conn)
            .path(path)?
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await?;
        let fd: OwnedFd = process
            .open_terminal()
            .await
            .map_err(|e| anyhow::anyhow!("OpenTerminal: {}", error_name(&e)))?
            .into();
        let mut corral = Typist::corral(fd)?;
        let mut script = Typist::script()?;
        let (corral, ours, theirs) = tokio::task::spawn_blocking(move || {
            let r = type_keys(&mut corral, &mut script, warm, keys);
            r.map(|(a, b)| (corral, a, b))
        })
        .await??;
        self.rep.add_latency(
            SEC,
            "terminal.echo",
            "keypress → echo, attached terminal (OpenTerminal fd, cat)",
            ours,
        );
        self.rep.add_latency(
            SEC,
            "terminal.echo_script",
            "baseline: keypress → echo, the same cat under script(1)",
            theirs,
        );
        let p99 = |k: &str| self.rep.figure(k).and_then(|f| f.summary).map(|s| s.p99);
        if let (Some(a), Some(b)) = (p99("terminal.echo"), p99("terminal.echo_script")) {
            self.rep.note_on(
                "terminal.echo",
                &format!("p99 {:.2}× script(1)'s", a / b.max(f64::MIN_POSITIVE)),
            );
        }

        // Still attached (`corral` holds the socket), nothing typed.
        let main = self.view(&id).await?.main_pid;
        let shim = sys::read_ppid(main).context("the shim of cat")?;
        let idle = Duration::from_secs(self.plan.idle_s);
        let before = (sys::read_cpu_ticks(shim), sys::read_cpu_ticks(main));
        tokio::time::sleep(idle).await;
        let after = (sys::read_cpu_ticks(shim), sys::read_cpu_ticks(main));
        drop(corral);
        let (Some(s0), Some(c0), Some(s1), Some(c1)) = (before.0, before.1, after.0, after.1)
        else {
            bail!("the shim ({shim}) or cat ({main}) ended while idle");
        };
        self.rep.add(
            SEC,
            "terminal.idle",
            &format!(
                "attached and idle: the shim's CPU over {} s",
                idle.as_secs()
            ),
            "ticks",
            vec![(s1 - s0) as f64],
        );
        self.rep.note_on(
            "terminal.idle",
            &format!(
                "clock ticks of 1/{} s (utime + stime); cat {} ticks",
                sys::clock_ticks_per_s(),
                c1 - c0
            ),
        );
        Ok(())
    }

    /// `seq 1 N` on a terminal and on pipes (StartedAt → ExitedAt, the
    /// agent's records of the run going running and ending), and under
    /// script(1) (wall time, output to /dev/null), in turn; every corral
    /// run's log is checked line by line.
    async fn fast_printer(&mut self) -> Result<()> {
        let (n, runs) = (self.plan.printer_lines, self.plan.printer_runs);
        eprintln!(
            "terminal: seq 1 {n} and cat of its output on a terminal, on pipes and under script(1), {runs} runs"
        );
        // The same lines from a program that writes them in blocks: `seq`
        // on a terminal makes a write per line (stdio line-buffers a
        // terminal), `cat` writes what it reads whatever its output is.
        let lines = self.work.join("printer-lines.txt");
        let text: String = (1..=n).map(|i| format!("{i}\n")).collect();
        std::fs::write(&lines, text).context("writing the printer's lines")?;
        let block = vec!["cat".to_string(), lines.display().to_string()];
        let seq = vec!["seq".to_string(), "1".into(), n.to_string()];
        let (mut tty_ms, mut pipe_ms, mut script_ms) = (vec![], vec![], vec![]);
        let (mut block_tty_ms, mut block_pipe_ms) = (vec![], vec![]);
        let (mut script_cat_ms, mut script_raw_ms) = (vec![], vec![]);
        let mut lost = vec![];
        for run in 1..=runs {
            for (command, tty) in [(&seq, false), (&seq, true), (&block, false), (&block, true)] {
                let mut s = spec(command.clone());
                s.tty = Some(tty);
                let (id, _) = self.ctl.mgr.start(s.to_dict()).await?;
                let ended = self
                    .sigs
                    .wait(&id, 0, &["exited", "failed"], Duration::from_secs(120))
                    .await;
                let v = self.view(&id).await?;
                if ended.is_none() || v.exit_code != 0 {
                    bail!(
                        "{} (tty {tty}) did not exit 0 within 120 s: {} {}",
                        command[0],
                        v.state.as_str(),
                        v.exit_reason
                    );
                }
                let took = v.exited_at.saturating_sub(v.started_at) as f64 / 1000.0;
                let into = match (command == &seq, tty) {
                    (true, true) => &mut tty_ms,
                    (true, false) => &mut pipe_ms,
                    (false, true) => &mut block_tty_ms,
                    (false, false) => &mut block_pipe_ms,
                };
                into.push(took);
                let log = read_log(&self.ctl.mgr, &id).await?;
                if let Some(d) = first_difference(&log, n) {
                    let on = if tty { "terminal" } else { "pipes" };
                    lost.push(format!("run {run}, {} on {on}: {d}", command[0]));
                }
            }
            // The same under script(1), output to /dev/null; and what the
            // kernel's output processing (ONLCR: every `\n` written as
            // `\r\n`) costs: cat with the terminal's output processing on
            // (the default) and off (`stty -opost`).
            let cat = format!("cat {}", lines.display());
            for (command, into) in [
                (format!("seq 1 {n}"), &mut script_ms),
                (cat.clone(), &mut script_cat_ms),
                (format!("stty -opost; {cat}"), &mut script_raw_ms),
            ] {
                let t = Instant::now();
                let status = Command::new("script")
                    .args(["-q", "-c", &command, "/dev/null"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .context("running script(1)")?;
                if status.success() {
                    into.push(ms(t.elapsed()));
                }
            }
        }
        let r = &mut self.rep;
        r.add(
            SEC,
            "terminal.print",
            &format!("seq 1 {n} on a terminal: StartedAt → ExitedAt"),
            "ms",
            tty_ms,
        );
        r.add(
            SEC,
            "terminal.print_pipe",
            &format!("baseline: seq 1 {n} on pipes: StartedAt → ExitedAt"),
            "ms",
            pipe_ms,
        );
        r.add(
            SEC,
            "terminal.print_block",
            &format!("cat of the same {n} lines on a terminal: StartedAt → ExitedAt"),
            "ms",
            block_tty_ms,
        );
        r.add(
            SEC,
            "terminal.print_block_pipe",
            &format!("baseline: cat of the same {n} lines on pipes: StartedAt → ExitedAt"),
            "ms",
            block_pipe_ms,
        );
        r.add(
            SEC,
            "terminal.print_script",
            &format!("(context) script(1) -c 'seq 1 {n}' > /dev/null (wall)"),
            "ms",
            script_ms,
        );
        r.add(
            SEC,
            "terminal.print_script_cat",
            &format!("(context) script(1) -c 'cat' of the {n} lines > /dev/null (wall)"),
            "ms",
            script_cat_ms,
        );
        r.add(
            SEC,
            "terminal.print_script_raw",
            "(context) the same with output processing off (stty -opost) (wall)",
            "ms",
            script_raw_ms,
        );
        if lost.is_empty() {
            r.note_on(
                "terminal.print",
                &format!(
                    "no line lost: the log of every run, seq and cat, terminal and pipes, holds 1..{n} in order"
                ),
            );
        } else {
            let what = format!("LINES LOST: {}", super::errors_note(&lost));
            r.note_on("terminal.print", &what);
            r.notes.push(format!("{SEC}: {what}"));
        }
        Ok(())
    }
}
