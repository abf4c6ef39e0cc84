//! The first five minutes and the pipeline view: `cargo oci new` (the starter service builds,
//! runs in podman and answers its readiness probe, then stops gracefully), `cargo oci init` (keeps
//! a commented Cargo.toml intact and the result builds), `cargo oci inspect` (every library with
//! the object that needed it), `cargo oci load` into the Docker engine and podman, exit codes, and
//! the output made for pipelines (plain stderr, `-q`, `--message-format json`).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cargo_oci_tests::*;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts a usage error: exit 2, and a message saying what and how to fix it.
fn assert_usage_error(out: &std::process::Output, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit 2, got {}; stderr:\n{}",
        out.status,
        stderr(out)
    );
    let err = stderr(out);
    assert!(err.contains(what), "stderr lacks {what:?}:\n{err}");
}

/// Removes a podman container on drop.
struct PodmanContainer(String);

impl Drop for PodmanContainer {
    fn drop(&mut self) {
        let _ = Command::new("podman").args(["rm", "-f", &self.0]).output();
    }
}

#[test]
fn new_package_builds_loads_answers_ready_and_stops_gracefully() {
    let tmp = tempfile::tempdir().unwrap();
    let name = unique("demo");
    let created = ok(cargo_oci(tmp.path(), &["new", &name]));
    assert_eq!(created.trim(), name, "new prints the package path");
    let dir = tmp.path().join(&name);
    let toml = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    assert!(
        toml.contains(&format!("name = \"localhost/{name}\"")),
        "{toml}"
    );
    assert!(toml.contains("debug = true") && toml.contains("[package.metadata.oci.ready]"));

    // As a user would: cargo oci new demo && cd demo && cargo oci build.
    let built = ok(cargo_oci(&dir, &["build"]));
    let image = format!("localhost/{name}:latest");
    assert!(built.lines().any(|l| l == image), "build printed:\n{built}");
    assert!(
        built.lines().any(|l| l == format!("{image}-debug")),
        "the template has a debug variant:\n{built}"
    );

    let Some(_) = tool("podman") else { return };
    let loaded = ok(cargo_oci(
        &dir,
        &["load", "--no-build", "--runtime", "podman"],
    ));
    assert!(
        loaded.lines().any(|l| l == image),
        "load printed:\n{loaded}"
    );
    let refs: Vec<String> = loaded.lines().map(str::to_string).collect();

    let container = PodmanContainer(unique("dx-demo"));
    ok(Command::new("podman").args([
        "run",
        "-d",
        "--name",
        &container.0,
        "--read-only",
        "--network=none",
        "--user",
        "12345:12345",
        "--cap-drop=ALL",
        &image,
    ]));
    let start = Instant::now();
    let mut ready = run(Command::new("podman").args(["exec", &container.0, "/bin/ready"]));
    while !ready.status.success() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(200));
        ready = run(Command::new("podman").args(["exec", &container.0, "/bin/ready"]));
    }
    assert!(
        ready.status.success(),
        "/bin/ready never passed: {}",
        stderr(&ready)
    );
    ok(Command::new("podman").args(["exec", &container.0, "/bin/live"]));

    // SIGTERM: it drains and exits 0, long before podman's 10 s kill.
    let t = Instant::now();
    ok(Command::new("podman").args(["stop", "-t", "10", &container.0]));
    let took = t.elapsed();
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    let code = ok(Command::new("podman").args([
        "inspect",
        "--format",
        "{{.State.ExitCode}}",
        &container.0,
    ]));
    assert_eq!(code.trim(), "0", "exit code after SIGTERM");
    let logs = run(Command::new("podman").args(["logs", &container.0]));
    assert!(
        stderr(&logs).contains("stopped") || stdout(&logs).contains("stopped"),
        "logs: {}",
        stderr(&logs)
    );
    drop(container);
    for r in refs {
        let _ = Command::new("podman").args(["rmi", "-f", &r]).output();
    }
}

