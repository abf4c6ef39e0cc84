//! The docker-archive format (`docker save`, read by `docker load` and `podman load`): a tar of
//! image configs and uncompressed layer tars, with `manifest.json` listing each image's config,
//! layers and tags. Read (from an [`Archive`] opened in place) and written here, in one place.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::oci::archive::{dir_header, file_header, Archive};

/// Largest `manifest.json` read from an archive.
const MAX_MANIFEST: u64 = 8 << 20;

/// One image of `manifest.json` (fields in sorted order, so the bytes are canonical).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The member holding the image config.
    #[serde(rename = "Config")]
    pub config: String,
    /// The members holding the layers' tars, bottom to top.
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
    /// `name:tag` references; none for an untagged image.
    #[serde(rename = "RepoTags", default, deserialize_with = "null_as_empty")]
    pub repo_tags: Vec<String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// Reads and checks `manifest.json`: every member it names must be in the archive. The error
/// says why the file is not a docker-archive.
pub fn read_manifest(ar: &Archive) -> Result<Vec<Entry>, String> {
    if !ar.contains("manifest.json") {
        return Err("it has no manifest.json".into());
    }
    let bytes = ar
        .read_member("manifest.json", MAX_MANIFEST)
        .map_err(|e| format!("manifest.json: {e:#}"))?;
    // serde's messages can quote the document (`invalid type: string "…"`): say where only.
    let entries: Vec<Entry> = serde_json::from_slice(&bytes).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => {
                "is not a list of images (Config, Layers, RepoTags)"
            }
            serde_json::error::Category::Eof => "ends too early",
            _ => "is not JSON",
        };
        format!(
            "manifest.json {what} (line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    for e in &entries {
        for m in std::iter::once(&e.config).chain(&e.layers) {
            if !ar.contains(m) {
                return Err(format!("its manifest names `{m}`, which it does not hold"));
            }
        }
    }
    Ok(entries)
}

/// Writes a docker-archive: members once each (however many images share them), then
/// `manifest.json` on [`Writer::finish`].
pub struct Writer<W: Write> {
    tar: tar::Builder<W>,
    written: BTreeSet<String>,
    entries: Vec<Entry>,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Writer {
            tar: tar::Builder::new(out),
            written: BTreeSet::new(),
            entries: Vec::new(),
        }
    }

    /// Adds the member `name` of `size` bytes from `data`, unless it is already in the archive
    /// (its name is its content's digest). Returns `name`.
    pub fn member(&mut self, name: &str, size: u64, data: impl Read) -> Result<String> {
        if self.written.insert(name.to_string()) {
            if let Some((dir, _)) = name.rsplit_once('/') {
                if self.written.insert(format!("{dir}/")) {
                    self.tar
                        .append_data(&mut dir_header(), format!("{dir}/"), io::empty())?;
                }
            }
            self.tar
                .append_data(&mut file_header(size), name, data.take(size))?;
        }
        Ok(name.to_string())
    }

    /// Lists an image whose members are already added.
    pub fn image(&mut self, entry: Entry) {
        self.entries.push(entry);
    }

    /// Writes `manifest.json` and ends the archive.
    pub fn finish(mut self) -> Result<W> {
        let manifest = serde_json::to_vec(&self.entries)?;
        self.tar.append_data(
            &mut file_header(manifest.len() as u64),
            "manifest.json",
            manifest.as_slice(),
        )?;
        let mut out = self.tar.into_inner()?;
        out.flush()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_archives_read_back() {
        let mut w = Writer::new(Vec::new());
        let c = w.member("abc.json", 2, &b"{}"[..]).unwrap();
        let l = w.member("d1/layer.tar", 3, &b"xyz"[..]).unwrap();
        // A member shared by two images is written once.
        w.member("d1/layer.tar", 3, &b"xyz"[..]).unwrap();
        for tag in ["a:1", "b:2"] {
            w.image(Entry {
                config: c.clone(),
                layers: vec![l.clone()],
                repo_tags: vec![tag.into()],
            });
        }
        let bytes = w.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tar");
        std::fs::write(&path, &bytes).unwrap();
        let ar = Archive::open(&path).unwrap();
        let entries = read_manifest(&ar).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].repo_tags, ["b:2"]);
        assert_eq!(entries[0].layers, ["d1/layer.tar"]);
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(
            text.matches("xyz").count(),
            1,
            "a shared layer is stored once"
        );
        assert!(
            text.contains(r#"[{"Config":"abc.json","Layers":["d1/layer.tar"],"RepoTags":["a:1"]}"#)
        );
    }

    #[test]
    fn a_manifest_naming_missing_members_is_refused() {
        let mut w = Writer::new(Vec::new());
        w.image(Entry {
            config: "missing.json".into(),
            layers: vec![],
            repo_tags: vec![],
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tar");
        std::fs::write(&path, w.finish().unwrap()).unwrap();
        let err = read_manifest(&Archive::open(&path).unwrap()).unwrap_err();
        assert!(err.contains("missing.json"), "{err}");
    }
}
