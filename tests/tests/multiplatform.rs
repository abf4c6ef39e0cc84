//! Multi-platform images: `examples/tls-zlib` (OpenSSL + zlib) built for linux/amd64 and
//! linux/arm64 into one OCI index, checked with skopeo, umoci, qemu's arm64 loader, podman and
//! the Docker engine; pushed to a real registry; joined from single-platform pushes; a static
//! musl image for both platforms; and the bad inputs. Cross builds and qemu runs are slow: the
//! two-platform build is made once and checked many ways.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cargo_oci_tests::registry::{Fault, Proxy, Registry, Seen};
use cargo_oci_tests::*;

const PLATFORMS: &str = "linux/amd64,linux/arm64";

/// The tools every check here needs; None (outside CI) skips the test.
fn cross_tools() -> Option<()> {
    for t in ["aarch64-linux-gnu-gcc", "qemu-aarch64-static", "skopeo"] {
        tool(t)?;
    }
    let qemu = Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64");
    if !qemu.exists() {
        assert!(
            !in_ci(),
            "no binfmt handler for arm64: scripts/install-test-tools.sh registers it"
        );
        eprintln!("SKIP: no binfmt handler for arm64");
        return None;
    }
    Some(())
}

/// The two-platform build of tls-zlib, made once per test process: its JSON and how long it took.
fn two_platforms() -> &'static (serde_json::Value, Duration) {
    static BUILT: OnceLock<(serde_json::Value, Duration)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let start = Instant::now();
        let out = ok(cargo_oci(
            &example("tls-zlib"),
            &[
                "build",
                "--release",
                "--platform",
                PLATFORMS,
                "--message-format",
                "json",
            ],
        ));
        let took = start.elapsed();
        eprintln!("two-platform build of tls-zlib: {took:?}");
        (result(&out), took)
    })
}

fn json_of(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("JSON ({e}): {out}"))
}

/// `skopeo inspect --raw` of `reference` (an `oci:` or `docker://` reference).
fn raw(reference: &str) -> serde_json::Value {
    json_of(&ok(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        reference,
    ])))
}

/// The platforms of an index document, as `os/arch`.
fn platforms_of(index: &serde_json::Value) -> Vec<String> {
    index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"]
                    .as_str()
                    .expect("every entry has a platform"),
                m["platform"]["architecture"]
                    .as_str()
                    .expect("architecture")
            )
        })
        .collect()
}

/// Unpacks one platform of an index (copied out with skopeo) with umoci; returns the rootfs.
fn unpack(layout_ref: &str, arch: &str, dir: &Path) -> PathBuf {
    let one = dir.join(format!("one-{arch}"));
    ok(Command::new("skopeo").args([
        "copy",
        "-q",
        "--override-arch",
        arch,
        layout_ref,
        &format!("oci:{}:x", one.display()),
    ]));
    let bundle = dir.join(format!("bundle-{arch}"));
    ok(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:x", one.display()))
        .arg(&bundle));
    bundle.join("rootfs")
}

/// Every file and symlink of a root file system, as absolute image paths.
fn files(rootfs: &Path) -> BTreeSet<String> {
    let out = ok(Command::new("find")
        .arg(".")
        .args(["(", "-type", "f", "-o", "-type", "l", ")"])
        .current_dir(rootfs));
    out.lines()
        .map(|l| l.trim_start_matches('.').to_string())
        .collect()
}

/// What arm64's loader resolves for `bin` in the host's arm64 file system (multiarch, `/`).
fn arm64_closure(bin: &Path) -> BTreeSet<String> {
    let out = ok(Command::new("qemu-aarch64-static")
        .args(["-L", "/", "/lib/ld-linux-aarch64.so.1", "--list"])
        .arg(bin));
    let mut v = BTreeSet::new();
    for line in out.lines() {
        let line = line.trim();
        let path = match line.split_once(" => ") {
            Some((_, rest)) => rest.split(" (").next().unwrap_or_default(),
            None => line.split(" (").next().unwrap_or_default(),
        };
        if path.starts_with('/') {
            v.insert(path.to_string());
        }
    }
    v
}

fn is_library(path: &str) -> bool {
    path.starts_with("/lib") || path.starts_with("/usr/lib")
}

