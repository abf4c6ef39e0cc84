//! The OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/`): written or updated in
//! place under an exclusive lock, one `ref.name` per tag, new blobs first and `index.json` last.
//! Other images of the layout (entries whose `ref.name` is not a tag of this image's name) are
//! kept with their blobs; a directory that is not a layout is never written into.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result};
use oci_spec::image::{DescriptorBuilder, ImageIndexBuilder, MediaType, PlatformBuilder};
use serde_json::Value;

use crate::oci::digest::Digest;
use crate::oci::image::{canonical_json, Image};
use crate::oci::index::Index;
use crate::oci::store::{self, Blob, Store};
use crate::util::error::UsageError;
use crate::util::fs::{is_temp_name, lock_exclusive, remove_stale_temps, write_atomic};

/// The lock file that serialises the writers of a layout.
pub const LOCK_FILE: &str = ".cargo-oci.lock";

/// The annotation naming each manifest in an index.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// What a layout names: an image, or an index of images (a multi-platform image).
#[derive(Clone, Copy)]
pub enum Named<'a> {
    Image(&'a Image),
    Index(&'a Index),
}

impl<'a> Named<'a> {
    /// Every image as a [`Named`].
    pub fn images(images: &[&'a Image]) -> Vec<Named<'a>> {
        images.iter().map(|i| Named::Image(i)).collect()
    }

    /// Every index as a [`Named`].
    pub fn indexes(indexes: &[&'a Index]) -> Vec<Named<'a>> {
        indexes.iter().map(|i| Named::Index(i)).collect()
    }

    fn full_name(&self) -> &str {
        match self {
            Named::Image(i) => &i.name.full,
            Named::Index(i) => &i.name.full,
        }
    }

    fn references(&self) -> Vec<String> {
        match self {
            Named::Image(i) => i.references(),
            Named::Index(i) => i.references(),
        }
    }

    /// Its blobs: the index's own, then each image's config, manifest and layers.
    fn blobs(&self) -> Vec<&'a Blob> {
        let (own, images): (Option<&Blob>, Vec<&Image>) = match self {
            Named::Image(i) => (None, vec![*i]),
            Named::Index(i) => (Some(&i.blob), i.images.iter().collect()),
        };
        own.into_iter()
            .chain(images.into_iter().flat_map(|image| {
                [&image.config, &image.manifest]
                    .into_iter()
                    .chain(image.layers.iter().map(|l| &l.blob))
            }))
            .collect()
    }
}

/// The index of some images: one descriptor per tag, each named by `ref.name`.
pub fn index_json(items: &[Named]) -> Result<Vec<u8>> {
    let mut manifests = Vec::new();
    for item in items {
        manifests.extend(descriptors(item)?);
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()?;
    canonical_json(&index)
}

fn descriptors(item: &Named) -> Result<Vec<oci_spec::image::Descriptor>> {
    let (media_type, blob, platform) = match item {
        Named::Image(image) => (
            MediaType::ImageManifest,
            &image.manifest,
            Some({
                let mut p = PlatformBuilder::default()
                    .architecture(oci_spec::image::Arch::from(image.architecture.as_str()))
                    .os(oci_spec::image::Os::Linux);
                if let Some(v) = &image.variant {
                    p = p.variant(v.clone());
                }
                p.build()?
            }),
        ),
        Named::Index(index) => (MediaType::ImageIndex, &index.blob, None),
    };
    item.references()
        .into_iter()
        .map(|r| {
            let mut d = DescriptorBuilder::default()
                .media_type(media_type.clone())
                .digest(blob.digest.to_oci())
                .size(blob.size)
                .annotations(
                    [(REF_NAME.to_string(), r)]
                        .into_iter()
                        .collect::<std::collections::HashMap<_, _>>(),
                );
            if let Some(p) = &platform {
                d = d.platform(p.clone());
            }
            Ok(d.build()?)
        })
        .collect()
}

pub(crate) const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Every blob of the items: indexes, configs, manifests, layers; each once, in a stable order.
pub(crate) fn blobs_of<'a>(items: &[Named<'a>]) -> Vec<&'a Blob> {
    let mut v: Vec<&Blob> = Vec::new();
    for item in items {
        for b in item.blobs() {
            if !v.iter().any(|x| x.digest == b.digest) {
                v.push(b);
            }
        }
    }
    v
}

/// Checks that `dir` can take an image layout: it is missing, empty, or already a layout.
pub fn check_destination(dir: &Path) -> Result<(), UsageError> {
    let refuse = |why: String| {
        UsageError::new(format!(
            "cannot write the image layout to {}: {why}",
            dir.display()
        ))
        .hint("choose a new or empty directory, or an existing OCI image layout, for -o")
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(_) if dir.exists() && !dir.is_dir() => {
            return Err(refuse("it is not a directory".into()))
        }
        Err(e) => return Err(refuse(e.to_string())),
    };
    if dir.join("oci-layout").is_file() {
        return Ok(());
    }
    let other = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n != LOCK_FILE && !is_temp_name(n));
    match other {
        Some(name) => Err(refuse(format!(
            "it is a directory that is not an OCI image layout (no `oci-layout` file) and holds `{name}`; cargo-oci never writes over files it did not make"
        ))),
        None => Ok(()),
    }
}

/// The entries of the layout's `index.json` (none when there is no index yet).
fn existing_entries(dir: &Path) -> Result<Vec<Value>> {
    let path = dir.join("index.json");
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("cannot read {}", path.display())))
        }
    };
    let index: Value = serde_json::from_slice(&text).map_err(|e| {
        UsageError::new(format!("{} is not an OCI image index: {e}", path.display()))
            .hint("repair or remove that layout, or choose another directory for -o")
    })?;
    Ok(index["manifests"].as_array().cloned().unwrap_or_default())
}

