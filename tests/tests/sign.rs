//! `push --sign`: signatures in cosign's format, checked with openssl alone from what the registry
//! serves (the `sha256-<hex>.sig` manifest copied out by skopeo); a tampered payload or another
//! key fails; a bad key is refused before anything is pushed.

use std::path::Path;
use std::process::{Command, Stdio};

use base64_decode::decode;
use cargo_oci_tests::registry::{http, Registry};
use cargo_oci_tests::*;

mod base64_decode {
    /// Standard base64, padding allowed.
    pub fn decode(s: &str) -> Vec<u8> {
        let val = |c: u8| -> u32 {
            match c {
                b'A'..=b'Z' => u32::from(c - b'A'),
                b'a'..=b'z' => u32::from(c - b'a') + 26,
                b'0'..=b'9' => u32::from(c - b'0') + 52,
                b'+' => 62,
                b'/' => 63,
                _ => panic!("not base64: {c}"),
            }
        };
        let mut out = Vec::new();
        let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
        for chunk in bytes.chunks(4) {
            let mut n = 0u32;
            for (i, &c) in chunk.iter().enumerate() {
                n |= val(c) << (18 - 6 * i);
            }
            let k = chunk.len() * 6 / 8;
            out.extend_from_slice(&n.to_be_bytes()[1..1 + k]);
        }
        out
    }
}

fn push(dir: &Path, dest: &str, extra: &[&str]) -> Command {
    let mut c = cargo_oci(dir, &["push", "--release", "--no-build", "--to", dest]);
    c.args(extra).stdin(Stdio::null());
    c
}

fn openssl_verify(public: &Path, sig: &Path, payload: &Path) -> bool {
    run(Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(public)
        .arg("-signature")
        .arg(sig)
        .arg(payload))
    .status
    .success()
}

