//! The operable contracts, in real containers: probes (`/bin/live`, `/bin/ready`) of every kind,
//! `/bin/runtime` with runtime inputs, the debug variant and `DEBUG_SLEEP`, files and perms, the
//! hardening audit, and prompt stops (a SIGTERM-handling service, and `init = true`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cargo_oci_tests::*;

/// Builds an example (or a copy of it whose Cargo.toml `edit` changed) and loads it into podman.
/// Returns the image's first reference.
fn load_into_podman(dir: &Path) -> String {
    let mut build = cargo_oci(dir, &["build", "--release", "-q", "--stream"]);
    // A copy builds in a target directory of its own: it has the example's binary name, and a
    // shared directory would let one test's build replace the file another is packaging.
    if !dir.starts_with(root()) {
        build.env("CARGO_TARGET_DIR", dir.join("target"));
    }
    let mut build = build.stdout(Stdio::piped()).spawn().unwrap();
    let load = Command::new("podman")
        .args(["load", "-q"])
        .stdin(build.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(
        build.wait().unwrap().success(),
        "cargo oci build failed in {}",
        dir.display()
    );
    assert!(
        load.status.success(),
        "podman load: {}",
        String::from_utf8_lossy(&load.stderr)
    );
    let toml = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    let name = toml
        .lines()
        .find_map(|l| l.strip_prefix("name = \"localhost/"))
        .unwrap();
    format!("localhost/{}:latest", name.trim_end_matches('"'))
}

/// A copy of an example with its Cargo.toml edited, as a user would.
fn variant(
    example_name: &str,
    suffix: &str,
    edit: impl FnOnce(String) -> String,
) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(example_name);
    copy_example(example_name, &dir);
    let toml = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    let toml = toml.replace(
        &format!("cargo-oci-examples/{example_name}\""),
        &format!("cargo-oci-examples/{example_name}-{suffix}\""),
    );
    std::fs::write(dir.join("Cargo.toml"), edit(toml)).unwrap();
    (tmp, dir)
}

/// A running container, removed on drop.
struct Container(String);

