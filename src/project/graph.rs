//! The dependency graph of a project's processes: cycles, and the order
//! to start (dependencies first) or stop (dependents first) a set of them.
//! Deterministic: ties go by name. Works on names only.

use std::collections::{BTreeMap, BTreeSet};

/// Each process's dependencies; every name in a list is a key.
pub type Deps = BTreeMap<String, BTreeSet<String>>;

/// A cycle as the path that closes it (`["api", "worker", "api"]`), the
/// first one a depth-first walk in name order meets.
pub fn find_cycle(deps: &Deps) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit<'a>(
        name: &'a str,
        deps: &'a Deps,
        marks: &mut BTreeMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match marks.get(name) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let from = stack.iter().position(|n| *n == name).unwrap_or(0);
                let mut cycle: Vec<String> = stack[from..].iter().map(|s| s.to_string()).collect();
                cycle.push(name.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(name, Mark::Open);
        stack.push(name);
        for d in deps.get(name).into_iter().flatten() {
            if let Some(c) = visit(d, deps, marks, stack) {
                return Some(c);
            }
        }
        stack.pop();
        marks.insert(name, Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    deps.keys()
        .find_map(|n| visit(n, deps, &mut marks, &mut Vec::new()))
}

/// `roots` and everything they depend on, dependencies first. An empty
/// `roots` means every process. The graph must be acyclic.
pub fn start_order(deps: &Deps, roots: &BTreeSet<String>) -> Vec<String> {
    let set = closure(deps, roots);
    topological(deps, &set)
}

/// `roots` and everything that depends on them, dependents first. An
/// empty `roots` means every process.
pub fn stop_order(deps: &Deps, roots: &BTreeSet<String>) -> Vec<String> {
    let mut dependents: Deps = deps.keys().map(|k| (k.clone(), BTreeSet::new())).collect();
    for (name, ds) in deps {
        for d in ds {
            dependents
                .entry(d.clone())
                .or_default()
                .insert(name.clone());
        }
    }
    let set = closure(&dependents, roots);
    let mut order = topological(deps, &set);
    order.reverse();
    order
}

/// `roots` and every name reachable from them through `edges`.
fn closure(edges: &Deps, roots: &BTreeSet<String>) -> BTreeSet<String> {
    if roots.is_empty() {
        return edges.keys().cloned().collect();
    }
    let mut seen = BTreeSet::new();
    let mut todo: Vec<&String> = roots.iter().collect();
    while let Some(n) = todo.pop() {
        if seen.insert(n.clone()) {
            todo.extend(edges.get(n).into_iter().flatten());
        }
    }
    seen
}

/// Kahn's algorithm over `set`, always taking the smallest ready name.
fn topological(deps: &Deps, set: &BTreeSet<String>) -> Vec<String> {
    let within = |n: &String| {
        deps.get(n)
            .into_iter()
            .flatten()
            .filter(|d| set.contains(*d))
    };
    let mut waiting: BTreeMap<&String, usize> =
        set.iter().map(|n| (n, within(n).count())).collect();
    let mut ready: BTreeSet<&String> = waiting
        .iter()
        .filter(|(_, c)| **c == 0)
        .map(|(n, _)| *n)
        .collect();
    let mut order = Vec::with_capacity(set.len());
    while let Some(n) = ready.pop_first() {
        order.push(n.clone());
        for m in set {
            if deps.get(m).is_some_and(|ds| ds.contains(n)) {
                if let Some(c) = waiting.get_mut(m) {
                    *c -= 1;
                    if *c == 0 {
                        ready.insert(m);
                    }
                }
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> Deps {
        edges
            .iter()
            .map(|(n, ds)| (n.to_string(), ds.iter().map(|d| d.to_string()).collect()))
            .collect()
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn orders_dependencies_first_ties_by_name() {
        let g = graph(&[
            ("web", &["api"]),
            ("api", &["db", "cache"]),
            ("db", &[]),
            ("cache", &[]),
            ("lone", &[]),
        ]);
        assert_eq!(
            start_order(&g, &set(&[])),
            ["cache", "db", "api", "lone", "web"]
        );
        assert_eq!(start_order(&g, &set(&["api"])), ["cache", "db", "api"]);
        assert_eq!(stop_order(&g, &set(&["db"])), ["web", "api", "db"]);
        assert_eq!(
            stop_order(&g, &set(&[])),
            ["web", "lone", "api", "db", "cache"]
        );
        assert_eq!(find_cycle(&g), None);
    }

    #[test]
    fn cycles_are_named_from_their_first_member() {
        let g = graph(&[
            ("api", &["worker"]),
            ("worker", &["db", "api"]),
            ("db", &[]),
        ]);
        assert_eq!(find_cycle(&g).unwrap(), ["api", "worker", "api"]);
        let own = graph(&[("a", &[]), ("b", &["b"])]);
        assert_eq!(find_cycle(&own).unwrap(), ["b", "b"]);
    }
}
