//! Single-file outputs: the OCI archive (an image layout in a tar) and the docker-archive
//! (`docker save`'s format: uncompressed layers, `manifest.json`), to a file or a stream.

use std::io::{self, Write};

use anyhow::{Context, Result};

use crate::oci::archive::{dir_header, file_header};
use crate::oci::docker_archive;
use crate::oci::image::Image;
use crate::oci::store::{self, Store};
use crate::sink::layout::{blobs_of, index_json, Named, OCI_LAYOUT};

/// An I/O error, told as the damaged cache it comes from when it does.
fn damage_first(e: io::Error) -> anyhow::Error {
    match e.get_ref().and_then(|i| i.downcast_ref::<store::Damaged>()) {
        Some(d) => anyhow::Error::new(d.clone()),
        None => e.into(),
    }
}

/// [`damage_first`] for an error that went through the docker-archive writer.
fn damage_first_in(e: anyhow::Error) -> anyhow::Error {
    let damaged = e
        .chain()
        .filter_map(|c| c.downcast_ref::<io::Error>())
        .find_map(|io| io.get_ref()?.downcast_ref::<store::Damaged>().cloned());
    match damaged {
        Some(d) => anyhow::Error::new(d),
        None => e,
    }
}

/// Writes the image as an OCI archive (an image layout in a tar).
pub fn write_oci_archive(store: &Store, images: &[Named], out: &mut dyn Write) -> Result<()> {
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
    for blob in blobs_of(images) {
        // Checked against its digest on the way: a damaged cache fails the archive.
        let f = store.open_verified(&blob.digest, blob.size)?;
        b.append_data(
            &mut file_header(blob.size),
            format!("blobs/sha256/{}", blob.hex()),
            f,
        )
        .map_err(damage_first)?;
    }
    b.into_inner()?.flush()?;
    Ok(())
}

/// Writes images as one docker-archive (`docker save` layout, uncompressed layers, each layer
/// once however many images share it).
pub fn write_docker_archive(store: &Store, images: &[&Image], out: &mut dyn Write) -> Result<()> {
    let mut w = docker_archive::Writer::new(out);
    for image in images {
        let config = store
            .read(&image.config)
            .context("cannot read the image config")?;
        let config = w.member(
            &format!("{}.json", image.config.hex()),
            image.config.size,
            config.as_slice(),
        )?;
        let mut layers = Vec::new();
        for l in &image.layers {
            let name = format!("{}/layer.tar", l.diff_id.hex());
            layers.push(
                w.member(&name, l.tar_size, l.open_tar(store)?)
                    .map_err(damage_first_in)?,
            );
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::build::plan::{Content, Entry, LayerPlan};
    use crate::oci::compress::{Codec, Compression};
    use crate::oci::reference::ImageName;

    /// An image of one layer in a fresh store (config and manifest are stand-ins: the archive
    /// writers copy them as they are).
    pub(crate) fn image(store: &Store) -> Image {
        let plan = LayerPlan {
            role: "service".into(),
            entries: vec![Entry {
                path: "app".into(),
                content: Content::Bytes(vec![b'x'; 100_000]),
                mode: 0o555,
                uid: 0,
                gid: 0,
            }],
        };
        let layer =
            crate::build::layer_writer::write_layer(store, &plan, 1, Compression::new(Codec::Gzip))
                .unwrap();
        Image {
            name: ImageName::parse("localhost/app").unwrap(),
            tags: vec!["latest".into()],
            content_tag: "latest".into(),
            config: store.put(b"{}").unwrap(),
            manifest: store.put(b"{\"schemaVersion\":2}").unwrap(),
            layers: vec![layer],
            architecture: "amd64".into(),
            variant: None,
        }
    }

    #[test]
    fn a_damaged_layer_fails_every_archive_naming_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join(".store")).unwrap();
        let img = image(&store);
        let mut good = Vec::new();
        write_oci_archive(&store, &[Named::Image(&img)], &mut good).unwrap();
        write_docker_archive(&store, &[&img], &mut good).unwrap();

        let path = store.path(&img.layers[0].blob.digest);
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 0xff; // inside the compressed stream
        std::fs::write(&path, &bytes).unwrap();
        for which in ["oci-archive", "docker-archive"] {
            let mut out = Vec::new();
            let err = if which == "oci-archive" {
                write_oci_archive(&store, &[Named::Image(&img)], &mut out)
            } else {
                write_docker_archive(&store, &[&img], &mut out)
            }
            .unwrap_err();
            assert!(store::is_damaged(&err), "{which}: {err:#}");
            let shown = format!("{err:#}");
            assert!(
                shown.contains(".store") && shown.contains("cargo oci clean"),
                "{which}: {shown}"
            );
        }
    }
}
