//! Takes one base layer into the blob store: the blob is streamed once, its digest checked, its
//! tar decoded by the codec its media type names (gzip, zstd or none) and hashed to check the
//! diff_id, and every entry checked against the layers below it (normalised paths, nothing below
//! a link or a file, hard links to files before them, only known entry types: see
//! [`crate::oci::flatten`]). Compressed blobs are stored as they are, so their digests stay;
//! uncompressed layers are gzip-compressed on the way (the same fixed settings as our own layers).

use std::io::{self, BufRead, Read, Write};

use anyhow::{bail, Context, Result};
use flate2::{Compression, GzBuilder};
use sha2::{Digest as _, Sha256};

use crate::oci::compress;
use crate::oci::digest::Digest;
use crate::oci::flatten::Tree;
use crate::oci::layer::{Layer, MEDIA_TYPE_GZIP, MEDIA_TYPE_ZSTD};
use crate::oci::store::Store;
use crate::util::error::UsageError;

/// The OCI media type of an uncompressed layer.
pub const MEDIA_TYPE_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// The Docker (schema 2) media type of a gzip layer.
pub const MEDIA_TYPE_DOCKER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// How a base layer's blob is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gzip,
    Zstd,
    /// A plain tar.
    Tar,
}

impl Encoding {
    /// The encoding a manifest's layer media type names.
    pub fn from_media_type(media_type: &str, what: &str) -> Result<Encoding> {
        Ok(match media_type {
            MEDIA_TYPE_GZIP | MEDIA_TYPE_DOCKER_GZIP => Encoding::Gzip,
            MEDIA_TYPE_ZSTD => Encoding::Zstd,
            MEDIA_TYPE_TAR => Encoding::Tar,
            other => {
                return Err(UsageError::new(format!(
                    "{what} has the media type `{other}`, which cargo-oci cannot read"
                ))
                .hint(format!(
                    "cargo-oci reads layers of the types {MEDIA_TYPE_GZIP}, {MEDIA_TYPE_ZSTD}, \
                     {MEDIA_TYPE_TAR} and {MEDIA_TYPE_DOCKER_GZIP}: convert the base, e.g. with \
                     `skopeo copy --dest-compress-format gzip SOURCE oci:DIR:TAG`"
                ))
                .into())
            }
        })
    }

    /// The encoding of a blob that comes with no media type (a docker-archive's layer file),
    /// from its first bytes.
    pub fn sniff(head: &[u8]) -> Encoding {
        if head.starts_with(&[0x1f, 0x8b]) {
            Encoding::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Encoding::Zstd
        } else {
            Encoding::Tar
        }
    }

    /// The media type of the layer as stored (uncompressed layers are stored gzip-compressed).
    fn stored_media_type(self) -> &'static str {
        match self {
            Encoding::Gzip | Encoding::Tar => MEDIA_TYPE_GZIP,
            Encoding::Zstd => MEDIA_TYPE_ZSTD,
        }
    }
}

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
    fn finish(self) -> (R, Digest, u64) {
        let d = Digest::from_hash(&self.hasher.finalize());
        (self.r, d, self.count)
    }
}

/// Checks every entry of a layer tar against the layers below (`shape`), then reads what follows
/// the archive to its end.
fn check_entries<R: Read>(mut r: R, shape: &mut Tree, what: &str) -> Result<R> {
    shape.apply(&mut r, what)?;
    io::copy(&mut r, &mut io::sink()).with_context(|| format!("cannot read {what}"))?;
    Ok(r)
}

/// What a source says about one layer.
pub struct Expected<'a> {
    /// How the blob is encoded; None: find out from its first bytes.
    pub encoding: Option<Encoding>,
    /// The blob's digest, when the source names blobs by digest.
    pub blob: Option<&'a Digest>,
    /// The digest of the uncompressed tar, from the image config.
    pub diff_id: &'a Digest,
}

