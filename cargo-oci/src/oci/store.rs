//! A content-addressed blob store (`sha256/<hex>` files) under the target directory: every layer,
//! config and manifest cargo-oci makes lands here first, and every output is written from here.
//! Blobs appear atomically (temp file + rename), so an interrupted run leaves no half blob; a blob
//! is checked against its digest whenever it is read for an output ([`Store::open_verified`],
//! [`Store::read`], [`Store::copy_out`]), so a damaged cache never becomes a wrong image. The one
//! exception: a blob this process itself wrote or hashed, whose file still has the identity it
//! had then (device, inode, size, change time), is copied out without hashing it a second time.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::oci::digest::Digest;

/// A blob in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blob {
    pub digest: Digest,
    pub size: u64,
}

impl Blob {
    /// The hex part of the digest.
    pub fn hex(&self) -> &str {
        self.digest.hex()
    }
}

/// The store's directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    /// Damaged entries found and repaired during this run, to be told once.
    repairs: Arc<Mutex<Vec<String>>>,
}

/// A blob of the store whose bytes do not match its digest (or that is missing): the cache is
/// damaged. Its message names the cache and how to clear it.
#[derive(Debug, Clone)]
pub struct Damaged {
    /// What was wrong, naming the blob.
    pub what: String,
    /// The store's directory (`target/oci/.store`).
    pub store: PathBuf,
}

impl std::fmt::Display for Damaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cargo-oci's cache at {} is damaged: {}\n  help: run `cargo oci clean` (or delete {}) and build again",
            self.store.display(),
            self.what,
            self.store.display()
        )
    }
}

impl std::error::Error for Damaged {}

/// Whether `err` (or any of its causes, I/O errors included) is a [`Damaged`] cache.
pub fn is_damaged(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<Damaged>().is_some()
            || c.downcast_ref::<io::Error>()
                .and_then(|e| e.get_ref())
                .is_some_and(|e| e.downcast_ref::<Damaged>().is_some())
    })
}

impl Store {
    /// Opens (creating) the store at `dir`, removing temporary files that interrupted runs left
    /// there more than an hour ago.
    pub fn open(dir: &Path) -> Result<Store> {
        let dir = dir.join("sha256");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        crate::util::fs::remove_stale_temps(&dir, STALE_AFTER);
        Ok(Store {
            dir,
            repairs: Arc::default(),
        })
    }

    /// The store's own directory (`.store`), as messages name it.
    pub fn root(&self) -> &Path {
        self.dir.parent().unwrap_or(&self.dir)
    }

    /// The file holding the blob with this digest.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Notes a damaged cache entry that was repaired, for [`Store::take_repairs`].
    pub fn note_repair(&self, what: String) {
        if let Ok(mut v) = self.repairs.lock() {
            v.push(what);
        }
    }

    /// The repairs noted so far (each told once: they are taken).
    pub fn take_repairs(&self) -> Vec<String> {
        self.repairs
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }

    /// A [`Damaged`] error for the blob `digest`.
    pub fn damaged(&self, what: String) -> Damaged {
        Damaged {
            what,
            store: self.root().to_path_buf(),
        }
    }

