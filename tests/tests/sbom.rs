//! SBOMs, checked with real tools: SPDX documents pass `pyspdxtools`, CycloneDX ones pass
//! cyclonedx-python-lib's strict 1.6 schema and reference checks; their content equals what
//! `cargo tree -e normal` and `dpkg -S` / `dpkg-query` say about the tls-zlib example.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use cargo_oci_tests::*;

/// The Python of the validators' virtualenv (beside `pyspdxtools`).
fn venv_python() -> Option<PathBuf> {
    let spdx = tool("pyspdxtools")?;
    let py = spdx.with_file_name("python");
    assert!(py.is_file(), "{} has no python beside it", spdx.display());
    Some(py)
}

fn host_triple() -> String {
    let v = ok(Command::new("rustc").arg("-vV"));
    v.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_string()
}

/// `(name, version)` of every crate `cargo tree -e normal --target T` lists for tls-zlib.
fn cargo_tree_crates() -> BTreeSet<(String, String)> {
    let out = ok(Command::new("cargo")
        .args(["tree", "-e", "normal", "--prefix", "none", "--target"])
        .arg(host_triple())
        .current_dir(example("tls-zlib")));
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let name = w.next()?;
            let version = w.next()?.strip_prefix('v')?;
            Some((name.to_string(), version.to_string()))
        })
        .collect()
}

/// What dpkg says owns each closure file of the tls-zlib image: package → version.
fn dpkg_packages(libraries: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for lib in libraries {
        let real = std::fs::canonicalize(lib).unwrap();
        let mut candidates = vec![lib.clone(), real.to_string_lossy().into_owned()];
        for c in candidates.clone() {
            match c.strip_prefix("/usr") {
                Some(rest) => candidates.push(rest.to_string()),
                None => candidates.push(format!("/usr{c}")),
            }
        }
        let owner = candidates.iter().find_map(|c| {
            let o = run(Command::new("dpkg").args(["-S", c]));
            let s = String::from_utf8_lossy(&o.stdout).into_owned();
            o.status
                .success()
                .then(|| s.split(": ").next().unwrap_or_default().to_string())
        });
        let owner = owner.unwrap_or_else(|| panic!("dpkg -S knows no alias of {lib}"));
        // `libc6:amd64`: the architecture picks one instance of a multi-arch package.
        let version = ok(Command::new("dpkg-query").args(["-W", "-f", "${Version}", &owner]));
        let name = owner.split(':').next().unwrap_or_default().to_string();
        out.insert(name, version);
    }
    out
}

fn inspect_json() -> serde_json::Value {
    let out = ok(cargo_oci(
        &example("tls-zlib"),
        &["inspect", "--release", "--json", "-q"],
    ));
    result(&out)
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).expect("the SBOM is JSON")
}