/// Stores one layer read from `raw`, checking its blob digest and diff_id.
pub fn import(
    store: &Store,
    raw: impl Read,
    expected: &Expected,
    shape: &mut Tree,
    what: &str,
) -> Result<Layer> {
    let mut raw = io::BufReader::with_capacity(1 << 16, raw);
    let encoding = match expected.encoding {
        Some(e) => e,
        None => Encoding::sniff(
            raw.fill_buf()
                .with_context(|| format!("cannot read {what}"))?,
        ),
    };
    let (blob, got_diff, tar_size) = match encoding {
        Encoding::Gzip | Encoding::Zstd => {
            let media_type = encoding.stored_media_type();
            let mut out = store.writer()?;
            let (diff, size) = {
                let tee = Tee {
                    r: &mut raw,
                    w: &mut out,
                };
                let plain = compress::decoder(media_type, tee)
                    .with_context(|| format!("{what}: cannot start decoding it"))?;
                let (_, diff, size) = check_entries(HashReader::new(plain), shape, what)?.finish();
                (diff, size)
            };
            // Whatever follows the compressed stream is part of the blob too.
            io::copy(&mut raw, &mut out).with_context(|| format!("cannot read {what}"))?;
            let blob = out.commit()?;
            if let Some(want) = expected.blob {
                if blob.digest != *want {
                    bail!(
                        "{what}: the blob's digest is {}, not the {want} its manifest names",
                        blob.digest
                    );
                }
            }
            (blob, diff, size)
        }
        Encoding::Tar => {
            if let Some(want) = expected.blob {
                // An uncompressed blob's digest is its diff_id.
                if want != expected.diff_id {
                    bail!(
                        "{what}: an uncompressed layer's digest {want} differs from its diff_id {}",
                        expected.diff_id
                    );
                }
            }
            let gz = GzBuilder::new()
                .mtime(0)
                .operating_system(255)
                .write(store.writer()?, Compression::new(6));
            let plain = HashReader::new(Tee { r: raw, w: gz });
            let (tee, diff, size) = check_entries(plain, shape, what)?.finish();
            let blob = tee
                .w
                .finish()
                .context("cannot finish the gzip stream")?
                .commit()?;
            (blob, diff, size)
        }
    };
    if got_diff != *expected.diff_id {
        bail!(
            "{what}: its content hashes to {got_diff}, not the diff_id {} its config names",
            expected.diff_id
        );
    }
    Ok(Layer {
        blob,
        diff_id: expected.diff_id.clone(),
        tar_size,
        media_type: encoding.stored_media_type().into(),
        role: "base".into(),
        reused: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::error::exit_code;

    fn layer_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in [
            ("etc/motd", &b"hello\n"[..]),
            ("bin/tool", &[7u8; 3000][..]),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, path, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn gzip(tar: &[u8]) -> Vec<u8> {
        let mut w = GzBuilder::new().write(Vec::new(), Compression::default());
        w.write_all(tar).unwrap();
        w.finish().unwrap()
    }

    fn zstd(tar: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(tar, 3).unwrap()
    }

    fn import_one(
        store: &Store,
        blob: &[u8],
        encoding: Option<Encoding>,
        digest: Option<&Digest>,
        diff_id: &Digest,
    ) -> Result<Layer> {
        let expected = Expected {
            encoding,
            blob: digest,
            diff_id,
        };
        import(store, blob, &expected, &mut Tree::shape(), "layer")
    }

    fn read_back(store: &Store, l: &Layer) -> Vec<u8> {
        let mut v = Vec::new();
        l.open_tar(store).unwrap().read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn every_codec_by_media_type_keeps_the_blob_and_checks_the_diff_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tar = layer_tar();
        let diff = Digest::of(&tar);
        for (media_type, blob, stored) in [
            (MEDIA_TYPE_GZIP, gzip(&tar), MEDIA_TYPE_GZIP),
            (MEDIA_TYPE_DOCKER_GZIP, gzip(&tar), MEDIA_TYPE_GZIP),
            (MEDIA_TYPE_ZSTD, zstd(&tar), MEDIA_TYPE_ZSTD),
            (MEDIA_TYPE_TAR, tar.clone(), MEDIA_TYPE_GZIP),
        ] {
            let enc = Encoding::from_media_type(media_type, "layer").unwrap();
            let digest = Digest::of(&blob);
            let l = import_one(&store, &blob, Some(enc), Some(&digest), &diff).unwrap();
            assert_eq!(l.media_type, stored, "{media_type}");
            assert_eq!(l.diff_id, diff);
            assert_eq!(l.tar_size, tar.len() as u64);
            if enc != Encoding::Tar {
                assert_eq!(l.blob.digest, digest, "{media_type}: the blob is kept");
            }
            assert_eq!(read_back(&store, &l), tar, "{media_type}");

            // Another diff_id, another blob digest: both refused.
            let wrong = Digest::from_hex(&"0".repeat(64)).unwrap();
            let e = import_one(&store, &blob, Some(enc), None, &wrong).unwrap_err();
            assert!(
                e.to_string().contains("not the diff_id"),
                "{media_type}: {e}"
            );
            let e = import_one(&store, &blob, Some(enc), Some(&wrong), &diff).unwrap_err();
            assert!(
                e.to_string().contains("digest") && e.to_string().contains(wrong.as_str()),
                "{media_type}: {e}"
            );
        }
    }

    #[test]
    fn a_blob_that_is_not_what_its_media_type_says_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tar = layer_tar();
        let diff = Digest::of(&tar);
        let z = zstd(&tar);
        let g = gzip(&tar);
        for (enc, blob) in [
            (Encoding::Gzip, &z),
            (Encoding::Zstd, &g),
            (Encoding::Tar, &g),
        ] {
            assert!(
                import_one(&store, blob, Some(enc), Some(&Digest::of(blob)), &diff).is_err(),
                "{enc:?}"
            );
        }
        let e = Encoding::from_media_type("application/vnd.oci.image.layer.v1.tar+lz4", "layer 2")
            .unwrap_err()
            .to_string();
        assert!(e.contains("layer 2") && e.contains("tar+lz4"), "{e}");
        let e = Encoding::from_media_type("application/x-unknown", "layer 1").unwrap_err();
        assert_eq!(exit_code(&e), 2, "the base is the user's to fix: {e}");
    }

    #[test]
    fn docker_archive_layers_are_told_by_their_first_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tar = layer_tar();
        let diff = Digest::of(&tar);
        for (blob, stored) in [
            (tar.clone(), MEDIA_TYPE_GZIP),
            (gzip(&tar), MEDIA_TYPE_GZIP),
            (zstd(&tar), MEDIA_TYPE_ZSTD),
        ] {
            let l = import_one(&store, &blob, None, None, &diff).unwrap();
            assert_eq!(l.media_type, stored);
            assert_eq!(read_back(&store, &l), tar);
        }
    }
}
