//! Layer compression and the layer cache, end to end: zstd layers read by skopeo and run by
//! podman, and a rebuild after only the service changed writing only the service layer.

use std::path::{Path, PathBuf};
use std::process::Command;

use cargo_oci_tests::*;

fn build_json(target: &Path, extra: &[&str]) -> serde_json::Value {
    build_json_in(target, &test_cache_dir(), extra)
}

/// [`build_json`] with `machine` as the per-machine cache.
fn build_json_in(target: &Path, machine: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "build",
        "--release",
        "--no-build",
        "-q",
        "--message-format",
        "json",
        "--target-dir",
        target.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = ok(cargo_oci(&example("http-hello"), &args).env("CARGO_OCI_CACHE_DIR", machine));
    result(&out)
}

/// skopeo copies the built image out of its layout (when skopeo is here), checking every blob's
/// digest on the way.
fn skopeo_copies_every_blob(built: &serde_json::Value, to: &Path) {
    if tool("skopeo").is_some() {
        let layout = built["path"].as_str().unwrap();
        let reference = built["references"][0].as_str().unwrap();
        ok(Command::new("skopeo").args([
            "copy",
            "-q",
            &format!("oci:{layout}:{reference}"),
            &format!("dir:{}", to.display()),
        ]));
    }
}