#[test]
fn push_sign_makes_a_cosign_signature_that_openssl_verifies() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    if tool("skopeo").is_none() || tool("openssl").is_none() {
        return;
    }
    let b = built("http-hello");
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = (tmp.path().join("k.key"), tmp.path().join("k.pub"));
    ok(cargo_oci(tmp.path(), &["keygen", "--key"])
        .arg(&key)
        .arg("--pub")
        .arg(&public));
    let dest = format!("{}/team/signed", reg.addr);
    let out = ok(push(
        &example("http-hello"),
        &dest,
        &["--message-format", "json", "--sign"],
    )
    .arg(&key));
    let j = results(&out).remove(0);
    let hex = b.digest.trim_start_matches("sha256:");
    assert_eq!(j["signature"], format!("sha256-{hex}.sig"));

    // What the registry serves under the signature tag.
    let layout = tmp.path().join("sig");
    ok(Command::new("skopeo")
        .args(["copy", "-q", "--src-tls-verify=false"])
        .arg(format!("docker://{dest}:sha256-{hex}.sig"))
        .arg(format!("oci:{}:sig", layout.display())));
    let blob = |d: &str| {
        std::fs::read(
            layout
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    let layer = &manifest["layers"][0];
    assert_eq!(
        layer["mediaType"],
        "application/vnd.dev.cosign.simplesigning.v1+json"
    );
    let payload = blob(layer["digest"].as_str().unwrap());
    let p: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(
        p["critical"]["image"]["docker-manifest-digest"],
        b.digest.as_str()
    );
    assert_eq!(p["critical"]["identity"]["docker-reference"], dest.as_str());
    assert_eq!(p["critical"]["type"], "cosign container image signature");
    let sig = decode(
        layer["annotations"]["dev.cosignproject.cosign/signature"]
            .as_str()
            .unwrap(),
    );
    let (sig_path, payload_path) = (tmp.path().join("sig.der"), tmp.path().join("payload"));
    std::fs::write(&sig_path, &sig).unwrap();
    std::fs::write(&payload_path, &payload).unwrap();
    assert!(
        openssl_verify(&public, &sig_path, &payload_path),
        "openssl verifies"
    );

    // A tampered payload, or another key, fails.
    let mut tampered = payload.clone();
    let at = tampered.iter().position(|&c| c == b'a').unwrap();
    tampered[at] = b'b';
    std::fs::write(tmp.path().join("tampered"), &tampered).unwrap();
    assert!(!openssl_verify(
        &public,
        &sig_path,
        &tmp.path().join("tampered")
    ));
    let (k2, p2) = (tmp.path().join("2.key"), tmp.path().join("2.pub"));
    ok(cargo_oci(tmp.path(), &["keygen", "--key"])
        .arg(&k2)
        .arg("--pub")
        .arg(&p2));
    assert!(!openssl_verify(&p2, &sig_path, &payload_path));
}

#[test]
fn bad_keys_are_refused_before_anything_is_pushed() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    if tool("skopeo").is_none() || tool("openssl").is_none() {
        return;
    }
    let _ = built("http-hello");
    let tmp = tempfile::tempdir().unwrap();
    let encrypted = tmp.path().join("enc.key");
    ok(Command::new("sh").arg("-c").arg(format!(
        "openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -v2 aes-256-cbc -passout pass:pw -out {}",
        encrypted.display()
    )));
    let rsa = tmp.path().join("rsa.key");
    ok(Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:1024",
            "-out",
        ])
        .arg(&rsa));
    let p384 = tmp.path().join("p384.key");
    ok(Command::new("sh").arg("-c").arg(format!(
        "openssl ecparam -name secp384r1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out {}",
        p384.display()
    )));
    let dest = format!("{}/team/unsigned", reg.addr);
    for (key, says) in [
        (tmp.path().join("missing.key"), "cannot read the key"),
        (encrypted, "encrypted key"),
        (rsa, "not an ECDSA P-256 private key"),
        (p384, "not an ECDSA P-256 private key"),
    ] {
        let o = run(push(&example("http-hello"), &dest, &["--sign"]).arg(&key));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{}: {err}", key.display());
        assert!(err.contains(says), "{}: {err}", key.display());
        assert!(err.contains("help:"), "{err}");
        assert!(!err.contains("Pushing"), "nothing was pushed: {err}");
    }
    // The repository got nothing: no tag, no signature.
    let o = run(Command::new("skopeo")
        .args(["list-tags", "--tls-verify=false"])
        .arg(format!("docker://{dest}")));
    let listed = String::from_utf8_lossy(&o.stdout);
    assert!(
        !o.status.success() || !listed.contains("\"latest\""),
        "{listed}"
    );
    // Through the environment, the same key setting.
    let o = run(push(&example("http-hello"), &dest, &[])
        .env("CARGO_OCI_SIGN_KEY", tmp.path().join("missing.key")));
    assert_eq!(o.status.code(), Some(2));
}

/// Every signature the registry at `addr` serves for `subject` in `repo` (under
/// `sha256-<hex>.sig`): each payload and its DER signature, in the manifest's order.
fn served_signatures(addr: &str, repo: &str, subject: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let get = |path: &str, accept: &str| {
        let (status, _, body) = http(addr, "GET", path, &[("Accept", accept)]).expect("an answer");
        assert_eq!(
            status,
            200,
            "GET {path}: {}",
            String::from_utf8_lossy(&body)
        );
        body
    };
    let tag = format!("sha256-{}.sig", subject.trim_start_matches("sha256:"));
    let manifest: serde_json::Value = serde_json::from_slice(&get(
        &format!("/v2/{repo}/manifests/{tag}"),
        "application/vnd.oci.image.manifest.v1+json",
    ))
    .expect("the signature manifest is JSON");
    let config: serde_json::Value = serde_json::from_slice(&get(
        &format!(
            "/v2/{repo}/blobs/{}",
            manifest["config"]["digest"].as_str().expect("config")
        ),
        "*/*",
    ))
    .expect("the config is JSON");
    let layers = manifest["layers"].as_array().expect("layers");
    // cosign's config names each payload as a diff.
    let diff_ids: Vec<&serde_json::Value> = layers.iter().map(|l| &l["digest"]).collect();
    assert_eq!(
        config["rootfs"]["diff_ids"]
            .as_array()
            .expect("diff_ids")
            .iter()
            .collect::<Vec<_>>(),
        diff_ids,
        "{config}"
    );
    layers
        .iter()
        .map(|l| {
            assert_eq!(
                l["mediaType"],
                "application/vnd.dev.cosign.simplesigning.v1+json"
            );
            let payload = get(
                &format!("/v2/{repo}/blobs/{}", l["digest"].as_str().expect("digest")),
                "*/*",
            );
            let sig = decode(
                l["annotations"]["dev.cosignproject.cosign/signature"]
                    .as_str()
                    .expect("signature annotation"),
            );
            (payload, sig)
        })
        .collect()
}

