//! What image scanners read, as the image's own files (nothing executable): one dpkg record per
//! Debian package of the image in `/var/lib/dpkg/status.d/<package>` (the distroless convention),
//! the package's copyright file, and the distribution's `/etc/os-release`. One layer of its own,
//! under the image's other layers; a path the image already has is left to its owner.

use std::collections::{BTreeMap, BTreeSet};

use crate::build::plan::{dir_mode, Content, Entry, LayerPlan, Plan};

use super::Inventory;

/// The layer, or `None` when there is nothing to say (no Debian package, no os-release).
pub fn layer(inv: &Inventory, plan: &Plan) -> Option<LayerPlan> {
    let taken: BTreeSet<&str> = plan
        .layers
        .iter()
        .chain(plan.debug_layer.iter())
        .flat_map(|l| l.entries.iter())
        .filter(|e| e.content != Content::Dir)
        .map(|e| e.path.as_str())
        .collect();
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    let mut put = |path: String, content: Content| {
        if taken.contains(path.as_str()) {
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
    let debs: Vec<_> = inv.debs.iter().filter(|d| !d.debug_only).collect();
    for d in &debs {
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
    (!entries.is_empty()).then(|| LayerPlan {
        role: "packages".into(),
        entries: entries.into_values().collect(),
    })
}
