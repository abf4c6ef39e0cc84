//! More trust cases: errors about inputs never quote them (a `from` or `merge` input that is a
//! secret file, a layout blob linked to one), a full disk is named as the cause (during the
//! contract helper's write to the cache and while writing a layout or an archive, leaving no temporary file),
//! and a damaged cached base blob is fetched again, not used.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cargo_oci_tests::registry::Registry;
use cargo_oci_tests::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The marker of the fake secret: never in any message.
const SECRET: &str = "FAKE-SECRET-hunter2-do-not-print";

/// A copy of http-hello (on `from`, when given) with a target directory of its own holding the
/// shared build's binary, so that `--no-build` compiles nothing.
struct App {
    dir: PathBuf,
    target: PathBuf,
    tmp: tempfile::TempDir,
}

impl App {
    fn new(from: Option<&str>) -> App {
        built("http-hello");
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("app");
        match from {
            Some(from) => example_on_base(from, &dir),
            None => copy_example("http-hello", &dir),
        }
        let target = tmp.path().join("target");
        fill_target(&target);
        App { dir, target, tmp }
    }

    /// `cargo oci build --release --no-build` with `extra` arguments, into `target`.
    fn build_in(&self, target: &Path, extra: &[&str]) -> Output {
        run(self.build_cmd(target, extra))
    }

    /// The command of [`App::build_in`].
    fn build_cmd(&self, target: &Path, extra: &[&str]) -> Command {
        let mut c = cargo_oci(
            &self.dir,
            &[
                "build",
                "--release",
                "--no-build",
                "--message-format",
                "json",
            ],
        );
        c.args(extra).arg("--target-dir").arg(target);
        c.env("DOCKER_CONFIG", self.tmp.path())
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("CARGO_OCI_REGISTRY_USER");
        c
    }

    fn build(&self, extra: &[&str]) -> Output {
        self.build_in(&self.target, extra)
    }
}

