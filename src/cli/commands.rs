//! The subcommands: each turns its arguments into calls on the agent's
//! `ManagerProxy` / `ProcessProxy` and hands the answers to `render`.
//! Owns the bus connection, id-or-name resolution and `logs -f` polling;
//! formats nothing itself and never calls anything but the `api` proxies.

use std::io::Write;
use std::time::Duration;

use futures_util::future::join_all;
use serde::Serialize;
use zbus::proxy::CacheProperties;
use zbus::Connection;

use super::{linger, live, remote};

use crate::api::{
    self, EventRow, Filter, LogRow, ManagerProxy, ProcessJson, ProcessProxy, ProcessView, State,
};
use crate::clock::now_us;

use super::args::{
    Cli, Command, EventsArgs, KillArgs, LimitArgs, ListArgs, LogsArgs, MatchArgs, Since, StatsArgs,
    StatusArgs, TrackArgs,
};
use super::error::{Bus, CliError, Result};
use super::render::{self, EventJson, LogJson, StatusJson};
use super::spec::{build_spec, Caller};

const UNKNOWN_OBJECT: &str = "org.freedesktop.DBus.Error.UnknownObject";

/// How often `logs -f` asks for new lines.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

/// Writes to stdout, flushing at once so `logs -f` output is not held in
/// a buffer. A closed pipe comes back as an error (never a panic, as
/// `println!` would), which ends the command quietly.
pub(super) fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(CliError::Output)
}

fn emit_json<T: Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::Output(std::io::Error::other(e)))?;
    emit(&format!("{text}\n"))
}

/// A failure of one of several operations, reported as it happens so the
/// others still run.
fn warn(what: &str, e: &dyn std::fmt::Display) {
    let _ = writeln!(std::io::stderr(), "corralctl: {what}: {e}");
}

/// Lines of ids, one per line, or a JSON array of them.
fn emit_ids(ids: &[String], json: bool) -> Result<()> {
    if json {
        emit_json(&ids)
    } else {
        emit(&ids.iter().map(|id| format!("{id}\n")).collect::<String>())
    }
}

/// A process the user named on the command line.
struct Target {
    id: String,
    /// Its `List` record; None when an unknown numeric id is passed on for
    /// the agent to judge (a removed process still has events).
    view: Option<ProcessView>,
}

/// The connection and proxy every command uses.
struct Ctx {
    bus: Bus,
    conn: Connection,
    manager: ManagerProxy<'static>,
    json: bool,
    /// The last unfiltered `List` of this command, for the linger check
    /// after `list`, which would otherwise ask for every record again
    /// (it doubled `corralctl list`'s time). Its records may hold only
    /// some keys; they hold `State` and `Persistent`, which the check uses.
    all: std::sync::Mutex<Option<Vec<ProcessView>>>,
}

impl Ctx {
    async fn connect(bus: Bus, host: Option<&str>, json: bool) -> Result<Ctx> {
        let conn = match (host, bus) {
            (Some(host), _) => {
                remote::connect(host, bus)
                    .await
                    .map_err(|source| CliError::Remote {
                        host: host.to_string(),
                        bus,
                        source: Box::new(source),
                    })
            }
            (None, Bus::Session) => Connection::session()
                .await
                .map_err(|source| CliError::Connect { bus, source }),
            (None, Bus::System) => Connection::system()
                .await
                .map_err(|source| CliError::Connect { bus, source }),
        }?;
        // No property cache: it would subscribe to signals and fetch every
        // property up front, for a client that reads at most one.
        let manager = ManagerProxy::builder(&conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|e| CliError::from_call(bus, e))?;
        Ok(Ctx {
            bus,
            conn,
            manager,
            json,
            all: std::sync::Mutex::new(None),
        })
    }

    fn call_err(&self) -> impl Fn(zbus::Error) -> CliError {
        let bus = self.bus;
        move |e| CliError::from_call(bus, e)
    }

