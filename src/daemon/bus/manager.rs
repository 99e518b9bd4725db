//! `org.corral.Supervisor1.Manager` at `/org/corral/Supervisor1`.

use std::collections::HashMap;

use zbus::interface;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue, Value};

use super::{gone, login, Action, Caller, Ctx};
use crate::api::{self, Error, Filter, StartSpec};
use crate::config::Mode;
use crate::daemon::projects::{Kind, Op};
use crate::daemon::supervisor::{Access, Command, Reply, RunAs};

pub struct Manager {
    ctx: Ctx,
    storage: tokio::sync::watch::Receiver<Option<String>>,
}

impl Manager {
    pub fn new(ctx: Ctx, storage: tokio::sync::watch::Receiver<Option<String>>) -> Self {
        Manager { ctx, storage }
    }

    /// StopMatching and RemoveMatching: decode the filter, check, ask.
    async fn matching(
        &self,
        hdr: &Header<'_>,
        filter_dict: HashMap<String, OwnedValue>,
        make: impl FnOnce(Filter, Access, Reply<Vec<String>>) -> Command,
    ) -> Result<Vec<String>, Error> {
        let filter = filter(filter_dict)?;
        let caller = self.ctx.auth.caller(hdr).await?;
        self.ctx.auth.require(&caller, Action::ManageOwn).await?;
        let access = self.ctx.auth.access(&caller).await;
        Ok(self
            .ctx
            .handle
            .ask(|reply| make(filter, access, reply))
            .await
            .ok_or_else(gone)??)
    }

    /// Who a new process belongs to: the agent's user (user mode), else
    /// the caller, or the spec's `User` when that is authorized.
    async fn run_as(&self, caller: &Caller, spec: &StartSpec) -> Result<RunAs, Error> {
        match (self.ctx.auth.mode(), &spec.user) {
            (Mode::User, None) => Ok(RunAs {
                uid: caller.uid,
                credentials: None,
                login_env: None,
                home: None,
            }),
            (Mode::User, Some(_)) => Err(Error::InvalidArgument(
                "User: only the system agent (corrald --system) starts processes as another user"
                    .into(),
            )),
            (Mode::System, None) => {
                login::run_as(caller.uid.to_string(), Some(caller.groups.clone())).await
            }
            (Mode::System, Some(user)) => {
                self.ctx.auth.require(caller, Action::StartAsUser).await?;
                login::run_as(user.clone(), None).await
            }
        }
    }
}

impl Manager {
    async fn project_op(
        &self,
        hdr: &Header<'_>,
        kind: Kind,
        file: String,
        names: Vec<String>,
        options: HashMap<String, OwnedValue>,
    ) -> Result<Vec<(String, String, String)>, Error> {
        let (env, remove) = project_options(kind, options)?;
        let file = std::path::PathBuf::from(file);
        if !file.is_absolute() {
            return Err(Error::InvalidArgument(format!(
                "file: '{}' is not an absolute path",
                file.display()
            )));
        }
        let caller = self.ctx.auth.caller(hdr).await?;
        self.ctx.auth.require(&caller, Action::ManageOwn).await?;
        let op = Op {
            kind,
            owner: caller.uid,
            file,
            names,
            env,
            remove,
        };
        Ok(self.ctx.projects.run(op).await?)
    }
}

