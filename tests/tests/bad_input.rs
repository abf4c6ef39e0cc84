//! Bad input: each mistake a user can make exits non-zero with a message that names the problem
//! and where it is, and leaves the existing output exactly as it was, with no stray files.

use std::path::{Path, PathBuf};
use std::process::Command;

use cargo_oci_tests::*;

/// A throwaway package: Cargo.toml with `extra` appended, a trivial main.
fn package(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(p.join("src")).unwrap();
    std::fs::write(
        p.join("Cargo.toml"),
        format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n\n{extra}"),
    )
    .unwrap();
    std::fs::write(p.join("src/main.rs"), "fn main() { println!(\"hi\"); }\n").unwrap();
    p
}

fn oci(dir: &Path, args: &[&str]) -> std::process::Output {
    let mut c = Command::new(cargo_oci_bin());
    c.arg("oci").args(args).current_dir(dir);
    c.env("CARGO_TARGET_DIR", dir.join("target"))
        .env("CARGO_OCI_CACHE_DIR", test_cache_dir());
    run(&mut c)
}

/// Every file under `dir` with its contents.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Builds a good image first, then breaks the package with `break_it` and checks the failure.
fn fails_cleanly(
    name: &str,
    break_it: impl FnOnce(&Path),
    args: &[&str],
    code: i32,
    says: &[&str],
) {
    let tmp = tempfile::tempdir().unwrap();
    let p = package(
        tmp.path(),
        name,
        "[package.metadata.oci]\nname = \"localhost/bad\"\n",
    );
    let good = oci(&p, &["build", "-q"]);
    assert!(
        good.status.success(),
        "the good build failed: {}",
        String::from_utf8_lossy(&good.stderr)
    );
    let layout = p.join("target/oci/localhost+bad");
    let before = snapshot(&layout);
    assert!(before.iter().any(|(f, _)| f.ends_with("index.json")));

    break_it(&p);
    let out = oci(&p, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{name}: exit code; stderr:\n{stderr}"
    );
    for s in says {
        assert!(
            stderr.contains(s),
            "{name}: the message should mention {s:?}:\n{stderr}"
        );
    }
    assert!(
        out.stdout.is_empty(),
        "{name}: nothing on stdout on failure"
    );
    assert_eq!(
        snapshot(&layout),
        before,
        "{name}: the previous output must be untouched"
    );
}

fn append(p: &Path, text: &str) {
    let toml = p.join("Cargo.toml");
    let mut s = std::fs::read_to_string(&toml).unwrap();
    s.push_str(text);
    std::fs::write(toml, s).unwrap();
}

#[test]
fn unknown_key() {
    fails_cleanly(
        "unknown-key",
        |p| append(p, "tgas = [\"x\"]\n"),
        &["build"],
        2,
        &[
            "Cargo.toml",
            "tgas",
            "package.metadata.oci",
            "unknown field",
        ],
    );
}

#[test]
fn wrong_type() {
    fails_cleanly(
        "wrong-type",
        |p| append(p, "ports = [8080]\n"),
        &["build"],
        2,
        &[
            "Cargo.toml",
            "package.metadata.oci.ports[0]",
            "expected a string",
        ],
    );
}

#[test]
fn missing_bin_with_several_binaries() {
    fails_cleanly(
        "two-bins",
        |p| {
            std::fs::create_dir_all(p.join("src/bin")).unwrap();
            std::fs::write(p.join("src/bin/other.rs"), "fn main() {}\n").unwrap();
        },
        &["build"],
        2,
        &[
            "Cargo.toml",
            "several binaries",
            "other, two-bins",
            "bin = \"NAME\"",
        ],
    );
}

#[test]
fn bin_that_does_not_exist() {
    fails_cleanly(
        "no-such-bin",
        |_| {},
        &["build", "--bin", "nope"],
        2,
        &["no binary named `nope`"],
    );
}