    async fn process(&self, id: &str) -> Result<ProcessProxy<'static>> {
        ProcessProxy::builder(&self.conn)
            .path(api::process_path(id))
            .map_err(|_| CliError::NoSuchProcess(id.to_string()))?
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(self.call_err())
    }

    async fn list(&self, filter: &Filter) -> Result<Vec<ProcessView>> {
        self.list_keys(filter, &[]).await
    }

    /// `List` records with only `keys` (every key when empty); keys not
    /// asked for take their absent values.
    async fn list_keys(&self, filter: &Filter, keys: &[&str]) -> Result<Vec<ProcessView>> {
        let mut dict = filter.to_dict();
        if !keys.is_empty() {
            dict.insert("Keys".into(), keys.to_vec().into());
        }
        let records = self.manager.list(dict).await.map_err(self.call_err())?;
        let mut views: Vec<ProcessView> = records.into_iter().map(ProcessView::from_dict).collect();
        views.sort_by_key(|v| (v.id.parse::<u64>().unwrap_or(u64::MAX), v.id.clone()));
        let unfiltered =
            filter.workspace.is_none() && filter.session.is_none() && filter.state.is_none();
        if unfiltered {
            if let Ok(mut all) = self.all.lock() {
                *all = Some(views.clone());
            }
        }
        Ok(views)
    }

    /// Resolves each argument against one `List` snapshot.
    async fn resolve_all(&self, args: &[String]) -> Result<Vec<Result<Target>>> {
        let views = self.list(&Filter::default()).await?;
        Ok(args.iter().map(|a| resolve(&views, a)).collect())
    }

    async fn resolve(&self, arg: &str) -> Result<Target> {
        let views = self.list(&Filter::default()).await?;
        resolve(&views, arg)
    }
}

/// An id, else a unique name. Names are not unique over time (ended runs
/// are kept for the retention period), so among several processes of one
/// name the single active one is meant; anything else is ambiguous.
fn resolve(views: &[ProcessView], arg: &str) -> Result<Target> {
    let found = |v: &ProcessView| Target {
        id: v.id.clone(),
        view: Some(v.clone()),
    };
    if let Some(v) = views.iter().find(|v| v.id == arg) {
        return Ok(found(v));
    }
    let named: Vec<&ProcessView> = views.iter().filter(|v| v.name == arg).collect();
    match named.as_slice() {
        [v] => Ok(found(v)),
        [] if !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_digit()) => Ok(Target {
            id: arg.to_string(),
            view: None,
        }),
        [] => Err(CliError::NoSuchProcess(arg.to_string())),
        many => {
            let active: Vec<&&ProcessView> = many.iter().filter(|v| v.state.is_active()).collect();
            if let [v] = active.as_slice() {
                return Ok(found(v));
            }
            let candidates = many
                .iter()
                .map(|v| format!("{} ({})", v.id, render::state_text(v)))
                .collect::<Vec<_>>()
                .join(", ");
            Err(CliError::Ambiguous {
                name: arg.to_string(),
                candidates,
            })
        }
    }
}

pub async fn dispatch(cli: Cli) -> Result<()> {
    let bus = if cli.system {
        Bus::System
    } else {
        Bus::Session
    };
    // Build the spec before connecting, so a bad flag is reported even
    // when the agent is not running.
    let spec = match &cli.command {
        Command::Start(a) => Some(build_spec(a, &Caller::current()).map_err(CliError::Usage)?),
        Command::Run(a) => {
            let mut spec = build_spec(&a.start, &Caller::current()).map_err(CliError::Usage)?;
            spec.tty = Some(true);
            Some(spec)
        }
        _ => None,
    };
    if let Command::Import(a) = &cli.command {
        return super::project::import(a);
    }
    let ctx = Ctx::connect(bus, cli.host.as_deref(), cli.json).await?;
    // Only where the processes are this user's on this machine: a
    // remote host's or the system agent's do not end at this logout.
    let check_linger = !cli.json
        && cli.host.is_none()
        && bus == Bus::Session
        && matches!(cli.command, Command::Start(_) | Command::List(_));
    let done = match cli.command {
        Command::Start(_) => match spec {
            Some(spec) => start(&ctx, spec).await,
            None => Ok(()),
        },
        Command::List(a) => list(&ctx, &a).await,
        Command::Status(a) => status(&ctx, &a).await,
        Command::Ports(a) => ports(&ctx, &a).await,
        Command::Stop(a) => stop_or_remove(&ctx, &a, Op::Stop).await,
        Command::Rm(a) => stop_or_remove(&ctx, &a, Op::Remove).await,
        Command::Kill(a) => kill(&ctx, &a).await,
        Command::Restart(a) => per_process(&ctx, &a.ids, Op::Restart).await,
        Command::Events(a) => events(&ctx, &a).await,
        Command::Logs(a) => logs(&ctx, &a).await,
        Command::Limit(a) => limit(&ctx, &a).await,
        Command::Freeze(a) => freeze(&ctx, &a.workspace, "Freeze").await,
        Command::Thaw(a) => freeze(&ctx, &a.workspace, "Thaw").await,
        Command::Workspaces => {
            let rows = live::workspaces(&ctx.conn, ctx.bus).await?;
            if ctx.json {
                emit_json(&rows)
            } else {
                emit(&live::workspaces_table(&rows))
            }
        }
        Command::Attach(a) => attach(&ctx, &a.id, a.detach_keys).await,
        Command::Run(a) => match spec {
            Some(spec) => run_attached(&ctx, spec, a.detach_keys).await,
            None => Ok(()),
        },
        Command::Send(a) => send(&ctx, &a).await,
        Command::Stats(a) => stats(&ctx, &a).await,
        Command::Top => super::top::run(&ctx.conn, &ctx.manager, ctx.bus).await,
        Command::Metrics => metrics(&ctx).await,
        Command::Track(a) => track(&ctx, &a).await,
        Command::Untrack(a) => per_process(&ctx, &a.ids, Op::Untrack).await,
        Command::Up(a) => super::project::up(&ctx.manager, ctx.bus, ctx.json, &a).await,
        Command::Down(a) => super::project::down(&ctx.manager, ctx.bus, ctx.json, &a).await,
        Command::Import(_) => Ok(()),
    };
    if done.is_ok() && check_linger {
        warn_linger(&ctx).await;
    }
    done
}

