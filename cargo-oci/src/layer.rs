//! Writes layers: a reproducible tar of a [`LayerPlan`] (sorted entries, fixed times and owners, no
//! names or device numbers), gzip-compressed with a fixed header, streamed into the blob store
//! while both digests (the blob's and the tar's `diff_id`) are computed on the way.

use std::fs::File;
use std::io::{self, Read, Write};

use anyhow::{Context, Result};
use flate2::{Compression, GzBuilder};
use tar::{EntryType, Header};

use crate::plan::{Content, LayerPlan};
use crate::store::{Blob, HashWriter, Store};

/// The OCI media type of gzip layers.
pub const MEDIA_TYPE_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A layer in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The compressed blob.
    pub blob: Blob,
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
    /// Size of the uncompressed tar.
    pub tar_size: u64,
    pub media_type: String,
    /// What the layer holds, for history.
    pub role: String,
}

/// Tars, compresses and stores one layer.
pub fn write_layer(store: &Store, plan: &LayerPlan, mtime: u64) -> Result<Layer> {
    write_layer_observed(store, plan, mtime, &mut |_| {})
}

/// As [`write_layer`], telling `on_bytes` how many bytes of tar went into the compressor.
pub fn write_layer_observed(
    store: &Store,
    plan: &LayerPlan,
    mtime: u64,
    on_bytes: &mut dyn FnMut(u64),
) -> Result<Layer> {
    let blob = store.writer()?;
    let gz = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(blob, Compression::new(6));
    let counted = Counted {
        inner: HashWriter::new(gz),
        on_bytes,
    };
    let tar_hash = write_tar(plan, mtime, counted)
        .with_context(|| format!("cannot write the {} layer", plan.role))?
        .inner;
    let (gz, diff_id, tar_size) = tar_hash.finish();
    let blob = gz
        .finish()
        .context("cannot finish the gzip stream")?
        .commit()?;
    Ok(Layer {
        blob,
        diff_id,
        tar_size,
        media_type: MEDIA_TYPE_GZIP.into(),
        role: plan.role.clone(),
    })
}

/// About the size of the tar [`write_layer_observed`] will count (a header and padded contents
/// per entry, ignoring long-name headers), for progress totals.
pub fn tar_size_estimate(plan: &LayerPlan) -> u64 {
    let data: u64 = plan
        .entries
        .iter()
        .map(|e| match &e.content {
            Content::File(p) => std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
            Content::Bytes(b) => b.len() as u64,
            Content::Dir | Content::Symlink(_) => 0,
        })
        .map(|n| 512 + n.div_ceil(512) * 512)
        .sum();
    data + 1024
}

/// Passes writes through, counting them.
struct Counted<'a, W> {
    inner: W,
    on_bytes: &'a mut dyn FnMut(u64),
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        (self.on_bytes)(n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the plan's entries as a tar stream to `out` and returns `out`.
pub fn write_tar<W: Write>(plan: &LayerPlan, mtime: u64, out: W) -> Result<W> {
    let mut b = tar::Builder::new(out);
    for e in &plan.entries {
        let mut h = Header::new_gnu();
        h.set_mode(e.mode);
        h.set_uid(e.uid.into());
        h.set_gid(e.gid.into());
        h.set_mtime(mtime);
        match &e.content {
            Content::Dir => {
                h.set_entry_type(EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, format!("{}/", e.path), io::empty())?;
            }
            Content::Symlink(target) => {
                h.set_entry_type(EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, &e.path, target)?;
            }
            Content::Bytes(bytes) => {
                h.set_entry_type(EntryType::Regular);
                h.set_size(bytes.len() as u64);
                b.append_data(&mut h, &e.path, bytes.as_slice())?;
            }
            Content::File(host) => {
                let f =
                    File::open(host).with_context(|| format!("cannot read {}", host.display()))?;
                let size = f.metadata()?.len();
                h.set_entry_type(EntryType::Regular);
                h.set_size(size);
                b.append_data(
                    &mut h,
                    &e.path,
                    Exact::new(f, size, host.display().to_string()),
                )?;
            }
        }
    }
    Ok(b.into_inner()?)
}

/// Reads exactly `size` bytes, failing if the source ends early (a file that shrank while it was
/// being read, a truncated blob), so that no archive entry is ever shorter than its header says.
pub(crate) struct Exact<R> {
    inner: io::Take<R>,
    left: u64,
    what: String,
}

impl<R: Read> Exact<R> {
    pub(crate) fn new(inner: R, size: u64, what: String) -> Self {
        Exact {
            inner: inner.take(size),
            left: size,
            what,
        }
    }
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{} ended {} bytes early (did it change while being read?)",
                    self.what, self.left
                ),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Entry;

    fn plan() -> LayerPlan {
        let e = |path: &str, content: Content, mode| Entry {
            path: path.into(),
            content,
            mode,
            uid: 0,
            gid: 0,
        };
        LayerPlan {
            role: "test".into(),
            entries: vec![
                e("etc", Content::Dir, 0o755),
                e("etc/a", Content::Bytes(b"hello".to_vec()), 0o444),
                e("etc/l", Content::Symlink("a".into()), 0o777),
                e(
                    &format!("etc/{}", "x".repeat(150)),
                    Content::Bytes(vec![]),
                    0o444,
                ),
            ],
        }
    }

    #[test]
    fn same_plan_same_bytes() {
        let a = write_tar(&plan(), 1, Vec::new()).unwrap();
        let b = write_tar(&plan(), 1, Vec::new()).unwrap();
        assert_eq!(a, b);
        let c = write_tar(&plan(), 2, Vec::new()).unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn tar_reads_back() {
        let bytes = write_tar(&plan(), 7, Vec::new()).unwrap();
        let mut ar = tar::Archive::new(bytes.as_slice());
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            assert_eq!(e.header().mtime().unwrap(), 7);
            assert_eq!(e.header().uid().unwrap(), 0);
            seen.push(e.path().unwrap().to_string_lossy().into_owned());
        }
        assert_eq!(seen[0], "etc/");
        assert_eq!(seen[3].len(), 154, "long names survive: {}", seen[3]);
    }

    #[test]
    fn gzip_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = write_layer(&store, &plan(), 1).unwrap();
        let b = write_layer(&store, &plan(), 1).unwrap();
        assert_eq!(a, b);
        assert!(store.contains(&a.blob.digest));
    }
}
