//! Compiles the contract helper for the target cargo-oci itself is built for, so that images for
//! that target (the host's, in the usual case) need no helper compile on first use: the binary is
//! embedded in cargo-oci (`build::helper::EMBEDDED`). It is built exactly as a helper compiled
//! later for another target is (same source, same manifest and profile, see
//! `src/build/helper-manifest.toml`), with the toolchain that builds cargo-oci: its bytes, and so
//! the digests of images for this target, follow that toolchain.
//!
//! When the nested build fails, cargo-oci is built without an embedded helper (with a warning)
//! and compiles the helper on first use, as for any other target.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let source = manifest_dir.join("../contract-helper/src/main.rs");
    let manifest = manifest_dir.join("src/build/helper-manifest.toml");
    println!("cargo:rerun-if-changed={}", source.display());
    println!("cargo:rerun-if-changed={}", manifest.display());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CARGO_OCI_NO_EMBEDDED_HELPER");

    let out = PathBuf::from(env("OUT_DIR"));
    let target = env("TARGET");
    let embedded = out.join("contract-helper");
    let built = if std::env::var_os("CARGO_OCI_NO_EMBEDDED_HELPER").is_some() {
        None
    } else {
        match build(&source, &manifest, &out, &target, &manifest_dir) {
            Ok(path) => Some(path),
            Err(e) => {
                println!(
                    "cargo:warning=the contract helper could not be built for {target} ({e}); \
                     cargo-oci will compile it on first use"
                );
                None
            }
        }
    };
    match built {
        Some(path) => std::fs::copy(&path, &embedded).map(drop),
        // Empty: no embedded helper.
        None => std::fs::write(&embedded, b""),
    }
    .unwrap_or_else(|e| panic!("cannot write {}: {e}", embedded.display()));
    println!("cargo:rustc-env=CARGO_OCI_HELPER_TARGET={target}");
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("cargo sets {name} for build scripts"))
}

/// Builds the helper in `out` and returns the executable's path.
fn build(
    source: &Path,
    manifest: &Path,
    out: &Path,
    target: &str,
    cwd: &Path,
) -> Result<PathBuf, String> {
    let src = out.join("helper-src");
    std::fs::create_dir_all(&src).map_err(|e| e.to_string())?;
    for (from, to) in [(source, "main.rs"), (manifest, "Cargo.toml")] {
        let text = std::fs::read(from).map_err(|e| format!("{}: {e}", from.display()))?;
        let dest = src.join(to);
        // Rewritten only when it changed, so that cargo's own freshness check holds.
        if std::fs::read(&dest).ok().as_deref() != Some(&text[..]) {
            std::fs::write(&dest, text).map_err(|e| e.to_string())?;
        }
    }
    let target_dir = out.join("helper-target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--release", "--target", target])
        .arg("--manifest-path")
        .arg(src.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(cwd);
    // What cargo tells build scripts about cargo-oci's own build is not for this one; the flags
    // of the target (linker settings, ...) still apply through CARGO_ENCODED_RUSTFLAGS.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let keep =
            key == "CARGO_HOME" || key == "CARGO_ENCODED_RUSTFLAGS" || key == "CARGO_MAKEFLAGS";
        if (key.starts_with("CARGO_") && !keep)
            || key == "RUSTFLAGS"
            || key == "RUSTC_WORKSPACE_WRAPPER"
            || key.starts_with("DEP_")
        {
            cmd.env_remove(key.as_ref());
        }
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build {status}"));
    }
    Ok(target_dir
        .join(target)
        .join("release")
        .join("cargo-oci-helper"))
}