/// Warns (once per login session) when persistent processes would die
/// at logout; a failure to check is not the command's failure.
async fn warn_linger(ctx: &Ctx) {
    let Some(due) = linger::due() else {
        return;
    };
    let known = ctx.all.lock().ok().and_then(|mut all| all.take());
    let views = match known {
        Some(views) => Ok(views),
        None => ctx.list(&Filter::default()).await,
    };
    if let Ok(views) = views {
        if let Some(warning) = due.warning(&views) {
            let _ = writeln!(std::io::stderr(), "corralctl: {warning}");
        }
    }
}

async fn start(ctx: &Ctx, spec: api::StartSpec) -> Result<()> {
    let (id, path) = ctx
        .manager
        .start(spec.to_dict())
        .await
        .map_err(ctx.call_err())?;
    if ctx.json {
        #[derive(Serialize)]
        struct Started {
            id: String,
            path: String,
        }
        emit_json(&Started {
            id,
            path: path.to_string(),
        })
    } else {
        // Just the id, so `id=$(corralctl start -- sleep 9)` works.
        emit(&format!("{id}\n"))
    }
}

/// How long `run -t` waits for the process it started to be running
/// before attaching.
const RUN_ATTACH_WAIT: Duration = Duration::from_secs(10);

async fn attach(ctx: &Ctx, arg: &str, detach: u8) -> Result<()> {
    let target = ctx.resolve(arg).await?;
    let process = ctx.process(&target.id).await?;
    let fd = process.open_terminal().await.map_err(ctx.call_err())?;
    attached(&target.id, fd, detach).await
}

async fn attached(id: &str, fd: zbus::zvariant::OwnedFd, detach: u8) -> Result<()> {
    let ended = super::attach::session(fd.into(), detach)
        .await
        .map_err(CliError::Output)?;
    let note = match ended {
        super::attach::Ended::Detached => format!("detached from process {id}; it keeps running"),
        super::attach::Ended::Closed => format!("the terminal of process {id} closed"),
        // Nobody is there to read it.
        super::attach::Ended::HungUp => return Ok(()),
    };
    let _ = writeln!(std::io::stderr(), "\r\ncorralctl: {note}");
    Ok(())
}

/// `run -t`: start on a terminal, then attach as soon as it runs.
async fn run_attached(ctx: &Ctx, spec: api::StartSpec, detach: u8) -> Result<()> {
    let (id, _) = ctx
        .manager
        .start(spec.to_dict())
        .await
        .map_err(ctx.call_err())?;
    let process = ctx.process(&id).await?;
    let deadline = tokio::time::Instant::now() + RUN_ATTACH_WAIT;
    let fd = loop {
        let e = match process.open_terminal().await {
            Ok(fd) => break fd,
            Err(e) => e,
        };
        let state = process.state().await.ok().and_then(|s| State::parse(&s));
        match state {
            // Not running yet, or its exit not noticed yet: ask again
            // shortly.
            Some(s) if s.is_active() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Over before we could attach (`run -t -- ls`): show what it
            // wrote, as the terminal would have.
            Some(s) if !s.is_active() => {
                let rows = ended_output(ctx, &id).await?;
                let out: String = rows
                    .iter()
                    .filter(|r| r.1 != "s")
                    .map(|r| format!("{}\n", r.2))
                    .collect();
                return emit(&out);
            }
            _ => return Err(ctx.call_err()(e)),
        }
    };
    attached(&id, fd, detach).await
}

/// How long `run -t` and `logs -f` wait, after the process ended, for
/// its shim to log the end (its `exited …` line).
const RUN_LOG_SETTLE: Duration = Duration::from_secs(2);

/// Whether `row` is the line a shim logs last, once the command's output
/// is drained: `exited code N` or `exited signal N`.
fn is_end_line(row: &LogRow) -> bool {
    row.1 == "s" && row.2.starts_with("exited ")
}

