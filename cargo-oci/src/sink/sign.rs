//! Signatures in cosign's format, made with an ECDSA P-256 key: the simple-signing payload
//! (naming the repository and the manifest digest) is a layer of the manifest tagged
//! `sha256-<hex>.sig` in the image's repository, its base64 DER signature in the layer's
//! `dev.cosignproject.cosign/signature` annotation; each further signature is one more layer.
//! Keys are PEM: PKCS#8 (`PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`), unencrypted; [`keygen`]
//! makes a pair.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::{json, Value};

use crate::oci::digest::Digest;
use crate::util::error::UsageError;

/// The media type of the signed payload layer.
pub const PAYLOAD_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The annotation holding the signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// A private signing key, read and checked before anything is built.
#[derive(Clone)]
pub struct SignKey {
    key: SigningKey,
    /// Where it was read from, for messages.
    pub source: String,
}

impl std::fmt::Debug for SignKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SignKey({})", self.source)
    }
}

const KEY_HELP: &str = "make a key pair with `cargo oci keygen`, or with openssl: \
`openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out cosign.key`";

impl SignKey {
    /// Reads a PEM private key file (`--sign`); refuses what is not an unencrypted ECDSA P-256
    /// key.
    pub fn read(path: &Path) -> Result<SignKey, UsageError> {
        SignKey::read_from(path, "--sign")
    }

    /// [`SignKey::read`], its messages naming `origin`, the setting that named the key.
    pub fn read_from(path: &Path, origin: &str) -> Result<SignKey, UsageError> {
        let shown = path.display();
        let text = std::fs::read_to_string(path).map_err(|e| {
            UsageError::new(format!("{origin}: cannot read the key {shown}: {e}")).hint(KEY_HELP)
        })?;
        let label = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("-----BEGIN "))
            .and_then(|l| l.strip_suffix("-----"))
            .unwrap_or("");
        let key = match label {
            "PRIVATE KEY" => SigningKey::from_pkcs8_pem(&text).map_err(|e| {
                UsageError::new(format!(
                    "{origin}: {shown} is not an ECDSA P-256 private key ({e})"
                ))
                .hint(KEY_HELP)
            })?,
            "EC PRIVATE KEY" => p256::SecretKey::from_sec1_pem(&text)
                .map(SigningKey::from)
                .map_err(|e| {
                    UsageError::new(format!(
                        "{origin}: {shown} is not an ECDSA P-256 private key ({e})"
                    ))
                    .hint(KEY_HELP)
                })?,
            l if l.contains("ENCRYPTED") => {
                return Err(UsageError::new(format!(
                    "{origin}: {shown} is an encrypted key ({l}); cargo-oci reads unencrypted keys only"
                ))
                .hint("decrypt it to an unencrypted PKCS#8 key kept private (e.g. `openssl pkcs8 -in KEY -out plain.key`), or make one with `cargo oci keygen`"))
            }
            "" => {
                return Err(UsageError::new(format!("{origin}: {shown} holds no PEM key"))
                    .hint(KEY_HELP))
            }
            l => {
                return Err(UsageError::new(format!(
                    "{origin}: {shown} holds a {l}, not an ECDSA P-256 private key"
                ))
                .hint(KEY_HELP))
            }
        };
        Ok(SignKey {
            key,
            source: path.display().to_string(),
        })
    }

    /// The base64 of the DER ECDSA-SHA256 signature of `payload`.
    pub fn sign(&self, payload: &[u8]) -> String {
        let sig: Signature = self.key.sign(payload);
        base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes())
    }
}

/// The simple-signing payload cosign signs for `repository@digest`.
pub fn payload(repository: &str, digest: &Digest) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(&json!({
        "critical": {
            "identity": { "docker-reference": repository },
            "image": { "docker-manifest-digest": digest.as_str() },
            "type": "cosign container image signature",
        },
        "optional": null,
    }))?)
}

/// The config blob of a signature manifest (what cosign writes: each payload as one diff).
pub fn config(payload_digests: &[&str]) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(&json!({
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": payload_digests.iter().map(|_| json!({ "created": "0001-01-01T00:00:00Z" })).collect::<Vec<_>>(),
        "os": "",
        "rootfs": { "type": "layers", "diff_ids": payload_digests },
    }))?)
}

/// The layer of one signature: the payload blob, its signature in the annotation.
pub fn layer(payload: (&Digest, u64), signature: &str) -> Value {
    json!({
        "mediaType": PAYLOAD_MEDIA_TYPE,
        "digest": payload.0.as_str(),
        "size": payload.1,
        "annotations": { SIGNATURE_ANNOTATION: signature },
    })
}

