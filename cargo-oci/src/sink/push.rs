//! The registry sink of `cargo oci push`: sends built images from the blob store to their
//! registry: blobs first (skipped when present, mounted from another repository of the same
//! registry when known there, else uploaded, a few at a time), then the manifest by digest, and
//! only then each tag. A push that fails before the manifest leaves every tag where it was.
//!
//! The registry protocol lives in [`crate::registry`]; this module decides what to send.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use crate::oci::digest::Digest;
use crate::oci::image::Image;
use crate::oci::reference::ImageName;
use crate::oci::store::Store;
use crate::registry::auth::{self, Credential};
use crate::registry::{BlobFile, Client, ClientOptions, Mount};
use crate::sink::sign;
use crate::sink::signature_push::{push_signature, Signed};
use crate::util::reporter::Reporter;

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
}

/// How each blob got to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Transfer {
    Skipped,
    Mounted,
    Uploaded,
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
    // The registry checks every digest too, but a blob that is not what the store says is a
    // damaged cache, and is told as one before anything is sent (or any credential read).
    for b in image.layers.iter().map(|l| &l.blob).chain([&image.config]) {
        if !store.verify(b) {
            return Err(store
                .damaged(format!(
                    "blob {} is missing or does not match its digest",
                    b.digest
                ))
                .into());
        }
    }
    let registry = name.registry.as_str();
    let repo = name.repository.as_str();
    let credential = credential_for(registry, req, report)?;

    let mut blobs: Vec<BlobFile> = Vec::new();
    for b in image.layers.iter().map(|l| &l.blob).chain([&image.config]) {
        if !blobs.iter().any(|x| x.digest == b.digest) {
            blobs.push(BlobFile {
                digest: b.digest.clone(),
                size: b.size,
                path: store.path(&b.digest),
            });
        }
    }
    // The largest first, so that parallel uploads finish together.
    blobs.sort_by_key(|b| std::cmp::Reverse(b.size));

    let cache_path = cache_dir.join(".registry-blobs.json");
    let mut known = KnownBlobs::load(&cache_path);
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
    let client = connect(registry, credential, scopes, req)?;

    let total: u64 = blobs.iter().map(|b| b.size).sum();
    report.status(
        "Pushing",
        &format!(
            "{name} ({} blobs, {}) to {registry}",
            blobs.len(),
            crate::util::reporter::bytes(total)
        ),
    );
    // A repeat push: the manifest and the tags may all be in place already (asked at once).
    let (in_repo, tags_in_place) = already_there(&client, repo, image);
    let results = if in_repo {
        // A registry stores a manifest only once every blob it names is there.
        report.detail(&format!(
            "{}: the manifest is in {repo}, and so is every blob",
            image.manifest.digest
        ));
        blobs
            .iter()
            .map(|b| (b.digest.clone(), Transfer::Skipped))
            .collect()
    } else {
        let progress = Progress::default();
        transfer_blobs(
            &client, repo, &blobs, &sources, req, &progress, report, total,
        )?
    };

    // Every blob is confirmed in the repository: now the manifest, by digest, then the tags.
    let manifest = store
        .read(&image.manifest)
        .with_context(|| format!("cannot read the manifest {}", image.manifest.digest))?;
    if !in_repo {
        client
            .put_manifest(
                repo,
                image.manifest.digest.as_str(),
                MANIFEST_MEDIA_TYPE,
                &manifest,
                &image.manifest.digest,
            )
            .with_context(|| {
                format!("the manifest was not pushed: no tag of {name} was changed (the blobs are in place; run the push again)")
            })?;
    }
    let mut moved: Vec<&str> = Vec::new();
    for tag in &image.tags {
        if tags_in_place.contains(tag) {
            report.detail(&format!(
                "tag `{tag}` already names {}",
                image.manifest.digest
            ));
            moved.push(tag);
            continue;
        }
        client
            .put_manifest(
                repo,
                tag,
                MANIFEST_MEDIA_TYPE,
                &manifest,
                &image.manifest.digest,
            )
            .with_context(|| {
                format!(
                    "{name}@{} is pushed but tag `{tag}` could not be set; tags set: {}; run the push again to set the rest",
                    image.manifest.digest,
                    if moved.is_empty() { "none".to_string() } else { moved.join(", ") }
                )
            })?;
        moved.push(tag);
    }

    for b in &blobs {
        known.add(registry, &b.digest, repo);
    }
    if let Err(e) = known.save(&cache_path) {
        report.warn(&format!(
            "cannot record the pushed blobs in {}: {e:#}",
            cache_path.display()
        ));
    }
    // Only now, with the image and its tags in place, its signature.
    let signatures = (req.sign.as_ref())
        .map(|key| {
            let d = &image.manifest.digest;
            push_signature(store, &client, name, d, key, req.chunk_size, report)
        })
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
        client: Connection(std::sync::Arc::new(client)),
    })
}