/// Puts the shared build's http-hello binary in `target`.
fn fill_target(target: &Path) {
    let shared = examples_target_dir();
    std::fs::create_dir_all(target.join("release")).unwrap();
    std::fs::copy(
        shared.join("release/http-hello"),
        target.join("release/http-hello"),
    )
    .unwrap();
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn success(out: &Output) -> Value {
    assert!(out.status.success(), "{}", stderr(out));
    result(&String::from_utf8_lossy(&out.stdout))
}

/// A failure with exit code `code` whose stderr never shows the secret; returns the stderr.
fn fails_without_secret(out: &Output, code: i32, what: &str) -> String {
    let err = stderr(out);
    assert!(
        !err.contains("hunter2") && !err.contains("FAKE-SECRET"),
        "{what}: the message quotes the file:\n{err}"
    );
    assert_eq!(out.status.code(), Some(code), "{what}:\n{err}");
    err
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A file of secret-looking lines, larger than a tar header.
fn secret_file(dir: &Path) -> PathBuf {
    let p = dir.join("credentials.env");
    std::fs::write(&p, format!("TOKEN={SECRET}\n").repeat(40)).unwrap();
    p
}

/// A tar holding a `manifest.json` that is valid JSON of the wrong shape, quoting the secret.
fn wrong_manifest_tar(dir: &Path) -> PathBuf {
    let p = dir.join("wrong-manifest.tar");
    let body = serde_json::to_vec(&json!([SECRET])).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(body.len() as u64);
    b.append_data(&mut h, "manifest.json", body.as_slice())
        .unwrap();
    std::fs::write(&p, b.into_inner().unwrap()).unwrap();
    p
}

#[test]
fn errors_about_a_base_or_a_merge_input_never_quote_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = secret_file(tmp.path());
    let wrong = wrong_manifest_tar(tmp.path());
    for (scheme, file) in [
        ("docker-archive", &secret),
        ("oci-archive", &secret),
        ("docker-archive", &wrong),
    ] {
        let from = format!("{scheme}:{}", file.display());
        let app = App::new(Some(&from));
        let layout = app.tmp.path().join("layout");
        let out = app.build(&["-o", layout.to_str().unwrap()]);
        let err = fails_without_secret(&out, 2, &from);
        assert!(
            err.contains(file.to_str().unwrap()) && err.contains("help:"),
            "{from}: the message names the file:\n{err}"
        );
        assert!(!layout.exists(), "{from}: nothing is written");
    }
    for input in [&secret, &wrong] {
        let merged = tmp.path().join("merged.tar");
        let out = run(Command::new(cargo_oci_bin())
            .args(["oci", "merge", "-o"])
            .arg(&merged)
            .arg(input));
        let err = fails_without_secret(&out, 2, "merge");
        assert!(err.contains(input.to_str().unwrap()), "{err}");
        assert!(!merged.exists());
    }
}

/// Writes a blob into the layout `dir`, returning its descriptor.
fn put_blob(dir: &Path, media_type: &str, bytes: &[u8]) -> Value {
    let d = sha256(bytes);
    std::fs::write(dir.join("blobs/sha256").join(&d[7..]), bytes).unwrap();
    json!({"mediaType": media_type, "digest": d, "size": bytes.len()})
}

#[test]
fn a_layout_blob_linked_outside_the_layout_is_refused_unread() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = secret_file(tmp.path());
    // A layout whose only layer (an uncompressed tar, so its digest is its diff_id) is a link
    // to the secret file.
    let layout = tmp.path().join("base");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let layer = sha256(b"whatever the layer should have been");
    std::os::unix::fs::symlink(&secret, layout.join("blobs/sha256").join(&layer[7..])).unwrap();
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer]},
    });
    let config = put_blob(
        &layout,
        "application/vnd.oci.image.config.v1+json",
        &serde_json::to_vec(&config).unwrap(),
    );
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": 1}],
    });
    let manifest = put_blob(
        &layout,
        "application/vnd.oci.image.manifest.v1+json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [manifest]})).unwrap(),
    )
    .unwrap();
    let app = App::new(Some(&format!("oci:{}", layout.display())));
    let out = app.build(&["-o", app.tmp.path().join("out").to_str().unwrap()]);
    let err = fails_without_secret(&out, 2, "a blob linked outside");
    assert!(
        err.contains("outside the layout") && err.contains(&layer[7..]),
        "{err}"
    );

    // A blob linked to a file inside the layout is read as any other.
    let base = built("static-hello");
    let copy = tmp.path().join("linked");
    ok(Command::new("cp").arg("-r").arg(&base.layout).arg(&copy));
    let index: Value =
        serde_json::from_slice(&std::fs::read(copy.join("index.json")).unwrap()).unwrap();
    let m = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == base.reference())
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(copy.join("blobs/sha256").join(&m[7..])).unwrap())
            .unwrap();
    let hex = &manifest["layers"][0]["digest"].as_str().unwrap()[7..];
    std::fs::create_dir_all(copy.join("shared")).unwrap();
    std::fs::rename(
        copy.join("blobs/sha256").join(hex),
        copy.join("shared").join(hex),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        Path::new("../../shared").join(hex),
        copy.join("blobs/sha256").join(hex),
    )
    .unwrap();
    let app = App::new(Some(&format!(
        "oci:{}:{}",
        copy.display(),
        base.reference()
    )));
    let out_layout = app.tmp.path().join("out");
    let built = success(&app.build(&["-o", out_layout.to_str().unwrap()]));
    assert_eq!(
        built["layers"][0]["digest"], manifest["layers"][0]["digest"],
        "{built}"
    );
    if tool("skopeo").is_some() {
        let dest = tempfile::tempdir().unwrap();
        ok(Command::new("skopeo")
            .args(["copy", "-q"])
            .arg(format!(
                "oci:{}:{}",
                out_layout.display(),
                built["references"][0].as_str().unwrap()
            ))
            .arg(format!("dir:{}", dest.path().join("x").display())));
    }
}

/// A tmpfs of `size` mounted at `dir`, unmounted on drop. None when it cannot be mounted
/// (outside CI; in CI that is a failure).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let out = run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir));
        if !out.status.success() {
            assert!(!in_ci(), "cannot mount a tmpfs: {}", stderr(&out));
            eprintln!("SKIP: cannot mount a tmpfs (needs root): {}", stderr(&out));
            return None;
        }
        Some(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Every file under `dir` whose name is one of cargo-oci's temporary files.
fn temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if name.starts_with(".tmp-") || name.starts_with(".cargo-oci-") {
                found.push(e.path());
            }
        }
    }
    found
}

