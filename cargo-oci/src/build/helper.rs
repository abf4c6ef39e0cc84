//! Provides the contract helper (the program behind `/bin/entrypoint`, `/bin/runtime`, ...) for
//! the image's target. For the target cargo-oci itself was built for, the helper is embedded in
//! cargo-oci (compiled by `build.rs` with the toolchain that built cargo-oci): nothing is
//! compiled. For any other target it is compiled once with the user's own toolchain and cached
//! per machine ([`crate::util::fs::cache_dir`]), keyed by toolchain, target, flags and source. Being std-only, its
//! closure is libc's, a subset of any Rust service's, and it is static for static targets. The
//! digest of each cached helper is recorded beside it (for the embedded one: known in-process)
//! and checked before every use: a helper that differs is written or built again.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::build::cargo::{cargo_program, rustc_version_verbose};
use crate::oci::digest::Digest as OciDigest;
use crate::oci::store;
use crate::util::reporter::Reporter;

/// The helper's source code.
pub const SOURCE: &str = include_str!("../../../contract-helper/src/main.rs");

/// The manifest (and release profile) the helper is built with, here and by `build.rs`.
const MANIFEST: &str = include_str!("helper-manifest.toml");

/// The helper compiled for [`EMBEDDED_TARGET`] when cargo-oci was built (empty when that build
/// failed: then it is compiled on first use like any other).
const EMBEDDED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/contract-helper"));

/// The target cargo-oci was built for, the one of [`EMBEDDED`].
pub const EMBEDDED_TARGET: &str = env!("CARGO_OCI_HELPER_TARGET");

/// Returns the path of the helper for `target`: the embedded one (written to the cache when it
/// is not there yet) or one built for `target` (built when the cache has none, or has one that
/// is not what was built). `package_dir` is where the user's cargo configuration (linkers,
/// rustflags) applies.
pub fn ensure(target: &str, package_dir: &Path, report: &Reporter) -> Result<PathBuf> {
    let root = crate::util::fs::cache_dir()?.join("helper");
    let bin = root.join("bin");
    if target == EMBEDDED_TARGET && !EMBEDDED.is_empty() {
        return embedded(&bin, target, report);
    }
    report.status(
        "Compiling",
        &format!(
            "the contract helper for {target} (once per toolchain; cached in {})",
            root.display()
        ),
    );
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
    create_dir(&bin, &root)?;
    crate::util::fs::remove_stale_temps(&bin, store::STALE_AFTER);
    let cached = bin.join(format!("{target}-{key}"));
    let recorded = bin.join(format!("{target}-{key}.sha256"));
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

    // One source directory per key: builds for two toolchains at once never share one.
    let src = root.join("src").join(&key);
    create_dir(&src, &root)?;
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
    install(&bin, &cached, &recorded, |tmp| {
        std::fs::copy(&built, tmp)
            .map(drop)
            .with_context(|| format!("cannot copy {}", built.display()))
    })?;
    Ok(cached)
}

/// The embedded helper, as a file of the cache named by its digest: written when missing, and
/// written again when the file there is not the embedded helper.
fn embedded(bin: &Path, target: &str, report: &Reporter) -> Result<PathBuf> {
    let digest = OciDigest::of(EMBEDDED);
    let cached = bin.join(format!("{target}-embedded-{}", &digest.hex()[..16]));
    let recorded = bin.join(format!("{target}-embedded-{}.sha256", &digest.hex()[..16]));
    if cached.is_file() {
        if store::file_digest(&cached).is_ok_and(|d| d == digest) {
            return Ok(cached);
        }
        report.warn(&format!(
            "the cached contract helper {} is not cargo-oci's own; writing it again",
            cached.display()
        ));
    }
    let root = bin.parent().unwrap_or(bin);
    create_dir(bin, root)?;
    crate::util::fs::remove_stale_temps(bin, store::STALE_AFTER);
    install(bin, &cached, &recorded, |tmp| {
        std::fs::write(tmp, EMBEDDED).with_context(|| format!("cannot write {}", tmp.display()))
    })?;
    Ok(cached)
}

fn create_dir(dir: &Path, root: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| {
        let e = anyhow::Error::from(e).context(format!("cannot create {}", dir.display()));
        crate::util::fs::explain_disk_full(e, root, dir)
    })
}

/// Puts a helper in place at `cached` through a temporary file that `fill` writes, with its
/// digest recorded at `recorded` first, so that a helper is never in place without its record.
/// Builds running at the same time may both get here: each writes a file of its own, and the
/// last rename wins (the contents are the same).
fn install(
    bin: &Path,
    cached: &Path,
    recorded: &Path,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let tmp = store::unique_temp_path(bin, "helper")?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(crate::util::fs::explain_disk_full(e, bin, cached));
    }
    let digest =
        store::file_digest(&tmp).with_context(|| format!("cannot read {}", tmp.display()))?;
    let wrote =
        crate::util::fs::write_atomic(recorded, |w| Ok(w.write_all(digest.as_str().as_bytes())?));
    if let Err(e) = wrote {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, cached)
        .with_context(|| format!("cannot move the contract helper to {}", cached.display()))
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
