//! Metadata fuzz: a few hundred malformed and odd `[package.metadata.oci]` variants of the
//! static-hello example, from a fixed-seed generator, packaged with `--no-build` after one real
//! build. Every refusal exits 2 with a `help:` line and writes nothing; every acceptance is an
//! image that umoci unpacks (checking every digest) and that podman runs (a deduplicated few).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cargo_oci_tests::*;

/// How many variants are tried.
const VARIANTS: usize = 300;
/// At most this many distinct accepted images go through umoci, and through podman.
const UMOCI_RUNS: usize = 40;
const PODMAN_RUNS: usize = 12;

/// xorshift64*: the same variants on every run and machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// Values for each top-level key as TOML: ones to accept (some odd), then ones to refuse.
#[rustfmt::skip]
const TOP: &[(&str, &[&str], &[&str])] = &[
    ("name", &["\"localhost/fuzz\"", "\"localhost:5000/team/fuzz\"", "\"fuzz\""],
        &["\"UPPER/x\"", "\"\"", "\"a b\"", "\"localhost/fuzz:tag\"", "7"]),
    ("tags", &["[\"{version}\"]", "[\"latest\", \"latest\"]", "[\"v{version}+x\"]", "[]"],
        &["[\"{nope}\"]", "[\"-bad\"]", "[\"a\\nb\"]", "\"latest\""]),
    ("args", &["[\"world\"]", "[]", "[\"x y\", \"--\"]", "[\"\\n\"]", "[\"ünï\"]"],
        &["[\"a\\u0000b\"]", "inf", "nan", "[1]", "\"world\""]),
    ("env", &["{ A = \"1\" }", "{ GREETING = \"hey\" }", "{ A = \"x\\ny\" }", "{ PATH = \"/bin\" }"],
        &["{ \"\" = \"x\" }", "{ \"A=B\" = \"x\" }", "{ A = 1 }", "{ \"A\\u0000\" = \"x\" }", "{ A = -inf }"]),
    ("user", &["0", "1000", "65534", "4294967294"],
        &["4294967295", "-1", "4294967296", "\"root\"", "1.5"]),
    ("group", &["0", "1000"], &["4294967295", "\"wheel\""]),
    ("workdir", &["\"/\"", "\"/srv\"", "\"/./srv/\"", "\"/tmp\"", "\"/data\""],
        &["\"relative\"", "\"\"", "\"/a\\u0000b\"", "\"/../x\"", "\"/.wh.x\"", "\"/a\\nb\""]),
    ("ports", &["[\"8080\"]", "[\"53/udp\", \"8080/tcp\"]", "[\"65535/sctp\"]"],
        &["[\"0\"]", "[\"65536\"]", "[\"80/icmp\"]", "[\"http\"]", "[8080]"]),
    ("volumes", &["[\"/data\"]", "[\"/data\", \"/data/\"]", "[\"/srv/a b\"]", "[\"/var/lib/fuzz\"]", "[\"/srv\"]"],
        &["[\"/etc/passwd\"]", "[\"/\"]", "[\"/bin\"]", "[\"/tmp\"]", "[\"relative\"]", "[\"/.wh.x\"]",
          "[\"/etc\"]", "[\"/bin/static-hello\"]", "[\"/dev\"]"]),
    ("labels", &["{ vendor = \"x\" }", "{ \"a.b\" = \"c\" }", "{ title = \"\" }"],
        &["{ \"\" = \"x\" }", "{ x = 1 }", "{ x = nan }"]),
    ("extra-libs", &["[]"], &["[\"\"]", "[\"/lib/x.so\"]"]),
    ("ca-certificates", &["true", "false"], &["\"yes\""]),
    ("created", &["\"now\"", "\"2024-01-01T00:00:00Z\"", "1979-05-27T07:32:00Z"],
        &["\"yesterday\"", "\"1969-01-01T00:00:00Z\"", "2024-01-01"]),
    ("from", &[], &["\"bogus\"", "\"oci:\""]),
    ("max-layers", &["1", "2", "3", "100", "1000"], &["0", "-1"]),
    ("runtime-inputs", &["[\"./tools/run.sh\"]", "[\"tools/../tools/run.sh\"]", "[\"./tools/run.sh\", \"./tools/run.sh\"]"],
        &["[\"nope-not-a-program-here\"]", "[\"\"]", "[\"/etc/passwd\"]", "[\"tools/x\\ny\"]"]),
    ("debug", &["false", "{ enabled = false }"], &["\"yes\"", "{ nope = 1 }", "{ inputs = [\"\"] }"]),
    ("init", &["true", "false"], &["1"]),
    ("bin", &["\"static-hello\""], &["\"nope\""]),
    ("nmae", &[], &["\"x\""]),
];