/// The log of a process that has ended, once complete. The shim writes
/// the exit record the moment the child exits and logs `exited …` only
/// after draining the terminal, so the agent can report the end before
/// the last output is in the log (seen in the VM tier: `run -t -- sh -c
/// 'echo quick'` printed nothing). Bounded: a shim that was killed never
/// logs the line, and then what is there is what there is.
async fn ended_output(ctx: &Ctx, id: &str) -> Result<Vec<LogRow>> {
    let deadline = tokio::time::Instant::now() + RUN_LOG_SETTLE;
    loop {
        let rows = ctx.manager.logs(id, 0, 0).await.map_err(ctx.call_err())?;
        let logged_end = rows.iter().any(is_end_line);
        if logged_end || tokio::time::Instant::now() >= deadline {
            return Ok(rows);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn send(ctx: &Ctx, a: &super::args::SendArgs) -> Result<()> {
    let target = ctx.resolve(&a.id).await?;
    let process = ctx.process(&target.id).await?;
    process
        .send_input(a.text.as_bytes())
        .await
        .map_err(ctx.call_err())
}

async fn track(ctx: &Ctx, a: &TrackArgs) -> Result<()> {
    let mut options = api::StartSpec::new(vec![]);
    super::spec::supervise(&a.supervise, &mut options);
    let mut dict = options.to_dict();
    // The agent reads the command from the process itself.
    dict.remove("Command");
    let (id, path) = ctx
        .manager
        .track(a.pid, dict)
        .await
        .map_err(ctx.call_err())?;
    if ctx.json {
        emit_json(&serde_json::json!({ "id": id, "path": path.to_string() }))
    } else {
        emit(&format!("{id}\n"))
    }
}

fn list_filter(a: &ListArgs) -> Filter {
    Filter {
        workspace: a.workspace.clone(),
        session: a.session.clone(),
        state: a.state.as_deref().and_then(State::parse),
    }
}

async fn list(ctx: &Ctx, a: &ListArgs) -> Result<()> {
    if ctx.json {
        let views = ctx.list(&list_filter(a)).await?;
        emit_json(&views.iter().map(ProcessJson).collect::<Vec<_>>())
    } else {
        // The table shows fewer than half of the record's keys: ask for those only.
        let views = ctx
            .list_keys(&list_filter(a), render::LIST_TABLE_KEYS)
            .await?;
        emit(&render::list_table(&views, now_us()))
    }
}

async fn ports(ctx: &Ctx, a: &ListArgs) -> Result<()> {
    let views = ctx.list(&list_filter(a)).await?;
    let rows = render::port_rows(&views);
    if ctx.json {
        emit_json(&rows)
    } else {
        emit(&render::ports_table(&rows))
    }
}

async fn status(ctx: &Ctx, a: &StatusArgs) -> Result<()> {
    let target = ctx.resolve(&a.id).await?;
    let view = target
        .view
        .ok_or_else(|| CliError::NoSuchProcess(a.id.clone()))?;
    // Events and logs are extras: show the record even if they fail.
    let events: Vec<EventRow> = match ctx.manager.events(&view.id, a.lines).await {
        Ok(e) => e,
        Err(e) => {
            warn("cannot read events", &CliError::from_call(ctx.bus, e));
            Vec::new()
        }
    };
    let logs: Vec<LogRow> = match ctx.manager.logs(&view.id, a.lines, 0).await {
        Ok(l) => l,
        Err(e) => {
            warn("cannot read logs", &CliError::from_call(ctx.bus, e));
            Vec::new()
        }
    };
    // The record may be stale when the agent cannot write its database.
    if let Ok(err) = ctx.manager.storage_error().await {
        if !err.is_empty() {
            warn(
                "warning: corrald cannot write its database",
                &CliError::Usage(err),
            );
        }
    }
    if ctx.json {
        emit_json(&StatusJson {
            process: ProcessJson(&view),
            events: events.iter().map(EventJson::from).collect(),
            logs: logs.iter().map(LogJson::from).collect(),
        })
    } else {
        emit(&render::status_page(&view, &events, &logs, now_us()))
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Stop,
    Kill(i32),
    Restart,
    Remove,
    Untrack,
}

async fn stop_or_remove(ctx: &Ctx, a: &MatchArgs, op: Op) -> Result<()> {
    if a.ids.is_empty() {
        let filter = Filter {
            workspace: a.workspace.clone(),
            session: a.session.clone(),
            state: None,
        };
        let ids = match op {
            Op::Remove => ctx.manager.remove_matching(filter.to_dict()).await,
            _ => ctx.manager.stop_matching(filter.to_dict()).await,
        }
        .map_err(ctx.call_err())?;
        return emit_ids(&ids, ctx.json);
    }
    per_process(ctx, &a.ids, op).await
}

async fn kill(ctx: &Ctx, a: &KillArgs) -> Result<()> {
    per_process(ctx, &a.ids, Op::Kill(a.signal)).await
}

/// Runs `op` on each named process, concurrently (a Stop returns only once
/// the process has ended, up to the agent's stop timeout). Prints nothing
/// on success except with --json (the ids done). With one argument its
/// error is the command's error; with several, each is reported with its
/// argument and the others still run.
async fn per_process(ctx: &Ctx, args: &[String], op: Op) -> Result<()> {
    let targets = ctx.resolve_all(args).await?;
    let results = join_all(targets.into_iter().map(|t| async move {
        let t = t?;
        let p = ctx.process(&t.id).await?;
        match op {
            Op::Stop => p.stop().await,
            Op::Kill(sig) => p.kill(sig).await,
            Op::Restart => p.restart().await,
            Op::Remove => p.remove().await,
            Op::Untrack => p.untrack().await,
        }
        .map_err(|e| match CliError::from_call(ctx.bus, e) {
            // The agent serves no object for an unknown id: the bus answers.
            CliError::Bus { name, .. } if name == UNKNOWN_OBJECT => {
                CliError::NoSuchProcess(t.id.clone())
            }
            other => other,
        })?;
        Ok::<String, CliError>(t.id)
    }))
    .await;
    if let [Err(_)] = results.as_slice() {
        return results.into_iter().next().map_or(Ok(()), |r| r.map(|_| ()));
    }
    let mut done = Vec::new();
    let mut failed = 0;
    for (arg, r) in args.iter().zip(results) {
        match r {
            Ok(id) => done.push(id),
            Err(e) => {
                warn(arg, &e);
                failed += 1;
            }
        }
    }
    if ctx.json {
        emit_json(&done)?;
    }
    if failed > 0 {
        return Err(CliError::Partial(failed));
    }
    Ok(())
}

/// `limit`: SetLimits on the process or the workspace named.
async fn limit(ctx: &Ctx, a: &LimitArgs) -> Result<()> {
    let dict = live::limits_dict(a)?;
    let (path, iface) = match (&a.workspace, &a.id) {
        (Some(w), _) => (
            live::workspace_path(&ctx.conn, ctx.bus, w).await?,
            api::WORKSPACE_INTERFACE,
        ),
        (None, Some(id)) => {
            let t = ctx.resolve(id).await?;
            let path = zbus::zvariant::OwnedObjectPath::try_from(api::process_path(&t.id))
                .map_err(|_| CliError::NoSuchProcess(t.id.clone()))?;
            (path, api::PROCESS_INTERFACE)
        }
        (None, None) => return Err(CliError::Usage("give an ID or -w WORKSPACE".into())),
    };
    live::call(&ctx.conn, ctx.bus, &path, iface, "SetLimits", &(dict,)).await
}

/// `freeze -w W` / `thaw -w W`.
async fn freeze(ctx: &Ctx, workspace: &str, method: &str) -> Result<()> {
    let path = live::workspace_path(&ctx.conn, ctx.bus, workspace).await?;
    live::call(
        &ctx.conn,
        ctx.bus,
        &path,
        api::WORKSPACE_INTERFACE,
        method,
        &(),
    )
    .await
}

async fn events(ctx: &Ctx, a: &EventsArgs) -> Result<()> {
    let id = match &a.id {
        Some(arg) => ctx.resolve(arg).await?.id,
        None => String::new(),
    };
    let rows = ctx
        .manager
        .events(&id, a.lines)
        .await
        .map_err(ctx.call_err())?;
    if ctx.json {
        emit_json(&rows.iter().map(EventJson::from).collect::<Vec<_>>())
    } else {
        emit(&render::event_lines(&rows, true))
    }
}

/// `--since` as µs since the epoch; 0 means "any time" to the agent, so a
/// moment at or before the epoch becomes 1.
fn since_us(since: Option<Since>, now_us: u64) -> u64 {
    match since {
        None => 0,
        Some(Since::Ago(d)) => {
            let ago = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
            now_us.saturating_sub(ago).max(1)
        }
        Some(Since::At(secs)) => secs.saturating_mul(1_000_000).max(1),
    }
}

/// Prints log rows: JSON Lines with --json (one object per line, so that
/// `-f` output can be consumed as it comes), else the text.
fn emit_logs(rows: &[LogRow], a: &LogsArgs, json: bool) -> Result<()> {
    let rows: Vec<(&LogRow, Option<&Prefix>)> = rows.iter().map(|r| (r, None)).collect();
    emit_prefixed(&rows, a, json)
}

/// A process's name in merged output: as shown (padded, maybe coloured)
/// and as put in JSON.
struct Prefix {
    shown: String,
    name: String,
    id: String,
}

/// Prints log rows, each with its process's prefix when merged; drops
/// those `--grep` does not match.
fn emit_prefixed(rows: &[(&LogRow, Option<&Prefix>)], a: &LogsArgs, json: bool) -> Result<()> {
    let mut text = String::new();
    for (row, prefix) in rows {
        // A terminal's colours and cursor moves would garble the
        // reader's own terminal; `--raw` keeps them.
        let readable = if a.raw {
            (*row).clone()
        } else {
            (row.0, row.1.clone(), strip_ansi_escapes::strip_str(&row.2))
        };
        if a.grep.as_ref().is_some_and(|re| !re.is_match(&readable.2)) {
            continue;
        }
        if json {
            let mut value = serde_json::to_value(LogJson::from(&readable))
                .map_err(|e| CliError::Output(std::io::Error::other(e)))?;
            if let (Some(p), Some(obj)) = (prefix, value.as_object_mut()) {
                obj.insert("id".into(), p.id.clone().into());
                obj.insert("name".into(), p.name.clone().into());
            }
            text.push_str(&value.to_string());
        } else {
            if let Some(p) = prefix {
                text.push_str(&p.shown);
            }
            text.push_str(&render::log_line(&readable, a.timestamps, a.streams));
        }
        text.push('\n');
    }
    if text.is_empty() {
        return Ok(());
    }
    emit(&text)
}

/// Where `logs -f` stands: the newest timestamp printed and how many lines
/// with exactly that timestamp were printed. Polls ask from that timestamp
/// on and skip those lines, so two lines in the same microsecond are
/// neither lost nor printed twice, whether the agent's `since` is
/// inclusive or not.
#[derive(Debug, Default, PartialEq, Eq)]
struct Cursor {
    last_us: u64,
    seen_at_last: usize,
}

impl Cursor {
    fn new(start_us: u64, rows: &[LogRow]) -> Cursor {
        let mut c = Cursor {
            last_us: start_us,
            seen_at_last: 0,
        };
        c.advance(rows);
        c
    }

    /// Keeps the rows not printed yet, oldest first, and moves past them.
    fn fresh(&mut self, rows: Vec<LogRow>) -> Vec<LogRow> {
        let mut skip = self.seen_at_last;
        let new: Vec<LogRow> = rows
            .into_iter()
            .filter(|r| {
                if r.0 < self.last_us {
                    return false;
                }
                if r.0 == self.last_us && skip > 0 {
                    skip -= 1;
                    return false;
                }
                true
            })
            .collect();
        self.advance(&new);
        new
    }

    fn advance(&mut self, rows: &[LogRow]) {
        for r in rows {
            if r.0 > self.last_us {
                self.last_us = r.0;
                self.seen_at_last = 1;
            } else if r.0 == self.last_us {
                self.seen_at_last += 1;
            }
        }
    }
}

async fn logs(ctx: &Ctx, a: &LogsArgs) -> Result<()> {
    let id = match (&a.workspace, &a.id) {
        (Some(w), _) => return workspace_logs(ctx, w, a).await,
        (None, Some(id)) => id,
        (None, None) => return Err(CliError::Usage("logs: give an ID or -w WORKSPACE".into())),
    };
    let target = ctx.resolve(id).await?;
    let since = since_us(a.since, now_us());
    let rows = ctx
        .manager
        .logs(&target.id, a.lines, since)
        .await
        .map_err(ctx.call_err())?;
    emit_logs(&rows, a, ctx.json)?;
    let mut cursor = Cursor::new(since, &rows);
    // Whether the newest line printed is the shim's last (`exited …`).
    let mut ends = rows.last().is_some_and(is_end_line);
    // `-n 0` is every kept line: the agent answers those a page at a time
    // (README "Logs"), so read on from the last one until nothing is new.
    if a.lines == 0 {
        loop {
            let rows = ctx
                .manager
                .logs(&target.id, 0, cursor.last_us)
                .await
                .map_err(ctx.call_err())?;
            let new = cursor.fresh(rows);
            let Some(last) = new.last() else { break };
            ends = is_end_line(last);
            emit_logs(&new, a, ctx.json)?;
        }
    }
    if !a.follow {
        return Ok(());
    }
    let process = ctx.process(&target.id).await?;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut settle: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            _ = tokio::time::sleep(FOLLOW_INTERVAL) => {}
        }
        // State first, lines second. The shim writes the exit record the
        // moment the command exits and logs `exited …` only after it has
        // drained the output, so the state can say "ended" while the
        // last lines are still on their way (as in `ended_output`): once
        // ended, follow on until that line is printed, for at most
        // RUN_LOG_SETTLE (a shim that was killed never logs it).
        let alive = still_running(&process).await;
        let rows = ctx
            .manager
            .logs(&target.id, 0, cursor.last_us)
            .await
            .map_err(ctx.call_err())?;
        let new = cursor.fresh(rows);
        if alive {
            // An end line printed so far is an earlier run's (a restart).
            ends = false;
            settle = None;
        }
        if let Some(last) = new.last() {
            ends = is_end_line(last);
        }
        emit_logs(&new, a, ctx.json)?;
        if alive {
            continue;
        }
        let deadline = *settle.get_or_insert_with(|| tokio::time::Instant::now() + RUN_LOG_SETTLE);
        if ends || tokio::time::Instant::now() >= deadline {
            return Ok(());
        }
    }
}

/// The colours of merged name prefixes, in turn (as `docker compose logs`).
const PREFIX_COLOURS: [anstyle::AnsiColor; 6] = [
    anstyle::AnsiColor::Cyan,
    anstyle::AnsiColor::Yellow,
    anstyle::AnsiColor::Green,
    anstyle::AnsiColor::Magenta,
    anstyle::AnsiColor::Blue,
    anstyle::AnsiColor::Red,
];

/// `logs -w`: every process of the workspace, merged by time, each line
/// after its aligned (and, on a terminal, coloured) name; the last `-n`
/// lines of all together. With `-f`, new lines as they come, of the
/// processes there are at each poll (a process `up` replaced included),
/// until Ctrl-C.
async fn workspace_logs(ctx: &Ctx, workspace: &str, a: &LogsArgs) -> Result<()> {
    use std::io::IsTerminal;
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let filter = Filter {
        workspace: Some(workspace.to_string()),
        ..Filter::default()
    };
    let since = since_us(a.since, now_us());
    let mut cursors: std::collections::BTreeMap<String, Cursor> = Default::default();
    let mut prefixes: std::collections::BTreeMap<String, Prefix> = Default::default();
    let mut first = true;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let views = ctx.list(&filter).await?;
        if first && views.is_empty() {
            return Err(CliError::Usage(format!(
                "no process in workspace '{workspace}'"
            )));
        }
        let width = views
            .iter()
            .map(|v| v.name.chars().count())
            .max()
            .unwrap_or(0);
        for (i, v) in views.iter().enumerate() {
            let padded = format!("{:<width$} | ", v.name);
            let shown = if colour {
                let style = anstyle::Style::new()
                    .fg_color(Some(PREFIX_COLOURS[i % PREFIX_COLOURS.len()].into()));
                format!("{style}{padded}{style:#}")
            } else {
                padded
            };
            prefixes.insert(
                v.id.clone(),
                Prefix {
                    shown,
                    name: v.name.clone(),
                    id: v.id.clone(),
                },
            );
        }
        let mut fetched: Vec<(String, LogRow)> = Vec::new();
        for v in &views {
            let cursor = cursors
                .entry(v.id.clone())
                .or_insert_with(|| Cursor::new(since, &[]));
            // First round: each process's last `-n` (the merge keeps the
            // last `-n` of all); later rounds: everything new.
            let lines = if first { a.lines } else { 0 };
            let rows = match ctx.manager.logs(&v.id, lines, cursor.last_us).await {
                Ok(rows) => rows,
                // Removed between the list and now: nothing to show.
                Err(_) => continue,
            };
            fetched.extend(cursor.fresh(rows).into_iter().map(|r| (v.id.clone(), r)));
        }
        // By time; lines of one microsecond keep each process's order.
        fetched.sort_by_key(|(_, r)| r.0);
        if let Some(re) = &a.grep {
            fetched.retain(|(_, r)| re.is_match(&strip_ansi_escapes::strip_str(&r.2)));
        }
        if first && a.lines > 0 {
            let keep = a.lines as usize;
            if fetched.len() > keep {
                fetched.drain(..fetched.len() - keep);
            }
        }
        let rows: Vec<(&LogRow, Option<&Prefix>)> = fetched
            .iter()
            .map(|(id, r)| (r, prefixes.get(id)))
            .collect();
        emit_prefixed(&rows, a, ctx.json)?;
        first = false;
        if !a.follow {
            return Ok(());
        }
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            _ = tokio::time::sleep(FOLLOW_INTERVAL) => {}
        }
    }
}

