//! `cargo oci init`: adds a commented `[package.metadata.oci]` block to an existing package's
//! Cargo.toml. The block is appended as text, so every byte already in the file (comments,
//! formatting, key order) stays as it was; toml_edit parses the file before (to refuse a file
//! that is not a package manifest or already has the block) and after (to prove the result is
//! valid TOML holding the block) anything is written. The file is replaced atomically.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use toml_edit::DocumentMut;

use crate::util::error::UsageError;

/// What [`init`] did (or, with `dry_run`, would do).
#[derive(Debug, Clone)]
pub struct Initialized {
    pub manifest: PathBuf,
    pub package: String,
    /// The block appended.
    pub block: String,
    pub dry_run: bool,
}

/// The package's binaries as cargo sees them (`cargo metadata`, so that `src/bin/*.rs` count),
/// and its `default-run`; `None` when cargo cannot read the package (the block then names no
/// binary).
fn binaries(manifest: &Path) -> Option<(Vec<String>, Option<String>)> {
    let meta = crate::config::cargo_metadata(&crate::config::Selection {
        manifest_path: Some(manifest.to_path_buf()),
        ..Default::default()
    })
    .ok()?;
    let wanted = manifest.canonicalize().ok()?;
    let package = meta
        .packages
        .iter()
        .find(|p| p.manifest_path.as_std_path().canonicalize().ok() == Some(wanted.clone()))?;
    let bins = package
        .targets
        .iter()
        .filter(|t| t.kind.contains(&cargo_metadata::TargetKind::Bin))
        .map(|t| t.name.clone())
        .collect();
    Some((bins, package.default_run.clone()))
}

/// The `bin` line of the block: commented out when `cargo oci build` finds the binary by itself
/// (one binary, or `default-run`), else set to the package-named binary (or the first), with the
/// others listed. It never names a binary the package does not have.
fn bin_line(name: &str, bins: Option<&(Vec<String>, Option<String>)>) -> String {
    let pad = |line: String, comment: &str| format!("{line:<34}# {comment}");
    match bins {
        Some((_, Some(default_run))) => pad(
            format!("# bin = \"{default_run}\""),
            "which binary (default: default-run)",
        ),
        Some((bins, None)) if bins.len() > 1 => {
            let chosen = bins.iter().find(|b| *b == name).unwrap_or(&bins[0]).clone();
            pad(
                format!("bin = \"{chosen}\""),
                &format!("the package has several binaries: {}", bins.join(", ")),
            )
        }
        Some((bins, None)) if bins.len() == 1 => pad(
            format!("# bin = \"{}\"", bins[0]),
            "which binary (default: --bin or the only one)",
        ),
        _ => pad(
            "# bin = \"NAME\"".to_string(),
            "which binary (default: --bin, default-run or the only one)",
        ),
    }
}

/// The block added for package `name`; `bin` is the `bin` line ([`bin_line`]). The image name
/// is left to its default (the one `cargo oci build` uses without metadata), shown commented.
pub fn block(name: &str, bin: &str) -> String {
    let image = name.to_ascii_lowercase();
    let default = crate::config::default_name(name);
    format!(
        r#"
# How `cargo oci build` packages this crate into a container image. Every key is optional;
# the commented lines show more settings. Reference:
# https://github.com/cargo-oci/cargo-oci#metadata-reference
[package.metadata.oci]
# name = "ghcr.io/you/{image}"    # a registry path to push (default: {default})
tags = ["{{version}}", "latest"]  # {{version}} and {{package}} expand; see also content-tag
{bin}
# args = ["serve"]                # the image's Cmd, passed to the binary
# env = {{ RUST_LOG = "info" }}
# ports = ["8080/tcp"]
# user = 65534                    # uid the service runs as (default: nobody)
# volumes = ["/data"]             # directories owned by that user
# debug = true                    # also build <tag>-debug: a shell and tools in /bin/debug
# init = false                    # true: /bin/entrypoint forwards signals and reaps zombies
# stop-signal = "SIGINT"          # for services that stop on Ctrl-C only (default SIGTERM)
#
# Probes: /bin/live and /bin/ready in the image; one of http, tcp, exec or bin each.
# [package.metadata.oci.live]
# http = "http://127.0.0.1:${{PORT:-8080}}/healthz"
# [package.metadata.oci.ready]
# tcp = "127.0.0.1:8080"
"#
    )
}

/// The Cargo.toml to change: `manifest_path`, else `./Cargo.toml`.
pub fn manifest(manifest_path: Option<&Path>) -> Result<PathBuf, UsageError> {
    let p = manifest_path
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("Cargo.toml"));
    if !p.is_file() {
        let cwd = std::env::current_dir().unwrap_or_default();
        return Err(UsageError::new(format!(
            "no Cargo.toml at {}",
            cwd.join(&p).display()
        ))
        .hint("run `cargo oci init` in the package's directory, pass --manifest-path PATH, or create a package with `cargo oci new NAME`"));
    }
    Ok(p)
}

