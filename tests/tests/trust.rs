//! Trusting the bytes: a damaged cache (a flipped byte, a truncated blob, a layer-cache record
//! pointing at another blob, another program over the contract helper) never becomes a wrong
//! image, outputs never share bytes with the cache, and outputs that are not cargo-oci's (another
//! image in a layout, a folder that is not a layout, a concurrent build's entries) are kept.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cargo_oci_tests::*;

/// `cargo oci build --release --no-build` of http-hello into `target`, with `extra` options.
fn build(target: &Path, extra: &[&str]) -> Command {
    let mut args = vec![
        "build",
        "--release",
        "--no-build",
        "--message-format",
        "json",
        "--target-dir",
        target.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    cargo_oci(&example("http-hello"), &args)
}

/// A build that must succeed: its JSON result and its stderr.
fn build_ok(target: &Path, extra: &[&str]) -> (serde_json::Value, String) {
    let out = run(build(target, extra));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "build {extra:?} failed:\n{stderr}");
    let json = result(&String::from_utf8_lossy(&out.stdout));
    (json, stderr)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `skopeo copy SRC dir:...`: skopeo checks every blob against its digest. None when skopeo is
/// missing (outside CI).
fn skopeo_copies(src: &str) -> Option<Result<(), String>> {
    tool("skopeo")?;
    let dest = tempfile::tempdir().unwrap();
    let out = run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        src,
        &format!("dir:{}", dest.path().display()),
    ]));
    Some(if out.status.success() {
        Ok(())
    } else {
        Err(stderr(&out))
    })
}

fn assert_skopeo_copies(src: &str) {
    if let Some(r) = skopeo_copies(src) {
        r.unwrap_or_else(|e| panic!("skopeo copy {src} failed: {e}"));
    }
}

/// The largest blob of the store.
fn largest_blob(target: &Path) -> PathBuf {
    std::fs::read_dir(target.join("oci/.store/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .expect("a blob")
}

/// Flips one byte in the middle of a file, in place (as a disk error or a stray write would).
fn flip_byte(path: &Path) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mid = f.metadata().unwrap().len() / 2;
    let mut b = [0u8];
    f.seek(SeekFrom::Start(mid)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(mid)).unwrap();
    f.write_all(&[b[0] ^ 0x5a]).unwrap();
}

/// The `ref.name` of every entry of a layout's index, and whether its manifest, config and
/// layers are all there.
fn index_entries(layout: &Path) -> Vec<(String, bool)> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let name = m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let blob = |d: &serde_json::Value| {
                let hex = d.as_str().unwrap_or_default().trim_start_matches("sha256:");
                layout.join("blobs/sha256").join(hex)
            };
            let manifest = blob(&m["digest"]);
            // Whole: the manifest, its config and every layer.
            let whole = std::fs::read(&manifest)
                .ok()
                .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok())
                .is_some_and(|doc| {
                    blob(&doc["config"]["digest"]).is_file()
                        && doc["layers"]
                            .as_array()
                            .is_some_and(|ls| ls.iter().all(|l| blob(&l["digest"]).is_file()))
                });
            (name, whole)
        })
        .collect()
}

fn reference(json: &serde_json::Value) -> String {
    json["references"][0].as_str().unwrap().to_string()
}

#[test]
fn a_flipped_byte_in_the_store_is_repaired_and_never_shipped() {
    let tmp = tempfile::tempdir().unwrap();
    let target = private_target(tmp.path());
    let layout = tmp.path().join("layout");
    let (first, _) = build_ok(&target, &["-o", layout.to_str().unwrap()]);
    let r = reference(&first);

    // The layout's files are its own, never links into the store.
    for e in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let m = e.unwrap().metadata().unwrap();
        assert_eq!(m.nlink(), 1, "a layout blob shares its inode");
    }

    flip_byte(&largest_blob(&target));
    let (again, err) = build_ok(&target, &["-o", layout.to_str().unwrap()]);
    assert_eq!(again["digest"], first["digest"], "same inputs, same image");
    assert!(err.contains("repaired a damaged cache entry"), "{err}");
    assert_skopeo_copies(&format!("oci:{}:{r}", layout.display()));

    let archive = tmp.path().join("image.tar");
    let (ar, err) = build_ok(
        &target,
        &["--format", "oci-archive", "-o", archive.to_str().unwrap()],
    );
    assert_eq!(ar["digest"], first["digest"]);
    assert!(!err.contains("repaired"), "a repair is told once: {err}");
    assert_skopeo_copies(&format!("oci-archive:{}:{r}", archive.display()));
}