/// Active, or ended with an automatic restart due (following goes on
/// through restarts). A process that vanished (removed) has ended.
async fn still_running(process: &ProcessProxy<'_>) -> bool {
    let active = match process.state().await {
        Ok(s) => State::parse(&s).is_some_and(State::is_active),
        Err(_) => return false,
    };
    active || process.next_restart_at().await.is_ok_and(|at| at != 0)
}

/// `stats`: every point the agent gives for the range (it bounds them);
/// the chart averages them into its columns.
async fn stats(ctx: &Ctx, a: &StatsArgs) -> Result<()> {
    use std::io::IsTerminal;
    let target = ctx.resolve(&a.id).await?;
    let now = now_us();
    let since = since_us(Some(a.since), now);
    let rows = ctx
        .manager
        .history(&target.id, since, 0)
        .await
        .map_err(ctx.call_err())?;
    if ctx.json {
        return emit_json(&super::stats::points_json(&rows));
    }
    let width = match ratatui::crossterm::terminal::size() {
        Ok((columns, _)) if std::io::stdout().is_terminal() => super::stats::chart_width(columns),
        _ => super::stats::DEFAULT_WIDTH,
    };
    let title = match &target.view {
        Some(v) => format!("process {} ({})", v.id, v.name),
        None => format!("process {}", target.id),
    };
    emit(&super::stats::page(&title, &rows, since, now, width))
}

