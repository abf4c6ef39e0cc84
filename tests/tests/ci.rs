//! CI conventions: errors as JSON (`--message-format json`) that `jq` reads, registry
//! credentials from podman's root location and from the environment for `push` (htpasswd
//! registry), `stop-signal` honoured by `podman stop`, and probe addresses that read the
//! container's `PORT`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cargo_oci_tests::registry::Registry;
use cargo_oci_tests::*;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `jq -e FILTER` on `json`: true when jq reads it and the filter holds.
fn jq(json: &[u8], filter: &str) -> bool {
    let mut child = Command::new("jq")
        .args(["-e", filter])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("jq runs");
    child.stdin.take().unwrap().write_all(json).unwrap();
    child.wait().unwrap().success()
}

/// Asserts a failed command printed its error as one JSON object on stdout that jq reads, with
/// the exit code the process ended with, the message holding `says`, and a help line (a usage
/// error always has one).
fn assert_json_error(out: &Output, code: i32, says: &str) {
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{text}\nstderr:\n{}",
        stderr(out)
    );
    let filter = format!(
        r#"select(.reason == "error") | .exit_code == {code} and has("help") and (.help | type == "string" and length > 0 or {code} == 1) and ([.message] + .causes | join(" ") | contains("{says}"))"#
    );
    assert!(jq(&out.stdout, &filter), "{filter}\nstdout:\n{text}");
    assert_eq!(
        text.lines()
            .filter(|l| l.contains(r#""reason":"error""#))
            .count(),
        1,
        "{text}"
    );
}

/// `cargo oci push --no-build` of the shared http-hello build, from a private target directory,
/// with no credentials from this machine's files unless the caller adds them.
fn push_cmd(dir: &Path, target: &Path, home: &Path, to: &str, extra: &[&str]) -> Command {
    let mut c = cargo_oci(
        dir,
        &[
            &["push", "--release", "--no-build", "-v", "--to", to][..],
            extra,
        ]
        .concat(),
    );
    c.env("CARGO_TARGET_DIR", target)
        .env("HOME", home)
        .env("DOCKER_CONFIG", home.join("docker"))
        .env("XDG_RUNTIME_DIR", home.join("run"))
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("CARGO_OCI_REGISTRY_USER")
        .env_remove("CARGO_OCI_REGISTRY_PASSWORD");
    c
}

#[test]
fn errors_are_json_that_jq_reads() {
    if tool("jq").is_none() || tool("docker-registry").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();

    // Bad metadata.
    let bad = tmp.path().join("bad");
    copy_example("http-hello", &bad);
    let toml = std::fs::read_to_string(bad.join("Cargo.toml"))
        .unwrap()
        .replace(
            "[package.metadata.oci]\n",
            "[package.metadata.oci]\nstop-signal = \"SIGNOPE\"\n",
        );
    std::fs::write(bad.join("Cargo.toml"), toml).unwrap();
    let out = run(cargo_oci(&bad, &["build", "--message-format", "json"]));
    assert_json_error(&out, 2, "stop-signal");

    // Unknown package.
    let dir = example("http-hello");
    let out = run(cargo_oci(
        &dir,
        &["build", "-p", "no-such-package", "--message-format", "json"],
    ));
    assert_json_error(&out, 2, "no-such-package");

    // A bad command line: JSON too, and it names the option, not Cargo.toml.
    let out = run(cargo_oci(
        &dir,
        &["build", "--no-such-flag", "--message-format", "json"],
    ));
    assert_json_error(&out, 2, "--no-such-flag");
    let out = run(cargo_oci(
        &dir,
        &["build", "--tag", "bad:tag", "--message-format=json"],
    ));
    assert_json_error(&out, 2, "--tag");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("Cargo.toml"));
    let out = run(cargo_oci(
        &dir,
        &["build", "--bin", "nope", "--message-format=json"],
    ));
    assert_json_error(&out, 2, "--bin");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("Cargo.toml"));

    // Registry down: a free loopback port nobody listens on.
    let target = private_target(tmp.path());
    let home = tmp.path().join("home");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = run(push_cmd(
        &dir,
        &target,
        &home,
        &format!("127.0.0.1:{port}/ci/down"),
        &["--message-format", "json"],
    ));
    assert_json_error(&out, 1, &format!("127.0.0.1:{port}"));

    // Wrong password.
    let Some(reg) = Registry::start(Some(("ann", "s3cret"))) else {
        return;
    };
    let out = run(push_cmd(
        &dir,
        &target,
        &home,
        &format!("{}/ci/wrong", reg.addr),
        &["--message-format", "json"],
    )
    .env("CARGO_OCI_REGISTRY_USER", "ann")
    .env("CARGO_OCI_REGISTRY_PASSWORD", "wrong"));
    let code = out.status.code().unwrap_or(-1);
    assert!(code == 1 || code == 2, "{}", stderr(&out));
    assert_json_error(&out, code, "ann");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("wrong"));
    assert!(!reg.catalog().iter().any(|r| r == "ci/wrong"));
}

