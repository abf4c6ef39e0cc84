//! The `revision` label: HEAD's commit when the package's work tree is clean, none when it has
//! changes, and the metadata's own value when it sets one. git is asked while cargo builds, and
//! its answer is waited for when the config is written.

use std::path::Path;
use std::process::Command;

use cargo_oci_tests::*;
use serde_json::Value;

const REVISION: &str = "org.opencontainers.image.revision";

fn git(dir: &Path, args: &[&str]) -> String {
    ok(Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args))
    .trim()
    .to_string()
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The labels of the image in the layout `dir`.
fn labels(dir: &Path) -> Value {
    let blob = |d: &Value| dir.join("blobs/sha256").join(&d.as_str().unwrap()[7..]);
    let manifest = json(&blob(
        &json(&dir.join("index.json"))["manifests"][0]["digest"],
    ));
    json(&blob(&manifest["config"]["digest"]))["config"]["Labels"].clone()
}

#[test]
fn the_revision_label_names_a_clean_heads_commit_and_the_metadata_wins() {
    if tool("git").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pkg = tmp.path().join("svc");
    std::fs::create_dir_all(pkg.join("src")).unwrap();
    let manifest = "[package]\nname = \"svc\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\
                    publish = false\n\n[package.metadata.oci]\nca-certificates = false\n";
    std::fs::write(pkg.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(pkg.join("src/main.rs"), "fn main() {}\n").unwrap();
    std::fs::write(pkg.join("README.md"), "svc\n").unwrap();
    git(&pkg, &["init", "-q"]);
    git(&pkg, &["add", "."]);
    git(&pkg, &["commit", "-q", "-m", "svc"]);
    let head = git(&pkg, &["rev-parse", "HEAD"]);
    let target = tmp.path().join("target");
    let build = |out: &str, no_build: bool| {
        let layout = tmp.path().join(out);
        let mut c = cargo_oci(&pkg, &["build", "-q", "-o"]);
        c.arg(&layout).env("CARGO_TARGET_DIR", &target);
        if no_build {
            c.arg("--no-build");
        }
        ok(c);
        labels(&layout)
    };

    let clean = build("clean", false);
    assert_eq!(clean[REVISION], head.as_str(), "{clean}");

    std::fs::write(pkg.join("README.md"), "svc, changed\n").unwrap();
    let changed = build("changed", true);
    assert!(changed.get(REVISION).is_none(), "{changed}");

    std::fs::write(
        pkg.join("Cargo.toml"),
        format!("{manifest}labels = {{ revision = \"release-7\" }}\n"),
    )
    .unwrap();
    git(&pkg, &["commit", "-q", "-a", "-m", "label"]);
    let set = build("set", false);
    assert_eq!(set[REVISION], "release-7", "{set}");
}
