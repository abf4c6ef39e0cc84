//! Signatures in cosign's format, made with an ECDSA P-256 key: the simple-signing payload
//! (naming the repository and the manifest digest) is the one layer of a manifest tagged
//! `sha256-<hex>.sig` in the image's repository, its base64 DER signature in the layer's
//! `dev.cosignproject.cosign/signature` annotation. Keys are PEM: PKCS#8 (`PRIVATE KEY`) or SEC1
//! (`EC PRIVATE KEY`), unencrypted; [`keygen`] makes a pair.

use std::path::Path;

use anyhow::Result;
use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::json;

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
    /// Reads a PEM private key file; refuses what is not an unencrypted ECDSA P-256 key.
    pub fn read(path: &Path) -> Result<SignKey, UsageError> {
        let shown = path.display();
        let text = std::fs::read_to_string(path).map_err(|e| {
            UsageError::new(format!("--sign: cannot read the key {shown}: {e}")).hint(KEY_HELP)
        })?;
        let label = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("-----BEGIN "))
            .and_then(|l| l.strip_suffix("-----"))
            .unwrap_or("");
        let key = match label {
            "PRIVATE KEY" => SigningKey::from_pkcs8_pem(&text).map_err(|e| {
                UsageError::new(format!(
                    "--sign: {shown} is not an ECDSA P-256 private key ({e})"
                ))
                .hint(KEY_HELP)
            })?,
            "EC PRIVATE KEY" => p256::SecretKey::from_sec1_pem(&text)
                .map(SigningKey::from)
                .map_err(|e| {
                    UsageError::new(format!(
                        "--sign: {shown} is not an ECDSA P-256 private key ({e})"
                    ))
                    .hint(KEY_HELP)
                })?,
            l if l.contains("ENCRYPTED") => {
                return Err(UsageError::new(format!(
                    "--sign: {shown} is an encrypted key ({l}); cargo-oci reads unencrypted keys only"
                ))
                .hint("decrypt it to an unencrypted PKCS#8 key kept private (e.g. `openssl pkcs8 -in KEY -out plain.key`), or make one with `cargo oci keygen`"))
            }
            "" => {
                return Err(UsageError::new(format!("--sign: {shown} holds no PEM key"))
                    .hint(KEY_HELP))
            }
            l => {
                return Err(UsageError::new(format!(
                    "--sign: {shown} holds a {l}, not an ECDSA P-256 private key"
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

/// The config blob of a signature manifest (what cosign writes: the payload as its one diff).
pub fn config(payload_digest: &Digest) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(&json!({
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{ "created": "0001-01-01T00:00:00Z" }],
        "os": "",
        "rootfs": { "type": "layers", "diff_ids": [payload_digest.as_str()] },
    }))?)
}

/// The signature manifest: the config, then the payload layer with its signature.
pub fn manifest(
    config: (&Digest, u64),
    payload: (&Digest, u64),
    signature: &str,
) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config.0.as_str(),
            "size": config.1,
        },
        "layers": [{
            "mediaType": PAYLOAD_MEDIA_TYPE,
            "digest": payload.0.as_str(),
            "size": payload.1,
            "annotations": { SIGNATURE_ANNOTATION: signature },
        }],
    }))?)
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
}