/// `Up`'s and `Down`'s options: (`Environment`, `Remove`).
fn project_options(
    kind: Kind,
    options: HashMap<String, OwnedValue>,
) -> Result<(Vec<(String, String)>, bool), Error> {
    let bad = |m: String| Error::InvalidArgument(m);
    let mut env = Vec::new();
    let mut remove = false;
    for (key, value) in options {
        match (kind, key.as_str()) {
            (Kind::Up, "Environment") => {
                let entries = Vec::<String>::try_from(value)
                    .map_err(|_| bad("Environment: expected D-Bus type 'as'".into()))?;
                if entries.len() > api::MAX_ARGS {
                    return Err(bad(format!(
                        "Environment: more than {} entries",
                        api::MAX_ARGS
                    )));
                }
                let size: usize = entries.iter().map(|e| api::wire_len(e)).sum();
                if size > api::MAX_PAYLOAD {
                    return Err(bad(format!(
                        "Environment: more than {} bytes",
                        api::MAX_PAYLOAD
                    )));
                }
                for e in entries {
                    let (k, v) = e
                        .split_once('=')
                        .ok_or_else(|| bad(format!("Environment: '{e}' is not KEY=VALUE")))?;
                    env.push((k.to_string(), v.to_string()));
                }
            }
            (Kind::Down, "Remove") => {
                remove = bool::try_from(&*value)
                    .map_err(|_| bad("Remove: expected D-Bus type 'b'".into()))?;
            }
            (_, other) => return Err(bad(format!("unknown option '{other}'"))),
        }
    }
    Ok((env, remove))
}

/// The largest `List` reply sent whole (bytes, estimated).
const LIST_MAX_BYTES: usize = 16 << 20;

/// How much of `Command` and of `Labels` each entry of a larger `List`
/// keeps (bytes); the process object's properties still have them whole.
const LIST_FIELD_BYTES: usize = 4096;

/// A `List` reply that fits a D-Bus message whatever the specs: one
/// caller's processes at the spec bounds (512 KiB of command, 256 KiB of
/// labels each) would make a reply far over the bus's limit and every
/// `corralctl list` of that user — or of root — fail. Past
/// [`LIST_MAX_BYTES`] each entry's command and labels are cut to
/// [`LIST_FIELD_BYTES`], about 14 KiB an entry at worst, ~14 MiB for the
/// default `max_processes_per_owner` of 1000.
pub(super) fn fit_list(mut views: Vec<api::ProcessView>) -> Vec<api::ProcessView> {
    let size: usize = views.iter().map(entry_bytes).sum();
    if size <= LIST_MAX_BYTES {
        return views;
    }
    for v in &mut views {
        cut_command(&mut v.command, LIST_FIELD_BYTES);
        // Labels in key order while their keys fit, values cut to what
        // is left.
        let mut budget = LIST_FIELD_BYTES;
        v.labels.retain(|k, val| {
            let Some(left) = budget.checked_sub(k.len()) else {
                budget = 0;
                return false;
            };
            cut(val, left);
            budget = left.saturating_sub(val.len());
            true
        });
    }
    views
}

/// About what one entry costs in a reply: its strings plus the fixed part.
fn entry_bytes(v: &api::ProcessView) -> usize {
    const FIXED: usize = 1024;
    let strings = [&v.name, &v.working_directory, &v.workspace, &v.session]
        .into_iter()
        .chain([&v.unit, &v.control_group])
        .map(|s| s.len());
    FIXED
        + strings.sum::<usize>()
        + v.command.iter().map(|a| a.len() + 8).sum::<usize>()
        + v.labels
            .iter()
            .map(|(k, v)| k.len() + v.len() + 16)
            .sum::<usize>()
}

/// Keeps whole arguments while they fit `budget` bytes; the first that
/// does not is [`cut`] and ends the command.
fn cut_command(command: &mut Vec<String>, mut budget: usize) {
    for i in 0..command.len() {
        if command[i].len() > budget {
            cut(&mut command[i], budget);
            command.truncate(i + 1);
            return;
        }
        budget -= command[i].len();
    }
}

/// Cuts `s` to at most `max` bytes at a character boundary, marking the
/// cut with `…` (which is not counted).
fn cut(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
}

/// Start spec keys `Track` does not take: what runs, where and as whom
/// is read from the process itself.
const NOT_TRACK_OPTIONS: [&str; 5] = [
    "Command",
    "Environment",
    "WorkingDirectory",
    "CleanEnvironment",
    "User",
];

