//! The run lifecycle has one owner, checked from the sources: only `process::run::Run`
//! (daq/src/process/run/mod.rs) numbers a run directory (`RunDir::allocate`), sets a
//! manifest's state (`.state = ...`, `state: RunState::...`) or moves the live statistics'
//! state (`set_state(`, defined in observe/live_stats.rs). A command or the live loop that
//! moved a state itself would let the dashboard and the manifest disagree; this fails then.

use std::path::{Path, PathBuf};

/// The one module that moves run states.
const OWNER: &str = "process/run/mod.rs";
/// Where `LiveStats::set_state` is defined (its definition is allowed there, no call).
const STATS_DEFINITION: &str = "observe/live_stats.rs";

use super::architecture::rust_files;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// True when `line` assigns to a field named `field` (`x.field = ...`, not `==`).
fn assigns(line: &str, field: &str) -> bool {
    let pattern = format!(".{field}");
    line.match_indices(&pattern).any(|(i, _)| {
        let rest = &line[i + pattern.len()..];
        let next_is_ident = rest
            .chars()
            .next()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        let rest = rest.trim_start();
        !next_is_ident && rest.starts_with('=') && !rest.starts_with("==")
    })
}

/// The lines of `text` (1-based numbers, `//` comments left out) that move a run's state or
/// number a run directory.
fn state_moves(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.find("//").map_or(l, |c| &l[..c])))
        .filter(|(_, l)| {
            assigns(l, "state")
                || l.contains("state: RunState::")
                || l.contains("set_state(")
                || l.contains("RunDir::allocate")
                || l.contains("insert(\"state\"")
        })
        .map(|(n, l)| (n, l.trim().to_string()))
        .collect()
}

/// The state moves of daq/src outside the Run module, as `FILE:LINE: code`.
fn moves_outside_run() -> Vec<String> {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut found = Vec::new();
    for file in files {
        let rel = file
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if rel == OWNER {
            continue;
        }
        for (n, line) in state_moves(&std::fs::read_to_string(&file).unwrap()) {
            if rel == STATS_DEFINITION && line.contains("fn set_state(") {
                continue;
            }
            found.push(format!("daq/src/{rel}:{n}: {line}"));
        }
    }
    found
}

#[test]
fn only_the_run_type_moves_run_states() {
    let found = moves_outside_run();
    assert!(
        found.is_empty(),
        "run states moved outside {OWNER} (use the methods of process::run::Run):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_run_module_is_where_states_move() {
    // The check above must look at the right file: the owner moves every state.
    let text = std::fs::read_to_string(src().join(OWNER)).unwrap();
    let moves = state_moves(&text);
    for needle in [
        "RunDir::allocate",
        "state: RunState::Configured",
        "RunState::Running",
        "RunState::Failed",
        "set_state(",
        "insert(\"state\"",
    ] {
        assert!(
            moves.iter().any(|(_, l)| l.contains(needle)),
            "{OWNER} no longer has `{needle}`: {moves:?}"
        );
    }
}

#[test]
fn the_checker_sees_a_bypass() {
    // A made-up command that moves states itself, and code that only reads or compares them.
    let bypass = "let mut m = open();\n\
                  m.state = RunState::Running; // said running\n\
                  stats.set_state(RunState::Failed);\n\
                  let m = Manifest { state: RunState::Stopped, ..m };\n\
                  let dir = RunDir::allocate(out)?;\n\
                  obj.insert(\"state\".into(), \"recovered\".into());\n";
    let lines: Vec<usize> = state_moves(bypass).into_iter().map(|(n, _)| n).collect();
    assert_eq!(lines, vec![2, 3, 4, 5, 6]);
    let innocent = "if m.state == RunState::Running {}\n\
                    let s = self.state.load(Ordering::Relaxed);\n\
                    m.states = vec![];\n\
                    // m.state = RunState::Running in a comment\n\
                    let x = m.state;\n";
    assert_eq!(state_moves(innocent), vec![]);
}
