//! Which package of the workspace the image is built from, and what Cargo says about it: the
//! `cargo metadata` run, the binary to package, the labels Cargo's fields give.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cargo_metadata::{Metadata, Package, TargetKind};

use crate::util::error::UsageError;

/// Labels without a `.` in their key get this prefix.
pub const LABEL_PREFIX: &str = "org.opencontainers.image.";

/// What the user selected on the command line that changes how the spec is read.
#[derive(Debug, Default, Clone)]
pub struct Selection {
    /// `-p SPEC`, repeatable: cargo's package ID specifications (`name`, `name@1.2.0`, a URL
    /// with a `#` fragment, or a glob such as `svc-*`).
    pub packages: Vec<String>,
    /// `--workspace`: every member that asks for an image.
    pub workspace: bool,
    /// `--exclude SPEC` (with `--workspace`).
    pub exclude: Vec<String>,
    pub bin: Option<String>,
    pub manifest_path: Option<PathBuf>,
    /// Extra tags from `--tag`.
    pub tags: Vec<String>,
}

/// Loads `cargo metadata` for the selection, using the user's cargo, or the list recorded by
/// an earlier run while everything cargo read for it is unchanged (`package_list`).
pub fn cargo_metadata(sel: &Selection) -> anyhow::Result<Metadata> {
    super::package_list::cached(sel.manifest_path.as_deref(), || run_cargo_metadata(sel))
}

fn run_cargo_metadata(sel: &Selection) -> anyhow::Result<Metadata> {
    let mut cmd = cargo_metadata::MetadataCommand::new();
    cmd.no_deps();
    if let Some(p) = &sel.manifest_path {
        cmd.manifest_path(p);
    }
    cmd.exec().map_err(|e| match e {
        cargo_metadata::Error::CargoMetadata { stderr } => anyhow::Error::new(
            UsageError::new(format!("cargo metadata failed:\n{}", stderr.trim_end()))
                .hint("fix what cargo reports above: `cargo metadata` must read the manifest"),
        ),
        other => anyhow::Error::new(other).context("could not run `cargo metadata`"),
    })
}

/// The manifest cargo reads, as cargo finds it: `--manifest-path`, else the first `Cargo.toml`
/// of the current directory or one of its parents.
fn current_manifest(sel: &Selection) -> Option<PathBuf> {
    let found = match &sel.manifest_path {
        Some(m) => Some(m.clone()),
        None => {
            let cwd = std::env::current_dir().ok()?;
            cwd.ancestors()
                .map(|d| d.join("Cargo.toml"))
                .find(|m| m.is_file())
        }
    }?;
    Some(found.canonicalize().unwrap_or(found))
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b
        || a.canonicalize()
            .ok()
            .is_some_and(|a| Some(a) == b.canonicalize().ok())
}

