//! Shared harness of the end-to-end tests: runs `cargo oci` on the example crates, finds the real
//! container tools (a missing one fails under CI=true and skips the check elsewhere), and gives
//! small helpers to run commands and read their output.

use std::borrow::BorrowMut;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

pub mod fake_registry;
pub mod registry;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The cargo-oci binary under test (`CARGO_OCI_BIN`, else the workspace's release build).
pub fn cargo_oci_bin() -> PathBuf {
    let p = std::env::var_os("CARGO_OCI_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/release/cargo-oci"));
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build --release -p cargo-oci` (scripts/test.sh does)",
        p.display()
    );
    p
}

/// Target directory shared by every example build of the run.
pub fn examples_target_dir() -> PathBuf {
    root().join("target/e2e")
}

/// The directory of an example crate.
pub fn example(name: &str) -> PathBuf {
    root().join("examples").join(name)
}

/// True when running in CI, where every tool must be there.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Looks a tool up on PATH. In CI a missing tool fails the test; elsewhere it returns None and
/// the caller skips that check (saying so).
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            !in_ci(),
            "`{name}` is not installed; scripts/install-test-tools.sh installs it"
        );
        eprintln!("SKIP: `{name}` is not installed (run scripts/install-test-tools.sh)");
    }
    found
}

/// The Docker engine the test script started (`CARGO_OCI_TEST_DOCKER_HOST`).
pub fn docker_host() -> Option<String> {
    let host = std::env::var("CARGO_OCI_TEST_DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty());
    if host.is_none() {
        assert!(
            !in_ci(),
            "no Docker engine: run the tests with scripts/test.sh, which starts one"
        );
        eprintln!(
            "SKIP: no Docker engine (CARGO_OCI_TEST_DOCKER_HOST unset; scripts/test.sh starts one)"
        );
    }
    host
}

/// Runs a command, returning its output whatever the exit status (`output()` gives it no stdin).
pub fn run(mut cmd: impl BorrowMut<Command>) -> Output {
    let cmd = cmd.borrow_mut();
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command that must succeed; returns its stdout.
pub fn ok(mut cmd: impl BorrowMut<Command>) -> String {
    let cmd = cmd.borrow_mut();
    let out = run(&mut *cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The per-machine cache the tests use instead of the user's (`CARGO_OCI_CACHE_DIR`): contract
/// helpers built for other targets than the host's.
pub fn test_cache_dir() -> PathBuf {
    examples_target_dir().join("cargo-oci-cache")
}

/// `cargo oci ARGS` in `dir`, as cargo runs its subcommands.
pub fn cargo_oci(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(cargo_oci_bin());
    c.arg("oci").args(args).current_dir(dir);
    c.env("CARGO_TARGET_DIR", examples_target_dir());
    c.env("CARGO_OCI_CACHE_DIR", test_cache_dir());
    c.env_remove("SOURCE_DATE_EPOCH");
    c
}

/// Copies an example crate to `to` (without its build products), as a user copying it would.
pub fn copy_example(name: &str, to: &Path) {
    ok(Command::new("cp").arg("-r").arg(example(name)).arg(to));
    let _ = std::fs::remove_dir_all(to.join("target"));
}

/// An image built from an example, as an OCI layout.
#[derive(Debug, Clone)]
pub struct Built {
    pub example: String,
    /// The OCI layout directory.
    pub layout: PathBuf,
    /// `name:tag` references, configured tags first, content tag last.
    pub references: Vec<String>,
    pub digest: String,
    pub json: serde_json::Value,
}

impl Built {
    /// The first `name:tag`.
    pub fn reference(&self) -> &str {
        &self.references[0]
    }
    /// The tag part of the first reference.
    pub fn tag(&self) -> &str {
        self.reference().rsplit(':').next().unwrap_or_default()
    }
    /// `oci:DIR:TAG` for skopeo and friends.
    pub fn oci_ref(&self) -> String {
        format!("oci:{}:{}", self.layout.display(), self.reference())
    }
}

/// Builds an example's image (release, OCI layout) once per test process.
pub fn built(example_name: &str) -> Built {
    static CACHE: OnceLock<Mutex<BTreeMap<String, Built>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(BTreeMap::new()));
    let mut guard = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = guard.get(example_name) {
        return b.clone();
    }
    let out = ok(cargo_oci(
        &example(example_name),
        &["build", "--release", "--message-format", "json"],
    ));
    let json = result(&out);
    let b = Built {
        example: example_name.to_string(),
        layout: PathBuf::from(json["path"].as_str().expect("path")),
        references: json["references"]
            .as_array()
            .expect("references")
            .iter()
            .map(|r| r.as_str().unwrap_or_default().to_string())
            .collect(),
        digest: json["digest"].as_str().expect("digest").to_string(),
        json,
    };
    guard.insert(example_name.to_string(), b.clone());
    b
}

/// The reasons of cargo's own JSON messages, which `--message-format json` passes through.
pub const CARGO_REASONS: &[&str] = &[
    "compiler-artifact",
    "compiler-message",
    "build-script-executed",
    "build-finished",
];

/// Every line of a `--message-format json` stdout as JSON, in order: each line must be one
/// JSON object with a `reason`.
pub fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("a stdout line is not JSON ({e}): {l}"));
            assert!(v["reason"].is_string(), "an object without a reason: {l}");
            v
        })
        .collect()
}

/// cargo-oci's own objects on a `--message-format json` stdout, in order: cargo's messages,
/// which pass through, left out (told apart by `reason`).
pub fn results(stdout: &str) -> Vec<serde_json::Value> {
    json_lines(stdout)
        .into_iter()
        .filter(|v| !CARGO_REASONS.contains(&v["reason"].as_str().unwrap_or_default()))
        .collect()
}

/// The one object cargo-oci printed (see [`results`]).
pub fn result(stdout: &str) -> serde_json::Value {
    let mut all = results(stdout);
    assert_eq!(
        all.len(),
        1,
        "not one cargo-oci object on stdout:\n{stdout}"
    );
    all.remove(0)
}

/// A unique name for containers and images of this run.
pub fn unique(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Writes an executable script at `path`. The file is written by a child process, never opened
/// for writing here: a process that another test thread forks while this one holds the file
/// open for writing would keep it busy (ETXTBSY) and the script could not be started.
pub fn write_script(path: &Path, text: &str) {
    use std::io::Write as _;
    let mut child = Command::new("sh")
        .args(["-c", "cat > \"$1\" && chmod 755 \"$1\"", "sh"])
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "cannot write {}",
        path.display()
    );
}

/// A private target directory under `tmp` holding a copy of the shared build's http-hello binary,
/// so that `--no-build` packages it without touching the shared target directory.
pub fn private_target(tmp: &Path) -> PathBuf {
    let b = built("http-hello");
    assert!(b.layout.is_dir());
    let shared = examples_target_dir();
    let target = tmp.join("target");
    std::fs::create_dir_all(target.join("release")).unwrap();
    std::fs::copy(
        shared.join("release/http-hello"),
        target.join("release/http-hello"),
    )
    .unwrap();
    target
}

/// A copy of the http-hello example at `dir` whose image goes on the base `from`.
pub fn example_on_base(from: &str, dir: &Path) {
    copy_example("http-hello", dir);
    let toml = std::fs::read_to_string(dir.join("Cargo.toml"))
        .unwrap()
        .replace(
            "[package.metadata.oci]\n",
            &format!("[package.metadata.oci]\nfrom = \"{from}\"\n"),
        );
    std::fs::write(dir.join("Cargo.toml"), toml).unwrap();
}
