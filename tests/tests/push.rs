//! `cargo oci push` against a real registry (Debian's docker-registry on 127.0.0.1): anonymous and
//! htpasswd-protected pushes, what a second push, a rebuild and a second repository transfer, and
//! faults injected by a loopback proxy (5xx, 429, dropped connections, a manifest PUT that always
//! fails). What was pushed is checked with skopeo and podman.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use cargo_oci_tests::registry::{Fault, Proxy, Registry, Seen};
use cargo_oci_tests::*;

/// `cargo oci push --no-build` of a built example to `dest`, with `extra` arguments and a clean
/// credential environment (HOME, DOCKER_CONFIG, REGISTRY_AUTH_FILE of the test's own).
fn push_cmd(b: &Built, dest: &str, extra: &[&str], home: &Path) -> Command {
    let mut c = cargo_oci(
        &example(&b.example),
        &["push", "--release", "--no-build", "--to", dest],
    );
    // These tests count the image's own requests; attached SBOMs are sbom_attach.rs's.
    c.arg("--no-attach-sbom").args(extra);
    c.env("HOME", home)
        .env("DOCKER_CONFIG", home.join(".docker"))
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .stdin(Stdio::null());
    c
}

/// Runs a push with `--message-format json` and returns its JSON.
fn push_json(mut c: Command) -> serde_json::Value {
    c.args(["--message-format", "json"]);
    let out = ok(c);
    result(&out)
}

fn skopeo_digest(reference: &str, creds: &[String]) -> String {
    let out = ok(Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .args(creds)
        .arg(format!("docker://{reference}")));
    let v: serde_json::Value = serde_json::from_str(&out).expect("skopeo JSON");
    v["Digest"].as_str().expect("Digest").to_string()
}

/// Blob uploads the proxy saw: each completed upload ends with a PUT `?digest=`.
fn uploaded_digests(seen: &[Seen]) -> Vec<String> {
    let mut v: Vec<String> = seen
        .iter()
        .filter(|s| {
            s.method == "PUT" && s.fault == Fault::Pass && s.target.contains("/blobs/uploads/")
        })
        .filter_map(|s| s.target.split("digest=").nth(1))
        .map(|d| d.split('&').next().unwrap_or(d).replace("%3A", ":"))
        .collect();
    v.sort();
    v
}

