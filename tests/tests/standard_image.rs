//! The standard image, end to end: every example is built by `cargo oci build` and checked with
//! the real tools — skopeo, umoci + runc, podman and a Docker engine.

use std::path::Path;
use std::process::{Command, Stdio};

use cargo_oci_tests::*;

/// What each example prints when run with the given arguments (empty: the image's own Cmd).
struct Case {
    name: &'static str,
    args: &'static [&'static str],
    expect: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        name: "static-hello",
        args: &[],
        expect: &["hello from static-hello", "arg: world"],
    },
    Case {
        name: "http-hello",
        args: &["self-test"],
        expect: &["hello from http-hello"],
    },
    Case {
        name: "tls-zlib",
        args: &[],
        expect: &[
            "arch: x86_64",
            "openssl: OpenSSL 3",
            "sha256(hello): 2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
            "zlib: 4096 bytes -> ",
        ],
    },
];

fn check_output(case: &Case, stdout: &str, what: &str) {
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        case.expect.len(),
        "{what}: {} printed:\n{stdout}",
        case.name
    );
    for (l, e) in lines.iter().zip(case.expect) {
        assert!(
            l.starts_with(e),
            "{what}: {}: expected a line starting with {e:?}, got {l:?}",
            case.name
        );
    }
}

/// Writes an archive of an already built example with `--no-build`.
fn archive(b: &Built, format: &str, dir: &Path) -> std::path::PathBuf {
    let out = dir.join(format!("{}-{format}.tar", b.example));
    ok(cargo_oci(
        &example(&b.example),
        &[
            "build",
            "--release",
            "--no-build",
            "-q",
            "--format",
            format,
            "-o",
        ],
    )
    .arg(&out));
    out
}

fn skopeo_inspect(reference: &str, config: bool) -> serde_json::Value {
    let mut c = Command::new("skopeo");
    c.arg("inspect");
    if config {
        c.arg("--config");
    }
    serde_json::from_str(&ok(c.arg(reference))).expect("skopeo prints JSON")
}

