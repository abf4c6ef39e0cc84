//! Writes an image out of the blob store: as an OCI image layout directory, an OCI archive, or a
//! docker-archive (to a file or a stream for `docker load`/`podman load`). Every output appears
//! atomically: a failed or interrupted write leaves the previous output as it was.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use oci_spec::image::{DescriptorBuilder, ImageIndexBuilder, MediaType, PlatformBuilder};
use serde_json::json;

use crate::error::UsageError;
use crate::image::{canonical_json, Image};
use crate::store::{self, Store};

/// The annotation naming each manifest in an index.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The output formats of `cargo oci build`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// OCI image layout directory.
    Oci,
    /// OCI image layout in a tar file.
    OciArchive,
    /// `docker save` format, for `docker load` and `podman load`.
    DockerArchive,
}

/// Checks, before any work, that `path` can be written: its directory exists and is a directory.
pub fn check_writable(path: &Path, what: &str) -> Result<(), UsageError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let fail = |why: String| {
        UsageError::new(format!(
            "cannot write the {what} to {}: {why}",
            path.display()
        ))
        .hint("choose an output path in an existing, writable directory")
    };
    match std::fs::metadata(&parent) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(fail(format!("{} is not a directory", parent.display()))),
        Err(e) => return Err(fail(format!("{}: {e}", parent.display()))),
    }
    if path.is_dir() && what != "image layout" {
        return Err(fail("it is a directory".into()));
    }
    // Prove it by creating (and removing) a file where the output will go.
    tempfile::Builder::new()
        .prefix(".cargo-oci-check-")
        .tempfile_in(&parent)
        .map(drop)
        .map_err(|e| fail(e.to_string()))
}

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

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Every blob of the images: configs, manifests, layers; each once, in a stable order.
fn blob_digests<'a>(images: &[&'a Image]) -> Vec<&'a str> {
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

/// Writes `path` through a temporary file in the same directory, renamed into place on success.
pub fn write_atomic(path: &Path, f: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".cargo-oci-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    let mut w = io::BufWriter::new(tmp);
    f(&mut w)?;
    let tmp = w.into_inner().map_err(|e| e.into_error())?;
    tmp.as_file().sync_all().ok();
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// A tar header for a regular file of an archive output.
fn file_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_size(size);
    h
}

fn dir_header() -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_mtime(0);
    h.set_size(0);
    h
}

/// Writes the image as an OCI archive (an image layout in a tar).
pub fn write_oci_archive(store: &Store, images: &[&Image], out: &mut dyn Write) -> Result<()> {
    let mut b = tar::Builder::new(out);
    b.append_data(
        &mut file_header(OCI_LAYOUT.len() as u64),
        "oci-layout",
        OCI_LAYOUT,
    )?;
    let index = index_json(images)?;
    b.append_data(
        &mut file_header(index.len() as u64),
        "index.json",
        index.as_slice(),
    )?;
    for d in ["blobs/", "blobs/sha256/"] {
        b.append_data(&mut dir_header(), d, io::empty())?;
    }
    for d in blob_digests(images) {
        let path = store.path(d);
        let f = store::open(&path)?;
        let size = f.metadata()?.len();
        b.append_data(
            &mut file_header(size),
            format!("blobs/sha256/{}", d.trim_start_matches("sha256:")),
            f,
        )?;
    }
    b.into_inner()?.flush()?;
    Ok(())
}

/// Writes images as one docker-archive (`docker save` layout, uncompressed layers, each layer
/// once however many images share it).
pub fn write_docker_archive(store: &Store, images: &[&Image], out: &mut dyn Write) -> Result<()> {
    let mut b = tar::Builder::new(out);
    let mut written = BTreeSet::new();
    let mut manifest = Vec::new();
    for image in images {
        let config_name = format!("{}.json", image.config.hex());
        if written.insert(config_name.clone()) {
            let config = std::fs::read(store.path(&image.config.digest))
                .context("cannot read the image config")?;
            b.append_data(
                &mut file_header(config.len() as u64),
                &config_name,
                config.as_slice(),
            )?;
        }
        let mut layer_names = Vec::new();
        for l in &image.layers {
            let hex = l.diff_id.trim_start_matches("sha256:");
            let name = format!("{hex}/layer.tar");
            if written.insert(name.clone()) {
                b.append_data(&mut dir_header(), format!("{hex}/"), io::empty())?;
                let blob = store::open(&store.path(&l.blob.digest))?;
                let tar = crate::layer::Exact::new(
                    crate::compress::decoder(&l.media_type, blob)?,
                    l.tar_size,
                    format!("layer {}", l.blob.digest),
                );
                b.append_data(&mut file_header(l.tar_size), &name, tar)?;
            }
            layer_names.push(name);
        }
        manifest.push(json!({
            "Config": config_name,
            "RepoTags": image.references(),
            "Layers": layer_names,
        }));
    }
    let manifest = serde_json::to_vec(&manifest)?;
    b.append_data(
        &mut file_header(manifest.len() as u64),
        "manifest.json",
        manifest.as_slice(),
    )?;
    b.into_inner()?.flush()?;
    Ok(())
}