/// `metrics`: the same text as the agent's `/metrics`, from one `List`.
async fn metrics(ctx: &Ctx) -> Result<()> {
    let records = ctx
        .manager
        .list(Filter::default().to_dict())
        .await
        .map_err(ctx.call_err())?;
    let metered: Vec<api::metrics::Metered> = records
        .into_iter()
        .map(|d| {
            let (health, oom_kills) = api::metrics::extras(|k| d.get(k).map(|v| &**v));
            api::metrics::Metered {
                view: ProcessView::from_dict(d),
                health,
                oom_kills,
            }
        })
        .collect();
    emit(&api::metrics::render(&metered))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: &str, name: &str, state: State) -> ProcessView {
        let mut v = ProcessView::from_dict(Default::default());
        v.id = id.into();
        v.name = name.into();
        v.state = state;
        v
    }

    #[test]
    fn ids_and_names_resolve() {
        let views = [
            view("1", "web", State::Exited),
            view("2", "web", State::Running),
            view("3", "db", State::Failed),
            view("4", "db", State::Exited),
            view("5", "3", State::Running),
        ];
        assert_eq!(resolve(&views, "1").unwrap().id, "1");
        // An id wins over a name that looks like one.
        assert_eq!(resolve(&views, "3").unwrap().id, "3");
        // Of two "web", the running one is meant.
        assert_eq!(resolve(&views, "web").unwrap().id, "2");
        let err = resolve(&views, "db").err().unwrap();
        assert!(matches!(err, CliError::Ambiguous { .. }));
        assert!(err.to_string().contains("3 (failed)") && err.to_string().contains("4 (exited)"));
        // Unknown numbers are passed on; unknown names are errors.
        let t = resolve(&views, "99").unwrap();
        assert!(t.id == "99" && t.view.is_none());
        assert!(matches!(
            resolve(&views, "nope"),
            Err(CliError::NoSuchProcess(_))
        ));
        assert!(matches!(
            resolve(&views, ""),
            Err(CliError::NoSuchProcess(_))
        ));
    }

    fn row(t: u64, s: &str) -> LogRow {
        (t, "o".into(), s.into())
    }

    #[test]
    fn follow_cursor_neither_loses_nor_repeats_lines() {
        let mut c = Cursor::new(0, &[row(5, "a"), row(7, "b"), row(7, "c")]);
        assert_eq!(
            c,
            Cursor {
                last_us: 7,
                seen_at_last: 2
            }
        );
        // An inclusive `since` returns the two lines at 7 again, plus a third.
        let new = c.fresh(vec![row(7, "b"), row(7, "c"), row(7, "d"), row(9, "e")]);
        assert_eq!(new, vec![row(7, "d"), row(9, "e")]);
        // An exclusive one does not.
        let new = c.fresh(vec![row(10, "f")]);
        assert_eq!(new, vec![row(10, "f")]);
        assert!(c.fresh(vec![row(10, "f"), row(3, "old")]).is_empty());
    }

    #[test]
    fn since_conversion() {
        assert_eq!(since_us(None, 100), 0);
        assert_eq!(
            since_us(Some(Since::Ago(Duration::from_secs(1))), 5_000_000),
            4_000_000
        );
        assert_eq!(
            since_us(Some(Since::Ago(Duration::from_secs(10))), 5_000_000),
            1
        );
        assert_eq!(
            since_us(Some(Since::At(1_700_000_000)), 0),
            1_700_000_000_000_000
        );
        assert_eq!(since_us(Some(Since::At(u64::MAX)), 0), u64::MAX);
    }
}
