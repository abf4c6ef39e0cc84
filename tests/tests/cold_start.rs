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

#[test]
fn the_toolchain_rustc_is_asked_once_per_machine() {
    // A toolchain directory as `cargo oci` sees it: $CARGO and the rustc beside it (here scripts
    // that log their calls and hand over to the real ones).
    let tmp = tempfile::tempdir().unwrap();
    let toolchain = tmp.path().join("toolchain");
    std::fs::create_dir_all(&toolchain).unwrap();
    let log = tmp.path().join("calls.log");
    let real_cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let real_rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    for (name, real) in [("cargo", &real_cargo), ("rustc", &real_rustc)] {
        write_script(
            &toolchain.join(name),
            &format!(
                "#!/bin/sh\necho \"{name} $*\" >> '{}'\nexec '{real}' \"$@\"\n",
                log.display()
            ),
        );
    }
    let cache = tmp.path().join("cache");
    let mut digests = Vec::new();
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
            .env("CARGO", toolchain.join("cargo"))
            .env_remove("RUSTC");
        let out = ok(c);
        let json = result(&out);
        digests.push(json["digest"].as_str().unwrap().to_string());
    }
    let calls = std::fs::read_to_string(&log).unwrap();
    let rustc: Vec<&str> = calls.lines().filter(|l| l.starts_with("rustc")).collect();
    assert_eq!(rustc, ["rustc -vV"], "{calls}");
    assert!(
        calls.lines().any(|l| l.starts_with("cargo metadata")),
        "{calls}"
    );
    assert_eq!(digests[0], digests[1]);
}
