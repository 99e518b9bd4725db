//! The `corral.watch` label: how a process's `watch` settings travel from
//! the project file to the agent, which restarts the process when a
//! watched file changes (`daemon::watch`). Both ends live here — the
//! JSON the project writes and the agent reads, and how a watch glob
//! compiles — so the file's checks and the agent's matching cannot drift.
//! Labels are stored with the process, so a watch survives agent restarts.

use serde::{Deserialize, Serialize};

/// The label carrying a process's [`WatchLabel`] as compact JSON.
pub const LABEL_WATCH: &str = "corral.watch";

/// What `corral.watch` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchLabel {
    /// The directory the globs are relative to: the process's working
    /// directory, absolute.
    pub base: String,
    pub paths: Vec<String>,
    pub ignore: Vec<String>,
    pub debounce_ms: u64,
}

impl WatchLabel {
    /// The label's value.
    pub fn encode(&self) -> String {
        // Strings and numbers only: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn decode(value: &str) -> Result<WatchLabel, serde_json::Error> {
        serde_json::from_str(value)
    }
}

/// A watch glob, relative to the base directory. `*` and `?` stop at `/`
/// (as in .gitignore); `**` crosses directories, so `src/**/*.rs` matches
/// `src/main.rs` and `src/a/b.rs`.
pub fn glob(pattern: &str) -> Result<globset::Glob, globset::Error> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_label_round_trips_as_compact_json() {
        let w = WatchLabel {
            base: "/p".into(),
            paths: vec!["src/**/*.rs".into()],
            ignore: vec!["*.log".into()],
            debounce_ms: 300,
        };
        let v = w.encode();
        assert_eq!(
            v,
            r#"{"base":"/p","paths":["src/**/*.rs"],"ignore":["*.log"],"debounce_ms":300}"#
        );
        assert_eq!(WatchLabel::decode(&v).unwrap(), w);
    }

    #[test]
    fn a_star_stays_in_its_directory_and_two_cross_them() {
        let star = glob("src/*.rs").unwrap().compile_matcher();
        assert!(star.is_match("src/main.rs"));
        assert!(!star.is_match("src/a/b.rs"));
        let deep = glob("src/**/*.rs").unwrap().compile_matcher();
        assert!(deep.is_match("src/main.rs"));
        assert!(deep.is_match("src/a/b.rs"));
    }
}
