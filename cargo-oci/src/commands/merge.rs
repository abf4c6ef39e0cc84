//! `cargo oci merge`: several docker-archives into one that `docker load` and `podman load` read
//! as several images, each with its own names and tags. Members are renamed by their SHA-256,
//! so layers the images share are stored once and names from different archives never clash.
//! Inputs are read in place (see [`crate::source::archive`]); the output appears atomically.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::sink;
use crate::source::archive::Archive;
use crate::util::error::UsageError;

/// Largest `manifest.json` or config read from an input.
const MAX_JSON: u64 = 8 << 20;

fn not_docker_archive(path: &Path, why: impl std::fmt::Display) -> anyhow::Error {
    UsageError::new(format!("{} is not a docker-archive: {why}", path.display()))
        .hint("merge takes `docker save` files, such as `cargo oci build --format docker-archive -o FILE` writes")
        .into()
}

/// One image of an input: its config and layer member names, and tags.
struct Item {
    input: usize,
    config: String,
    layers: Vec<String>,
    tags: Vec<String>,
}

/// The SHA-256 hex of a member.
fn hash_member(ar: &Archive, name: &str) -> Result<String> {
    let mut w = crate::oci::store::HashWriter::new(io::sink());
    io::copy(&mut ar.open_member(name)?, &mut w)?;
    let (_, digest, _) = w.finish();
    Ok(digest.trim_start_matches("sha256:").to_string())
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
        if !ar.contains("manifest.json") {
            return Err(not_docker_archive(p, "it has no manifest.json"));
        }
        let manifest: Value = serde_json::from_slice(&ar.read_member("manifest.json", MAX_JSON)?)
            .map_err(|e| not_docker_archive(p, format!("manifest.json: {e}")))?;
        let list = manifest
            .as_array()
            .ok_or_else(|| not_docker_archive(p, "manifest.json is not a list"))?;
        for entry in list {
            let config = entry
                .get("Config")
                .and_then(Value::as_str)
                .ok_or_else(|| not_docker_archive(p, "an image in manifest.json has no Config"))?;
            let layers = entry
                .get("Layers")
                .and_then(Value::as_array)
                .ok_or_else(|| not_docker_archive(p, "an image in manifest.json has no Layers"))?
                .iter()
                .map(|l| l.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| not_docker_archive(p, "a layer name is not a string"))?;
            for m in std::iter::once(config).chain(layers.iter().map(String::as_str)) {
                if !ar.contains(m) {
                    return Err(not_docker_archive(
                        p,
                        format!("its manifest names `{m}`, which it does not hold"),
                    ));
                }
            }
            let tags = entry
                .get("RepoTags")
                .and_then(Value::as_array)
                .map(|t| {
                    t.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            items.push(Item {
                input: i,
                config: config.to_string(),
                layers,
                tags,
            });
        }
        archives.push(ar);
    }

    crate::util::fs::write_atomic(out, |w| write_merged(&archives, &items, w))?;
    Ok(items.len())
}

fn write_merged(archives: &[Archive], items: &[Item], w: &mut dyn Write) -> Result<()> {
    let mut b = tar::Builder::new(w);
    let mut written = std::collections::BTreeSet::new();
    let mut manifest = Vec::new();
    let mut append = |b: &mut tar::Builder<&mut dyn Write>,
                      ar: &Archive,
                      member: &str,
                      name: String|
     -> Result<String> {
        if written.insert(name.clone()) {
            let size = ar.size(member).context("member vanished")?;
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_size(size);
            b.append_data(&mut h, &name, ar.open_member(member)?.take(size))?;
        }
        Ok(name)
    };
    for item in items {
        let ar = &archives[item.input];
        let config = append(
            &mut b,
            ar,
            &item.config,
            format!("{}.json", hash_member(ar, &item.config)?),
        )?;
        let mut layers = Vec::new();
        for l in &item.layers {
            layers.push(append(
                &mut b,
                ar,
                l,
                format!("{}/layer.tar", hash_member(ar, l)?),
            )?);
        }
        manifest.push(json!({"Config": config, "RepoTags": item.tags, "Layers": layers}));
    }
    let bytes = serde_json::to_vec(&manifest)?;
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_size(bytes.len() as u64);
    b.append_data(&mut h, "manifest.json", bytes.as_slice())?;
    b.into_inner()?.flush()?;
    Ok(())
}
