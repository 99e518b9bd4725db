//! `.env` files: read one (bounded) and parse it with `dotenvy` into
//! `(KEY, VALUE)` pairs in file order. Never sets the process environment.
//! Note that dotenvy's `${VAR}` substitution looks a variable up in the
//! reader's own environment before the file's earlier lines.

use std::path::Path;

/// The largest env file read.
pub const MAX_ENV_FILE: u64 = 1 << 20;

/// The variables of the env file at `path`, or a message naming it.
pub fn read_env_file(path: &Path) -> Result<Vec<(String, String)>, String> {
    let named = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let bytes = super::read_bounded(path, MAX_ENV_FILE).map_err(|e| named(&e))?;
    dotenvy::from_read_iter(bytes.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| named(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pairs_in_order_with_quotes_and_comments() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".env");
        std::fs::write(&p, "# c\nB=2\nA='x y'\nexport C=\"q\\n\"\n").unwrap();
        assert_eq!(
            read_env_file(&p).unwrap(),
            [
                ("B".to_string(), "2".to_string()),
                ("A".into(), "x y".into()),
                ("C".into(), "q\n".into())
            ]
        );
    }

    #[test]
    fn missing_big_and_malformed_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.env");
        let e = read_env_file(&missing).unwrap_err();
        assert!(e.contains("nope.env") && e.contains("No such file"), "{e}");
        let big = dir.path().join("big.env");
        std::fs::write(&big, "A=".to_string() + &"x".repeat(MAX_ENV_FILE as usize)).unwrap();
        let e = read_env_file(&big).unwrap_err();
        assert!(e.contains("big.env") && e.contains("larger than"), "{e}");
        let bad = dir.path().join("bad.env");
        std::fs::write(&bad, "A=1\nB='unclosed\n").unwrap();
        let e = read_env_file(&bad).unwrap_err();
        assert!(e.starts_with(&format!("{}: ", bad.display())), "{e}");
    }
}
