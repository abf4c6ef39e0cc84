//! Runtime bundles, rootfs export, merged archives, base images and layer budgets, end to end
//! with runc, podman, the Docker engine, skopeo, umoci and a real registry on 127.0.0.1.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cargo_oci_tests::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

const APP_MAIN: &str = r#"
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("write") => {
            for p in &args[1..] {
                match std::fs::write(p, b"x") {
                    Ok(()) => println!("write {p}: ok"),
                    Err(e) => println!("write {p}: {e}"),
                }
            }
        }
        Some("env") => {
            for (k, v) in std::env::vars() {
                println!("{k}={v}");
            }
        }
        _ => {
            let g = std::env::var("GREETING").unwrap_or_else(|_| "hello".into());
            println!("{g} from seed-app");
        }
    }
}
"#;

/// A small glibc package, `seed-app`, with `meta` as its `[package.metadata.oci]` body.
fn app(dir: &Path, meta: &str) -> PathBuf {
    let pkg = dir.join("seed-app");
    std::fs::create_dir_all(pkg.join("src")).unwrap();
    std::fs::write(pkg.join("src/main.rs"), APP_MAIN).unwrap();
    std::fs::write(
        pkg.join("Cargo.toml"),
        format!(
            "[package]\nname = \"seed-app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [package.metadata.oci]\n{meta}\n\n[workspace]\n"
        ),
    )
    .unwrap();
    pkg
}

/// `cargo oci ARGS --message-format json` in `pkg`, which must succeed; the JSON result.
fn build_json(pkg: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--release", "--message-format", "json"]);
    let out = ok(cargo_oci(pkg, &all));
    result(&out)
}

fn fails(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "expected a failure; stderr:\n{stderr}"
    );
    assert_ne!(out.status.code(), Some(101), "panicked:\n{stderr}");
    assert!(!stderr.contains("panicked"), "panicked:\n{stderr}");
    stderr
}