    /// Stores `bytes`. An existing blob is kept when it holds exactly them, and replaced (a
    /// repair, noted) when it does not.
    pub fn put(&self, bytes: &[u8]) -> Result<Blob> {
        let blob = Blob {
            digest: Digest::of(bytes),
            size: bytes.len() as u64,
        };
        let path = self.path(&blob.digest);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == blob.size) {
            if std::fs::read(&path).is_ok_and(|old| old == bytes) {
                return Ok(blob);
            }
            self.note_repair(format!("blob {} did not match its digest", blob.digest));
        }
        let mut w = self.writer()?;
        w.write_all(bytes)?;
        w.commit()
    }

    /// A writer whose bytes become a blob on [`BlobWriter::commit`].
    pub fn writer(&self) -> Result<BlobWriter> {
        let tmp = temp_file(&self.dir, ".tmp-")?;
        Ok(BlobWriter {
            out: HashWriter::new(io::BufWriter::with_capacity(1 << 17, tmp)),
            dir: self.dir.clone(),
        })
    }

    /// Opens a blob for reading; the reader fails (with a [`Damaged`] error, before handing out
    /// its last bytes) unless the blob has exactly `size` bytes with this digest.
    pub fn open_verified(&self, digest: &Digest, size: u64) -> Result<Verified<File>> {
        let path = self.path(digest);
        let f = File::open(&path).map_err(|e| self.damaged(format!("blob {digest}: {e}")))?;
        let len = f.metadata()?.len();
        if len != size {
            return Err(self
                .damaged(format!("blob {digest} has {len} bytes, not {size}"))
                .into());
        }
        Ok(Verified::new(
            f,
            format!("blob {digest}"),
            digest.clone(),
            size,
            self.root(),
        ))
    }

    /// Reads a (small) blob whole, checked against its digest.
    pub fn read(&self, blob: &Blob) -> Result<Vec<u8>> {
        let mut v = Vec::with_capacity(blob.size as usize);
        self.open_verified(&blob.digest, blob.size)?
            .read_to_end(&mut v)?;
        Ok(v)
    }

    /// Reads a (small) blob whole by digest alone, checked against it.
    pub fn read_digest(&self, digest: &Digest) -> Result<Vec<u8>> {
        let bytes = std::fs::read(self.path(digest))
            .map_err(|e| self.damaged(format!("blob {digest}: {e}")))?;
        if Digest::of(&bytes) != *digest {
            return Err(self
                .damaged(format!("blob {digest} does not match its digest"))
                .into());
        }
        Ok(bytes)
    }

    /// Whether the blob is in the store with exactly its size and digest (reads it whole).
    pub fn verify(&self, blob: &Blob) -> bool {
        let path = self.path(&blob.digest);
        let Ok(mut r) = self.open_verified(&blob.digest, blob.size) else {
            return false;
        };
        let before = r.inner.metadata().ok();
        let good = io::copy(&mut r, &mut io::sink()).is_ok();
        match (good, before) {
            (true, Some(m)) => vouch(&path, &m, blob),
            _ => unvouch(&path),
        }
        good
    }

    /// Copies a blob out of the store to `dest` (a file of its own, never a link into the store,
    /// mode 0644 less the umask), checked against its digest on the way, atomically. An
    /// existing `dest` is kept only when it is not the store's own file and holds exactly the
    /// blob.
    pub fn copy_out(&self, blob: &Blob, dest: &Path) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let src = self.path(&blob.digest);
        if let Ok(m) = std::fs::metadata(dest) {
            // A link into the store, or a private file that earlier versions wrote: made again.
            let shared = std::fs::metadata(&src)
                .is_ok_and(|s| s.ino() == m.ino() && s.dev() == m.dev())
                || crate::util::fs::less_open_than_new(m.mode());
            if !shared
                && m.len() == blob.size
                && file_digest(dest).ok().as_ref() == Some(&blob.digest)
            {
                return Ok(());
            }
        }
        let dir = dest.parent().context("blob destination has no directory")?;
        if std::fs::metadata(&src).is_ok_and(|m| vouched(&src, &m, &blob.digest)) {
            // Bytes this process wrote or hashed, unchanged since: copied by the kernel.
            let mut tmp = temp_file(dir, ".tmp-blob-")?;
            let copied = File::open(&src)
                .and_then(|mut f| io::copy(&mut f, tmp.as_file_mut()))
                .map_err(|e| {
                    crate::util::fs::explain_disk_full(
                        anyhow::Error::new(e).context(format!("cannot write {}", dest.display())),
                        dir,
                        dest,
                    )
                })?;
            if copied != blob.size {
                return Err(self
                    .damaged(format!("blob {} changed while it was copied", blob.digest))
                    .into());
            }
            tmp.persist(dest)
                .map_err(|e| e.error)
                .with_context(|| format!("cannot write {}", dest.display()))?;
            return Ok(());
        }
        let mut r = self.open_verified(&blob.digest, blob.size)?;
        let tmp = temp_file(dir, ".tmp-blob-")?;
        let mut w = io::BufWriter::with_capacity(1 << 17, tmp);
        io::copy(&mut r, &mut w).map_err(|e| {
            match e.get_ref().and_then(|i| i.downcast_ref::<Damaged>()) {
                Some(d) => anyhow::Error::new(d.clone()),
                None => crate::util::fs::explain_disk_full(
                    anyhow::Error::new(e).context(format!("cannot write {}", dest.display())),
                    dir,
                    dest,
                ),
            }
        })?;
        let tmp = w.into_inner().map_err(|e| {
            let e = anyhow::Error::new(e.into_error());
            crate::util::fs::explain_disk_full(e, dir, dest)
        })?;
        tmp.persist(dest)
            .map_err(|e| e.error)
            .with_context(|| format!("cannot write {}", dest.display()))?;
        Ok(())
    }
}