/// Picks the packages images are built from, as cargo picks what it builds: `--workspace`
/// (every member that asks for an image: with `[package.metadata.oci]`, or with a binary when
/// the workspace sets `all-binaries = true`) minus `--exclude`; else each `-p` spec; else, at the
/// workspace root, cargo's default members (`default-members`, else every member of a virtual
/// workspace or the root package), of several those that ask for an image; else the package of
/// the manifest cargo reads (the current directory's, or `--manifest-path`). Members in
/// workspace order, each once.
pub fn select_packages<'a>(
    meta: &'a Metadata,
    sel: &Selection,
    all_binaries: bool,
) -> Result<Vec<&'a Package>, UsageError> {
    let members = meta.workspace_packages();
    let names = || {
        members
            .iter()
            .map(|p| format!("{}@{}", p.name, p.version))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let matching = |spec: &str, flag: &str| -> Result<Vec<&'a Package>, UsageError> {
        let found: Vec<&Package> = members
            .iter()
            .copied()
            .filter(|p| spec_matches(spec, p))
            .collect();
        if found.is_empty() {
            return Err(UsageError::new(format!(
                "{flag} `{spec}` matches no package of the workspace at {} (members: {})",
                meta.workspace_root,
                names()
            ))
            .hint(format!(
                "pass a member's name, `name@version` or a glob such as `svc-*` to {flag} (see `cargo help pkgid`)"
            )));
        }
        Ok(found)
    };
    let asks_for_image = |p: &&Package| {
        p.metadata.get("oci").is_some()
            || (all_binaries && p.targets.iter().any(|t| t.kind.contains(&TargetKind::Bin)))
    };
    if sel.workspace {
        let excluded = sel
            .exclude
            .iter()
            .map(|s| matching(s, "--exclude"))
            .collect::<Result<Vec<_>, _>>()?
            .concat();
        let chosen: Vec<&Package> = members
            .iter()
            .copied()
            .filter(|p| !excluded.iter().any(|e| e.id == p.id))
            .filter(asks_for_image)
            .collect();
        if chosen.is_empty() {
            return Err(UsageError::new(format!(
                "--workspace: no member of the workspace at {} asks for an image (members: {})",
                meta.workspace_root,
                names()
            ))
            .hint("add [package.metadata.oci] to the service packages, or set `all-binaries = true` in [workspace.metadata.oci]"));
        }
        return Ok(chosen);
    }
    if !sel.packages.is_empty() {
        let mut chosen: Vec<&Package> = Vec::new();
        for spec in &sel.packages {
            for p in matching(spec, "-p")? {
                if !chosen.iter().any(|c| c.id == p.id) {
                    chosen.push(p);
                }
            }
        }
        chosen.sort_by_key(|p| members.iter().position(|m| m.id == p.id));
        return Ok(chosen);
    }
    if let Some(manifest) = current_manifest(sel) {
        let root = meta.workspace_root.join("Cargo.toml");
        if same_file(root.as_std_path(), &manifest) && meta.workspace_default_members.is_available()
        {
            return default_members(meta, sel.bin.as_deref(), asks_for_image);
        }
        if let Some(p) = members
            .iter()
            .find(|p| same_file(p.manifest_path.as_std_path(), &manifest))
        {
            return Ok(vec![p]);
        }
    }
    if members.len() == 1 {
        return Ok(vec![members[0]]);
    }
    Err(UsageError::new(format!(
        "{} is a virtual workspace with several packages ({})",
        meta.workspace_root.join("Cargo.toml"),
        names()
    ))
    .hint("choose with -p NAME (repeatable) or --workspace, or run from a package's directory"))
}

