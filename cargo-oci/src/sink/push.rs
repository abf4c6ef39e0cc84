//! The registry sink of `cargo oci push`: sends built images from the blob store to their
//! registry: blobs first (skipped when present, mounted from another repository of the same
//! registry when known there, else uploaded, a few at a time: [`super::push_blobs`]), then the
//! manifest by digest, and only then the tags, all at once. A push that fails before the
//! manifest leaves every tag where it was.
//!
//! The conversation starts while the build runs ([`super::push_ahead`]): after the build, a push
//! asks only what those answers do not say, all at once: a repeat push whose tags already name
//! its manifest sends nothing. The registry protocol lives in [`crate::registry`]; this module
//! decides what to send.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::oci::digest::Digest;
use crate::oci::image::Image;
use crate::oci::reference::ImageName;
use crate::oci::store::Store;
use crate::registry::auth::{self, Credential};
use crate::registry::{Client, ClientOptions};
use crate::sink::push_ahead::{at_once, connect, Ahead, Answers};
use crate::sink::push_blobs::{self, KnownBlobs, Sending};
use crate::sink::sign;
use crate::sink::signature_push::{push_signature, Signed};
use crate::util::reporter::Reporter;

pub use crate::sink::push_blobs::Transfer;

/// The OCI image manifest media type, as the image module writes it.
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// A registry to push to, and how.
#[derive(Debug, Clone)]
pub struct PushRequest {
    /// Push to this name instead of the image's own.
    pub destination: Option<ImageName>,
    /// From `--username` and `--password-stdin`; else looked up in the credential stores.
    pub credential: Option<Credential>,
    pub client: ClientOptions,
    /// Blobs sent at the same time.
    pub jobs: usize,
    /// Blobs larger than this go up in chunks of this size.
    pub chunk_size: u64,
    /// Where the record of which repositories hold which blobs is kept (for mounts).
    pub cache_dir: PathBuf,
    /// Sign each pushed manifest with this key (`--sign`), in cosign's format.
    pub sign: Option<sign::SignKey>,
    pub attach_sbom: bool,
    /// The registry conversation begun when the sink is checked, before the build.
    pub ahead: Arc<Ahead>,
}

/// The result of a push.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub name: ImageName,
    pub image: Image,
    /// Each blob's digest and how it was transferred.
    pub blobs: Vec<(Digest, Transfer)>,
    pub uploaded_bytes: u64,
    /// For a multi-platform image: the index pushed after its platforms' (first in `image`).
    pub index: Option<crate::oci::index::Index>,
    /// The signatures pushed (with `--sign`): the image's (or the index's) first, then each
    /// platform image's of an index.
    pub signatures: Vec<Signed>,
    /// The artifacts attached to its images afterwards (SBOMs).
    pub attached: Vec<Attached>,
    /// The connection the push used, for what follows it (attached artifacts).
    pub client: Connection,
    /// What the registry was seen to hold before the push (for what follows it).
    pub answers: Answers,
}

/// An artifact attached to a pushed image (an SBOM), as the push's result lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Attached {
    /// The manifest (or index) it is attached to.
    pub subject: Digest,
    pub artifact_type: String,
    /// The digest of the artifact manifest.
    pub digest: Digest,
    /// The fallback tag that lists it; none when the registry indexes referrers itself.
    pub fallback_tag: Option<String>,
    /// Its signature, with `--sign`.
    pub signature: Option<Signed>,
}

/// A registry connection, shared by a push and the steps after it.
#[derive(Clone)]
pub struct Connection(pub std::sync::Arc<Client>);

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Connection({})", self.0.registry)
    }
}

impl Pushed {
    pub fn count(&self, t: Transfer) -> usize {
        self.blobs.iter().filter(|(_, x)| *x == t).count()
    }
}

impl PushRequest {
    /// Begins the registry conversation (see [`super::push_ahead`]).
    pub fn start_ahead(&self) {
        self.ahead.start(
            self.credential.clone(),
            self.client.clone(),
            self.attach_sbom,
        );
    }
}

