//! The middle of the pipeline without container tools: layer plans → layers in a store → an
//! image → every file sink, each result read back (digests, diff_ids, media types, names, file
//! contents and modes), for gzip and zstd layers.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;

use super::*;
use crate::build::layer_writer::write_layer;
use crate::build::plan::{Content, Entry, LayerPlan};
use crate::config::{BuildSpec, Created, ImageSpec, RuntimeConfig};
use crate::oci::compress::{self, Codec, Compression};
use crate::oci::digest::Digest;
use crate::oci::image::Platform;
use crate::oci::reference::ImageName;
use crate::util::reporter::Verbosity;

const SERVICE: &[u8] = b"#!/bin/sh\necho service\n";

fn spec() -> ImageSpec {
    ImageSpec {
        build: BuildSpec {
            package: "app".into(),
            manifest_path: "/nonexistent/Cargo.toml".into(),
            package_dir: "/nonexistent".into(),
            target_directory: "/nonexistent/target".into(),
            bin: "app".into(),
            ..Default::default()
        },
        name: ImageName::parse("localhost/unit/app").unwrap(),
        name_configured: true,
        tags: vec!["1.2.3".into(), "latest".into()],
        runtime: RuntimeConfig {
            args: vec!["serve".into()],
            env: BTreeMap::new(),
            user: 65534,
            group: 65534,
            workdir: "/".into(),
            ports: vec!["8080".into()],
            volumes: vec![],
            labels: BTreeMap::from([("vendor".to_string(), "unit".to_string())]),
            revision_from: None,
            created: Created::Epoch(1),
            stop_signal: None,
        },
        extra_libs: vec![],
        ca_certificates: false,
        mtime: 1,
        from: None,
        max_layers: 100,
        live: None,
        ready: None,
        runtime_inputs: vec![],
        debug: None,
        files: vec![],
        perms: vec![],
        init: false,
        content_tag: true,
        scanner_metadata: true,
        targets: Vec::new(),
        sysroots: Default::default(),
        sign_key: None,
    }
}

fn entry(path: &str, content: Content, mode: u32) -> Entry {
    Entry {
        path: path.into(),
        content,
        mode,
        uid: 0,
        gid: 0,
    }
}

/// Two layers: a base one, and the service (a host file) with a link to it.
fn plans(host_file: &Path) -> Vec<LayerPlan> {
    vec![
        LayerPlan {
            role: "base".into(),
            entries: vec![
                entry("bin", Content::Dir, 0o555),
                entry("etc", Content::Dir, 0o755),
                entry(
                    "etc/passwd",
                    Content::Bytes(b"nobody:x:65534:65534::/:/sbin/nologin\n".to_vec()),
                    0o444,
                ),
                entry("tmp", Content::Dir, 0o1777),
            ],
        },
        LayerPlan {
            role: "service".into(),
            entries: vec![
                entry("bin", Content::Dir, 0o555),
                entry("bin/app", Content::File(host_file.to_path_buf()), 0o555),
                entry("bin/entrypoint", Content::Symlink("app".into()), 0o777),
            ],
        },
    ]
}

/// A store and an image in it, its layers compressed with `codec`.
struct Fixture {
    _dir: tempfile::TempDir,
    out: std::path::PathBuf,
    store: Store,
    image: Image,
}

fn fixture(codec: Codec) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let host = dir.path().join("app");
    std::fs::write(&host, SERVICE).unwrap();
    let comp = Compression { codec, threads: 2 };
    let layers: Vec<_> = plans(&host)
        .iter()
        .map(|p| write_layer(&store, p, 1, comp).unwrap())
        .collect();
    let platform = Platform {
        architecture: "amd64".into(),
        variant: None,
    };
    let env = vec!["PATH=/bin".to_string()];
    let image =
        crate::build::assemble::assemble(&store, &spec(), &env, layers, &platform, None).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    Fixture {
        _dir: dir,
        out,
        store,
        image,
    }
}

