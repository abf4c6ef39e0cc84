//! A fresh checkout in a fresh CI job: an empty target directory and an empty per-machine cache.
//! Packaging for the host's target compiles nothing (the contract helper is cargo-oci's own); a
//! helper for another target is compiled once per machine and toolchain, not per target
//! directory. cargo is replaced by a script that records what it is asked and refuses every
//! build, so that a helper compile would fail the command.

use std::path::{Path, PathBuf};

use cargo_oci_tests::*;

/// A cargo that runs `cargo metadata` and refuses anything else, logging every call to `log`.
fn refusing_cargo(dir: &Path, log: &Path) -> PathBuf {
    let real = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let script = dir.join("cargo-refusing-builds");
    write_script(
        &script,
        &format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\ncase \"$1\" in metadata) exec '{real}' \"$@\";; esac\necho 'refused: cargo' \"$*\" >&2\nexit 97\n",
            log.display()
        ),
    );
    script
}

/// `cargo oci build --release --no-build` of `dir` into `target` with the cache `cache`;
/// cargo is `cargo` when given. Returns the image digest, after checking success.
fn package(dir: &Path, target: &Path, cache: &Path, cargo: Option<&Path>) -> (String, String) {
    let mut c = cargo_oci(
        dir,
        &[
            "build",
            "--release",
            "--no-build",
            "--message-format",
            "json",
        ],
    );
    c.arg("--target-dir")
        .arg(target)
        .env("CARGO_OCI_CACHE_DIR", cache)
        .env_remove("XDG_CACHE_HOME");
    if let Some(cargo) = cargo {
        c.env("CARGO", cargo);
    }
    let out = run(c);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "the build failed:\n{stderr}");
    let json = result(&String::from_utf8_lossy(&out.stdout));
    (json["digest"].as_str().unwrap().to_string(), stderr)
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_fresh_checkout_packages_for_the_host_without_compiling_the_helper() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("cargo.log");
    let cargo = refusing_cargo(tmp.path(), &log);
    let mut digests = Vec::new();
    for checkout in ["a", "b"] {
        let target = private_target(&tmp.path().join(checkout));
        assert!(!target.join("oci").exists(), "a fresh target directory");
        let cache = tmp.path().join(checkout).join("cache");
        let (digest, stderr) = package(&example("http-hello"), &target, &cache, Some(&cargo));
        assert!(!stderr.contains("refused"), "{stderr}");
        assert!(!stderr.contains("Compiling"), "{stderr}");
        // The helper cargo-oci carries is in the fresh cache, under its digest, with its record.
        let cached = files_in(&cache.join("helper/bin"));
        assert!(
            cached
                .iter()
                .any(|n| n.contains("-embedded-") && !n.ends_with(".sha256"))
                && cached.iter().any(|n| n.ends_with(".sha256")),
            "{cached:?}"
        );
        digests.push(digest);
    }
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(calls.lines().any(|l| l.starts_with("metadata")), "{calls}");
    assert!(
        calls.lines().all(|l| l.starts_with("metadata")),
        "cargo was asked for more than metadata:\n{calls}"
    );
    assert_eq!(
        digests[0], digests[1],
        "two fresh checkouts give the same image"
    );
}

#[test]
fn a_helper_for_another_target_is_compiled_once_per_machine_not_per_target_dir() {
    // static-hello is built for x86_64-unknown-linux-musl (its .cargo/config.toml).
    built("static-hello");
    let musl = examples_target_dir().join("x86_64-unknown-linux-musl/release/static-hello");
    assert!(musl.is_file(), "{}", musl.display());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("app");
    copy_example("static-hello", &dir);
    let put = |target: &Path| {
        let d = target.join("x86_64-unknown-linux-musl/release");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(&musl, d.join("static-hello")).unwrap();
    };
    // The suite's own cache: the helper may have to be compiled into it, with the real cargo.
    let cache = test_cache_dir();
    let first = tmp.path().join("first");
    put(&first);
    let (a, _) = package(&dir, &first, &cache, None);
    let helpers = files_in(&cache.join("helper/bin"));
    assert!(
        helpers
            .iter()
            .any(|n| n.starts_with("x86_64-unknown-linux-musl-") && !n.contains("embedded")),
        "{helpers:?}"
    );
    // Another, empty target directory: the helper comes from the cache, cargo builds nothing.
    let log = tmp.path().join("cargo.log");
    let cargo = refusing_cargo(tmp.path(), &log);
    let second = tmp.path().join("second");
    put(&second);
    let (b, stderr) = package(&dir, &second, &cache, Some(&cargo));
    assert!(!stderr.contains("refused"), "{stderr}");
    assert_eq!(a, b, "the same image from either target directory");
    assert!(!second.join("oci/.helper").exists());
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        calls.lines().all(|l| l.starts_with("metadata")),
        "cargo was asked for more than metadata:\n{calls}"
    );
    // And a cache of its own would need a compile: which the refusing cargo turns into an error.
    let third = tmp.path().join("third");
    put(&third);
    let out = run(cargo_oci(&dir, &["build", "--release", "--no-build"])
        .arg("--target-dir")
        .arg(&third)
        .env("CARGO_OCI_CACHE_DIR", tmp.path().join("empty-cache"))
        .env("CARGO", &cargo));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("refused: cargo build") && err.contains("contract helper"),
        "{err}"
    );
}