/// Whether `public` verifies `sig` over `payload` (openssl, through files in `dir`).
fn verifies(dir: &Path, public: &Path, payload: &[u8], sig: &[u8]) -> bool {
    let name = unique("v");
    let (p, s) = (
        dir.join(format!("{name}.payload")),
        dir.join(format!("{name}.sig")),
    );
    std::fs::write(&p, payload).unwrap();
    std::fs::write(&s, sig).unwrap();
    openssl_verify(public, &s, &p)
}

fn keygen(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (key, public) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    );
    ok(cargo_oci(dir, &["keygen", "--key"])
        .arg(&key)
        .arg("--pub")
        .arg(&public));
    (key, public)
}

/// The signed digest a payload names.
fn signed_digest(payload: &[u8]) -> String {
    let p: serde_json::Value = serde_json::from_slice(payload).expect("the payload is JSON");
    p["critical"]["image"]["docker-manifest-digest"]
        .as_str()
        .expect("docker-manifest-digest")
        .to_string()
}

#[test]
fn a_second_key_adds_its_signature_and_keeps_the_first() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    if tool("openssl").is_none() {
        return;
    }
    let b = built("http-hello");
    let tmp = tempfile::tempdir().unwrap();
    let (k1, p1) = keygen(tmp.path(), "one");
    let (k2, p2) = keygen(tmp.path(), "two");
    let repo = "team/twice";
    let dest = format!("{}/{repo}", reg.addr);
    for key in [&k1, &k2, &k1] {
        let out = ok(push(
            &example("http-hello"),
            &dest,
            &["--message-format", "json", "--no-attach-sbom", "--sign"],
        )
        .arg(key));
        let j = results(&out).remove(0);
        let own = &j["signatures"][0];
        assert_eq!(own["subject"], b.digest.as_str(), "{j}");
        assert_eq!(j["signature"], own["tag"], "{j}");
    }
    // Two signatures (the repeat with the first key added none), each verified by its own key.
    let sigs = served_signatures(&reg.addr, repo, &b.digest);
    assert_eq!(sigs.len(), 2, "one layer per signature");
    for ((payload, sig), (public, other)) in sigs.iter().zip([(&p1, &p2), (&p2, &p1)]) {
        assert_eq!(signed_digest(payload), b.digest);
        assert!(
            verifies(tmp.path(), public, payload, sig),
            "its key verifies it"
        );
        assert!(
            !verifies(tmp.path(), other, payload, sig),
            "the other key does not"
        );
    }
}

