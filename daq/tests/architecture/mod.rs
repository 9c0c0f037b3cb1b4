//! The workspace's module structure, checked from the sources: no import circles between the
//! modules of any crate, and daq/'s layers (commands -> acquire -> process -> observe, see
//! daq/src/lib.rs and ARCHITECTURE.md) import only downwards.
//!
//! A module's references are the `crate::a::b` paths in its code (comments and `#[cfg(test)]`
//! modules left out), resolved to the longest module file that exists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Crates whose modules are checked for circles.
const CRATES: [&str; 6] = ["core", "decoders", "sinks", "daq", "tui", "fpga-sim"];

/// daq's layers, top first: a module may refer to its own layer and those after it.
const DAQ_LAYERS: [&str; 4] = ["commands", "acquire", "process", "observe"];

type ModulePath = Vec<String>;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `.rs` file under `dir` (shared with the run-lifecycle check).
pub(crate) fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` and `src/a/b/mod.rs` -> `[a, b]`; `lib.rs` and `main.rs` -> `[]`.
fn module_of(src: &Path, file: &Path) -> ModulePath {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: ModulePath = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The code of a file without `//` comments and without its `#[cfg(test)]` tail.
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::x::y...` path in `code`, as its segments.
fn crate_paths(code: &str) -> Vec<ModulePath> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `scandaq_crate::`
        }
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let path: ModulePath = rest[..end]
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        out.push(path);
    }
    out
}

/// Module -> the other modules of the same crate it refers to.
fn module_graph(krate: &str) -> BTreeMap<ModulePath, BTreeSet<ModulePath>> {
    let src = workspace().join(krate).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeMap<ModulePath, PathBuf> = files
        .iter()
        .map(|f| (module_of(&src, f), f.clone()))
        .collect();
    let mut graph = BTreeMap::new();
    for (module, file) in &modules {
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        let mut refs = BTreeSet::new();
        for path in crate_paths(&code) {
            let target = (1..=path.len())
                .rev()
                .map(|k| path[..k].to_vec())
                .find(|p| modules.contains_key(p));
            if let Some(target) = target
                && !module.starts_with(&target)
                && !target.starts_with(module)
            {
                refs.insert(target);
            }
        }
        graph.insert(module.clone(), refs);
    }
    graph
}

/// The module circles of `graph` (strongly connected components of more than one module).
fn circles(graph: &BTreeMap<ModulePath, BTreeSet<ModulePath>>) -> Vec<Vec<String>> {
    // Reachability by depth-first search from every module: small graphs, quadratic is fine.
    let reach = |from: &ModulePath| -> BTreeSet<ModulePath> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(m) = stack.pop() {
            for next in graph.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<_, _> = graph.keys().map(|m| (m.clone(), reach(m))).collect();
    let mut found = BTreeSet::new();
    for (m, r) in &reachable {
        if !r.contains(m) {
            continue;
        }
        let circle: Vec<String> = r
            .iter()
            .filter(|o| reachable[*o].contains(m))
            .map(|o| o.join("::"))
            .collect();
        found.insert(circle);
    }
    found.into_iter().collect()
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let mut all = Vec::new();
    for krate in CRATES {
        for circle in circles(&module_graph(krate)) {
            all.push(format!("{krate}: {}", circle.join(" <-> ")));
        }
    }
    assert!(all.is_empty(), "import circles:\n{}", all.join("\n"));
}

#[test]
fn daq_layers_import_only_downwards() {
    let graph = module_graph("daq");
    assert!(
        graph
            .keys()
            .any(|m| m.first().map(String::as_str) == Some("observe")),
        "daq/src/observe not found: the layer check would check nothing"
    );
    let rank = |m: &ModulePath| {
        m.first()
            .and_then(|top| DAQ_LAYERS.iter().position(|l| l == top))
    };
    let mut wrong = Vec::new();
    for (module, refs) in &graph {
        let Some(own) = rank(module) else { continue };
        for target in refs {
            if let Some(theirs) = rank(target)
                && theirs < own
            {
                wrong.push(format!("{} -> {}", module.join("::"), target.join("::")));
            }
        }
    }
    assert!(wrong.is_empty(), "upward imports:\n{}", wrong.join("\n"));
}

#[test]
fn the_checker_sees_a_circle_and_an_upward_import() {
    // The checks above must be able to fail: a made-up graph with both faults.
    let m = |s: &str| -> ModulePath { s.split("::").map(str::to_string).collect() };
    let mut graph = BTreeMap::new();
    graph.insert(m("a"), BTreeSet::from([m("b")]));
    graph.insert(m("b"), BTreeSet::from([m("a")]));
    graph.insert(m("c"), BTreeSet::new());
    assert_eq!(
        circles(&graph),
        vec![vec!["a".to_string(), "b".to_string()]]
    );
    let code = code_of("use crate::acquire::live::X; // crate::commands::demo\n");
    assert_eq!(crate_paths(&code), vec![m("acquire::live::X")]);
}

/// Longest function allowed in any crate's sources (issue 15: long run-path functions become
/// structs with small methods). Counted from the `fn` line to its closing brace.
const MAX_FUNCTION_LINES: usize = 120;

/// `line` without string and char literals and without a `//` comment, so braces can be counted.
fn braces_of(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                while let Some(s) = chars.next() {
                    match s {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            // A char literal ('{', '\n'); a lifetime ('a) has no closing quote two chars on.
            '\'' => {
                let rest: String = chars.clone().take(3).collect();
                if rest.starts_with('\\') {
                    chars.by_ref().take_while(|&q| q != '\'').for_each(drop);
                } else if rest.chars().nth(1) == Some('\'') {
                    chars.next();
                    chars.next();
                }
            }
            '/' if chars.peek() == Some(&'/') => break,
            '{' | '}' => out.push(c),
            _ => {}
        }
    }
    out
}

