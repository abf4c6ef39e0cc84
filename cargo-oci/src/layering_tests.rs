//! Checks the shape of the source tree that `ARCHITECTURE.md` describes: every module imports
//! only modules of its own layer or of lower ones, the module graph has no cycle, and no module
//! file carries more than a few pages of non-test code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Largest number of non-test lines in one module file.
const MAX_LINES: usize = 600;

/// The layers, bottom to top.
const LAYERS: &[&str] = &[
    "util", "oci", "registry", "source", "config", "build", "sink", "commands", "cli",
];

/// Every `.rs` file under `dir`, with its module path (`build::closure::elf`).
fn modules(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            let mut sub = prefix.to_vec();
            sub.push(name);
            modules(&p, &sub, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            let mut path = prefix.to_vec();
            if name != "mod" && name != "lib" && name != "main" {
                path.push(name);
            }
            out.insert(path.join("::"), p);
        }
    }
}

/// The code of a module file before its `#[cfg(test)]` part.
fn non_test(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    }
}

/// The modules a file names through `crate::…` paths (the longest prefix that is a module).
fn references(text: &str, known: &BTreeMap<String, PathBuf>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        if i > 0 && text[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &text[i + "crate::".len()..];
        let path: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
        for n in (1..=parts.len()).rev() {
            let m = parts[..n].join("::");
            if known.contains_key(&m) {
                out.insert(m);
                break;
            }
        }
    }
    out
}

fn layer_of(module: &str) -> Option<usize> {
    let top = module.split("::").next()?;
    LAYERS.iter().position(|l| *l == top)
}

fn tree() -> BTreeMap<String, PathBuf> {
    let mut known = BTreeMap::new();
    modules(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &[],
        &mut known,
    );
    known
}

#[test]
fn every_module_sits_in_a_layer_and_imports_only_downwards() {
    let known = tree();
    let mut wrong = Vec::new();
    for (module, path) in &known {
        if module.is_empty() || module == "layering_tests" {
            continue;
        }
        let Some(own) = layer_of(module) else {
            wrong.push(format!("{module} is in no layer"));
            continue;
        };
        let text = std::fs::read_to_string(path).unwrap();
        for r in references(non_test(&text), &known) {
            match layer_of(&r) {
                Some(l) if l <= own => {}
                _ => wrong.push(format!("{module} imports {r}, a higher layer")),
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn the_module_graph_has_no_cycle() {
    let known = tree();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, path) in &known {
        let text = std::fs::read_to_string(path).unwrap();
        let to = references(non_test(&text), &known)
            .into_iter()
            // A module and its own parent or children are one unit.
            .filter(|r| {
                r != module
                    && !module.starts_with(&format!("{r}::"))
                    && !r.starts_with(&format!("{module}::"))
            })
            .collect();
        edges.insert(module.clone(), to);
    }
    // Depth-first search for a back edge.
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(m) {
            Some(2) => return None,
            Some(1) => {
                let start = stack.iter().position(|s| s == m).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(m.to_string());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(m.to_string(), 1);
        stack.push(m.to_string());
        for n in edges.get(m).into_iter().flatten() {
            if let Some(c) = visit(n, edges, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in edges.keys() {
        let cycle = visit(m, &edges, &mut state, &mut Vec::new());
        assert!(
            cycle.is_none(),
            "import cycle: {}",
            cycle.unwrap().join(" -> ")
        );
    }
}

#[test]
fn module_files_stay_short() {
    let long: Vec<String> = tree()
        .values()
        // Test-only files hold fixtures, not code to find one's way in.
        .filter(|p| !p.ends_with("tests.rs"))
        .filter_map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            let n = non_test(&text).lines().count();
            (n > MAX_LINES).then(|| format!("{}: {n} lines", p.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "over {MAX_LINES} lines of non-test code: {long:#?}"
    );
}

#[test]
fn the_checks_see_imports() {
    let known: BTreeMap<String, PathBuf> = ["oci::store", "oci", "build::plan"]
        .iter()
        .map(|m| (m.to_string(), PathBuf::new()))
        .collect();
    let refs = references(
        "use crate::oci::store::{Blob, Store};\nlet x = crate::build::plan::plan(); my_crate::oci;",
        &known,
    );
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        ["build::plan", "oci::store"]
    );
}
