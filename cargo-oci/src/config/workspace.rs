//! What a workspace adds to a package's image settings: the `[workspace.metadata.oci]` defaults,
//! where each value was written (for errors), the `CARGO_OCI_REPOSITORY` prefix, and the build
//! keys that span packages (`profile`, `extra-bins`).

use std::path::{Path, PathBuf};

use cargo_metadata::{Metadata, Package};

use crate::config::raw::RawOci;
use crate::config::spec::BuildSpec;
use crate::config::validate::{invalid, Invalid};
use crate::oci::reference::ImageName;
use crate::util::error::UsageError;

/// `[workspace.metadata.oci]`, parsed (empty when absent).
pub fn workspace_defaults(meta: &Metadata) -> Result<RawOci, UsageError> {
    let ws_manifest = meta.workspace_root.join("Cargo.toml");
    match meta.workspace_metadata.get("oci") {
        Some(v) => RawOci::parse(v, "workspace.metadata.oci", ws_manifest.as_std_path()),
        None => Ok(RawOci::default()),
    }
}

/// Where each key's value comes from: the package's table, else the workspace's. Errors about a
/// value name the file and table it was written in.
pub(crate) struct Origin<'a> {
    pub manifest: &'a Path,
    pub ws_manifest: PathBuf,
    pub own: Option<&'a serde_json::Value>,
    pub workspace: Option<&'a serde_json::Value>,
}

impl Origin<'_> {
    /// The top-level keys whose value comes from the workspace's table.
    pub fn keys_from_workspace(&self) -> Vec<String> {
        let Some(serde_json::Value::Object(ws)) = self.workspace else {
            return Vec::new();
        };
        ws.keys()
            .filter(|k| self.own.and_then(|o| o.get(k.as_str())).is_none())
            .cloned()
            .collect()
    }

    /// `FILE: `TABLE.KEY``: where `key` (`files[0]`, `debug.inputs`, ...) was written.
    pub fn place(&self, key: &str) -> String {
        BuildSpec {
            manifest_path: self.manifest.to_path_buf(),
            workspace_manifests: vec![self.ws_manifest.clone()],
            keys_from_workspace: self.keys_from_workspace(),
            ..BuildSpec::default()
        }
        .key_place(key)
    }

    pub fn error(&self, key: &str, bad: Invalid) -> UsageError {
        UsageError::new(format!("{}: {}", self.place(key), bad.msg)).hint(bad.help)
    }
}

/// `CARGO_OCI_REPOSITORY` in front of the last part of the configured name:
/// `registry.example.com/team` and `ghcr.io/me/billing` give `registry.example.com/team/billing`.
pub(crate) fn prefixed_name(repo: &str, name: &str) -> Result<ImageName, UsageError> {
    let fail = |m: String| {
        UsageError::new(format!("CARGO_OCI_REPOSITORY=`{repo}`: {m}"))
            .hint("set it to a registry and path without a tag, such as registry.example.com/team")
    };
    ImageName::parse(repo).map_err(fail)?;
    let last = name.rsplit('/').next().unwrap_or(name);
    ImageName::parse(&format!("{}/{last}", repo.trim_end_matches('/'))).map_err(fail)
}

/// `extra-bins`: other binaries of the package, each once, not the service itself.
pub(crate) fn extra_bins(
    raw: &RawOci,
    package: &Package,
    service: &str,
) -> Result<Vec<String>, Invalid> {
    let have: Vec<&str> = package
        .targets
        .iter()
        .filter(|t| t.kind.contains(&cargo_metadata::TargetKind::Bin))
        .map(|t| t.name.as_str())
        .collect();
    let mut out: Vec<String> = Vec::new();
    for b in raw.extra_bins.iter().flatten() {
        if !have.contains(&b.as_str()) {
            return Err(invalid(
                format!(
                    "package `{}` has no binary named `{b}` (it has: {})",
                    package.name,
                    have.join(", ")
                ),
                "name [[bin]] targets of the package",
            ));
        }
        if b != service && !out.contains(b) {
            out.push(b.clone());
        }
    }
    Ok(out)
}