fn quiet() -> Reporter {
    Reporter::new(Verbosity::Quiet)
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// Reads an OCI image layout through `read` (a path inside it → bytes) and checks it all the
/// way down: index.json names every tag, the manifest, config and layer blobs hash to their
/// digests, and every layer decompresses to the tar its diff_id names.
fn check_oci(f: &Fixture, codec: Codec, read: &dyn Fn(&str) -> Vec<u8>) {
    let blob = |digest: &str| {
        let bytes = read(&format!(
            "blobs/sha256/{}",
            digest.trim_start_matches("sha256:")
        ));
        assert_eq!(Digest::of(&bytes), digest, "a blob's name is its digest");
        bytes
    };
    assert_eq!(
        json(&read("oci-layout"))["imageLayoutVersion"],
        Value::from("1.0.0")
    );
    let index = json(&read("index.json"));
    let manifests = index["manifests"].as_array().unwrap();
    let names: Vec<&str> = manifests
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    let refs = f.image.references();
    assert_eq!(
        names,
        refs.iter().map(String::as_str).collect::<Vec<_>>(),
        "one entry per tag, named name:tag"
    );
    assert!(refs.contains(&"localhost/unit/app:latest".to_string()));
    for m in manifests {
        assert_eq!(
            m["digest"].as_str().unwrap(),
            f.image.manifest.digest.as_str()
        );
    }
    let manifest = json(&blob(f.image.manifest.digest.as_str()));
    let config = json(&blob(manifest["config"]["digest"].as_str().unwrap()));
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["config"]["Entrypoint"][0], "/bin/entrypoint");
    assert_eq!(config["config"]["Cmd"][0], "serve");
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    let descs = manifest["layers"].as_array().unwrap();
    assert_eq!(descs.len(), 2);
    assert_eq!(diff_ids.len(), descs.len());
    for (desc, diff_id) in descs.iter().zip(diff_ids) {
        assert_eq!(desc["mediaType"], codec.media_type());
        let bytes = blob(desc["digest"].as_str().unwrap());
        assert_eq!(desc["size"], bytes.len());
        let mut tar = Vec::new();
        compress::decoder(codec.media_type(), bytes.as_slice())
            .unwrap()
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(Digest::of(&tar), diff_id.as_str().unwrap());
    }
}

/// The members of a tar: name → bytes (directories and links as empty).
fn members(tar: impl Read) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in tar::Archive::new(tar).entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.insert(name.trim_end_matches('/').to_string(), data);
    }
    out
}

#[test]
fn layout_sink_writes_a_checked_layout() {
    for codec in [Codec::Gzip, Codec::Zstd] {
        let f = fixture(codec);
        let dir = f.out.join("layout");
        let sink = Layout(dir.clone());
        sink.check().unwrap();
        let d = sink.deliver(&f.store, &[&f.image], &quiet()).unwrap();
        assert!(matches!(d, Delivered::Path(p) if p == dir));
        check_oci(&f, codec, &|p| std::fs::read(dir.join(p)).unwrap());
    }
}

#[test]
fn oci_archive_sink_holds_the_same_layout() {
    for codec in [Codec::Gzip, Codec::Zstd] {
        let f = fixture(codec);
        let file = f.out.join("image.tar");
        let sink = OciArchive(file.clone());
        sink.check().unwrap();
        sink.deliver(&f.store, &[&f.image], &quiet()).unwrap();
        let m = members(std::fs::File::open(&file).unwrap());
        check_oci(&f, codec, &|p| {
            m.get(p)
                .cloned()
                .unwrap_or_else(|| panic!("{p} is not in the archive"))
        });
    }
}

