//! The crate's parts depend on each other in one direction only (issue 14: `engine/`,
//! `models/` and `decisions/` used to import each other in a circle). This reads the sources,
//! builds the graph of `crate::` imports between top-level modules (non-test code) and checks
//! it has no circle and keeps the layering ARCHITECTURE.md draws.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reading src/") {
        let path = entry.expect("reading src/").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comment lines and without its unit-test module.
fn code(source: &str) -> String {
    let kept: Vec<&str> = source
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect();
    let code = kept.join("\n");
    // A test module may be shared with other modules' tests (`pub(crate) mod tests`).
    let at = [
        "#[cfg(test)]\nmod tests",
        "#[cfg(test)]\npub(crate) mod tests",
    ]
    .iter()
    .filter_map(|m| code.find(m))
    .min();
    match at {
        Some(at) => code[..at].to_owned(),
        None => code,
    }
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules a piece of code names through `crate::`.
fn imports(code: &str) -> BTreeSet<String> {
    names_after(code, "crate::")
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_owned();
        if module == "lib" {
            continue;
        }
        let source = std::fs::read_to_string(&file).unwrap();
        let deps = imports(&code(&source));
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(deps.into_iter().filter(|d| *d != module && d != "self"));
    }
    graph
}

/// The names a piece of code reaches through `prefix` (`super::` or `crate::models::`), the
/// first segment of each path, grouped imports included.
fn names_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        rest = &rest[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && (c.is_ascii_alphabetic() || c == '_') => {
                        out.insert(ident(&group[i..]).to_owned());
                        start = false;
                    }
                    _ => {}
                }
            }
        } else if !ident(rest).is_empty() {
            out.insert(ident(rest).to_owned());
        }
    }
    out
}

/// For each module with files of its own (`models/`, `engine/`, ...), the graph of imports
/// between its files (`super::sibling` or `crate::module::sibling`; the parent's own items
/// are not a sibling).
fn sibling_graphs() -> BTreeMap<String, Graph> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let parent = dir.file_name().unwrap().to_string_lossy().into_owned();
        let children: BTreeSet<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "rs"))
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .filter(|n| n != "mod")
            .collect();
        let mut graph = Graph::new();
        for child in &children {
            let source = std::fs::read_to_string(dir.join(format!("{child}.rs"))).unwrap();
            let code = code(&source);
            let mut names = names_after(&code, "super::");
            names.extend(names_after(&code, &format!("crate::{parent}::")));
            graph.insert(
                child.clone(),
                names
                    .into_iter()
                    .filter(|n| children.contains(n) && n != child)
                    .collect(),
            );
        }
        out.insert(parent, graph);
    }
    out
}

/// A circle in `graph`, if there is one, as the modules along it.
fn circle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        graph: &Graph,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node.to_owned());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(graph, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(graph, n, &mut Vec::new(), &mut done))
}

#[test]
fn the_parsing_finds_grouped_and_inline_imports() {
    let deps = imports(
        "use crate::{engine::Engine, models::{a, b}, time};\nlet x = crate::pipeline::f();",
    );
    let want: BTreeSet<String> = ["engine", "models", "time", "pipeline"]
        .map(String::from)
        .into();
    assert_eq!(deps, want);
    let g: Graph = [
        ("a".to_owned(), ["b".to_owned()].into()),
        ("b".to_owned(), ["a".to_owned()].into()),
    ]
    .into();
    assert_eq!(circle(&g).unwrap(), ["a", "b", "a"]);
}

#[test]
fn modules_import_each_other_in_one_direction() {
    let graph = graph();
    assert!(graph.len() > 10, "found too few modules: {graph:?}");
    if let Some(c) = circle(&graph) {
        panic!(
            "the modules import each other in a circle: {}",
            c.join(" → ")
        );
    }
}

#[test]
fn files_within_a_module_import_each_other_in_one_direction() {
    let graphs = sibling_graphs();
    for module in ["models", "engine", "pipeline", "decisions", "api"] {
        let graph = &graphs[module];
        assert!(
            graph.len() >= 2,
            "found too few files in {module}: {graph:?}"
        );
        if let Some(c) = circle(graph) {
            panic!(
                "{module}/ files import each other in a circle: {}",
                c.join(" → ")
            );
        }
    }
    // The registry is the one file that names every family.
    let models = &graphs["models"];
    for family in ["als", "knn", "ease", "bpr"] {
        assert!(
            models["registry"].contains(family),
            "{:?}",
            models["registry"]
        );
        assert!(
            !models[family].contains("registry"),
            "{family}: {:?}",
            models[family]
        );
    }
}

#[test]
fn the_layers_of_architecture_md_hold() {
    let graph = graph();
    // (module, what it must not import): the lower layers know nothing of those above them.
    let rules: &[(&str, &[&str])] = &[
        (
            "models",
            &["engine", "pipeline", "state", "decisions", "api"],
        ),
        ("state", &["engine", "pipeline", "decisions", "api"]),
        ("pipeline", &["engine", "decisions", "api"]),
        ("decisions", &["engine", "models", "state", "api"]),
        ("engine", &["api"]),
    ];
    for (module, forbidden) in rules {
        let deps = graph
            .get(*module)
            .unwrap_or_else(|| panic!("no module {module}"));
        for f in *forbidden {
            assert!(!deps.contains(*f), "{module} imports {f}: {deps:?}");
        }
    }
}
