//! Base images pulled from a registry (`from = "HOST/REPO@sha256:…"`) with the client `push`
//! uses: through a loopback proxy that injects 5xx answers and dropped connections, from an
//! HTTPS registry with a CA of its own (`--ca-file`), from a bearer-token registry (asking for
//! the pull scope only), and the messages of a wrong password and of a registry nobody runs; at
//! `-v` a pull says which credential source it used (htpasswd registry). The base is put in the registry by skopeo, and what was built on
//! it is checked against what skopeo reads.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use cargo_oci_tests::registry::{basic, Fault, Proxy, Registry};
use cargo_oci_tests::*;
use serde_json::Value;

/// A copy of http-hello whose image is built on `from`, with a target directory of its own (an
/// empty blob store: the base must come from the registry) holding the shared build's binary,
/// so that `--no-build` needs no compilation.
struct App {
    dir: PathBuf,
    target: PathBuf,
    docker_config: PathBuf,
    _tmp: tempfile::TempDir,
}

impl App {
    fn new(from: &str) -> App {
        built("http-hello");
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("on-base");
        example_on_base(from, &dir);
        let target = tmp.path().join("target");
        std::fs::create_dir_all(target.join("release")).unwrap();
        std::fs::copy(
            examples_target_dir().join("release/http-hello"),
            target.join("release/http-hello"),
        )
        .unwrap();
        let docker_config = tmp.path().join("docker");
        std::fs::create_dir_all(&docker_config).unwrap();
        std::fs::write(docker_config.join("config.json"), "{}").unwrap();
        App {
            dir,
            target,
            docker_config,
            _tmp: tmp,
        }
    }

    /// `cargo oci build --no-build` into `layout`, with `extra` arguments.
    fn build(&self, layout: &Path, extra: &[&str]) -> Output {
        run(self.command(layout, extra))
    }

