//! `push` attaches each image's SBOM to it as an OCI 1.1 artifact: on Debian's docker-registry
//! 2.8 (no referrers API) through the fallback tag `sha256-<hex>`, an index of referrers that a
//! second SBOM joins without pushing out the first; on a registry that answers the referrers API
//! (a small fake: none that does is installable here) the fallback tag is not written.

use std::process::{Command, Stdio};

use cargo_oci_tests::fake_registry::FakeRegistry;
use cargo_oci_tests::registry::{http, Registry};
use cargo_oci_tests::*;
use serde_json::Value;

const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const EMPTY_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

fn push(dest: &str, extra: &[&str]) -> Command {
    let mut c = cargo_oci(
        &example("http-hello"),
        &["push", "--release", "--no-build", "--to", dest],
    );
    c.args(extra).stdin(Stdio::null());
    c
}

/// GET from the registry: the body, or None on 404.
fn get(addr: &str, path: &str, accept: &str) -> Option<Vec<u8>> {
    let (status, _, body) = http(addr, "GET", path, &[("Accept", accept)]).expect("an answer");
    match status {
        200 => Some(body),
        404 => None,
        s => panic!("GET {path}: {s}: {}", String::from_utf8_lossy(&body)),
    }
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("JSON")
}

/// Checks the artifact `entry` of the referrers index of `subject` in `repo`: its manifest is an
/// OCI 1.1 artifact of `media_type` with the empty config and `subject`, and its one layer is
/// `sbom`.
fn check_artifact(
    addr: &str,
    repo: &str,
    entry: &Value,
    subject: &str,
    media_type: &str,
    sbom: &[u8],
) {
    assert_eq!(entry["artifactType"], media_type, "{entry}");
    assert_eq!(entry["mediaType"], MANIFEST, "{entry}");
    let digest = entry["digest"].as_str().expect("digest");
    let m = json(
        &get(addr, &format!("/v2/{repo}/manifests/{digest}"), MANIFEST)
            .expect("the artifact manifest"),
    );
    assert_eq!(m["artifactType"], media_type, "{m}");
    assert_eq!(
        m["config"]["mediaType"], "application/vnd.oci.empty.v1+json",
        "{m}"
    );
    assert_eq!(m["config"]["digest"], EMPTY_DIGEST, "{m}");
    assert_eq!(m["subject"]["digest"], subject, "{m}");
    assert_eq!(m["subject"]["mediaType"], MANIFEST, "{m}");
    assert_eq!(entry["annotations"], m["annotations"], "{entry} / {m}");
    let layers = m["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "{m}");
    assert_eq!(layers[0]["mediaType"], media_type, "{m}");
    let blob = get(
        addr,
        &format!("/v2/{repo}/blobs/{}", layers[0]["digest"].as_str().unwrap()),
        "*/*",
    )
    .expect("the SBOM blob");
    assert!(
        blob == sbom,
        "the attached blob is not the SBOM written beside it"
    );
}

#[test]
fn push_attaches_sboms_under_the_fallback_tag_and_keeps_the_first() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let b = built("http-hello");
    let tmp = tempfile::tempdir().unwrap();
    let repo = "team/attached";
    let dest = format!("{}/{repo}", reg.addr);
    let tag_path = format!(
        "/v2/{repo}/manifests/sha256-{}",
        b.digest.trim_start_matches("sha256:")
    );

    let spdx = tmp.path().join("app.spdx.json");
    ok(push(&dest, &["--sbom-output"]).arg(&spdx));
    let spdx_bytes = std::fs::read(&spdx).unwrap();
    let index = json(&get(&reg.addr, &tag_path, INDEX).expect("the fallback tag is written"));
    assert_eq!(index["mediaType"], INDEX, "{index}");
    let entries = index["manifests"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 1, "{index}");
    check_artifact(
        &reg.addr,
        repo,
        &entries[0],
        &b.digest,
        "application/spdx+json",
        &spdx_bytes,
    );

    // The other format: a second referrer, the first kept.
    let cdx = tmp.path().join("app.cdx.json");
    ok(push(&dest, &["--sbom", "cyclonedx", "--sbom-output"]).arg(&cdx));
    let index = json(&get(&reg.addr, &tag_path, INDEX).unwrap());
    let entries = index["manifests"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 2, "{index}");
    check_artifact(
        &reg.addr,
        repo,
        &entries[0],
        &b.digest,
        "application/spdx+json",
        &spdx_bytes,
    );
    check_artifact(
        &reg.addr,
        repo,
        &entries[1],
        &b.digest,
        "application/vnd.cyclonedx+json",
        &std::fs::read(&cdx).unwrap(),
    );

    // The same SBOM again: no duplicate entry.
    ok(push(&dest, &[]));
    let again = json(&get(&reg.addr, &tag_path, INDEX).unwrap());
    assert_eq!(again["manifests"], index["manifests"], "{again}");
}