fn transfers(json: &serde_json::Value, kind: &str) -> Vec<String> {
    let mut v: Vec<String> = json["blobs"]["each"]
        .as_array()
        .expect("blobs.each")
        .iter()
        .filter(|b| b["transfer"] == kind)
        .map(|b| b["digest"].as_str().unwrap_or_default().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn anonymous_push_then_skopeo_and_podman() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    if tool("skopeo").is_none() {
        return;
    }
    let b = built("http-hello");
    let home = tempfile::tempdir().unwrap();
    // A credential store that has nothing for this registry: the push goes on anonymously. Like
    // every real helper it reads the server URL first (one that exits before reading it leaves
    // its caller writing into a closed pipe).
    let bin = home.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-cargooci-empty");
    write_script(
        &helper,
        "#!/bin/sh\nread server\necho 'credentials not found in native keychain'\nexit 1\n",
    );
    std::fs::create_dir_all(home.path().join(".docker")).unwrap();
    std::fs::write(
        home.path().join(".docker/config.json"),
        r#"{"credsStore": "cargooci-empty"}"#,
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let dest = format!("{}/team/http-hello", reg.addr);
    let out = ok(push_cmd(&b, &dest, &[], home.path()).env("PATH", path));
    assert_eq!(
        out.trim(),
        format!("{dest}@{}", b.digest),
        "stdout is the pinned reference"
    );

    for tag in ["latest", "0.1.0"] {
        assert_eq!(
            skopeo_digest(&format!("{dest}:{tag}"), &[]),
            b.digest,
            "tag {tag}"
        );
    }
    // Every blob arrived whole: skopeo copy checks each digest.
    let dir = tempfile::tempdir().unwrap();
    ok(Command::new("skopeo")
        .args(["copy", "-q", "--src-tls-verify=false"])
        .arg(format!("docker://{dest}:latest"))
        .arg(format!("dir:{}", dir.path().join("x").display())));

    if tool("podman").is_none() {
        return;
    }
    let image = format!("{dest}:latest");
    ok(Command::new("podman").args(["pull", "-q", "--tls-verify=false", &image]));
    let run_out = run(Command::new("podman").args([
        "run",
        "--rm",
        "--read-only",
        "--network=none",
        &image,
        "self-test",
    ]));
    let _ = run(Command::new("podman").args(["rmi", "-f", &image]));
    assert!(
        run_out.status.success(),
        "podman run: {}",
        String::from_utf8_lossy(&run_out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&run_out.stdout).starts_with("hello from http-hello"),
        "podman run printed: {}",
        String::from_utf8_lossy(&run_out.stdout)
    );
}

#[test]
fn credentials_from_stdin_config_json_and_helper() {
    let Some(reg) = Registry::start(Some(("ann", "s3cret-pw"))) else {
        return;
    };
    if tool("skopeo").is_none() {
        return;
    }
    let b = built("tls-zlib");
    let home = tempfile::tempdir().unwrap();
    let creds = reg.skopeo_creds();

    // A wrong password: a clear error, no secret in it, nothing pushed.
    let mut c = push_cmd(
        &b,
        &format!("{}/auth/wrong", reg.addr),
        &["--username", "ann", "--password-stdin"],
        home.path(),
    );
    let out = with_stdin(c.stdin(Stdio::piped()), "not-the-password\n");
    assert_eq!(out.status.code(), Some(1), "wrong password must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    let first = err.lines().find(|l| l.starts_with("error:")).unwrap_or("");
    assert!(
        first.contains("refused user `ann` (from --password-stdin)") && first.contains("401"),
        "the first line names the refused user and where the password came from: {err}"
    );
    assert!(!err.contains("answers neither"), "{err}");
    assert!(
        !err.contains("not-the-password"),
        "the password leaked: {err}"
    );
    assert!(
        reg.catalog().is_empty(),
        "a refused push left {:?}",
        reg.catalog()
    );

    // No credentials at all: says how to give them.
    let out = run(push_cmd(
        &b,
        &format!("{}/auth/none", reg.addr),
        &[],
        home.path(),
    ));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs a user name and password") && err.contains("--password-stdin"),
        "{err}"
    );

    // --password-stdin.
    let dest = format!("{}/auth/stdin", reg.addr);
    let mut c = push_cmd(
        &b,
        &dest,
        &["--username", "ann", "--password-stdin"],
        home.path(),
    );
    let out = with_stdin(c.stdin(Stdio::piped()), "s3cret-pw\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("s3cret-pw"));
    assert_eq!(skopeo_digest(&format!("{dest}:latest"), &creds), b.digest);

    // ~/.docker/config.json `auths`.
    let docker = home.path().join(".docker");
    std::fs::create_dir_all(&docker).unwrap();
    let auth = registry::basic("ann", "s3cret-pw");
    let auth = auth.trim_start_matches("Basic ");
    std::fs::write(
        docker.join("config.json"),
        format!(r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#, reg.addr),
    )
    .unwrap();
    let dest = format!("{}/auth/config", reg.addr);
    ok(push_cmd(&b, &dest, &[], home.path()));
    assert_eq!(skopeo_digest(&format!("{dest}:latest"), &creds), b.digest);

    // A docker-credential helper named in `credHelpers`, found on PATH.
    let bin = home.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-cargooci-test");
    let log = home.path().join("helper.log");
    write_script(
        &helper,
        &format!(
            "#!/bin/sh\nread server\necho \"$1 $server\" >> {}\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"ann\",\"Secret\":\"s3cret-pw\"}}' \"$server\"\n",
            log.display()
        ),
    );
    std::fs::write(
        docker.join("config.json"),
        format!(r#"{{"credHelpers": {{"{}": "cargooci-test"}}}}"#, reg.addr),
    )
    .unwrap();
    let dest = format!("{}/auth/helper", reg.addr);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    ok(push_cmd(&b, &dest, &[], home.path()).env("PATH", path));
    assert_eq!(skopeo_digest(&format!("{dest}:latest"), &creds), b.digest);
    let asked = std::fs::read_to_string(&log).expect("the helper was run");
    assert_eq!(asked.trim(), format!("get {}", reg.addr));

    let mut repos = reg.catalog();
    repos.sort();
    assert_eq!(repos, ["auth/config", "auth/helper", "auth/stdin"]);
}

fn with_stdin(c: &mut Command, input: &str) -> Output {
    use std::io::Write;
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cargo oci push");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

#[test]
fn second_push_uploads_nothing_and_another_repository_mounts() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    if tool("skopeo").is_none() {
        return;
    }
    let proxy = Proxy::start(
        &reg.addr,
        Arc::new(|_: &str, _: &str, _: usize| Fault::Pass),
    );
    let b = built("tls-zlib");
    let home = tempfile::tempdir().unwrap();
    let blobs = b.json["layers"].as_array().unwrap().len() + 1;

    // First push, in small chunks: every blob is uploaded, the big ones with PATCH requests.
    let dest = format!("{}/bench/first", proxy.addr);
    let first = push_json(push_cmd(&b, &dest, &["--chunk-size", "256K"], home.path()));
    assert_eq!(first["digest"], b.digest.as_str());
    assert_eq!(first["blobs"]["uploaded"], blobs);
    assert_eq!(uploaded_digests(&proxy.seen()).len(), blobs);
    assert!(
        proxy.seen().iter().any(|s| s.method == "PATCH"),
        "no chunked upload"
    );
    let dir = tempfile::tempdir().unwrap();
    ok(Command::new("skopeo")
        .args(["copy", "-q", "--src-tls-verify=false"])
        .arg(format!("docker://{}/bench/first:latest", reg.addr))
        .arg(format!("dir:{}", dir.path().join("x").display())));

    // Second push of the same image: no upload at all. The tags already name the manifest: one
    // HEAD per tag (and one for the manifest) answers it, no blob is asked about, nothing is put.
    proxy.clear();
    let second = push_json(push_cmd(&b, &dest, &[], home.path()));
    assert_eq!(second["blobs"]["skipped"], blobs);
    assert_eq!(second["blobs"]["uploaded"], 0);
    let seen = proxy.seen();
    assert!(
        !seen.iter().any(|s| s.target.contains("/blobs/")),
        "the second push asked about blobs: {seen:?}"
    );
    assert!(
        !seen.iter().any(|s| s.method == "PUT"),
        "the second push put a manifest: {seen:?}"
    );
    let heads = seen
        .iter()
        .filter(|s| s.method == "HEAD" && s.target.contains("/manifests/"))
        .count();
    let tags = second["references"].as_array().map_or(0, Vec::len);
    assert!(
        heads > 0 && heads <= 2 * (tags + 1),
        "{heads} HEADs for {tags} references: {seen:?}"
    );

    // Another repository of the same registry: every blob is mounted, none uploaded.
    proxy.clear();
    let other = format!("{}/bench/second", proxy.addr);
    let third = push_json(push_cmd(&b, &other, &[], home.path()));
    assert_eq!(third["blobs"]["mounted"], blobs, "{third}");
    let seen = proxy.seen();
    assert!(uploaded_digests(&seen).is_empty(), "uploads: {seen:?}");
    assert_eq!(
        seen.iter()
            .filter(|s| s.method == "POST" && s.target.contains("mount="))
            .count(),
        blobs
    );
    assert_eq!(
        skopeo_digest(&format!("{}/bench/second:latest", reg.addr), &[]),
        b.digest
    );
}

#[test]
fn a_rebuild_with_one_changed_layer_uploads_only_that_layer() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let proxy = Proxy::start(
        &reg.addr,
        Arc::new(|_: &str, _: &str, _: usize| Fault::Pass),
    );
    let b = built("http-hello");
    // A copy of the example with its own target directory holding the same binary, so that a
    // change to its Cargo.toml does not touch the shared build.
    let tmp = tempfile::tempdir().unwrap();
    let pkg = tmp.path().join("http-hello");
    copy_example("http-hello", &pkg);
    let target = tmp.path().join("target");
    std::fs::create_dir_all(target.join("release")).unwrap();
    std::fs::copy(
        examples_target_dir().join("release/http-hello"),
        target.join("release/http-hello"),
    )
    .unwrap();
    let push = |home: &Path| {
        let mut c = cargo_oci(
            &pkg,
            &["push", "--release", "--no-build", "--no-attach-sbom"],
        );
        c.arg("--to")
            .arg(format!("{}/rebuild/app", proxy.addr))
            .arg("--target-dir")
            .arg(&target)
            .env("HOME", home)
            .env("DOCKER_CONFIG", home.join(".docker"));
        push_json(c)
    };
    // A stale mount hint: earlier pushes "saw" every layer in a repository that does not exist.
    // The registry declines each mount (202) and the blob goes up in the session it opened.
    let layers: Vec<String> = b.json["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    let hint: serde_json::Map<String, serde_json::Value> = layers
        .iter()
        .map(|d| (d.clone(), serde_json::json!(["ghost/repo"])))
        .collect();
    std::fs::create_dir_all(target.join("oci")).unwrap();
    std::fs::write(
        target.join("oci/.registry-blobs.json"),
        serde_json::json!({ "registries": { proxy.addr.clone(): hint } }).to_string(),
    )
    .unwrap();
    let home = tempfile::tempdir().unwrap();
    let before = push(home.path());
    assert_eq!(before["blobs"]["uploaded"], layers.len() + 1, "{before}");
    let seen = proxy.seen();
    let mounts = seen
        .iter()
        .filter(|s| s.method == "POST" && s.target.contains("from=ghost%2Frepo"))
        .count();
    assert_eq!(
        mounts,
        layers.len(),
        "a mount is tried for each hinted layer"
    );
    assert_eq!(
        seen.iter()
            .filter(|s| s.method == "POST" && !s.target.contains("mount="))
            .count(),
        1,
        "only the config needs a fresh upload session: {seen:?}"
    );
    assert_eq!(uploaded_digests(&seen).len(), layers.len() + 1);

    // Drop the CA bundle: the base layer changes, the others stay.
    let toml = std::fs::read_to_string(pkg.join("Cargo.toml")).unwrap();
    let toml = toml.replace(
        "[package.metadata.oci]\n",
        "[package.metadata.oci]\nca-certificates = false\n",
    );
    std::fs::write(pkg.join("Cargo.toml"), toml).unwrap();
    proxy.clear();
    let after = push(home.path());
    assert_ne!(after["digest"], before["digest"]);
    let layers = |j: &serde_json::Value| -> Vec<String> {
        let all: Vec<String> = j["blobs"]["each"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["digest"].as_str().unwrap().to_string())
            .collect();
        all.into_iter()
            .filter(|d| *d != j["config_digest"].as_str().unwrap())
            .collect()
    };
    let changed: Vec<String> = layers(&after)
        .into_iter()
        .filter(|d| !layers(&before).contains(d))
        .collect();
    assert_eq!(changed.len(), 1, "exactly one layer changes: {changed:?}");
    let mut expect = vec![
        changed[0].clone(),
        after["config_digest"].as_str().unwrap().to_string(),
    ];
    expect.sort();
    assert_eq!(transfers(&after, "uploaded"), expect);
    assert_eq!(
        uploaded_digests(&proxy.seen()),
        expect,
        "what the registry received"
    );
}

#[test]
fn retries_through_errors_and_dropped_connections() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    if tool("skopeo").is_none() {
        return;
    }
    // The first try of every request fails: 500, 503, 429 or a dropped connection by kind.
    let rule = Arc::new(|method: &str, path: &str, n: usize| {
        if n > 0 {
            return Fault::Pass;
        }
        match method {
            "HEAD" => Fault::Status(500),
            "POST" => Fault::Drop,
            "PATCH" => Fault::Drop,
            "PUT" if path.contains("/manifests/") => Fault::Status(503),
            "PUT" => Fault::Drop,
            "GET" => Fault::Status(429),
            _ => Fault::Pass,
        }
    });
    let proxy = Proxy::start(&reg.addr, rule);
    let b = built("tls-zlib");
    let home = tempfile::tempdir().unwrap();
    let dest = format!("{}/faults/app", proxy.addr);
    let out = push_json(push_cmd(&b, &dest, &["--chunk-size", "1M"], home.path()));
    assert_eq!(out["digest"], b.digest.as_str());
    // Every blob went up after retries, and each counts once in the bytes uploaded.
    let sizes: u64 = b.json["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    assert_eq!(
        out["blobs"]["uploaded"],
        b.json["layers"].as_array().unwrap().len() + 1
    );
    let uploaded = out["uploaded_bytes"].as_u64().unwrap();
    assert!(
        uploaded > sizes,
        "{uploaded} bytes uploaded; the layers alone are {sizes}: {out}"
    );
    let seen = proxy.seen();
    let injected = |f: Fault| seen.iter().filter(|s| s.fault == f).count();
    assert!(injected(Fault::Drop) >= 3, "dropped: {seen:?}");
    assert!(injected(Fault::Status(500)) >= 3, "500s: {seen:?}");
    assert!(injected(Fault::Status(503)) >= 1 && injected(Fault::Status(429)) >= 1);
    assert_eq!(
        skopeo_digest(&format!("{}/faults/app:latest", reg.addr), &[]),
        b.digest
    );
    let dir = tempfile::tempdir().unwrap();
    ok(Command::new("skopeo")
        .args(["copy", "-q", "--src-tls-verify=false"])
        .arg(format!("docker://{}/faults/app:latest", reg.addr))
        .arg(format!("dir:{}", dir.path().join("x").display())));
}

#[test]
fn uploads_whose_answer_was_lost_count_their_bytes() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    // The answer to each blob's final PUT is lost: the registry has the blob, the client sees a
    // dropped connection, its retry finds the session gone, and it checks before starting over.
    let proxy = Proxy::start(
        &reg.addr,
        Arc::new(|method: &str, path: &str, n: usize| {
            if method == "PUT" && path.contains("/blobs/uploads/") && n == 0 {
                Fault::LoseAnswer
            } else {
                Fault::Pass
            }
        }),
    );
    let b = built("tls-zlib");
    let home = tempfile::tempdir().unwrap();
    let dest = format!("{}/lost/app", proxy.addr);
    let out = push_json(push_cmd(&b, &dest, &[], home.path()));
    let blobs = b.json["layers"].as_array().unwrap().len() + 1;
    let seen = proxy.seen();
    assert_eq!(
        seen.iter().filter(|s| s.fault == Fault::LoseAnswer).count(),
        blobs,
        "{seen:?}"
    );
    assert_eq!(out["blobs"]["uploaded"], blobs, "{out}");
    assert!(out["size"].as_u64().unwrap() > 0);
    assert_eq!(
        out["uploaded_bytes"], out["size"],
        "every blob's bytes, once: {out}"
    );
}

#[test]
fn a_failing_manifest_put_leaves_the_tag_where_it_was() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    if tool("skopeo").is_none() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let old = built("http-hello");
    let dest = |host: &str| format!("{host}/keep/app");
    ok(push_cmd(&old, &dest(&reg.addr), &[], home.path()));
    assert_eq!(
        skopeo_digest(&format!("{}:latest", dest(&reg.addr)), &[]),
        old.digest
    );

    let proxy = Proxy::start(
        &reg.addr,
        Arc::new(|method: &str, path: &str, _: usize| {
            if method == "PUT" && path.contains("/manifests/") {
                Fault::Status(500)
            } else {
                Fault::Pass
            }
        }),
    );
    let new = built("tls-zlib");
    let out = run(push_cmd(&new, &dest(&proxy.addr), &[], home.path()));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the manifest was not pushed")
            && err.contains("no tag")
            && err.contains("500"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "a failed push printed a result");
    assert!(
        proxy
            .seen()
            .iter()
            .filter(|s| s.method == "PUT" && s.target.contains("/manifests/"))
            .count()
            >= 2,
        "retried"
    );
    for tag in ["latest", "0.1.0"] {
        assert_eq!(
            skopeo_digest(&format!("{}:{tag}", dest(&reg.addr)), &[]),
            old.digest,
            "tag {tag} moved"
        );
    }
}

#[test]
fn bad_push_options_are_usage_errors() {
    let b = built("static-hello");
    let home = tempfile::tempdir().unwrap();
    for (args, says) in [
        (&["--to", "Bad/Name"][..], "--to"),
        (
            &["--to", "127.0.0.1:1/x", "--username", "u"][..],
            "--password-stdin",
        ),
        (
            &["--to", "127.0.0.1:1/x", "--chunk-size", "lots"][..],
            "not a size",
        ),
        (
            &["--to", "127.0.0.1:1/x", "--ca-file", "/nonexistent.pem"][..],
            "not a file",
        ),
    ] {
        let mut c = cargo_oci(&example(&b.example), &["push", "--release", "--no-build"]);
        c.args(args).env("HOME", home.path());
        let out = run(c);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // Nobody listens: a failure (1) naming the registry, after bounded retries.
    let mut c = cargo_oci(
        &example(&b.example),
        &["push", "--release", "--no-build", "--to", "127.0.0.1:1/x"],
    );
    let out = run(c.env("HOME", home.path()));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let first = err.lines().find(|l| l.starts_with("error:")).unwrap_or("");
    assert!(
        first.contains("nothing listens at 127.0.0.1:1") && first.contains("6 attempts"),
        "{err}"
    );
    assert!(
        !err.contains("--ca-file"),
        "not a certificate problem: {err}"
    );
}

#[test]
fn bearer_token_challenge() {
    let Some(tokens) = registry::TokenServer::start("ann", "t0ken-pw") else {
        return;
    };
    let Some(reg) = Registry::start_with_tokens(&tokens) else {
        return;
    };
    let b = built("static-hello");
    let home = tempfile::tempdir().unwrap();
    let dest = format!("{}/bearer/app", reg.addr);

    let mut c = push_cmd(
        &b,
        &dest,
        &["--username", "ann", "--password-stdin"],
        home.path(),
    );
    let out = with_stdin(c.stdin(Stdio::piped()), "wrong\n");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("token service") && err.contains("refused user `ann`"),
        "{err}"
    );
    assert!(
        !err.contains("wrong\n") && !err.contains("t0ken-pw"),
        "{err}"
    );

    let mut c = push_cmd(
        &b,
        &dest,
        &["--username", "ann", "--password-stdin"],
        home.path(),
    );
    let out = with_stdin(c.stdin(Stdio::piped()), "t0ken-pw\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{dest}@{}", b.digest)
    );
    // The token was asked for the registry's service and the repository's push scope.
    let asked = tokens.requests.lock().unwrap().join("\n");
    assert!(
        asked.contains(&format!("service={}", registry::SERVICE)),
        "{asked}"
    );
    assert!(
        asked.contains("scope=repository%3Abearer%2Fapp%3Apull%2Cpush"),
        "{asked}"
    );
    if tool("skopeo").is_some() {
        let d = skopeo_digest(
            &format!("{dest}:latest"),
            &["--creds".into(), "ann:t0ken-pw".into()],
        );
        assert_eq!(d, b.digest);
    }
}

#[test]
fn https_with_a_ca_file() {
    let Some((reg, ca)) = Registry::start_tls() else {
        return;
    };
    let b = built("static-hello");
    let home = tempfile::tempdir().unwrap();
    let dest = format!("{}/tls/app", reg.addr);

    // Without the CA, the certificate is refused and the error says how to trust it.
    let out = run(push_cmd(&b, &dest, &[], home.path()));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HTTPS") && err.contains("--ca-file"), "{err}");

    let ca_arg = ca.to_str().unwrap();
    let out = ok(push_cmd(&b, &dest, &["--ca-file", ca_arg], home.path()));
    assert_eq!(out.trim(), format!("{dest}@{}", b.digest));
    if tool("skopeo").is_some() {
        // skopeo reads CA certificates from a directory of *.crt files.
        let certs = tempfile::tempdir().unwrap();
        std::fs::copy(&ca, certs.path().join("ca.crt")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&ok(Command::new("skopeo")
            .args(["inspect", "--cert-dir"])
            .arg(certs.path())
            .arg(format!("docker://{dest}:latest"))))
        .unwrap();
        assert_eq!(v["Digest"], b.digest.as_str());
    }
}

#[test]
fn no_password_goes_to_a_token_service_on_another_host_over_plain_http() {
    // The registry on 127.0.0.1 names a token service on 127.0.0.2, over plain HTTP.
    let Some(tokens) = registry::TokenServer::start_on("127.0.0.2", "ann", "t0ken-pw") else {
        return;
    };
    let Some(reg) = Registry::start_with_tokens(&tokens) else {
        return;
    };
    let b = built("static-hello");
    let home = tempfile::tempdir().unwrap();
    let mut c = push_cmd(
        &b,
        &format!("{}/bearer/far", reg.addr),
        &["--username", "ann", "--password-stdin"],
        home.path(),
    );
    let out = with_stdin(c.stdin(Stdio::piped()), "t0ken-pw\n");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("http://{}/token", tokens.addr))
            && err.contains("another host over plain HTTP")
            && err.contains("user `ann` (from --password-stdin)"),
        "{err}"
    );
    assert!(!err.contains("t0ken-pw"), "{err}");
    assert!(
        tokens.requests.lock().unwrap().is_empty(),
        "the token service was asked: {:?}",
        tokens.requests.lock().unwrap()
    );
}