#[test]
fn a_signed_two_platform_push_signs_the_index_and_each_platform() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    if tool("openssl").is_none() || tool("aarch64-linux-gnu-gcc").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = keygen(tmp.path(), "multi");
    let (_, other) = keygen(tmp.path(), "other");
    let repo = "multi/signed";
    let dest = format!("{}/{repo}", reg.addr);
    let mut c = cargo_oci(
        &example("tls-zlib"),
        &[
            "push",
            "--release",
            "--platform",
            "linux/amd64,linux/arm64",
            "--to",
            &dest,
            "--message-format",
            "json",
            "--sign",
        ],
    );
    c.arg(&key).stdin(Stdio::null());
    let j = results(&ok(c)).remove(0);
    let index = j["digest"].as_str().expect("digest").to_string();
    let platforms: Vec<String> = j["platforms"]
        .as_array()
        .expect("platforms")
        .iter()
        .map(|p| p["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(platforms.len(), 2, "{j}");
    assert_eq!(
        j["signature"],
        format!("sha256-{}.sig", index.trim_start_matches("sha256:")),
        "{j}"
    );
    let listed: Vec<&str> = j["signatures"]
        .as_array()
        .expect("signatures")
        .iter()
        .map(|s| s["subject"].as_str().unwrap())
        .collect();
    for subject in std::iter::once(&index).chain(&platforms) {
        assert!(listed.contains(&subject.as_str()), "{subject}: {j}");
        let sigs = served_signatures(&reg.addr, repo, subject);
        assert_eq!(sigs.len(), 1, "{subject}");
        let (payload, sig) = &sigs[0];
        assert_eq!(&signed_digest(payload), subject);
        assert!(verifies(tmp.path(), &public, payload, sig), "{subject}");
        assert!(!verifies(tmp.path(), &other, payload, sig), "{subject}");
    }
    // Each attached SBOM artifact is signed too, by the same key.
    let attached = j["attached"].as_array().expect("attached");
    assert!(!attached.is_empty(), "{j}");
    for a in attached {
        let digest = a["digest"].as_str().expect("artifact digest");
        assert_eq!(a["signature"]["subject"], digest, "{a}");
        let sigs = served_signatures(&reg.addr, repo, digest);
        assert_eq!(sigs.len(), 1, "{a}");
        assert_eq!(signed_digest(&sigs[0].0), digest);
        assert!(verifies(tmp.path(), &public, &sigs[0].0, &sigs[0].1), "{a}");
    }
}

#[test]
fn the_metadata_names_the_key_and_sign_takes_precedence() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    if tool("openssl").is_none() || tool("skopeo").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("app");
    copy_example("http-hello", &dir);
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    let (meta_key, meta_pub) = keygen(&dir.join("keys"), "meta");
    let (flag_key, flag_pub) = keygen(tmp.path(), "flag");
    let manifest = dir.join("Cargo.toml");
    let toml = std::fs::read_to_string(&manifest).unwrap();
    let with_key = |key: &str| {
        std::fs::write(
            &manifest,
            toml.replace(
                "[package.metadata.oci]\n",
                &format!("[package.metadata.oci]\nsign-key = \"{key}\"\n"),
            ),
        )
        .unwrap()
    };
    let push_here = |repo: &str, extra: &[&str]| {
        let dest = format!("{}/{repo}", reg.addr);
        let mut c = cargo_oci(
            &dir,
            &[
                "push",
                "--release",
                "--to",
                &dest,
                "--no-attach-sbom",
                "--message-format",
                "json",
            ],
        );
        c.args(extra)
            .stdin(Stdio::null())
            .env_remove("CARGO_OCI_SIGN_KEY");
        c
    };

    // The metadata's key, relative to the package directory.
    with_key("keys/meta.key");
    let j = results(&ok(push_here("meta/signed", &[]))).remove(0);
    let digest = j["digest"].as_str().unwrap().to_string();
    let sigs = served_signatures(&reg.addr, "meta/signed", &digest);
    assert_eq!(sigs.len(), 1);
    assert!(verifies(tmp.path(), &meta_pub, &sigs[0].0, &sigs[0].1));

    // --sign, then CARGO_OCI_SIGN_KEY, win over it.
    let mut flagged = push_here("meta/flagged", &["--sign"]);
    flagged.arg(&flag_key);
    let mut from_env = push_here("meta/env", &[]);
    from_env.env("CARGO_OCI_SIGN_KEY", &flag_key);
    for (repo, cmd) in [("meta/flagged", flagged), ("meta/env", from_env)] {
        ok(cmd);
        let sigs = served_signatures(&reg.addr, repo, &digest);
        assert_eq!(sigs.len(), 1, "{repo}");
        assert!(
            verifies(tmp.path(), &flag_pub, &sigs[0].0, &sigs[0].1),
            "{repo}"
        );
        assert!(
            !verifies(tmp.path(), &meta_pub, &sigs[0].0, &sigs[0].1),
            "{repo}"
        );
    }

    // A missing or encrypted metadata key: exit 2 before anything is built or pushed.
    let encrypted = dir.join("keys/enc.key");
    ok(Command::new("sh").arg("-c").arg(format!(
        "openssl pkcs8 -topk8 -in {} -v2 aes-256-cbc -passout pass:pw -out {}",
        meta_key.display(),
        encrypted.display()
    )));
    for (key, says) in [
        ("keys/missing.key", "cannot read the key"),
        ("keys/enc.key", "encrypted key"),
    ] {
        with_key(key);
        let o = run(push_here("meta/refused", &[]));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{key}: {err}");
        assert!(
            err.contains("sign-key") && err.contains(says),
            "{key}: {err}"
        );
        assert!(err.contains("help:"), "{err}");
        assert!(
            !err.contains("Compiling") && !err.contains("Pushing"),
            "nothing built or pushed: {err}"
        );
    }
    let o = run(Command::new("skopeo")
        .args(["list-tags", "--tls-verify=false"])
        .arg(format!("docker://{}/meta/refused", reg.addr)));
    assert!(!o.status.success(), "the repository got nothing");
}