/// Adds the block to `manifest` (or only says what it would add, with `dry_run`).
pub fn init(manifest: &Path, dry_run: bool) -> Result<Initialized> {
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("cannot read {}", manifest.display()))?;
    let doc: DocumentMut = text.parse().map_err(|e| {
        UsageError::new(format!("{} is not valid TOML: {e}", manifest.display()))
            .hint("fix the file (cargo reports the same), then run `cargo oci init` again")
    })?;
    let Some(package) = doc.get("package").and_then(|p| p.as_table_like()) else {
        return Err(UsageError::new(format!(
            "{} has no [package]: it is not a package manifest",
            manifest.display()
        ))
        .hint("run `cargo oci init` in a member package's directory (or pass its --manifest-path)")
        .into());
    };
    let name = package
        .get("name")
        .and_then(|n| n.as_str())
        .ok_or_else(|| {
            UsageError::new(format!("{} has no package name", manifest.display()))
                .hint("add `name = \"...\"` under [package]")
        })?
        .to_string();
    let has_oci = package
        .get("metadata")
        .and_then(|m| m.as_table_like())
        .is_some_and(|m| m.contains_key("oci"));
    if has_oci {
        return Err(UsageError::new(format!(
            "{} already has [package.metadata.oci]",
            manifest.display()
        ))
        .hint("edit it there; every key is described at https://github.com/cargo-oci/cargo-oci#metadata-reference")
        .into());
    }

    let block = block(&name, &bin_line(&name, binaries(manifest).as_ref()));
    let mut new_text = text.clone();
    if !new_text.is_empty() && !new_text.ends_with('\n') {
        new_text.push('\n');
    }
    new_text.push_str(&block);
    let check: DocumentMut = new_text.parse().map_err(|e| {
        UsageError::new(format!(
            "cannot add [package.metadata.oci] to {}: the result would not be valid TOML: {e}",
            manifest.display()
        ))
        .hint("add the block by hand (see `cargo oci init --dry-run`)")
    })?;
    if !check["package"]["metadata"]["oci"].is_table_like() {
        return Err(UsageError::new(format!(
            "cannot add [package.metadata.oci] to {}: its [package.metadata] is not a table",
            manifest.display()
        ))
        .hint("make [package.metadata] a table, then run `cargo oci init` again")
        .into());
    }

    if !dry_run {
        write_keeping_mode(manifest, new_text.as_bytes())?;
    }
    Ok(Initialized {
        manifest: manifest.to_path_buf(),
        package: name,
        block,
        dry_run,
    })
}

/// Replaces `path` atomically, keeping its permissions.
fn write_keeping_mode(path: &Path, bytes: &[u8]) -> Result<()> {
    let perms = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .permissions();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".cargo-oci-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(tmp.path(), perms)
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "# my service\n[package]\nname = \"Svc\"   # odd spacing kept\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n# none yet";

    #[test]
    fn appends_and_keeps_every_byte() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("Cargo.toml");
        std::fs::write(&p, MANIFEST).unwrap();
        let done = init(&p, false).unwrap();
        assert_eq!(done.package, "Svc");
        let after = std::fs::read_to_string(&p).unwrap();
        assert!(after.starts_with(MANIFEST), "{after}");
        let doc: DocumentMut = after.parse().unwrap();
        // No name: the image gets the one `cargo oci build` gives a package without metadata.
        assert!(doc["package"]["metadata"]["oci"].get("name").is_none());
        assert!(doc["package"]["metadata"]["oci"]["tags"].is_array());
        // A second run refuses, with a usage error, and changes nothing.
        let err = init(&p, false).unwrap_err();
        assert_eq!(crate::util::error::exit_code(&err), 2);
        assert!(err.to_string().contains("already has"), "{err}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), after);
    }

    #[test]
    fn dry_run_writes_nothing_and_virtual_manifests_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("Cargo.toml");
        std::fs::write(&p, MANIFEST).unwrap();
        let done = init(&p, true).unwrap();
        assert!(done.block.contains("[package.metadata.oci]"));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), MANIFEST);

        std::fs::write(&p, "[workspace]\nmembers = [\"a\"]\n").unwrap();
        let err = init(&p, false).unwrap_err();
        assert_eq!(crate::util::error::exit_code(&err), 2);
        assert!(err.to_string().contains("no [package]"), "{err}");
    }

    #[test]
    fn the_bin_line_names_only_existing_binaries() {
        let both = (vec!["cli".to_string(), "server".to_string()], None);
        let line = bin_line("multi", Some(&both));
        assert!(line.starts_with("bin = \"cli\""), "{line}");
        assert!(line.contains("cli, server"), "{line}");
        let named = (vec!["cli".to_string(), "multi".to_string()], None);
        assert!(bin_line("multi", Some(&named)).starts_with("bin = \"multi\""));
        let run = (both.0.clone(), Some("server".to_string()));
        assert!(bin_line("multi", Some(&run)).starts_with("# bin = \"server\""));
        let one = (vec!["svc".to_string()], None);
        assert!(bin_line("x", Some(&one)).starts_with("# bin = \"svc\""));
        assert!(bin_line("x", None).starts_with("# bin = \"NAME\""));
        // Every form keeps the block valid TOML.
        for l in [bin_line("m", Some(&both)), bin_line("m", None)] {
            let doc: DocumentMut = block("m", &l).parse().unwrap();
            assert!(doc["package"]["metadata"]["oci"].is_table_like());
        }
    }

    #[test]
    fn metadata_oci_as_dotted_keys_counts() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("Cargo.toml");
        std::fs::write(
            &p,
            "[package]\nname = \"a\"\nversion = \"0.1.0\"\nmetadata.oci.tags = [\"x\"]\n",
        )
        .unwrap();
        assert!(init(&p, false).is_err());
    }
}