/// Blob uploads the proxy saw: each completed upload ends with a PUT `?digest=`.
fn uploads(seen: &[Seen]) -> usize {
    seen.iter()
        .filter(|s| {
            s.method == "PUT" && s.fault == Fault::Pass && s.target.contains("/blobs/uploads/")
        })
        .count()
}

/// `cargo oci push --no-build` with a clean credential environment.
fn push(dir: &Path, args: &[&str], home: &Path) -> serde_json::Value {
    let mut c = cargo_oci(dir, &["push", "--release", "--no-build"]);
    c.args(args)
        .args(["--message-format", "json"])
        .env("HOME", home)
        .env("DOCKER_CONFIG", home.join(".docker"))
        .env_remove("REGISTRY_AUTH_FILE")
        .stdin(Stdio::null());
    result(&ok(c))
}

/// A lowercase directory under /tmp, removed on drop: podman names an `oci:` image after its
/// path, which must then be a valid (lowercase) reference.
struct LowerTmp(PathBuf);

impl LowerTmp {
    fn new() -> LowerTmp {
        let p = PathBuf::from("/tmp").join(unique("cargo-oci-multiplatform"));
        std::fs::create_dir_all(&p).unwrap();
        LowerTmp(p)
    }
}

impl Drop for LowerTmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `oci:LAYOUT:REF` through a lowercase symlink to the layout, for podman.
fn podman_layout_ref(layout: &Path, reference: &str, tmp: &LowerTmp) -> String {
    let link = tmp.0.join(unique("layout"));
    std::os::unix::fs::symlink(layout, &link).unwrap();
    format!("oci:{}:{reference}", link.display())
}

fn podman_run(image: &str, platform: &str, tls: bool) -> String {
    let mut c = Command::new("podman");
    c.args(["run", "--rm", "--network=none", "--platform", platform]);
    if tls {
        c.arg("--tls-verify=false");
    }
    ok(c.arg(image))
}

