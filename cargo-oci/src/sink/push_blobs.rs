//! The blobs of a push: which the repository lacks (asked all at once, with the manifest and the
//! tags not answered yet), checked against their digests before any is sent, then each mounted
//! from another repository of the same registry when known there, else uploaded, `--upload-jobs`
//! at a time; and the record of which repositories hold which blobs, for those mounts.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, Result};

use crate::oci::digest::Digest;
use crate::oci::image::Image;
use crate::oci::store::Store;
use crate::registry::{BlobFile, Client, Mount};
use crate::sink::push_ahead::{at_once, Answers, ANY_MANIFEST};
use crate::util::reporter::Reporter;

/// The image's blobs, each once, the largest first (so that parallel uploads finish together).
pub fn blob_files(store: &Store, image: &Image) -> Vec<BlobFile> {
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
    blobs.sort_by_key(|b| std::cmp::Reverse(b.size));
    blobs
}

/// How each blob got to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Transfer {
    Skipped,
    Mounted,
    Uploaded,
}

/// Checks every blob of `image` against its digest (several at once). The registry checks every
/// digest too, but a blob that is not what the store says is a damaged cache, and is told as one
/// before any is sent.
pub fn verify(store: &Store, image: &Image) -> Result<()> {
    let all: Vec<_> = image
        .layers
        .iter()
        .map(|l| &l.blob)
        .chain([&image.config])
        .collect();
    let ok = at_once(&all, |b| store.verify(b));
    match all.iter().zip(ok).find(|(_, ok)| !ok) {
        Some((b, _)) => Err(store
            .damaged(format!(
                "blob {} is missing or does not match its digest",
                b.digest
            ))
            .into()),
        None => Ok(()),
    }
}

/// What the repository holds of an image.
pub struct There {
    /// The manifest is there (and so, as a registry stores a manifest only once every blob it
    /// names is there, every blob).
    pub manifest: bool,
    /// The tags that already name it.
    pub tags: BTreeSet<String>,
    /// The size of each blob asked about that the repository has (`None`: it has not).
    pub blobs: BTreeMap<Digest, Option<u64>>,
}

