//! Compiles the contract helper (the program behind `/bin/entrypoint`, `/bin/runtime`, ...) for
//! the image's target with the user's own toolchain and caches it under the target directory.
//! Its source is embedded in cargo-oci; being std-only, its closure is libc's, a subset of any
//! Rust service's, and it is static for static targets. The digest of each cached build is
//! recorded beside it and checked before every use: a helper that differs is built again.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::build::cargo::{cargo_program, rustc_version_verbose};
use crate::oci::store;
use crate::util::reporter::Reporter;

/// The helper's source code.
pub const SOURCE: &str = include_str!("../../../contract-helper/src/main.rs");

const MANIFEST: &str = r#"[package]
name = "cargo-oci-helper"
version = "0.0.0"
edition = "2021"
publish = false

[[bin]]
name = "cargo-oci-helper"
path = "main.rs"

[workspace]

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
panic = "abort"
strip = true
debug = false
"#;

/// Returns the path of the helper built for `target`, building it when the cache has none (or
/// has one that is not what was built). `package_dir` is where the user's cargo configuration
/// (linkers, rustflags) applies.
pub fn ensure(
    target_dir: &Path,
    target: &str,
    package_dir: &Path,
    report: &Reporter,
) -> Result<PathBuf> {
    // Absolute: cargo runs in the package's directory, not in ours.
    let root = std::path::absolute(target_dir)
        .with_context(|| format!("cannot find {}", target_dir.display()))?
        .join("oci")
        .join(".helper");
    let mut h = Sha256::new();
    for part in [
        SOURCE,
        MANIFEST,
        target,
        &rustc_version_verbose(package_dir)?,
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS"] {
        h.update(std::env::var(var).unwrap_or_default().as_bytes());
        h.update([0]);
    }
    let key = hex::encode(&h.finalize()[..8]);
    crate::util::fs::remove_stale_temps(&root.join("bin"), store::STALE_AFTER);
    let cached = root.join("bin").join(format!("{target}-{key}"));
    let recorded = root.join("bin").join(format!("{target}-{key}.sha256"));
    let built = root
        .join("target")
        .join(target)
        .join("release")
        .join("cargo-oci-helper");
    if cached.is_file() {
        let want = std::fs::read_to_string(&recorded).unwrap_or_default();
        if store::file_digest(&cached).is_ok_and(|d| d == want.trim()) {
            return Ok(cached);
        }
        report.warn(&format!(
            "the cached contract helper {} is not the one that was built (or its digest record is missing); building it again",
            cached.display()
        ));
        // Its build output may be what changed: make cargo link it again.
        let _ = std::fs::remove_file(&built);
    }

    let src = root.join("src");
    std::fs::create_dir_all(&src).with_context(|| format!("cannot create {}", src.display()))?;
    write_if_changed(&src.join("Cargo.toml"), MANIFEST)?;
    write_if_changed(&src.join("main.rs"), SOURCE)?;
    let build_dir = root.join("target");
    let out = Command::new(cargo_program())
        .args([
            "build",
            "--quiet",
            "--release",
            "--target",
            target,
            "--manifest-path",
        ])
        .arg(src.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&build_dir)
        .current_dir(package_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("could not run cargo to build the contract helper")?;
    // Cargo's own messages are shown as they are; what follows says what they mean.
    let cargo_said = String::from_utf8_lossy(&out.stderr);
    eprint!("{cargo_said}");
    if !out.status.success() {
        bail!(build_failure(target, &build_dir, out.status, &cargo_said));
    }
    // Builds running at the same time may both get here: each copies to a file of its own, and
    // the last rename wins (the contents are the same). The digest is recorded first, so that
    // a helper is never in place without its record.
    let tmp = store::unique_temp_path(&root.join("bin"), "helper")?;
    if let Err(e) = std::fs::copy(&built, &tmp) {
        let _ = std::fs::remove_file(&tmp);
        let e = anyhow::Error::from(e).context(format!("cannot copy {}", built.display()));
        return Err(crate::util::fs::explain_disk_full(
            e,
            &root.join("bin"),
            &cached,
        ));
    }
    let digest =
        store::file_digest(&tmp).with_context(|| format!("cannot read {}", tmp.display()))?;
    crate::util::fs::write_atomic(&recorded, |w| Ok(w.write_all(digest.as_str().as_bytes())?))?;
    std::fs::rename(&tmp, &cached)
        .with_context(|| format!("cannot move the contract helper to {}", cached.display()))?;
    Ok(cached)
}

/// Why the helper's build failed, from what cargo and rustc said: a full disk (naming the
/// directory), a target that is not installed (with the `rustup` line to install it), or else
/// the exit status with cargo's messages above it.
fn build_failure(
    target: &str,
    build_dir: &Path,
    status: std::process::ExitStatus,
    cargo_said: &str,
) -> String {
    let what = format!("building the contract helper for {target} failed ({status})");
    if cargo_said.contains("No space left on device")
        || cargo_said.contains("os error 28")
        || cargo_said.contains("Disk quota exceeded")
    {
        return format!(
            "{what}: the disk holding {} is full (no space left on device)\n  help: free some \
             space there (`df -h {}` shows it), or run `cargo oci clean`",
            build_dir.display(),
            build_dir.display()
        );
    }
    let missing = cargo_said.contains("target may not be installed")
        || cargo_said.contains("can't find crate for `std`")
        || cargo_said.contains("can't find crate for `core`")
        || target_not_installed(target);
    if missing {
        return format!(
            "{what}: the standard library for {target} is not installed\n  help: install it \
             with `rustup target add {target}`"
        );
    }
    format!("{what}; cargo's messages are above")
}

/// Whether rustup says `target` is not installed (false when there is no rustup to ask).
fn target_not_installed(target: &str) -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| {
            !String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == target)
        })
}

/// Replaces `path` in one rename, so that a build running beside this one never reads half a file.
fn write_if_changed(path: &Path, text: &str) -> Result<()> {
    if std::fs::read_to_string(path).ok().as_deref() != Some(text) {
        crate::util::fs::write_atomic(path, |w| Ok(w.write_all(text.as_bytes())?))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn a_failed_build_says_what_cargo_and_rustc_said() {
        let status = std::process::ExitStatus::from_raw(101 << 8);
        let dir = Path::new("/t/oci/.helper/target");
        let full = build_failure(
            "x86_64-unknown-linux-gnu",
            dir,
            status,
            "error: failed to write: No space left on device (os error 28)",
        );
        assert!(
            full.contains("no space left on device") && full.contains("/t/oci/.helper/target"),
            "{full}"
        );
        assert!(!full.contains("rustup"), "{full}");
        let missing = build_failure(
            "x86_64-unknown-linux-gnu",
            dir,
            status,
            "error[E0463]: can't find crate for `std`\n  = note: the `x86_64-unknown-linux-gnu` target may not be installed",
        );
        assert!(
            missing.contains("rustup target add x86_64-unknown-linux-gnu"),
            "{missing}"
        );
    }
}