fn runc(bundle: &Path, name: &str) -> String {
    let id = unique(name);
    let out = run(Command::new("runc")
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(&id)
        .stdin(Stdio::null()));
    let _ = run(Command::new("runc").args(["delete", "--force", &id]));
    assert!(
        out.status.success(),
        "runc run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sets a bundle's process arguments.
fn set_args(bundle: &Path, args: &[&str]) {
    let p = bundle.join("config.json");
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    cfg["process"]["args"] = serde_json::json!(args);
    std::fs::write(&p, serde_json::to_vec(&cfg).unwrap()).unwrap();
}

#[test]
fn bundle_runs_under_runc_and_readonly_refuses_writes() {
    if tool("runc").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pkg = app(tmp.path(), "env = { GREETING = \"bonjour\" }");
    let bundle = tmp.path().join("bundle");
    let b = build_json(&pkg, &["bundle", bundle.to_str().unwrap()]);
    assert_eq!(b["format"], "runtime-bundle");
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    let ns: Vec<&str> = cfg["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["type"].as_str())
        .collect();
    for want in ["pid", "network", "mount", "ipc", "uts"] {
        assert!(ns.contains(&want), "namespace {want} missing: {ns:?}");
    }
    let mounts: Vec<&str> = cfg["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["destination"].as_str())
        .collect();
    for want in ["/proc", "/dev", "/sys"] {
        assert!(mounts.contains(&want), "mount {want} missing: {mounts:?}");
    }
    assert_eq!(cfg["process"]["user"]["uid"], 65534);
    assert_eq!(cfg["process"]["cwd"], "/");
    assert_eq!(
        cfg["process"]["args"],
        serde_json::json!(["/bin/entrypoint"])
    );
    assert_eq!(cfg["root"]["readonly"], false);
    assert_eq!(
        runc(&bundle, "seeds-bundle").trim(),
        "bonjour from seed-app"
    );

    set_args(&bundle, &["/bin/entrypoint", "write", "/tmp/probe"]);
    assert_eq!(runc(&bundle, "seeds-rw").trim(), "write /tmp/probe: ok");

    // --readonly: the same write fails inside; an earlier bundle is replaced.
    let out = build_json(
        &pkg,
        &[
            "bundle",
            bundle.to_str().unwrap(),
            "--readonly",
            "--no-build",
        ],
    );
    assert_eq!(out["format"], "runtime-bundle");
    set_args(
        &bundle,
        &["/bin/entrypoint", "write", "/probe", "/tmp/probe"],
    );
    let text = runc(&bundle, "seeds-ro");
    assert_eq!(text.lines().count(), 2, "{text}");
    for l in text.lines() {
        assert!(l.contains("Read-only file system"), "{text}");
    }

    // A directory that is not a bundle is never replaced.
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("keep"), "mine").unwrap();
    let err = fails(&run(cargo_oci(
        &pkg,
        &["bundle", other.to_str().unwrap(), "--release", "--no-build"],
    )));
    assert!(err.contains("not a runtime bundle"), "{err}");
    assert_eq!(std::fs::read_to_string(other.join("keep")).unwrap(), "mine");
}

#[test]
fn export_imports_into_podman_and_runs() {
    if tool("podman").is_none() {
        return;
    }
    let b = built("static-hello");
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("rootfs.tar");
    ok(cargo_oci(
        &example("static-hello"),
        &[
            "export",
            file.to_str().unwrap(),
            "--release",
            "--no-build",
            "-q",
        ],
    ));
    let list = ok(Command::new("tar").arg("-tf").arg(&file));
    for want in ["bin/static-hello", "bin/entrypoint", "etc/passwd"] {
        assert!(list.lines().any(|l| l == want), "{want} missing:\n{list}");
    }
    assert!(!list.contains(".wh."), "{list}");
    let name = format!("localhost/{}:x", unique("seeds-export"));
    ok(Command::new("podman").arg("import").arg(&file).arg(&name));
    let out = run(Command::new("podman").args([
        "run",
        "--rm",
        "--network=none",
        &name,
        "/bin/entrypoint",
        "again",
    ]));
    let _ = run(Command::new("podman").args(["rmi", "-f", &name]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout,
        "hello from static-hello\narg: again\n",
        "{}",
        b.reference()
    );
}

#[test]
fn merged_archive_loads_every_image() {
    let tmp = tempfile::tempdir().unwrap();
    let mut inputs = Vec::new();
    let mut names = Vec::new();
    for ex in ["static-hello", "http-hello"] {
        let b = built(ex);
        let f = tmp.path().join(format!("{ex}.tar"));
        ok(cargo_oci(
            &example(ex),
            &[
                "build",
                "--release",
                "--no-build",
                "-q",
                "--format",
                "docker-archive",
                "-o",
            ],
        )
        .arg(&f));
        inputs.push(f);
        names.extend(b.references.clone());
    }
    let merged = tmp.path().join("merged.tar");
    ok(cargo_oci(tmp.path(), &["merge", "-o", merged.to_str().unwrap()]).args(&inputs));
    let manifest: Value = serde_json::from_str(&ok(Command::new("tar")
        .arg("-xOf")
        .arg(&merged)
        .arg("manifest.json")))
    .unwrap();
    assert_eq!(manifest.as_array().unwrap().len(), 2);

    if tool("podman").is_some() {
        let out = ok(Command::new("podman").arg("load").arg("-i").arg(&merged));
        // Asked one by one: a listing of every image fails when another test removes one of
        // its own at the same moment.
        for n in &names {
            let exists = run(Command::new("podman").args(["image", "exists", n]));
            assert!(exists.status.success(), "podman lacks {n}:\n{out}");
        }
        for n in &names {
            let _ = run(Command::new("podman").args(["rmi", "-f", n]));
        }
    }
    if let Some(host) = docker_host() {
        let docker = || {
            let mut c = Command::new("/usr/bin/docker");
            c.args(["-H", &host]);
            c
        };
        ok(docker().arg("load").arg("-i").arg(&merged));
        let listed = ok(docker().args(["images", "--format", "{{.Repository}}:{{.Tag}}"]));
        for n in &names {
            assert!(
                listed.lines().any(|l| l == n),
                "docker lacks {n}:\n{listed}"
            );
        }
        for n in &names {
            let _ = run(docker().args(["rmi", "-f", n]));
        }
    }

    // Not docker-archives: an OCI archive, a text file. Nothing is written.
    let oci = tmp.path().join("x-oci.tar");
    ok(cargo_oci(
        &example("static-hello"),
        &[
            "build",
            "--release",
            "--no-build",
            "-q",
            "--format",
            "oci-archive",
            "-o",
        ],
    )
    .arg(&oci));
    let text = tmp.path().join("notes.txt");
    std::fs::write(&text, "not an archive\n").unwrap();
    for bad in [&oci, &text] {
        let out2 = tmp.path().join("never.tar");
        let o = run(
            cargo_oci(tmp.path(), &["merge", "-o", out2.to_str().unwrap()])
                .arg(&inputs[0])
                .arg(bad),
        );
        let err = fails(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains("is not a docker-archive") && err.contains(bad.to_str().unwrap()),
            "{err}"
        );
        assert!(!out2.exists());
    }
}

/// A registry on 127.0.0.1, stopped on drop.
struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn registry() -> Option<Registry> {
    let bin = tool("docker-registry")?;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nstorage: {{filesystem: {{rootdirectory: {}}}}}\n\
             http: {{addr: 127.0.0.1:{port}, secret: x}}\nlog: {{level: error}}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .arg("serve")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the registry did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Registry {
        child,
        port,
        _dir: dir,
    })
}

fn skopeo_config(layout: &str, reference: &str) -> Value {
    serde_json::from_str(&ok(Command::new("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("oci:{layout}:{reference}"))))
    .unwrap()
}

#[test]
fn base_images_from_every_source() {
    if tool("skopeo").is_none() {
        return;
    }
    let base = built("static-hello");
    let tmp = tempfile::tempdir().unwrap();
    let oci_ar = tmp.path().join("base-oci.tar");
    let docker_ar = tmp.path().join("base-docker.tar");
    for (fmt, f) in [("oci-archive", &oci_ar), ("docker-archive", &docker_ar)] {
        ok(cargo_oci(
            &example("static-hello"),
            &[
                "build",
                "--release",
                "--no-build",
                "-q",
                "--format",
                fmt,
                "-o",
            ],
        )
        .arg(f));
    }
    let base_layers: Vec<String> = base.json["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    let mut sources = vec![
        format!("oci:{}:{}", base.layout.display(), base.reference()),
        format!("oci-archive:{}", oci_ar.display()),
        format!("docker-archive:{}", docker_ar.display()),
    ];
    let reg = registry();
    if let Some(reg) = &reg {
        let dest = format!("docker://127.0.0.1:{}/base:x", reg.port);
        ok(Command::new("skopeo")
            .args(["copy", "-q", "--dest-tls-verify=false"])
            .arg(base.oci_ref())
            .arg(&dest));
        let info: Value = serde_json::from_str(&ok(Command::new("skopeo")
            .args(["inspect", "--tls-verify=false"])
            .arg(&dest)))
        .unwrap();
        sources.push(format!(
            "127.0.0.1:{}/base@{}",
            reg.port,
            info["Digest"].as_str().unwrap()
        ));

        // A tag is refused: it is not reproducible.
        let pkg = app(
            &tmp.path().join("tag"),
            &format!("from = \"127.0.0.1:{}/base:x\"", reg.port),
        );
        let o = run(cargo_oci(&pkg, &["build", "--release"]));
        let err = fails(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains("by tag") && err.contains("digest") && err.contains("from"),
            "{err}"
        );
    }

    for (i, from) in sources.iter().enumerate() {
        let pkg = app(
            &tmp.path().join(format!("s{i}")),
            &format!(
                "name = \"127.0.0.1:5000/team/sub/seed-app\"\nfrom = \"{from}\"\n\
                 env = {{ GREETING = \"howdy\", EXTRA = \"1\" }}\nmax-layers = 8"
            ),
        );
        // Each build its own layout: tests run in parallel and share the target dir.
        let out = tmp.path().join(format!("layout{i}"));
        let b = build_json(&pkg, &["build", "-o", out.to_str().unwrap()]);
        let layout = b["path"].as_str().unwrap();
        if i == 0 {
            // A name with a registry, a port and several path parts: the default layout is named
            // by the whole name made one path part, ref.name carries the whole name (the only
            // default layout here).
            let d = build_json(&pkg, &["build", "--no-build"]);
            let dir = d["path"].as_str().unwrap();
            assert!(
                dir.ends_with("/oci/127.0.0.1_5000+team+sub+seed-app"),
                "{dir}"
            );
            let index = std::fs::read_to_string(Path::new(dir).join("index.json")).unwrap();
            assert!(
                index.contains("\"127.0.0.1:5000/team/sub/seed-app:latest\""),
                "{index}"
            );
        }
        let layers: Vec<&str> = b["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap())
            .collect();
        assert!(layers.len() <= 8, "{from}: {} layers", layers.len());
        if !from.starts_with("docker-archive:") {
            // Layers from OCI sources keep their digests; docker-archives hold them uncompressed.
            assert_eq!(
                &layers[..base_layers.len()],
                base_layers.as_slice(),
                "{from}"
            );
        }
        let reference = "127.0.0.1:5000/team/sub/seed-app:latest";
        let cfg = skopeo_config(layout, reference);
        let env: Vec<&str> = cfg["config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        let keys: Vec<&str> = env.iter().map(|e| e.split('=').next().unwrap()).collect();
        let mut unique_keys = keys.clone();
        unique_keys.sort();
        unique_keys.dedup();
        assert_eq!(
            keys.len(),
            unique_keys.len(),
            "{from}: duplicate Env keys: {env:?}"
        );
        assert!(env.contains(&"GREETING=howdy"), "{from}: {env:?}");
        assert!(env.contains(&"EXTRA=1"), "{from}: {env:?}");
        assert!(env.contains(&"PATH=/bin"), "{from}: {env:?}");
        assert_eq!(
            cfg["rootfs"]["diff_ids"].as_array().unwrap().len(),
            cfg["history"].as_array().unwrap().len()
        );
        // Inherited from the base: its title label stays unless the image sets its own.
        assert_eq!(
            cfg["config"]["Labels"]["org.opencontainers.image.title"],
            "seed-app"
        );

        // The base's files are there and the image runs: umoci checks every diff_id.
        if tool("umoci").is_some() && tool("runc").is_some() && i == sources.len() - 1 {
            let bundle = tmp.path().join(format!("u{i}"));
            ok(Command::new("umoci")
                .args(["unpack", "--image"])
                .arg(format!("{layout}:{reference}"))
                .arg(&bundle));
            assert!(bundle.join("rootfs/bin/static-hello").is_file(), "{from}");
            assert!(bundle.join("rootfs/bin/seed-app").is_file(), "{from}");
            let own = tmp.path().join(format!("b{i}"));
            build_json(&pkg, &["bundle", own.to_str().unwrap(), "--no-build"]);
            set_args(&own, &["/bin/entrypoint", "env"]);
            let text = runc(&own, "seeds-base");
            assert_eq!(
                text.lines().filter(|l| l.starts_with("GREETING=")).count(),
                1,
                "{text}"
            );
            set_args(&own, &["/bin/static-hello", "from-base"]);
            assert_eq!(
                runc(&own, "seeds-base2"),
                "howdy from static-hello\narg: from-base\n"
            );
        }
    }
}

// ---- hostile base archives ------------------------------------------------------------------

/// A raw ustar header with any name (the tar crate refuses to write `..`).
fn raw_header(name: &[u8], typ: u8, size: u64, link: &[u8]) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = typ;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[329..337].copy_from_slice(b"0000001\0");
    h[337..345].copy_from_slice(b"0000003\0");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| *b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// A raw tar entry: name, type flag, data, link target.
type RawEntry<'a> = (&'a [u8], u8, &'a [u8], &'a [u8]);

/// A hostile case: name, layer tars, layer names in manifest.json, whether it is accepted.
type Case = (&'static str, Vec<Vec<u8>>, Option<Vec<String>>, bool);

/// A layer tar from raw entries.
fn raw_tar(entries: &[RawEntry]) -> Vec<u8> {
    let mut t = Vec::new();
    for (name, typ, data, link) in entries {
        t.extend_from_slice(&raw_header(name, *typ, data.len() as u64, link));
        t.extend_from_slice(data);
        t.resize(t.len().div_ceil(512) * 512, 0);
    }
    t.extend_from_slice(&[0u8; 1024]);
    t
}

/// A docker-archive holding one image with these layer tars.
fn docker_archive(path: &Path, layers: &[Vec<u8>], layer_names: Option<Vec<String>>) {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", hex::encode(Sha256::digest(l))))
        .collect();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/bin", "GREETING=base"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let names = layer_names.unwrap_or_else(|| {
        (0..layers.len())
            .map(|i| format!("l{i}/layer.tar"))
            .collect()
    });
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": "config.json", "RepoTags": ["localhost/hostile:x"], "Layers": names,
    }]))
    .unwrap();
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data).unwrap();
    };
    add("config.json", &config);
    for (i, l) in layers.iter().enumerate() {
        add(&format!("l{i}/layer.tar"), l);
    }
    add("manifest.json", &manifest);
    b.into_inner().unwrap().flush().unwrap();
}

