//! Fits a layer plan to a layer budget (`max-layers` less the base image's layers). With room to
//! spare, the largest libraries of the closure get layers of their own (a change to one of them
//! then changes only its layer, and registries share them across images); short of room, the
//! bottom layers (those that change least) are merged until the plan fits. Never over budget.

use std::collections::BTreeMap;

use crate::build::plan::{dir_mode, Content, Entry, LayerPlan};

/// The size of an entry's content, as far as the plan knows it.
fn size(e: &Entry) -> u64 {
    match &e.content {
        Content::File(p) => std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
        Content::Bytes(b) => b.len() as u64,
        _ => 0,
    }
}

/// `entries` with their parent directories, sorted, parents first.
fn with_parents(entries: Vec<Entry>, dirs: &BTreeMap<String, Entry>) -> Vec<Entry> {
    let mut tree: BTreeMap<String, Entry> = BTreeMap::new();
    for e in entries {
        let mut p = e.path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            tree.entry(parent.to_string()).or_insert_with(|| {
                dirs.get(parent).cloned().unwrap_or(Entry {
                    path: parent.to_string(),
                    content: Content::Dir,
                    mode: dir_mode(parent),
                    uid: 0,
                    gid: 0,
                })
            });
            p = parent;
        }
        tree.insert(e.path.clone(), e);
    }
    tree.into_values().collect()
}

/// Splits or merges `layers` so that there are at most `budget` of them (at least one).
pub fn fit(mut layers: Vec<LayerPlan>, budget: usize) -> Vec<LayerPlan> {
    let budget = budget.max(1);
    if layers.len() < budget {
        if let Some(i) = layers.iter().position(|l| l.role == "closure") {
            let spare = budget - layers.len();
            let closure = layers.remove(i);
            let split = split_closure(closure, spare);
            for (n, l) in split.into_iter().enumerate() {
                layers.insert(i + n, l);
            }
        }
    }
    while layers.len() > budget {
        let lower = layers.remove(0);
        let upper = layers.remove(0);
        let mut tree: BTreeMap<String, Entry> = BTreeMap::new();
        for e in lower.entries.into_iter().chain(upper.entries) {
            tree.insert(e.path.clone(), e);
        }
        layers.insert(
            0,
            LayerPlan {
                role: format!("{} + {}", lower.role, upper.role),
                entries: tree.into_values().collect(),
            },
        );
    }
    layers
}

/// The closure as up to `1 + spare` layers: the rest, then the largest files one per layer.
fn split_closure(closure: LayerPlan, spare: usize) -> Vec<LayerPlan> {
    let dirs: BTreeMap<String, Entry> = closure
        .entries
        .iter()
        .filter(|e| e.content == Content::Dir)
        .map(|e| (e.path.clone(), e.clone()))
        .collect();
    let mut files: Vec<(u64, Entry)> = closure
        .entries
        .iter()
        .filter(|e| e.content != Content::Dir)
        .map(|e| (size(e), e.clone()))
        .collect();
    let own = spare.min(files.len().saturating_sub(1));
    if own == 0 {
        return vec![closure];
    }
    // Largest first; equal sizes by path, so the split is the same on every machine.
    files.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.path.cmp(&b.1.path)));
    let rest: Vec<Entry> = files[own..].iter().map(|(_, e)| e.clone()).collect();
    let mut out = vec![LayerPlan {
        role: closure.role.clone(),
        entries: with_parents(rest, &dirs),
    }];
    for (_, e) in &files[..own] {
        let name = e.path.rsplit('/').next().unwrap_or(&e.path).to_string();
        out.push(LayerPlan {
            role: format!("closure: {name}"),
            entries: with_parents(vec![e.clone()], &dirs),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(role: &str, files: &[(&str, usize)]) -> LayerPlan {
        let entries = files
            .iter()
            .map(|(p, n)| Entry {
                path: p.to_string(),
                content: Content::Bytes(vec![0; *n]),
                mode: 0o444,
                uid: 0,
                gid: 0,
            })
            .collect();
        LayerPlan {
            role: role.into(),
            entries: with_parents(entries, &BTreeMap::new()),
        }
    }

    fn plan() -> Vec<LayerPlan> {
        vec![
            layer("base", &[("etc/passwd", 10)]),
            layer(
                "closure",
                &[("lib/a.so", 100), ("lib/b.so", 300), ("lib/c.so", 200)],
            ),
            layer("contracts", &[("bin/entrypoint", 50)]),
            layer("service", &[("bin/app", 1000)]),
        ]
    }

    fn paths(l: &LayerPlan) -> Vec<&str> {
        l.entries.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn room_splits_the_largest_libraries() {
        let l = fit(plan(), 100);
        assert_eq!(l.len(), 6);
        assert_eq!(paths(&l[1]), ["lib", "lib/a.so"]);
        assert_eq!(paths(&l[2]), ["lib", "lib/b.so"]);
        assert_eq!(paths(&l[3]), ["lib", "lib/c.so"]);
        let l = fit(plan(), 5);
        assert_eq!(l.len(), 5);
        assert_eq!(paths(&l[1]), ["lib", "lib/a.so", "lib/c.so"]);
        assert_eq!(l[2].role, "closure: b.so");
    }

    #[test]
    fn no_room_merges_from_the_bottom() {
        for budget in 1..=4 {
            let l = fit(plan(), budget);
            assert_eq!(l.len(), budget);
            let all: usize = l
                .iter()
                .map(|l| {
                    l.entries
                        .iter()
                        .filter(|e| e.content != Content::Dir)
                        .count()
                })
                .sum();
            assert_eq!(all, 6, "no file lost at budget {budget}");
            if budget > 1 {
                assert_eq!(l.last().unwrap().role, "service");
            }
        }
        assert_eq!(fit(plan(), 0).len(), 1);
    }
}