fn layers(v: &serde_json::Value) -> Vec<(String, String, bool)> {
    v["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            (
                l["role"].as_str().unwrap().to_string(),
                l["digest"].as_str().unwrap().to_string(),
                l["reused"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn another_checkout_takes_the_machines_layers_and_compresses_only_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let machine = tmp.path().join("machine-cache");
    let (a, b) = (
        private_target(&tmp.path().join("a")),
        private_target(&tmp.path().join("b")),
    );
    let first = build_json_in(&a, &machine, &[]);
    assert!(layers(&first).iter().all(|l| !l.2), "{first}");
    // Another target directory (a new checkout, or a CI job) on the same machine.
    let second = build_json_in(&b, &machine, &[]);
    let (l1, l2) = (layers(&first), layers(&second));
    assert_eq!(l1.len(), l2.len());
    for (x, y) in l1.iter().zip(&l2) {
        assert_eq!(x.1, y.1, "the {} layer has the same bytes", x.0);
        if y.0 == "service" {
            assert!(
                !y.2,
                "the service, a file of the project's, is compressed: {second}"
            );
        } else {
            assert!(
                y.2,
                "the machine's {} layer is taken as it is: {second}",
                y.0
            );
        }
    }
    assert_eq!(first["digest"], second["digest"]);
    // Every blob is in the second layout whole: skopeo verifies each digest while copying.
    skopeo_copies_every_blob(&second, &tmp.path().join("copy"));
}

#[test]
fn a_per_machine_cache_that_cannot_hold_layers_only_costs_the_compression() {
    let tmp = tempfile::tempdir().unwrap();
    let machine = tmp.path().join("machine-cache");
    std::fs::create_dir_all(&machine).unwrap();
    // Where the machine's layers would go, a file.
    std::fs::write(machine.join("layers"), b"not a directory").unwrap();
    let target = private_target(&tmp.path().join("a"));
    let out = run(cargo_oci(
        &example("http-hello"),
        &[
            "build",
            "--release",
            "--no-build",
            "-v",
            "--message-format",
            "json",
            "--target-dir",
            target.to_str().unwrap(),
        ],
    )
    .env("CARGO_OCI_CACHE_DIR", &machine));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("the machine's layer cache is not used"),
        "{err}"
    );
    let built = result(&String::from_utf8_lossy(&out.stdout));
    assert!(layers(&built).iter().all(|l| !l.2), "{built}");
}

#[test]
fn only_changed_layers_are_written_again() {
    let tmp = tempfile::tempdir().unwrap();
    let target = private_target(tmp.path());
    // A machine that has never built an image: nothing to reuse anywhere.
    let machine = tmp.path().join("machine-cache");
    let build_json = |target: &Path, extra: &[&str]| build_json_in(target, &machine, extra);

    let first = build_json(&target, &[]);
    let l1 = layers(&first);
    // base, the closure (libc and the loader in layers of their own), contracts, service.
    let roles: Vec<&str> = l1.iter().map(|l| l.0.as_str()).collect();
    assert_eq!(roles.first(), Some(&"base"), "{roles:?}");
    assert_eq!(roles.last(), Some(&"service"), "{roles:?}");
    assert!(
        roles.contains(&"contracts") && roles.iter().any(|r| r.starts_with("closure")),
        "{roles:?}"
    );
    assert!(
        l1.iter().all(|l| !l.2),
        "a cold cache reuses nothing: {l1:?}"
    );

    let second = build_json(&target, &[]);
    assert!(
        layers(&second).iter().all(|l| l.2),
        "nothing changed: {second}"
    );
    assert_eq!(first["digest"], second["digest"]);

    // A new build of the service: same program, other bytes.
    let bin = target.join("release/http-hello");
    let mut bytes = std::fs::read(&bin).unwrap();
    bytes.extend_from_slice(b"\0rebuilt");
    std::fs::remove_file(&bin).unwrap();
    std::fs::write(&bin, &bytes).unwrap();
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let third = build_json(&target, &[]);
    let l3 = layers(&third);
    for (a, b) in l1.iter().zip(&l3) {
        if a.0 == "service" {
            assert!(!b.2, "the service layer is written again");
            assert_ne!(a.1, b.1);
        } else {
            assert!(b.2, "the {} layer is reused", a.0);
            assert_eq!(a.1, b.1);
        }
    }
    assert_ne!(first["digest"], third["digest"]);

    // The reused blobs are in the new layout: skopeo verifies every digest while copying.
    skopeo_copies_every_blob(&third, &tmp.path().join("copy"));
}

#[test]
fn zstd_layers_are_read_by_skopeo_and_run_by_podman() {
    let tmp = tempfile::tempdir().unwrap();
    let target = private_target(tmp.path());
    // podman names an image pulled from a layout after its path, which must be lowercase
    // (the checkout's own path may not be).
    let layout = PathBuf::from("/tmp").join(unique("cargo-oci-zstd-layout"));
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Remove(layout.clone());
    let v = build_json(
        &target,
        &["--compression", "zstd", "-o", layout.to_str().unwrap()],
    );
    let reference = v["references"][0].as_str().unwrap().to_string();
    let zstd = "application/vnd.oci.image.layer.v1.tar+zstd";

    if tool("skopeo").is_some() {
        let oci = format!("oci:{}:{reference}", layout.display());
        let raw: serde_json::Value =
            serde_json::from_str(&ok(Command::new("skopeo").args(["inspect", "--raw", &oci])))
                .unwrap();
        let types: Vec<&str> = raw["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["mediaType"].as_str().unwrap())
            .collect();
        assert!(
            types.len() >= 4 && types.iter().all(|t| *t == zstd),
            "{raw}"
        );
        // skopeo decompresses nothing on copy, but checks every blob's digest and size.
        ok(Command::new("skopeo").args([
            "copy",
            "-q",
            &oci,
            &format!("dir:{}", tmp.path().join("copy").display()),
        ]));
    }

    if tool("podman").is_none() {
        return;
    }
    let check = |image: &str, what: &str| {
        let out = run(Command::new("podman").args([
            "run",
            "--rm",
            "--read-only",
            "--network=none",
            image,
            "self-test",
        ]));
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with("hello from http-hello"),
            "{what}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    };
    // podman unpacks the zstd layers itself...
    let id = ok(Command::new("podman").args([
        "pull",
        "-q",
        &format!("oci:{}:{reference}", layout.display()),
    ]));
    check(id.trim(), "podman pull oci: (zstd layers)");
    // ...and a docker-archive of a zstd build carries the same tars, decompressed by cargo-oci.
    let archive = tmp.path().join("zstd-docker.tar");
    let tag = unique("zstd");
    let v2 = build_json(
        &target,
        &[
            "--compression",
            "zstd",
            "--format",
            "docker-archive",
            "-o",
            archive.to_str().unwrap(),
            "-t",
            &tag,
        ],
    );
    assert_eq!(
        v2["config_digest"], v["config_digest"],
        "same image whatever the output format"
    );
    ok(Command::new("podman").args(["load", "-q", "-i", archive.to_str().unwrap()]));
    let name = v["name"].as_str().unwrap();
    check(
        &format!("{name}:{tag}"),
        "podman load (docker-archive of zstd build)",
    );
}

#[test]
fn an_unknown_compression_is_a_usage_error() {
    let out = run(cargo_oci(
        &example("http-hello"),
        &["build", "--no-build", "--compression", "brotli"],
    ));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("brotli") && err.contains("gzip") && err.contains("zstd"),
        "the error names the value and the choices: {err}"
    );
}

#[test]
fn the_contracts_layer_is_one_blob_for_every_service() {
    // Two services with different contracts (health-service has probes and a debug variant,
    // http-hello none): the helper's layer is the same blob, their settings are in the service
    // layer.
    let digest_of = |b: &Built, role: &str| {
        b.json["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .find(|l| l["role"] == role)
            .unwrap_or_else(|| panic!("{}: no {role} layer: {}", b.example, b.json))["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (a, b) = (built("http-hello"), built("health-service"));
    assert_ne!(a.digest, b.digest);
    assert_eq!(digest_of(&a, "contracts"), digest_of(&b, "contracts"));
    assert_ne!(digest_of(&a, "service"), digest_of(&b, "service"));
    // What the layer holds: the helper and the link every image has, nothing of a service.
    let blob = b
        .layout
        .join("blobs/sha256")
        .join(digest_of(&b, "contracts").trim_start_matches("sha256:"));
    let list = ok(Command::new("tar").arg("-tzf").arg(&blob));
    let mut names: Vec<&str> = list.lines().collect();
    names.sort();
    assert_eq!(names, ["bin/", "bin/entrypoint", "bin/runtime"], "{list}");
}