/// Every file under `dir`, relative.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn hostile_base_archives_never_write_outside() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let out_s = outside.to_str().unwrap().as_bytes();
    // A GNU long-name header claiming 8 GiB, followed by 512 bytes.
    let mut oversized = raw_header(b"././@LongLink", b'L', 0o77777777777, b"").to_vec();
    oversized.extend_from_slice(&[b'a'; 512]);

    let cases: Vec<Case> = vec![
        (
            "dotdot",
            vec![raw_tar(&[(b"../../../outside/escape", b'0', b"x", b"")])],
            None,
            false,
        ),
        (
            "symlink-then-file",
            vec![raw_tar(&[
                (b"link", b'2', b"", out_s),
                (b"link/pwned", b'0', b"x", b""),
            ])],
            None,
            false,
        ),
        (
            "symlink-across-layers",
            vec![
                raw_tar(&[(b"etc/alt", b'2', b"", b"/")]),
                raw_tar(&[(b"etc/alt/pwned", b'0', b"x", b"")]),
            ],
            None,
            false,
        ),
        (
            "hardlink-out",
            vec![raw_tar(&[(b"h", b'1', b"", b"../../outside/x")])],
            None,
            false,
        ),
        ("oversized-header", vec![oversized], None, false),
        (
            "archive-paths",
            vec![raw_tar(&[(b"ok", b'0', b"x", b"")])],
            Some(vec!["../../../../etc/passwd".into()]),
            false,
        ),
        // Device nodes and an absolute symlink are fine in an image; the bundle leaves devices out.
        (
            "devices",
            vec![raw_tar(&[
                (b"dev/", b'5', b"", b""),
                (b"dev/evil", b'3', b"", b""),
                (b"abs", b'2', b"", b"/etc/passwd"),
            ])],
            None,
            true,
        ),
    ];
    for (name, layers, names, accepted) in cases {
        let ar = work.join(format!("{name}.tar"));
        docker_archive(&ar, &layers, names);
        let pkg = app(
            &work.join(name),
            &format!(
                "from = \"docker-archive:{}\"\nenv = {{ GREETING = \"own\" }}",
                ar.display()
            ),
        );
        let bundle = work.join(format!("{name}-bundle"));
        let o = run(cargo_oci(
            &pkg,
            &["bundle", bundle.to_str().unwrap(), "--release"],
        ));
        if accepted {
            assert!(
                o.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            let root = bundle.join("rootfs");
            assert!(std::fs::symlink_metadata(root.join("abs"))
                .unwrap()
                .file_type()
                .is_symlink());
            assert!(!root.join("dev/evil").exists(), "{name}: device node made");
            let cfg: Value =
                serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap())
                    .unwrap();
            let env = cfg["process"]["env"].as_array().unwrap();
            let greetings: Vec<&Value> = env
                .iter()
                .filter(|e| e.as_str().unwrap().starts_with("GREETING="))
                .collect();
            assert_eq!(greetings, [&Value::from("GREETING=own")], "{env:?}");
            assert!(env.contains(&Value::from("PATH=/bin:/usr/bin")), "{env:?}");
        } else {
            let err = fails(&o);
            eprintln!("{name}: refused: {}", err.trim().replace('\n', " / "));
            assert!(err.contains("cannot use the base image"), "{name}: {err}");
            assert!(!bundle.exists(), "{name}: a bundle was left");
        }
        assert!(
            files_under(&outside).is_empty(),
            "{name}: wrote outside: {:?}",
            files_under(&outside)
        );
        assert!(!tmp.path().join("escape").exists() && !Path::new("/pwned").exists());
    }
}

