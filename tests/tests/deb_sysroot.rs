//! A sysroot made from `.deb` files: `examples/tls-zlib` built for arm64 with
//! `CARGO_OCI_SYSROOT_AARCH64_UNKNOWN_LINUX_GNU` naming a directory of the packages `apt-get
//! download` fetched (scripts/install-test-tools.sh puts them in /var/cache/cargo-oci-test). The
//! image holds those packages' libraries, the SBOM and the image's dpkg records name them with the
//! versions `dpkg-deb` reads, a second build unpacks nothing, and damaged or foreign packages are
//! refused with nothing written.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use cargo_oci_tests::*;

const DEBS: &str = "/var/cache/cargo-oci-test/debs-arm64";
const AMD64_DEBS: &str = "/var/cache/cargo-oci-test/debs-amd64";
const VAR: &str = "CARGO_OCI_SYSROOT_AARCH64_UNKNOWN_LINUX_GNU";
const PACKAGES: [&str; 4] = ["libc6", "libgcc-s1", "libssl3", "zlib1g"];

/// The tests here change the per-machine cache's `sysroots` one at a time, so that each can
/// say what it added.
static CACHE: Mutex<()> = Mutex::new(());

/// The tools and packages every check needs; None (outside CI) skips the test.
fn ready() -> Option<()> {
    for t in ["aarch64-linux-gnu-gcc", "skopeo", "umoci", "dpkg-deb"] {
        tool(t)?;
    }
    for dir in [DEBS, AMD64_DEBS] {
        if !Path::new(dir).is_dir() {
            assert!(
                !in_ci(),
                "{dir} is missing: scripts/install-test-tools.sh downloads it"
            );
            eprintln!("SKIP: {dir} is missing");
            return None;
        }
    }
    Some(())
}

fn debs(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    v.sort();
    v
}

fn sysroots_dir() -> PathBuf {
    test_cache_dir().join("sysroots")
}

/// The entries of the cache's `sysroots`, with their inode and modification time.
fn sysroots_listing() -> BTreeMap<String, (u64, i64)> {
    let Ok(rd) = std::fs::read_dir(sysroots_dir()) else {
        return BTreeMap::new();
    };
    rd.map(|e| {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        (
            e.file_name().to_string_lossy().into_owned(),
            (m.ino(), m.mtime()),
        )
    })
    .collect()
}

/// `cargo oci build --target aarch64-unknown-linux-gnu -v` of tls-zlib with the sysroot `sysroot`,
/// into `out`.
fn build(sysroot: &Path, out: &Path) -> std::process::Output {
    run(cargo_oci(
        &example("tls-zlib"),
        &[
            "build",
            "--release",
            "--target",
            "aarch64-unknown-linux-gnu",
            "-v",
            "--message-format",
            "json",
            "-o",
        ],
    )
    .arg(out)
    .env(VAR, sysroot))
}

/// The sysroot the build's `-v` output names, and whether it was unpacked by that build.
fn unpacked(stderr: &str) -> (PathBuf, bool) {
    for (words, fresh) in [(" unpacked into ", true), (" already unpacked in ", false)] {
        if let Some(rest) = stderr.lines().find_map(|l| l.split_once(words)) {
            return (PathBuf::from(rest.1.trim()), fresh);
        }
    }
    panic!("the build names no sysroot made from packages: {stderr}");
}

