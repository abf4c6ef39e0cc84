//! Takes one base layer into the blob store: the blob is streamed once, its digest checked, its
//! tar decompressed and hashed to check the diff_id, and every entry checked against the layers
//! below it (normalised paths, nothing below a link or a file, hard links to files before them,
//! only known entry types: see [`crate::oci::flatten`]). Uncompressed layers are gzip-compressed
//! on the way (the same fixed settings as our own layers), so every layer of an image is gzip.

use std::io::{self, Read, Write};

use anyhow::{bail, Context, Result};
use flate2::{read::MultiGzDecoder, Compression, GzBuilder};
use sha2::{Digest, Sha256};

use crate::oci::flatten::Tree;
use crate::oci::layer::{Layer, MEDIA_TYPE_GZIP};
use crate::oci::store::Store;

/// Reads through to `r`, copying every byte read to `w`.
struct Tee<R, W> {
    r: R,
    w: W,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.r.read(buf)?;
        self.w.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Counts and hashes what is read through it.
struct HashReader<R> {
    r: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.r.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

impl<R> HashReader<R> {
    fn new(r: R) -> Self {
        HashReader {
            r,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    fn finish(self) -> (R, String, u64) {
        let d = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        (self.r, d, self.count)
    }
}

/// Checks every entry of a layer tar against the layers below (`shape`), then reads what follows
/// the archive to its end.
fn check_entries<R: Read>(mut r: R, shape: &mut Tree, what: &str) -> Result<R> {
    shape.apply(&mut r, what)?;
    io::copy(&mut r, &mut io::sink())?;
    Ok(r)
}

/// Stores one layer read from `raw`, checking `expected_blob` (when the source names blobs by
/// digest) and `diff_id`.
pub fn import(
    store: &Store,
    raw: impl Read,
    expected_blob: Option<&str>,
    diff_id: &str,
    shape: &mut Tree,
    what: &str,
) -> Result<Layer> {
    let mut raw = io::BufReader::with_capacity(1 << 16, raw);
    let head = {
        use io::BufRead;
        raw.fill_buf()
            .with_context(|| format!("cannot read {what}"))?
            .get(..4)
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    };
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        bail!("{what} is zstd-compressed; cargo-oci reads gzip or uncompressed layers only");
    }
    let (blob, got_diff, tar_size) = if head.starts_with(&[0x1f, 0x8b]) {
        let tee = Tee {
            r: raw,
            w: store.writer()?,
        };
        let plain = HashReader::new(MultiGzDecoder::new(tee));
        let plain = check_entries(plain, shape, what)?;
        let (gz, diff, size) = plain.finish();
        let mut tee = gz.into_inner();
        io::copy(&mut tee, &mut io::sink())?;
        let blob = tee.w.commit()?;
        if let Some(want) = expected_blob {
            if blob.digest != want {
                bail!(
                    "{what}: the blob's digest is {}, not the {want} its manifest names",
                    blob.digest
                );
            }
        }
        (blob, diff, size)
    } else {
        if let Some(want) = expected_blob {
            // An uncompressed blob's digest is its diff_id.
            if want != diff_id {
                bail!("{what}: an uncompressed layer's digest {want} differs from its diff_id {diff_id}");
            }
        }
        let gz = GzBuilder::new()
            .mtime(0)
            .operating_system(255)
            .write(store.writer()?, Compression::new(6));
        let plain = HashReader::new(Tee { r: raw, w: gz });
        let plain = check_entries(plain, shape, what)?;
        let (tee, diff, size) = plain.finish();
        let blob = tee
            .w
            .finish()
            .context("cannot finish the gzip stream")?
            .commit()?;
        (blob, diff, size)
    };
    if got_diff != diff_id {
        bail!(
            "{what}: its content hashes to {got_diff}, not the diff_id {diff_id} its config names"
        );
    }
    Ok(Layer {
        blob,
        diff_id: diff_id.to_string(),
        tar_size,
        media_type: MEDIA_TYPE_GZIP.into(),
        role: "base".into(),
        reused: true,
    })
}
