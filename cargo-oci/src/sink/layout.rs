//! The OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/`): written or updated in
//! place, one `ref.name` per tag, new blobs first and `index.json` last.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result};
use oci_spec::image::{DescriptorBuilder, ImageIndexBuilder, MediaType, PlatformBuilder};

use crate::oci::image::{canonical_json, Image};
use crate::oci::store::{self, Store};
use crate::util::fs::write_atomic;

/// The annotation naming each manifest in an index.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The index of some images: one manifest descriptor per tag, each named by `ref.name`.
pub fn index_json(images: &[&Image]) -> Result<Vec<u8>> {
    let mut manifests = Vec::new();
    for image in images {
        manifests.extend(descriptors(image)?);
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()?;
    canonical_json(&index)
}

fn descriptors(image: &Image) -> Result<Vec<oci_spec::image::Descriptor>> {
    let platform = PlatformBuilder::default()
        .architecture(oci_spec::image::Arch::from(image.architecture.as_str()))
        .os(oci_spec::image::Os::Linux)
        .build()?;
    image
        .references()
        .into_iter()
        .map(|r| {
            Ok(DescriptorBuilder::default()
                .media_type(MediaType::ImageManifest)
                .digest(image.manifest.digest.parse::<oci_spec::image::Digest>()?)
                .size(image.manifest.size)
                .platform(platform.clone())
                .annotations(
                    [(REF_NAME.to_string(), r)]
                        .into_iter()
                        .collect::<std::collections::HashMap<_, _>>(),
                )
                .build()?)
        })
        .collect()
}

pub(crate) const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Every blob of the images: configs, manifests, layers; each once, in a stable order.
pub(crate) fn blob_digests<'a>(images: &[&'a Image]) -> Vec<&'a str> {
    let mut v: Vec<&str> = Vec::new();
    for image in images {
        for d in [image.config.digest.as_str(), image.manifest.digest.as_str()]
            .into_iter()
            .chain(image.layers.iter().map(|l| l.blob.digest.as_str()))
        {
            if !v.contains(&d) {
                v.push(d);
            }
        }
    }
    v
}

/// Writes (or updates) an OCI image layout at `dir`. New blobs go in first; `index.json` is
/// replaced in one rename; blobs no longer referenced are removed last.
pub fn write_layout(store: &Store, images: &[&Image], dir: &Path) -> Result<()> {
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs)
        .with_context(|| format!("cannot create {}", blobs.display()))?;
    for d in blob_digests(images) {
        store::link_or_copy(&store.path(d), &blobs.join(d.trim_start_matches("sha256:")))?;
    }
    write_if_changed(&dir.join("oci-layout"), OCI_LAYOUT)?;
    write_if_changed(&dir.join("index.json"), &index_json(images)?)?;

    let keep: BTreeSet<&str> = blob_digests(images)
        .into_iter()
        .map(|d| d.trim_start_matches("sha256:"))
        .collect();
    for entry in std::fs::read_dir(&blobs)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // A recent temporary file is another writer's blob on its way in: leave it alone.
        let in_flight = name.starts_with(".tmp-")
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() < 3600));
        if !keep.contains(name.as_str()) && !in_flight {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically, unless it already holds exactly them.
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    write_atomic(path, |w| Ok(w.write_all(bytes)?))
}