#[test]
fn docker_archive_sink_holds_uncompressed_layers() {
    for codec in [Codec::Gzip, Codec::Zstd] {
        let f = fixture(codec);
        let file = f.out.join("docker.tar");
        let sink = DockerArchive(file.clone());
        sink.check().unwrap();
        sink.deliver(&f.store, &[&f.image], &quiet()).unwrap();
        let m = members(std::fs::File::open(&file).unwrap());
        let manifest = json(&m["manifest.json"]);
        let entries = manifest.as_array().unwrap();
        assert_eq!(entries.len(), 1);
        let e = &entries[0];
        assert_eq!(
            e["RepoTags"],
            serde_json::to_value(f.image.references()).unwrap()
        );
        let config_bytes = &m[e["Config"].as_str().unwrap()];
        assert_eq!(Digest::of(config_bytes), f.image.config.digest);
        let config = json(config_bytes);
        let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
        let layers = e["Layers"].as_array().unwrap();
        assert_eq!(layers.len(), diff_ids.len());
        for (name, diff_id) in layers.iter().zip(diff_ids) {
            // Plain tars: each hashes to its diff_id.
            let tar = &m[name.as_str().unwrap()];
            assert_eq!(Digest::of(tar), diff_id.as_str().unwrap(), "{codec:?}");
        }
        let top = members(m[layers[1].as_str().unwrap()].as_slice());
        assert_eq!(top["bin/app"], SERVICE);
    }
}

#[test]
fn export_sink_writes_the_flattened_tree() {
    for codec in [Codec::Gzip, Codec::Zstd] {
        let f = fixture(codec);
        let file = f.out.join("rootfs.tar");
        let sink = Export(file.clone());
        sink.check().unwrap();
        sink.deliver(&f.store, &[&f.image], &quiet()).unwrap();
        let mut seen = BTreeMap::new();
        let mut ar = tar::Archive::new(std::fs::File::open(&file).unwrap());
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let h = e.header().clone();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            let link = e
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            seen.insert(
                name.trim_end_matches('/').to_string(),
                (h.entry_type(), h.mode().unwrap(), data, link),
            );
        }
        let keys: Vec<&str> = seen.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "bin",
                "bin/app",
                "bin/entrypoint",
                "etc",
                "etc/passwd",
                "tmp"
            ],
            "{codec:?}"
        );
        let app = &seen["bin/app"];
        assert_eq!(
            (app.0, app.1, app.2.as_slice()),
            (tar::EntryType::Regular, 0o555, SERVICE)
        );
        let link = &seen["bin/entrypoint"];
        assert_eq!(
            (link.0, link.3.as_deref()),
            (tar::EntryType::Symlink, Some("app"))
        );
        assert_eq!(seen["tmp"].1, 0o1777);
    }
}

#[test]
fn bundle_sink_writes_config_and_rootfs() {
    for codec in [Codec::Gzip, Codec::Zstd] {
        let f = fixture(codec);
        let dir = f.out.join("bundle");
        let sink = Bundle {
            dir: dir.clone(),
            readonly: true,
        };
        sink.check().unwrap();
        sink.deliver(&f.store, &[&f.image], &quiet()).unwrap();
        let cfg = json(&std::fs::read(dir.join("config.json")).unwrap());
        assert_eq!(
            cfg["process"]["args"],
            serde_json::json!(["/bin/entrypoint", "serve"])
        );
        assert_eq!(cfg["process"]["user"]["uid"], 65534);
        assert!(cfg["process"]["env"]
            .as_array()
            .unwrap()
            .contains(&Value::from("PATH=/bin")));
        assert_eq!(cfg["root"]["path"], "rootfs");
        assert_eq!(cfg["root"]["readonly"], true);
        let root = dir.join("rootfs");
        assert_eq!(std::fs::read(root.join("bin/app")).unwrap(), SERVICE);
        let mode = std::fs::metadata(root.join("bin/app"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o555, "{codec:?}");
        assert_eq!(
            std::fs::read_link(root.join("bin/entrypoint")).unwrap(),
            Path::new("app")
        );
        assert_eq!(
            std::fs::read_to_string(root.join("etc/passwd")).unwrap(),
            "nobody:x:65534:65534::/:/sbin/nologin\n"
        );
    }
}