#[test]
fn no_attach_sbom_leaves_no_fallback_tag() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let b = built("http-hello");
    let repo = "team/plain";
    ok(push(&format!("{}/{repo}", reg.addr), &["--no-attach-sbom"]));
    let hex = b.digest.trim_start_matches("sha256:");
    assert!(get(
        &reg.addr,
        &format!("/v2/{repo}/manifests/{}", b.digest),
        MANIFEST
    )
    .is_some());
    assert!(get(
        &reg.addr,
        &format!("/v2/{repo}/manifests/sha256-{hex}"),
        INDEX
    )
    .is_none());
}

#[test]
fn a_registry_with_the_referrers_api_gets_no_fallback_tag() {
    let b = built("http-hello");
    let fake = FakeRegistry::start();
    let tmp = tempfile::tempdir().unwrap();
    let spdx = tmp.path().join("app.spdx.json");
    let repo = "team/referred";
    ok(push(&format!("{}/{repo}", fake.addr), &["--sbom-output"]).arg(&spdx));
    let seen = fake.seen();
    let hex = b.digest.trim_start_matches("sha256:");
    assert!(
        fake.manifest(repo, &b.digest).is_some(),
        "the image is pushed: {seen:#?}"
    );
    assert!(
        seen.iter()
            .any(|r| r == &format!("GET /v2/{repo}/referrers/{}", b.digest)),
        "the referrers API was asked: {seen:#?}"
    );
    assert!(
        !seen
            .iter()
            .any(|r| r.contains(&format!("manifests/sha256-{hex}"))),
        "the fallback tag was touched: {seen:#?}"
    );
    assert!(fake.manifest(repo, &format!("sha256-{hex}")).is_none());
    // What the referrers API lists is the SBOM.
    let (_, _, body) = http(
        &fake.addr,
        "GET",
        &format!("/v2/{repo}/referrers/{}", b.digest),
        &[],
    )
    .expect("an answer");
    let index = json(&body);
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{index}");
    let m = json(
        &fake
            .manifest(repo, entries[0]["digest"].as_str().unwrap())
            .unwrap(),
    );
    assert_eq!(m["artifactType"], "application/spdx+json", "{m}");
    let blob = fake
        .blob(m["layers"][0]["digest"].as_str().unwrap())
        .unwrap();
    assert!(blob == std::fs::read(&spdx).unwrap());
}

#[test]
fn a_multi_platform_push_attaches_each_platform_images_sbom() {
    for t in ["aarch64-linux-gnu-gcc", "qemu-aarch64-static"] {
        if tool(t).is_none() {
            return;
        }
    }
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let repo = "team/platforms";
    let out = ok(cargo_oci(
        &example("tls-zlib"),
        &[
            "push",
            "--release",
            "--platform",
            "linux/amd64,linux/arm64",
            "--message-format",
            "json",
            "--to",
            &format!("{}/{repo}", reg.addr),
        ],
    )
    .stdin(Stdio::null()));
    let pushed = result(&out);
    let index_digest = pushed["digest"].as_str().expect("digest");
    let index = json(
        &get(
            &reg.addr,
            &format!("/v2/{repo}/manifests/{index_digest}"),
            INDEX,
        )
        .unwrap(),
    );
    let platforms = index["manifests"].as_array().unwrap();
    assert_eq!(platforms.len(), 2, "{index}");
    for p in platforms {
        let digest = p["digest"].as_str().unwrap();
        let hex = digest.trim_start_matches("sha256:");
        let tag = get(
            &reg.addr,
            &format!("/v2/{repo}/manifests/sha256-{hex}"),
            INDEX,
        )
        .unwrap_or_else(|| panic!("no fallback tag for {p}"));
        let refs = json(&tag);
        let entries = refs["manifests"].as_array().unwrap();
        assert_eq!(entries.len(), 1, "{refs}");
        assert_eq!(
            entries[0]["artifactType"], "application/spdx+json",
            "{refs}"
        );
        let m = json(
            &get(
                &reg.addr,
                &format!(
                    "/v2/{repo}/manifests/{}",
                    entries[0]["digest"].as_str().unwrap()
                ),
                MANIFEST,
            )
            .unwrap(),
        );
        assert_eq!(m["subject"]["digest"], digest, "{m}");
    }
}