/// Replaces the built binary with something else and packages it with --no-build.
fn swap_binary(p: &Path, name: &str, make: impl FnOnce(&Path)) {
    let ok_build = oci(p, &["build", "-q"]);
    assert!(ok_build.status.success());
    let bin = p.join("target/release").join(name);
    std::fs::remove_file(&bin).unwrap();
    make(&bin);
}

#[test]
fn non_elf_executable() {
    fails_cleanly(
        "not-elf",
        |p| {
            swap_binary(p, "not-elf", |bin| {
                std::fs::write(bin, "#!/bin/sh\necho hi\n").unwrap();
            })
        },
        &["build", "--no-build"],
        1,
        &["not-elf", "not an ELF"],
    );
}

#[test]
fn binary_whose_library_is_missing() {
    if tool("cc").is_none() {
        return;
    }
    fails_cleanly(
        "missing-lib",
        |p| {
            swap_binary(p, "missing-lib", |bin| {
                let dir = bin.parent().unwrap();
                std::fs::write(dir.join("gone.c"), "int gone(void) { return 1; }\n").unwrap();
                std::fs::write(
                    dir.join("main.c"),
                    "int gone(void); int main(void) { return gone(); }\n",
                )
                .unwrap();
                ok(Command::new("cc").current_dir(dir).args([
                    "-shared",
                    "-fPIC",
                    "-o",
                    "libcargooci_gone.so",
                    "gone.c",
                ]));
                ok(Command::new("cc")
                    .current_dir(dir)
                    .args(["-o"])
                    .arg(bin)
                    .args(["main.c", "-L.", "-lcargooci_gone"]));
                std::fs::remove_file(dir.join("libcargooci_gone.so")).unwrap();
            })
        },
        &["build", "--no-build"],
        1,
        &[
            "libcargooci_gone.so",
            "missing-lib",
            "/usr/lib/x86_64-linux-gnu",
        ],
    );
}

#[test]
fn unwritable_output_path() {
    fails_cleanly(
        "bad-output",
        |_| {},
        &[
            "build",
            "--format",
            "docker-archive",
            "-o",
            "Cargo.toml/image.tar",
        ],
        2,
        &["Cargo.toml/image.tar", "not a directory"],
    );
}

#[test]
fn archive_format_without_output_file() {
    fails_cleanly(
        "no-output",
        |_| {},
        &["build", "--format", "oci-archive"],
        2,
        &["-o FILE"],
    );
}

#[test]
fn interrupted_archive_write_leaves_the_old_file() {
    // A failing build (the binary is not ELF) must not replace or truncate an existing archive.
    let tmp = tempfile::tempdir().unwrap();
    let p = package(tmp.path(), "keep-archive", "");
    let out = p.join("image.tar");
    let good = oci(
        &p,
        &[
            "build",
            "-q",
            "--format",
            "docker-archive",
            "-o",
            "image.tar",
        ],
    );
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let before = std::fs::read(&out).unwrap();
    swap_binary(&p, "keep-archive", |bin| {
        std::fs::write(bin, "not a program").unwrap()
    });
    let bad = oci(
        &p,
        &[
            "build",
            "--no-build",
            "--format",
            "docker-archive",
            "-o",
            "image.tar",
        ],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert_eq!(std::fs::read(&out).unwrap(), before);
    let strays: Vec<_> = std::fs::read_dir(&p)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with(".cargo-oci"))
        .collect();
    assert!(strays.is_empty(), "temporary files left behind: {strays:?}");
}