#[test]
fn init_keeps_a_commented_manifest_and_the_result_builds() {
    let tmp = tempfile::tempdir().unwrap();
    let name = unique("initme");
    ok(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["new", "--bin", "--vcs", "none", "--quiet", &name])
            .current_dir(tmp.path()),
    );
    let dir = tmp.path().join(&name);
    let manifest = dir.join("Cargo.toml");
    let generated = std::fs::read_to_string(&manifest).unwrap();
    let original = format!(
        "# The service's manifest. This comment must survive.\n{}\n#   trailing comment, odd   spacing\n[profile.dev]\nopt-level = 1 # inline comment\n",
        generated.replace("[dependencies]", "[dependencies]   # none yet")
    );
    std::fs::write(&manifest, &original).unwrap();

    let out = ok(cargo_oci(&dir, &["init"]));
    assert!(out.trim().ends_with("Cargo.toml"), "init printed {out}");
    let after = std::fs::read_to_string(&manifest).unwrap();
    assert!(
        after.starts_with(&original),
        "the manifest changed:\n{after}"
    );
    assert!(after.contains("\n[package.metadata.oci]\n"), "{after}");
    assert!(after.contains("# [package.metadata.oci.live]"), "{after}");

    // A second init refuses and changes nothing.
    let again = run(cargo_oci(&dir, &["init"]));
    assert_usage_error(&again, "already has [package.metadata.oci]");
    assert!(stderr(&again).contains("help:"), "{}", stderr(&again));
    assert_eq!(std::fs::read_to_string(&manifest).unwrap(), after);

    let built = ok(cargo_oci(&dir, &["build", "--message-format", "json"]));
    let j = &results(&built)[0];
    assert_eq!(j["name"], format!("localhost/{name}"));
    let refs: Vec<&str> = j["references"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    assert!(
        refs.contains(&format!("localhost/{name}:0.1.0").as_str()),
        "{refs:?}"
    );
    assert!(
        refs.contains(&format!("localhost/{name}:latest").as_str()),
        "{refs:?}"
    );
}

#[test]
fn inspect_explains_every_library() {
    let b = built("http-hello");
    let dir = example("http-hello");
    let out = ok(cargo_oci(
        &dir,
        &["inspect", "--release", "--no-build", "--json"],
    ));
    let j = &results(&out)[0];
    assert_eq!(j["reason"], "image-inspected");
    assert_eq!(
        j["digest"], b.json["digest"],
        "inspect sees the built image"
    );

    // Layers: the build's digests and sizes, each with its files.
    let layers = j["layers"].as_array().unwrap();
    let built_layers = b.json["layers"].as_array().unwrap();
    assert_eq!(layers.len(), built_layers.len());
    for (l, bl) in layers.iter().zip(built_layers) {
        assert_eq!(l["digest"], bl["digest"]);
        assert_eq!(l["size"], bl["size"]);
        assert!(!l["files"].as_array().unwrap().is_empty(), "{l}");
    }
    let files: Vec<&str> = layers
        .iter()
        .flat_map(|l| l["files"].as_array().unwrap())
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert!(files.contains(&"/bin/http-hello"), "{files:?}");
    assert!(files.contains(&"/bin/entrypoint"), "{files:?}");

    // Libraries: each with the object that needed it and how it was found, each in the image.
    let libs = j["libraries"].as_array().unwrap();
    assert!(
        libs.len() >= 3,
        "ld-linux, libc, libgcc_s at least: {libs:?}"
    );
    let objects: Vec<&str> = libs.iter().filter_map(|l| l["path"].as_str()).collect();
    for l in libs {
        let path = l["path"].as_str().unwrap();
        assert!(files.contains(&path), "{path} is not a file of any layer");
        let by = l["needed_by"].as_str().unwrap();
        assert!(
            by == "/bin/http-hello" || by == "/bin/entrypoint" || objects.contains(&by),
            "{path} needed by {by}, which is not in the image"
        );
        assert!(!l["found_via"].as_str().unwrap().is_empty());
        assert!(l["why"].as_str().unwrap().contains(by), "{l}");
    }
    let libc = libs
        .iter()
        .find(|l| l["name"] == "libc.so.6")
        .expect("libc is listed");
    assert!(
        libc["search_path"].as_str().is_some(),
        "libc was found through a search path: {libc}"
    );
    let interp = libs
        .iter()
        .find(|l| l["found_via"] == "interpreter")
        .expect("the loader is listed");
    assert!(
        interp["path"].as_str().unwrap().contains("ld-linux"),
        "{interp}"
    );

    // The human view says the same.
    let text = ok(cargo_oci(
        &dir,
        &["inspect", "--release", "--no-build", "-q"],
    ));
    assert!(text.contains("libraries (why each is there)"), "{text}");
    assert!(text.contains("needs libc.so.6"), "{text}");
    assert!(text.contains("files of the service layer"), "{text}");
}

/// `cargo oci load` for an example, with `env` set; returns its JSON result.
fn load(dir: &Path, args: &[&str], env: &[(&str, &str)], unset: &[&str]) -> serde_json::Value {
    let mut c = cargo_oci(
        dir,
        &[
            &[
                "load",
                "--release",
                "--no-build",
                "--message-format",
                "json",
            ],
            args,
        ]
        .concat(),
    );
    for (k, v) in env {
        c.env(k, v);
    }
    for k in unset {
        c.env_remove(k);
    }
    let out = ok(c);
    results(&out).remove(0)
}

