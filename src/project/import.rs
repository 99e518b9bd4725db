//! Other formats → `corral.toml` text. A Procfile (`name: command` lines,
//! `#` comments, blank lines) becomes one process per line, its command
//! run by `/bin/sh -c` as foreman does. The text is the `file` format
//! serialised by `toml`, so it reads back as written. process-compose YAML
//! is not imported: no maintained serde YAML crate fits our Rust version
//! cheaply (serde_yaml is archived).

use std::collections::BTreeMap;

use super::file::{Command, RawFile, RawProcess};

/// Why a Procfile could not be imported: the line (1-based) and what.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("Procfile line {line}: {message}")]
pub struct ImportError {
    pub line: usize,
    pub message: String,
}

/// The corral.toml text declaring the processes of Procfile `text`.
pub fn procfile(text: &str, workspace: Option<&str>) -> Result<String, ImportError> {
    let mut processes = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let err = |message: String| ImportError {
            line: i + 1,
            message,
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, command) = line
            .split_once(':')
            .ok_or_else(|| err("not `name: command`".into()))?;
        let (name, command) = (name.trim(), command.trim());
        super::check_name(name).map_err(err)?;
        if command.is_empty() {
            return Err(err(format!("'{name}' has no command")));
        }
        let process = RawProcess::new(Command::Shell(command.to_string()));
        if processes.insert(name.to_string(), process).is_some() {
            return Err(err(format!("'{name}' is declared twice")));
        }
    }
    let file = RawFile {
        workspace: workspace.map(String::from),
        defaults: None,
        processes,
    };
    toml::to_string(&file).map_err(|e| ImportError {
        line: 0,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::Project;
    use std::path::Path;

    #[test]
    fn a_procfile_round_trips_through_the_parser() {
        let text = "# dev\nweb: bundle exec rails s -p $PORT\n\n  worker :  sidekiq -q \"a b\"\nclock: ./clock.sh # with a comment\n";
        let toml = procfile(text, Some("shop")).unwrap();
        let project = Project::parse(&toml, Path::new("/srv/shop/corral.toml")).unwrap();
        assert_eq!(project.workspace(), "shop");
        let commands: Vec<(&str, &str)> = project
            .processes()
            .iter()
            .map(|(n, d)| (n.as_str(), d.command[2].as_str()))
            .collect();
        assert_eq!(
            commands,
            [
                ("clock", "./clock.sh # with a comment"),
                ("web", "bundle exec rails s -p $PORT"),
                ("worker", "sidekiq -q \"a b\""),
            ]
        );
        assert!(project
            .processes()
            .values()
            .all(|d| d.command[..2] == ["/bin/sh", "-c"]));
        let bare = procfile("web: x\n", None).unwrap();
        assert!(!bare.contains("workspace"), "{bare}");
    }

    #[test]
    fn bad_procfile_lines_are_named() {
        let cases = [
            ("web: x\nnocolon\n", 2, "not `name: command`"),
            ("web: x\nweb: y\n", 2, "'web' is declared twice"),
            ("a/b: x\n", 1, "process name 'a/b' contains '/'"),
            (": x\n", 1, "Name: must not be empty"),
            ("web:   \n", 1, "'web' has no command"),
        ];
        for (text, line, message) in cases {
            let e = procfile(text, None).unwrap_err();
            assert_eq!((e.line, e.message.as_str()), (line, message), "{text:?}");
        }
    }
}
