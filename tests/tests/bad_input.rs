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
    c.env("CARGO_TARGET_DIR", dir.join("target"));
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
    let bin = p.join("target/debug").join(name);
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