#[test]
fn push_reads_environment_and_podman_root_credentials() {
    if tool("docker-registry").is_none() || tool("podman").is_none() {
        return;
    }
    let Some(reg) = Registry::start(Some(("ann", "s3cret"))) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let target = private_target(tmp.path());
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let dir = example("http-hello");

    // No credentials anywhere: refused, and -v says where it looked.
    let out = run(push_cmd(
        &dir,
        &target,
        &home,
        &format!("{}/ci/anon", reg.addr),
        &[],
    ));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no credentials for"),
        "{}",
        stderr(&out)
    );

    // The environment.
    let out = run(
        push_cmd(&dir, &target, &home, &format!("{}/ci/env", reg.addr), &[])
            .env("CARGO_OCI_REGISTRY_USER", "ann")
            .env("CARGO_OCI_REGISTRY_PASSWORD", "s3cret"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("user `ann` (from $CARGO_OCI_REGISTRY_USER"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("s3cret"));

    // podman's root location: `podman login` as root with no XDG_RUNTIME_DIR writes
    // /run/containers/0/auth.json; push finds it there.
    let uid = run(Command::new("id").arg("-u"));
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        assert!(!in_ci(), "the podman root location needs root");
        eprintln!("SKIP: podman's root location needs root");
        return;
    }
    let mut login = Command::new("podman");
    login
        .args([
            "login",
            "--tls-verify=false",
            "-u",
            "ann",
            "--password-stdin",
        ])
        .arg(&reg.addr)
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("REGISTRY_AUTH_FILE")
        .stdin(Stdio::piped());
    let mut child = login.stdout(Stdio::null()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    assert!(child.wait().unwrap().success(), "podman login failed");
    let root_auth = PathBuf::from("/run/containers/0/auth.json");
    let stored = std::fs::read_to_string(&root_auth).unwrap_or_default();
    let logout = || {
        let _ = Command::new("podman")
            .args(["logout"])
            .arg(&reg.addr)
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("REGISTRY_AUTH_FILE")
            .output();
    };
    assert!(stored.contains(&reg.addr), "{stored}");
    let mut push = push_cmd(
        &dir,
        &target,
        &home,
        &format!("{}/ci/podman-root", reg.addr),
        &[],
    );
    push.env_remove("XDG_RUNTIME_DIR");
    let out = run(push);
    logout();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("(from /run/containers/0/auth.json)"),
        "{}",
        stderr(&out)
    );
    let catalog = reg.catalog();
    for repo in ["ci/env", "ci/podman-root"] {
        assert!(catalog.iter().any(|r| r == repo), "{catalog:?}");
    }
    assert!(!catalog.iter().any(|r| r == "ci/anon"), "{catalog:?}");
}

