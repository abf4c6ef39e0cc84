//! Writes layers: a reproducible tar of a [`LayerPlan`] (sorted entries, fixed times and owners, no
//! names or device numbers), compressed on every core by [`crate::oci::compress`], streamed into the
//! blob store while both digests (the blob's and the tar's `diff_id`) are computed on the way.

use std::fs::File;
use std::io::{self, Write};

use anyhow::{Context, Result};
use tar::{EntryType, Header};

use crate::build::plan::{Content, LayerPlan};
use crate::oci::compress::{self, Compression};
use crate::oci::layer::{Exact, Layer};
use crate::oci::store::{HashWriter, Store};

/// Tars, compresses and stores one layer.
pub fn write_layer(
    store: &Store,
    plan: &LayerPlan,
    mtime: u64,
    comp: Compression,
) -> Result<Layer> {
    let blob = store.writer()?;
    let ((diff_id, tar_size), blob) = compress::compress(comp, blob, |chunks| {
        let (_, diff_id, tar_size) = write_tar(plan, mtime, HashWriter::new(chunks))?.finish();
        Ok((diff_id, tar_size))
    })
    .with_context(|| format!("cannot write the {} layer", plan.role))?;
    Ok(Layer {
        blob: blob.commit()?,
        diff_id,
        tar_size,
        media_type: comp.codec.media_type().into(),
        role: plan.role.clone(),
        reused: false,
    })
}

/// About how many bytes the layer's tar will have (headers and padding counted, long-name
/// extensions not): enough for a progress bar.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::plan::Entry;
    use crate::oci::store;

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
    fn layers_are_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for codec in [compress::Codec::Gzip, compress::Codec::Zstd] {
            let one = Compression { codec, threads: 1 };
            let a = write_layer(&store, &plan(), 1, one).unwrap();
            let b = write_layer(&store, &plan(), 1, Compression { threads: 4, ..one }).unwrap();
            assert_eq!(a, b);
            assert_eq!(a.media_type, codec.media_type());
            assert!(store.contains(&a.blob.digest));
            // The diff_id is the digest of the tar the blob decompresses to.
            let mut tar = Vec::new();
            compress::decoder(
                &a.media_type,
                store::open(&store.path(&a.blob.digest)).unwrap(),
            )
            .unwrap()
            .read_to_end(&mut tar)
            .unwrap();
            assert_eq!(crate::oci::digest::Digest::of(&tar), a.diff_id);
            assert_eq!(tar.len() as u64, a.tar_size);
        }
    }
}
