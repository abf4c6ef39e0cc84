//! `cargo oci merge`: several docker-archives into one that `docker load` and `podman load` read
//! as several images, each with its own names and tags. Members are renamed by their SHA-256,
//! so layers the images share are stored once and names from different archives never clash.
//! Inputs are read in place (see [`crate::oci::archive`]); the output appears atomically.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::oci::archive::Archive;
use crate::oci::digest::Digest;
use crate::oci::docker_archive;
use crate::sink;
use crate::util::error::UsageError;

fn not_docker_archive(path: &Path, why: impl std::fmt::Display) -> anyhow::Error {
    UsageError::new(format!("{} is not a docker-archive: {why}", path.display()))
        .hint("merge takes `docker save` files, such as `cargo oci build --format docker-archive -o FILE` writes")
        .into()
}

/// One image of an input.
struct Item {
    input: usize,
    entry: docker_archive::Entry,
}

/// The digest of a member.
fn hash_member(ar: &Archive, name: &str) -> Result<Digest> {
    let mut w = crate::oci::store::HashWriter::new(io::sink());
    io::copy(&mut ar.open_member(name)?, &mut w)?;
    let (_, digest, _) = w.finish();
    Ok(digest)
}

/// Reads every input, then writes the merged archive to `out`. Returns the number of images.
pub fn merge(inputs: &[PathBuf], out: &Path) -> Result<usize> {
    if inputs.is_empty() {
        return Err(
            UsageError::new("merge needs at least one docker-archive to read")
                .hint("cargo oci merge -o OUT.tar A.tar B.tar")
                .into(),
        );
    }
    sink::check_writable(out, "merged archive")?;
    let mut archives = Vec::new();
    let mut items = Vec::new();
    for (i, p) in inputs.iter().enumerate() {
        if !p.is_file() {
            return Err(UsageError::new(format!("{} is not a file", p.display()))
                .hint("name docker-archive files to merge")
                .into());
        }
        let ar = Archive::open(p).map_err(|e| not_docker_archive(p, e))?;
        for entry in docker_archive::read_manifest(&ar).map_err(|e| not_docker_archive(p, e))? {
            items.push(Item { input: i, entry });
        }
        archives.push(ar);
    }

    crate::util::fs::write_atomic(out, |w| write_merged(&archives, &items, w))?;
    Ok(items.len())
}

fn write_merged(archives: &[Archive], items: &[Item], w: &mut dyn Write) -> Result<()> {
    let mut out = docker_archive::Writer::new(w);
    let copy = |out: &mut docker_archive::Writer<&mut dyn Write>,
                ar: &Archive,
                member: &str,
                name: String|
     -> Result<String> {
        let size = ar.size(member).context("member vanished")?;
        out.member(&name, size, ar.open_member(member)?)
    };
    for item in items {
        let ar = &archives[item.input];
        let e = &item.entry;
        let config = copy(
            &mut out,
            ar,
            &e.config,
            format!("{}.json", hash_member(ar, &e.config)?.hex()),
        )?;
        let mut layers = Vec::new();
        for l in &e.layers {
            let name = format!("{}/layer.tar", hash_member(ar, l)?.hex());
            layers.push(copy(&mut out, ar, l, name)?);
        }
        out.image(docker_archive::Entry {
            config,
            layers,
            repo_tags: e.repo_tags.clone(),
        });
    }
    out.finish()?;
    Ok(())
}