/// Every blob that the descriptors reach in the layout (manifests, their configs and layers,
/// nested indexes), or None when one of them cannot be read (then nothing may be removed).
fn reachable(blobs: &Path, entries: &[Value]) -> Option<BTreeSet<String>> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<Value> = entries.to_vec();
    // A layout's graph is finite; the bound only guards against a hostile one.
    let mut budget = 100_000usize;
    while let Some(d) = todo.pop() {
        budget = budget.checked_sub(1)?;
        let digest: Digest = d["digest"].as_str()?.parse().ok()?;
        let hex = digest.hex().to_string();
        if !seen.insert(hex.clone()) {
            continue;
        }
        let media = d["mediaType"].as_str().unwrap_or_default();
        let is_manifest = media.contains("manifest") || media.contains("index");
        if !is_manifest && !media.is_empty() {
            continue;
        }
        let path = blobs.join(&hex);
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if media.is_empty() && meta.len() > 4 << 20 {
            continue; // too big for a manifest
        }
        // A descriptor without a media type may be a manifest: read it as one if it parses.
        let parsed = std::fs::read(&path)
            .ok()
            .and_then(|t| serde_json::from_slice::<Value>(&t).ok());
        let doc = match parsed {
            Some(doc) => doc,
            None if is_manifest => return None,
            None => continue,
        };
        for key in ["manifests", "layers", "blobs"] {
            todo.extend(doc[key].as_array().cloned().unwrap_or_default());
        }
        for key in ["config", "subject"] {
            if doc[key].is_object() {
                todo.push(doc[key].clone());
            }
        }
    }
    Some(seen)
}

/// Every blob that the entries of the layout at `dir` reach (hex digests), or None when its index
/// or one of its manifests cannot be read.
pub fn referenced_blobs(dir: &Path) -> Option<BTreeSet<String>> {
    let entries = existing_entries(dir).ok()?;
    reachable(&dir.join("blobs").join("sha256"), &entries)
}

/// Writes (or updates) an OCI image layout at `dir`, holding the layout's lock throughout: new
/// blobs go in first (copied out of the store, checked against their digests); `index.json` is
/// replaced in one rename, keeping the entries of other images; blobs that no entry reaches any
/// more are removed last.
pub fn write_layout(store: &Store, images: &[Named], dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let _lock = lock_exclusive(&dir.join(LOCK_FILE))?;
    check_destination(dir)?;
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs)
        .with_context(|| format!("cannot create {}", blobs.display()))?;
    remove_stale_temps(dir, store::STALE_AFTER);
    remove_stale_temps(&blobs, store::STALE_AFTER);

    // This image's entries (any tag of its name: an older content tag too) are replaced; every
    // other image's are kept.
    let ours: BTreeSet<String> = images
        .iter()
        .map(|i| format!("{}:", i.full_name()))
        .collect();
    let kept: Vec<Value> = existing_entries(dir)?
        .into_iter()
        .filter(|d| {
            d["annotations"][REF_NAME]
                .as_str()
                .is_none_or(|r| !ours.iter().any(|o| r.starts_with(o.as_str())))
        })
        .collect();

    for b in blobs_of(images) {
        store.copy_out(b, &blobs.join(b.hex()))?;
    }
    write_if_changed(&dir.join("oci-layout"), OCI_LAYOUT)?;
    let index = if kept.is_empty() {
        index_json(images)?
    } else {
        let mut index: Value = serde_json::from_slice(&index_json(images)?)?;
        if let Some(m) = index["manifests"].as_array_mut() {
            m.extend(kept.iter().cloned());
        }
        canonical_json(&index)?
    };
    write_if_changed(&dir.join("index.json"), &index)?;

    let Some(mut keep) = reachable(&blobs, &kept) else {
        return Ok(());
    };
    keep.extend(blobs_of(images).iter().map(|b| b.hex().to_string()));
    for entry in std::fs::read_dir(&blobs)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // Temporary files are removed once stale (above), never while another run may write.
        if !keep.contains(&name) && !is_temp_name(&name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically, unless it already holds exactly them (readable by others).
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // A private file that earlier versions wrote is written again.
    let private = std::fs::metadata(path)
        .is_ok_and(|m| crate::util::fs::less_open_than_new(m.permissions().mode()));
    if !private && std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    write_atomic(path, |w| Ok(w.write_all(bytes)?))
}