#[test]
fn load_into_the_docker_engine_and_into_podman() {
    let b = built("http-hello");
    let dir = example("http-hello");
    if let Some(host) = docker_host() {
        // Docker answers first when DOCKER_HOST names a running engine.
        let j = load(&dir, &[], &[("DOCKER_HOST", &host)], &[]);
        assert_eq!(j["reason"], "image-loaded");
        assert_eq!(j["runtime"], "docker", "{j}");
        assert_eq!(j["digest"], b.json["digest"]);
        let id = ok(Command::new("/usr/bin/docker").args([
            "-H",
            &host,
            "image",
            "inspect",
            "--format",
            "{{.Id}}",
            b.reference(),
        ]));
        assert_eq!(id.trim(), b.json["config_digest"].as_str().unwrap());
        let out = ok(Command::new("/usr/bin/docker").args([
            "-H",
            &host,
            "run",
            "--rm",
            "--network=none",
            b.reference(),
            "self-test",
        ]));
        assert!(!out.is_empty());
    }
    if tool("podman").is_some() {
        let j = load(&dir, &["--runtime", "podman"], &[], &["DOCKER_HOST"]);
        assert_eq!(j["runtime"], "podman", "{j}");
        let id = ok(Command::new("podman").args([
            "image",
            "inspect",
            "--format",
            "{{.Id}}",
            b.reference(),
        ]));
        assert_eq!(
            format!("sha256:{}", id.trim()),
            b.json["config_digest"].as_str().unwrap()
        );
    }
}

#[test]
fn load_without_an_engine_says_what_to_do() {
    let empty = tempfile::tempdir().unwrap();
    let out = run(cargo_oci(&example("http-hello"), &["load"])
        .env("PATH", empty.path())
        .env_remove("DOCKER_HOST"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    for want in [
        "no container engine",
        "`docker` is not installed",
        "`podman` is not installed",
        "help:",
        "--format docker-archive",
    ] {
        assert!(err.contains(want), "stderr lacks {want:?}:\n{err}");
    }
}

#[test]
fn usage_errors_exit_2_and_say_how_to_fix_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    assert_usage_error(
        &run(cargo_oci(dir, &["build", "--no-such-flag"])),
        "--no-such-flag",
    );
    assert_usage_error(&run(cargo_oci(dir, &["frobnicate"])), "frobnicate");
    assert_usage_error(
        &run(cargo_oci(dir, &["load", "--runtime", "rkt"])),
        "possible values: docker, podman",
    );
    assert_usage_error(
        &run(cargo_oci(dir, &["new", "9lives"])),
        "starts with a digit",
    );
    std::fs::create_dir(dir.join("taken")).unwrap();
    let taken = run(cargo_oci(dir, &["new", "taken"]));
    assert_usage_error(&taken, "already exists");
    assert!(
        stderr(&taken).contains("cargo oci init"),
        "{}",
        stderr(&taken)
    );
    let no_manifest = run(cargo_oci(dir, &["init"]));
    assert_usage_error(&no_manifest, "no Cargo.toml at");
    assert!(stderr(&no_manifest).contains("help:"));
    assert!(run(cargo_oci(dir, &["--help"])).status.success());
    // Nothing half-made.
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["taken"]);
}