/// A connection for a push to `repo` of `registry` with `scopes`, and what is known of the
/// repository: the conversation begun ahead when it was with this repository and has every
/// scope, else a connection made now (with the credential looked up ahead, if any). With
/// `check_first`, `check` runs before any credential is read or connection made here.
pub(crate) fn session(
    registry: &str,
    repo: &str,
    scopes: Vec<String>,
    req: &PushRequest,
    report: &Reporter,
    check_first: &dyn Fn(&Answers) -> Result<()>,
) -> Result<(Client, Answers)> {
    let (client, credential, answers) = match req.ahead.take(registry, repo) {
        Some((said, early)) => {
            if let Some(said) = said {
                report.detail(&said);
            }
            let early = early?;
            (Some(early.client), Some(early.credential), early.answers)
        }
        None => (None, None, Answers::default()),
    };
    check_first(&answers)?;
    if let Some(client) = client.filter(|c| scopes.iter().all(|s| c.has_scope(s))) {
        return Ok((client, answers));
    }
    let credential = match credential {
        Some(c) => c,
        None => credential_for(registry, req, report)?,
    };
    Ok((connect(registry, credential, scopes, &req.client)?, answers))
}

/// A push with its connection open, before anything is sent: see [`open`].
pub struct Opened {
    pub client: Arc<Client>,
    /// What the registry was seen to hold.
    pub answers: Answers,
    blobs: Vec<crate::registry::BlobFile>,
    sources: BTreeMap<Digest, Vec<String>>,
    known: KnownBlobs,
    cache_path: PathBuf,
}

/// Pushes an image of the store to `name`'s registry; `cache_dir` keeps which repositories
/// have which blobs, for mounts.
pub fn push_image(
    store: &Store,
    image: &Image,
    name: &ImageName,
    req: &PushRequest,
    cache_dir: &Path,
    report: &Reporter,
) -> Result<Pushed> {
    let opened = open(store, image, name, req, cache_dir, report)?;
    push_opened(store, image, name, req, opened, report)
}

/// The first part of [`push_image`]: the image's blobs are checked (unless the repository is
/// known to hold the image) and the connection taken or made. What is attached to the image can
/// be got ready on it while [`push_opened`] sends the image.
pub fn open(
    store: &Store,
    image: &Image,
    name: &ImageName,
    req: &PushRequest,
    cache_dir: &Path,
    report: &Reporter,
) -> Result<Opened> {
    let registry = name.registry.as_str();
    let repo = name.repository.as_str();
    let ours = &image.manifest.digest;
    let blobs = push_blobs::blob_files(store, image);
    let cache_path = cache_dir.join(".registry-blobs.json");
    let known = KnownBlobs::load(&cache_path);
    let sources: BTreeMap<Digest, Vec<String>> = blobs
        .iter()
        .map(|b| {
            (
                b.digest.clone(),
                known.repositories(registry, &b.digest, repo),
            )
        })
        .collect();
    let mut scopes = vec![format!("repository:{repo}:pull,push")];
    for r in sources.values().flatten().collect::<BTreeSet<_>>() {
        scopes.push(format!("repository:{r}:pull"));
    }
    // Every blob that may be sent is checked first: when the repository is known to hold the
    // manifest, none is.
    let check = |answers: &Answers| match answers.holds(ours) {
        true => Ok(()),
        false => push_blobs::verify(store, image),
    };
    let (client, answers) = session(registry, repo, scopes, req, report, &check)?;
    Ok(Opened {
        client: Arc::new(client),
        answers,
        blobs,
        sources,
        known,
        cache_path,
    })
}

/// The rest of [`push_image`]: the blobs the repository lacks, the manifest, the tags, the
/// signature.
pub fn push_opened(
    store: &Store,
    image: &Image,
    name: &ImageName,
    req: &PushRequest,
    opened: Opened,
    report: &Reporter,
) -> Result<Pushed> {
    let Opened {
        client,
        answers,
        blobs,
        sources,
        mut known,
        cache_path,
    } = opened;
    let registry = name.registry.as_str();
    let repo = name.repository.as_str();
    let ours = &image.manifest.digest;
    let total: u64 = blobs.iter().map(|b| b.size).sum();
    report.status(
        "Pushing",
        &format!(
            "{name} ({} blobs, {}) to {registry}",
            blobs.len(),
            crate::util::reporter::bytes(total)
        ),
    );
    let there = push_blobs::survey(&client, repo, image, &blobs, &answers, MANIFEST_MEDIA_TYPE);
    let results = if there.manifest {
        // A registry stores a manifest only once every blob it names is there.
        report.detail(&format!(
            "{ours}: the manifest is in {repo}, and so is every blob"
        ));
        blobs
            .iter()
            .map(|b| (b.digest.clone(), Transfer::Skipped))
            .collect()
    } else {
        let how = Sending {
            jobs: req.jobs,
            chunk_size: req.chunk_size,
        };
        push_blobs::transfer_blobs(&client, repo, &blobs, &there.blobs, &sources, how, report)?
    };

    // Every blob is confirmed in the repository: now the manifest, by digest, then the tags.
    let manifest = store
        .read(&image.manifest)
        .with_context(|| format!("cannot read the manifest {ours}"))?;
    if !there.manifest {
        client
            .put_manifest(repo, ours.as_str(), MANIFEST_MEDIA_TYPE, &manifest, ours)
            .with_context(|| {
                format!("the manifest was not pushed: no tag of {name} was changed (the blobs are in place; run the push again)")
            })?;
    }
    let doc = (MANIFEST_MEDIA_TYPE, &manifest[..]);
    put_tags(&client, name, ours, doc, &image.tags, &there.tags, report)?;

    let mut learnt = false;
    for b in &blobs {
        learnt |= known.add(registry, &b.digest, repo);
    }
    if learnt {
        if let Err(e) = known.save(&cache_path) {
            report.warn(&format!(
                "cannot record the pushed blobs in {}: {e:#}",
                cache_path.display()
            ));
        }
    }
    // Only now, with the image and its tags in place, its signature.
    let signatures = (req.sign.as_ref())
        .map(|key| push_signature(store, &client, name, ours, key, req.chunk_size, report))
        .transpose()?
        .into_iter()
        .collect();
    Ok(Pushed {
        name: name.clone(),
        image: image.clone(),
        uploaded_bytes: uploaded_bytes(&blobs, &results),
        blobs: results,
        index: None,
        signatures,
        attached: Vec::new(),
        client: Connection(client),
        answers,
    })
}

