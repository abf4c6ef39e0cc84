//! The package list kept in the per-machine cache: a run whose manifests did not change takes
//! it from there, and a member added under a workspace's member glob is picked up by the next
//! run all the same.

use std::path::Path;
use std::time::Duration;

use cargo_oci_tests::*;

fn write(p: &Path, text: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A service package `name` at `dir`.
fn service(dir: &Path, name: &str) {
    write(
        &dir.join("Cargo.toml"),
        &format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n\
             [package.metadata.oci]\nca-certificates = false\n"
        ),
    );
    write(&dir.join("src/main.rs"), "fn main() {}\n");
}

fn names(stdout: &str) -> Vec<String> {
    let mut n: Vec<String> = results(stdout)
        .iter()
        .map(|r| r["package"].as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

/// The records of the package list in the per-machine cache `cache`, with their change times.
fn records(cache: &Path) -> Vec<(std::path::PathBuf, std::time::SystemTime)> {
    let Ok(rd) = std::fs::read_dir(cache.join("package-list")) else {
        return Vec::new();
    };
    rd.map(|e| {
        let p = e.unwrap().path();
        let t = std::fs::metadata(&p).unwrap().modified().unwrap();
        (p, t)
    })
    .collect()
}

#[test]
fn a_member_added_under_a_glob_is_picked_up_by_the_next_run() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    write(
        &ws.join("Cargo.toml"),
        "[workspace]\nmembers = [\"services/*\"]\nresolver = \"2\"\n",
    );
    service(&ws.join("services/alpha"), "alpha");
    // Out of the workspace's ancestors, as the user's cache is.
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = cache_dir.path().to_path_buf();
    let build = || {
        let mut c = cargo_oci(
            &ws,
            &["build", "--workspace", "--message-format", "json", "-q"],
        );
        c.env("CARGO_TARGET_DIR", ws.join("target"))
            .env("CARGO_OCI_CACHE_DIR", &cache);
        ok(c)
    };

    // Files changed a moment ago may have changed while cargo read them: no record is kept
    // for them. Let them settle, so that this run keeps one.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(names(&build()), ["alpha"]);
    let kept = records(&cache);
    assert_eq!(kept.len(), 1, "the package list was not kept: {kept:?}");

    // Nothing changed: the record answers, and is left as it is.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(names(&build()), ["alpha"]);
    assert_eq!(records(&cache), kept);

    // A new member under the glob: no manifest cargo read before changed, but the directory
    // the glob expands in did.
    service(&ws.join("services/beta"), "beta");
    assert_eq!(names(&build()), ["alpha", "beta"]);
    // A new binary of a member, once the list with that member is kept, is seen too.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(names(&build()), ["alpha", "beta"]);
    let again = records(&cache);
    assert_eq!(again.len(), 1);
    assert_ne!(again, kept, "the list with beta was not kept");
    write(&ws.join("services/beta/src/bin/probe.rs"), "fn main() {}\n");
    let out = run(cargo_oci(
        &ws,
        &["build", "--workspace", "--message-format", "json", "-q"],
    )
    .env("CARGO_TARGET_DIR", ws.join("target"))
    .env("CARGO_OCI_CACHE_DIR", &cache));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("several binaries (beta, probe)"),
        "{stderr}"
    );
}
