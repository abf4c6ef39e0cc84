//! Single-file outputs: the OCI archive (an image layout in a tar) and the docker-archive
//! (`docker save`'s format: uncompressed layers, `manifest.json`), to a file or a stream.

use std::io::{self, Write};

use anyhow::{Context, Result};

use crate::oci::archive::{dir_header, file_header};
use crate::oci::docker_archive;
use crate::oci::image::Image;
use crate::oci::store::{self, Store};
use crate::sink::layout::{blob_digests, index_json, OCI_LAYOUT};

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
    let mut w = docker_archive::Writer::new(out);
    for image in images {
        let config = store::open(&store.path(&image.config.digest))
            .context("cannot read the image config")?;
        let config = w.member(
            &format!("{}.json", image.config.hex()),
            image.config.size,
            config,
        )?;
        let mut layers = Vec::new();
        for l in &image.layers {
            let name = format!("{}/layer.tar", l.diff_id.trim_start_matches("sha256:"));
            layers.push(w.member(&name, l.tar_size, l.open_tar(store)?)?);
        }
        w.image(docker_archive::Entry {
            config,
            layers,
            repo_tags: image.references(),
        });
    }
    w.finish()?;
    Ok(())
}