const SERVICE: &str = r#"
//! Serves HTTP 200 on 0.0.0.0:$PORT (default 8080) and stops on SIGINT only, as a service
//! whose only shutdown path is Ctrl-C.
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

unsafe extern "C" {
    fn signal(signum: i32, handler: usize) -> usize;
}

extern "C" fn on_int(_: i32) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() {
    unsafe { signal(2, on_int as *const () as usize) };
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let l = std::net::TcpListener::bind(format!("0.0.0.0:{port}")).unwrap();
    l.set_nonblocking(true).unwrap();
    eprintln!("listening on {port}");
    while !STOP.load(Ordering::SeqCst) {
        match l.accept() {
            Ok((mut s, _)) => {
                s.set_nonblocking(false).ok();
                s.set_read_timeout(Some(std::time::Duration::from_secs(2))).ok();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok");
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
    eprintln!("stopping on SIGINT");
}
"#;

/// A package whose service stops on SIGINT only and serves on $PORT, with probes that read PORT.
fn sigint_service(dir: &Path, name: &str, stop_signal: Option<&str>) {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("src/main.rs"), SERVICE).unwrap();
    let stop = stop_signal
        .map(|s| format!("stop-signal = \"{s}\"\n"))
        .unwrap_or_default();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [package.metadata.oci]\nname = \"localhost/cargo-oci-ci/{name}\"\n{stop}\
             ca-certificates = false\n\n\
             [package.metadata.oci.live]\nhttp = \"http://127.0.0.1:${{PORT:-8080}}/healthz\"\n\n\
             [package.metadata.oci.ready]\ntcp = \"127.0.0.1:${{PORT:-8080}}\"\n"
        ),
    )
    .unwrap();
}

/// Builds `dir` and loads it into podman; returns `name:latest`.
fn load(dir: &Path, name: &str) -> String {
    let mut build = cargo_oci(dir, &["build", "--release", "-q", "--stream"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let load = Command::new("podman")
        .args(["load", "-q"])
        .stdin(build.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(build.wait().unwrap().success(), "cargo oci build failed");
    assert!(load.status.success(), "podman load: {}", stderr(&load));
    format!("localhost/cargo-oci-ci/{name}:latest")
}

/// A podman container, removed on drop.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "-f", "-t", "0", &self.0])
            .output();
    }
}

impl Container {
    fn run(image: &str, env: &[&str]) -> Container {
        let name = unique("ci");
        let mut c = Command::new("podman");
        c.args([
            "run",
            "-d",
            "--name",
            &name,
            "--read-only",
            "--network=none",
        ]);
        for e in env {
            c.args(["-e", e]);
        }
        ok(c.arg(image));
        Container(name)
    }

    fn exec(&self, env: &[&str], args: &[&str]) -> Output {
        let mut c = Command::new("podman");
        c.arg("exec");
        for e in env {
            c.args(["-e", e]);
        }
        run(c.arg(&self.0).args(args))
    }

    /// Waits (at most 20 s) until `/bin/ready` passes.
    fn wait_ready(&self) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if self.exec(&[], &["/bin/ready"]).status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("{} never became ready", self.0);
    }
}

