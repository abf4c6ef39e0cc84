//! Commands write only what they are asked for: `inspect`, `push`, `load`, `export` and `bundle`
//! leave no OCI layout in `target/oci/<name>` (the blob store `target/oci/.store` they build into
//! is theirs to keep); `build` alone writes it.

use std::path::Path;
use std::process::{Command, Stdio};

use cargo_oci_tests::registry::Registry;
use cargo_oci_tests::*;
use serde_json::Value;

/// `cargo oci ARGS --release --no-build --target-dir TARGET` on http-hello, with a home of its
/// own (no credentials, no engine configuration from the developer's).
fn oci(target: &Path, home: &Path, args: &[&str]) -> Command {
    let mut c = cargo_oci(&example("http-hello"), args);
    c.args(["--release", "--no-build", "--target-dir"])
        .arg(target)
        .env("HOME", home)
        .env("DOCKER_CONFIG", home.join(".docker"))
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("CARGO_OCI_REGISTRY_USER")
        .stdin(Stdio::null());
    c
}

fn json(c: Command) -> Value {
    result(&ok(c))
}

/// Asserts that the default layout is absent and that the images went through the store.
/// The default layout directory of http-hello (its full image name made one path part).
const LAYOUT: &str = "oci/localhost+cargo-oci-examples+http-hello";

fn no_layout(target: &Path, after: &str) {
    // Only cargo-oci's own caches (dot-directories) may be under target/oci.
    let visible: Vec<String> = std::fs::read_dir(target.join("oci"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(
        visible.is_empty(),
        "{after} wrote {visible:?} under target/oci"
    );
    assert!(target.join("oci/.store").is_dir(), "{after}: no blob store");
}

#[test]
fn inspect_export_and_bundle_write_no_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let target = private_target(tmp.path());
    let home = tmp.path();

    let mut c = oci(&target, home, &["inspect", "--json"]);
    c.arg("-q");
    let v = json(c);
    assert_eq!(v["reason"], "image-inspected");
    assert!(v["path"].is_null(), "{}", v["path"]);
    no_layout(&target, "inspect");

    let rootfs = tmp.path().join("rootfs.tar");
    let bundle = tmp.path().join("bundle");
    ok(oci(
        &target,
        home,
        &["export", rootfs.to_str().unwrap(), "-q"],
    ));
    ok(oci(
        &target,
        home,
        &["bundle", bundle.to_str().unwrap(), "-q"],
    ));
    assert!(rootfs.is_file() && bundle.join("config.json").is_file());
    no_layout(&target, "export and bundle");

    // `build` is what writes it: the check above looks in the right place.
    let b = json(oci(
        &target,
        home,
        &["build", "-q", "--message-format", "json"],
    ));
    assert_eq!(Path::new(b["path"].as_str().unwrap()), target.join(LAYOUT));
    assert!(target.join(LAYOUT).join("index.json").is_file());
    assert_eq!(b["digest"], v["digest"], "inspect described the same image");
}

#[test]
fn push_writes_no_layout() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let target = private_target(tmp.path());
    let dest = format!("{}/side-effects/http-hello", reg.addr);
    let mut c = oci(&target, tmp.path(), &["push", "--to", &dest]);
    c.args(["-q", "--message-format", "json"]);
    let out = ok(c);
    let pushed = results(&out);
    assert!(
        pushed.iter().any(|p| p["reason"] == "image-pushed"),
        "{out}"
    );
    no_layout(&target, "push");
    if tool("skopeo").is_some() {
        let tags: Value = serde_json::from_str(&ok(Command::new("skopeo").args([
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{dest}"),
        ])))
        .unwrap();
        assert!(
            tags["Tags"]
                .as_array()
                .unwrap()
                .contains(&Value::from("latest")),
            "{tags}"
        );
    }
}

#[test]
fn load_writes_no_layout() {
    if tool("podman").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let target = private_target(tmp.path());
    let tag = unique("side-effects");
    let loaded = ok(oci(
        &target,
        tmp.path(),
        &["load", "--runtime", "podman", "-q", "-t", &tag],
    ));
    let image = format!("localhost/cargo-oci-examples/http-hello:{tag}");
    struct Untag(String);
    impl Drop for Untag {
        fn drop(&mut self) {
            let _ = run(Command::new("podman").args(["untag", &self.0, &self.0]));
        }
    }
    let _cleanup = Untag(image.clone());
    assert!(
        loaded.lines().any(|l| l == image),
        "load printed:\n{loaded}"
    );
    ok(Command::new("podman").args(["image", "exists", &image]));
    no_layout(&target, "load");
}