#[test]
fn max_layers_two_and_hundred_both_run() {
    let tmp = tempfile::tempdir().unwrap();
    for budget in [2usize, 100] {
        let pkg = app(
            &tmp.path().join(format!("m{budget}")),
            &format!("max-layers = {budget}"),
        );
        let out = tmp.path().join(format!("layout{budget}"));
        let b = build_json(&pkg, &["build", "-o", out.to_str().unwrap()]);
        let n = b["layers"].as_array().unwrap().len();
        assert!(n <= budget, "{budget}: {n} layers");
        if budget == 2 {
            assert_eq!(n, 2);
        } else {
            // glibc closure: loader, libc, libgcc_s each get a layer once there is room.
            assert!(n >= 5, "{budget}: only {n} layers: {}", b["layers"]);
        }
        if tool("umoci").is_none() || tool("runc").is_none() {
            continue;
        }
        let bundle = tmp.path().join(format!("u{budget}"));
        ok(Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!(
                "{}:{}",
                b["path"].as_str().unwrap(),
                b["references"][0].as_str().expect("references")
            ))
            .arg(&bundle));
        let cfg_path = bundle.join("config.json");
        let mut cfg: Value = serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
        cfg["process"]["terminal"] = false.into();
        std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
        assert_eq!(runc(&bundle, "seeds-layers").trim(), "hello from seed-app");
    }
}