#[test]
fn stop_signal_stops_a_sigint_service_promptly_and_probes_read_port() {
    if tool("podman").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let name = "sigint-svc";
    let dir = tmp.path().join(name);
    sigint_service(&dir, name, Some("INT"));
    let image = load(&dir, name);

    let config = ok(Command::new("podman").args([
        "image",
        "inspect",
        "--format",
        "{{json .Config.StopSignal}}",
        &image,
    ]));
    assert_eq!(config.trim(), "\"SIGINT\"", "{config}");

    // The service listens on PORT=9123 only; the probes follow the container's PORT.
    let c = Container::run(&image, &["PORT=9123"]);
    c.wait_ready();
    let live = c.exec(&[], &["/bin/live"]);
    assert!(live.status.success(), "{}", stderr(&live));
    let elsewhere = c.exec(&["PORT=9124"], &["/bin/live"]);
    assert_eq!(elsewhere.status.code(), Some(1), "{}", stderr(&elsewhere));
    assert!(
        stderr(&elsewhere).contains("9124"),
        "{}",
        stderr(&elsewhere)
    );

    // podman stop sends SIGINT: the service stops at once, with exit 0, long before the
    // 10 s grace period.
    let t = Instant::now();
    ok(Command::new("podman").args(["stop", "-t", "10", &c.0]));
    let took = t.elapsed();
    assert!(took < Duration::from_secs(5), "podman stop took {took:?}");
    let code =
        ok(Command::new("podman").args(["inspect", "--format", "{{.State.ExitCode}}", &c.0]));
    assert_eq!(code.trim(), "0");
    let logs = run(Command::new("podman").args(["logs", &c.0]));
    assert!(
        stderr(&logs).contains("stopping on SIGINT"),
        "{}",
        stderr(&logs)
    );

    // Without stop-signal the same service ignores podman's SIGTERM (it is PID 1) and is
    // killed when the grace period ends.
    let plain_dir = tmp.path().join("sigint-plain");
    sigint_service(&plain_dir, "sigint-plain", None);
    let plain = load(&plain_dir, "sigint-plain");
    let c = Container::run(&plain, &[]);
    c.wait_ready();
    let t = Instant::now();
    ok(Command::new("podman").args(["stop", "-t", "2", &c.0]));
    assert!(t.elapsed() >= Duration::from_secs(2), "{:?}", t.elapsed());
    let code =
        ok(Command::new("podman").args(["inspect", "--format", "{{.State.ExitCode}}", &c.0]));
    assert_eq!(code.trim(), "137");
}

#[test]
fn bad_stop_signals_and_probe_variables_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for (edit, says) in [
        ("stop-signal = \"SIGSTOP\"", "stop-signal"),
        ("stop-signal = \"\"", "stop-signal"),
        (
            "[package.metadata.oci.ready]\ntcp = \"127.0.0.1:${PORT\"",
            "not closed",
        ),
        (
            "[package.metadata.oci.ready]\ntcp = \"127.0.0.1:$\"",
            "names no variable",
        ),
    ] {
        let dir = tmp.path().join(unique("bad"));
        sigint_service(&dir, "bad-signal", None);
        let toml = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let toml = if edit.starts_with('[') {
            toml.split("[package.metadata.oci.ready]")
                .next()
                .unwrap()
                .to_string()
                + edit
                + "\n"
        } else {
            toml.replace("ca-certificates", &format!("{edit}\nca-certificates"))
        };
        std::fs::write(dir.join("Cargo.toml"), toml).unwrap();
        let out = run(cargo_oci(&dir, &["build", "--no-build"]));
        assert_eq!(out.status.code(), Some(2), "{edit}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{edit}: {}", stderr(&out));
        assert!(stderr(&out).contains("help:"), "{edit}: {}", stderr(&out));
    }
}

#[test]
fn init_on_two_binaries_names_one_that_exists_and_the_default_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("multi");
    std::fs::create_dir_all(dir.join("src/bin")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"Multi\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("src/bin/server.rs"), "fn main() {}\n").unwrap();
    std::fs::write(dir.join("src/bin/cli.rs"), "fn main() {}\n").unwrap();
    let out = ok(cargo_oci(&dir, &["init", "--dry-run"]));
    assert!(out.contains("\nbin = \"cli\""), "{out}");
    assert!(out.contains("cli, server"), "{out}");
    assert!(out.contains("localhost/multi"), "{out}");
    ok(cargo_oci(&dir, &["init", "-q"]));
    let built = ok(cargo_oci(
        &dir,
        &["build", "--message-format", "json", "-q"],
    ));
    let j = result(&built);
    assert_eq!(j["name"], "localhost/multi", "{built}");
}
