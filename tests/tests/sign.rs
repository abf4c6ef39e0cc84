//! `push --sign`: signatures in cosign's format, checked with openssl alone from what the registry
//! serves (the `sha256-<hex>.sig` manifest copied out by skopeo); a tampered payload or another
//! key fails; a bad key is refused before anything is pushed.

use std::path::Path;
use std::process::{Command, Stdio};

use base64_decode::decode;
use cargo_oci_tests::registry::Registry;
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