/// What identifies a file's bytes without reading them: device, inode, size, and the change
/// time, which every write to the file moves (and no program can set back).
type Identity = (u64, u64, u64, i64, i64);

fn identity(m: &std::fs::Metadata) -> Identity {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino(), m.len(), m.ctime(), m.ctime_nsec())
}

/// Blob files whose bytes this process wrote or hashed, with their identity then: while the
/// identity holds, the bytes are those, and copying the blob out needs no second hashing.
static VOUCHED: Mutex<Vec<(PathBuf, Identity, Digest)>> = Mutex::new(Vec::new());

fn vouch(path: &Path, m: &std::fs::Metadata, blob: &Blob) {
    if m.len() != blob.size {
        return;
    }
    if let Ok(mut v) = VOUCHED.lock() {
        v.retain(|(p, ..)| p != path);
        v.push((path.to_path_buf(), identity(m), blob.digest.clone()));
    }
}

fn unvouch(path: &Path) {
    if let Ok(mut v) = VOUCHED.lock() {
        v.retain(|(p, ..)| p != path);
    }
}

/// Whether the file at `path`, whose metadata is `m`, still holds the bytes of `digest` that
/// this process wrote or hashed.
fn vouched(path: &Path, m: &std::fs::Metadata, digest: &Digest) -> bool {
    VOUCHED.lock().is_ok_and(|v| {
        v.iter()
            .any(|(p, id, d)| p == path && *id == identity(m) && d == digest)
    })
}

/// Temporary files older than this are left-overs of an interrupted run.
pub const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// A temporary file in `dir` with this name prefix, readable by all (mode 0666 less the umask,
/// as other tools create files), removed unless persisted.
pub fn temp_file(dir: &Path, prefix: &str) -> Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix(prefix)
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))
}

/// The digest of a file's bytes.
pub fn file_digest(path: &Path) -> io::Result<Digest> {
    let mut w = HashWriter::new(io::sink());
    io::copy(&mut File::open(path)?, &mut w)?;
    Ok(w.finish().1)
}

/// A reader of exactly `size` bytes that hashes what it reads and fails, before handing out the
/// last bytes, unless they have the expected digest: a [`Damaged`] error naming `what`.
pub struct Verified<R> {
    inner: R,
    hasher: Sha256,
    left: u64,
    digest: Digest,
    what: String,
    store: PathBuf,
}

impl<R: Read> Verified<R> {
    /// `what` names the bytes in messages (`blob sha256:...`).
    pub fn new(inner: R, what: String, digest: Digest, size: u64, store: &Path) -> Self {
        Verified {
            inner,
            hasher: Sha256::new(),
            left: size,
            digest,
            what,
            store: store.to_path_buf(),
        }
    }

    fn fail(&self, why: String) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            Damaged {
                what: format!("{} {why}", self.what),
                store: self.store.clone(),
            },
        )
    }
}

