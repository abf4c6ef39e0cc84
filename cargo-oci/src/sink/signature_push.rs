//! Pushing a signature: the manifest a push put in place is signed, and the signature joins the
//! manifest tagged `sha256-<hex>.sig` in its repository (made when there is none), keeping every
//! signature already there, as cosign does. Signing again with the same key changes nothing.
//! The small blobs of signatures and attached artifacts go up through [`upload_missing`] (or
//! [`upload_all`], when they are known to be missing), each at once.

use anyhow::{Context, Result};
use serde::Serialize;

use crate::oci::digest::Digest;
use crate::oci::reference::ImageName;
use crate::oci::store::Store;
use crate::registry::{BlobFile, Client};
use crate::sink::push_ahead::at_once;
use crate::sink::sign::{self, SignKey};
use crate::util::reporter::Reporter;

const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// What a signature manifest may have been written as (cosign writes either).
const SIGNATURE_ACCEPT: &str =
    "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// A signature pushed for a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Signed {
    /// The digest of the manifest (or index, or attached artifact) signed.
    pub subject: Digest,
    /// The tag of its signatures: `sha256-<hex>.sig`.
    pub tag: String,
    /// The digest of the signature manifest the tag names now.
    pub digest: Digest,
    /// How many signatures it holds (ours and those that were there).
    pub signatures: usize,
}

/// Signs `subject`, a manifest in `name`'s repository, with `key`, and pushes the signature.
pub fn push_signature(
    store: &Store,
    client: &Client,
    name: &ImageName,
    subject: &Digest,
    key: &SignKey,
    chunk_size: u64,
    report: &Reporter,
) -> Result<Signed> {
    let repo = name.repository.as_str();
    let failed = || {
        format!("{name}@{subject} is pushed, but its signature could not be; run the push again")
    };
    let reference = format!("{}/{}", name.registry, name.repository);
    let payload = sign::payload(&reference, subject)?;
    let signature = key.sign(&payload);
    let payload = store.put(&payload)?;
    let tag = sign::signature_tag(subject);
    let existing = client
        .get_manifest_ref(repo, &tag, SIGNATURE_ACCEPT)
        .with_context(|| format!("the signatures under `{tag}` could not be read"))
        .with_context(failed)?;
    let ours = sign::layer((&payload.digest, payload.size), &signature);
    let layers = match sign::append(existing.as_deref(), ours)
        .with_context(|| format!("{name}:{tag} is not a signature manifest"))
        .with_context(failed)?
    {
        Some(layers) => layers,
        None => {
            let existing = existing.unwrap_or_default();
            let signatures = serde_json::from_slice::<serde_json::Value>(&existing)
                .ok()
                .and_then(|m| m["layers"].as_array().map(Vec::len))
                .unwrap_or(1);
            report.status(
                "Signed",
                &format!(
                    "{name}@{subject}: `{tag}` holds this signature already (key {})",
                    key.source
                ),
            );
            return Ok(Signed {
                subject: subject.clone(),
                tag,
                digest: Digest::of(&existing),
                signatures,
            });
        }
    };
    let diff_ids: Vec<&str> = layers.iter().filter_map(|l| l["digest"].as_str()).collect();
    let config = store.put(&sign::config(&diff_ids)?)?;
    upload_missing(client, repo, store, &[&payload, &config], chunk_size).with_context(failed)?;
    let manifest_bytes = sign::manifest((&config.digest, config.size), &layers)?;
    let manifest = store.put(&manifest_bytes)?;
    client
        .put_manifest(
            repo,
            &tag,
            MANIFEST_MEDIA_TYPE,
            &manifest_bytes,
            &manifest.digest,
        )
        .with_context(failed)?;
    let kept = layers.len() - 1;
    report.status(
        "Signed",
        &format!(
            "{name}@{subject} ({tag}, key {}{})",
            key.source,
            if kept > 0 {
                format!("; {kept} earlier signature(s) kept")
            } else {
                String::new()
            }
        ),
    );
    Ok(Signed {
        subject: subject.clone(),
        tag,
        digest: manifest.digest.clone(),
        signatures: layers.len(),
    })
}

/// Uploads the small blobs of `store` that `repo` does not hold yet (a signature's or an
/// attached artifact's payload and config): asked about, then sent, each at once.
pub fn upload_missing(
    client: &Client,
    repo: &str,
    store: &Store,
    blobs: &[&crate::oci::store::Blob],
    chunk_size: u64,
) -> Result<()> {
    let sizes = at_once(blobs, |b| client.blob_size(repo, &b.digest));
    let mut missing = Vec::new();
    for (b, size) in blobs.iter().zip(sizes) {
        if size? != Some(b.size) {
            missing.push(*b);
        }
    }
    upload_all(client, repo, store, &missing, chunk_size)
}

/// Uploads blobs of `store` to `repo`, all at once.
pub fn upload_all(
    client: &Client,
    repo: &str,
    store: &Store,
    blobs: &[&crate::oci::store::Blob],
    chunk_size: u64,
) -> Result<()> {
    let sent = std::sync::atomic::AtomicU64::new(0);
    let done = at_once(blobs, |b| {
        let file = BlobFile {
            digest: b.digest.clone(),
            size: b.size,
            path: store.path(&b.digest),
        };
        client.upload(repo, &file, None, chunk_size, &sent)
    });
    done.into_iter().try_for_each(|r| r.map(|_| ()))
}
