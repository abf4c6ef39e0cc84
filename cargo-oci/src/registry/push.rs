//! The registry operations of a push: blob existence (`HEAD`), cross-repository mounts,
//! monolithic and chunked blob uploads, and manifest `PUT`s, each through [`Client::send`] and
//! so retried like every request. A small blob goes up in one request where the registry takes
//! it (`POST ...?digest=` with the bytes, answered `201`); a registry that answers `202` instead
//! gets it in the session it opened, as a larger blob does.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};

use super::auth;
use super::client::{drain, header, unexpected, with_auth, Client};
use crate::oci::digest::Digest;

/// A blob file to upload.
#[derive(Debug, Clone)]
pub struct BlobFile {
    pub digest: Digest,
    pub size: u64,
    pub path: PathBuf,
}

/// Blobs up to this size are offered in the request that opens the upload (the distribution
/// spec's single-`POST` upload); a registry that does not take them that way reads and drops
/// so few bytes at no cost.
pub const SINGLE_POST_MAX: u64 = 64 * 1024;

/// What a mount request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// Mounted; `confirmed` when the answer named the blob's digest.
    Mounted { confirmed: bool },
    /// The registry did not mount but opened an upload session at this location.
    Upload(String),
}

impl Client {
    /// The size of the blob if the repository has it.
    pub fn blob_size(&self, repo: &str, digest: &Digest) -> Result<Option<u64>> {
        let url = self.url(&format!("{repo}/blobs/{digest}"));
        let what = format!("check for blob {digest} in {repo}");
        let resp = self.send(&what, &|a, auth| with_auth(a.head(&url), auth).call())?;
        match resp.status().as_u16() {
            200 => Ok(Some(
                header(&resp, "content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            )),
            404 => Ok(None),
            _ => Err(unexpected(&what, resp)),
        }
    }

    /// The digest of the manifest `reference` (a tag, or a digest) names in `repo`: `None` when
    /// the repository has none (or does not say which). `accept` lists the manifest media types
    /// asked for.
    pub fn manifest_digest(
        &self,
        repo: &str,
        reference: &str,
        accept: &str,
    ) -> Result<Option<Digest>> {
        let url = self.url(&format!("{repo}/manifests/{reference}"));
        let what = format!("check for the manifest {reference} in {repo}");
        let resp = self.send(&what, &|a, auth| {
            with_auth(a.head(&url), auth)
                .header("Accept", accept)
                .call()
        })?;
        match resp.status().as_u16() {
            200 => {
                let theirs = answered_digest(&resp, &what)?;
                drain(resp);
                // Asked by digest, a 200 says the manifest is there even without the header.
                Ok(theirs.or_else(|| reference.parse::<Digest>().ok()))
            }
            404 => {
                drain(resp);
                Ok(None)
            }
            _ => Err(unexpected(&what, resp)),
        }
    }

    /// Asks the registry to mount `digest` from the repository `from` into `repo`.
    pub fn mount(&self, repo: &str, digest: &Digest, from: &str) -> Result<Mount> {
        let url = self.url(&format!(
            "{repo}/blobs/uploads/?mount={}&from={}",
            auth::query_escape(digest.as_str()),
            auth::query_escape(from)
        ));
        let what = format!("mount blob {digest} from {from} into {repo}");
        let resp = self.send(&what, &|a, auth| with_auth(a.post(&url), auth).send_empty())?;
        match resp.status().as_u16() {
            201 => {
                let theirs = answered_digest(&resp, &what)?;
                drain(resp);
                Ok(Mount::Mounted {
                    confirmed: theirs.as_ref() == Some(digest),
                })
            }
            202 => {
                let loc =
                    header(&resp, "location").context("the registry gave no upload location")?;
                drain(resp);
                Ok(Mount::Upload(loc))
            }
            _ => Err(unexpected(&what, resp)),
        }
    }

    /// Opens an upload session; returns its location.
    fn start_upload(&self, repo: &str, what: &str) -> Result<String> {
        let url = self.url(&format!("{repo}/blobs/uploads/"));
        let resp = self.send(what, &|a, auth| with_auth(a.post(&url), auth).send_empty())?;
        if resp.status() != 202 {
            return Err(unexpected(what, resp));
        }
        let loc = header(&resp, "location").context("the registry gave no upload location")?;
        drain(resp);
        Ok(loc)
    }

    /// Opens an upload session offering the whole of a small blob with it: `None` when the
    /// registry took it there and then (`201`, its digest checked), else the session's location.
    fn start_upload_with(&self, repo: &str, blob: &BlobFile, what: &str) -> Result<Option<String>> {
        let bytes = std::fs::read(&blob.path)
            .with_context(|| format!("cannot read blob {}", blob.path.display()))?;
        if bytes.len() as u64 != blob.size {
            bail!("blob {} changed size while being sent", blob.path.display());
        }
        let url = self.url(&format!(
            "{repo}/blobs/uploads/?digest={}",
            auth::query_escape(blob.digest.as_str())
        ));
        let resp = self.send(what, &|a, auth| {
            with_auth(a.post(&url), auth)
                .header("Content-Type", "application/octet-stream")
                .send(&bytes[..])
        })?;
        match resp.status().as_u16() {
            201 => {
                let theirs = answered_digest(&resp, what)?;
                drain(resp);
                match theirs {
                    Some(d) if d != blob.digest => bail!(
                        "{what}: the registry stored the blob as {d}, not {}; the upload was damaged",
                        blob.digest
                    ),
                    _ => Ok(None),
                }
            }
            202 => {
                let loc =
                    header(&resp, "location").context("the registry gave no upload location")?;
                drain(resp);
                Ok(Some(loc))
            }
            _ => Err(unexpected(what, resp)),
        }
    }

    /// Uploads a blob, in one request when it is at most `chunk_size` bytes, else in chunks of
    /// `chunk_size`; `session` is an upload already opened (by a mount answered with 202). A
    /// session that breaks is started over (the registry may have completed it: checked first).
    /// `sent` counts the bytes as they go. Returns whether the registry confirmed the blob's
    /// digest (in its answer, or asked afterwards).
    pub fn upload(
        &self,
        repo: &str,
        blob: &BlobFile,
        session: Option<String>,
        chunk_size: u64,
        sent: &AtomicU64,
    ) -> Result<bool> {
        let what = format!("upload blob {} to {repo}", blob.digest);
        let mut session = session;
        let tries = 3;
        for round in 1..=tries {
            if round > 1 && self.blob_size(repo, &blob.digest)? == Some(blob.size) {
                return Ok(true);
            }
            let loc = match session.take() {
                Some(l) => l,
                None if blob.size <= SINGLE_POST_MAX.min(chunk_size.max(1)) => {
                    match self.start_upload_with(repo, blob, &what)? {
                        None => {
                            sent.fetch_add(blob.size, Ordering::Relaxed);
                            return Ok(true);
                        }
                        Some(l) => l,
                    }
                }
                None => self.start_upload(repo, &what)?,
            };
            let before = sent.load(Ordering::Relaxed);
            match self.upload_session(&loc, blob, chunk_size, sent, &what) {
                Ok(confirmed) => return Ok(confirmed),
                Err(e) if round < tries => {
                    let done = sent.load(Ordering::Relaxed) - before;
                    sent.fetch_sub(done, Ordering::Relaxed);
                    let _ = e;
                }
                Err(e) => return Err(e),
            }
        }
        bail!("{what}: gave up")
    }

    /// Sends the blob's bytes in the session at `location`; returns whether the registry's
    /// answer named the blob's digest.
    fn upload_session(
        &self,
        location: &str,
        blob: &BlobFile,
        chunk_size: u64,
        sent: &AtomicU64,
        what: &str,
    ) -> Result<bool> {
        let mut file = File::open(&blob.path)
            .with_context(|| format!("cannot read blob {}", blob.path.display()))?;
        let digest_q = format!("digest={}", auth::query_escape(blob.digest.as_str()));
        let resp = if blob.size <= chunk_size.max(1) {
            let mut bytes = Vec::with_capacity(blob.size as usize);
            file.read_to_end(&mut bytes)
                .with_context(|| format!("cannot read blob {}", blob.path.display()))?;
            let url = self.location_url(location, &digest_q);
            let resp = self.send(what, &|a, auth| {
                with_auth(a.put(&url), self.same_origin(&url, auth))
                    .header("Content-Type", "application/octet-stream")
                    .send(&bytes[..])
            })?;
            sent.fetch_add(blob.size, Ordering::Relaxed);
            resp
        } else {
            let mut location = location.to_string();
            let mut offset = 0u64;
            while offset < blob.size {
                let n = chunk_size.min(blob.size - offset);
                let mut bytes = vec![0u8; n as usize];
                file.seek(SeekFrom::Start(offset))?;
                file.read_exact(&mut bytes)
                    .with_context(|| format!("cannot read blob {}", blob.path.display()))?;
                let url = self.location_url(&location, "");
                let range = format!("{offset}-{}", offset + n - 1);
                let resp = self.send(what, &|a, auth| {
                    with_auth(a.patch(&url), self.same_origin(&url, auth))
                        .header("Content-Type", "application/octet-stream")
                        .header("Content-Range", &range)
                        .send(&bytes[..])
                })?;
                if resp.status() != 202 {
                    return Err(unexpected(&format!("{what} (bytes {range})"), resp));
                }
                location = header(&resp, "location").unwrap_or(location);
                drain(resp);
                offset += n;
                sent.fetch_add(n, Ordering::Relaxed);
            }
            let url = self.location_url(&location, &digest_q);
            self.send(what, &|a, auth| {
                with_auth(a.put(&url), self.same_origin(&url, auth)).send_empty()
            })?
        };
        if resp.status() != 201 {
            return Err(unexpected(what, resp));
        }
        let theirs = answered_digest(&resp, what)?;
        drain(resp);
        match theirs {
            Some(d) if d != blob.digest => bail!(
                "{what}: the registry stored the blob as {d}, not {}; the upload was damaged",
                blob.digest
            ),
            Some(_) => Ok(true),
            None => Ok(false),
        }
    }

    /// PUTs a manifest under `reference` (a digest or a tag); returns the registry's digest of
    /// it, checked against `digest`.
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
        digest: &Digest,
    ) -> Result<()> {
        self.put_manifest_subject(repo, reference, media_type, bytes, digest)
            .map(|_| ())
    }

    /// [`Client::put_manifest`], returning the `OCI-Subject` header the registry answered with:
    /// a registry that sends it indexes the manifest's `subject` as a referrer itself.
    pub fn put_manifest_subject(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
        digest: &Digest,
    ) -> Result<Option<String>> {
        let url = self.url(&format!("{repo}/manifests/{reference}"));
        let what = format!("put the manifest {reference} in {repo}");
        let resp = self.send(&what, &|a, auth| {
            with_auth(a.put(&url), auth)
                .header("Content-Type", media_type)
                .send(bytes)
        })?;
        if resp.status() != 201 {
            return Err(unexpected(&what, resp));
        }
        let theirs = answered_digest(&resp, &what)?;
        let subject = header(&resp, "oci-subject");
        drain(resp);
        match theirs {
            Some(d) if d != *digest => {
                bail!("{what}: the registry stored the manifest as {d}, not {digest}")
            }
            _ => Ok(subject),
        }
    }
}

/// The `Docker-Content-Digest` a registry answered with, if any, parsed where it enters.
fn answered_digest(resp: &ureq::http::Response<ureq::Body>, what: &str) -> Result<Option<Digest>> {
    header(resp, "docker-content-digest")
        .map(|d| {
            d.parse::<Digest>()
                .map_err(|e| anyhow::anyhow!("{what}: the registry's Docker-Content-Digest: {e}"))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::ClientOptions;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    /// Answers one request on loopback with `201 Created` and this `Docker-Content-Digest`,
    /// after reading the request whole. Gives up after ten seconds.
    fn answer_once(digest_header: String) -> (String, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            listener.set_nonblocking(true).unwrap();
            let t0 = Instant::now();
            let conn = loop {
                match listener.accept() {
                    Ok((c, _)) => break c,
                    Err(_) if t0.elapsed() < Duration::from_secs(10) => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => panic!("no request: {e}"),
                }
            };
            conn.set_nonblocking(false).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0u8; length];
            std::io::Read::read_exact(&mut reader, &mut body).unwrap();
            let mut out = conn;
            write!(
                out,
                "HTTP/1.1 201 Created\r\nDocker-Content-Digest: {digest_header}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
        });
        (addr, server)
    }

    fn put_with_answer(digest_header: String) -> Result<()> {
        let (addr, server) = answer_once(digest_header);
        let opts = ClientOptions {
            backoff: Duration::from_millis(1),
            ..ClientOptions::default()
        };
        let client = Client::new(&addr, None, vec![], opts).unwrap();
        let bytes = b"{}";
        let got = client.put_manifest(
            "r",
            "latest",
            "application/vnd.oci.image.manifest.v1+json",
            bytes,
            &Digest::of(bytes),
        );
        server.join().unwrap();
        got
    }

    #[test]
    fn the_registry_answer_digest_is_parsed_and_checked() {
        put_with_answer(Digest::of(b"{}").to_string()).unwrap();

        let other = Digest::of(b"other");
        let e = format!("{:#}", put_with_answer(other.to_string()).unwrap_err());
        assert!(
            e.contains("stored the manifest as") && e.contains(other.as_str()),
            "{e}"
        );

        // A malformed answer is refused by the digest parser, which echoes little of it.
        let junk = format!("sha256:{}", "z".repeat(2000));
        let e = format!("{:#}", put_with_answer(junk).unwrap_err());
        assert!(
            e.contains("Docker-Content-Digest") && e.contains("not a sha256 digest"),
            "{e}"
        );
        assert!(e.len() < 400, "{e}");
    }
}