/// `cargo oci ARGS` in `dir` with a deadline: a build that would hang (reading a named pipe)
/// fails the test instead of blocking it.
fn oci_bounded(dir: &Path, args: &[&str]) -> std::process::Output {
    let out_dir = tempfile::tempdir().unwrap();
    let (out, err) = (out_dir.path().join("out"), out_dir.path().join("err"));
    let mut c = Command::new(cargo_oci_bin());
    c.arg("oci").args(args).current_dir(dir);
    c.env("CARGO_TARGET_DIR", dir.join("target"))
        .env("CARGO_OCI_CACHE_DIR", test_cache_dir());
    c.stdin(std::process::Stdio::null());
    c.stdout(std::fs::File::create(&out).unwrap());
    c.stderr(std::fs::File::create(&err).unwrap());
    let mut child = c.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "cargo oci {args:?} hung for 120 s; stderr:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: std::fs::read(&out).unwrap(),
        stderr: std::fs::read(&err).unwrap(),
    }
}

/// Files, links, a pipe and a whiteout name the refusal cases below point `files` at.
fn boundary_fixtures(p: &Path) {
    use std::os::unix::fs::symlink;
    let outside = p.parent().unwrap().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("config.json"), "{\"auths\": {}}").unwrap();
    for d in ["static", "leaky", "leakydir", "pipedir", "whiteout"] {
        std::fs::create_dir_all(p.join(d)).unwrap();
    }
    std::fs::write(p.join("static/a.txt"), "a").unwrap();
    symlink("/etc/shadow", p.join("leaky/innocent.txt")).unwrap();
    symlink("/etc", p.join("leakydir/etc")).unwrap();
    symlink("/etc", p.join("linkdir")).unwrap();
    symlink(outside.join("config.json"), p.join("leak.json")).unwrap();
    std::fs::write(p.join("whiteout/.wh.a.txt"), "").unwrap();
    for fifo in [p.join("pipe"), p.join("pipedir/p")] {
        ok(Command::new("mkfifo").arg(fifo));
    }
}

