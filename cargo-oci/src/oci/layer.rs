//! A layer in the blob store: its blob, its `diff_id` and sizes, its media type and role.

use std::io::{self, Read};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::oci::compress;
use crate::oci::digest::Digest;
use crate::oci::store::{self, Blob, Store};

pub use crate::oci::compress::{MEDIA_TYPE_GZIP, MEDIA_TYPE_ZSTD};

/// A layer in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// The compressed blob.
    pub blob: Blob,
    /// The digest of the uncompressed tar.
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub tar_size: u64,
    pub media_type: String,
    /// What the layer holds, for history.
    pub role: String,
    /// Taken from the layer cache rather than written by this run.
    #[serde(skip)]
    pub reused: bool,
}

impl Layer {
    /// The layer's uncompressed tar, read from its blob in `store` through the decoder its media
    /// type names: every reader of a layer goes through here, so none picks a codec by hand.
    /// The stream is checked against the `diff_id` and `tar_size`: it fails, before its last
    /// bytes, with a [`store::Damaged`] error when the cached blob does not unpack to them.
    pub fn open_tar<'a>(&self, store: &Store) -> Result<Box<dyn Read + 'a>> {
        let blob = store::open(&store.path(&self.blob.digest))
            .map_err(|e| store.damaged(format!("layer {}: {e:#}", self.blob.digest)))?;
        let plain = compress::decoder(&self.media_type, blob)?;
        Ok(Box::new(store::Verified::new(
            ReadErrorsAreDamage(plain, store.root().to_path_buf(), self.blob.digest.clone()),
            format!("layer {} (uncompressed)", self.blob.digest),
            self.diff_id.clone(),
            self.tar_size,
            store.root(),
        )))
    }
}

/// A decoder whose read errors (a corrupt compressed stream) are a damaged cache.
struct ReadErrorsAreDamage<R>(R, std::path::PathBuf, Digest);

impl<R: Read> Read for ReadErrorsAreDamage<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                store::Damaged {
                    what: format!("layer {} cannot be decompressed: {e}", self.2),
                    store: self.1.clone(),
                },
            )
        })
    }
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
