//! Artifacts attached to pushed images, as OCI 1.1 referrers: each (an SBOM) is pushed as an
//! artifact manifest (`artifactType` = its media type, the empty config, one layer = its bytes,
//! `subject` = the image). A registry that indexes referrers itself (it answers the referrers API,
//! or sends `OCI-Subject` when the manifest is put) needs nothing more; for one that does not,
//! the fallback tag `sha256-<hex>` is kept as an index of the image's referrers: the artifact's
//! descriptor is added, the entries already there are kept, and a second push adds no duplicate.
//! With `--sign`, each artifact manifest is signed too. A pushed index takes artifacts as its
//! platform images do.
//!
//! The artifact manifest's digest is known before anything is sent: what the registry already
//! has (the manifest, its blobs, the referrers list) is asked at once, or taken from what the
//! push learnt ahead, and an artifact already there and listed costs no request more.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::oci::digest::Digest;
use crate::oci::image::Image;
use crate::oci::index::INDEX_MEDIA_TYPE;
use crate::oci::reference::ImageName;
use crate::oci::store::Store;
use crate::registry::Client;
use crate::sink::push::{self, Attached, PushRequest, Pushed};
use crate::sink::push_ahead::{at_once, Answers, Listing};
use crate::sink::signature_push::{push_signature, upload_all};

pub use crate::sink::push_ahead::fallback_tag;
use crate::util::reporter::Reporter;

const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The empty descriptor's media type, and its content: `{}`.
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY: &[u8] = b"{}";
/// The annotation naming the artifact's file.
const TITLE: &str = "org.opencontainers.image.title";

/// Something to attach to an image: an SBOM.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The manifest digest of the image it describes.
    pub subject: Digest,
    /// Its media type (`application/spdx+json`, ...): the artifact type and the layer's.
    pub media_type: String,
    /// A file name for it (the `org.opencontainers.image.title` annotation).
    pub title: String,
    pub bytes: Vec<u8>,
}

/// A manifest or index an artifact can be attached to.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub digest: &'a Digest,
    pub size: u64,
    pub media_type: &'a str,
}

/// Attaches each artifact to the pushed image it describes (an image of `pushed`, a pushed index,
/// or a platform image of one), through the connection its push used; artifacts for images not
/// pushed here are left alone. What is attached is recorded in each [`Pushed`].
pub fn attach_all(
    store: &Store,
    pushed: &mut [Pushed],
    artifacts: &[Artifact],
    req: &PushRequest,
    report: &Reporter,
) -> Result<()> {
    for p in pushed {
        let mut subjects: Vec<Subject> = Vec::new();
        if let Some(index) = &p.index {
            subjects.push(Subject {
                digest: &index.blob.digest,
                size: index.blob.size,
                media_type: INDEX_MEDIA_TYPE,
            });
        }
        let images: Vec<&Image> = match &p.index {
            Some(index) => index.images.iter().collect(),
            None => vec![&p.image],
        };
        subjects.extend(images.iter().map(|i| Subject {
            digest: &i.manifest.digest,
            size: i.manifest.size,
            media_type: MANIFEST_MEDIA_TYPE,
        }));
        let client = &*p.client.0;
        let mut attached = Vec::new();
        let mut answers = p.answers.clone();
        for subject in subjects {
            for artifact in artifacts.iter().filter(|a| a.subject == *subject.digest) {
                let at = (&p.name, subject);
                let done = attach(store, client, at, artifact, req, &answers, report)
                    .with_context(|| {
                        format!(
                            "{}@{} is pushed with its tags, but its {} could not be attached; run the push again",
                            p.name, subject.digest, artifact.media_type
                        )
                    })?;
                // What was listed before is not the list any more.
                answers.referrers.remove(subject.digest);
                attached.push(done);
            }
        }
        p.attached.extend(attached);
    }
    Ok(())
}