#[test]
fn spdx_sbom_of_tls_zlib_is_valid_and_lists_its_crates_and_debian_packages() {
    let b = built("tls-zlib");
    let path = PathBuf::from(
        b.json["sbom"][0]
            .as_str()
            .expect("the build names its SBOM"),
    );
    assert_eq!(
        path,
        PathBuf::from(format!("{}.spdx.json", b.layout.display())),
        "the SBOM sits beside the layout"
    );
    if tool("dpkg").is_none() {
        return;
    }
    if let Some(spdx) = tool("pyspdxtools") {
        let o = run(Command::new(spdx).arg("-i").arg(&path));
        assert!(
            o.status.success(),
            "pyspdxtools refused the SBOM:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let doc = read_json(&path);
    let packages = doc["packages"].as_array().unwrap();
    let purl = |p: &serde_json::Value| {
        p["externalRefs"][0]["referenceLocator"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // The image, named by the digest that was built.
    let image = &packages[0];
    assert_eq!(image["primaryPackagePurpose"], "CONTAINER");
    let hex = b.digest.trim_start_matches("sha256:");
    assert!(
        purl(image).starts_with(&format!("pkg:oci/tls-zlib@sha256%3A{hex}?")),
        "{}",
        purl(image)
    );

    // Crates: exactly what cargo tree lists, proc macros at build time only.
    let crates: Vec<&serde_json::Value> = packages
        .iter()
        .filter(|p| purl(p).starts_with("pkg:cargo/"))
        .collect();
    let listed: BTreeSet<(String, String)> = crates
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["versionInfo"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(listed, cargo_tree_crates());
    for c in &crates {
        let name = c["name"].as_str().unwrap();
        let build_time = c["comment"]
            .as_str()
            .is_some_and(|s| s.starts_with("build time only"));
        let expect = [
            "openssl-macros",
            "syn",
            "quote",
            "proc-macro2",
            "unicode-ident",
        ]
        .contains(&name);
        assert_eq!(build_time, expect, "{name}: build time only?");
        if name != "tls-zlib" {
            assert!(
                c["checksums"][0]["checksumValue"]
                    .as_str()
                    .is_some_and(|s| s.len() == 64),
                "{name} has its Cargo.lock checksum"
            );
            assert!(c["downloadLocation"]
                .as_str()
                .unwrap()
                .starts_with("https://crates.io/api/v1/crates/"));
        }
    }
    let openssl = crates.iter().find(|c| c["name"] == "openssl").unwrap();
    assert_eq!(openssl["licenseDeclared"], "Apache-2.0");

    // Debian packages: what dpkg says owns the closure's files, at dpkg-query's versions.
    let inspect = inspect_json();
    let libraries: Vec<String> = inspect["libraries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["host_path"].as_str().unwrap().to_string())
        .collect();
    let want = dpkg_packages(&libraries);
    for p in ["libc6", "libgcc-s1", "libssl3", "zlib1g"] {
        assert!(want.contains_key(p), "dpkg owns no {p} file: {want:?}");
    }
    let debs: BTreeMap<String, String> = packages
        .iter()
        .filter(|p| purl(p).starts_with("pkg:deb/debian/"))
        .map(|p| {
            assert!(purl(p).contains("&distro=debian-"), "{}", purl(p));
            (
                p["name"].as_str().unwrap().to_string(),
                p["versionInfo"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(debs, want);

    // The CA bundle belongs to no package: it is listed as a file.
    assert!(doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["fileName"] == "./etc/ssl/certs/ca-certificates.crt"));

    // Reproducible: the same inputs give the same bytes.
    let tmp = tempfile::tempdir().unwrap();
    let again = tmp.path().join("again.spdx.json");
    ok(cargo_oci(
        &example("tls-zlib"),
        &[
            "build",
            "--release",
            "-q",
            "--sbom-output",
            again.to_str().unwrap(),
        ],
    ));
    assert_eq!(
        std::fs::read(&again).unwrap(),
        std::fs::read(&path).unwrap()
    );
}

#[test]
fn cyclonedx_sbom_passes_the_strict_schema_and_reference_check() {
    let b = built("tls-zlib");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("image");
    let json = ok(cargo_oci(
        &example("tls-zlib"),
        &[
            "build",
            "--release",
            "--sbom",
            "cyclonedx",
            "--message-format",
            "json",
            "-o",
            out.to_str().unwrap(),
        ],
    ));
    let json = result(&json);
    let path = tmp.path().join("image.cdx.json");
    assert_eq!(json["sbom"][0].as_str(), Some(path.to_str().unwrap()));
    let doc = read_json(&path);
    assert_eq!(doc["specVersion"], "1.6");
    assert_eq!(doc["metadata"]["component"]["version"], b.digest.as_str());
    let comps = doc["components"].as_array().unwrap();
    let find = |n: &str| comps.iter().find(|c| c["name"] == n).unwrap();
    assert_eq!(find("syn")["scope"], "excluded");
    assert_eq!(find("openssl")["scope"], "required");
    assert!(find("zlib1g")["purl"]
        .as_str()
        .unwrap()
        .starts_with("pkg:deb/debian/zlib1g@"));
    assert_eq!(
        find("libz-sys")["licenses"][0]["expression"],
        "MIT OR Apache-2.0"
    );
    let Some(py) = venv_python() else { return };
    let script = r#"
import json, sys
from cyclonedx.validation.json import JsonStrictValidator
from cyclonedx.schema import SchemaVersion
from cyclonedx.model.bom import Bom
text = open(sys.argv[1]).read()
err = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
if err is not None:
    sys.exit("schema: %s" % err)
Bom.from_json(json.loads(text)).validate()
print("valid")
"#;
    let o = ok(Command::new(py).arg("-c").arg(script).arg(&path));
    assert_eq!(o.trim(), "valid");
}

#[test]
fn inspect_shows_what_the_sbom_lists() {
    let j = inspect_json();
    let sw = &j["software"];
    let names = |k: &str| -> BTreeSet<String> {
        sw[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(names("crates").contains("openssl"));
    if tool("dpkg").is_some() {
        assert!(names("debian_packages").contains("zlib1g"));
    }
    let text = ok(cargo_oci(
        &example("tls-zlib"),
        &["inspect", "--release", "-q"],
    ));
    assert!(
        text.contains("\nsoftware (what the SBOM lists)\n"),
        "{text}"
    );
    assert!(text.contains("openssl-macros 0.1.1  MIT OR Apache-2.0  build time only"));
}

#[test]
fn an_unwritable_sbom_path_is_refused_before_any_build_work() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let out = tmp.path().join("image");
    let o = run(cargo_oci(
        &example("tls-zlib"),
        &[
            "build",
            "--release",
            "-o",
            out.to_str().unwrap(),
            "--sbom-output",
            file.join("sbom.json").to_str().unwrap(),
        ],
    ));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("cannot write the SBOM to"), "{err}");
    assert!(err.contains("help:"), "{err}");
    assert!(!out.exists(), "no image was written");
    assert!(!err.contains("Packaging"), "nothing was built: {err}");

    // `--sbom none` writes none.
    let o = ok(cargo_oci(
        &example("tls-zlib"),
        &[
            "build",
            "--release",
            "--sbom",
            "none",
            "--message-format",
            "json",
            "-o",
            out.to_str().unwrap(),
        ],
    ));
    let j = result(&o);
    assert_eq!(j["sbom"], serde_json::json!([]));
    assert!(!tmp.path().join("image.spdx.json").exists());
}

/// `(type, name) → version` of what `syft scan SOURCE -o json` finds.
fn syft(syft: &Path, source: &str) -> BTreeMap<(String, String), String> {
    let out = ok(Command::new(syft).args(["scan", source, "-o", "json", "-q"]));
    let j: serde_json::Value = serde_json::from_str(&out).expect("syft prints JSON");
    j["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let s = |k: &str| a[k].as_str().unwrap_or_default().to_string();
            ((s("type"), s("name")), s("version"))
        })
        .collect()
}

#[test]
fn syft_finds_the_debian_packages_and_the_crates_in_the_image() {
    let Some(syft_bin) = tool("syft") else { return };
    if tool("dpkg").is_none() {
        return;
    }
    let b = built("tls-zlib");
    let inspect = inspect_json();
    let libraries: Vec<String> = inspect["libraries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["host_path"].as_str().unwrap().to_string())
        .collect();
    let mut want: BTreeMap<(String, String), String> = dpkg_packages(&libraries)
        .into_iter()
        .map(|(n, v)| (("deb".to_string(), n), v))
        .collect();
    // The crates shipped in the binary: cargo tree's, less the build-time ones.
    let build_time = [
        "openssl-macros",
        "syn",
        "quote",
        "proc-macro2",
        "unicode-ident",
    ];
    for (n, v) in cargo_tree_crates() {
        if !build_time.contains(&n.as_str()) {
            want.insert(("rust-crate".to_string(), n), v);
        }
    }
    let found = syft(&syft_bin, &format!("oci-dir:{}", b.layout.display()));
    assert_eq!(found, want, "syft scan oci-dir:");

    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("image.tar");
    ok(cargo_oci(
        &example("tls-zlib"),
        &[
            "build",
            "--release",
            "-q",
            "--format",
            "docker-archive",
            "-o",
            archive.to_str().unwrap(),
        ],
    ));
    let found = syft(&syft_bin, &format!("docker-archive:{}", archive.display()));
    assert_eq!(found, want, "syft scan docker-archive:");

    // Nothing executable came in for it: the records are read-only files.
    let files = inspect["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["role"] == "packages")
        .expect("a packages layer")["files"]
        .as_array()
        .unwrap()
        .clone();
    for f in &files {
        let path = f["path"].as_str().unwrap();
        if f["type"] == "file" {
            assert_eq!(f["mode"], "0444", "{path}");
        }
    }
    for p in ["libc6", "libssl3", "zlib1g", "libgcc-s1"] {
        assert!(
            files
                .iter()
                .any(|f| f["path"] == format!("/var/lib/dpkg/status.d/{p}")),
            "no dpkg record for {p}: {files:?}"
        );
    }
}

#[test]
fn scanner_metadata_false_leaves_the_image_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let target = private_target(tmp.path());
    let dir = tmp.path().join("app");
    copy_example("http-hello", &dir);
    let toml = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    let inspect = |dir: &Path| -> serde_json::Value {
        let out = ok(
            cargo_oci(dir, &["inspect", "--release", "--no-build", "--json", "-q"])
                .arg("--target-dir")
                .arg(&target),
        );
        result(&out)
    };
    let roles = |j: &serde_json::Value| -> Vec<String> {
        j["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["role"].as_str().unwrap().to_string())
            .collect()
    };
    let with = inspect(&dir);
    std::fs::write(
        dir.join("Cargo.toml"),
        toml.replace(
            "[package.metadata.oci]\n",
            "[package.metadata.oci]\nscanner-metadata = false\n",
        ),
    )
    .unwrap();
    let without = inspect(&dir);
    if tool("dpkg").is_some() {
        assert!(
            roles(&with).contains(&"packages".to_string()),
            "{:?}",
            roles(&with)
        );
    }
    assert!(!roles(&without).contains(&"packages".to_string()));
    // The binary goes in as cargo built it.
    let service = |j: &serde_json::Value| {
        j["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["role"] == "service")
            .unwrap()["digest"]
            .clone()
    };
    assert_ne!(service(&with), service(&without));
    let built = std::fs::read(target.join("release/http-hello")).unwrap();
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&built));
    assert_eq!(without["software"]["crates"][0]["name"], "http-hello");
    ok(cargo_oci(
        &dir,
        &[
            "build",
            "--release",
            "--no-build",
            "-q",
            "--sbom",
            "cyclonedx",
            "--sbom-output",
        ],
    )
    .arg(tmp.path().join("s.cdx.json"))
    .arg("-o")
    .arg(tmp.path().join("layout"))
    .arg("--target-dir")
    .arg(&target));
    let doc = read_json(&tmp.path().join("s.cdx.json"));
    let root = doc["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "http-hello")
        .unwrap();
    assert_eq!(root["hashes"][0]["content"], sha.as_str());
}

/// The strict CycloneDX 1.6 schema and reference check of `path` (None: no validator outside CI).
fn cyclonedx_valid(path: &Path) -> Option<()> {
    let py = venv_python()?;
    let script = r#"
import json, sys
from cyclonedx.validation.json import JsonStrictValidator
from cyclonedx.schema import SchemaVersion
from cyclonedx.model.bom import Bom
text = open(sys.argv[1]).read()
err = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
if err is not None:
    sys.exit("schema: %s" % err)
Bom.from_json(json.loads(text)).validate()
print("valid")
"#;
    let o = ok(Command::new(py).arg("-c").arg(script).arg(path));
    assert_eq!(o.trim(), "valid");
    Some(())
}

#[test]
fn a_two_platform_build_has_an_sbom_for_its_index_shown_and_attached() {
    use cargo_oci_tests::registry::{http, Registry};
    for t in ["aarch64-linux-gnu-gcc", "pyspdxtools"] {
        if tool(t).is_none() {
            return;
        }
    }
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let platforms = "linux/amd64,linux/arm64";
    let build = |format: &str, out: &Path| {
        result(&ok(cargo_oci(
            &example("tls-zlib"),
            &[
                "build",
                "--release",
                "--platform",
                platforms,
                "--sbom",
                format,
                "--message-format",
                "json",
                "-o",
                out.to_str().unwrap(),
            ],
        )))
    };
    let j = build("spdx", &tmp.path().join("multi"));
    let index_digest = j["digest"].as_str().expect("digest").to_string();
    let images: Vec<(String, String)> = j["platforms"]
        .as_array()
        .expect("platforms")
        .iter()
        .map(|p| {
            (
                p["platform"].as_str().unwrap().to_string(),
                p["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(images.len(), 2, "{j}");
    let spdx_path = tmp.path().join("multi-index.spdx.json");
    assert!(
        j["sbom"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str() == Some(spdx_path.to_str().unwrap())),
        "the build names the index's SBOM: {j}"
    );
    let o = run(Command::new(tool("pyspdxtools").unwrap())
        .arg("-i")
        .arg(&spdx_path));
    assert!(
        o.status.success(),
        "pyspdxtools refused the index SBOM:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let doc = read_json(&spdx_path);
    let packages = doc["packages"].as_array().unwrap();
    let purl_of = |p: &serde_json::Value| {
        p["externalRefs"][0]["referenceLocator"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let index_pkg = packages
        .iter()
        .find(|p| p["SPDXID"] == "SPDXRef-Index")
        .expect("the index is a package");
    assert_eq!(index_pkg["versionInfo"], index_digest.as_str());
    assert!(
        purl_of(index_pkg).contains(&index_digest.replace(':', "%3A")),
        "{index_pkg}"
    );
    let rels = doc["relationships"].as_array().unwrap();
    for (platform, digest) in &images {
        let arch = platform.trim_start_matches("linux/");
        let pkg = packages
            .iter()
            .find(|p| p["versionInfo"] == digest.as_str())
            .unwrap_or_else(|| panic!("the {platform} image is a package"));
        let purl = purl_of(pkg);
        assert!(
            purl.contains(&digest.replace(':', "%3A")) && purl.contains(&format!("arch={arch}")),
            "{purl}"
        );
        assert!(
            rels.iter().any(|r| r["spdxElementId"] == "SPDXRef-Index"
                && r["relationshipType"] == "CONTAINS"
                && r["relatedSpdxElement"] == pkg["SPDXID"]),
            "the index CONTAINS the {platform} image"
        );
    }

    // CycloneDX: the index as the metadata's component, the images as components it depends on.
    let j = build("cyclonedx", &tmp.path().join("cdx"));
    assert_eq!(j["digest"].as_str(), Some(index_digest.as_str()));
    let cdx_path = tmp.path().join("cdx-index.cdx.json");
    let doc = read_json(&cdx_path);
    assert_eq!(
        doc["metadata"]["component"]["version"],
        index_digest.as_str()
    );
    let deps = &doc["dependencies"][0];
    assert_eq!(deps["ref"], doc["metadata"]["component"]["bom-ref"]);
    let want: BTreeSet<String> = images.iter().map(|(_, d)| format!("image:{d}")).collect();
    let got: BTreeSet<String> = deps["dependsOn"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, want);
    cyclonedx_valid(&cdx_path);

    // inspect shows it.
    let inspected = result(&ok(cargo_oci(
        &example("tls-zlib"),
        &[
            "inspect",
            "--release",
            "--platform",
            platforms,
            "--message-format",
            "json",
        ],
    )));
    let sw = &inspected["software"];
    assert!(
        sw["purl"]
            .as_str()
            .unwrap()
            .contains(&index_digest.replace(':', "%3A")),
        "{sw}"
    );
    let shown: BTreeSet<String> = sw["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(shown, images.iter().map(|(_, d)| d.clone()).collect());
    let text = ok(cargo_oci(
        &example("tls-zlib"),
        &["inspect", "--release", "--platform", platforms, "-q"],
    ));
    assert!(
        text.contains("software (what the index's SBOM lists)"),
        "{text}"
    );

    // Pushed: the index's SBOM is attached to the index (the fallback tag of its digest).
    let repo = "multi/sbom";
    let spdx_bytes = std::fs::read(&spdx_path).unwrap();
    let mut push = cargo_oci(
        &example("tls-zlib"),
        &[
            "push",
            "--release",
            "--no-build",
            "--platform",
            platforms,
            "--to",
            &format!("{}/{repo}", reg.addr),
            "--message-format",
            "json",
        ],
    );
    push.stdin(std::process::Stdio::null());
    let pushed = result(&ok(push));
    assert_eq!(pushed["digest"].as_str(), Some(index_digest.as_str()));
    assert!(
        pushed["attached"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["subject"] == index_digest.as_str()),
        "{pushed}"
    );
    let get = |path: &str, accept: &str| {
        let (status, _, body) = http(&reg.addr, "GET", path, &[("Accept", accept)]).unwrap();
        assert_eq!(status, 200, "GET {path}");
        body
    };
    let fallback: serde_json::Value = serde_json::from_slice(&get(
        &format!(
            "/v2/{repo}/manifests/sha256-{}",
            index_digest.trim_start_matches("sha256:")
        ),
        "application/vnd.oci.image.index.v1+json",
    ))
    .unwrap();
    let entry = &fallback["manifests"][0];
    assert_eq!(entry["artifactType"], "application/spdx+json", "{fallback}");
    let artifact: serde_json::Value = serde_json::from_slice(&get(
        &format!("/v2/{repo}/manifests/{}", entry["digest"].as_str().unwrap()),
        "application/vnd.oci.image.manifest.v1+json",
    ))
    .unwrap();
    assert_eq!(artifact["subject"]["digest"], index_digest.as_str());
    assert_eq!(
        artifact["subject"]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let blob = get(
        &format!(
            "/v2/{repo}/blobs/{}",
            artifact["layers"][0]["digest"].as_str().unwrap()
        ),
        "*/*",
    );
    assert!(
        blob == spdx_bytes,
        "the attached index SBOM is the one written beside the build"
    );
}

#[test]
fn the_debug_variants_tools_get_their_dpkg_records_and_sbom_entries() {
    for t in ["dpkg", "skopeo", "umoci"] {
        if tool(t).is_none() {
            return;
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("app");
    copy_example("http-hello", &dir);
    let manifest = dir.join("Cargo.toml");
    let toml = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        toml.replace(
            "[package.metadata.oci]\n",
            "[package.metadata.oci]\ndebug = true\n",
        ),
    )
    .unwrap();
    let layout = tmp.path().join("layout");
    let j = result(&ok(cargo_oci(
        &dir,
        &["build", "--release", "--message-format", "json", "-o"],
    )
    .arg(&layout)));
    // The debug variant's tools, and the Debian packages they come from (as dpkg says).
    let unpack = |reference: &str, name: &str| -> PathBuf {
        let one = tmp.path().join(format!("one-{name}"));
        ok(Command::new("skopeo").args([
            "copy",
            "-q",
            &format!("oci:{}:{reference}", layout.display()),
            &format!("oci:{}:x", one.display()),
        ]));
        let bundle = tmp.path().join(format!("bundle-{name}"));
        ok(Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:x", one.display()))
            .arg(&bundle));
        bundle.join("rootfs")
    };
    let image = unpack(j["references"][0].as_str().unwrap(), "image");
    let debug = unpack(
        j["debug"]["references"][0]
            .as_str()
            .expect("a debug variant"),
        "debug",
    );
    let image_sbom = read_json(Path::new(j["sbom"][0].as_str().unwrap()));
    let debug_sbom = read_json(Path::new(j["sbom"][1].as_str().unwrap()));
    let names = |doc: &serde_json::Value| -> BTreeSet<String> {
        doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect()
    };
    // The packages only the debug variant's SBOM lists: its tools' (busybox-static, or bash and
    // coreutils), each checked against dpkg below.
    let debug_only: BTreeSet<String> = names(&debug_sbom)
        .difference(&names(&image_sbom))
        .cloned()
        .collect();
    assert!(
        !debug_only.is_empty(),
        "the debug tools come from a Debian package on this host"
    );
    for pkg in &debug_only {
        let version = ok(Command::new("dpkg-query").args(["-W", "-f", "${Version}", pkg]));
        let record = std::fs::read_to_string(debug.join("var/lib/dpkg/status.d").join(pkg))
            .unwrap_or_else(|e| panic!("the debug variant has no dpkg record of {pkg}: {e}"));
        assert!(record.contains(&format!("Package: {pkg}\n")), "{record}");
        assert!(
            record.contains(&format!("Version: {version}\n")),
            "{record}"
        );
        assert!(
            !image.join("var/lib/dpkg/status.d").join(pkg).exists(),
            "{pkg} is the debug variant's only"
        );
        assert!(
            names(&debug_sbom).contains(pkg),
            "the debug SBOM lists {pkg}"
        );
    }
    // The image's own records are in the debug variant too (its layers are below).
    for e in std::fs::read_dir(image.join("var/lib/dpkg/status.d")).unwrap() {
        let e = e.unwrap();
        assert!(debug
            .join("var/lib/dpkg/status.d")
            .join(e.file_name())
            .is_file());
    }
}
