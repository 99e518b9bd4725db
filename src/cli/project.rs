//! `corralctl up`, `down` and `import`: finding the project file, checking
//! it here first (so a mistake is named before anything is asked of the
//! agent), calling `Up`/`Down`, printing each step as the agent reports
//! it (`ProjectStep`) and the outcome.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use serde::Serialize;
use zbus::zvariant::Value;

use super::args::{DownArgs, ImportArgs, ProjectArgs};
use super::commands::emit;
use super::error::{Bus, CliError, Result};
use crate::api::ManagerProxy;
use crate::project::{import, Project};

/// The name `up` looks for.
const FILE_NAME: &str = "corral.toml";

/// Actions that make `up`/`down` exit non-zero.
const FAILED: [&str; 2] = ["failed", "held"];

#[derive(Serialize)]
struct StepJson<'a> {
    process: &'a str,
    action: &'a str,
    detail: &'a str,
}

/// The project file: `-f`, else `corral.toml` in the working directory
/// or the nearest parent that has one. Absolute.
fn find_file(given: Option<&Path>) -> Result<PathBuf> {
    let cwd = std::env::current_dir()
        .map_err(|e| CliError::Usage(format!("cannot tell the working directory: {e}")))?;
    if let Some(f) = given {
        return Ok(cwd.join(f));
    }
    cwd.ancestors()
        .map(|d| d.join(FILE_NAME))
        .find(|f| f.is_file())
        .ok_or_else(|| {
            CliError::Usage(format!(
                "no {FILE_NAME} in {} or any parent directory (use -f FILE)",
                cwd.display()
            ))
        })
}

/// Reads and checks the file here, as the agent will.
fn check(file: &Path) -> Result<Project> {
    Project::load(file).map_err(|e| CliError::Usage(e.to_string()))
}

pub async fn up(
    manager: &ManagerProxy<'static>,
    bus: Bus,
    json: bool,
    a: &ProjectArgs,
) -> Result<()> {
    let file = find_file(a.file.as_deref())?;
    let project = check(&file)?;
    // The caller's environment, under the file's own: what `corralctl
    // start` gives a command (PATH above all).
    let env = super::spec::environment(&super::spec::Caller::current().env, false, &[]);
    let options = HashMap::from([("Environment".to_string(), Value::from(env))]);
    run(manager, bus, json, &project, |m| {
        Box::pin(async move { m.up(&file_str(&file), &a.names, options).await })
    })
    .await
}

pub async fn down(
    manager: &ManagerProxy<'static>,
    bus: Bus,
    json: bool,
    a: &DownArgs,
) -> Result<()> {
    let file = find_file(a.project.file.as_deref())?;
    let project = check(&file)?;
    let mut options = HashMap::new();
    if a.rm {
        options.insert("Remove".to_string(), Value::from(true));
    }
    run(manager, bus, json, &project, |m| {
        Box::pin(async move { m.down(&file_str(&file), &a.project.names, options).await })
    })
    .await
}

fn file_str(file: &Path) -> String {
    file.to_string_lossy().into_owned()
}

type Steps = Vec<(String, String, String)>;

/// Calls `Up`/`Down` (`call`), printing the agent's steps as they come
/// (not with `--json`), then what the reply adds; fails when a step did.
async fn run<'a>(
    manager: &'a ManagerProxy<'static>,
    bus: Bus,
    json: bool,
    project: &Project,
    call: impl FnOnce(
        &'a ManagerProxy<'static>,
    ) -> futures_util::future::BoxFuture<'a, zbus::Result<Steps>>,
) -> Result<()> {
    let width = project
        .processes()
        .values()
        .flat_map(|d| (0..d.instances).map(|i| d.instance_name(i).len()))
        .max()
        .unwrap_or(0);
    let line = |(p, a, d): &(String, String, String)| {
        let d = super::format::sanitize(d);
        format!("{p:<width$}  {a:<9}  {d}\n").trim_end().to_string() + "\n"
    };
    // Subscribed before the call, so no step is missed.
    let mut live = match (json, manager.receive_project_step().await) {
        (false, Ok(s)) => Some(s),
        _ => None,
    };
    let workspace = project.workspace().to_string();
    let mut shown: Vec<(String, String, String)> = Vec::new();
    let reply = {
        let call = call(manager);
        tokio::pin!(call);
        loop {
            let next = async {
                match live.as_mut() {
                    Some(s) => s.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = &mut call => break r,
                Some(sig) = next => {
                    let Ok(args) = sig.args() else { continue };
                    if args.workspace != workspace {
                        continue;
                    }
                    let step = (args.process.to_string(), args.action.to_string(), args.detail.to_string());
                    emit(&line(&step))?;
                    shown.push(step);
                }
            }
        }
    };
    let steps = reply.map_err(|e| CliError::from_call(bus, e))?;
    if json {
        let rows: Vec<StepJson> = steps
            .iter()
            .map(|(p, a, d)| StepJson {
                process: p,
                action: a,
                detail: d,
            })
            .collect();
        let text = serde_json::to_string_pretty(&rows)
            .map_err(|e| CliError::Output(std::io::Error::other(e)))?;
        emit(&format!("{text}\n"))?;
    } else {
        for s in steps.iter().filter(|s| !shown.contains(s)) {
            emit(&line(s))?;
        }
    }
    let failed = steps
        .iter()
        .filter(|(_, a, _)| FAILED.contains(&a.as_str()))
        .count();
    if failed > 0 {
        return Err(CliError::Partial(failed));
    }
    Ok(())
}

/// `import PROCFILE`: a corral.toml on standard output or in `-o FILE`.
pub fn import(a: &ImportArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.procfile)
        .map_err(|e| CliError::Usage(format!("{}: {e}", a.procfile.display())))?;
    let toml = import::procfile(&text, a.workspace.as_deref())
        .map_err(|e| CliError::Usage(format!("{}: {e}", a.procfile.display())))?;
    match &a.output {
        None => emit(&toml),
        Some(out) => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(out)
                .map_err(|e| CliError::Usage(format!("{}: {e}", out.display())))?;
            std::io::Write::write_all(&mut f, toml.as_bytes()).map_err(CliError::Output)
        }
    }
}