/// The records of `rustc -vV` in the per-machine cache `cache`, with their change times.
fn rustc_records(cache: &Path) -> Vec<(PathBuf, std::time::SystemTime)> {
    records_of(cache, "rustc-vV")
}

/// The records of the question `kind` in the per-machine cache, with their modification times.
fn records_of(cache: &Path, kind: &str) -> Vec<(PathBuf, std::time::SystemTime)> {
    let Ok(rd) = std::fs::read_dir(cache.join(kind)) else {
        return Vec::new();
    };
    rd.map(|e| {
        let p = e.unwrap().path();
        (
            p.clone(),
            std::fs::metadata(&p).unwrap().modified().unwrap(),
        )
    })
    .collect()
}

#[test]
fn the_toolchain_rustc_is_asked_once_per_machine() {
    // Two checkouts packaged in turn: as `cargo oci` runs (`$CARGO` names the toolchain's cargo,
    // the rustc beside it answers), and run directly (the `rustc` on PATH, rustup's proxy when
    // rustup is installed). The answer of the first run is kept in the per-machine cache and
    // given to the second, whose run leaves the record as it is (a run that asks rustc
    // rewrites it).
    let real_cargo = PathBuf::from(std::env::var("CARGO").expect("cargo test sets $CARGO"));
    assert!(
        real_cargo.with_file_name("rustc").is_file(),
        "no rustc beside {}",
        real_cargo.display()
    );
    for through_cargo in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("cache");
        let mut digests = Vec::new();
        let mut records = Vec::new();
        for checkout in ["a", "b"] {
            let target = private_target(&tmp.path().join(checkout));
            let mut c = cargo_oci(
                &example("http-hello"),
                &[
                    "build",
                    "--release",
                    "--no-build",
                    "--message-format",
                    "json",
                ],
            );
            c.arg("--target-dir")
                .arg(&target)
                .env("CARGO_OCI_CACHE_DIR", &cache)
                .env_remove("RUSTC");
            if through_cargo {
                c.env("CARGO", &real_cargo);
            } else {
                c.env_remove("CARGO");
            }
            let json = result(&ok(c));
            digests.push(json["digest"].as_str().unwrap().to_string());
            records.push(rustc_records(&cache));
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(records[0].len(), 1, "not kept: {records:?}");
        assert_eq!(records[0], records[1], "asked again");
        assert_eq!(digests[0], digests[1]);
    }
}

#[test]
fn where_a_targets_standard_library_lives_is_asked_once_per_machine() {
    // `--target` makes cargo-oci check that the target's std is installed (`rustc --print
    // target-libdir`): the directory is kept per machine, its contents looked at every time.
    let triple = "x86_64-unknown-linux-gnu";
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let mut records = Vec::new();
    let mut digests = Vec::new();
    for checkout in ["a", "b"] {
        let target = private_target(&tmp.path().join(checkout));
        let dir = target.join(triple).join("release");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::rename(target.join("release/http-hello"), dir.join("http-hello")).unwrap();
        let mut c = cargo_oci(
            &example("http-hello"),
            &[
                "build",
                "--release",
                "--no-build",
                "--target",
                triple,
                "--message-format",
                "json",
            ],
        );
        c.arg("--target-dir")
            .arg(&target)
            .env("CARGO_OCI_CACHE_DIR", &cache)
            .env_remove("RUSTC")
            .env_remove("CARGO");
        let json = result(&ok(c));
        digests.push(json["digest"].as_str().unwrap().to_string());
        records.push(records_of(&cache, "rustc-target-libdir"));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(records[0].len(), 1, "not kept: {records:?}");
    assert_eq!(records[0], records[1], "asked again");
    assert_eq!(digests[0], digests[1]);
}
