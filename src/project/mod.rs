//! `corral.toml`, the project file: a workspace of named processes with
//! their commands, environment, health checks and dependencies. This
//! module reads and checks one file (and the env files it names) into a
//! [`Project`], which answers the start and stop order and each
//! instance's `StartSpec` and spec hash. It starts nothing and talks to
//! no agent; every error names the file, line, column and key.
//!
//! Submodules: `file` the raw serde format (and the JSON Schema), `decl`
//! one process resolved, `env` `.env` files, `graph` dependency order,
//! `error` errors and their places, [`import`] other formats → corral.toml,
//! [`watch`] the `corral.watch` label the agent's file watcher reads.

mod decl;
mod env;
mod error;
pub mod file;
mod graph;
pub mod import;
pub mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::api::StartSpec;

pub use decl::{ProcessDecl, Readiness, Watch, MAX_INSTANCES};
pub use error::{ProjectError, Result};
pub use file::Condition;

use error::{KeyPath, Source};
use file::RawFile;

/// The largest project file read.
pub const MAX_FILE: u64 = 1 << 20;

/// Most processes in one file.
pub const MAX_PROCESSES: usize = 256;

/// The label holding the project file's absolute path.
pub const LABEL_PROJECT: &str = "corral.project";
/// The label holding [`Project::spec_hash`].
pub const LABEL_SPEC_HASH: &str = "corral.spec-hash";

/// A checked project file.
#[derive(Debug, Clone)]
pub struct Project {
    /// Absolute.
    path: PathBuf,
    /// As given, for messages.
    shown: PathBuf,
    workspace: String,
    processes: BTreeMap<String, ProcessDecl>,
    deps: graph::Deps,
}

/// One instance of a process: `name` is its process name in the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub process: String,
    pub index: u32,
    pub name: String,
}