#[test]
fn output_for_pipelines_plain_quiet_verbose_and_json() {
    built("http-hello");
    let dir = example("http-hello");
    let args = ["build", "--release", "--no-build"];

    // stderr is not a terminal here: plain lines, no bars, no escapes.
    let out = run(cargo_oci(&dir, &args));
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(" layers: "), "{err}");
    assert!(err.contains("closure"), "{err}");
    assert!(!err.contains('\r') && !err.contains('\x1b'), "{err:?}");

    let quiet = run(cargo_oci(&dir, &[&args[..], &["-q"]].concat()));
    assert!(quiet.status.success());
    assert_eq!(stderr(&quiet), "", "-q says nothing");
    assert!(!stdout(&quiet).is_empty(), "-q still prints the result");

    let verbose = run(cargo_oci(&dir, &[&args[..], &["-v"]].concat()));
    let err = stderr(&verbose);
    assert!(
        err.contains("objects;") && err.contains("compressing"),
        "{err}"
    );
    assert!(err.lines().count() > stderr(&out).lines().count(), "{err}");

    // --message-format json: one object per result on stdout, for every command.
    let j = results(&ok(cargo_oci(
        &dir,
        &[&args[..], &["--message-format", "json"]].concat(),
    )));
    assert_eq!(j.len(), 1);
    assert_eq!(j[0]["reason"], "image-built");
    let j = results(&ok(cargo_oci(
        &dir,
        &[
            "inspect",
            "--release",
            "--no-build",
            "--message-format",
            "json",
        ],
    )));
    assert_eq!(j[0]["reason"], "image-inspected");
    let tmp = tempfile::tempdir().unwrap();
    let j = results(&ok(cargo_oci(
        tmp.path(),
        &["new", "svc", "--message-format", "json"],
    )));
    assert_eq!(j[0]["reason"], "package-created");
    assert_eq!(j[0]["image"], "localhost/svc");
    let svc = tmp.path().join("svc");
    let manifest = svc.join("Cargo.toml");
    let before = std::fs::read_to_string(&manifest).unwrap();
    let stripped = &before[..before.find("# How `cargo oci build`").unwrap()];
    std::fs::write(&manifest, stripped).unwrap();
    let j = results(&ok(cargo_oci(
        &svc,
        &["init", "--dry-run", "--message-format", "json"],
    )));
    assert_eq!(j[0]["reason"], "metadata-added");
    assert_eq!(j[0]["dry_run"], true);
    assert!(j[0]["block"]
        .as_str()
        .unwrap()
        .contains("[package.metadata.oci]"));
    assert_eq!(std::fs::read_to_string(&manifest).unwrap(), stripped);
}

/// `jq -e FILTER` over every line of `stdout`: true when jq reads each line as JSON and the
/// filter holds for all of them.
fn jq_holds(jq: &Path, stdout: &str, filter: &str) -> bool {
    use std::io::Write as _;
    let mut child = Command::new(jq)
        .args(["-e", "-s", filter])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("jq runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(stdout.as_bytes()).unwrap();
    drop(stdin);
    child.wait().unwrap().success()
}

#[test]
fn json_messages_pass_cargo_s_through_then_ours() {
    let jq = tool("jq");
    built("http-hello");
    let out = ok(cargo_oci(
        &example("http-hello"),
        &["build", "--release", "--message-format", "json"],
    ));
    let all = json_lines(&out);
    let reasons: Vec<&str> = all.iter().map(|v| v["reason"].as_str().unwrap()).collect();
    let artifact = all
        .iter()
        .position(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "http-hello");
    let finished = reasons.iter().position(|r| *r == "build-finished");
    assert!(
        artifact.is_some(),
        "no compiler-artifact for http-hello: {reasons:?}"
    );
    assert!(artifact < finished, "{reasons:?}");
    assert_eq!(all[finished.unwrap()]["success"], true);
    assert_eq!(
        reasons.last(),
        Some(&"image-built"),
        "ours comes last: {reasons:?}"
    );
    assert_eq!(results(&out).len(), 1, "{reasons:?}");
    if let Some(jq) = &jq {
        assert!(
            jq_holds(
                jq,
                &out,
                r#"(map(.reason) | index("build-finished")) < (map(.reason) | index("image-built")) and .[-1].reason == "image-built""#
            ),
            "{out}"
        );
    }

    // A compile error: cargo's compiler-message, then our error object.
    let tmp = tempfile::tempdir().unwrap();
    let pkg = tmp.path().join("pkg");
    copy_example("static-hello", &pkg);
    std::fs::write(
        pkg.join("src/main.rs"),
        "fn main() {\n    let n: u32 = \"not a number\";\n}\n",
    )
    .unwrap();
    let failed = run(
        cargo_oci(&pkg, &["build", "--message-format", "json", "--target-dir"])
            .arg(tmp.path().join("target")),
    );
    assert_eq!(failed.status.code(), Some(1), "{}", stderr(&failed));
    let text = stdout(&failed);
    let all = json_lines(&text);
    let message = all
        .iter()
        .position(|v| v["reason"] == "compiler-message" && v["message"]["level"] == "error");
    assert!(message.is_some(), "no compiler-message:\n{text}");
    let last = all.last().unwrap();
    assert_eq!(last["reason"], "error", "{text}");
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .contains("cargo build failed"),
        "{last}"
    );
    assert_eq!(results(&text).len(), 1, "{text}");
    // People still see the diagnostic on stderr.
    assert!(
        stderr(&failed).contains("mismatched types"),
        "{}",
        stderr(&failed)
    );
    if let Some(jq) = &jq {
        assert!(
            jq_holds(
                jq,
                &text,
                r#"any(.[]; .reason == "compiler-message" and .message.level == "error") and .[-1].reason == "error""#
            ),
            "{text}"
        );
    }
}