#[test]
fn two_platforms_of_tls_zlib_in_one_index() {
    if cross_tools().is_none() || tool("umoci").is_none() || tool("podman").is_none() {
        return;
    }
    let (json, two_took) = two_platforms();
    let tmp = tempfile::tempdir().unwrap();
    let layout = PathBuf::from(json["path"].as_str().expect("path"));
    let reference = json["references"][0]
        .as_str()
        .expect("references")
        .to_string();
    let index_digest = json["digest"].as_str().expect("digest").to_string();
    let layout_ref = format!("oci:{}:{reference}", layout.display());

    // The index, with a platform on every entry, as skopeo reads it from the layout.
    let index = raw(&layout_ref);
    assert_eq!(
        index["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{index}"
    );
    assert_eq!(platforms_of(&index), ["linux/amd64", "linux/arm64"]);
    let platforms = json["platforms"].as_array().expect("platforms in the JSON");
    assert_eq!(platforms.len(), 2);
    let sizes: Vec<(String, u64)> = platforms
        .iter()
        .map(|p| {
            (
                p["platform"].as_str().unwrap_or_default().to_string(),
                p["size"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    eprintln!("sizes (compressed): {sizes:?}");

    // Identical layers are one blob: the base layer (passwd, group, nsswitch, certs) is shared.
    let layers_of = |i: usize| -> Vec<(String, String)> {
        platforms[i]["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["role"].as_str().unwrap().to_string(),
                    l["digest"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let (amd, arm) = (layers_of(0), layers_of(1));
    let base = |ls: &[(String, String)]| ls.iter().find(|(r, _)| r == "base").cloned();
    assert!(base(&amd).is_some(), "{amd:?}");
    assert_eq!(base(&amd), base(&arm), "the base layer is one blob");
    assert_ne!(
        amd.iter().find(|(r, _)| r == "service"),
        arm.iter().find(|(r, _)| r == "service")
    );

    // Each platform unpacks with umoci; the arm64 one holds exactly the arm64 closure.
    let arm_root = unpack(&layout_ref, "arm64", tmp.path());
    let amd_root = unpack(&layout_ref, "amd64", tmp.path());
    let (arm_files, amd_files) = (files(&arm_root), files(&amd_root));
    let mut want_libs = BTreeSet::new();
    for f in &arm_files {
        let p = arm_root.join(f.trim_start_matches('/'));
        if f.starts_with("/bin/") && !p.is_symlink() {
            want_libs.extend(arm64_closure(&p));
        }
    }
    let arm_libs: BTreeSet<String> = arm_files
        .iter()
        .filter(|f| is_library(f))
        .cloned()
        .collect();
    assert_eq!(
        arm_libs, want_libs,
        "the arm64 libraries are what arm64's loader resolves"
    );
    assert!(
        arm_libs.contains("/lib/ld-linux-aarch64.so.1"),
        "{arm_libs:?}"
    );
    assert!(
        arm_libs.contains("/lib/aarch64-linux-gnu/libssl.so.3")
            && arm_libs.contains("/lib/aarch64-linux-gnu/libz.so.1"),
        "{arm_libs:?}"
    );
    let rest = |fs: &BTreeSet<String>| -> BTreeSet<String> {
        fs.iter().filter(|f| !is_library(f)).cloned().collect()
    };
    assert_eq!(
        rest(&arm_files),
        rest(&amd_files),
        "besides its libraries, the arm64 image holds the same files as the amd64 one"
    );
    let file_out = ok(Command::new("file").arg(arm_root.join("bin/tls-zlib")));
    assert!(file_out.contains("ARM aarch64"), "{file_out}");

    // podman runs each platform from the layout.
    let lower = LowerTmp::new();
    let podman_ref = podman_layout_ref(&layout, &reference, &lower);
    let arm_run = podman_run(&podman_ref, "linux/arm64", false);
    assert!(
        arm_run.contains("arch: aarch64") && arm_run.contains("roundtrip ok"),
        "{arm_run}"
    );
    let amd_run = podman_run(&podman_ref, "linux/amd64", false);
    assert!(
        amd_run.contains("arch: x86_64") && amd_run.contains("roundtrip ok"),
        "{amd_run}"
    );

    // inspect shows every platform.
    let inspected = result(&ok(cargo_oci(
        &example("tls-zlib"),
        &[
            "inspect",
            "--release",
            "--no-build",
            "--platform",
            PLATFORMS,
            "--json",
        ],
    )));
    assert_eq!(inspected["digest"].as_str(), Some(index_digest.as_str()));
    let ip: Vec<&str> = inspected["platforms"]
        .as_array()
        .expect("platforms")
        .iter()
        .map(|p| p["platform"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(ip, ["linux/amd64", "linux/arm64"]);
    assert!(
        inspected["platforms"][1]["libraries"]
            .to_string()
            .contains("/lib/aarch64-linux-gnu/libssl.so.3"),
        "{inspected}"
    );

    // One image for a docker-archive: the host's platform unless --platform names one; it says which.
    let both = tmp.path().join("both.tar");
    let out = run(cargo_oci(
        &example("tls-zlib"),
        &[
            "build",
            "--release",
            "--no-build",
            "--platform",
            PLATFORMS,
            "--format",
            "docker-archive",
            "-o",
        ],
    )
    .arg(&both));
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("Selected") && said.contains("linux/amd64"),
        "{said}"
    );
    let arm_tar = tmp.path().join("arm.tar");
    ok(cargo_oci(
        &example("tls-zlib"),
        &[
            "build",
            "--release",
            "--no-build",
            "--platform",
            "linux/arm64",
            "--format",
            "docker-archive",
            "-o",
        ],
    )
    .arg(&arm_tar));
    let cfg = json_of(&ok(Command::new("skopeo").args([
        "inspect",
        "--config",
        &format!("docker-archive:{}", arm_tar.display()),
    ])));
    assert_eq!(cfg["architecture"], "arm64", "{cfg}");

    // A missing library in the target's file system: a clear error, nothing written.
    let out_dir = tmp.path().join("no-libssl");
    let out = run(cargo_oci(
        &example("tls-zlib"),
        &[
            "build",
            "--release",
            "--no-build",
            "--target",
            "aarch64-unknown-linux-gnu",
            "-o",
        ],
    )
    .arg(&out_dir)
    .env(
        "CARGO_OCI_SYSROOT_AARCH64_UNKNOWN_LINUX_GNU",
        "/usr/aarch64-linux-gnu",
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("libssl.so.3")
            && err.contains("/usr/aarch64-linux-gnu")
            && err.contains("help:")
            && err.contains(":arm64"),
        "{err}"
    );
    assert!(!out_dir.exists());

    // The same sysroot named by `sysroots` in the metadata instead of the environment.
    let pkg = tmp.path().join("with-sysroot");
    copy_example("tls-zlib", &pkg);
    let toml = std::fs::read_to_string(pkg.join("Cargo.toml"))
        .unwrap()
        .replace(
            "[package.metadata.oci]\n",
            "[package.metadata.oci]\nsysroots = { aarch64-unknown-linux-gnu = \"/usr/aarch64-linux-gnu\" }\n",
        );
    std::fs::write(pkg.join("Cargo.toml"), toml).unwrap();
    let out = run(cargo_oci(
        &pkg,
        &[
            "build",
            "--release",
            "--no-build",
            "--target",
            "aarch64-unknown-linux-gnu",
            "-o",
        ],
    )
    .arg(&out_dir)
    .env_remove("CARGO_OCI_SYSROOT_AARCH64_UNKNOWN_LINUX_GNU"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("libssl.so.3") && err.contains("sysroot /usr/aarch64-linux-gnu"),
        "the metadata's sysroot is the one searched: {err}"
    );
    assert!(!out_dir.exists());

    // Reproducible: the same index from copies of the package in two other directories (outside
    // git, so that neither carries a revision label), and the arm64 image of a one-platform build
    // is the index's arm64 image.
    let target = tmp.path().join("target");
    let mut digests = Vec::new();
    for (i, dir) in ["a", "b"].iter().enumerate() {
        let copy = tmp.path().join(dir).join("tls-zlib");
        std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
        copy_example("tls-zlib", &copy);
        if i == 0 {
            let start = Instant::now();
            let one = result(&ok(cargo_oci(
                &copy,
                &[
                    "build",
                    "--release",
                    "--target",
                    "aarch64-unknown-linux-gnu",
                    "--message-format",
                    "json",
                ],
            )
            .env("CARGO_TARGET_DIR", &target)));
            eprintln!(
                "one-platform (arm64) build of tls-zlib: {:?}; two platforms: {two_took:?}",
                start.elapsed()
            );
            digests.push(one["digest"].as_str().unwrap().to_string());
        }
        let both = result(&ok(cargo_oci(
            &copy,
            &[
                "build",
                "--release",
                "--platform",
                PLATFORMS,
                "--message-format",
                "json",
            ],
        )
        .env("CARGO_TARGET_DIR", &target)));
        if i == 0 {
            assert_eq!(
                both["platforms"][1]["digest"].as_str(),
                Some(digests[0].as_str()),
                "the arm64 image of the index is the one-platform build's"
            );
        }
        digests.push(both["digest"].as_str().unwrap().to_string());
    }
    assert_eq!(
        digests[1], digests[2],
        "the index digest is the same from two directories"
    );
}

#[test]
fn push_two_platforms_then_run_each() {
    if cross_tools().is_none() || tool("podman").is_none() {
        return;
    }
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let (json, _) = two_platforms();
    let index_digest = json["digest"].as_str().unwrap().to_string();
    let proxy = Proxy::start(&reg.addr, Arc::new(|_, _, _| Fault::Pass));
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".docker")).unwrap();
    let dest = format!("{}/multi/tls-zlib", proxy.addr);
    let pushed = push(
        &example("tls-zlib"),
        &["--platform", PLATFORMS, "--to", &dest],
        home.path(),
    );
    assert_eq!(
        pushed["digest"].as_str(),
        Some(index_digest.as_str()),
        "{pushed}"
    );
    assert!(uploads(&proxy.seen()) > 0);
    let index = raw(&format!("docker://{dest}:latest"));
    assert_eq!(platforms_of(&index), ["linux/amd64", "linux/arm64"]);

    let image = format!("{dest}:latest");
    ok(Command::new("podman").args([
        "pull",
        "-q",
        "--tls-verify=false",
        "--platform",
        "linux/arm64",
        &image,
    ]));
    let out = podman_run(&image, "linux/arm64", true);
    let _ = run(Command::new("podman").args(["rmi", "-f", &image]));
    assert!(out.contains("arch: aarch64"), "{out}");

    if let Some(host) = docker_host() {
        let docker = || {
            let mut c = Command::new("/usr/bin/docker");
            c.args(["-H", &host]);
            c
        };
        let out = ok(docker().args(["run", "--rm", "--platform", "linux/arm64", &image]));
        let _ = run(docker().args(["rmi", "-f", &image]));
        assert!(out.contains("arch: aarch64"), "docker run: {out}");
    }
}

#[test]
fn static_musl_for_two_platforms() {
    if cross_tools().is_none() || tool("podman").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("static");
    let out = ok(cargo_oci(
        &example("static-hello"),
        &[
            "build",
            "--release",
            "--target",
            "x86_64-unknown-linux-musl",
            "--target",
            "aarch64-unknown-linux-musl",
            "--message-format",
            "json",
            "-o",
        ],
    )
    .arg(&layout));
    let json = result(&out);
    let reference = json["references"][0].as_str().unwrap();
    let layout_ref = format!("oci:{}:{reference}", layout.display());
    assert_eq!(
        platforms_of(&raw(&layout_ref)),
        ["linux/amd64", "linux/arm64"]
    );
    for p in json["platforms"].as_array().unwrap() {
        assert!(
            !p["layers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["role"].as_str().unwrap().starts_with("closure")),
            "a static image has no libraries: {p}"
        );
    }
    let lower = LowerTmp::new();
    let out = podman_run(
        &podman_layout_ref(&layout, reference, &lower),
        "linux/arm64",
        false,
    );
    assert!(out.contains("hello from static-hello"), "{out}");
}

#[test]
fn bad_platforms_and_targets_refused_before_building() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    let refused = |args: &[&str], want: &[&str]| {
        let mut c = cargo_oci(&example("static-hello"), &["build", "--release"]);
        c.args(args).arg("-o").arg(&out_dir);
        let out = run(c);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        for w in want {
            assert!(err.contains(w), "{args:?}: wanted {w:?} in {err}");
        }
        assert!(!err.contains("Compiling"), "refused before building: {err}");
        assert!(!out_dir.exists(), "nothing written");
    };
    refused(
        &["--platform", "linux/sparc"],
        &["linux/sparc", "help:", "linux/arm64"],
    );
    refused(&["--platform", "windows/amd64"], &["windows/amd64"]);
    refused(
        &["--target", "riscv64gc-unknown-linux-gnu"],
        &[
            "not installed",
            "rustup target add riscv64gc-unknown-linux-gnu",
            "CARGO_TARGET_RISCV64GC_UNKNOWN_LINUX_GNU_LINKER",
        ],
    );
    refused(
        &["--target", "aarch64-apple-darwin"],
        &["not a Linux target"],
    );
    refused(
        &[
            "--target",
            "x86_64-unknown-linux-gnu",
            "--target",
            "x86_64-unknown-linux-musl",
        ],
        &["same platform"],
    );

    // `platforms` in the metadata: a wrong entry is named with its key.
    let pkg = tmp.path().join("pkg");
    copy_example("static-hello", &pkg);
    let toml = std::fs::read_to_string(pkg.join("Cargo.toml"))
        .unwrap()
        .replace(
            "[package.metadata.oci]\n",
            "[package.metadata.oci]\nplatforms = [\"linux/amd64\", \"linux/mips99\"]\n",
        );
    std::fs::write(pkg.join("Cargo.toml"), toml).unwrap();
    let out = run(cargo_oci(&pkg, &["build", "--release", "-o"]).arg(&out_dir));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("platforms") && err.contains("linux/mips99"),
        "{err}"
    );
    assert!(!out_dir.exists());

    // A `sysroots` entry that is not a directory is named with its key, before building.
    let toml = std::fs::read_to_string(pkg.join("Cargo.toml"))
        .unwrap()
        .replace(
            "platforms = [\"linux/amd64\", \"linux/mips99\"]\n",
            "sysroots = { aarch64-unknown-linux-gnu = \"no/such/dir\" }\n",
        );
    std::fs::write(pkg.join("Cargo.toml"), toml).unwrap();
    let out = run(cargo_oci(&pkg, &["build", "--release", "-o"]).arg(&out_dir));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("sysroots") && err.contains("no/such/dir") && err.contains("help:"),
        "{err}"
    );
    assert!(!err.contains("Compiling"), "refused before building: {err}");
    assert!(!out_dir.exists());
}

/// `cargo oci join` of `args` with a clean credential environment.
fn join(args: &[&str], home: &Path) -> std::process::Output {
    let mut c = Command::new(cargo_oci_bin());
    c.args(["oci", "join"])
        .args(args)
        .env("HOME", home)
        .env("DOCKER_CONFIG", home.join(".docker"))
        .env_remove("REGISTRY_AUTH_FILE")
        .stdin(Stdio::null());
    run(c)
}

#[test]
fn join_platforms_pushed_by_separate_jobs() {
    if cross_tools().is_none() || tool("podman").is_none() {
        return;
    }
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let (json, _) = two_platforms();
    let index_digest = json["digest"].as_str().unwrap().to_string();
    let proxy = Proxy::start(&reg.addr, Arc::new(|_, _, _| Fault::Pass));
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".docker")).unwrap();
    let dest = format!("{}/jobs/tls-zlib", proxy.addr);

    // One job per architecture pushes its own platform's image.
    let mut pinned = Vec::new();
    for target in ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"] {
        let p = push(
            &example("tls-zlib"),
            &[
                "--target",
                target,
                "--to",
                &dest,
                "-t",
                &format!("job-{target}"),
            ],
            home.path(),
        );
        pinned.push(format!("{dest}@{}", p["digest"].as_str().unwrap()));
    }
    assert!(uploads(&proxy.seen()) > 0);

    // The last step joins them by digest: no layer is read or sent.
    proxy.clear();
    let out = join(
        &[
            "-t",
            "latest",
            "--platform",
            PLATFORMS,
            "--message-format",
            "json",
            &pinned[1],
            &pinned[0],
        ],
        home.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let joined = result(&String::from_utf8_lossy(&out.stdout));
    let seen = proxy.seen();
    assert_eq!(uploads(&seen), 0, "the join uploaded a blob: {seen:?}");
    assert!(
        !seen
            .iter()
            .any(|s| s.method == "POST" || s.method == "PATCH"),
        "the join started an upload: {seen:?}"
    );
    // It reads the two configs (to learn each platform and package), no layer. (A read the
    // client retried on a slow answer is the same blob again.)
    let blob_reads: std::collections::BTreeSet<&str> = seen
        .iter()
        .filter(|s| s.method == "GET" && s.target.contains("/blobs/sha256:"))
        .map(|s| s.target.as_str())
        .collect();
    assert_eq!(blob_reads.len(), 2, "{seen:?}");
    // The joined index names exactly the two pushed manifests, by digest.
    let image = format!("{dest}:latest");
    let index = raw(&format!("docker://{image}"));
    let mut named: Vec<String> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| m["digest"].as_str().unwrap_or_default().to_string())
        .collect();
    named.sort();
    let mut wanted: Vec<String> = pinned
        .iter()
        .map(|p| {
            p.rsplit_once('@')
                .map(|(_, d)| d.to_string())
                .unwrap_or_default()
        })
        .collect();
    wanted.sort();
    assert_eq!(named, wanted, "{index}");
    // The same index as the two-platform build: the join is that build, made by two jobs.
    assert_eq!(
        joined["digest"].as_str(),
        Some(index_digest.as_str()),
        "{joined}"
    );
    assert_eq!(
        platforms_of(&raw(&format!("docker://{image}"))),
        ["linux/amd64", "linux/arm64"]
    );
    for (platform, arch) in [("linux/arm64", "aarch64"), ("linux/amd64", "x86_64")] {
        ok(Command::new("podman").args([
            "pull",
            "-q",
            "--tls-verify=false",
            "--platform",
            platform,
            &image,
        ]));
        let out = podman_run(&image, platform, true);
        let _ = run(Command::new("podman").args(["rmi", "-f", &image]));
        assert!(out.contains(&format!("arch: {arch}")), "{platform}: {out}");
    }

    // Images that do not belong together are refused, and no tag moves.
    let refused = |args: &[&str], want: &str| {
        let out = join(args, home.path());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(want) && err.contains("help:"),
            "{args:?}: {err}"
        );
    };
    refused(&["-t", "bad", &pinned[0], &pinned[0]], "both linux/amd64");
    refused(&["-t", "bad", &pinned[1], &pinned[1]], "both linux/arm64");
    refused(
        &["-t", "bad", "--platform", PLATFORMS, &pinned[0]],
        "missing: linux/arm64",
    );
    refused(
        &["-t", "bad", &format!("{dest}:latest")],
        "not pinned by digest",
    );
    let other = push(
        &example("static-hello"),
        &["--to", &dest, "-t", "other"],
        home.path(),
    );
    let other = format!("{dest}@{}", other["digest"].as_str().unwrap());
    refused(&["-t", "bad", &pinned[1], &other], "static-hello");
    let tags = ok(Command::new("skopeo").args([
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{dest}"),
    ]));
    assert!(!tags.contains("\"bad\""), "{tags}");
}