/// Asks, all at once, what `answers` does not say: whether the repository has the manifest,
/// what the image's unanswered tags name and, when the manifest may be missing, which blobs it
/// has. A question that finds no answer counts as "no" (the manifest, a tag) or as not asked (a
/// blob: asked again before it is sent).
pub fn survey(
    client: &Client,
    repo: &str,
    image: &Image,
    blobs: &[BlobFile],
    answers: &Answers,
    media_type: &str,
) -> There {
    enum Ask<'a> {
        Manifest,
        Tag(&'a str),
        Blob(&'a BlobFile),
    }
    let ours = &image.manifest.digest;
    let known = answers.holds(ours);
    let mut asks: Vec<Ask> = Vec::new();
    if !known {
        asks.push(Ask::Manifest);
        asks.extend(blobs.iter().map(Ask::Blob));
    }
    asks.extend(
        (image.tags.iter())
            .filter(|t| !answers.names.contains_key(*t))
            .map(|t| Ask::Tag(t)),
    );
    let got = at_once(&asks, |a| match a {
        Ask::Manifest => client
            .manifest_digest(repo, ours.as_str(), media_type)
            .map(|d| d.map(|_| 0)),
        Ask::Tag(t) => client
            .manifest_digest(repo, t, ANY_MANIFEST)
            .map(|d| d.filter(|d| d == ours).map(|_| 0)),
        Ask::Blob(b) => client.blob_size(repo, &b.digest),
    });
    let mut there = There {
        manifest: known,
        tags: (image.tags.iter())
            .filter(|t| {
                answers
                    .names
                    .get(*t)
                    .is_some_and(|d| d.as_ref() == Some(ours))
            })
            .cloned()
            .collect(),
        blobs: BTreeMap::new(),
    };
    for (a, r) in asks.into_iter().zip(got) {
        match (a, r) {
            (Ask::Manifest, Ok(Some(_))) => there.manifest = true,
            (Ask::Tag(t), Ok(Some(_))) => {
                there.tags.insert(t.to_string());
            }
            (Ask::Blob(b), Ok(size)) => {
                there.blobs.insert(b.digest.clone(), size);
            }
            _ => {}
        }
    }
    there
}

/// Counters shared by the upload threads and the progress line.
#[derive(Default)]
pub struct Progress {
    pub sent: AtomicU64,
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

/// How blobs are sent: `jobs` at a time, those larger than `chunk_size` in chunks.
#[derive(Debug, Clone, Copy)]
pub struct Sending {
    pub jobs: usize,
    pub chunk_size: u64,
}

/// Sends the blobs that the repository lacks; `there` holds what is known already of each blob.
pub fn transfer_blobs(
    client: &Client,
    repo: &str,
    blobs: &[BlobFile],
    there: &BTreeMap<Digest, Option<u64>>,
    sources: &BTreeMap<Digest, Vec<String>>,
    how: Sending,
    report: &Reporter,
) -> Result<Vec<(Digest, Transfer)>> {
    let total: u64 = blobs.iter().map(|b| b.size).sum();
    let progress = &Progress::default();
    let mut results = Vec::new();
    let mut todo = VecDeque::new();
    for b in blobs {
        if there.get(&b.digest) == Some(&Some(b.size)) {
            progress.skipped.fetch_add(1, Ordering::Relaxed);
            report.detail(&format!("{}: {:?}", b.digest, Transfer::Skipped));
            results.push((b.digest.clone(), Transfer::Skipped));
        } else {
            todo.push_back(b);
        }
    }
    let lacking: BTreeSet<&Digest> = there
        .iter()
        .filter(|(_, s)| s.is_none())
        .map(|(d, _)| d)
        .collect();
    let jobs = how.jobs.clamp(1, 32).min(todo.len().max(1));
    let queue = Mutex::new(todo);
    let results = Mutex::new(results);
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
        let workers: Vec<_> = (0..jobs)
            .map(|_| {
                s.spawn(|| loop {
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                    let Some(blob) = next else { break };
                    let from = sources.get(&blob.digest).map(Vec::as_slice).unwrap_or(&[]);
                    let asked = lacking.contains(&blob.digest);
                    let chunk = how.chunk_size;
                    match transfer_one(client, repo, blob, asked, from, chunk, progress) {
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

/// Gets one blob into the repository; `asked` when the repository was just seen to lack it.
/// When the registry's answer does not name the blob's digest, asks whether it is there.
fn transfer_one(
    client: &Client,
    repo: &str,
    blob: &BlobFile,
    asked: bool,
    from: &[String],
    chunk_size: u64,
    progress: &Progress,
) -> Result<Transfer> {
    if !asked && client.blob_size(repo, &blob.digest)? == Some(blob.size) {
        progress.skipped.fetch_add(1, Ordering::Relaxed);
        return Ok(Transfer::Skipped);
    }
    let mut session = None;
    let mut how = Transfer::Uploaded;
    let mut confirmed = false;
    // One mount try: a registry that cannot mount opens an upload session instead (202).
    if let Some(source) = from.first() {
        match client.mount(repo, &blob.digest, source)? {
            Mount::Mounted { confirmed: c } => {
                how = Transfer::Mounted;
                confirmed = c;
            }
            Mount::Upload(loc) => session = Some(loc),
        }
    }
    if how == Transfer::Uploaded {
        confirmed = client.upload(repo, blob, session, chunk_size, &progress.sent)?;
    }
    if !confirmed {
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
pub struct KnownBlobs {
    /// registry → digest → repositories.
    registries: BTreeMap<String, BTreeMap<Digest, BTreeSet<String>>>,
}

impl KnownBlobs {
    pub fn load(path: &Path) -> KnownBlobs {
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Repositories of `registry` known to hold `digest`, besides `except`.
    pub fn repositories(&self, registry: &str, digest: &Digest, except: &str) -> Vec<String> {
        self.registries
            .get(registry)
            .and_then(|m| m.get(digest))
            .map(|s| s.iter().filter(|r| *r != except).take(3).cloned().collect())
            .unwrap_or_default()
    }

    /// Records that `repo` holds `digest`; false when that was known.
    pub fn add(&mut self, registry: &str, digest: &Digest, repo: &str) -> bool {
        self.registries
            .entry(registry.to_string())
            .or_default()
            .entry(digest.clone())
            .or_default()
            .insert(repo.to_string())
    }

    /// Writes the file, merged with what other pushes wrote meanwhile.
    pub fn save(&self, path: &Path) -> Result<()> {
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
    fn known_blobs_suggest_other_repositories() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.json");
        let mut k = KnownBlobs::load(&path);
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        assert!(k.add("r:5000", &a, "one"));
        assert!(k.add("r:5000", &a, "two"));
        assert!(!k.add("r:5000", &a, "two"), "known already");
        k.save(&path).unwrap();
        let k = KnownBlobs::load(&path);
        assert_eq!(k.repositories("r:5000", &a, "one"), vec!["two"]);
        assert!(k.repositories("other", &a, "x").is_empty());
        assert!(k.repositories("r:5000", &b, "x").is_empty());
    }
}
