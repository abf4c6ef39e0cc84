//! The crates compiled into the binary: cargo's resolve graph for the build's target and
//! features (`cargo metadata --filter-platform`), walked along normal dependencies only (build
//! and dev dependencies never reach the binary). A procedural macro and whatever only it needs
//! run at build time: they are kept, marked as build-time, since they shaped the code. Each
//! crate carries its source, its Cargo.lock checksum and its license as a valid SPDX expression.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cargo_metadata::{DependencyKind, Metadata, MetadataCommand, PackageId, TargetKind};
use serde::{Deserialize, Serialize};

use crate::build::cargo::CargoFlags;
use crate::config::ImageSpec;
use crate::util::error::UsageError;

/// Where a crate's source came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Source {
    /// A registry, by its index URL (crates.io's is `https://github.com/rust-lang/crates.io-index`).
    Registry(String),
    /// A git repository at a revision.
    Git { url: String, rev: String },
    /// A local path (the workspace's own packages).
    Path,
}

/// One crate of the binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Crate {
    pub name: String,
    pub version: String,
    pub source: Source,
    /// SHA-256 of the `.crate` file, from Cargo.lock (registry crates only).
    pub checksum: Option<String>,
    /// A valid SPDX license expression, normalised (`MIT/Apache-2.0` → `MIT OR Apache-2.0`).
    pub license: Option<String>,
    /// Only used while building (a procedural macro, or a crate only they depend on).
    pub build_time: bool,
    pub proc_macro: bool,
    /// Indexes (in the crate list) of its normal dependencies.
    pub deps: Vec<usize>,
}

/// The crates of the binary; the package itself first. `cache` (`target/oci/.cache`) keeps the
/// answer for the next run with the same inputs, and so does the per-machine cache, for a fresh
/// checkout at the same place (a new CI job).
pub fn resolve(
    spec: &ImageSpec,
    target: &str,
    flags: &CargoFlags,
    cache: &Path,
) -> Result<Vec<Crate>> {
    let machine = crate::util::fs::cache_dir().ok();
    let entries = |spec: &ImageSpec| {
        std::iter::once(cache.to_path_buf())
            .chain(machine.clone())
            .map(|dir| super::crate_cache::Entry::new(&dir, &spec.build, target, flags))
            .collect::<Vec<_>>()
    };
    let known = entries(spec);
    if let Some((i, crates)) = known
        .iter()
        .enumerate()
        .find_map(|(i, e)| Some((i, e.load()?)))
    {
        if i > 0 {
            known[0].copy_from(&known[i]);
        }
        return Ok(crates);
    }
    let (crates, local) = resolve_now(spec, target, flags)?;
    // Keyed by the inputs as cargo left them (it may just have written Cargo.lock).
    for entry in entries(spec) {
        entry.store(&crates, &local);
    }
    Ok(crates)
}

/// The crates, from `cargo metadata`, and the manifests of the local packages outside the
/// workspace that the graph may read.
fn resolve_now(
    spec: &ImageSpec,
    target: &str,
    flags: &CargoFlags,
) -> Result<(Vec<Crate>, Vec<PathBuf>)> {
    let package = spec.build.package.as_str();
    let mut cmd = MetadataCommand::new();
    cmd.manifest_path(&spec.build.manifest_path);
    let mut opts = vec!["--filter-platform".to_string(), target.to_string()];
    // The features cargo built with: the command line's and the metadata's `features`.
    let features: Vec<String> = flags
        .features
        .iter()
        .cloned()
        .chain(spec.build.features.iter().map(|f| format!("{package}/{f}")))
        .collect();
    if !features.is_empty() {
        opts.push("--features".into());
        opts.push(features.join(","));
    }
    for (on, flag) in [
        (flags.all_features, "--all-features"),
        (flags.no_default_features, "--no-default-features"),
        (flags.locked, "--locked"),
        (flags.frozen, "--frozen"),
        (flags.offline, "--offline"),
    ] {
        if on {
            opts.push(flag.into());
        }
    }
    cmd.other_options(opts);
    let meta = cmd.exec().map_err(|e| match e {
        cargo_metadata::Error::CargoMetadata { stderr } => anyhow::Error::new(
            UsageError::new(format!(
                "cargo metadata failed while listing the crates for the SBOM:\n{}",
                stderr.trim_end()
            ))
            .hint("fix what cargo reports above"),
        ),
        other => anyhow::Error::new(other).context("could not run `cargo metadata`"),
    })?;
    let checksums = lock_checksums(&meta.workspace_root.as_std_path().join("Cargo.lock"))?;
    let local = meta
        .packages
        .iter()
        .filter(|p| p.source.is_none())
        .map(|p| p.manifest_path.clone().into_std_path_buf())
        .filter(|m| !spec.build.workspace_manifests.contains(m))
        .collect();
    Ok((walk(&meta, package, &checksums)?, local))
}

