//! `ProjectError` and where in the file an error is: key paths
//! (`processes.api.depends_on.db`) and their line and column, found in a
//! span-keeping parse of the text (`toml_edit::ImDocument`). Knows
//! nothing of what the keys mean.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml_edit::{Array, ImDocument, Item, TableLike, Value};

#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `PATH:LINE:COL: KEY: message` (the key left out when there is none,
    /// as for a TOML syntax error).
    #[error("{}:{line}:{col}: {}{message}", path.display(), key_prefix(key))]
    Invalid {
        path: PathBuf,
        line: usize,
        col: usize,
        key: String,
        message: String,
    },
    /// A name asked of the project that it does not declare.
    #[error("{}: no process named '{name}'", path.display())]
    NoProcess { path: PathBuf, name: String },
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

pub type Result<T> = std::result::Result<T, ProjectError>;

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A key path, shown as `processes.api.env_file[1]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(Vec<Seg>);

impl KeyPath {
    pub fn root() -> KeyPath {
        KeyPath::default()
    }

    pub fn key(&self, k: &str) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.to_string()));
        p
    }

    pub fn index(&self, i: usize) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// The text of one file with its span-keeping parse, to turn key paths
/// and byte offsets into `PATH:LINE:COL` errors.
pub struct Source<'a> {
    path: &'a Path,
    text: &'a str,
    doc: Option<ImDocument<&'a str>>,
}

/// A node of the document: tables hold items, arrays hold values.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    fn table(self) -> Option<&'a dyn TableLike> {
        match self {
            Node::Item(i) => i.as_table_like(),
            Node::Value(v) => v.as_inline_table().map(|t| t as &dyn TableLike),
        }
    }

    fn array(self) -> Option<&'a Array> {
        match self {
            Node::Item(i) => i.as_array(),
            Node::Value(v) => v.as_array(),
        }
    }

    fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Item(i) => i.span(),
            Node::Value(v) => v.span(),
        }
    }
}

impl<'a> Source<'a> {
    pub fn new(path: &'a Path, text: &'a str) -> Source<'a> {
        Source {
            path,
            text,
            doc: ImDocument::parse(text).ok(),
        }
    }

    /// An error about `key`, placed at the key (or at the deepest part of
    /// its path the file has, for a key that was defaulted).
    pub fn error(&self, key: &KeyPath, message: impl fmt::Display) -> ProjectError {
        let offset = self.span_of(key).map_or(0, |s| s.start);
        self.at(offset, key.to_string(), message.to_string())
    }

    /// A deserialisation or syntax error: toml gives the span and the
    /// message; the key is the deepest one whose span holds the error.
    pub fn toml_error(&self, e: &toml::de::Error) -> ProjectError {
        let offset = e.span().map_or(0, |s| s.start);
        let key = self
            .key_at(offset)
            .map(|k| k.to_string())
            .unwrap_or_default();
        self.at(offset, key, e.message().trim_end().to_string())
    }

    fn at(&self, offset: usize, key: String, message: String) -> ProjectError {
        let before = self.text.get(..offset).unwrap_or(self.text);
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        ProjectError::Invalid {
            path: self.path.to_path_buf(),
            line,
            col,
            key,
            message,
        }
    }

    /// The span of the last key of `path` the document has. A key step
    /// into an array finds the element with that text, so a dependency
    /// named in `depends_on = ["db"]` is found as `depends_on.db`.
    fn span_of(&self, path: &KeyPath) -> Option<Range<usize>> {
        let mut node = Node::Item(self.doc.as_ref()?.as_item());
        let mut best = None;
        for seg in &path.0 {
            let next = match (seg, node.table(), node.array()) {
                (Seg::Key(k), Some(t), _) => t.get_key_value(k).map(|(key, item)| {
                    best = key.span().or_else(|| item.span()).or(best.clone());
                    Node::Item(item)
                }),
                (Seg::Key(k), None, Some(a)) => {
                    let v = a.iter().find(|v| v.as_str() == Some(k.as_str()))?;
                    return v.span().or(best);
                }
                (Seg::Index(i), _, Some(a)) => a.get(*i).map(|v| {
                    best = v.span().or(best.clone());
                    Node::Value(v)
                }),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        best
    }

    /// The keys the file itself sets in the table at `path` (not those a
    /// program fills in later).
    pub fn keys_in(&self, path: &KeyPath) -> BTreeSet<String> {
        let Some(doc) = &self.doc else {
            return BTreeSet::new();
        };
        let mut node = Node::Item(doc.as_item());
        for seg in &path.0 {
            let next = match (seg, node.table()) {
                (Seg::Key(k), Some(t)) => t.get(k).map(Node::Item),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => return BTreeSet::new(),
            }
        }
        node.table()
            .map(|t| t.iter().map(|(k, _)| k.to_string()).collect())
            .unwrap_or_default()
    }

    /// The deepest key whose key or value span holds `offset`.
    fn key_at(&self, offset: usize) -> Option<KeyPath> {
        fn find(node: Node<'_>, offset: usize, path: &mut KeyPath) -> bool {
            let holds = |s: Option<Range<usize>>| s.is_some_and(|s| s.contains(&offset));
            if let Some(t) = node.table() {
                for (name, _) in t.iter() {
                    let Some((key, item)) = t.get_key_value(name) else {
                        continue;
                    };
                    path.0.push(Seg::Key(name.to_string()));
                    let child = Node::Item(item);
                    if find(child, offset, path) || holds(key.span()) || holds(child.span()) {
                        return true;
                    }
                    path.0.pop();
                }
            } else if let Some(a) = node.array() {
                for (i, v) in a.iter().enumerate() {
                    path.0.push(Seg::Index(i));
                    if find(Node::Value(v), offset, path) || holds(v.span()) {
                        return true;
                    }
                    path.0.pop();
                }
            }
            false
        }
        let mut path = KeyPath::root();
        find(Node::Item(self.doc.as_ref()?.as_item()), offset, &mut path).then_some(path)
    }
}