impl<R: Read> Read for Verified<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(self.fail(format!("ended {} bytes early", self.left)));
        }
        self.hasher.update(&buf[..n]);
        self.left -= n as u64;
        if self.left == 0 {
            let got = Digest::from_hash(&self.hasher.clone().finalize());
            if got != self.digest {
                return Err(self.fail(format!(
                    "does not match its digest {} (its bytes hash to {got})",
                    self.digest
                )));
            }
        }
        Ok(n)
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
        let path = self.dir.join(digest.hex());
        let file = tmp
            .persist(&path)
            .map_err(|e| e.error)
            .context("cannot move a blob into place")?;
        let blob = Blob { digest, size };
        if let Ok(m) = file.metadata() {
            vouch(&path, &m, &blob);
        }
        Ok(blob)
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

    /// The inner writer, the digest and the byte count.
    pub fn finish(self) -> (W, Digest, u64) {
        (
            self.inner,
            Digest::from_hash(&self.hasher.finalize()),
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
        assert_eq!(a.digest, Digest::of(b"config"));
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

    #[test]
    fn damaged_blobs_never_reach_an_output() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join(".store")).unwrap();
        let blob = store.put(&vec![7u8; 300_000]).unwrap();
        let out = dir.path().join("out");
        store.copy_out(&blob, &out).unwrap();
        assert_eq!(file_digest(&out).unwrap(), blob.digest);
        let (a, b) = (
            std::fs::metadata(&out).unwrap(),
            std::fs::metadata(store.path(&blob.digest)).unwrap(),
        );
        assert_ne!(a.ino(), b.ino(), "an output is a copy");

        // One flipped byte: every verified read fails, naming the cache, before its last bytes.
        let mut bytes = std::fs::read(store.path(&blob.digest)).unwrap();
        bytes[1000] ^= 1;
        std::fs::write(store.path(&blob.digest), &bytes).unwrap();
        assert!(!store.verify(&blob));
        let err = store.read(&blob).unwrap_err();
        assert!(is_damaged(&err), "{err:#}");
        let shown = format!("{err:#}");
        assert!(
            shown.contains(".store") && shown.contains("cargo oci clean"),
            "{shown}"
        );
        let fresh = dir.path().join("fresh");
        let err = store.copy_out(&blob, &fresh).unwrap_err();
        assert!(is_damaged(&err), "{err:#}");
        assert!(!fresh.exists(), "nothing half-written");
        // The earlier, good output is kept as it is.
        store.copy_out(&blob, &out).unwrap();
        assert_eq!(file_digest(&out).unwrap(), blob.digest);

        // A short blob is damaged too.
        std::fs::write(store.path(&blob.digest), &bytes[..10]).unwrap();
        assert!(is_damaged(&store.read(&blob).unwrap_err()));
    }

    #[test]
    fn a_blob_replaced_after_it_was_written_is_checked_again_on_copy_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join(".store")).unwrap();
        let blob = store.put(&vec![3u8; 200_000]).unwrap();
        // Written by this process: copied without hashing, and right.
        let out = dir.path().join("out");
        store.copy_out(&blob, &out).unwrap();
        assert_eq!(file_digest(&out).unwrap(), blob.digest);
        // Another file put in its place (another inode), same size, other bytes.
        let path = store.path(&blob.digest);
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, vec![4u8; 200_000]).unwrap();
        let fresh = dir.path().join("fresh");
        let err = store.copy_out(&blob, &fresh).unwrap_err();
        assert!(is_damaged(&err), "{err:#}");
        assert!(!fresh.exists(), "nothing half-written");
    }

    #[test]
    fn stale_temporary_files_are_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let shas = dir.path().join("sha256");
        std::fs::create_dir_all(&shas).unwrap();
        let (old, new) = (shas.join(".tmp-old"), shas.join(".tmp-new"));
        std::fs::write(&old, b"x").unwrap();
        std::fs::write(&new, b"x").unwrap();
        let hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(hours_ago)
            .unwrap();
        Store::open(dir.path()).unwrap();
        assert!(!old.exists());
        assert!(new.exists());
    }
}