/// Pushes `image` to `name` and attaches its artifacts: the first is got ready (its blobs sent,
/// the referrers list read) while the image is sent, and attached once the image, its tags and
/// its signature are in place; any other, after it.
pub fn push_attached(
    store: &Store,
    image: &Image,
    name: &ImageName,
    req: &PushRequest,
    artifacts: &[Artifact],
    report: &Reporter,
) -> Result<Pushed> {
    let opened = push::open(store, image, name, req, &req.cache_dir, report)?;
    let client = opened.client.clone();
    let mut answers = opened.answers.clone();
    let subject = Subject {
        digest: &image.manifest.digest,
        size: image.manifest.size,
        media_type: MANIFEST_MEDIA_TYPE,
    };
    let at = (name, subject);
    let mine: Vec<&Artifact> = artifacts
        .iter()
        .filter(|a| a.subject == image.manifest.digest)
        .collect();
    let (pushed, mut ready) = std::thread::scope(|s| {
        let first = mine.first().map(|a| {
            let answers = &answers;
            let client = &*client;
            s.spawn(move || prepare(store, client, at, a, req.chunk_size, answers))
        });
        let pushed = push::push_opened(store, image, name, req, opened, report);
        (pushed, first.map(|t| t.join()))
    });
    let mut pushed = pushed?;
    for (i, artifact) in mine.iter().enumerate() {
        let failed = || {
            format!(
                "{name}@{} is pushed with its tags, but its {} could not be attached; run the push again",
                subject.digest, artifact.media_type
            )
        };
        let done = match (i, &ready) {
            (0, Some(_)) => match ready.take() {
                Some(Ok(r)) => r.and_then(|r| finish(store, &client, at, artifact, r, req, report)),
                _ => Err(anyhow!("the thread attaching it panicked")),
            },
            _ => attach(store, &client, at, artifact, req, &answers, report),
        }
        .with_context(failed)?;
        // What was listed before is not the list any more.
        answers.referrers.remove(subject.digest);
        pushed.attached.push(done);
    }
    Ok(pushed)
}

/// The artifact manifest of `artifact` for `subject`, with `config` (the empty blob) and `layer`
/// (the artifact's blob) as stored.
pub fn manifest(
    artifact: &Artifact,
    subject: Subject,
    config: (&Digest, u64),
    layer: (&Digest, u64),
) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": artifact.media_type,
        "config": {
            "mediaType": EMPTY_MEDIA_TYPE,
            "digest": config.0.as_str(),
            "size": config.1,
            "data": "e30=",
        },
        "layers": [{
            "mediaType": artifact.media_type,
            "digest": layer.0.as_str(),
            "size": layer.1,
            "annotations": { TITLE: artifact.title },
        }],
        "subject": {
            "mediaType": subject.media_type,
            "digest": subject.digest.as_str(),
            "size": subject.size,
        },
        "annotations": { TITLE: artifact.title },
    }))?)
}

/// An artifact got ready to attach: its manifest, its blobs in the repository, what the
/// registry lists for the subject.
pub struct Ready {
    digest: Digest,
    size: u64,
    bytes: Vec<u8>,
    /// The artifact manifest is in the repository already.
    present: bool,
    listing: Option<Listing>,
}

fn attach(
    store: &Store,
    client: &Client,
    at: (&ImageName, Subject),
    artifact: &Artifact,
    req: &PushRequest,
    answers: &Answers,
    report: &Reporter,
) -> Result<Attached> {
    let ready = prepare(store, client, at, artifact, req.chunk_size, answers)?;
    finish(store, client, at, artifact, ready, req, report)
}