/// Metadata that would put host files in the image, or break it, is refused: exit 2, the key and
/// its place, a `help:` line, and the previous image untouched. (The files cases run after the
/// build, with --no-build, where the files are read.)
#[test]
fn metadata_that_leaks_or_breaks_the_image_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let base = "[package.metadata.oci]\nname = \"localhost/bad\"\n";
    let p = package(tmp.path(), "sealed", base);
    boundary_fixtures(&p);
    let good = oci(&p, &["build", "-q"]);
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let layout = p.join("target/oci/localhost+bad");
    let before = snapshot(&layout);
    const LOADER: &str = "/lib64/ld-linux-x86-64.so.2";
    let file = |src: &str, dest: &str| {
        format!("[[package.metadata.oci.files]]\nsrc = \"{src}\"\ndest = \"{dest}\"\n")
    };
    let perm = |path: &str, rest: &str| {
        format!("[[package.metadata.oci.perms]]\npath = \"{path}\"\n{rest}\n")
    };
    let cases: Vec<(String, &[&str])> = vec![
        (
            file("leaky", "/srv"),
            &["files[0]", "innocent.txt", "/etc/shadow", "outside"],
        ),
        (
            file("/etc/shadow", "/srv/s"),
            &["files[0]", "outside the package"],
        ),
        (
            file("../outside/config.json", "/srv/c"),
            &["files[0]", "outside the package"],
        ),
        (
            file("leak.json", "/srv/c"),
            &["files[0]", "outside the package"],
        ),
        (
            file("leakydir", "/srv"),
            &["files[0]", "leakydir/etc", "outside"],
        ),
        (
            file("linkdir", "/srv"),
            &["files[0]", "outside the package"],
        ),
        (file("", "/srv"), &["files[0]", "src is empty"]),
        (file("pipe", "/srv/p"), &["files[0]", "special file"]),
        (
            file("pipedir", "/srv"),
            &["files[0]", "pipedir/p", "special file"],
        ),
        (
            file("whiteout", "/srv"),
            &["files[0]", ".wh.a.txt", "whiteout"],
        ),
        (
            file("static/a.txt", "/bin/entrypoint"),
            &["files[0]", "/bin/entrypoint"],
        ),
        (
            file("static/a.txt", "/./bin/./entrypoint"),
            &["files[0]", "/bin/entrypoint"],
        ),
        (
            file("static/a.txt", "/etc/passwd"),
            &["files[0]", "/etc/passwd"],
        ),
        (
            file("static/a.txt", "/bin/sealed"),
            &["files[0]", "/bin/sealed"],
        ),
        (
            file("static/a.txt", "/etc/cargo-oci/contract"),
            &["files[0]", "/etc/cargo-oci"],
        ),
        (
            file("static/a.txt", LOADER),
            &["files[0]", LOADER, "library closure"],
        ),
        (file("static", "/.wh.bin"), &["files[0]", "whiteout"]),
        (
            file("static", "/etc/.wh..wh..opq"),
            &["files[0]", "whiteout"],
        ),
        (file("static/a.txt", "/bin/"), &["files[0]", "/bin"]),
        (
            "volumes = [\"/etc/passwd\"]\n".into(),
            &["volumes", "/etc/passwd"],
        ),
        (
            "volumes = [\"/lib64\"]\n".into(),
            &["volumes", "/lib64", "hide"],
        ),
        ("workdir = \"/srv\\u0000x\"\n".into(), &["workdir", "NUL"]),
        ("args = inf\n".into(), &["package.metadata.oci.args", "inf"]),
        (
            "[package.metadata.oci.live]\nhttp = \"http://127.0.0.1:8080/\\nexec=/bin/sh\"\n"
                .into(),
            &["package.metadata.oci.live", "control character"],
        ),
        (
            perm("/bin/entrypoint", "mode = \"0777\""),
            &["perms[0]", "/bin/entrypoint"],
        ),
        (
            perm("/bin/entrypoint", "uid = 65534"),
            &["perms[0]", "/bin/entrypoint"],
        ),
        (
            perm("/bin/sealed", "mode = \"04555\""),
            &["perms[0]", "/bin/sealed"],
        ),
        (perm("/bin", "mode = \"0500\""), &["perms[0]", "/bin"]),
    ];
    for (extra, says) in &cases {
        std::fs::write(
            p.join("Cargo.toml"),
            format!("[package]\nname = \"sealed\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n\n{base}{extra}"),
        )
        .unwrap();
        let out = oci_bounded(&p, &["build", "--no-build"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{extra}: exit code; stderr:\n{stderr}"
        );
        for s in says.iter().chain(&["Cargo.toml", "help: "]) {
            assert!(
                stderr.contains(s),
                "{extra}: the message should mention {s:?}:\n{stderr}"
            );
        }
        assert!(out.stdout.is_empty(), "{extra}: stdout");
        assert_eq!(
            snapshot(&layout),
            before,
            "{extra}: the previous image must be untouched"
        );
        let layouts: Vec<_> = std::fs::read_dir(p.join("target/oci"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            // The SBOM beside the layout is the earlier good build's.
            .filter(|n| !n.starts_with('.') && !n.ends_with(".spdx.json"))
            .collect();
        assert_eq!(layouts, ["localhost+bad"], "{extra}: no other output");
    }
}

/// The image's config, read from an OCI layout.
fn layout_config(layout: &Path) -> serde_json::Value {
    let blob = |d: &str| {
        let hex = d.strip_prefix("sha256:").unwrap();
        serde_json::from_slice::<serde_json::Value>(
            &std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap(),
        )
        .unwrap()
    };
    let index = blob_index(layout);
    let manifest = blob(index["manifests"][0]["digest"].as_str().unwrap());
    blob(manifest["config"]["digest"].as_str().unwrap())
}

fn blob_index(layout: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap()
}

/// What may come in does, as it should: the whole package without target/ and VCS directories,
/// symlinks kept as symlinks inside the copied tree, a volume holding files still the image
/// user's, and a runtime input named relative to the package found from any directory, without
/// `.` on PATH and without the build directory in the image.
#[test]
fn package_files_come_in_sealed() {
    let tmp = tempfile::tempdir().unwrap();
    let extra = "[package.metadata.oci]\nname = \"localhost/sealed-ok\"\nvolumes = [\"/data\"]\n\
        runtime-inputs = [\"./tools/hello.sh\"]\n\
        [[package.metadata.oci.files]]\nsrc = \".\"\ndest = \"/srv/pkg\"\n\
        [[package.metadata.oci.files]]\nsrc = \"static\"\ndest = \"/data/seed\"\n";
    let p = package(tmp.path(), "sealed-ok", extra);
    for d in ["static/sub", "tools", ".git"] {
        std::fs::create_dir_all(p.join(d)).unwrap();
    }
    std::fs::write(p.join("static/a.txt"), "a").unwrap();
    std::os::unix::fs::symlink("../a.txt", p.join("static/sub/up")).unwrap();
    std::os::unix::fs::symlink(p.join("static/a.txt"), p.join("static/sub/abs")).unwrap();
    std::fs::write(p.join(".git/config"), "[core]\n").unwrap();
    std::fs::create_dir_all(p.join("static/sub/.hg")).unwrap();
    std::fs::write(p.join("static/sub/.hg/hgrc"), "").unwrap();
    std::fs::write(p.join("static/.git"), "gitdir: /elsewhere\n").unwrap();
    std::fs::write(p.join("tools/hello.sh"), "#!/bin/sh\necho hi\n").unwrap();
    ok(Command::new("chmod")
        .arg("755")
        .arg(p.join("tools/hello.sh")));
    let built = oci(&p, &["build", "-q"]);
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );

    // From another directory, by --manifest-path: the relative runtime input is the package's.
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let manifest = p.join("Cargo.toml");
    let mut c = Command::new(cargo_oci_bin());
    c.args(["oci", "inspect", "--no-build", "--json", "--manifest-path"])
        .arg(&manifest)
        .current_dir(&elsewhere)
        .env("CARGO_TARGET_DIR", p.join("target"))
        .env("CARGO_OCI_CACHE_DIR", test_cache_dir());
    let out = run(&mut c);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = result(&String::from_utf8_lossy(&out.stdout));
    let files: Vec<&serde_json::Value> = j["layers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["files"].as_array().unwrap())
        .collect();
    let get = |path: &str| files.iter().find(|f| f["path"] == path).copied();
    assert!(
        get("/srv/pkg/Cargo.toml").is_some(),
        "the package is copied"
    );
    assert!(get("/srv/pkg/src/main.rs").is_some());
    for f in &files {
        let path = f["path"].as_str().unwrap();
        assert!(
            !path.starts_with("/srv/pkg/target") && !path.starts_with("/srv/pkg/.git"),
            "{path} must not be copied"
        );
        assert!(
            !path.contains(&*tmp.path().to_string_lossy()),
            "{path}: a host directory in the image"
        );
    }
    let link = get("/data/seed/sub/up").expect("the symlink");
    assert_eq!(link["type"], "symlink", "{link}");
    assert_eq!(link["target"], "../a.txt", "{link}");
    assert!(get("/data/seed/sub/.hg").is_none() && get("/data/seed/.git").is_none());
    let abs = get("/data/seed/sub/abs").expect("the absolute symlink");
    assert_eq!(
        abs["target"], "../a.txt",
        "made relative, inside the tree: {abs}"
    );
    let data = get("/data").expect("the volume");
    assert_eq!(
        (data["uid"].as_u64(), data["gid"].as_u64()),
        (Some(65534), Some(65534)),
        "{data}"
    );
    assert!(
        get("/usr/local/bin/hello.sh").is_some(),
        "the runtime input"
    );

    let config = layout_config(&p.join("target/oci/localhost+sealed-ok"));
    let env: Vec<&str> = config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    assert!(env.contains(&"PATH=/bin:/usr/local/bin"), "{env:?}");
}
