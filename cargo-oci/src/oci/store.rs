//! A content-addressed blob store (`sha256/<hex>` files) under the target directory: every layer,
//! config and manifest cargo-oci makes lands here first, and every output is written from here.
//! Blobs appear atomically (temp file + rename), so an interrupted run leaves no half blob.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A blob in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blob {
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
}

impl Blob {
    /// The hex part of the digest.
    pub fn hex(&self) -> &str {
        self.digest.trim_start_matches("sha256:")
    }
}

/// The store's directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creating) the store at `dir`.
    pub fn open(dir: &Path) -> Result<Store> {
        let dir = dir.join("sha256");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Store { dir })
    }

    /// The file holding the blob with this digest.
    pub fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(digest.trim_start_matches("sha256:"))
    }

    pub fn contains(&self, digest: &str) -> bool {
        self.path(digest).is_file()
    }

    /// Stores `bytes` (nothing is written when the store already holds them).
    pub fn put(&self, bytes: &[u8]) -> Result<Blob> {
        let blob = Blob {
            digest: digest_of(bytes),
            size: bytes.len() as u64,
        };
        if std::fs::metadata(self.path(&blob.digest)).is_ok_and(|m| m.len() == blob.size) {
            return Ok(blob);
        }
        let mut w = self.writer()?;
        w.write_all(bytes)?;
        w.commit()
    }

    /// A writer whose bytes become a blob on [`BlobWriter::commit`].
    pub fn writer(&self) -> Result<BlobWriter> {
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&self.dir)
            .with_context(|| format!("cannot create a file in {}", self.dir.display()))?;
        Ok(BlobWriter {
            out: HashWriter::new(io::BufWriter::with_capacity(1 << 17, tmp)),
            dir: self.dir.clone(),
        })
    }
}

/// Bytes on their way into the store.
pub struct BlobWriter {
    out: HashWriter<io::BufWriter<tempfile::NamedTempFile>>,
    dir: PathBuf,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl BlobWriter {
    /// Names the blob by its digest and moves it into place.
    pub fn commit(self) -> Result<Blob> {
        let (w, digest, size) = self.out.finish();
        let tmp = w.into_inner().map_err(|e| e.into_error())?;
        let hex = digest.trim_start_matches("sha256:").to_string();
        tmp.persist(self.dir.join(&hex))
            .map_err(|e| e.error)
            .context("cannot move a blob into place")?;
        Ok(Blob { digest, size })
    }
}

/// Counts and hashes (SHA-256) what passes through to the inner writer.
pub struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// The inner writer, the `sha256:<hex>` digest and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        (
            self.inner,
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.count,
        )
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `sha256:<hex>` of some bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Copies a blob file out of the store (hard link when possible) to `dest`, atomically.
pub fn link_or_copy(src: &Path, dest: &Path) -> Result<()> {
    if dest.is_file() {
        return Ok(());
    }
    let dir = dest.parent().context("blob destination has no directory")?;
    let tmp = unique_temp_path(dir, "blob")?;
    if std::fs::hard_link(src, &tmp).is_err() {
        std::fs::copy(src, &tmp)
            .with_context(|| format!("cannot copy {} to {}", src.display(), tmp.display()))?;
    }
    std::fs::rename(&tmp, dest).with_context(|| format!("cannot write {}", dest.display()))?;
    Ok(())
}

/// A path for a temporary file in `dir` that no other writer, in this process or another, uses
/// (`dir` is created when missing).
pub fn unique_temp_path(dir: &Path, what: &str) -> Result<PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let n = N.fetch_add(1, Ordering::Relaxed);
    Ok(dir.join(format!(".tmp-{what}-{}-{n}", std::process::id())))
}

/// Opens a stored blob for reading.
pub fn open(path: &Path) -> Result<File> {
    File::open(path).with_context(|| format!("cannot read blob {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_names_blobs_by_digest_and_writes_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = store.put(b"config").unwrap();
        assert_eq!(a.digest, digest_of(b"config"));
        assert_eq!(std::fs::read(store.path(&a.digest)).unwrap(), b"config");
        let stamp = std::fs::metadata(store.path(&a.digest))
            .unwrap()
            .modified()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(store.put(b"config").unwrap(), a);
        let again = std::fs::metadata(store.path(&a.digest))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(stamp, again, "an existing blob is not rewritten");
        // A truncated blob (a crash mid-copy by another tool) is replaced.
        std::fs::write(store.path(&a.digest), b"conf").unwrap();
        store.put(b"config").unwrap();
        assert_eq!(std::fs::read(store.path(&a.digest)).unwrap(), b"config");
    }
}