    /// The command [`App::build`] runs: no credentials but those of `docker_config`.
    fn command(&self, layout: &Path, extra: &[&str]) -> Command {
        let mut c = cargo_oci(
            &self.dir,
            &[
                "build",
                "--release",
                "--no-build",
                "--message-format",
                "json",
            ],
        );
        c.args(extra)
            .arg("-o")
            .arg(layout)
            .arg("--target-dir")
            .arg(&self.target)
            .env("DOCKER_CONFIG", &self.docker_config)
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("CARGO_OCI_REGISTRY_USER");
        c
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn success(out: &Output) -> Value {
    assert!(out.status.success(), "{}", stderr(out));
    result(&String::from_utf8_lossy(&out.stdout))
}

/// Copies the static-hello image to `REGISTRY/REPO:1` with skopeo (`copy` arguments for the
/// destination, `inspect` ones to read it back); returns `REPO@DIGEST` as the registry has it.
fn put_base(registry: &str, repo: &str, copy: &[&str], inspect: &[&str]) -> String {
    let base = built("static-hello");
    let dest = format!("docker://{registry}/{repo}:1");
    ok(Command::new("skopeo")
        .args(["copy", "-q"])
        .args(copy)
        .arg(base.oci_ref())
        .arg(&dest));
    let v: Value = serde_json::from_str(&ok(Command::new("skopeo")
        .arg("inspect")
        .args(inspect)
        .arg(&dest)))
    .unwrap();
    format!("{repo}@{}", v["Digest"].as_str().unwrap())
}

/// What skopeo reads of `reference` in a registry: (layer digests, config diff_ids).
fn skopeo_base(reference: &str, args: &[&str]) -> (Vec<String>, Vec<String>) {
    let raw: Value = serde_json::from_str(&ok(Command::new("skopeo")
        .args(["inspect", "--raw"])
        .args(args)
        .arg(format!("docker://{reference}"))))
    .unwrap();
    let config: Value = serde_json::from_str(&ok(Command::new("skopeo")
        .args(["inspect", "--config", "--raw"])
        .args(args)
        .arg(format!("docker://{reference}"))))
    .unwrap();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect()
    };
    let layers = raw["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    (layers, strings(&config["rootfs"]["diff_ids"]))
}

/// The built image starts with the base's layers and diff_ids, and skopeo copies it whole
/// (checking every digest).
fn assert_on_base(built: &Value, layout: &Path, base: &(Vec<String>, Vec<String>)) {
    let layers: Vec<String> = built["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    assert!(layers.len() > base.0.len(), "{built}");
    assert_eq!(
        layers[..base.0.len()],
        base.0[..],
        "the base's layers come first"
    );
    let reference = built["references"][0].as_str().unwrap();
    let config: Value = serde_json::from_str(&ok(Command::new("skopeo")
        .args(["inspect", "--config", "--raw"])
        .arg(format!("oci:{}:{reference}", layout.display()))))
    .unwrap();
    let diff_ids: Vec<&str> = config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(diff_ids[..base.1.len()], base.1[..]);
    let dir = tempfile::tempdir().unwrap();
    ok(Command::new("skopeo")
        .args(["copy", "-q"])
        .arg(format!("oci:{}:{reference}", layout.display()))
        .arg(format!("dir:{}", dir.path().join("x").display())));
}

#[test]
fn a_base_comes_through_injected_errors_and_dropped_connections() {
    if tool("skopeo").is_none() {
        return;
    }
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let pinned = put_base(
        &reg.addr,
        "bases/static",
        &["--dest-tls-verify=false"],
        &["--tls-verify=false"],
    );
    let base = skopeo_base(&format!("{}/{pinned}", reg.addr), &["--tls-verify=false"]);

    // The first tries of every GET fail: the API root with a 503, a manifest with a 500 then a
    // dropped connection, a blob with a dropped connection then a 502.
    let proxy = Proxy::start(
        &reg.addr,
        Arc::new(|method: &str, path: &str, n: usize| {
            match (
                method,
                path.contains("/manifests/"),
                path.contains("/blobs/"),
                n,
            ) {
                ("GET", false, false, 0) => Fault::Status(503),
                ("GET", true, _, 0) => Fault::Status(500),
                ("GET", true, _, 1) => Fault::Drop,
                ("GET", _, true, 0) => Fault::Drop,
                ("GET", _, true, 1) => Fault::Status(502),
                _ => Fault::Pass,
            }
        }),
    );
    let app = App::new(&format!("{}/{pinned}", proxy.addr));
    let layout = app.target.join("layout");
    let built = success(&app.build(&layout, &[]));
    assert_on_base(&built, &layout, &base);

    let seen = proxy.seen();
    let count = |f: Fault| seen.iter().filter(|s| s.fault == f).count();
    let blobs = base.0.len() + 1;
    assert_eq!(count(Fault::Status(503)), 1, "{seen:?}");
    assert_eq!(count(Fault::Status(500)), 1, "{seen:?}");
    assert_eq!(count(Fault::Drop), 1 + blobs, "{seen:?}");
    assert_eq!(count(Fault::Status(502)), blobs, "{seen:?}");
    assert!(
        seen.iter()
            .filter(|s| s.fault == Fault::Pass)
            .all(|s| s.method == "GET"),
        "a pull only reads: {seen:?}"
    );

    // The store is the cache: building again does not reach the registry.
    proxy.clear();
    let again = success(&app.build(&layout, &[]));
    assert_eq!(again["digest"], built["digest"]);
    assert!(proxy.seen().is_empty(), "{:?}", proxy.seen());
}

#[test]
fn a_base_from_an_https_registry_needs_its_ca() {
    if tool("skopeo").is_none() {
        return;
    }
    let Some((reg, ca)) = Registry::start_tls() else {
        return;
    };
    // skopeo reads CA certificates from a directory of *.crt files.
    let certs = tempfile::tempdir().unwrap();
    std::fs::copy(&ca, certs.path().join("ca.crt")).unwrap();
    let cert_dir = certs.path().to_str().unwrap();
    let pinned = put_base(
        &reg.addr,
        "bases/tls",
        &["--dest-cert-dir", cert_dir],
        &["--cert-dir", cert_dir],
    );
    let base = skopeo_base(&format!("{}/{pinned}", reg.addr), &["--cert-dir", cert_dir]);
    let app = App::new(&format!("{}/{pinned}", reg.addr));
    let layout = app.target.join("layout");

    let out = app.build(&layout, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("answers HTTPS with a certificate cargo-oci does not trust")
            && err.contains("--ca-file"),
        "{err}"
    );
    assert!(
        !layout.exists(),
        "a failed build wrote {}",
        layout.display()
    );

    let built = success(&app.build(&layout, &["--ca-file", ca.to_str().unwrap()]));
    assert_on_base(&built, &layout, &base);
}

#[test]
fn a_wrong_password_and_a_registry_nobody_runs_are_named() {
    if tool("skopeo").is_none() {
        return;
    }
    let Some(reg) = Registry::start(Some(("ann", "s3cret-pw"))) else {
        return;
    };
    let pinned = put_base(
        &reg.addr,
        "bases/locked",
        &["--dest-tls-verify=false", "--dest-creds", "ann:s3cret-pw"],
        &["--tls-verify=false", "--creds", "ann:s3cret-pw"],
    );

    // A wrong password in Docker's config.json: the refusal names the user and the file.
    let app = App::new(&format!("{}/{pinned}", reg.addr));
    let auth = basic("ann", "not-the-pw");
    std::fs::write(
        app.docker_config.join("config.json"),
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{}"}}}}}}"#,
            reg.addr,
            auth.trim_start_matches("Basic ")
        ),
    )
    .unwrap();
    let layout = app.target.join("layout");
    let out = app.build(&layout, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let cause = err.lines().find(|l| l.contains("caused by:")).unwrap_or("");
    assert!(
        cause.contains(&format!(
            "{} refused user `ann` (from {}/config.json) (401",
            reg.addr,
            app.docker_config.display()
        )) && cause.contains("docker login"),
        "the first cause is the refused login: {err}"
    );
    assert!(
        !err.contains("answers neither") && !err.contains("not-the-pw"),
        "{err}"
    );

    // Nobody listens: said so, after the retries.
    let nobody = App::new(&format!("127.0.0.1:1/{pinned}"));
    let out = nobody.build(&layout, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("nothing listens at 127.0.0.1:1 (connection refused, 6 attempts)"),
        "{err}"
    );
    assert!(
        !err.contains("--ca-file"),
        "not a certificate problem: {err}"
    );
    assert!(
        !layout.exists(),
        "a failed build wrote {}",
        layout.display()
    );
}

/// At `-v` a base pull says where its credential came from, for every source `push` reads:
/// none (anonymous, and where it looked), the environment, an auth file, podman's root location,
/// Docker's config.json and a credential helper it names.
#[test]
fn a_base_pull_says_which_credentials_it_used() {
    if tool("skopeo").is_none() || tool("podman").is_none() {
        return;
    }
    let Some(reg) = Registry::start(Some(("ann", "s3cret-pw"))) else {
        return;
    };
    let pinned = put_base(
        &reg.addr,
        "bases/creds",
        &["--dest-tls-verify=false", "--dest-creds", "ann:s3cret-pw"],
        &["--tls-verify=false", "--creds", "ann:s3cret-pw"],
    );
    let base = skopeo_base(
        &format!("{}/{pinned}", reg.addr),
        &["--tls-verify=false", "--creds", "ann:s3cret-pw"],
    );
    let said = |out: &Output, what: &str| {
        let err = stderr(out);
        assert!(
            err.contains(&format!("credentials for {}: {what}", reg.addr)),
            "{what}: {err}"
        );
        assert!(!err.contains("s3cret-pw"), "{err}");
    };
    // Each build starts from an empty blob store, so that the base is pulled.
    let fresh = || App::new(&format!("{}/{pinned}", reg.addr));

    // None: refused, and -v says where it looked (podman's root location included).
    let app = fresh();
    let layout = app.target.join("layout");
    let out = app.build(&layout, &["-v"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let uid = String::from_utf8_lossy(&run(Command::new("id").arg("-u")).stdout)
        .trim()
        .to_string();
    let err = stderr(&out);
    assert!(
        err.contains(&format!("no credentials for {} (looked in", reg.addr))
            && err.contains(&format!("/run/containers/{uid}/auth.json"))
            && err.contains(&app.docker_config.join("config.json").display().to_string())
            && err.contains("): anonymous"),
        "{err}"
    );

    // The environment.
    let app = fresh();
    let layout = app.target.join("layout");
    let out = run(app
        .command(&layout, &["-v"])
        .env("CARGO_OCI_REGISTRY_USER", "ann")
        .env("CARGO_OCI_REGISTRY_PASSWORD", "s3cret-pw"));
    assert_on_base(&success(&out), &layout, &base);
    said(
        &out,
        "user `ann` (from $CARGO_OCI_REGISTRY_USER/$CARGO_OCI_REGISTRY_PASSWORD)",
    );

    // An auth file ($REGISTRY_AUTH_FILE), by its path.
    let app = fresh();
    let layout = app.target.join("layout");
    let auth = basic("ann", "s3cret-pw");
    let auths = format!(
        r#"{{"auths": {{"{}": {{"auth": "{}"}}}}}}"#,
        reg.addr,
        auth.trim_start_matches("Basic ")
    );
    let auth_file = app.target.join("auth.json");
    std::fs::write(&auth_file, &auths).unwrap();
    let out = run(app
        .command(&layout, &["-v"])
        .env("REGISTRY_AUTH_FILE", &auth_file));
    assert_on_base(&success(&out), &layout, &base);
    said(&out, &format!("user `ann` (from {})", auth_file.display()));

    // Docker's config.json, by its path.
    let app = fresh();
    let layout = app.target.join("layout");
    let config = app.docker_config.join("config.json");
    std::fs::write(&config, &auths).unwrap();
    let out = run(app.command(&layout, &["-v"]));
    assert_on_base(&success(&out), &layout, &base);
    said(&out, &format!("user `ann` (from {})", config.display()));

    // A credential helper that config.json names for this registry.
    let app = fresh();
    let layout = app.target.join("layout");
    let bin = app.target.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-cargo-oci-test");
    std::fs::write(
        &helper,
        "#!/bin/sh\nread server\n[ \"$1\" = get ] || exit 1\n\
         printf '{\"ServerURL\":\"%s\",\"Username\":\"ann\",\"Secret\":\"s3cret-pw\"}' \"$server\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = app.docker_config.join("config.json");
    std::fs::write(
        &config,
        format!(r#"{{"credHelpers": {{"{}": "cargo-oci-test"}}}}"#, reg.addr),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = run(app.command(&layout, &["-v"]).env("PATH", path));
    assert_on_base(&success(&out), &layout, &base);
    said(
        &out,
        &format!(
            "user `ann` (from the credential helper `docker-credential-cargo-oci-test` named in {})",
            config.display()
        ),
    );

    // podman's root location: `podman login` as root with no XDG_RUNTIME_DIR writes
    // /run/containers/0/auth.json, and the pull finds it there.
    if uid != "0" {
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
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let mut child = login.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"s3cret-pw\n")
        .unwrap();
    assert!(child.wait().unwrap().success(), "podman login failed");
    let app = fresh();
    let layout = app.target.join("layout");
    let out = app.build(&layout, &["-v"]);
    let _ = Command::new("podman")
        .arg("logout")
        .arg(&reg.addr)
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("REGISTRY_AUTH_FILE")
        .output();
    assert_on_base(&success(&out), &layout, &base);
    said(&out, "user `ann` (from /run/containers/0/auth.json)");
}

#[test]
fn a_base_from_a_token_registry_asks_only_to_pull() {
    if tool("skopeo").is_none() {
        return;
    }
    let Some(tokens) = registry::TokenServer::start("ann", "t0ken-pw") else {
        return;
    };
    let Some(reg) = Registry::start_with_tokens(&tokens) else {
        return;
    };
    let pinned = put_base(
        &reg.addr,
        "bases/bearer",
        &["--dest-tls-verify=false", "--dest-creds", "ann:t0ken-pw"],
        &["--tls-verify=false", "--creds", "ann:t0ken-pw"],
    );
    let base = skopeo_base(
        &format!("{}/{pinned}", reg.addr),
        &["--tls-verify=false", "--creds", "ann:t0ken-pw"],
    );
    tokens.requests.lock().unwrap().clear();

    let app = App::new(&format!("{}/{pinned}", reg.addr));
    let auth = basic("ann", "t0ken-pw");
    std::fs::write(
        app.docker_config.join("config.json"),
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{}"}}}}}}"#,
            reg.addr,
            auth.trim_start_matches("Basic ")
        ),
    )
    .unwrap();
    let layout = app.target.join("layout");
    let built = success(&app.build(&layout, &[]));
    assert_on_base(&built, &layout, &base);
    let asked = tokens.requests.lock().unwrap().clone();
    assert!(!asked.is_empty(), "no token was asked for");
    for q in &asked {
        let scopes: Vec<&str> = q.split('&').filter(|p| p.starts_with("scope=")).collect();
        assert_eq!(
            scopes,
            ["scope=repository%3Abases%2Fbearer%3Apull"],
            "a pull asks for the pull scope only: {asked:?}"
        );
    }
}