/// Probe settings, timeouts, `files` and `perms` parts: ones to accept, then ones to refuse.
#[rustfmt::skip]
const PROBE_KINDS: (&[&str], &[&str]) = (
    &["http = \"http://127.0.0.1:8080/healthz\"", "tcp = \"127.0.0.1:8080\"", "tcp = \"[::1]:8080\"",
      "exec = [\"static-hello\", \"check\"]", "bin = \"static-hello\""],
    &["http = \"http://127.0.0.1:8080/\\nexec=/bin/sh\"", "http = \"https://127.0.0.1/\"", "http = \"http://\"",
      "http = \"http://a b/\"", "tcp = \"x\"", "tcp = \"127.0.0.1:0\"", "tcp = \"h\\n:1\"", "exec = []",
      "exec = [\"a\\tb\"]", "exec = [\"\"]", "bin = \"nope\"", "http = \"http://127.0.0.1:1/\"\ntcp = \"127.0.0.1:1\"", ""],
);
#[rustfmt::skip]
const TIMEOUTS: (&[&str], &[&str]) = (
    &["", "timeout = \"2s\"", "timeout = \"5m\"", "timeout = \"1ms\""],
    &["timeout = \"0s\"", "timeout = \"10m\"", "timeout = \"abc\"", "timeout = 5"],
);
#[rustfmt::skip]
const SRCS: (&[&str], &[&str]) = (
    &["\"static\"", "\"static/a.txt\"", "\"static/sub\"", "\"tools\"", "\"./static/../static\"", "\"src\""],
    &["\".\"", "\"\"", "\"/etc/shadow\"", "\"../outside.txt\"", "\"leaky\"", "\"pipe\"", "\"missing\"", "\"linkdir\""],
);
#[rustfmt::skip]
const DESTS: (&[&str], &[&str]) = (
    &["\"/srv\"", "\"/srv/static/\"", "\"/data/x\"", "\"/bin/tool\"", "\"/tmp/x\"", "\"/usr/share/fuzz\"", "\"/./opt//x\"",
      "\"/etc/fuzz\""],
    &["\"/bin/entrypoint\"", "\"/./bin/./entrypoint\"", "\"/etc/passwd\"", "\"/bin/\"", "\"/.wh.x\"",
      "\"/etc/.wh..wh..opq\"", "\"relative\"", "\"/etc/cargo-oci/contract\"", "\"/srv/../etc\"", "\"/srv/a\\nb\"",
      "\"/bin/static-hello\"", "\"/proc/x\""],
);
#[rustfmt::skip]
const MODES: (&[&str], &[&str]) = (
    &["", "mode = \"0644\"", "mode = \"0755\"", "mode = 0o640", "mode = \"0o600\""],
    &["mode = \"999\"", "mode = \"0o17777\"", "mode = -1", "mode = \"\""],
);
#[rustfmt::skip]
const PERM_PATHS: (&[&str], &[&str]) = (
    &["\"/tmp\"", "\"/etc/passwd\"", "\"/srv\"", "\"/data\""],
    &["\"/nope\"", "\"rel\"", "\"/bin/entrypoint\"", "\"/./etc/../etc/passwd\"", "\"/bin\"", "\"/bin/static-hello\""],
);
#[rustfmt::skip]
const REGEXES: (&[&str], &[&str]) = (
    &["", "regex = \".*\""],
    &["regex = \"(\"", "regex = \"\\\\.nothing$\""],
);
#[rustfmt::skip]
const PERM_SETS: (&[&str], &[&str]) = (
    &["", "gid = 65534", "uid = 0\ngid = 0", "mode = \"01777\"", "mode = \"0755\"\nuid = 65534"],
    &["mode = \"0777\"", "mode = \"04555\"", "uid = 65534", "mode = \"0400\"\nuid = 1000"],
);