/// What `cargo build` builds at the workspace root with no package flags: the default members
/// (`default-members`, else every member of a virtual workspace, else the root package); of
/// several, those that ask for an image, as with `--workspace`, or with `--bin NAME` those that
/// have that binary.
fn default_members<'a>(
    meta: &'a Metadata,
    bin: Option<&str>,
    asks_for_image: impl Fn(&&'a Package) -> bool,
) -> Result<Vec<&'a Package>, UsageError> {
    let defaults = meta.workspace_default_packages();
    if defaults.len() <= 1 {
        return Ok(defaults);
    }
    if let Some(bin) = bin {
        let has_bin = |p: &&Package| {
            p.targets
                .iter()
                .any(|t| t.name == bin && t.kind.contains(&TargetKind::Bin))
        };
        let with: Vec<&Package> = defaults.iter().copied().filter(has_bin).collect();
        if !with.is_empty() {
            return Ok(with);
        }
        return Err(UsageError::new(format!(
            "--bin {bin}: no package `cargo build` builds at {} has a binary named `{bin}` ({})",
            meta.workspace_root,
            defaults
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .hint("name a binary of one of these packages, or choose the package with -p NAME"));
    }
    let names = defaults
        .iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let chosen: Vec<&Package> = defaults.into_iter().filter(asks_for_image).collect();
    if chosen.is_empty() {
        return Err(UsageError::new(format!(
            "{}: none of the packages `cargo build` builds here ({names}) asks for an image",
            meta.workspace_root.join("Cargo.toml")
        ))
        .hint(
            "choose with -p NAME, add [package.metadata.oci] to the service packages, or set \
             `all-binaries = true` in [workspace.metadata.oci]",
        ));
    }
    Ok(chosen)
}

/// Whether a package ID specification (`cargo help pkgid`) names `p`: `name`, `name@version`
/// (`name:version`), a partial version (`name@1`), a glob on the name (`svc-*`), or a URL
/// (`path+file:///dir#name@1.0.0`, `file:///dir`).
pub fn spec_matches(spec: &str, p: &Package) -> bool {
    let version_matches = |v: &str| {
        let have = p.version.to_string();
        have == v || have.starts_with(&format!("{v}."))
    };
    let name_version = |s: &str| match s.split_once(['@', ':']) {
        Some((n, v)) => glob_matches(n, &p.name) && version_matches(v),
        None => glob_matches(s, &p.name),
    };
    if !spec.contains("://") {
        return name_version(spec);
    }
    let id = p.id.repr.as_str();
    let (spec_url, fragment) = match spec.split_once('#') {
        Some((u, f)) => (u, Some(f)),
        None => (spec, None),
    };
    let id_url = id.split_once('#').map_or(id, |(u, _)| u);
    let strip = |u: &str| {
        let u = u
            .split_once('+')
            .filter(|(k, _)| !k.contains('/'))
            .map_or(u, |(_, r)| r);
        u.trim_end_matches('/').to_string()
    };
    if strip(spec_url) != strip(id_url) {
        return false;
    }
    match fragment {
        None => true,
        Some(f) if f.contains(['@', ':']) => name_version(f),
        // `#1.2.0` (a version) or `#name`
        Some(f) if f.starts_with(|c: char| c.is_ascii_digit()) => version_matches(f),
        Some(f) => glob_matches(f, &p.name),
    }
}

/// `*` and `?` globs on a package name, as `-p` takes them (linear backtracking: the last `*`
/// absorbs one more character on a mismatch).
pub(super) fn glob_matches(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

/// The image name of a package whose metadata names none: `localhost/<package>` (lowercase), a
/// local name that no push sends to a public registry by accident. `cargo oci init` leaves the
/// name to this default.
pub fn default_name(package: &str) -> String {
    format!("localhost/{}", package.to_ascii_lowercase())
}

/// The binary of `package` the image carries: `wanted` (from `--bin` when `place` is `None`,
/// else from the metadata key that `place` names: `FILE: `TABLE.bin``), else `default-run`,
/// else the only binary.
pub(crate) fn choose_bin(
    package: &Package,
    wanted: Option<&str>,
    place: Option<&str>,
) -> Result<String, UsageError> {
    let bins: Vec<&str> = package
        .targets
        .iter()
        .filter(|t| t.kind.contains(&TargetKind::Bin))
        .map(|t| t.name.as_str())
        .collect();
    if let Some(w) = wanted {
        if bins.contains(&w) {
            return Ok(w.to_string());
        }
        let place = place.unwrap_or("--bin");
        return Err(UsageError::new(format!(
            "{place}: package `{}` has no binary named `{w}` (it has: {})",
            package.name,
            if bins.is_empty() {
                "none".to_string()
            } else {
                bins.join(", ")
            }
        ))
        .hint("name one of the package's [[bin]] targets"));
    }
    let manifest = package.manifest_path.as_std_path();
    if let Some(d) = &package.default_run {
        return Ok(d.clone());
    }
    match bins.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(UsageError::new(format!(
            "{}: package `{}` has no binary target to put in an image",
            manifest.display(),
            package.name
        ))
        .hint("add src/main.rs or a [[bin]] target")),
        many => Err(UsageError::new(format!(
            "{}: package `{}` has several binaries ({}) and `package.metadata.oci.bin` is missing",
            manifest.display(),
            package.name,
            many.join(", ")
        ))
        .hint("set `bin = \"NAME\"` in [package.metadata.oci] (or `bins = [\"A\", \"B\"]` for one image each), or pass --bin NAME")),
    }
}

pub(crate) fn default_labels(p: &Package) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            l.insert(format!("{LABEL_PREFIX}{k}"), v);
        }
    };
    put("title", Some(p.name.to_string()));
    put("version", Some(p.version.to_string()));
    put("description", p.description.clone());
    put("licenses", p.license.clone());
    put("source", p.repository.clone());
    put("url", p.homepage.clone());
    l
}

