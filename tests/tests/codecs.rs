//! zstd images through every reader of layers, end to end: exported and bundled (then run by
//! podman and runc) and used as a `from` base (then run by podman); and `inspect` of an image on
//! a base, layer for layer as skopeo sees it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cargo_oci_tests::*;
use serde_json::Value;

const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A directory under /tmp, removed on drop: podman names an image pulled from a layout after its
/// path, which must be lowercase (the checkout's own path may not be).
struct TmpDir(PathBuf);

impl TmpDir {
    fn new(prefix: &str) -> TmpDir {
        let p = PathBuf::from("/tmp").join(unique(prefix));
        std::fs::create_dir_all(&p).unwrap();
        TmpDir(p)
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Removes a podman image on drop.
struct PodmanImage(String);

impl Drop for PodmanImage {
    fn drop(&mut self) {
        let _ = run(Command::new("podman").args(["rmi", "-f", &self.0]));
    }
}

/// `cargo oci ARGS --release -q --message-format json` in `dir`, which must succeed.
fn oci_json(dir: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--release", "-q", "--message-format", "json"]);
    let out = ok(cargo_oci(dir, &all));
    result(&out)
}

fn media_types(v: &Value) -> Vec<String> {
    v["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["media_type"].as_str().unwrap().to_string())
        .collect()
}

fn digests(v: &Value) -> Vec<String> {
    v["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// `podman run --rm --network=none [ARGS]`: its stdout, the run having succeeded.
fn podman_run(args: &[&str]) -> String {
    let out = run(Command::new("podman")
        .args(["run", "--rm", "--network=none"])
        .args(args)
        .stdin(Stdio::null()));
    assert!(
        out.status.success(),
        "podman run {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn zstd_images_export_and_bundle() {
    let tmp = TmpDir::new("cargo-oci-zstd-flat");
    let dir = example("static-hello");
    let rootfs = tmp.0.join("rootfs.tar");
    let v = oci_json(
        &dir,
        &["export", rootfs.to_str().unwrap(), "--compression", "zstd"],
    );
    assert_eq!(v["format"], "rootfs-tar");
    let types = media_types(&v);
    assert!(
        !types.is_empty() && types.iter().all(|t| t == ZSTD),
        "{types:?}"
    );
    // The rootfs holds the program, whole.
    let mut names = Vec::new();
    let mut ar = tar::Archive::new(std::fs::File::open(&rootfs).unwrap());
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        names.push(e.path().unwrap().to_string_lossy().into_owned());
    }
    for want in ["bin/static-hello", "bin/entrypoint", "etc/passwd"] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }

    let bundle = tmp.0.join("bundle");
    let b = oci_json(
        &dir,
        &[
            "bundle",
            bundle.to_str().unwrap(),
            "--compression",
            "zstd",
            "--no-build",
        ],
    );
    assert_eq!(b["format"], "runtime-bundle");
    assert_eq!(b["digest"], v["digest"], "the same image");
    assert!(bundle.join("rootfs/bin/static-hello").is_file());

    if tool("runc").is_some() {
        let id = unique("codecs-bundle");
        let out = run(Command::new("runc")
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .stdin(Stdio::null()));
        let _ = run(Command::new("runc").args(["delete", "--force", &id]));
        assert!(
            out.status.success(),
            "runc run: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "hello from static-hello\narg: world\n"
        );
    }

    if tool("podman").is_some() {
        let name = format!("localhost/{}:1", unique("codecs-rootfs"));
        let _cleanup = PodmanImage(name.clone());
        ok(Command::new("podman")
            .args(["import", "-q"])
            .arg(&rootfs)
            .arg(&name));
        assert_eq!(
            podman_run(&[
                "--user",
                "65534:65534",
                "--env",
                "GREETING=imported",
                &name,
                "/bin/static-hello",
                "x"
            ]),
            "imported from static-hello\narg: x\n"
        );
    }
}

/// An image of static-hello compressed with `codec` in a layout of its own under `tmp`; its
/// build JSON and `oci:` reference.
fn base_image(tmp: &Path, codec: &str) -> (Value, String) {
    let layout = tmp.join("base");
    let v = oci_json(
        &example("static-hello"),
        &[
            "build",
            "--compression",
            codec,
            "-o",
            layout.to_str().unwrap(),
        ],
    );
    let types = media_types(&v);
    let want = if codec == "zstd" { ZSTD } else { GZIP };
    assert!(
        !types.is_empty() && types.iter().all(|t| t == want),
        "{types:?}"
    );
    let reference = v["references"][0].as_str().unwrap().to_string();
    (v, format!("oci:{}:{reference}", layout.display()))
}

/// A copy of http-hello on `from`, with a target directory of its own holding the shared build's
/// binary and contract helper, packaged with `--no-build`; its directory and target directory.
fn http_hello_on(tmp: &Path, from: &str) -> (PathBuf, PathBuf) {
    built("http-hello");
    let dir = tmp.join("on-base");
    example_on_base(from, &dir);
    (dir.clone(), private_target(tmp))
}

#[test]
fn a_zstd_image_is_a_base() {
    let tmp = TmpDir::new("cargo-oci-zstd-base");
    let (base, from) = base_image(&tmp.0, "zstd");
    let (dir, target) = http_hello_on(&tmp.0, &from);
    let layout = tmp.0.join("image");
    let v = oci_json(
        &dir,
        &[
            "build",
            "--no-build",
            "--target-dir",
            target.to_str().unwrap(),
            "-o",
            layout.to_str().unwrap(),
        ],
    );
    // The base's zstd blobs are kept as they are, under the image's own gzip layers.
    let n = digests(&base).len();
    assert_eq!(digests(&v)[..n], digests(&base)[..], "{v}");
    let types = media_types(&v);
    assert!(types[..n].iter().all(|t| t == ZSTD), "{types:?}");
    assert!(types[n..].iter().all(|t| t == GZIP), "{types:?}");
    let reference = v["references"][0].as_str().unwrap();
    let oci = format!("oci:{}:{reference}", layout.display());

    if tool("skopeo").is_some() {
        // Every blob checked against its digest on the way.
        ok(Command::new("skopeo")
            .args(["copy", "-q", &oci])
            .arg(format!("dir:{}", tmp.0.join("copy").display())));
    }
    if tool("podman").is_none() {
        return;
    }
    let id = ok(Command::new("podman").args(["pull", "-q", &oci]));
    let _cleanup = PodmanImage(id.trim().to_string());
    assert!(
        podman_run(&["--read-only", id.trim(), "self-test"]).starts_with("hello from http-hello"),
        "the image's own program runs"
    );
    assert_eq!(
        podman_run(&["--entrypoint", "/bin/static-hello", id.trim(), "from-base"]),
        "hello from static-hello\narg: from-base\n",
        "the base's program is there and runs"
    );
}

#[test]
fn inspect_lists_every_layer_of_an_image_on_a_base() {
    let tmp = TmpDir::new("cargo-oci-inspect-base");
    let (base, from) = base_image(&tmp.0, "gzip");
    let (dir, target) = http_hello_on(&tmp.0, &from);
    let layout = tmp.0.join("image");
    let t = target.to_str().unwrap();
    let built = oci_json(
        &dir,
        &[
            "build",
            "--no-build",
            "--target-dir",
            t,
            "-o",
            layout.to_str().unwrap(),
        ],
    );
    let inspected = oci_json(&dir, &["inspect", "--no-build", "--target-dir", t]);
    assert_eq!(inspected["reason"], "image-inspected");
    assert_eq!(inspected["digest"], built["digest"], "the same image");
    let layers = inspected["layers"].as_array().unwrap();

    // Every layer, in the order of the manifest skopeo reads.
    let want: Vec<String> = if tool("skopeo").is_some() {
        let reference = built["references"][0].as_str().unwrap();
        let s: Value = serde_json::from_str(&ok(Command::new("skopeo")
            .args(["inspect", &format!("oci:{}:{reference}", layout.display())])))
        .unwrap();
        s["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap().to_string())
            .collect()
    } else {
        digests(&built)
    };
    assert_eq!(digests(&inspected), want, "{inspected}");

    // The base's layers first, with the files their tars hold...
    let n = digests(&base).len();
    let base_files: Vec<&str> = layers[..n]
        .iter()
        .flat_map(|l| {
            assert_eq!(l["origin"], "base-image", "{l}");
            assert_eq!(l["role"], "base", "{l}");
            l["files"].as_array().unwrap()
        })
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(base_files.contains(&"/bin/static-hello"), "{base_files:?}");
    // ...then the image's own, with their plan roles, the service on top.
    let own_roles: Vec<&str> = layers[n..]
        .iter()
        .map(|l| {
            assert_eq!(l["origin"], "own", "{l}");
            l["role"].as_str().unwrap()
        })
        .collect();
    let built_roles: Vec<&str> = built["layers"].as_array().unwrap()[n..]
        .iter()
        .map(|l| l["role"].as_str().unwrap())
        .collect();
    assert_eq!(own_roles, built_roles);
    assert_eq!(own_roles.last(), Some(&"service"), "{own_roles:?}");
    let service = layers.last().unwrap();
    assert!(
        service["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"] == "/bin/http-hello"),
        "{service}"
    );

    // The text report lists as many layers.
    let text = ok(cargo_oci(
        &dir,
        &[
            "inspect",
            "--release",
            "-q",
            "--no-build",
            "--target-dir",
            t,
        ],
    ));
    let rows = text
        .lines()
        .skip_while(|l| !l.starts_with("layers"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .count();
    assert_eq!(rows, want.len(), "{text}");
    assert_eq!(
        text.matches("files of base image layer").count(),
        n,
        "{text}"
    );
}

#[test]
fn a_base_layer_of_an_unknown_media_type_is_a_usage_error() {
    use sha2::{Digest, Sha256};
    let tmp = TmpDir::new("cargo-oci-lz4-base");
    let (_, from) = base_image(&tmp.0, "gzip");
    // The base's manifest, its first layer relabelled with a codec cargo-oci does not read.
    let layout = tmp.0.join("base");
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let mut index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let old = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(blob(&old)).unwrap()).unwrap();
    manifest["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+lz4".into();
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let new = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    std::fs::write(blob(&new), &bytes).unwrap();
    for m in index["manifests"].as_array_mut().unwrap() {
        m["digest"] = new.clone().into();
        m["size"] = bytes.len().into();
    }
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();

    let (dir, target) = http_hello_on(&tmp.0, &from);
    let out_layout = tmp.0.join("image");
    let out = run(cargo_oci(
        &dir,
        &[
            "build",
            "--release",
            "--no-build",
            "--target-dir",
            target.to_str().unwrap(),
            "-o",
            out_layout.to_str().unwrap(),
        ],
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("base layer 1") && err.contains("tar+lz4") && err.contains("help:"),
        "{err}"
    );
    assert!(!out_layout.exists(), "an image was written");
}