#[test]
fn image_from_deb_files_knows_their_packages() {
    if ready().is_none() {
        return;
    }
    let _cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let out = build(Path::new(DEBS), &layout);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    let j = result(&String::from_utf8_lossy(&out.stdout));
    let (root, _) = unpacked(&err);
    assert!(root.starts_with(sysroots_dir()), "{}", root.display());

    // What the packages hold, as dpkg-deb unpacks them, and their versions as it reads them.
    let extracted = tmp.path().join("extracted");
    let mut versions = BTreeMap::new();
    for deb in debs(DEBS) {
        ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&extracted));
        let field = |f: &str| {
            ok(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(f))
                .trim()
                .to_string()
        };
        assert_eq!(field("Architecture"), "arm64");
        versions.insert(field("Package"), field("Version"));
    }
    assert_eq!(
        versions.keys().map(String::as_str).collect::<Vec<_>>(),
        PACKAGES
    );

    // The SPDX SBOM lists exactly those packages, with their versions, for arm64.
    let sbom_path = j["sbom"][0].as_str().expect("an SBOM is written");
    let sbom: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sbom_path).unwrap()).unwrap();
    let mut listed = BTreeMap::new();
    for p in sbom["packages"].as_array().unwrap() {
        let purl = p["externalRefs"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|r| r["referenceLocator"].as_str())
            .unwrap_or_default();
        if purl.starts_with("pkg:deb/") {
            assert!(purl.contains("arch=arm64"), "{purl}");
            listed.insert(
                p["name"].as_str().unwrap().to_string(),
                p["versionInfo"].as_str().unwrap().to_string(),
            );
        }
    }
    assert_eq!(listed, versions, "the SBOM's Debian packages");

    // The image: its arm64 libraries are the packages' files, and it has their dpkg records.
    let one = tmp.path().join("one");
    let reference = j["references"][0].as_str().unwrap();
    ok(Command::new("skopeo").args([
        "copy",
        "-q",
        &format!("oci:{}:{reference}", layout.display()),
        &format!("oci:{}:x", one.display()),
    ]));
    let bundle = tmp.path().join("bundle");
    ok(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:x", one.display()))
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    let mut libs = BTreeSet::new();
    for dir in ["lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu", "lib"] {
        let Ok(rd) = std::fs::read_dir(rootfs.join(dir)) else {
            continue;
        };
        for e in rd {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.contains(".so") || !e.file_type().unwrap().is_file() {
                continue;
            }
            // The package may hold the file under the other merged-/usr alias.
            let rel = format!("{dir}/{name}");
            let other = rel
                .strip_prefix("usr/")
                .map(str::to_string)
                .unwrap_or_else(|| format!("usr/{rel}"));
            let source = [&rel, &other]
                .iter()
                .map(|r| extracted.join(r))
                .find(|p| p.exists())
                .unwrap_or_else(|| panic!("/{rel} of the image is in none of the packages"));
            assert_eq!(
                std::fs::read(e.path()).unwrap(),
                std::fs::read(&source).unwrap(),
                "/{rel} is the packages' file"
            );
            libs.insert(name);
        }
    }
    for lib in [
        "libc.so.6",
        "libssl.so.3",
        "libcrypto.so.3",
        "libz.so.1",
        "ld-linux-aarch64.so.1",
    ] {
        assert!(
            libs.iter().any(|l| l.starts_with(lib)),
            "{lib} in the image: {libs:?}"
        );
    }
    for (pkg, version) in &versions {
        let record = std::fs::read_to_string(rootfs.join("var/lib/dpkg/status.d").join(pkg))
            .unwrap_or_else(|e| panic!("no dpkg record of {pkg} in the image: {e}"));
        assert!(record.contains(&format!("Package: {pkg}\n")), "{record}");
        assert!(
            record.contains(&format!("Version: {version}\n")),
            "{record}"
        );
        assert!(record.contains("Architecture: arm64\n"), "{record}");
    }

    // A scanner finds the packages, for arm64, at the same versions.
    if let Some(syft) = tool("syft") {
        let out = ok(Command::new(syft)
            .args(["scan", "-q", "-o", "json"])
            .arg(format!("oci-dir:{}", one.display())));
        let found: serde_json::Value = serde_json::from_str(&out).expect("syft prints JSON");
        let debs: BTreeMap<String, String> = found["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["type"] == "deb")
            .inspect(|a| assert_eq!(a["metadata"]["architecture"], "arm64", "{a}"))
            .map(|a| {
                (
                    a["name"].as_str().unwrap().to_string(),
                    a["version"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(debs, versions, "what syft finds");
    }

    // A second build unpacks nothing: the same cache directory, untouched, and the same image.
    let before = sysroots_listing();
    let status = std::fs::metadata(root.join("var/lib/dpkg/status")).unwrap();
    let out = build(Path::new(DEBS), &tmp.path().join("again"));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    assert_eq!(unpacked(&err), (root.clone(), false), "{err}");
    assert_eq!(sysroots_listing(), before);
    let again = std::fs::metadata(root.join("var/lib/dpkg/status")).unwrap();
    assert_eq!(
        (again.ino(), again.mtime(), again.mtime_nsec()),
        (status.ino(), status.mtime(), status.mtime_nsec())
    );
    let j2 = result(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(j2["digest"], j["digest"]);
}

#[test]
fn damaged_and_foreign_deb_files_are_refused() {
    if ready().is_none() {
        return;
    }
    let _cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let all = debs(DEBS);
    type Fill<'a> = &'a dyn Fn(&Path);
    let cases: [(&str, Fill, &str); 2] = [
        (
            "truncated",
            &|dir: &Path| {
                for d in &all {
                    let bytes = std::fs::read(d).unwrap();
                    let name = d.file_name().unwrap();
                    let keep = if name.to_string_lossy().starts_with("libssl3") {
                        bytes.len() / 2
                    } else {
                        bytes.len()
                    };
                    std::fs::write(dir.join(name), &bytes[..keep]).unwrap();
                }
            },
            "is not a readable Debian package",
        ),
        (
            "amd64",
            &|dir: &Path| {
                for d in all.iter().filter(|d| {
                    !d.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with("zlib1g")
                }) {
                    std::fs::copy(d, dir.join(d.file_name().unwrap())).unwrap();
                }
                for d in debs(AMD64_DEBS) {
                    std::fs::copy(&d, dir.join(d.file_name().unwrap())).unwrap();
                }
            },
            "for architecture amd64, not for the target's arm64",
        ),
    ];
    for (name, fill, says) in cases {
        let dir = tmp.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        fill(&dir);
        let before = sysroots_listing();
        let out_dir = tmp.path().join(format!("out-{name}"));
        let out = build(&dir, &out_dir);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(says) && err.contains("help:"), "{name}: {err}");
        assert!(!out_dir.exists(), "{name}: nothing written");
        assert_eq!(sysroots_listing(), before, "{name}: nothing unpacked");
    }
}

#[test]
fn sysroot_unpacked_by_hand_has_its_files_listed_as_files() {
    if ready().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let sysroot = tmp.path().join("sysroot");
    for deb in debs(DEBS) {
        ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&sysroot));
    }
    let layout = tmp.path().join("layout");
    // The sysroot holds no development files: link against the host's multiarch install, as
    // the other builds here do (the same pkg-config settings, so nothing is rebuilt).
    let out = run(cargo_oci(
        &example("tls-zlib"),
        &[
            "build",
            "--release",
            "--target",
            "aarch64-unknown-linux-gnu",
            "-v",
            "--message-format",
            "json",
            "-o",
        ],
    )
    .arg(&layout)
    .env(VAR, &sysroot)
    .env(
        "PKG_CONFIG_LIBDIR_aarch64_unknown_linux_gnu",
        "/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig",
    )
    .env("PKG_CONFIG_ALLOW_CROSS_aarch64_unknown_linux_gnu", "1"));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "the sysroot {} has no package database",
            sysroot.display()
        )),
        "-v says the sysroot has no package database: {err}"
    );
    assert!(!err.contains("unpacked into"), "{err}");
    let j = result(&String::from_utf8_lossy(&out.stdout));
    let sbom: serde_json::Value =
        serde_json::from_slice(&std::fs::read(j["sbom"][0].as_str().unwrap()).unwrap()).unwrap();
    let debs_listed: Vec<&serde_json::Value> = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["externalRefs"].to_string().contains("pkg:deb/"))
        .collect();
    assert!(debs_listed.is_empty(), "no package known: {debs_listed:?}");
    let files: BTreeSet<String> = sbom["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["fileName"].as_str().unwrap().to_string())
        .collect();
    for lib in ["libc.so.6", "libssl.so.3", "libz.so.1"] {
        assert!(
            files.iter().any(|f| f.ends_with(lib)),
            "{lib} listed as a file: {files:?}"
        );
    }
}