/// The name of the function a line declares, if it declares one.
fn declared_function(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace();
    let mut word = words.next()?;
    while matches!(word, "pub" | "async" | "const" | "unsafe" | "extern")
        || word.starts_with("pub(")
        || word.starts_with('"')
    {
        word = words.next()?;
    }
    if word != "fn" {
        return None;
    }
    let name = words.next()?;
    Some(name.split(['(', '<']).next().unwrap_or(name))
}

/// `(name, first line number, length in lines)` of every function with a body in `text`.
fn function_lengths(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let Some(name) = declared_function(line) else {
            continue;
        };
        let mut depth = 0i64;
        let mut opened = false;
        for (offset, body_line) in lines[start..].iter().enumerate() {
            let braces = braces_of(body_line);
            if !opened && braces.is_empty() && body_line.trim_end().ends_with(';') {
                break; // a declaration without a body (trait method)
            }
            for b in braces.chars() {
                depth += if b == '{' { 1 } else { -1 };
                opened = true;
            }
            if opened && depth == 0 {
                out.push((name.to_string(), start + 1, offset + 1));
                break;
            }
        }
    }
    out
}

#[test]
fn no_function_is_longer_than_120_lines() {
    let mut long = Vec::new();
    let mut counted = 0;
    for krate in CRATES {
        let src = workspace().join(krate).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            for (name, line, length) in function_lengths(code) {
                counted += 1;
                if length > MAX_FUNCTION_LINES {
                    let rel = file.strip_prefix(workspace()).unwrap_or(&file);
                    long.push(format!("{}:{line} {name}: {length} lines", rel.display()));
                }
            }
        }
    }
    assert!(
        counted > 500,
        "only {counted} functions found: the scan is broken"
    );
    assert!(
        long.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines (split them into a struct that owns the \
         state, with small methods):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_function_scan_measures_bodies_not_strings_or_declarations() {
    let text = "pub(crate) fn a(x: &str) -> char {\n    let s = \"}}{\";\n    if x.is_empty() { '}' } else { '{' }\n}\ntrait T {\n    fn b(&self);\n}\nfn c<'a>(v: &'a str) -> &'a str {\n    v // }\n}\n";
    assert_eq!(
        function_lengths(text),
        vec![("a".to_string(), 1, 4), ("c".to_string(), 8, 3)]
    );
}