impl Project {
    /// Reads and checks the project file at `path` (at most [`MAX_FILE`]).
    pub fn load(path: &Path) -> Result<Project> {
        let read = |source| ProjectError::Read {
            path: path.to_path_buf(),
            source,
        };
        let bytes = read_bounded(path, MAX_FILE).map_err(read)?;
        let text = String::from_utf8(bytes)
            .map_err(|e| read(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        Project::parse(&text, path)
    }

    /// Checks `text` as the project file at `path`: relative paths in it
    /// (cwd, env files) are relative to `path`'s directory, and env files
    /// are read.
    pub fn parse(text: &str, path: &Path) -> Result<Project> {
        let abs = std::path::absolute(path).map_err(|source| ProjectError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let dir = abs.parent().unwrap_or(Path::new("/"));
        let src = Source::new(path, text);
        let raw: RawFile = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
        let processes_key = KeyPath::root().key("processes");
        if raw.processes.len() > MAX_PROCESSES {
            let msg = format!(
                "{} processes, more than {MAX_PROCESSES}",
                raw.processes.len()
            );
            return Err(src.error(&processes_key, msg));
        }

        let workspace = match &raw.workspace {
            Some(w) => w.clone(),
            None => dir
                .file_name()
                .and_then(|n| n.to_str())
                .map(String::from)
                .ok_or_else(|| {
                    let msg = format!("{} has no usable name; set `workspace`", dir.display());
                    src.error(&KeyPath::root().key("workspace"), msg)
                })?,
        };
        let probe = StartSpec {
            workspace: Some(workspace.clone()),
            ..StartSpec::new(vec!["true".into()])
        };
        probe
            .validate()
            .map_err(|e| src.error(&KeyPath::root().key("workspace"), e))?;

        let names: BTreeSet<String> = raw.processes.keys().cloned().collect();
        let mut processes = BTreeMap::new();
        for (name, own) in &raw.processes {
            let key = processes_key.key(name);
            check_name(name).map_err(|e| src.error(&key, e))?;
            // Which keys the table sets itself (the defaults fill in the
            // rest), so an error points at the line that set it.
            let own_keys = src.keys_in(&key);
            let mut proc = own.clone();
            if let Some(d) = &raw.defaults {
                proc.apply_defaults(d);
            }
            let keys = decl::Keys::new(name, own_keys);
            let decl = decl::resolve(&src, dir, &names, name, &keys, &proc)?;
            processes.insert(name.clone(), decl);
        }

        let deps: graph::Deps = processes
            .iter()
            .map(|(n, d)| (n.clone(), d.depends_on.keys().cloned().collect()))
            .collect();
        if let Some(cycle) = graph::find_cycle(&deps) {
            let key = processes_key
                .key(&cycle[0])
                .key("depends_on")
                .key(&cycle[1]);
            return Err(src.error(&key, format!("dependency cycle: {}", cycle.join(" -> "))));
        }
        for (name, d) in &processes {
            for (dep, cond) in &d.depends_on {
                let target = &processes[dep];
                if *cond == Condition::Healthy
                    && target.health.is_none()
                    && target.readiness.is_none()
                {
                    let key = processes_key.key(name).key("depends_on").key(dep);
                    let msg = format!("'{dep}' has no `health` check to wait for");
                    return Err(src.error(&key, msg));
                }
            }
        }

        // `api` with 2 instances is `api-0` and `api-1`; a process of
        // that name would share them.
        let mut taken = BTreeMap::new();
        for (name, d) in &processes {
            for i in 0..d.instances {
                if let Some(other) = taken.insert(d.instance_name(i), name) {
                    let msg = format!(
                        "instance name '{}' is also one of process '{other}'",
                        d.instance_name(i)
                    );
                    return Err(src.error(&processes_key.key(name), msg));
                }
            }
        }

        let project = Project {
            path: abs.clone(),
            shown: path.to_path_buf(),
            workspace,
            processes,
            deps,
        };
        // The agent checks each spec again; checking here puts the error
        // at its line, before anything starts.
        for (name, d) in &project.processes {
            for i in 0..d.instances {
                let spec = project.spec(d, i, &[]);
                if let Err(e) = spec.validate() {
                    let key = match decl::spec_key(&e) {
                        Some("") | None => processes_key.key(name),
                        Some(field) => processes_key.key(name).key(field),
                    };
                    return Err(src.error(&key, e));
                }
            }
        }
        Ok(project)
    }

    /// The file's absolute path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn workspace(&self) -> &str {
        &self.workspace
    }

    /// Every process, by name.
    pub fn processes(&self) -> &BTreeMap<String, ProcessDecl> {
        &self.processes
    }

    /// The instances to start for `names` (all when empty) and everything
    /// they depend on, dependencies first, ties by name.
    pub fn order(&self, names: &[String]) -> Result<Vec<Instance>> {
        let roots = self.roots(names)?;
        Ok(self.instances(graph::start_order(&self.deps, &roots)))
    }

    /// The instances to stop for `names` (all when empty) and everything
    /// that depends on them, dependents first.
    pub fn stop_order(&self, names: &[String]) -> Result<Vec<Instance>> {
        let roots = self.roots(names)?;
        Ok(self.instances(graph::stop_order(&self.deps, &roots)))
    }

    /// The spec of `process`'s instance `index`, with `inherited` (the
    /// caller's environment) under the declared variables. Labeled with
    /// the project file and [`Project::spec_hash`], and with the watch
    /// settings ([`watch::LABEL_WATCH`]) if it has them.
    pub fn start_spec(
        &self,
        process: &str,
        index: u32,
        inherited: &[(String, String)],
    ) -> Result<StartSpec> {
        Ok(self.spec(self.decl(process, index)?, index, inherited))
    }

    /// A hex SHA-256 of everything the file and its env files declare for
    /// this instance — not the inherited environment, so `up` from
    /// another shell finds nothing changed. Stable across runs and builds.
    pub fn spec_hash(&self, process: &str, index: u32) -> Result<String> {
        Ok(self.hash(self.decl(process, index)?, index))
    }

    fn decl(&self, process: &str, index: u32) -> Result<&ProcessDecl> {
        self.processes
            .get(process)
            .filter(|d| index < d.instances)
            .ok_or_else(|| ProjectError::NoProcess {
                path: self.shown.clone(),
                name: format!("{process} (instance {index})"),
            })
    }

    fn spec(&self, d: &ProcessDecl, index: u32, inherited: &[(String, String)]) -> StartSpec {
        let mut spec = d.start_spec(&self.workspace, index, inherited);
        spec.labels = BTreeMap::from([
            (
                LABEL_PROJECT.to_string(),
                self.path.to_string_lossy().into_owned(),
            ),
            (LABEL_SPEC_HASH.to_string(), self.hash(d, index)),
        ]);
        if let Some(w) = &d.watch {
            spec.labels
                .insert(watch::LABEL_WATCH.to_string(), w.label(&d.cwd).encode());
        }
        spec
    }

    fn hash(&self, d: &ProcessDecl, index: u32) -> String {
        /// What the hash covers, serialised as JSON: field order is fixed
        /// by the struct and maps are sorted, so the bytes are canonical.
        #[derive(Serialize)]
        struct Hashed<'a> {
            workspace: &'a str,
            instance: u32,
            decl: &'a ProcessDecl,
        }
        let hashed = Hashed {
            workspace: &self.workspace,
            instance: index,
            decl: d,
        };
        // Serialising plain structs, strings and numbers cannot fail.
        let json = serde_json::to_vec(&hashed).unwrap_or_default();
        format!("{:x}", Sha256::digest(&json))
    }

    fn roots(&self, names: &[String]) -> Result<BTreeSet<String>> {
        names
            .iter()
            .map(|n| {
                if self.processes.contains_key(n) {
                    Ok(n.clone())
                } else {
                    Err(ProjectError::NoProcess {
                        path: self.shown.clone(),
                        name: n.clone(),
                    })
                }
            })
            .collect()
    }

    fn instances(&self, order: Vec<String>) -> Vec<Instance> {
        order
            .into_iter()
            .filter_map(|n| self.processes.get(&n))
            .flat_map(|d| {
                (0..d.instances).map(|index| Instance {
                    process: d.name.clone(),
                    index,
                    name: d.instance_name(index),
                })
            })
            .collect()
    }
}

/// A process name: what a `StartSpec` accepts as `Name`, without `/`
/// (names end up in paths).
fn check_name(name: &str) -> std::result::Result<(), String> {
    if name.contains('/') {
        return Err(format!("process name '{name}' contains '/'"));
    }
    let probe = StartSpec {
        name: Some(name.to_string()),
        ..StartSpec::new(vec!["true".into()])
    };
    probe.validate()
}

/// The JSON Schema of `corral.toml`, for editors.
pub fn json_schema() -> serde_json::Value {
    schemars::generate::SchemaSettings::default()
        .with(|s| s.transforms.push(Box::new(without_null)))
        .into_generator()
        .into_root_schema_for::<RawFile>()
        .to_value()
}

/// Drops the `null` schemars gives each `Option`: TOML has no null, an
/// unset key is simply absent, and an editor should not offer one.
fn without_null(schema: &mut schemars::Schema) {
    let null = serde_json::json!({ "type": "null" });
    if let Some(serde_json::Value::Array(types)) = schema.get_mut("type") {
        types.retain(|t| t != "null");
        if let [only] = &types[..] {
            let only = only.clone();
            schema.insert("type".into(), only);
        }
    }
    if let Some(serde_json::Value::Array(any)) = schema.get_mut("anyOf") {
        any.retain(|s| *s != null);
    }
    schemars::transform::transform_subschemas(&mut without_null, schema);
}

/// Reads at most `max` bytes of `path`; a longer file is an error rather
/// than a large allocation.
fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(max + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests;