#[test]
fn a_repeat_push_with_its_sbom_asks_a_few_questions_and_sends_nothing() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let proxy = Proxy::start(
        &reg.addr,
        Arc::new(|_: &str, _: &str, _: usize| Fault::Pass),
    );
    let b = built("http-hello");
    let home = tempfile::tempdir().unwrap();
    let dest = format!("{}/again/app", proxy.addr);
    // With the SBOM attached (the default), unlike `push_cmd`.
    let push = || {
        let mut c = cargo_oci(
            &example(&b.example),
            &["push", "--release", "--no-build", "--to", &dest],
        );
        c.env("HOME", home.path())
            .env("DOCKER_CONFIG", home.path().join(".docker"))
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("XDG_RUNTIME_DIR")
            .stdin(Stdio::null());
        push_json(c)
    };
    let first = push();
    assert_eq!(first["digest"], b.digest.as_str());
    let attached = first["attached"].as_array().expect("attached");
    assert_eq!(attached.len(), 1, "{first}");
    let hex = b.digest.trim_start_matches("sha256:");
    assert_eq!(attached[0]["fallback_tag"], format!("sha256-{hex}"));
    // The small blobs (the config, the SBOM's) were offered in the request opening their
    // upload; docker-registry declines that (202) and takes them in the session's PUT.
    let seen = proxy.seen();
    assert!(
        seen.iter()
            .any(|s| s.method == "POST" && s.target.contains("/blobs/uploads/?digest=")),
        "{seen:?}"
    );

    proxy.clear();
    let second = push();
    assert_eq!(second["digest"], first["digest"]);
    assert_eq!(second["blobs"]["skipped"], first["blobs"]["uploaded"]);
    assert_eq!(second["attached"][0]["digest"], attached[0]["digest"]);
    assert_eq!(
        second["attached"][0]["fallback_tag"],
        attached[0]["fallback_tag"]
    );
    let seen = proxy.seen();
    assert!(
        !seen
            .iter()
            .any(|s| matches!(s.method.as_str(), "PUT" | "POST" | "PATCH")),
        "the repeat push sent something: {seen:?}"
    );
    assert!(
        !seen.iter().any(|s| s.target.contains("/blobs/")),
        "the repeat push asked about blobs: {seen:?}"
    );
    // The API root, each tag, the manifest, its referrers (the API, then the fallback tag), its
    // content tag and the listed artifact: each once.
    assert!(seen.len() <= 10, "{} requests: {seen:?}", seen.len());
    // The fallback tag still lists the SBOM once.
    let (_, _, body) = registry::http(
        &reg.addr,
        "GET",
        &format!("/v2/again/app/manifests/sha256-{hex}"),
        &[("Accept", "application/vnd.oci.image.index.v1+json")],
    )
    .expect("the fallback tag");
    let index: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        index["manifests"].as_array().map(Vec::len),
        Some(1),
        "{index}"
    );
}