#[test]
fn a_base_from_a_protected_registry_uses_the_push_credentials() {
    use cargo_oci_tests::registry::{base64, Registry};
    if tool("skopeo").is_none() {
        return;
    }
    let Some(reg) = Registry::start(Some(("base-user", "base-secret"))) else {
        return;
    };
    let base = built("static-hello");
    let dest = format!("{}/protected/base:1", reg.addr);
    ok(Command::new("skopeo")
        .args([
            "copy",
            "-q",
            "--dest-tls-verify=false",
            "--dest-creds",
            "base-user:base-secret",
        ])
        .arg(base.oci_ref())
        .arg(format!("docker://{dest}")));
    let inspected: Value = serde_json::from_str(&ok(Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .args(reg.skopeo_creds())
        .arg(format!("docker://{dest}"))))
    .unwrap();
    let from = format!(
        "{}/protected/base@{}",
        reg.addr,
        inspected["Digest"].as_str().unwrap()
    );

    // A copy of http-hello built on that base, with a home of its own for credentials.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("on-protected");
    example_on_base(&from, &dir);
    let home = tmp.path().join("home");
    std::fs::create_dir_all(home.join(".docker")).unwrap();
    let build = |with_login: bool| {
        let config = if with_login {
            let auth = base64(b"base-user:base-secret", false);
            format!(r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#, reg.addr)
        } else {
            "{}".to_string()
        };
        std::fs::write(home.join(".docker/config.json"), config).unwrap();
        let mut c = cargo_oci(
            &dir,
            &["build", "--release", "-q", "--message-format", "json"],
        );
        // A target directory of its own: the shared one's store already holds the base's blobs.
        c.env("CARGO_TARGET_DIR", tmp.path().join("target"))
            .env("HOME", &home)
            .env("DOCKER_CONFIG", home.join(".docker"))
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("CARGO_OCI_REGISTRY_USER");
        run(c)
    };
    let refused = build(false);
    assert_eq!(refused.status.code(), Some(2));
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("asks for credentials"), "{why}");

    let out = build(true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = result(&String::from_utf8_lossy(&out.stdout));
    let base_digests: Vec<&Value> = base.json["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| &l["digest"])
        .collect();
    let layers: Vec<&Value> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| &l["digest"])
        .collect();
    assert_eq!(
        &layers[..base_digests.len()],
        &base_digests[..],
        "the base's layers come first"
    );
}
