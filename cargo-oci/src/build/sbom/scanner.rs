//! What image scanners read, as the image's own files (nothing executable): one dpkg record per
//! Debian package of the image in `/var/lib/dpkg/status.d/<package>` (the distroless convention),
//! the package's copyright file, and the distribution's `/etc/os-release`. One layer of its own,
//! under the image's other layers; a path the image already has is left to its owner. The
//! packages only the debug variant carries (its tools) get theirs in the debug variant's layer.

use std::collections::{BTreeMap, BTreeSet};

use crate::build::plan::{dir_mode, Content, Entry, LayerPlan, Plan};

use super::{DebUse, Inventory};

/// The layer, or `None` when there is nothing to say (no Debian package, no os-release).
pub fn layer(inv: &Inventory, plan: &Plan) -> Option<LayerPlan> {
    let debs: Vec<&DebUse> = inv.debs.iter().filter(|d| !d.debug_only).collect();
    let entries = entries(inv, &debs, &taken(plan));
    (!entries.is_empty()).then(|| LayerPlan {
        role: "packages".into(),
        entries: entries.into_values().collect(),
    })
}

/// Adds to the debug variant's layer the records of the packages only it carries (its tools and
/// their libraries), and os-release when the image has none, as [`layer`] does for the image.
pub fn add_debug_records(inv: &Inventory, plan: &mut Plan) {
    let debs: Vec<&DebUse> = inv.debs.iter().filter(|d| d.debug_only).collect();
    if debs.is_empty() || plan.debug_layer.is_none() {
        return;
    }
    let extra = entries(inv, &debs, &taken(plan));
    if let Some(layer) = plan.debug_layer.as_mut() {
        let mut all: BTreeMap<String, Entry> = std::mem::take(&mut layer.entries)
            .into_iter()
            .map(|e| (e.path.clone(), e))
            .collect();
        for (path, e) in extra {
            all.entry(path).or_insert(e);
        }
        // Byte order of the path: every parent before its children.
        layer.entries = all.into_values().collect();
    }
}

/// Every path of the plan that is not a directory.
fn taken(plan: &Plan) -> BTreeSet<String> {
    plan.layers
        .iter()
        .chain(plan.debug_layer.iter())
        .flat_map(|l| l.entries.iter())
        .filter(|e| e.content != Content::Dir)
        .map(|e| e.path.clone())
        .collect()
}

/// The record and copyright file of each of `debs`, and os-release, with their directories;
/// none of the `taken` paths.
fn entries(inv: &Inventory, debs: &[&DebUse], taken: &BTreeSet<String>) -> BTreeMap<String, Entry> {
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    let mut put = |path: String, content: Content| {
        if taken.contains(&path) {
            return;
        }
        let mut p = path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            entries.entry(parent.to_string()).or_insert_with(|| Entry {
                path: parent.to_string(),
                content: Content::Dir,
                mode: dir_mode(parent),
                uid: 0,
                gid: 0,
            });
            p = parent;
        }
        entries.insert(
            path.clone(),
            Entry {
                path,
                content,
                mode: 0o444,
                uid: 0,
                gid: 0,
            },
        );
    };
    for d in debs {
        let p = &d.package;
        put(
            format!("var/lib/dpkg/status.d/{}", p.name),
            Content::Bytes(p.record.clone().into_bytes()),
        );
        if let Some(c) = &p.copyright {
            put(
                format!("usr/share/doc/{}/copyright", p.name),
                Content::File(c.clone()),
            );
        }
    }
    if let Some(d) = inv.distro.as_ref().filter(|_| !debs.is_empty()) {
        put(
            "etc/os-release".into(),
            Content::Bytes(d.text.clone().into_bytes()),
        );
    }
    entries
}