#[test]
fn skopeo_reads_every_output_and_verifies_blobs() {
    if tool("skopeo").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for case in CASES {
        let b = built(case.name);
        let layout = skopeo_inspect(&b.oci_ref(), false);
        assert_eq!(layout["Digest"], b.digest.as_str(), "{}", case.name);
        assert_eq!(layout["Architecture"], "amd64");
        assert_eq!(layout["Os"], "linux");
        assert_eq!(
            layout["Labels"]["org.opencontainers.image.title"],
            case.name
        );
        assert_eq!(
            layout["Labels"]["org.opencontainers.image.version"],
            "0.1.0"
        );
        let cfg = skopeo_inspect(&b.oci_ref(), true);
        assert_eq!(
            cfg["config"]["Entrypoint"],
            serde_json::json!(["/bin/entrypoint"])
        );
        assert_eq!(cfg["config"]["User"], "65534:65534");
        assert_eq!(cfg["created"], "1970-01-01T00:00:01Z");
        let env: Vec<&str> = cfg["config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert!(env.contains(&"PATH=/bin"), "{env:?}");
        assert!(
            env.contains(&"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"),
            "{env:?}"
        );

        let oci = archive(&b, "oci-archive", tmp.path());
        let from_oci = skopeo_inspect(
            &format!("oci-archive:{}:{}", oci.display(), b.reference()),
            false,
        );
        assert_eq!(from_oci["Digest"], b.digest.as_str());
        let docker = archive(&b, "docker-archive", tmp.path());
        let from_docker = skopeo_inspect(&format!("docker-archive:{}", docker.display()), false);
        assert_eq!(
            from_docker["Layers"].as_array().map(Vec::len),
            layout["Layers"].as_array().map(Vec::len)
        );
        // RepoTags name every tag, fully qualified.
        let manifest: serde_json::Value = serde_json::from_str(&ok(Command::new("tar")
            .args(["-xOf"])
            .arg(&docker)
            .arg("manifest.json")))
        .unwrap();
        assert_eq!(manifest[0]["RepoTags"], serde_json::json!(b.references));

        // skopeo copy reads every blob and checks its digest.
        let dest = tmp.path().join(format!("{}-dir", case.name));
        ok(Command::new("skopeo")
            .args(["copy", "--quiet", &b.oci_ref()])
            .arg(format!("dir:{}", dest.display())));
        for layer in layout["Layers"].as_array().unwrap() {
            let hex = layer.as_str().unwrap().trim_start_matches("sha256:");
            assert!(dest.join(hex).is_file(), "{} missing from the copy", hex);
        }
    }
}

/// Unpacks with umoci (which checks every diff_id) and runs the bundle with runc.
fn unpack(b: &Built, bundle: &Path) {
    ok(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{}", b.layout.display(), b.reference()))
        .arg(bundle));
}

#[test]
fn umoci_unpacks_and_runc_runs_each_example() {
    if tool("umoci").is_none() || tool("runc").is_none() {
        return;
    }
    for case in CASES {
        let b = built(case.name);
        let tmp = tempfile::tempdir().unwrap();
        let bundle = tmp.path().join("bundle");
        unpack(&b, &bundle);
        let cfg_path = bundle.join("config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
        cfg["process"]["terminal"] = false.into();
        if !case.args.is_empty() {
            let mut args = vec![serde_json::json!("/bin/entrypoint")];
            args.extend(case.args.iter().map(|a| serde_json::json!(a)));
            cfg["process"]["args"] = args.into();
        }
        // A fresh network namespace has its loopback down; runc does not bring it up.
        if let Some(ns) = cfg["linux"]["namespaces"].as_array_mut() {
            ns.retain(|n| n["type"] != "network");
        }
        std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
        let id = unique(&format!("runc-{}", case.name));
        let out = ok(Command::new("runc")
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(&id));
        let _ = run(Command::new("runc").args(["delete", "--force", &id]));
        check_output(case, &out, "runc run");
    }
}

fn podman_run(reference: &str, args: &[&str]) -> std::process::Output {
    run(Command::new("podman")
        .args([
            "run",
            "--rm",
            "--read-only",
            "--user",
            "65534:65534",
            "--network=none",
            reference,
        ])
        .args(args))
}

/// Runs a case's image read-only as nobody in podman and checks what it prints.
fn podman_check(case: &Case, reference: &str, what: &str) {
    let out = podman_run(reference, case.args);
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_output(case, &String::from_utf8_lossy(&out.stdout), what);
}

#[test]
fn podman_loads_and_runs_read_only_as_nobody() {
    if tool("podman").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for case in CASES {
        let b = built(case.name);
        let docker = archive(&b, "docker-archive", tmp.path());
        let loaded = ok(Command::new("podman").args(["load", "-i"]).arg(&docker));
        assert!(loaded.contains(b.reference()), "podman load said: {loaded}");
        podman_check(case, b.reference(), "podman run");
    }
}

#[test]
fn podman_loads_the_oci_archive() {
    if tool("podman").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let case = &CASES[0];
    let b = built(case.name);
    let oci = archive(&b, "oci-archive", tmp.path());
    let image = format!("oci-archive:{}:{}", oci.display(), b.reference());
    ok(Command::new("podman").args(["pull", "-q", &image]));
    podman_check(case, b.reference(), "podman run (oci-archive)");
}

#[test]
fn docker_engine_loads_and_runs_each_example() {
    let Some(host) = docker_host() else { return };
    let tmp = tempfile::tempdir().unwrap();
    for case in CASES {
        let b = built(case.name);
        let docker = archive(&b, "docker-archive", tmp.path());
        let loaded = ok(Command::new("/usr/bin/docker")
            .args(["-H", &host, "load", "-i"])
            .arg(&docker));
        assert!(loaded.contains(b.reference()), "docker load said: {loaded}");
        let out = ok(Command::new("/usr/bin/docker")
            .args(["-H", &host, "run", "--rm", "--network=none", b.reference()])
            .args(case.args));
        check_output(case, &out, "docker run");
    }
}

#[test]
fn stream_pipes_into_podman_load() {
    if tool("podman").is_none() {
        return;
    }
    let case = &CASES[1];
    let b = built(case.name);
    let mut build = cargo_oci(
        &example(case.name),
        &[
            "build",
            "--release",
            "--no-build",
            "-q",
            "--stream",
            "--tag",
            "streamed",
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let load = Command::new("podman")
        .arg("load")
        .stdin(build.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(build.wait().unwrap().success());
    assert!(
        load.status.success(),
        "podman load: {}",
        String::from_utf8_lossy(&load.stderr)
    );
    let reference = b
        .reference()
        .rsplit_once(':')
        .map(|(n, _)| format!("{n}:streamed"))
        .unwrap();
    podman_check(case, &reference, "streamed image");
}

#[test]
fn entrypoint_passes_args_and_exit_code_and_runtime_runs_commands() {
    if tool("podman").is_none() {
        return;
    }
    let b = built("static-hello");
    let tmp = tempfile::tempdir().unwrap();
    ok(Command::new("podman")
        .args(["load", "-q", "-i"])
        .arg(archive(&b, "docker-archive", tmp.path())));
    let out = podman_run(b.reference(), &["--exit-code", "7"]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from static-hello\narg: --exit-code\narg: 7\n"
    );

    let out = ok(Command::new("podman").args([
        "run",
        "--rm",
        "--network=none",
        "-e",
        "GREETING=howdy",
        b.reference(),
        "a b",
    ]));
    assert_eq!(out, "howdy from static-hello\narg: a b\n");

    // /bin/runtime runs a command found on the image's PATH.
    let out = ok(Command::new("podman").args([
        "run",
        "--rm",
        "--network=none",
        "--entrypoint",
        "/bin/runtime",
        b.reference(),
        "static-hello",
        "x",
    ]));
    assert_eq!(out, "hello from static-hello\narg: x\n");
    let out = run(Command::new("podman").args([
        "run",
        "--rm",
        "--network=none",
        "--entrypoint",
        "/bin/runtime",
        b.reference(),
    ]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no shell"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The files of an unpacked rootfs: (path, kind) with kind f, d or l.
fn tree(rootfs: &Path) -> Vec<(String, char)> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, char)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = format!("/{}", p.strip_prefix(base).unwrap().display());
            let t = e.file_type().unwrap();
            if t.is_symlink() {
                out.push((rel, 'l'));
            } else if t.is_dir() {
                out.push((rel, 'd'));
                walk(base, &p, out);
            } else {
                out.push((rel, 'f'));
            }
        }
    }
    let mut out = Vec::new();
    walk(rootfs, rootfs, &mut out);
    out.sort();
    out
}

#[test]
fn image_holds_exactly_the_closure_and_the_contracts() {
    if tool("umoci").is_none() {
        return;
    }
    for name in ["tls-zlib", "static-hello", "http-hello"] {
        let b = built(name);
        let tmp = tempfile::tempdir().unwrap();
        let bundle = tmp.path().join("bundle");
        unpack(&b, &bundle);
        let rootfs = bundle.join("rootfs");
        let files: Vec<String> = tree(&rootfs)
            .into_iter()
            .filter(|(_, k)| *k == 'f')
            .map(|(p, _)| p)
            .collect();

        // What ldd says the binary needs, by the paths the loader finds them at.
        let bin_host = examples_target_dir()
            .join(if name == "static-hello" {
                "x86_64-unknown-linux-musl/release"
            } else {
                "release"
            })
            .join(name);
        let ldd = run(Command::new("ldd").arg(&bin_host));
        let mut expected: Vec<String> = String::from_utf8_lossy(&ldd.stdout)
            .lines()
            .filter_map(|l| {
                let l = l.trim();
                let path = match l.split_once("=>") {
                    Some((_, rhs)) => rhs.trim().split(' ').next()?.to_string(),
                    None => l.split(' ').next()?.to_string(),
                };
                path.starts_with('/').then_some(path)
            })
            .collect();
        expected.extend([
            format!("/bin/{name}"),
            "/bin/entrypoint".into(),
            "/etc/cargo-oci/contract".into(),
            "/etc/group".into(),
            "/etc/nsswitch.conf".into(),
            "/etc/passwd".into(),
            "/etc/ssl/certs/ca-certificates.crt".into(),
        ]);
        // What scanners read: a dpkg record and a copyright file per Debian package of the
        // libraries, and os-release (checked against dpkg and syft in sbom.rs).
        let scanner: Vec<String> = files
            .iter()
            .filter(|f| {
                f.starts_with("/var/lib/dpkg/status.d/")
                    || (f.starts_with("/usr/share/doc/") && f.ends_with("/copyright"))
                    || *f == "/etc/os-release"
            })
            .cloned()
            .collect();
        if name == "static-hello" {
            assert!(scanner.is_empty(), "{name}: {scanner:?}");
        }
        expected.extend(scanner);
        expected.sort();
        expected.dedup();
        assert_eq!(
            files, expected,
            "{name}: files in the image vs binary + ldd + contracts"
        );
        if name == "tls-zlib" {
            for lib in ["libssl.so.3", "libcrypto.so.3", "libz.so.1", "libc.so.6"] {
                assert!(files.iter().any(|f| f.ends_with(lib)), "{lib} missing");
            }
        }
        if name == "static-hello" {
            assert!(
                !files.iter().any(|f| f.contains(".so")),
                "a static binary has no closure: {files:?}"
            );
        }
        // No shell, no package manager.
        for p in ["/bin/sh", "/bin/bash", "/usr/bin/apt", "/sbin/apk"] {
            assert!(
                !rootfs.join(&p[1..]).exists(),
                "{p} must not be in the image"
            );
        }
        let links: Vec<String> = tree(&rootfs)
            .into_iter()
            .filter(|(_, k)| *k == 'l')
            .map(|(p, _)| p)
            .collect();
        assert_eq!(links, vec!["/bin/runtime".to_string()]);
        let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
        assert!(
            passwd.contains("root:x:0:0:") && passwd.contains("nobody:x:65534:65534:"),
            "{passwd}"
        );
        assert_eq!(
            std::fs::read_to_string(rootfs.join("etc/nsswitch.conf")).unwrap(),
            "hosts: files dns\n"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| {
            std::fs::symlink_metadata(rootfs.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("tmp"), 0o1777);
        assert_eq!(mode("bin"), 0o555);
    }
}

#[test]
fn builds_are_reproducible_across_directories_and_times() {
    let tmp = tempfile::tempdir().unwrap();
    let digest = |dir: &Path, epoch: Option<&str>| {
        let mut c = Command::new(cargo_oci_bin());
        c.env("CARGO_OCI_CACHE_DIR", test_cache_dir());
        c.args([
            "oci",
            "build",
            "--release",
            "-q",
            "--message-format",
            "json",
        ])
        .current_dir(dir);
        c.env("CARGO_TARGET_DIR", dir.join("target"));
        match epoch {
            Some(e) => c.env("SOURCE_DATE_EPOCH", e),
            None => c.env_remove("SOURCE_DATE_EPOCH"),
        };
        let v = result(&ok(&mut c));
        v["digest"].as_str().unwrap().to_string()
    };
    let copy = |to: &Path| copy_example("http-hello", to);
    let a = tmp.path().join("one/http-hello");
    let b = tmp.path().join("elsewhere/deeper/http-hello");
    std::fs::create_dir_all(a.parent().unwrap()).unwrap();
    std::fs::create_dir_all(b.parent().unwrap()).unwrap();
    copy(&a);
    let first = digest(&a, None);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    copy(&b);
    let second = digest(&b, None);
    assert_eq!(
        first, second,
        "same sources in two directories, built at two times"
    );
    let other = digest(&b, Some("1700000000"));
    assert_ne!(first, other, "SOURCE_DATE_EPOCH changes the image");
    assert_eq!(other, digest(&b, Some("1700000000")));
}