/// `Track`'s options: the Start spec keys that say how to supervise.
/// The command is the process's own, filled in by the supervisor from
/// `/proc`; a placeholder lets the spec's checks run on the rest now.
fn track_options(mut dict: HashMap<String, OwnedValue>) -> Result<StartSpec, Error> {
    if let Some(k) = NOT_TRACK_OPTIONS.iter().find(|k| dict.contains_key(**k)) {
        return Err(Error::InvalidArgument(format!(
            "{k}: not a Track option (it is read from the process)"
        )));
    }
    let placeholder = OwnedValue::try_from(Value::from(vec!["tracked".to_string()]))
        .map_err(|e| Error::ZBus(e.into()))?;
    dict.insert("Command".into(), placeholder);
    StartSpec::from_dict(dict).map_err(Error::InvalidArgument)
}

/// `List`'s `Keys` option (`as`), taken out of its filter: which keys
/// each record carries (every key when absent).
fn record_keys(dict: &mut HashMap<String, OwnedValue>) -> Result<api::RecordKeys, Error> {
    let Some(value) = dict.remove("Keys") else {
        return Ok(api::RecordKeys::default());
    };
    let names = Vec::<String>::try_from(value)
        .map_err(|_| Error::InvalidArgument("Keys: expected an array of strings (as)".into()))?;
    api::RecordKeys::from_names(&names).map_err(Error::InvalidArgument)
}

fn filter(dict: HashMap<String, OwnedValue>) -> Result<Filter, Error> {
    Filter::from_dict(dict).map_err(Error::InvalidArgument)
}

#[interface(name = "org.corral.Supervisor1.Manager")]
impl Manager {
    /// Start(a{sv} spec) -> (s id, o process)
    async fn start(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        spec: HashMap<String, OwnedValue>,
    ) -> Result<(String, OwnedObjectPath), Error> {
        let spec = Box::new(StartSpec::from_dict(spec).map_err(Error::InvalidArgument)?);
        let caller = self.ctx.auth.caller(&hdr).await?;
        self.ctx.auth.require(&caller, Action::ManageOwn).await?;
        let run_as = self.run_as(&caller, &spec).await?;
        let id = self
            .ctx
            .handle
            .ask(|reply| Command::Start {
                spec,
                run_as,
                reply,
            })
            .await
            .ok_or_else(gone)??;
        let path =
            OwnedObjectPath::try_from(api::process_path(&id)).map_err(|e| Error::ZBus(e.into()))?;
        Ok((id, path))
    }

    /// Track(u pid, a{sv} options) -> (s id, o process)
    async fn track(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        pid: u32,
        options: HashMap<String, OwnedValue>,
    ) -> Result<(String, OwnedObjectPath), Error> {
        let options = Box::new(track_options(options)?);
        let caller = self.ctx.auth.caller(&hdr).await?;
        self.ctx.auth.require(&caller, Action::ManageOwn).await?;
        let owner = tokio::task::spawn_blocking(move || crate::daemon::track::uid_of(pid))
            .await
            .map_err(|e| Error::NotFound(e.to_string()))?
            .map_err(|e| Error::NotFound(format!("no process with PID {pid}: {e}")))?;
        if owner != caller.uid {
            match self.ctx.auth.mode() {
                Mode::User => {
                    return Err(Error::NotTrackable(format!(
                        "PID {pid} belongs to uid {owner}, not to this agent's user"
                    )))
                }
                // Another user's process: as for managing theirs.
                Mode::System => self.ctx.auth.require(&caller, Action::ManageAll).await?,
            }
        }
        // It stays its owner's: a relaunch runs as them (system mode).
        let run_as = match self.ctx.auth.mode() {
            Mode::User => RunAs {
                uid: owner,
                credentials: None,
                login_env: None,
                home: None,
            },
            Mode::System => login::run_as(owner.to_string(), None).await?,
        };
        let id = self
            .ctx
            .handle
            .ask(|reply| Command::Track {
                pid,
                options,
                run_as,
                reply,
            })
            .await
            .ok_or_else(gone)??;
        let path =
            OwnedObjectPath::try_from(api::process_path(&id)).map_err(|e| Error::ZBus(e.into()))?;
        Ok((id, path))
    }