/// A value from `good` (two times in three) or `bad`.
fn either<'a>(rng: &mut Rng, (good, bad): (&[&'a str], &[&'a str])) -> &'a str {
    if good.is_empty() || rng.below(3) == 0 {
        rng.pick(bad)
    } else {
        rng.pick(good)
    }
}

/// One variant: the metadata table and the keys it changed (for deduplicating podman runs).
struct Variant {
    toml: String,
    keys: BTreeSet<String>,
}

fn variant(rng: &mut Rng) -> Variant {
    let mut top: BTreeMap<&str, String> = BTreeMap::new();
    top.insert("name", "\"localhost/fuzz\"".into());
    top.insert("args", "[\"world\"]".into());
    let mut keys = BTreeSet::new();
    let mut tables = String::new();
    for _ in 0..1 + rng.below(3) {
        match rng.below(10) {
            0..=5 => {
                let (key, good, bad) = TOP[rng.below(TOP.len())];
                top.insert(key, either(rng, (good, bad)).to_string());
                keys.insert(key.to_string());
            }
            6 => {
                let which = rng.pick(&["live", "ready"]);
                tables.push_str(&format!(
                    "\n[package.metadata.oci.{which}]\n{}\n{}\n",
                    either(rng, PROBE_KINDS),
                    either(rng, TIMEOUTS)
                ));
                keys.insert(which.to_string());
            }
            7 | 8 => {
                for _ in 0..1 + rng.below(2) {
                    tables.push_str(&format!(
                        "\n[[package.metadata.oci.files]]\nsrc = {}\ndest = {}\n{}\n",
                        either(rng, SRCS),
                        either(rng, DESTS),
                        either(rng, MODES)
                    ));
                }
                keys.insert("files".into());
            }
            _ => {
                tables.push_str(&format!(
                    "\n[[package.metadata.oci.perms]]\npath = {}\n{}\n{}\n",
                    either(rng, PERM_PATHS),
                    either(rng, REGEXES),
                    either(rng, PERM_SETS)
                ));
                keys.insert("perms".into());
            }
        }
    }
    let mut toml = String::from("[package.metadata.oci]\n");
    for (k, v) in &top {
        toml.push_str(&format!("{k} = {v}\n"));
    }
    toml.push_str(&tables);
    Variant { toml, keys }
}

/// The example's Cargo.toml with its metadata table replaced by `metadata`.
fn manifest_with(original: &str, metadata: &str) -> String {
    let start = original
        .find("[package.metadata.oci]")
        .expect("the example has metadata");
    let end = original[start..]
        .find("\n# Standalone package")
        .map_or(original.len(), |e| start + e);
    format!("{}{metadata}\n{}", &original[..start], &original[end..])
}

/// Runs with a deadline (a hang fails the test) and no stdin.
fn bounded(cmd: &mut Command, limit: Duration) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    cmd.stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} hung for {limit:?}; stderr:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: std::fs::read(&out).unwrap(),
        stderr: std::fs::read(&err).unwrap(),
    }
}

