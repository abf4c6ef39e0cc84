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
    pub package: Option<String>,
    pub bin: Option<String>,
    pub manifest_path: Option<PathBuf>,
    /// Extra tags from `--tag`.
    pub tags: Vec<String>,
}

/// Loads `cargo metadata` for the selection, using the user's cargo.
pub fn cargo_metadata(sel: &Selection) -> anyhow::Result<Metadata> {
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

/// Picks the package the image is built from.
pub fn select_package<'a>(meta: &'a Metadata, sel: &Selection) -> Result<&'a Package, UsageError> {
    let members = meta.workspace_packages();
    if let Some(name) = &sel.package {
        return members
            .into_iter()
            .find(|p| p.name.as_str() == name)
            .ok_or_else(|| {
                UsageError::new(format!(
                    "package `{name}` is not a member of the workspace at {}",
                    meta.workspace_root
                ))
                .hint("pass the name of a workspace member with -p")
            });
    }
    if let Some(p) = meta.root_package() {
        return Ok(p);
    }
    if members.len() == 1 {
        return Ok(members[0]);
    }
    let names: Vec<&str> = members.iter().map(|p| p.name.as_str()).collect();
    Err(UsageError::new(format!(
        "{} is a virtual workspace with several packages ({})",
        meta.workspace_root.join("Cargo.toml"),
        names.join(", ")
    ))
    .hint("choose one with -p NAME, or run from the package's directory"))
}

/// The image name of a package whose metadata names none: `localhost/<package>` (lowercase), a
/// local name that no push sends to a public registry by accident. `cargo oci init` leaves the
/// name to this default.
pub fn default_name(package: &str) -> String {
    format!("localhost/{}", package.to_ascii_lowercase())
}

/// The binary of `package` the image carries: `wanted` (from `--bin` when `manifest` is `None`,
/// else from the metadata of `manifest`), else `default-run`, else the only binary.
pub(crate) fn choose_bin(
    package: &Package,
    wanted: Option<&str>,
    manifest: Option<&Path>,
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
        let place = match manifest {
            Some(m) => format!("{}: `package.metadata.oci.bin`", m.display()),
            None => "--bin".to_string(),
        };
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
        .hint("set `bin = \"NAME\"` in [package.metadata.oci], or pass --bin NAME")),
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
    if let Some(dir) = p.manifest_path.parent() {
        put("revision", git_clean_head(dir.as_std_path()));
    }
    l
}

const GIT_REVISION: &str = "git revision";

/// Starts finding the `revision` label of a package in `dir` in the background.
pub fn prefetch_revision(dir: &Path) {
    crate::util::prefetch::start(GIT_REVISION, dir, run_git_clean_head);
}

/// The commit of HEAD when the work tree holding `dir` is clean; nothing otherwise.
fn git_clean_head(dir: &Path) -> Option<String> {
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
    let status = git(&["status", "--porcelain", "--untracked-files=no"])?;
    if !status.is_empty() {
        return None;
    }
    git(&["rev-parse", "HEAD"]).filter(|h| h.len() >= 40)
}