/// Points every tag of `tags` not in `in_place` at the manifest `digest` (`doc`: its media type
/// and bytes), all at once.
pub(crate) fn put_tags(
    client: &Client,
    name: &ImageName,
    digest: &Digest,
    doc: (&str, &[u8]),
    tags: &[String],
    in_place: &BTreeSet<String>,
    report: &Reporter,
) -> Result<()> {
    let repo = name.repository.as_str();
    let mut set: Vec<&str> = Vec::new();
    let mut todo: Vec<&str> = Vec::new();
    for tag in tags {
        if in_place.contains(tag) {
            report.detail(&format!("tag `{tag}` already names {digest}"));
            set.push(tag);
        } else {
            todo.push(tag);
        }
    }
    let got = at_once(&todo, |tag| {
        client.put_manifest(repo, tag, doc.0, doc.1, digest)
    });
    let mut failed = None;
    for (tag, r) in todo.into_iter().zip(got) {
        match r {
            Ok(()) => set.push(tag),
            Err(e) => {
                failed.get_or_insert((tag, e));
            }
        }
    }
    match failed {
        None => Ok(()),
        Some((tag, e)) => Err(e.context(format!(
            "{name}@{digest} is pushed but tag `{tag}` could not be set; tags set: {}; run the push again to set the rest",
            if set.is_empty() { "none".to_string() } else { set.join(", ") }
        ))),
    }
}

/// The credential for `registry`: the one given, else the credential stores' (said at `-v`).
pub(crate) fn credential_for(
    registry: &str,
    req: &PushRequest,
    report: &Reporter,
) -> Result<Option<Credential>> {
    auth::resolve(registry, req.credential.as_ref(), report)
}

/// The bytes of the blobs that were uploaded, each counted once, however many tries it took.
fn uploaded_bytes(blobs: &[crate::registry::BlobFile], results: &[(Digest, Transfer)]) -> u64 {
    results
        .iter()
        .filter(|(_, t)| *t == Transfer::Uploaded)
        .filter_map(|(d, _)| blobs.iter().find(|b| b.digest == *d))
        .map(|b| b.size)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_cache_is_told_before_the_registry_is_asked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join(".store")).unwrap();
        let image = crate::sink::archive::tests::image(&store);
        let path = store.path(&image.layers[0].blob.digest);
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        // Nothing listens on port 9 of loopback: an error naming the registry would mean it was
        // asked.
        let name = ImageName::parse("127.0.0.1:9/app").unwrap();
        let req = PushRequest {
            destination: None,
            credential: None,
            client: ClientOptions::default(),
            jobs: 1,
            chunk_size: 1 << 20,
            cache_dir: dir.path().to_path_buf(),
            sign: None,
            attach_sbom: false,
            ahead: Ahead::none(),
        };
        let report = Reporter::new(crate::util::reporter::Verbosity::Quiet);
        let err = push_image(&store, &image, &name, &req, dir.path(), &report).unwrap_err();
        assert!(crate::oci::store::is_damaged(&err), "{err:#}");
        let shown = format!("{err:#}");
        assert!(
            shown.contains("cargo oci clean") && !shown.contains("127.0.0.1:9"),
            "{shown}"
        );
    }
}