#[test]
fn a_full_disk_while_caching_the_helper_is_named_as_the_cause() {
    let app = App::new(None);
    let small = app.tmp.path().join("small");
    let Some(_mounted) = Tmpfs::mount(&small, "800k") else {
        return;
    };
    // Room for the binary, not for the contract helper in the cache beside it.
    fill_target(&small);
    let cache = small.join("cache");
    let out = run(app
        .build_cmd(&small, &[])
        .env("CARGO_OCI_CACHE_DIR", &cache));
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    let last = err.lines().rfind(|l| l.starts_with("error:"));
    let last = last.unwrap_or_default();
    assert!(
        last.contains("no space left on device")
            && last.contains(&cache.join("helper").display().to_string()),
        "the error names the full disk:\n{err}"
    );
    assert!(
        temporaries(&small).is_empty(),
        "no temporary file is left: {:?}",
        temporaries(&small)
    );
}

#[test]
fn a_full_disk_while_writing_an_output_is_named_and_leaves_no_temporary_file() {
    let app = App::new(None);
    let small = app.tmp.path().join("small");
    let Some(_mounted) = Tmpfs::mount(&small, "100k") else {
        return;
    };
    for (format, out) in [("oci", "layout"), ("oci-archive", "image.tar")] {
        let dest = small.join(out);
        let run = app.build(&["--format", format, "-o", dest.to_str().unwrap()]);
        let err = stderr(&run);
        assert_eq!(run.status.code(), Some(1), "{format}:\n{err}");
        assert!(
            err.contains("is full (no space left on device)")
                && err.contains(&small.display().to_string()),
            "{format}: the message says the disk is full and where:\n{err}"
        );
        assert_eq!(temporaries(&small), Vec::<PathBuf>::new(), "{format}");
        assert!(!small.join("image.tar").exists());
    }
}

#[test]
fn a_damaged_cached_base_blob_is_fetched_again() {
    if tool("skopeo").is_none() {
        return;
    }
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let base = built("static-hello");
    let dest = format!("docker://{}/bases/static:1", reg.addr);
    ok(Command::new("skopeo")
        .args(["copy", "-q", "--dest-tls-verify=false"])
        .arg(base.oci_ref())
        .arg(&dest));
    let inspected: Value = serde_json::from_str(&ok(Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(&dest)))
    .unwrap();
    let pinned = format!(
        "{}/bases/static@{}",
        reg.addr,
        inspected["Digest"].as_str().unwrap()
    );
    let app = App::new(Some(&pinned));
    let layout = app.tmp.path().join("layout");
    let first = success(&app.build(&["-o", layout.to_str().unwrap()]));

    // Damage the base's first layer and its config in the cache.
    let store = app.target.join("oci/.store/sha256");
    let layer = inspected["Layers"][0].as_str().unwrap().to_string();
    let config: Value = serde_json::from_str(&ok(Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(&dest)))
    .unwrap();
    let config = config["config"]["digest"].as_str().unwrap().to_string();
    for d in [&layer, &config] {
        let p = store.join(&d[7..]);
        let mut bytes = std::fs::read(&p).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        std::fs::write(&p, bytes).unwrap();
    }

    std::fs::remove_dir_all(&layout).unwrap();
    let out = app.build(&["-o", layout.to_str().unwrap()]);
    let again = success(&out);
    let err = stderr(&out);
    assert_eq!(again["digest"], first["digest"], "the same image:\n{err}");
    for d in [&layer, &config] {
        assert!(
            err.lines()
                .any(|l| l.contains("repaired") && l.contains(d.as_str())),
            "stderr says {d} was repaired:\n{err}"
        );
        let bytes = std::fs::read(store.join(&d[7..])).unwrap();
        assert_eq!(&sha256(&bytes), d, "the cache holds the blob again");
    }
    let copied = tempfile::tempdir().unwrap();
    ok(Command::new("skopeo")
        .args(["copy", "-q"])
        .arg(format!(
            "oci:{}:{}",
            layout.display(),
            again["references"][0].as_str().unwrap()
        ))
        .arg(format!("dir:{}", copied.path().join("x").display())));
}