/// The `revision` label's key.
pub const REVISION_LABEL: &str = "org.opencontainers.image.revision";

const GIT_REVISION: &str = "git revision";

/// Starts finding the `revision` label of a package in `dir` in the background.
pub fn prefetch_revision(dir: &Path) {
    crate::util::prefetch::start(GIT_REVISION, dir, run_git_clean_head);
}

/// The commit of HEAD when the work tree holding `dir` is clean; nothing otherwise (the
/// `revision` label).
pub fn git_clean_head(dir: &Path) -> Option<String> {
    crate::util::prefetch::once(GIT_REVISION, dir, run_git_clean_head)
}

fn run_git_clean_head(dir: &Path) -> Option<String> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    // One git run: the header names HEAD's commit (`# branch.oid`), every other line a change.
    let status = git(&[
        "status",
        "--porcelain=v2",
        "--branch",
        "--untracked-files=no",
    ])?;
    clean_head(&status)
}

/// HEAD's commit from `git status --porcelain=v2 --branch`, when nothing is changed.
fn clean_head(status: &str) -> Option<String> {
    let mut head = None;
    for line in status.lines() {
        match line.strip_prefix("# ") {
            Some(header) => {
                if let Some(oid) = header.strip_prefix("branch.oid ") {
                    head = Some(oid.trim().to_string());
                }
            }
            None => return None,
        }
    }
    head.filter(|h| h.len() >= 40 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revision_only_for_a_clean_tree_with_a_commit() {
        let oid = "07e1329f40ffa04e4408de7fd5dfd9fcc64dd56c";
        let header = format!("# branch.oid {oid}\n# branch.head main\n");
        assert_eq!(clean_head(&header).as_deref(), Some(oid));
        let changed = format!("{header}1 .M N... 100644 100644 100644 a b src/main.rs\n");
        assert_eq!(clean_head(&changed), None);
        assert_eq!(
            clean_head("# branch.oid (initial)\n# branch.head main\n"),
            None
        );
        assert_eq!(clean_head(""), None);
    }

    fn package(name: &str, version: &str, dir: &str) -> Package {
        serde_json::from_value(serde_json::json!({
            "name": name,
            "version": version,
            "id": format!("path+file://{dir}#{name}@{version}"),
            "dependencies": [],
            "targets": [],
            "features": {},
            "manifest_path": format!("{dir}/Cargo.toml"),
        }))
        .expect("a package")
    }

    #[test]
    fn package_specs_match_as_cargo_reads_them() {
        let p = package("billing", "1.2.0", "/ws/services/billing");
        for yes in [
            "billing",
            "billing@1.2.0",
            "billing@1.2",
            "billing@1",
            "billing:1.2.0",
            "bill*",
            "b?lling",
            "*",
            "path+file:///ws/services/billing#billing@1.2.0",
            "file:///ws/services/billing",
            "file:///ws/services/billing#1.2.0",
            "path+file:///ws/services/billing#billing",
        ] {
            assert!(spec_matches(yes, &p), "{yes}");
        }
        for no in [
            "bill",
            "billing@1.3.0",
            "billing@1.20",
            "gateway",
            "*x",
            "file:///ws/services/gateway",
            "path+file:///ws/services/billing#billing@2.0.0",
        ] {
            assert!(!spec_matches(no, &p), "{no}");
        }
    }

    #[test]
    fn globs_take_linear_time() {
        assert!(glob_matches("a*b*c", "axxbyyc"));
        assert!(!glob_matches("a*b*c", "axxbyy"));
        let long = "a".repeat(2000);
        assert!(!glob_matches(&format!("{}b", "*a".repeat(200)), &long));
    }
}