/// Gets `artifact` ready to attach to `subject`, which need not be in the repository yet: its
/// blobs are uploaded and the referrers list read, asking only what `answers` does not say.
pub fn prepare(
    store: &Store,
    client: &Client,
    (name, subject): (&ImageName, Subject),
    artifact: &Artifact,
    chunk_size: u64,
    answers: &Answers,
) -> Result<Ready> {
    let repo = name.repository.as_str();
    let config = store.put(EMPTY)?;
    let layer = store.put(&artifact.bytes)?;
    let bytes = manifest(
        artifact,
        subject,
        (&config.digest, config.size),
        (&layer.digest, layer.size),
    )?;
    let stored = store.put(&bytes)?;
    let digest = &stored.digest;
    let mut listing = answers.referrers.get(subject.digest).cloned();
    // The referrers API lists only manifests that are there.
    let mut present = answers.present.contains(digest)
        || matches!(&listing, Some(l @ Listing::Api(_)) if l.names(digest));
    // What is not known yet, asked at once: the artifact manifest, its blobs, the referrers API.
    let mut missing = Vec::new();
    if !present || listing.is_none() {
        enum Ask<'a> {
            Manifest,
            Blob(&'a crate::oci::store::Blob),
            Referrers,
        }
        let mut asks = Vec::new();
        if !present {
            asks.extend([Ask::Manifest, Ask::Blob(&config), Ask::Blob(&layer)]);
        }
        if listing.is_none() {
            asks.push(Ask::Referrers);
        }
        let got = at_once(&asks, |a| match a {
            Ask::Manifest => client
                .manifest_digest(repo, digest.as_str(), MANIFEST_MEDIA_TYPE)
                .map(|d| Answer::Here(d.as_ref() == Some(digest))),
            Ask::Blob(b) => client
                .blob_size(repo, &b.digest)
                .map(|n| Answer::Here(n == Some(b.size))),
            Ask::Referrers => client
                .referrers(repo, subject.digest)
                .context("the registry's referrers API could not be asked")
                .map(Answer::Referrers),
        });
        for (a, r) in asks.iter().zip(got) {
            match (a, r?) {
                (Ask::Manifest, Answer::Here(here)) => present = here,
                (Ask::Blob(b), Answer::Here(false)) => missing.push(*b),
                (_, Answer::Referrers(Some(index))) => listing = Some(Listing::Api(index)),
                (_, Answer::Referrers(None)) => listing = Some(Listing::Fallback(None)),
                _ => {}
            }
        }
        // No referrers API: the fallback tag's list is read while the blobs go up.
        let tag = fallback_tag(subject.digest);
        let read_fallback = matches!(listing, Some(Listing::Fallback(None)));
        let (sent, existing) = std::thread::scope(|s| {
            let existing = read_fallback.then(|| {
                s.spawn(|| {
                    client
                        .get_manifest_ref(repo, &tag, INDEX_MEDIA_TYPE)
                        .with_context(|| format!("the fallback tag `{tag}` could not be read"))
                })
            });
            let sent = match present {
                true => Ok(()),
                false => upload_all(client, repo, store, &missing, chunk_size),
            };
            (sent, existing.map(|t| t.join()))
        });
        sent?;
        match existing {
            Some(Ok(existing)) => listing = Some(Listing::Fallback(existing?)),
            Some(Err(_)) => bail!("reading the fallback tag `{tag}` failed"),
            None => {}
        }
    }
    Ok(Ready {
        digest: digest.clone(),
        size: stored.size,
        bytes,
        present,
        listing,
    })
}

