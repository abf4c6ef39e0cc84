//! The registry operations of a pull: a manifest or index by digest (asking for every OCI and
//! Docker manifest and index type), and a blob streamed. Both go through [`Client::send`], so
//! they are retried like every request; a blob whose connection breaks mid-way is resumed with a
//! `Range` request (or read again from the start, skipping what was read, when the registry
//! ignores ranges), within the same number of attempts. Checking what arrives against its digest
//! is the caller's job.

use std::io::Read;

use anyhow::{bail, Result};

use super::client::{header, unexpected, with_auth, Client};

/// The manifest and index media types a pull accepts.
pub const ACCEPT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

impl Client {
    /// The manifest or index `digest` of `repo`, at most `limit` bytes (more is an error).
    pub fn get_manifest(&self, repo: &str, digest: &str, limit: u64) -> Result<Vec<u8>> {
        let url = self.url(&format!("{repo}/manifests/{digest}"));
        let what = format!("get the manifest {digest} of {repo}");
        let resp = self.send(&what, &|a, auth| {
            with_auth(a.get(&url), auth)
                .header("Accept", ACCEPT_MANIFEST)
                .call()
        })?;
        match resp.status().as_u16() {
            200 => {}
            404 => bail!(
                "{what}: {}/{repo} has no manifest {digest} (the answer was 404)",
                self.registry
            ),
            _ => return Err(unexpected(&what, resp)),
        }
        let mut bytes = Vec::new();
        resp.into_body()
            .into_reader()
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| anyhow::anyhow!("{what}: the answer broke off: {e}"))?;
        if bytes.len() as u64 > limit {
            bail!("{what}: it is larger than {limit} bytes: not a manifest");
        }
        Ok(bytes)
    }

    /// The blob `digest` of `repo`, streamed.
    pub fn get_blob<'c>(&'c self, repo: &str, digest: &str) -> Result<BlobReader<'c>> {
        let mut reader = BlobReader {
            client: self,
            url: self.url(&format!("{repo}/blobs/{digest}")),
            what: format!("get the blob {digest} of {repo}"),
            body: None,
            offset: 0,
            resumed: 0,
        };
        reader.body = Some(reader.request()?);
        Ok(reader)
    }
}

/// A blob being read from a registry, resumed where it broke off when the connection drops.
pub struct BlobReader<'c> {
    client: &'c Client,
    url: String,
    what: String,
    body: Option<Box<dyn Read + Send + 'static>>,
    /// Bytes handed out so far.
    offset: u64,
    /// Times the body was requested again.
    resumed: u32,
}

impl BlobReader<'_> {
    /// GETs the blob from `offset` on.
    fn request(&self) -> Result<Box<dyn Read + Send + 'static>> {
        let range = format!("bytes={}-", self.offset);
        let from = self.offset;
        let resp = self.client.send(&self.what, &|a, auth| {
            let req = with_auth(a.get(&self.url), self.client.same_origin(&self.url, auth));
            if from > 0 {
                req.header("Range", &range).call()
            } else {
                req.call()
            }
        })?;
        let status = resp.status().as_u16();
        let partial = status == 206
            && header(&resp, "content-range")
                .is_some_and(|r| r.starts_with(&format!("bytes {from}-")));
        match status {
            200 => {
                let mut body = resp.into_body().into_reader();
                if from > 0 {
                    // Ranges not served: read again up to where the last answer broke off.
                    let skipped = std::io::copy(&mut (&mut body).take(from), &mut std::io::sink())?;
                    if skipped != from {
                        bail!("{}: the blob is shorter on a second read", self.what);
                    }
                }
                Ok(Box::new(body))
            }
            206 if partial => Ok(Box::new(resp.into_body().into_reader())),
            404 => bail!(
                "{}: {} has no such blob (the answer was 404)",
                self.what,
                self.client.registry
            ),
            _ => Err(unexpected(&self.what, resp)),
        }
    }
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let body = match &mut self.body {
                Some(b) => b,
                None => {
                    let b = self.request().map_err(std::io::Error::other)?;
                    self.body.insert(b)
                }
            };
            match body.read(buf) {
                Ok(n) => {
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if self.resumed + 1 < self.client.opts.attempts => {
                    let _ = e;
                    self.body = None;
                    self.resumed += 1;
                    std::thread::sleep(self.client.backoff(self.resumed));
                }
                Err(e) => {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!(
                            "{}: the connection broke off at byte {} after {} attempts: {e}",
                            self.what,
                            self.offset,
                            self.resumed + 1
                        ),
                    ))
                }
            }
        }
    }
}