    /// List(a{sv} filter) -> aa{sv}
    async fn list(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        mut filter_dict: HashMap<String, OwnedValue>,
    ) -> Result<Vec<HashMap<String, Value<'static>>>, Error> {
        let keys = record_keys(&mut filter_dict)?;
        let filter = filter(filter_dict)?;
        let caller = self.ctx.auth.caller(&hdr).await?;
        let access = self.ctx.auth.access(&caller).await;
        let views = self
            .ctx
            .handle
            .ask(|reply| Command::List {
                filter,
                access,
                reply,
            })
            .await
            .ok_or_else(gone)?;
        Ok(fit_list(views)
            .iter()
            .map(|v| v.to_dict_keys(&keys))
            .collect())
    }

    /// StopMatching(a{sv} filter) -> as
    async fn stop_matching(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        filter_dict: HashMap<String, OwnedValue>,
    ) -> Result<Vec<String>, Error> {
        self.matching(&hdr, filter_dict, |filter, access, reply| {
            Command::StopMatching {
                filter,
                access,
                reply,
            }
        })
        .await
    }

    /// RemoveMatching(a{sv} filter) -> as
    async fn remove_matching(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        filter_dict: HashMap<String, OwnedValue>,
    ) -> Result<Vec<String>, Error> {
        self.matching(&hdr, filter_dict, |filter, access, reply| {
            Command::RemoveMatching {
                filter,
                access,
                reply,
            }
        })
        .await
    }

    /// Events(s id, u limit) -> a(tsss)
    async fn events(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        id: String,
        limit: u32,
    ) -> Result<Vec<(u64, String, String, String)>, Error> {
        let id = Some(id).filter(|s| !s.is_empty());
        // At most 10,000 rows of at most 1 KiB of detail: a reply of ~10 MiB.
        let limit = if limit == 0 { 1000 } else { limit.min(10_000) };
        let caller = self.ctx.auth.caller(&hdr).await?;
        let access = self.ctx.auth.access(&caller).await;
        let rows = self
            .ctx
            .handle
            .ask(|reply| Command::Events {
                id,
                access,
                limit,
                reply,
            })
            .await
            .ok_or_else(gone)??;
        Ok(rows
            .into_iter()
            .map(|(at, pid, kind, detail)| (at, pid.to_string(), kind, detail))
            .collect())
    }

    /// Logs(s id, u lines, t since_us) -> a(tss)
    async fn logs(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        id: String,
        lines: u32,
        since_us: u64,
    ) -> Result<Vec<(u64, String, String)>, Error> {
        let caller = self.ctx.auth.caller(&hdr).await?;
        let access = self.ctx.auth.access(&caller).await;
        let lines = self
            .ctx
            .handle
            .ask(|reply| Command::Logs {
                id,
                access,
                lines,
                since_us,
                reply,
            })
            .await
            .ok_or_else(gone)??;
        Ok(lines
            .into_iter()
            .map(|l| (l.ts_us, l.stream.to_string(), l.text))
            .collect())
    }

    /// History(s id, t since_us, t step_ms) -> a(tdtttt): usage since a
    /// time in steps of at least `step_ms`, at most HISTORY_MAX_POINTS rows.
    async fn history(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        id: String,
        since_us: u64,
        step_ms: u64,
    ) -> Result<Vec<api::HistoryRow>, Error> {
        let caller = self.ctx.auth.caller(&hdr).await?;
        let access = self.ctx.auth.access(&caller).await;
        Ok(self
            .ctx
            .handle
            .ask(|reply| Command::History {
                id,
                access,
                since_us,
                step_ms,
                reply,
            })
            .await
            .ok_or_else(gone)??)
    }

    /// Up(s file, as names, a{sv} options) -> a(sss): brings the
    /// workspace of the project file `file` (absolute) to it — the named
    /// processes and their dependencies, or all — and answers, once done,
    /// what each instance came to: (name, action, detail). Options:
    /// `Environment` (as, `KEY=VALUE`: the caller's, under the file's).
    async fn up(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        file: String,
        names: Vec<String>,
        options: HashMap<String, OwnedValue>,
    ) -> Result<Vec<(String, String, String)>, Error> {
        self.project_op(&hdr, Kind::Up, file, names, options).await
    }

    /// Down(s file, as names, a{sv} options) -> a(sss): stops the named
    /// processes and what depends on them (or all), dependents first.
    /// Options: `Remove` (b: forget them too).
    async fn down(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        file: String,
        names: Vec<String>,
        options: HashMap<String, OwnedValue>,
    ) -> Result<Vec<(String, String, String)>, Error> {
        self.project_op(&hdr, Kind::Down, file, names, options)
            .await
    }

    /// One step of an `Up` or `Down` as it happens (user mode only: on
    /// the system bus every user would hear it).
    #[zbus(signal)]
    pub async fn project_step(
        emitter: &SignalEmitter<'_>,
        workspace: &str,
        process: &str,
        action: &str,
        detail: &str,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn process_state_changed(
        emitter: &SignalEmitter<'_>,
        id: &str,
        process: ObjectPath<'_>,
        old_state: &str,
        new_state: &str,
    ) -> zbus::Result<()>;

    /// A process's `Health` changed (`none|starting|healthy|unhealthy`).
    #[zbus(signal)]
    pub async fn health_changed(
        emitter: &SignalEmitter<'_>,
        id: &str,
        process: ObjectPath<'_>,
        old_health: &str,
        new_health: &str,
    ) -> zbus::Result<()>;

    /// The last error writing the database, empty while writes succeed.
    /// Supervision goes on while it is set; state is rewritten once writes
    /// work again.
    #[zbus(property)]
    fn storage_error(&self) -> String {
        self.storage.borrow().clone().unwrap_or_default()
    }

    #[zbus(property)]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(command: Vec<String>, labels: usize) -> api::ProcessView {
        let mut v = api::ProcessView::from_dict(Default::default());
        v.command = command;
        v.labels = (0..labels)
            .map(|i| (format!("{i:0>128}"), "v".repeat(4096)))
            .collect();
        v
    }

    /// Hardening: a list of processes at the spec bounds would not fit a
    /// D-Bus message; each entry's command and labels are cut so it does,
    /// while a list that fits is sent untouched.
    #[test]
    fn a_list_of_giant_entries_is_cut_to_fit_and_a_small_one_is_whole() {
        let small = vec![view(vec!["java".into(), "x".repeat(100_000)], 3); 10];
        assert_eq!(fit_list(small.clone()), small);
        let mut command = vec!["a\u{e9}".repeat(2000); 100];
        // Leaves 1097 bytes for the second: inside an `é`.
        command[0] = "b".repeat(2999);
        let giant = view(command, 64);
        let cut = fit_list(vec![giant; 1000]);
        let total: usize = cut.iter().map(entry_bytes).sum();
        assert!(total <= LIST_MAX_BYTES, "{total}");
        let first = &cut[0];
        assert_eq!(first.command.len(), 2);
        assert_eq!(first.command[0].len(), 2999);
        assert_eq!(
            first.command[1],
            format!("{}…", "a\u{e9}".repeat(365) + "a")
        );
        assert!(first.command.concat().len() <= LIST_FIELD_BYTES + '…'.len_utf8());
        // The first label whole but for the end of its value, then what fits.
        let label_bytes: usize = first.labels.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(label_bytes <= LIST_FIELD_BYTES + 32 * '…'.len_utf8());
        assert!(first.labels.values().next().unwrap().ends_with('…'));
    }
}