/// Attaches a [`prepare`]d artifact to `subject`, now in the repository: the artifact manifest
/// unless there, the fallback tag when the registry keeps no referrers list, the signature.
pub fn finish(
    store: &Store,
    client: &Client,
    (name, subject): (&ImageName, Subject),
    artifact: &Artifact,
    ready: Ready,
    req: &PushRequest,
    report: &Reporter,
) -> Result<Attached> {
    let repo = name.repository.as_str();
    let Ready {
        digest,
        size,
        bytes,
        present,
        listing,
    } = ready;
    let digest = &digest;
    let answered = match present {
        true => None,
        false => client
            .put_manifest_subject(repo, digest.as_str(), MANIFEST_MEDIA_TYPE, &bytes, digest)
            .context("the artifact manifest was not pushed")?,
    };
    let shown = format!(
        "{} to {name}@{} ({digest})",
        artifact.media_type, subject.digest
    );
    let fallback_tag = match (answered, listing) {
        (Some(_), _) => {
            report.status("Attached", &format!("{shown}; the registry indexes it"));
            None
        }
        (None, Some(Listing::Api(_))) => {
            report.status(
                "Attached",
                &format!("{shown}; the registry's referrers API lists it"),
            );
            None
        }
        (None, Some(Listing::Fallback(existing))) => {
            let tag = fallback_tag(subject.digest);
            let descriptor = json!({
                "mediaType": MANIFEST_MEDIA_TYPE,
                "digest": digest.as_str(),
                "size": size,
                "artifactType": artifact.media_type,
                "annotations": { TITLE: artifact.title },
            });
            match add_referrer(existing.as_deref(), descriptor)
                .with_context(|| format!("{name}:{tag} is not an index of referrers"))?
            {
                None => report.status("Attached", &format!("{shown}; `{tag}` lists it already")),
                Some(index) => {
                    let index_digest = Digest::of(&index);
                    client
                        .put_manifest(repo, &tag, INDEX_MEDIA_TYPE, &index, &index_digest)
                        .with_context(|| {
                            format!(
                                "the artifact is pushed, but the fallback tag `{tag}` was not updated"
                            )
                        })?;
                    report.status("Attached", &format!("{shown}; listed under `{tag}`"));
                }
            }
            Some(tag)
        }
        (None, None) => bail!("the registry's referrers could not be listed"),
    };
    // The artifact in place and listed: its signature, with `--sign`.
    let signature = req
        .sign
        .as_ref()
        .map(|key| push_signature(store, client, name, digest, key, req.chunk_size, report))
        .transpose()?;
    Ok(Attached {
        subject: subject.digest.clone(),
        artifact_type: artifact.media_type.clone(),
        digest: digest.clone(),
        fallback_tag,
        signature,
    })
}

/// An answer of the registry about an artifact.
enum Answer {
    /// Whether the manifest or blob asked about is there.
    Here(bool),
    /// The referrers API's index, if it has one.
    Referrers(Option<Vec<u8>>),
}

/// The referrers index with `descriptor` added to `existing` (none: a new index); `None` when
/// it lists that digest already. Every other entry, and the index's other fields, are kept.
pub fn add_referrer(existing: Option<&[u8]>, descriptor: Value) -> Result<Option<Vec<u8>>> {
    let mut index: Value = match existing {
        None => json!({
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": [],
        }),
        Some(bytes) => serde_json::from_slice(bytes).map_err(|e| anyhow!("not JSON: {e}"))?,
    };
    if index.get("mediaType").and_then(Value::as_str) != Some(INDEX_MEDIA_TYPE) {
        bail!("its mediaType is not {INDEX_MEDIA_TYPE}");
    }
    let manifests = match index.get_mut("manifests") {
        Some(Value::Array(m)) => m,
        Some(_) => bail!("its `manifests` is not a list"),
        None => {
            index["manifests"] = json!([]);
            match index.get_mut("manifests") {
                Some(Value::Array(m)) => m,
                _ => bail!("its `manifests` is not a list"),
            }
        }
    };
    if manifests
        .iter()
        .any(|m| m.get("digest") == descriptor.get("digest"))
    {
        return Ok(None);
    }
    manifests.push(descriptor);
    Ok(Some(serde_json::to_vec(&index)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(n: &str) -> Value {
        json!({ "mediaType": MANIFEST_MEDIA_TYPE, "digest": Digest::of(n.as_bytes()).as_str(),
                "size": 1, "artifactType": "application/spdx+json" })
    }

    #[test]
    fn the_fallback_index_keeps_its_entries_and_takes_no_duplicate() {
        let first = add_referrer(None, descriptor("a")).unwrap().unwrap();
        let second = add_referrer(Some(&first), descriptor("b"))
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_slice(&second).unwrap();
        assert_eq!(v["manifests"].as_array().unwrap().len(), 2);
        assert_eq!(v["manifests"][0], descriptor("a"));
        assert_eq!(v["manifests"][1], descriptor("b"));
        assert!(add_referrer(Some(&second), descriptor("a"))
            .unwrap()
            .is_none());
        let image =
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;
        assert!(add_referrer(Some(image), descriptor("c")).is_err());
    }

    #[test]
    fn the_empty_descriptor_is_the_digest_of_braces() {
        assert_eq!(
            Digest::of(EMPTY).as_str(),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }
}