impl Container {
    fn start(image: &str, args: &[&str]) -> Container {
        let name = unique("contract");
        ok(Command::new("podman")
            .args([
                "run",
                "-d",
                "--name",
                &name,
                "--read-only",
                "--network=none",
                "--user",
                "12345:12345",
                "--cap-drop=ALL",
                image,
            ])
            .args(args));
        Container(name)
    }
    fn exec(&self, args: &[&str]) -> std::process::Output {
        run(Command::new("podman").args(["exec", &self.0]).args(args))
    }
    /// Runs `args` until it succeeds (bounded).
    fn wait_until(&self, args: &[&str], within: Duration) {
        let start = Instant::now();
        loop {
            let out = self.exec(args);
            if out.status.success() {
                return;
            }
            assert!(
                start.elapsed() < within,
                "{args:?} still failing after {within:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    /// `podman stop` with the given grace period; returns how long it took.
    fn stop(&self, grace: u32) -> Duration {
        let t = Instant::now();
        ok(Command::new("podman").args(["stop", "-t", &grace.to_string(), &self.0]));
        t.elapsed()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "-f", "-t", "0", &self.0])
            .output();
    }
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn http_and_bin_probes_runtime_inputs_and_a_prompt_stop() {
    if tool("podman").is_none() {
        return;
    }
    let image = load_into_podman(&example("health-service"));
    let c = Container::start(
        &image,
        &["serve", "--listen", "0.0.0.0:8080", "--ready-after", "3"],
    );

    // Before the service listens: not ready, not live, one line saying why.
    let ready = c.exec(&["/bin/ready"]);
    assert_ne!(ready.status.code(), Some(0));
    let why = stderr_of(&ready);
    assert_eq!(why.trim().lines().count(), 1, "one line: {why}");
    assert!(
        why.contains("ready: unhealthy") && why.contains("/bin/probe"),
        "{why}"
    );
    let live = c.exec(&["/bin/live"]);
    assert_ne!(live.status.code(), Some(0));
    assert!(
        stderr_of(&live).contains("127.0.0.1:8080"),
        "{}",
        stderr_of(&live)
    );

    c.wait_until(&["/bin/ready"], Duration::from_secs(20));
    let live = c.exec(&["/bin/live"]);
    assert!(live.status.success(), "live: {}", stderr_of(&live));

    // A runtime input from the host, with its closure, on the runtime PATH.
    let out = c.exec(&["/bin/runtime", "openssl", "version"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("OpenSSL 3"));

    // The service handles SIGTERM: podman stop returns at once.
    let took = c.stop(10);
    assert!(took < Duration::from_secs(2), "podman stop took {took:?}");
}

#[test]
fn tcp_exec_probes_and_dead_ports() {
    if tool("podman").is_none() {
        return;
    }
    let (_t1, healthy) = variant("health-service", "tcp-exec", |t| {
        t.replace(
            "http = \"http://127.0.0.1:8080/healthz\"",
            "tcp = \"127.0.0.1:8080\"",
        )
        .replace(
            "bin = \"probe\"",
            "exec = [\"health-service\", \"check\", \"127.0.0.1:8080\"]",
        )
    });
    let (_t2, dead) = variant("health-service", "dead", |t| {
        t.replace(
            "http = \"http://127.0.0.1:8080/healthz\"\ntimeout = \"2s\"",
            "tcp = \"127.0.0.1:9\"\ntimeout = \"1s\"",
        )
        .replace("bin = \"probe\"", "http = \"http://127.0.0.1:8080/slow\"")
    });
    let image = load_into_podman(&healthy);
    let c = Container::start(&image, &[]);
    c.wait_until(&["/bin/live"], Duration::from_secs(20));
    let ready = c.exec(&["/bin/ready"]);
    assert!(ready.status.success(), "exec probe: {}", stderr_of(&ready));

    let image = load_into_podman(&dead);
    let c = Container::start(&image, &[]);
    // Wait for the service itself, through a command the image has.
    c.wait_until(
        &["/bin/runtime", "health-service", "check"],
        Duration::from_secs(20),
    );
    let t = Instant::now();
    let live = c.exec(&["/bin/live"]);
    assert_ne!(live.status.code(), Some(0), "nothing listens on port 9");
    assert!(
        stderr_of(&live).contains("127.0.0.1:9"),
        "{}",
        stderr_of(&live)
    );
    // (podman exec itself takes a few hundred milliseconds, more on a busy machine.)
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "a refused port fails at once: {:?}",
        t.elapsed()
    );

    // /slow answers after 30 s: the probe gives up at its 1 s timeout.
    let t = Instant::now();
    let ready = c.exec(&["/bin/ready"]);
    let took = t.elapsed();
    assert_ne!(ready.status.code(), Some(0));
    assert!(
        stderr_of(&ready).contains("timed out"),
        "{}",
        stderr_of(&ready)
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "timeout 1s (the endpoint answers after 30 s), took {took:?}"
    );
}

/// The manifest of `reference` in an OCI layout, as JSON.
fn manifest(layout: &Path, reference: &str) -> serde_json::Value {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == reference)
        .unwrap_or_else(|| panic!("{reference} is not in {}", layout.display()));
    let hex = desc["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()).unwrap()
}

fn layer_digests(m: &serde_json::Value) -> Vec<String> {
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn debug_variant_shares_layers_and_has_a_shell() {
    if tool("podman").is_none() {
        return;
    }
    let b = built("health-service");
    let standard = layer_digests(&manifest(&b.layout, b.reference()));
    let debug = layer_digests(&manifest(&b.layout, &format!("{}-debug", b.reference())));
    assert_eq!(debug.len(), standard.len() + 1, "one debug layer on top");
    assert_eq!(
        &debug[..standard.len()],
        &standard[..],
        "every standard layer is shared"
    );

    let image = load_into_podman(&example("health-service"));
    let debug_image = format!("{image}-debug");
    let mut sh = Command::new("podman")
        .args([
            "run",
            "-i",
            "--rm",
            "--network=none",
            "--user",
            "65534:65534",
            "--entrypoint",
            "/bin/debug",
            &debug_image,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    sh.stdin
        .take()
        .unwrap()
        .write_all(b"echo shell-ok\nls /srv/static\nopenssl version\nstat -c '%a %u %g %n' /srv/static/index.html /data /tmp /bin\ncat /srv/static/index.html >/dev/null && echo can-read\n")
        .unwrap();
    let out = sh.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("debug shell"),
        "a banner: {}",
        stderr_of(&out)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "shell-ok");
    assert_eq!(lines[1], "index.html");
    assert!(
        lines[2].starts_with("OpenSSL 3"),
        "runtime inputs on the debug PATH: {stdout}"
    );
    // files and perms, seen from inside as a non-root user.
    assert_eq!(lines[3], "440 0 65534 /srv/static/index.html");
    assert_eq!(lines[4], "755 65534 65534 /data");
    assert_eq!(lines[5], "1777 0 0 /tmp");
    assert_eq!(lines[6], "555 0 0 /bin");
    assert_eq!(lines[7], "can-read", "group 65534 may read the 0440 file");

    // Another uid is not in the group: the 0440 file is closed to it.
    let out = run(Command::new("podman").args([
        "run",
        "--rm",
        "--network=none",
        "--user",
        "12345:12345",
        "--entrypoint",
        "/bin/debug",
        &debug_image,
        "-c",
        "cat /srv/static/index.html",
    ]));
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr_of(&out).contains("Permission denied"),
        "{}",
        stderr_of(&out)
    );

    // DEBUG_SLEEP delays the start of the service in the debug image. A busy machine can only
    // make a run slower, so the bounds are: at least the 2 s asked for, and the plain run never
    // waits (no DEBUG_SLEEP message).
    let time = |env: &[&str]| {
        let t = Instant::now();
        let mut c = Command::new("podman");
        c.args(["run", "--rm", "--network=none"]);
        for e in env {
            c.args(["-e", e]);
        }
        let out = run(c.args([debug_image.as_str(), "once"]));
        assert!(out.status.success(), "{}", stderr_of(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "health-service 0.1.0\n"
        );
        (t.elapsed(), stderr_of(&out))
    };
    let (plain, plain_err) = time(&[]);
    let (slept, slept_err) = time(&["DEBUG_SLEEP=2"]);
    assert!(!plain_err.contains("DEBUG_SLEEP"), "{plain_err}");
    assert!(
        slept_err.contains("DEBUG_SLEEP=2: waiting 2s"),
        "{slept_err}"
    );
    assert!(
        slept >= Duration::from_secs(2),
        "DEBUG_SLEEP=2 but the run took {slept:?}"
    );
    assert!(
        slept < plain + Duration::from_secs(6),
        "plain {plain:?}, with DEBUG_SLEEP=2 {slept:?}"
    );
}

/// Walks an unpacked rootfs: (absolute path, metadata) for every entry.
fn walk(root: &Path) -> Vec<(String, std::fs::Metadata)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p.clone());
            }
            out.push((format!("/{}", p.strip_prefix(root).unwrap().display()), m));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn hardening_audit_of_the_standard_image() {
    if tool("umoci").is_none() || tool("podman").is_none() {
        return;
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    for name in ["health-service", "tls-zlib"] {
        let b = built(name);
        let tmp = tempfile::tempdir().unwrap();
        let bundle = tmp.path().join("bundle");
        ok(Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:{}", b.layout.display(), b.reference()))
            .arg(&bundle));
        let rootfs = bundle.join("rootfs");
        let entries = walk(&rootfs);
        assert!(entries.len() > 10);
        // Owners that perms (and the volume) set on purpose.
        let owned = |p: &str| match (name, p) {
            ("health-service", "/data") => Some((65534, 65534)),
            ("health-service", "/srv/static/index.html") => Some((0, 65534)),
            _ => None,
        };
        for (path, m) in &entries {
            let mode = m.permissions().mode() & 0o7777;
            assert_eq!(
                mode & 0o6000,
                0,
                "{name}: {path} is setuid/setgid ({mode:o})"
            );
            if !m.file_type().is_symlink() {
                if path == "/tmp" {
                    assert_eq!(mode, 0o1777);
                } else {
                    assert_eq!(
                        mode & 0o002,
                        0,
                        "{name}: {path} is world-writable ({mode:o})"
                    );
                }
            }
            assert_eq!(
                (m.uid(), m.gid()),
                owned(path).unwrap_or((0, 0)),
                "{name}: owner of {path}"
            );
            // No shell and no package manager: nothing of those names but directories (the
            // scanners' records live in /var/lib/dpkg/status.d), and nothing executable there.
            let base = path.rsplit('/').next().unwrap_or_default();
            assert!(
                m.is_dir()
                    || !["sh", "bash", "ash", "dash", "busybox", "apt", "apk", "dpkg"]
                        .contains(&base),
                "{name}: {path} must not be in the standard image"
            );
            if path.starts_with("/var/lib/dpkg/") && m.is_file() {
                assert_eq!(mode & 0o111, 0, "{name}: {path} is executable ({mode:o})");
            }
        }
        let bin = entries.iter().find(|(p, _)| p == "/bin").unwrap();
        assert_eq!(bin.1.permissions().mode() & 0o7777, 0o555);
    }
    // It runs read-only, as an arbitrary uid, with no capabilities.
    let image = load_into_podman(&example("health-service"));
    let out = ok(Command::new("podman").args([
        "run",
        "--rm",
        "--read-only",
        "--user",
        "12345:12345",
        "--cap-drop=ALL",
        "--network=none",
        &image,
        "once",
    ]));
    assert_eq!(out, "health-service 0.1.0\n");
}

#[test]
fn init_stops_a_service_that_ignores_sigterm_as_pid_1() {
    if tool("podman").is_none() {
        return;
    }
    // http-hello installs no signal handler: as PID 1, SIGTERM does nothing to it.
    let plain = load_into_podman(&example("http-hello"));
    let (_t, dir) = variant("http-hello", "init", |t| {
        t.replace(
            "[package.metadata.oci]\n",
            "[package.metadata.oci]\ninit = true\n",
        )
    });
    let with_init = load_into_podman(&dir);

    let c = Container::start(&with_init, &[]);
    c.wait_until(
        &["/bin/runtime", "http-hello", "self-test"],
        Duration::from_secs(20),
    );
    let took = c.stop(10);
    assert!(
        took < Duration::from_secs(2),
        "with init = true, podman stop took {took:?}"
    );

    let c = Container::start(&plain, &[]);
    c.wait_until(
        &["/bin/runtime", "http-hello", "self-test"],
        Duration::from_secs(20),
    );
    let took = c.stop(3);
    assert!(
        took >= Duration::from_millis(2500),
        "without init the service ignores SIGTERM (took {took:?})"
    );
}
