//! The registry operations of a pull: a manifest or index by digest (asking for every OCI and
//! Docker manifest and index type), and a blob streamed. Both go through [`Client::send`], so
//! they are retried like every request; a blob whose connection breaks mid-way is resumed with a
//! `Range` request (or read again from the start, skipping what was read, when the registry
//! ignores ranges), within the same number of attempts. Checking what arrives against its digest
//! is the caller's job.

use std::io::Read;

use anyhow::{bail, Result};

use super::client::{header, unexpected, with_auth, Client};
use crate::oci::digest::Digest;

/// The manifest and index media types a pull accepts.
pub const ACCEPT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

impl Client {
    /// The manifest or index `digest` of `repo`, at most `limit` bytes (more is an error).
    pub fn get_manifest(&self, repo: &str, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
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
    pub fn get_blob<'c>(&'c self, repo: &str, digest: &Digest) -> Result<BlobReader<'c>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::ClientOptions;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::time::Duration;

    const BLOB: &[u8] = b"0123456789abcdefghij";

    /// Serves `BLOB` on loopback: the first answer breaks off after 7 bytes; later ones honour
    /// a `Range: bytes=N-` header when `ranges`, else send the whole blob again. Returns the
    /// address and the `Range` headers seen.
    fn flaky_server(ranges: bool) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for i in 0..2 {
                let Some(conn) = accept_within(&listener, Duration::from_secs(10)) else {
                    break;
                };
                conn.set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let mut range = None;
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("range:") {
                        range = Some(v.trim().to_string());
                    }
                }
                seen.push(range.clone().unwrap_or_default());
                let mut out = conn;
                let head = |status: &str, len: usize, extra: &str| {
                    format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\n{extra}Connection: close\r\n\r\n")
                };
                if i == 0 {
                    out.write_all(head("200 OK", BLOB.len(), "").as_bytes())
                        .unwrap();
                    out.write_all(&BLOB[..7]).unwrap();
                } else if let (true, Some(r)) = (ranges, range) {
                    let from: usize = r
                        .trim_start_matches("bytes=")
                        .trim_end_matches('-')
                        .parse()
                        .unwrap();
                    let extra = format!(
                        "Content-Range: bytes {from}-{}/{}\r\n",
                        BLOB.len() - 1,
                        BLOB.len()
                    );
                    out.write_all(
                        head("206 Partial Content", BLOB.len() - from, &extra).as_bytes(),
                    )
                    .unwrap();
                    out.write_all(&BLOB[from..]).unwrap();
                } else {
                    out.write_all(head("200 OK", BLOB.len(), "").as_bytes())
                        .unwrap();
                    out.write_all(BLOB).unwrap();
                }
            }
            seen
        });
        (addr, server)
    }

    /// The next connection, if one comes within `limit`.
    fn accept_within(listener: &TcpListener, limit: Duration) -> Option<std::net::TcpStream> {
        listener.set_nonblocking(true).unwrap();
        let t0 = std::time::Instant::now();
        while t0.elapsed() < limit {
            match listener.accept() {
                Ok((conn, _)) => {
                    conn.set_nonblocking(false).unwrap();
                    return Some(conn);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        None
    }

    #[test]
    fn a_broken_blob_download_resumes() {
        for ranges in [true, false] {
            let (addr, server) = flaky_server(ranges);
            let opts = ClientOptions {
                backoff: Duration::from_millis(1),
                ..ClientOptions::default()
            };
            let client = Client::new(&addr, None, vec![], opts).unwrap();
            let mut got = Vec::new();
            client
                .get_blob("r", &Digest::of(BLOB))
                .unwrap()
                .read_to_end(&mut got)
                .unwrap();
            assert_eq!(got, BLOB, "ranges served: {ranges}");
            assert_eq!(server.join().unwrap(), ["", "bytes=7-"]);
        }
    }
}
