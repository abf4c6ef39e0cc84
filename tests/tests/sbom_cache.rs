//! The SBOM's crate list is remembered between builds: a rebuild with nothing changed asks cargo
//! only for the package list (`cargo metadata --no-deps`), and a changed feature or Cargo.lock
//! gives a changed crate list. cargo is a script that logs its arguments and hands over.

use std::collections::BTreeSet;
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

/// Packages `dir` with `extra` arguments; returns the SBOM's (name, version) pairs and the cargo
/// calls made.
fn package(dir: &Path, cargo: &Path, log: &Path, extra: &[&str]) -> (BTreeSet<String>, String) {
    let _ = std::fs::remove_file(log);
    let sbom = dir.join("sbom.spdx.json");
    let mut c = cargo_oci(dir, &["build", "--release", "--no-build", "-q"]);
    c.args(extra)
        .arg("--sbom-output")
        .arg(&sbom)
        .env("CARGO_TARGET_DIR", dir.join("target"))
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

    // Nothing changed: only the package list.
    let (again, calls) = package(&dir, &cargo, &log, &[]);
    assert_eq!(again, first);
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
    let records = dir.join("target/oci/.cache/crates");
    for e in std::fs::read_dir(&records).unwrap() {
        std::fs::write(e.unwrap().path(), b"garbage").unwrap();
    }
    let (fixed, calls) = package(&dir, &cargo, &log, &["--features", "more"]);
    assert_eq!(fixed, bumped);
    assert!(
        calls.lines().any(|l| !l.contains("--no-deps")),
        "a corrupt record is not trusted:\n{calls}"
    );
}