/// A checked connection to `registry` with `scopes`.
pub(crate) fn connect(
    registry: &str,
    credential: Option<Credential>,
    scopes: Vec<String>,
    req: &PushRequest,
) -> Result<Client> {
    let mut client = Client::new(registry, credential, scopes, req.client.clone())?
        .with_login_hint(format!(
            "pass --username USER --password-stdin, set CARGO_OCI_REGISTRY_USER and \
             CARGO_OCI_REGISTRY_PASSWORD, or log in with `docker login {registry}` or \
             `podman login {registry}`"
        ));
    client.check()?;
    Ok(client)
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
fn uploaded_bytes(blobs: &[BlobFile], results: &[(Digest, Transfer)]) -> u64 {
    results
        .iter()
        .filter(|(_, t)| *t == Transfer::Uploaded)
        .filter_map(|(d, _)| blobs.iter().find(|b| b.digest == *d))
        .map(|b| b.size)
        .sum()
}

/// Whether `repo` has the image's manifest, and which of its tags already name it: one `HEAD`
/// each, all at once. A question that finds no answer counts as "no": the push then does what it
/// would have done without asking.
fn already_there(client: &Client, repo: &str, image: &Image) -> (bool, BTreeSet<String>) {
    let ours = &image.manifest.digest;
    let refs: Vec<&str> = std::iter::once(ours.as_str())
        .chain(image.tags.iter().map(String::as_str))
        .collect();
    let answers: Vec<bool> = std::thread::scope(|s| {
        let asks: Vec<_> = refs
            .iter()
            .map(|r| {
                s.spawn(move || {
                    client
                        .manifest_digest(repo, r, MANIFEST_MEDIA_TYPE)
                        .ok()
                        .flatten()
                        .is_some_and(|d| d == *ours)
                })
            })
            .collect();
        asks.into_iter()
            .map(|a| a.join().unwrap_or(false))
            .collect()
    });
    let in_repo = answers[0];
    let tags = refs[1..]
        .iter()
        .zip(&answers[1..])
        .filter(|(_, yes)| **yes)
        .map(|(t, _)| t.to_string())
        .collect();
    (in_repo, tags)
}

/// Counters shared by the upload threads and the progress line.
#[derive(Default)]
struct Progress {
    sent: AtomicU64,
    skipped: AtomicUsize,
    mounted: AtomicUsize,
    uploaded: AtomicUsize,
}

impl Progress {
    /// How many of `total` blobs are there, whichever way they got there.
    fn blobs_done(&self, total: usize) -> String {
        let done = self.skipped.load(Ordering::Relaxed)
            + self.mounted.load(Ordering::Relaxed)
            + self.uploaded.load(Ordering::Relaxed);
        format!("{done}/{total} blobs")
    }
}

/// Sends the blobs that the repository lacks, `req.jobs` at a time.
#[allow(clippy::too_many_arguments)]
fn transfer_blobs(
    client: &Client,
    repo: &str,
    blobs: &[BlobFile],
    sources: &BTreeMap<Digest, Vec<String>>,
    req: &PushRequest,
    progress: &Progress,
    report: &Reporter,
    total: u64,
) -> Result<Vec<(Digest, Transfer)>> {
    let queue = Mutex::new(blobs.iter().collect::<VecDeque<_>>());
    let results = Mutex::new(Vec::new());
    let errors = Mutex::new(Vec::<anyhow::Error>::new());
    let failed = AtomicBool::new(false);
    // Dropped when the uploads are over: the ticker stops at once, not at its next tick.
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    // A bar on a terminal (nothing otherwise), fed from the counters the uploads keep.
    let bar = report.progress("Pushing", repo, Some(total));
    std::thread::scope(|s| {
        let bar_ref = &bar;
        let ticker = s.spawn(move || loop {
            bar_ref.set_position(progress.sent.load(Ordering::Relaxed));
            bar_ref.set_message(&format!("{repo} ({})", progress.blobs_done(blobs.len())));
            match stopped.recv_timeout(Duration::from_millis(100)) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                _ => break,
            }
        });
        let workers: Vec<_> = (0..req.jobs.clamp(1, 32).min(blobs.len().max(1)))
            .map(|_| {
                s.spawn(|| loop {
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                    let Some(blob) = next else { break };
                    let from = sources.get(&blob.digest).map(Vec::as_slice).unwrap_or(&[]);
                    match transfer_one(client, repo, blob, from, req.chunk_size, progress) {
                        Ok(t) => {
                            report.detail(&format!("{}: {t:?}", blob.digest));
                            results
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push((blob.digest.clone(), t));
                        }
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            errors.lock().unwrap_or_else(|e| e.into_inner()).push(e);
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            if w.join().is_err() {
                failed.store(true, Ordering::Relaxed);
                errors
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(anyhow!("an upload thread panicked"));
            }
        }
        drop(stop);
        let _ = ticker.join();
    });
    drop(bar);
    let mut errors = errors.into_inner().unwrap_or_else(|e| e.into_inner());
    if let Some(first) = errors.drain(..).next() {
        return Err(first.context(format!(
            "not every blob reached {}/{repo}: the manifest was not pushed and no tag was changed",
            client.registry
        )));
    }
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort();
    Ok(results)
}

/// Gets one blob into the repository and confirms it is there.
fn transfer_one(
    client: &Client,
    repo: &str,
    blob: &BlobFile,
    from: &[String],
    chunk_size: u64,
    progress: &Progress,
) -> Result<Transfer> {
    if client.blob_size(repo, &blob.digest)? == Some(blob.size) {
        progress.skipped.fetch_add(1, Ordering::Relaxed);
        return Ok(Transfer::Skipped);
    }
    let mut session = None;
    let mut how = Transfer::Uploaded;
    // One mount try: a registry that cannot mount opens an upload session instead (202).
    if let Some(source) = from.first() {
        match client.mount(repo, &blob.digest, source)? {
            Mount::Mounted => how = Transfer::Mounted,
            Mount::Upload(loc) => session = Some(loc),
        }
    }
    if how == Transfer::Uploaded {
        client.upload(repo, blob, session, chunk_size, &progress.sent)?;
    }
    match client.blob_size(repo, &blob.digest)? {
        Some(n) if n == blob.size => {}
        other => {
            return Err(anyhow!(
                "blob {} ({} bytes) is not in {repo} after the {}: the registry has {}",
                blob.digest,
                blob.size,
                if how == Transfer::Mounted {
                    "mount"
                } else {
                    "upload"
                },
                other.map_or("nothing".into(), |n| format!("{n} bytes"))
            ))
        }
    }
    match how {
        Transfer::Mounted => progress.mounted.fetch_add(1, Ordering::Relaxed),
        _ => progress.uploaded.fetch_add(1, Ordering::Relaxed),
    };
    Ok(how)
}

/// Which repositories of which registries hold which blobs, as far as earlier pushes from this
/// target directory know: the candidates for cross-repository mounts. Only a hint; a wrong entry
/// costs one refused mount.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct KnownBlobs {
    /// registry → digest → repositories.
    registries: BTreeMap<String, BTreeMap<Digest, BTreeSet<String>>>,
}

impl KnownBlobs {
    fn load(path: &Path) -> KnownBlobs {
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Repositories of `registry` known to hold `digest`, besides `except`.
    fn repositories(&self, registry: &str, digest: &Digest, except: &str) -> Vec<String> {
        self.registries
            .get(registry)
            .and_then(|m| m.get(digest))
            .map(|s| s.iter().filter(|r| *r != except).take(3).cloned().collect())
            .unwrap_or_default()
    }

    fn add(&mut self, registry: &str, digest: &Digest, repo: &str) {
        self.registries
            .entry(registry.to_string())
            .or_default()
            .entry(digest.clone())
            .or_default()
            .insert(repo.to_string());
    }

    /// Writes the file, merged with what other pushes wrote meanwhile.
    fn save(&self, path: &Path) -> Result<()> {
        let mut merged = KnownBlobs::load(path);
        for (registry, digests) in &self.registries {
            for (digest, repos) in digests {
                for repo in repos {
                    merged.add(registry, digest, repo);
                }
            }
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let bytes = serde_json::to_vec(&merged)?;
        crate::util::fs::write_atomic(path, |w| Ok(w.write_all(&bytes)?))
    }
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

    #[test]
    fn known_blobs_suggest_other_repositories() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.json");
        let mut k = KnownBlobs::load(&path);
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        k.add("r:5000", &a, "one");
        k.add("r:5000", &a, "two");
        k.save(&path).unwrap();
        let k = KnownBlobs::load(&path);
        assert_eq!(k.repositories("r:5000", &a, "one"), vec!["two"]);
        assert!(k.repositories("other", &a, "x").is_empty());
        assert!(k.repositories("r:5000", &b, "x").is_empty());
    }
}