/// The graph walk, from the package along normal edges.
fn walk(
    meta: &Metadata,
    package: &str,
    checksums: &HashMap<(String, String, String), String>,
) -> Result<Vec<Crate>> {
    let resolve = meta
        .resolve
        .as_ref()
        .context("cargo metadata gave no resolve graph")?;
    let root = meta
        .workspace_packages()
        .into_iter()
        .find(|p| p.name.as_str() == package)
        .with_context(|| format!("cargo metadata does not list the package `{package}`"))?
        .id
        .clone();
    let nodes: HashMap<&PackageId, _> = resolve.nodes.iter().map(|n| (&n.id, n)).collect();
    let packages: HashMap<&PackageId, _> = meta.packages.iter().map(|p| (&p.id, p)).collect();
    let is_macro = |id: &PackageId| {
        packages.get(id).is_some_and(|p| {
            p.targets
                .iter()
                .any(|t| t.kind.contains(&TargetKind::ProcMacro))
        })
    };
    // Breadth-first, twice over: every crate reached, and the ones reached at run time.
    let mut reached: BTreeMap<&PackageId, bool> = BTreeMap::new();
    let mut queue = VecDeque::from([(&root, true)]);
    let mut edges: BTreeSet<(&PackageId, &PackageId)> = BTreeSet::new();
    while let Some((id, runtime)) = queue.pop_front() {
        match reached.get(id) {
            Some(&seen) if seen || !runtime => continue,
            _ => {}
        }
        reached.insert(id, runtime);
        let Some(node) = nodes.get(id) else { continue };
        for dep in &node.deps {
            if !dep
                .dep_kinds
                .iter()
                .any(|k| k.kind == DependencyKind::Normal)
            {
                continue;
            }
            edges.insert((id, &dep.pkg));
            queue.push_back((&dep.pkg, runtime && !is_macro(&dep.pkg)));
        }
    }
    let mut order: Vec<&PackageId> = reached.keys().copied().filter(|i| **i != root).collect();
    order.sort_by_key(|i| {
        packages
            .get(i)
            .map(|p| (p.name.to_string(), p.version.to_string()))
    });
    order.insert(0, &root);
    let index: HashMap<&PackageId, usize> =
        order.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut out = Vec::new();
    for id in &order {
        let p = packages
            .get(id)
            .with_context(|| format!("cargo metadata does not describe {id}"))?;
        let source = match p.source.as_ref().map(|s| s.repr.as_str()) {
            None => Source::Path,
            Some(s) if s.starts_with("git+") => {
                let (url, rev) = s[4..].split_once('#').unwrap_or((&s[4..], ""));
                let url = url.split('?').next().unwrap_or(url).to_string();
                Source::Git {
                    url,
                    rev: rev.to_string(),
                }
            }
            Some(s) => Source::Registry(
                s.trim_start_matches("registry+")
                    .trim_start_matches("sparse+")
                    .to_string(),
            ),
        };
        let checksum = p.source.as_ref().and_then(|s| {
            checksums
                .get(&(p.name.to_string(), p.version.to_string(), s.repr.clone()))
                .cloned()
        });
        let mut deps: Vec<usize> = edges
            .iter()
            .filter(|(from, _)| from == id)
            .filter_map(|(_, to)| index.get(to).copied())
            .collect();
        deps.sort_unstable();
        deps.dedup();
        out.push(Crate {
            name: p.name.to_string(),
            version: p.version.to_string(),
            source,
            checksum,
            license: p.license.as_deref().and_then(normalise_license),
            build_time: !reached[id],
            proc_macro: is_macro(id),
            deps,
        });
    }
    Ok(out)
}

/// A license as a valid SPDX expression: old forms (`MIT/Apache-2.0`, `GPL-2.0`) rewritten to
/// their canonical spelling; `None` when it cannot be made one.
pub fn normalise_license(license: &str) -> Option<String> {
    let canonical = match spdx::Expression::canonicalize(license) {
        Ok(Some(c)) => c,
        Ok(None) => license.to_string(),
        Err(_) => return None,
    };
    spdx::Expression::parse(&canonical).ok().map(|_| canonical)
}

/// Cargo.lock's checksums by (name, version, source); empty when there is no lock file.
fn lock_checksums(lock: &Path) -> Result<HashMap<(String, String, String), String>> {
    let text = match std::fs::read_to_string(lock) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", lock.display())),
    };
    let doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("cannot parse {}", lock.display()))?;
    let mut out = HashMap::new();
    if let Some(pkgs) = doc.get("package").and_then(|p| p.as_array_of_tables()) {
        for p in pkgs {
            let get = |k: &str| p.get(k).and_then(|v| v.as_str()).map(str::to_string);
            if let (Some(n), Some(v), Some(s), Some(c)) =
                (get("name"), get("version"), get("source"), get("checksum"))
            {
                out.insert((n, v, s), c);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn licenses_become_valid_spdx_expressions() {
        assert_eq!(
            normalise_license("MIT/Apache-2.0").as_deref(),
            Some("MIT OR Apache-2.0")
        );
        assert_eq!(
            normalise_license("MIT OR Apache-2.0").as_deref(),
            Some("MIT OR Apache-2.0")
        );
        assert_eq!(
            normalise_license("Apache-2.0 WITH LLVM-exception OR Apache-2.0 OR MIT").as_deref(),
            Some("Apache-2.0 WITH LLVM-exception OR Apache-2.0 OR MIT")
        );
        assert_eq!(normalise_license("not a license at all"), None);
    }
}