#[test]
fn a_signed_push_with_its_sbom_asks_for_credentials_once_and_lists_what_it_attached() {
    let Some(reg) = Registry::start(Some(("ann", "s3cret-pw"))) else {
        return;
    };
    let b = built("http-hello");
    let home = tempfile::tempdir().unwrap();
    let (key, _) = keygen(home.path(), "k");
    let docker = home.path().join(".docker");
    let bin = home.path().join("bin");
    std::fs::create_dir_all(&docker).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    let log = home.path().join("helper.log");
    write_script(
        &bin.join("docker-credential-cargooci-once"),
        &format!(
            "#!/bin/sh\nread server\necho \"$1 $server\" >> {}\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"ann\",\"Secret\":\"s3cret-pw\"}}' \"$server\"\n",
            log.display()
        ),
    );
    std::fs::write(
        docker.join("config.json"),
        format!(r#"{{"credHelpers": {{"{}": "cargooci-once"}}}}"#, reg.addr),
    )
    .unwrap();
    let dest = format!("{}/team/once", reg.addr);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = ok(push(
        &example("http-hello"),
        &dest,
        &["--message-format", "json", "--sign"],
    )
    .arg(&key)
    .env("HOME", home.path())
    .env("DOCKER_CONFIG", &docker)
    .env_remove("REGISTRY_AUTH_FILE")
    .env_remove("CARGO_OCI_REGISTRY_USER")
    .env_remove("CARGO_OCI_REGISTRY_PASSWORD")
    .env("PATH", path));
    // One credential look-up for the image, its signature, its SBOM and the SBOM's signature.
    let asked = std::fs::read_to_string(&log).expect("the helper was run");
    assert_eq!(asked.trim(), format!("get {}", reg.addr), "{asked}");
    let j = results(&out).remove(0);
    let hex = b.digest.trim_start_matches("sha256:");
    let attached = j["attached"].as_array().expect("attached");
    assert_eq!(attached.len(), 1, "{j}");
    let a = &attached[0];
    assert_eq!(a["subject"], b.digest.as_str(), "{a}");
    assert_eq!(a["artifact_type"], "application/spdx+json", "{a}");
    assert_eq!(a["fallback_tag"], format!("sha256-{hex}"), "{a}");
    let artifact = a["digest"].as_str().expect("digest");
    assert_eq!(
        a["signature"]["tag"],
        format!("sha256-{}.sig", artifact.trim_start_matches("sha256:")),
        "{a}"
    );
    let signatures: Vec<&str> = j["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["subject"].as_str().unwrap())
        .collect();
    assert_eq!(signatures, [b.digest.as_str()], "{j}");
    assert!(j["signatures"][0]["digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
}
