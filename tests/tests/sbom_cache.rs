//! The SBOM's crate list is remembered between builds, in the target directory and per machine:
//! a rebuild with nothing changed, or a fresh checkout at the same place, asks cargo only for the
//! package list (`cargo metadata --no-deps`) and the build, and a changed feature or Cargo.lock
//! gives a changed crate list. cargo is a script that logs its arguments and hands over.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use cargo_oci_tests::*;

/// A package `app` whose binary is the http-hello example's, with an optional local dependency
/// `extra` behind the feature `more`.
fn app(dir: &Path) {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::create_dir_all(dir.join("extra/src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n\
         [dependencies]\nextra = { path = \"extra\", optional = true }\n\n\
         [features]\nmore = [\"dep:extra\"]\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(dir.join("src/main.rs"), "fn main() {}\n").unwrap();
    extra_version(dir, "0.1.0");
    std::fs::write(dir.join("extra/src/lib.rs"), "").unwrap();
    built("http-hello");
    std::fs::create_dir_all(dir.join("target/release")).unwrap();
    std::fs::copy(
        examples_target_dir().join("release/http-hello"),
        dir.join("target/release/app"),
    )
    .unwrap();
}

fn extra_version(dir: &Path, version: &str) {
    std::fs::write(
        dir.join("extra/Cargo.toml"),
        format!(
            "[package]\nname = \"extra\"\nversion = \"{version}\"\nedition = \"2021\"\n\
             publish = false\nlicense = \"MIT\"\n"
        ),
    )
    .unwrap();
}

/// A cargo that logs every call's arguments to `log` and runs the real one.
fn logging_cargo(dir: &Path, log: &Path) -> PathBuf {
    let real = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let script = dir.join("cargo-logging");
    write_script(
        &script,
        &format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexec '{real}' \"$@\"\n",
            log.display()
        ),
    );
    script
}

/// Packages `dir` (`--no-build`) with `extra` arguments; returns the SBOM's (name, version)
/// pairs and the cargo calls made. The per-machine cache is `dir`'s sibling `cache`.
fn package(dir: &Path, cargo: &Path, log: &Path, extra: &[&str]) -> (BTreeSet<String>, String) {
    let mut args = vec!["--no-build"];
    args.extend(extra);
    build(dir, cargo, log, &args)
}

/// `cargo oci build --release ARGS` of `dir`, as [`package`].
fn build(dir: &Path, cargo: &Path, log: &Path, args: &[&str]) -> (BTreeSet<String>, String) {
    let _ = std::fs::remove_file(log);
    let sbom = dir.join("sbom.spdx.json");
    let mut c = cargo_oci(dir, &["build", "--release", "-q"]);
    c.args(args)
        .arg("--sbom-output")
        .arg(&sbom)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .env("CARGO_OCI_CACHE_DIR", machine_cache(dir))
        .env("CARGO", cargo);
    ok(c);
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&sbom).unwrap()).unwrap();
    let packages = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{} {}", p["name"].as_str().unwrap(), p["versionInfo"]))
        .collect();
    (packages, std::fs::read_to_string(log).unwrap_or_default())
}

fn machine_cache(dir: &Path) -> PathBuf {
    dir.parent().unwrap().join("cache")
}