/// The signature manifest: the config, then one payload layer per signature.
pub fn manifest(config: (&Digest, u64), layers: &[Value]) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config.0.as_str(),
            "size": config.1,
        },
        "layers": layers,
    }))?)
}

/// The layers of the signature manifest `existing` (as the registry serves it; none: no
/// signature yet) with `ours` added after them, as cosign adds a signature; `None` when it holds
/// that signature of that payload already.
pub fn append(existing: Option<&[u8]>, ours: Value) -> Result<Option<Vec<Value>>> {
    let mut layers = match existing {
        None => Vec::new(),
        Some(bytes) => {
            let m: Value =
                serde_json::from_slice(bytes).map_err(|e| anyhow!("it is not JSON: {e}"))?;
            match m.get("layers") {
                Some(Value::Array(l)) => l.clone(),
                _ => bail!("it is not a manifest: it has no `layers` list"),
            }
        }
    };
    for l in &layers {
        if l.get("mediaType").and_then(Value::as_str) != Some(PAYLOAD_MEDIA_TYPE)
            || l.get("digest").and_then(Value::as_str).is_none()
        {
            bail!("a layer is not a signed payload ({PAYLOAD_MEDIA_TYPE}): {l}");
        }
    }
    let same = |l: &Value| {
        l.get("digest") == ours.get("digest")
            && l["annotations"].get(SIGNATURE_ANNOTATION)
                == ours["annotations"].get(SIGNATURE_ANNOTATION)
    };
    if layers.iter().any(same) {
        return Ok(None);
    }
    layers.push(ours);
    Ok(Some(layers))
}

/// The tag of the signature of `digest`: `sha256-<hex>.sig`.
pub fn signature_tag(digest: &Digest) -> String {
    format!("{}.sig", digest.as_str().replace(':', "-"))
}

/// Makes a key pair: the private key (PKCS#8 PEM, mode 0600) and the public key (SPKI PEM).
/// Refuses to replace an existing file.
pub fn keygen(private: &Path, public: &Path) -> Result<()> {
    for p in [private, public] {
        if p.exists() {
            return Err(UsageError::new(format!("{} exists already", p.display()))
                .hint("choose other paths with --key and --pub, or remove the old pair")
                .into());
        }
    }
    let key = SigningKey::random(&mut rand_core::OsRng);
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| anyhow::anyhow!("cannot encode the key: {e}"))?;
    let public_pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| anyhow::anyhow!("cannot encode the public key: {e}"))?;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(private)
        .map_err(|e| {
            UsageError::new(format!("cannot write {}: {e}", private.display()))
                .hint("choose a writable path with --key")
        })?;
    f.write_all(pem.as_bytes())?;
    crate::util::fs::write_atomic(public, |w| Ok(w.write_all(public_pem.as_bytes())?))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Verifier as _;

    #[test]
    fn a_generated_key_signs_what_its_public_key_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let (k, p) = (dir.path().join("k"), dir.path().join("p"));
        keygen(&k, &p).unwrap();
        assert!(keygen(&k, &p).is_err(), "an existing pair is kept");
        let key = SignKey::read(&k).unwrap();
        let sig = key.sign(b"payload");
        let der = base64::engine::general_purpose::STANDARD
            .decode(sig)
            .unwrap();
        let sig = Signature::from_der(&der).unwrap();
        let public = key.key.verifying_key();
        assert!(public.verify(b"payload", &sig).is_ok());
        assert!(public.verify(b"payloaD", &sig).is_err());
        std::fs::write(
            &k,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap();
        assert!(SignKey::read(&k)
            .unwrap_err()
            .to_string()
            .contains("encrypted"));
    }

    #[test]
    fn a_second_signature_joins_the_first_and_a_repeat_adds_nothing() {
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        let first = append(None, layer((&a, 1), "c2lnMQ==")).unwrap().unwrap();
        let bytes = manifest((&Digest::of(b"c"), 1), &first).unwrap();
        assert!(append(Some(&bytes), layer((&a, 1), "c2lnMQ=="))
            .unwrap()
            .is_none());
        let both = append(Some(&bytes), layer((&b, 1), "c2lnMg=="))
            .unwrap()
            .unwrap();
        assert_eq!(both.len(), 2);
        assert_eq!(both[0], first[0]);
        // The same payload signed by another key is another signature.
        let other = append(Some(&bytes), layer((&a, 1), "c2lnMw=="))
            .unwrap()
            .unwrap();
        assert_eq!(other.len(), 2);
        let image = br#"{"schemaVersion":2,"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:00"}]}"#;
        assert!(append(Some(image), layer((&a, 1), "x")).is_err());
        assert!(append(Some(b"{}"), layer((&a, 1), "x")).is_err());
    }
}