/// Every file under `dir` (dot directories such as the store and caches left out) with its
/// contents: what a refused build must leave as it was.
fn outputs(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
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

/// Test files in the package copy: a tree with an inner symlink, a leak, a pipe, a script.
fn fixtures(p: &Path) {
    use std::os::unix::fs::symlink;
    for d in ["static/sub", "leaky", "tools"] {
        std::fs::create_dir_all(p.join(d)).unwrap();
    }
    std::fs::write(p.join("static/a.txt"), "a\n").unwrap();
    std::fs::write(p.join("static/sub/b.txt"), "b\n").unwrap();
    symlink("../a.txt", p.join("static/sub/up")).unwrap();
    symlink("/etc/shadow", p.join("leaky/innocent.txt")).unwrap();
    symlink("/etc", p.join("linkdir")).unwrap();
    std::fs::write(p.parent().unwrap().join("outside.txt"), "secret\n").unwrap();
    std::fs::write(p.join("tools/run.sh"), "#!/bin/sh\necho run\n").unwrap();
    ok(Command::new("chmod").arg("755").arg(p.join("tools/run.sh")));
    ok(Command::new("mkfifo").arg(p.join("pipe")));
}

#[test]
fn metadata_fuzz() {
    let started = Instant::now();
    let umoci = tool("umoci").is_some();
    let podman = tool("podman").is_some();
    let tmp = tempfile::tempdir().unwrap();
    let pkg = tmp.path().join("pkg");
    copy_example("static-hello", &pkg);
    fixtures(&pkg);
    let target = tmp.path().join("target");
    let oci = |args: &[&str]| {
        let mut c = Command::new(cargo_oci_bin());
        c.arg("oci").args(args).current_dir(&pkg);
        c.env("CARGO_TARGET_DIR", &target)
            .env("CARGO_OCI_CACHE_DIR", test_cache_dir())
            .env_remove("SOURCE_DATE_EPOCH");
        c
    };
    ok(oci(&["build", "-q"]));
    let original = std::fs::read_to_string(pkg.join("Cargo.toml")).unwrap();

    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let (mut refused, mut accepted) = (0, 0);
    let mut seen_digests = BTreeSet::new();
    let mut podman_keys: BTreeSet<BTreeSet<String>> = BTreeSet::new();
    let (mut umoci_runs, mut podman_runs) = (0, 0);
    for n in 0..VARIANTS {
        let v = variant(&mut rng);
        std::fs::write(pkg.join("Cargo.toml"), manifest_with(&original, &v.toml)).unwrap();
        let before = outputs(&target.join("oci"));
        let out = bounded(
            &mut oci(&["build", "--no-build", "--message-format", "json"]),
            Duration::from_secs(60),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        let what = format!("variant {n}:\n{}\nstderr:\n{stderr}", v.toml);
        match out.status.code() {
            Some(2) => {
                refused += 1;
                assert!(
                    stderr.contains("\n  help: "),
                    "a refusal without help: {what}"
                );
                // stdout holds the refusal as one JSON error object, and nothing else.
                let stdout = String::from_utf8_lossy(&out.stdout);
                let j = result(&stdout);
                assert!(
                    j["reason"] == "error" && j["exit_code"] == 2 && j["help"].is_string(),
                    "stdout on a refusal: {stdout}\n{what}"
                );
                assert!(
                    outputs(&target.join("oci")) == before,
                    "a refusal wrote output: {what}"
                );
            }
            Some(0) => {
                accepted += 1;
                let j = result(&String::from_utf8_lossy(&out.stdout));
                let digest = j["digest"].as_str().unwrap().to_string();
                let layout = j["path"].as_str().unwrap().to_string();
                let reference = j["references"][0].as_str().unwrap().to_string();
                if !seen_digests.insert(digest) {
                    continue;
                }
                if umoci && umoci_runs < UMOCI_RUNS {
                    umoci_runs += 1;
                    let bundle = tmp.path().join("bundle");
                    let _ = std::fs::remove_dir_all(&bundle);
                    let u = bounded(
                        Command::new("umoci")
                            .args(["unpack", "--rootless", "--image"])
                            .arg(format!("{layout}:{reference}"))
                            .arg(&bundle),
                        Duration::from_secs(60),
                    );
                    assert!(
                        u.status.success(),
                        "umoci refused an accepted image: {}\n{what}",
                        String::from_utf8_lossy(&u.stderr)
                    );
                    sealed_rootfs(&bundle.join("rootfs"), tmp.path(), &what);
                }
                if podman && podman_runs < PODMAN_RUNS && podman_keys.insert(v.keys.clone()) {
                    podman_runs += 1;
                    let archive = tmp.path().join("image.tar");
                    let mut c = oci(&[
                        "build",
                        "--no-build",
                        "-q",
                        "--format",
                        "docker-archive",
                        "-o",
                    ]);
                    ok(c.arg(&archive));
                    podman_runs_it(&archive, &reference, &what);
                }
            }
            other => panic!("exit {other:?} (neither accepted nor refused): {what}"),
        }
    }
    eprintln!(
        "{VARIANTS} variants: {refused} refused, {accepted} accepted ({} distinct images; \
         {umoci_runs} unpacked by umoci, {podman_runs} run by podman) in {:?}",
        seen_digests.len(),
        started.elapsed()
    );
    assert!(
        refused >= VARIANTS / 5 && accepted >= VARIANTS / 10,
        "the generator lost its mix"
    );
}

/// The contract files are cargo-oci's, and nothing from outside the package came in: not the
/// file next to it, not /etc/shadow, no path of the build machine.
fn sealed_rootfs(rootfs: &Path, build_dir: &Path, what: &str) {
    use std::os::unix::fs::PermissionsExt;
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    assert!(
        passwd.starts_with("root:x:0:0:"),
        "/etc/passwd is {passwd:?}\n{what}"
    );
    let entry = std::fs::symlink_metadata(rootfs.join("bin/entrypoint")).unwrap();
    assert!(entry.is_file(), "/bin/entrypoint is not a file\n{what}");
    assert_eq!(
        entry.permissions().mode() & 0o7777,
        0o555,
        "/bin/entrypoint\n{what}"
    );
    assert!(
        !rootfs.join("etc/shadow").exists(),
        "/etc/shadow came in\n{what}"
    );
    let host = build_dir
        .to_string_lossy()
        .trim_start_matches('/')
        .to_string();
    let mut stack = vec![rootfs.to_path_buf()];
    let mut seen = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            seen += 1;
            assert!(seen < 100_000, "a runaway tree\n{what}");
            let p = e.unwrap().path();
            let rel = p
                .strip_prefix(rootfs)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            assert!(
                !rel.contains(&host),
                "a build path in the image: /{rel}\n{what}"
            );
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file() && m.len() == 7 {
                let text = std::fs::read(&p).unwrap();
                assert!(
                    text != b"secret\n",
                    "the file outside the package came in: /{rel}\n{what}"
                );
            }
        }
    }
}

/// Loads the image into podman, runs it and removes it.
fn podman_runs_it(archive: &Path, reference: &str, what: &str) {
    let loaded = bounded(
        Command::new("podman")
            .args(["load", "-q", "-i"])
            .arg(archive),
        Duration::from_secs(120),
    );
    assert!(
        loaded.status.success(),
        "podman load: {}\n{what}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    let ran = bounded(
        Command::new("podman").args(["run", "--rm", "--network=none", reference]),
        Duration::from_secs(120),
    );
    let _ = bounded(
        Command::new("podman").args(["rmi", "-f", reference]),
        Duration::from_secs(60),
    );
    assert!(
        ran.status.success(),
        "podman run: {}\n{what}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert!(
        String::from_utf8_lossy(&ran.stdout).contains("from static-hello"),
        "podman run printed {:?}\n{what}",
        String::from_utf8_lossy(&ran.stdout)
    );
}