#[test]
fn a_rebuild_with_nothing_changed_runs_only_the_package_list_and_changes_show() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("app");
    app(&dir);
    let log = tmp.path().join("cargo.log");
    let cargo = logging_cargo(tmp.path(), &log);

    let (first, calls) = package(&dir, &cargo, &log, &[]);
    assert!(first.iter().any(|p| p.starts_with("app ")), "{first:?}");
    assert!(!first.iter().any(|p| p.starts_with("extra ")), "{first:?}");
    assert!(
        calls
            .lines()
            .any(|l| l.starts_with("metadata") && !l.contains("--no-deps")),
        "the first build resolves the crates:\n{calls}"
    );

    // Nothing changed: only the package list, and the SBOM file is left as it was.
    let sbom = dir.join("sbom.spdx.json");
    let written = std::fs::metadata(&sbom).unwrap();
    let (again, calls) = package(&dir, &cargo, &log, &[]);
    assert_eq!(again, first);
    let kept = std::fs::metadata(&sbom).unwrap();
    assert_eq!(
        (kept.ino(), kept.modified().unwrap()),
        (written.ino(), written.modified().unwrap()),
        "an SBOM with the same bytes was written again"
    );
    assert!(!calls.is_empty());
    assert!(
        calls
            .lines()
            .all(|l| l.starts_with("metadata") && l.contains("--no-deps")),
        "a rebuild with nothing changed ran more than `cargo metadata --no-deps`:\n{calls}"
    );

    // A feature turning on a dependency: the crate is in the SBOM.
    let (more, calls) = package(&dir, &cargo, &log, &["--features", "more"]);
    assert!(more.contains("extra \"0.1.0\""), "{more:?}\n{calls}");

    // The dependency's version changes, and with it Cargo.lock: the SBOM follows.
    let lock_before = std::fs::read(dir.join("Cargo.lock")).unwrap();
    extra_version(&dir, "0.2.0");
    let (bumped, _) = package(&dir, &cargo, &log, &["--features", "more"]);
    assert_ne!(std::fs::read(dir.join("Cargo.lock")).unwrap(), lock_before);
    assert!(bumped.contains("extra \"0.2.0\""), "{bumped:?}");
    assert!(!bumped.contains("extra \"0.1.0\""), "{bumped:?}");

    // A corrupt record is resolved again, to the same list.
    for records in [
        dir.join("target/oci/.cache/crates"),
        machine_cache(&dir).join("crates"),
    ] {
        for e in std::fs::read_dir(&records).unwrap() {
            std::fs::write(e.unwrap().path(), b"garbage").unwrap();
        }
    }
    let (fixed, calls) = package(&dir, &cargo, &log, &["--features", "more"]);
    assert_eq!(fixed, bumped);
    assert!(
        calls.lines().any(|l| !l.contains("--no-deps")),
        "a corrupt record is not trusted:\n{calls}"
    );
}

#[test]
fn a_fresh_checkout_at_the_same_place_takes_the_crate_list_from_the_machine_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("app");
    app(&dir);
    let log = tmp.path().join("cargo.log");
    let cargo = logging_cargo(tmp.path(), &log);
    let (first, calls) = package(&dir, &cargo, &log, &["--features", "more"]);
    assert!(first.contains("extra \"0.1.0\""), "{first:?}\n{calls}");

    // A new CI job: the same checkout, no target/oci.
    std::fs::remove_dir_all(dir.join("target/oci")).unwrap();
    let (fresh, calls) = package(&dir, &cargo, &log, &["--features", "more"]);
    assert_eq!(fresh, first);
    assert!(
        calls
            .lines()
            .all(|l| l.starts_with("metadata") && l.contains("--no-deps")),
        "a fresh checkout resolved the crates again:\n{calls}"
    );

    // A changed local dependency is not served from either cache.
    std::fs::remove_dir_all(dir.join("target/oci")).unwrap();
    extra_version(&dir, "0.3.0");
    let (bumped, calls) = package(&dir, &cargo, &log, &["--features", "more"]);
    assert!(bumped.contains("extra \"0.3.0\""), "{bumped:?}\n{calls}");
    assert!(!bumped.contains("extra \"0.1.0\""), "{bumped:?}");
}

#[test]
fn a_rebuild_with_cargo_runs_only_the_package_list_and_the_build() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("app");
    app(&dir);
    let log = tmp.path().join("cargo.log");
    let cargo = logging_cargo(tmp.path(), &log);
    let (first, calls) = build(&dir, &cargo, &log, &[]);
    assert!(first.iter().any(|p| p.starts_with("app ")), "{first:?}");
    assert!(
        calls.lines().any(|l| l.starts_with("build")),
        "no build:\n{calls}"
    );
    // The crate list is asked for while cargo builds, with `--locked`: never in a way that
    // rewrites Cargo.lock under the build.
    assert!(
        calls.lines().any(|l| l.starts_with("metadata")
            && !l.contains("--no-deps")
            && l.contains("--locked")),
        "the crate list was not asked for alongside the build:\n{calls}"
    );

    let (again, calls) = build(&dir, &cargo, &log, &[]);
    assert_eq!(again, first);
    let kinds: Vec<&str> = calls
        .lines()
        .map(|l| {
            if l.starts_with("metadata") && l.contains("--no-deps") {
                "package list"
            } else if l.starts_with("build") {
                "build"
            } else {
                l
            }
        })
        .collect();
    assert_eq!(
        kinds,
        ["package list", "build"],
        "a rebuild with nothing changed ran more than the package list and the build"
    );
}