#[test]
fn a_truncated_blob_is_rebuilt_and_the_layout_copy_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let target = private_target(tmp.path());
    let layout = tmp.path().join("layout");
    let (first, _) = build_ok(&target, &["-o", layout.to_str().unwrap()]);
    let blob = largest_blob(&target);
    let name = blob.file_name().unwrap().to_owned();
    let len = std::fs::metadata(&blob).unwrap().len();
    // The layout's copy is truncated too, as a crash mid-copy would leave it.
    for p in [blob.clone(), layout.join("blobs/sha256").join(&name)] {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
    }
    let (again, _) = build_ok(&target, &["-o", layout.to_str().unwrap()]);
    assert_eq!(again["digest"], first["digest"]);
    assert_eq!(
        std::fs::metadata(layout.join("blobs/sha256").join(&name))
            .unwrap()
            .len(),
        len
    );
    assert_skopeo_copies(&format!("oci:{}:{}", layout.display(), reference(&first)));
}

#[test]
fn a_layer_record_pointing_at_another_blob_is_not_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let target = private_target(tmp.path());
    let (first, _) = build_ok(&target, &[]);
    let layers = first["layers"].as_array().unwrap();
    let digest_of = |role: &str| {
        layers
            .iter()
            .find(|l| l["role"] == role)
            .unwrap_or_else(|| panic!("a {role} layer: {layers:?}"))["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (service, other) = (digest_of("service"), digest_of("contracts"));
    // Point the service layer's record at the contracts layer's (valid) blob.
    let mut edited = 0;
    for e in std::fs::read_dir(target.join("oci/.cache/layers")).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        if text.contains(&service) {
            std::fs::write(&p, text.replace(&service, &other)).unwrap();
            edited += 1;
        }
    }
    assert_eq!(edited, 1, "one record names the service layer");
    let (again, err) = build_ok(&target, &[]);
    assert_eq!(
        again["digest"], first["digest"],
        "the service layer is in the image"
    );
    assert!(err.contains("repaired a damaged cache entry"), "{err}");
}

#[test]
fn another_program_over_the_cached_helper_is_not_used() {
    let tmp = tempfile::tempdir().unwrap();
    let target = private_target(tmp.path());
    // A cache of its own: the helpers in it are about to be replaced.
    let cache = tmp.path().join("cache");
    let build_ok = |extra: &[&str]| {
        let out = run(build(&target, extra).env("CARGO_OCI_CACHE_DIR", &cache));
        let stderr = stderr(&out);
        assert!(out.status.success(), "build failed:\n{stderr}");
        let json = result(&String::from_utf8_lossy(&out.stdout));
        (json, stderr)
    };
    let (first, _) = build_ok(&[]);
    // Every cached helper (the embedded one written out, or one built per target) becomes
    // another program.
    let bin = cache.join("helper/bin");
    let helpers: Vec<PathBuf> = std::fs::read_dir(&bin)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            !name.starts_with('.') && !name.ends_with(".sha256")
        })
        .collect();
    assert!(!helpers.is_empty(), "a cached helper");
    for h in &helpers {
        std::fs::copy(target.join("release/http-hello"), h).unwrap();
    }
    let (again, err) = build_ok(&[]);
    assert_eq!(
        again["digest"], first["digest"],
        "the entrypoint is the helper"
    );
    assert!(err.contains("contract helper"), "{err}");
}

#[test]
fn a_layout_keeps_other_images_and_a_foreign_folder_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let target = private_target(tmp.path());
    let layout = tmp.path().join("layout");
    // Another image (zstd layers: blobs of its own) copied in by skopeo under another name.
    let archive = tmp.path().join("other.tar");
    let (other, _) = build_ok(
        &target,
        &[
            "--compression",
            "zstd",
            "--format",
            "oci-archive",
            "-o",
            archive.to_str().unwrap(),
        ],
    );
    let other_ref = "localhost/someone-else/app:1";
    if tool("skopeo").is_some() {
        ok(Command::new("skopeo").args([
            "copy",
            "--quiet",
            &format!("oci-archive:{}:{}", archive.display(), reference(&other)),
            &format!("oci:{}:{other_ref}", layout.display()),
        ]));
        let (ours, _) = build_ok(&target, &["-o", layout.to_str().unwrap()]);
        let names: Vec<String> = index_entries(&layout).into_iter().map(|e| e.0).collect();
        assert!(names.iter().any(|n| n == other_ref), "{names:?}");
        assert!(names.contains(&reference(&ours)), "{names:?}");
        assert_skopeo_copies(&format!("oci:{}:{other_ref}", layout.display()));
        assert_skopeo_copies(&format!("oci:{}:{}", layout.display(), reference(&ours)));
        // A rebuild replaces its own entries and keeps the other image's.
        let (_, _) = build_ok(&target, &["-o", layout.to_str().unwrap(), "--debug"]);
        let names: Vec<String> = index_entries(&layout).into_iter().map(|e| e.0).collect();
        assert!(names.iter().any(|n| n == other_ref), "{names:?}");
        assert_skopeo_copies(&format!("oci:{}:{other_ref}", layout.display()));
    }

    let folder = tmp.path().join("folder");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("notes.txt"), "mine").unwrap();
    let out = run(build(&target, &["-o", folder.to_str().unwrap()]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("not an OCI image layout") && err.contains("help:"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["notes.txt"], "nothing written into the folder");
}

#[test]
fn concurrent_builds_into_one_layout_leave_a_whole_index() {
    let tmp = tempfile::tempdir().unwrap();
    let target = private_target(tmp.path());
    let layout = tmp.path().join("layout");
    let l = layout.to_str().unwrap();
    build_ok(&target, &["-o", l, "--debug"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    for round in 0..10 {
        assert!(
            std::time::Instant::now() < deadline,
            "round {round}: too slow"
        );
        let mut a = build(&target, &["-o", l]);
        let mut b = build(&target, &["-o", l, "--debug"]);
        let (ca, cb) = (a.spawn().unwrap(), b.spawn().unwrap());
        let (oa, ob) = (
            ca.wait_with_output().unwrap(),
            cb.wait_with_output().unwrap(),
        );
        assert!(oa.status.success(), "round {round}: {}", stderr(&oa));
        assert!(ob.status.success(), "round {round}: {}", stderr(&ob));
        let entries = index_entries(&layout);
        assert!(!entries.is_empty(), "round {round}");
        for (name, present) in &entries {
            assert!(
                present,
                "round {round}: {name} names a manifest or blob that is gone"
            );
        }
    }
    for (name, _) in index_entries(&layout) {
        assert_skopeo_copies(&format!("oci:{l}:{name}"));
    }
}

#[test]
fn workspace_members_of_one_name_get_layouts_of_their_own() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(
        ws.join("Cargo.toml"),
        "[workspace]\nmembers = [\"one/app\", \"two/app\"]\nresolver = \"2\"\n",
    )
    .unwrap();
    for m in ["one", "two"] {
        let p = ws.join(m).join("app");
        std::fs::create_dir_all(p.join("src")).unwrap();
        std::fs::write(
            p.join("Cargo.toml"),
            format!(
                "[package]\nname = \"trust-{m}-app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
                 [package.metadata.oci]\nname = \"localhost/{m}/app\"\n"
            ),
        )
        .unwrap();
        std::fs::write(
            p.join("src/main.rs"),
            format!("fn main() {{ println!(\"{m}\"); }}\n"),
        )
        .unwrap();
    }
    let mut paths = Vec::new();
    for m in ["one", "two"] {
        let out = ok(cargo_oci(
            &ws,
            &[
                "build",
                "-q",
                "-p",
                &format!("trust-{m}-app"),
                "--message-format",
                "json",
            ],
        ));
        let v = result(&out);
        paths.push(PathBuf::from(v["path"].as_str().unwrap()));
    }
    assert_ne!(paths[0], paths[1]);
    for (p, m) in paths.iter().zip(["one", "two"]) {
        let names: Vec<String> = index_entries(p).into_iter().map(|e| e.0).collect();
        assert!(
            names
                .iter()
                .all(|n| n.starts_with(&format!("localhost/{m}/app:"))),
            "{}: {names:?}",
            p.display()
        );
    }
}

#[test]
fn stale_temporary_files_go_and_clean_prunes_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let target = private_target(tmp.path());
    let (first, _) = build_ok(&target, &[]);
    let layout = PathBuf::from(first["path"].as_str().unwrap());
    let store = target.join("oci/.store/sha256");
    let stale = [store.join(".tmp-old"), layout.join(".cargo-oci-old")];
    let fresh = [store.join(".tmp-new"), layout.join(".cargo-oci-new")];
    for p in stale.iter().chain(&fresh) {
        std::fs::write(p, "partial").unwrap();
    }
    for p in &stale {
        ok(Command::new("touch").args(["-d", "2 hours ago"]).arg(p));
    }
    build_ok(&target, &[]);
    for p in &stale {
        assert!(!p.exists(), "{} stays", p.display());
    }
    for p in &fresh {
        assert!(
            p.exists(),
            "{} (another run's, maybe) was removed",
            p.display()
        );
    }

    // A blob no layout references, and a record of it.
    let junk = store.join(format!("{:064x}", 7));
    std::fs::write(&junk, "unreferenced").unwrap();
    let out = ok(cargo_oci(
        &example("http-hello"),
        &[
            "clean",
            "--message-format",
            "json",
            "--target-dir",
            target.to_str().unwrap(),
        ],
    ));
    let v = result(&out);
    assert!(v["files"].as_u64().unwrap() >= 3, "{v}");
    assert!(!junk.exists());
    for p in &fresh {
        assert!(
            !p.exists(),
            "clean removes every temporary file: {}",
            p.display()
        );
    }
    assert_skopeo_copies(&format!("oci:{}:{}", layout.display(), reference(&first)));
    // The layout's blobs stay in the store: the next build reuses every layer.
    let (again, _) = build_ok(&target, &[]);
    assert!(
        again["layers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["reused"] == true),
        "{again}"
    );

    ok(cargo_oci(
        &example("http-hello"),
        &[
            "clean",
            "--all",
            "-q",
            "--target-dir",
            target.to_str().unwrap(),
        ],
    ));
    assert!(!target.join("oci").exists());
    assert!(target.join("release/http-hello").is_file());
}

#[test]
fn outputs_are_readable_by_others_whatever_the_umask_allows() {
    let tmp = tempfile::tempdir().unwrap();
    let target = private_target(tmp.path());
    let layout = tmp.path().join("layout");
    let archive = tmp.path().join("image.tar");
    // Builds under umask 022 (the usual default) through a shell.
    let under_umask = |extra: &[&str]| {
        let c = build(&target, extra);
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg("umask 022 && exec \"$@\"")
            .arg("sh")
            .arg(c.get_program())
            .args(c.get_args())
            .current_dir(example("http-hello"))
            .env("CARGO_TARGET_DIR", examples_target_dir())
            .env_remove("SOURCE_DATE_EPOCH");
        ok(sh);
    };
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let layout_files = || {
        let mut v = vec![layout.join("index.json"), layout.join("oci-layout")];
        for e in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
            v.push(e.unwrap().path());
        }
        v
    };
    under_umask(&["-o", layout.to_str().unwrap()]);
    under_umask(&["--format", "oci-archive", "-o", archive.to_str().unwrap()]);
    assert_eq!(mode(&archive), 0o644);
    assert_eq!(mode(&layout), 0o755);
    assert_eq!(mode(&layout.join("blobs/sha256")), 0o755);
    for p in layout_files() {
        assert_eq!(mode(&p), 0o644, "{}", p.display());
    }

    // A layout whose files are private (as earlier versions wrote them) is opened up on the
    // next build, though nothing in it changes.
    for p in layout_files() {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    under_umask(&["-o", layout.to_str().unwrap()]);
    for p in layout_files() {
        assert_eq!(mode(&p), 0o644, "{}", p.display());
    }
}
