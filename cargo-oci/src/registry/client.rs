//! The OCI distribution API over HTTP: blob existence, cross-repository mounts, monolithic and
//! chunked blob uploads and manifest PUTs, each request retried with bounded exponential backoff
//! on 5xx, 429 (honouring `Retry-After`) and broken connections, and authenticated on demand
//! (basic or bearer token, from the registry's `WWW-Authenticate` challenge).
//!
//! One [`Client`] talks to one registry and is shared by the upload threads: `ureq`'s agent pools
//! connections and the current `Authorization` value sits behind a lock.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use ureq::http::Response;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig, TlsProvider};
use ureq::{Agent, Body};

use super::auth::{self, Challenge, Credential, Secret};
use crate::util::error::UsageError;

/// How the client connects and retries.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Hosts (`host` or `host:port`) reached over plain HTTP besides loopback ones.
    pub insecure_registries: Vec<String>,
    /// A PEM file of extra CA certificates, trusted besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// Attempts per request (the first try included).
    pub attempts: u32,
    /// First backoff delay; it doubles on each retry, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure_registries: Vec::new(),
            ca_file: None,
            attempts: 6,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// A blob file to upload.
#[derive(Debug, Clone)]
pub struct BlobFile {
    pub digest: String,
    pub size: u64,
    pub path: PathBuf,
}

/// What a mount request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    Mounted,
    /// The registry did not mount but opened an upload session at this location.
    Upload(String),
}

/// Sends one request, given the `Authorization` value to use.
type MakeRequest<'a> = dyn Fn(&Agent, Option<&str>) -> Result<Response<Body>, ureq::Error> + 'a;

/// A client for one registry.
pub struct Client {
    agent: Agent,
    /// `http://host:port` or `https://host`.
    base: String,
    /// Plain HTTP is allowed (loopback or `--insecure-registry`): HTTPS is tried first.
    plain_allowed: bool,
    /// The registry as named (`docker.io`, `127.0.0.1:5000`), for messages.
    pub registry: String,
    credential: Option<Credential>,
    /// Scopes asked for in token requests.
    scopes: Vec<String>,
    authorization: Mutex<Option<String>>,
    opts: ClientOptions,
}

/// Hosts that need no TLS: loopback addresses and `localhost`.
pub fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => registry.rsplit_once(':').map_or(registry, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The system's CA bundle (`$SSL_CERT_FILE`, else the usual distribution paths).
fn system_roots() -> Result<Vec<Certificate<'static>>> {
    let candidates = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            [
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/pki/tls/certs/ca-bundle.crt",
                "/etc/ssl/cert.pem",
            ]
            .map(PathBuf::from),
        );
    for p in candidates {
        if p.is_file() {
            return read_pem_certs(&p);
        }
    }
    Ok(Vec::new())
}

fn read_pem_certs(path: &Path) -> Result<Vec<Certificate<'static>>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read CA file {}", path.display()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&bytes) {
        if let PemItem::Certificate(c) =
            item.map_err(|e| anyhow!("{} is not a PEM certificate file: {e}", path.display()))?
        {
            certs.push(c);
        }
    }
    Ok(certs)
}

/// The error text of a registry answer: its `errors[0]` code and message, else the body's start.
fn registry_message(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        if let Some(e) = v["errors"].get(0) {
            let code = e["code"].as_str().unwrap_or_default();
            let msg = e["message"].as_str().unwrap_or_default();
            return format!("{code}: {msg}")
                .trim_matches([' ', ':'])
                .to_string();
        }
    }
    body.chars()
        .take(200)
        .collect::<String>()
        .trim()
        .to_string()
}

fn header(resp: &Response<Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// An HTTP answer that is not what the protocol step expected.
fn unexpected(what: &str, mut resp: Response<Body>) -> anyhow::Error {
    let status = resp.status();
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_string()
        .unwrap_or_default();
    let msg = registry_message(&body);
    if msg.is_empty() {
        anyhow!("{what}: the registry answered {status}")
    } else {
        anyhow!("{what}: the registry answered {status} ({msg})")
    }
}

/// Reads and drops a body so that the connection goes back to the pool.
fn drain(mut resp: Response<Body>) {
    let _ = resp.body_mut().with_config().limit(1 << 20).read_to_vec();
}

impl Client {
    /// A client for `registry` (`host[:port]`, `docker.io` for Docker Hub), asking tokens for
    /// `scopes` (`repository:NAME:pull,push`, ...).
    pub fn new(
        registry: &str,
        credential: Option<Credential>,
        scopes: Vec<String>,
        opts: ClientOptions,
    ) -> Result<Client> {
        let host = if registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            registry
        };
        let plain = is_loopback(registry)
            || opts.insecure_registries.iter().any(|h| {
                h == registry || registry.rsplit_once(':').is_some_and(|(name, _)| name == h)
            });
        let base = format!("{}://{host}", if plain { "http" } else { "https" });
        let mut roots = system_roots()?;
        if let Some(ca) = &opts.ca_file {
            roots.extend(read_pem_certs(ca)?);
        }
        if !plain && roots.is_empty() {
            return Err(UsageError::new(format!(
                "no CA certificates found to check {registry}'s TLS certificate"
            ))
            .hint("install ca-certificates, set SSL_CERT_FILE, or pass --ca-file FILE")
            .into());
        }
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .root_certs(RootCerts::Specific(Arc::new(roots)))
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .build();
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls)
            .user_agent(concat!("cargo-oci/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .timeout_per_write(Some(Duration::from_secs(60)))
            .build()
            .into();
        Ok(Client {
            agent,
            base,
            plain_allowed: plain,
            registry: registry.to_string(),
            credential,
            scopes,
            authorization: Mutex::new(None),
            opts,
        })
    }

    /// `base + /v2/...`.
    fn url(&self, path: &str) -> String {
        format!("{}/v2/{path}", self.base)
    }

    /// An upload location (absolute or relative) with `query` appended.
    fn location_url(&self, location: &str, query: &str) -> String {
        let abs = if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{}{location}", self.base)
        };
        if query.is_empty() {
            abs
        } else if abs.contains('?') {
            format!("{abs}&{query}")
        } else {
            format!("{abs}?{query}")
        }
    }

    /// The `Authorization` value for `url`: none for an upload location on another host (a
    /// storage backend), which must not see the registry's credentials.
    fn same_origin<'a>(&self, url: &str, auth: Option<&'a str>) -> Option<&'a str> {
        auth.filter(|_| url.starts_with(&format!("{}/", self.base)))
    }

    fn current_auth(&self) -> Option<String> {
        self.authorization
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sends a request made by `make` (given the `Authorization` value), retrying transient
    /// failures and answering one authentication challenge.
    fn send(&self, what: &str, make: &MakeRequest) -> Result<Response<Body>> {
        let mut authenticated = false;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let auth = self.current_auth();
            let last = attempt >= self.opts.attempts;
            match make(&self.agent, auth.as_deref()) {
                Ok(resp) if resp.status() == 401 && !authenticated => {
                    let challenge = header(&resp, "www-authenticate");
                    drain(resp);
                    self.authenticate(challenge.as_deref())
                        .with_context(|| format!("{what}: cannot log in to {}", self.registry))?;
                    authenticated = true;
                    attempt -= 1;
                }
                Ok(resp) if resp.status() == 401 || resp.status() == 403 => {
                    let who = self
                        .credential
                        .as_ref()
                        .map_or("anonymous access".to_string(), |c| c.describe());
                    let status = resp.status();
                    let err = unexpected(what, resp);
                    return Err(err.context(format!(
                        "{} refused {who} ({status}); check the user name and password (--username \
                         with --password-stdin, or `docker login {}`)",
                        self.registry, self.registry
                    )));
                }
                Ok(resp)
                    if !last
                        && (resp.status().is_server_error()
                            || resp.status() == 429
                            || resp.status() == 408) =>
                {
                    let wait = header(&resp, "retry-after")
                        .and_then(|s| s.trim().parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s.min(60)));
                    drain(resp);
                    std::thread::sleep(wait.unwrap_or_else(|| self.backoff(attempt)));
                }
                Ok(resp) => return Ok(resp),
                Err(e) if !last && retryable(&e) => std::thread::sleep(self.backoff(attempt)),
                Err(e) => {
                    let tls = e.to_string().contains("certificate");
                    let err = anyhow!(e).context(format!(
                        "{what}: no answer from {} after {attempt} attempt(s)",
                        self.registry
                    ));
                    return Err(if tls {
                        err.context(format!(
                            "{} has a TLS certificate cargo-oci does not trust; for a \
                             certificate of your own CA, pass --ca-file FILE",
                            self.registry
                        ))
                    } else {
                        err
                    });
                }
            }
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.opts
            .backoff
            .saturating_mul(factor)
            .min(self.opts.max_backoff)
    }

    /// Answers a `WWW-Authenticate` challenge: sets the `Authorization` value to use.
    fn authenticate(&self, challenge: Option<&str>) -> Result<()> {
        let challenge = challenge.and_then(auth::parse_challenge).context(
            "the registry asked for authentication without a usable WWW-Authenticate challenge",
        )?;
        let value = match challenge {
            Challenge::Basic => {
                match self.credential.as_ref().and_then(Credential::basic_header) {
                    Some(h) => h,
                    None => return Err(UsageError::new(format!(
                        "{} needs a user name and password and none was found",
                        self.registry
                    ))
                    .hint(
                        "pass --username USER --password-stdin, or log in with `docker login` / \
                         `podman login`",
                    )
                    .into()),
                }
            }
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => format!("Bearer {}", self.token(&realm, service.as_deref(), scope)?),
        };
        *self.authorization.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
        Ok(())
    }

    /// Fetches a bearer token from `realm` for our scopes (and the challenge's).
    fn token(&self, realm: &str, service: Option<&str>, scope: Option<String>) -> Result<String> {
        let mut scopes = self.scopes.clone();
        if let Some(s) = scope {
            if !scopes.contains(&s) {
                scopes.push(s);
            }
        }
        let mut params: Vec<(String, String)> = Vec::new();
        if let Some(s) = service {
            params.push(("service".into(), s.into()));
        }
        for s in &scopes {
            params.push(("scope".into(), s.clone()));
        }
        let query = |extra: &[(String, String)]| {
            params
                .iter()
                .chain(extra)
                .map(|(k, v)| format!("{k}={}", auth::query_escape(v)))
                .collect::<Vec<_>>()
                .join("&")
        };
        let mut attempt = 0;
        let mut resp = loop {
            attempt += 1;
            let r = match self.credential.as_ref().map(|c| &c.secret) {
                Some(Secret::IdentityToken(t)) => {
                    let form = query(&[
                        ("grant_type".into(), "refresh_token".into()),
                        ("client_id".into(), "cargo-oci".into()),
                        ("refresh_token".into(), t.clone()),
                    ]);
                    self.agent
                        .post(realm)
                        .header("Content-Type", "application/x-www-form-urlencoded")
                        .send(form.as_bytes())
                }
                _ => {
                    let sep = if realm.contains('?') { '&' } else { '?' };
                    let mut req = self.agent.get(&format!("{realm}{sep}{}", query(&[])));
                    if let Some(h) = self.credential.as_ref().and_then(Credential::basic_header) {
                        req = req.header("Authorization", h);
                    }
                    req.call()
                }
            };
            match r {
                Ok(resp) if resp.status().is_server_error() && attempt < self.opts.attempts => {
                    drain(resp);
                    std::thread::sleep(self.backoff(attempt));
                }
                Ok(resp) => break resp,
                Err(e) if retryable(&e) && attempt < self.opts.attempts => {
                    std::thread::sleep(self.backoff(attempt))
                }
                Err(e) => {
                    return Err(
                        anyhow!(e).context(format!("no answer from the token service {realm}"))
                    )
                }
            }
        };
        if !resp.status().is_success() {
            let who = self
                .credential
                .as_ref()
                .map_or("anonymous access".to_string(), |c| c.describe());
            return Err(unexpected(
                &format!("the token service {realm} refused {who}"),
                resp,
            ));
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .with_context(|| format!("no answer from the token service {realm}"))?;
        let body: serde_json::Value = serde_json::from_slice(&body)
            .with_context(|| format!("the token service {realm} sent no JSON"))?;
        body["token"]
            .as_str()
            .or_else(|| body["access_token"].as_str())
            .map(str::to_string)
            .with_context(|| format!("the token service {realm} sent no token"))
    }

    /// Sends the API root request (`GET /v2/`), logging in if the registry asks: checks that
    /// the registry answers and that the credentials work before any upload. Where plain HTTP
    /// is allowed, HTTPS is tried first (once, no retries) and kept when it answers.
    pub fn check(&mut self) -> Result<()> {
        let mut tls_error = None;
        if self.plain_allowed && self.base.starts_with("http://") {
            let https = self.base.replacen("http://", "https://", 1);
            let probe = self
                .agent
                .get(&format!("{https}/v2/"))
                .config()
                .timeout_global(Some(Duration::from_secs(5)))
                .build()
                .call();
            match probe {
                Ok(resp) => {
                    drain(resp);
                    self.base = https;
                }
                Err(e) => tls_error = Some(e),
            }
        }
        let url = self.url("");
        let what = format!("reach {}", self.registry);
        let result = self
            .send(&what, &|a, auth| with_auth(a.get(&url), auth).call())
            .and_then(|resp| {
                if resp.status().is_success() {
                    drain(resp);
                    Ok(())
                } else {
                    Err(unexpected(&what, resp))
                }
            });
        match (result, tls_error) {
            (Err(e), Some(tls)) if !e.chain().any(|c| c.is::<UsageError>()) => {
                Err(e.context(format!(
                    "{} answers neither HTTPS ({tls}) nor plain HTTP; for a certificate of \
                     your own CA, pass --ca-file FILE",
                    self.registry
                )))
            }
            (r, _) => r,
        }
    }

    /// The size of the blob if the repository has it.
    pub fn blob_size(&self, repo: &str, digest: &str) -> Result<Option<u64>> {
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

    /// Asks the registry to mount `digest` from the repository `from` into `repo`.
    pub fn mount(&self, repo: &str, digest: &str, from: &str) -> Result<Mount> {
        let url = self.url(&format!(
            "{repo}/blobs/uploads/?mount={}&from={}",
            auth::query_escape(digest),
            auth::query_escape(from)
        ));
        let what = format!("mount blob {digest} from {from} into {repo}");
        let resp = self.send(&what, &|a, auth| with_auth(a.post(&url), auth).send_empty())?;
        match resp.status().as_u16() {
            201 => {
                drain(resp);
                Ok(Mount::Mounted)
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

    /// Uploads a blob, in one request when it is at most `chunk_size` bytes, else in chunks of
    /// `chunk_size`; `session` is an upload already opened (by a mount answered with 202). A
    /// session that breaks is started over (the registry may have completed it: checked first).
    /// `sent` counts the bytes as they go.
    pub fn upload(
        &self,
        repo: &str,
        blob: &BlobFile,
        session: Option<String>,
        chunk_size: u64,
        sent: &AtomicU64,
    ) -> Result<()> {
        let what = format!("upload blob {} to {repo}", blob.digest);
        let mut session = session;
        let tries = 3;
        for round in 1..=tries {
            if round > 1 && self.blob_size(repo, &blob.digest)? == Some(blob.size) {
                return Ok(());
            }
            let loc = match session.take() {
                Some(l) => l,
                None => self.start_upload(repo, &what)?,
            };
            let before = sent.load(Ordering::Relaxed);
            match self.upload_session(&loc, blob, chunk_size, sent, &what) {
                Ok(()) => return Ok(()),
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

    fn upload_session(
        &self,
        location: &str,
        blob: &BlobFile,
        chunk_size: u64,
        sent: &AtomicU64,
        what: &str,
    ) -> Result<()> {
        let mut file = File::open(&blob.path)
            .with_context(|| format!("cannot read blob {}", blob.path.display()))?;
        let digest_q = format!("digest={}", auth::query_escape(&blob.digest));
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
        let theirs = header(&resp, "docker-content-digest");
        drain(resp);
        match theirs {
            Some(d) if d != blob.digest => bail!(
                "{what}: the registry stored the blob as {d}, not {}; the upload was damaged",
                blob.digest
            ),
            _ => Ok(()),
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
        digest: &str,
    ) -> Result<()> {
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
        let theirs = header(&resp, "docker-content-digest");
        drain(resp);
        match theirs {
            Some(d) if d != digest => {
                bail!("{what}: the registry stored the manifest as {d}, not {digest}")
            }
            _ => Ok(()),
        }
    }
}

fn with_auth<B>(req: ureq::RequestBuilder<B>, auth: Option<&str>) -> ureq::RequestBuilder<B> {
    match auth {
        Some(v) => req.header("Authorization", v),
        None => req,
    }
}

/// Transport failures worth another try: the connection broke or timed out.
/// A TLS failure (a certificate not trusted, say) surfaces as invalid data and is not retried.
fn retryable(e: &ureq::Error) -> bool {
    if let ureq::Error::Io(io) = e {
        return io.kind() != std::io::ErrorKind::InvalidData;
    }
    matches!(
        e,
        ureq::Error::Timeout(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::Protocol(_)
            | ureq::Error::BodyStalled
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost"));
        assert!(is_loopback("localhost:80"));
        assert!(is_loopback("[::1]:5000"));
        assert!(is_loopback("127.1.2.3"));
        assert!(!is_loopback("registry.example.com"));
        assert!(!is_loopback("10.0.0.1:5000"));
    }

    #[test]
    fn registry_errors_are_readable() {
        assert_eq!(
            registry_message(
                r#"{"errors":[{"code":"MANIFEST_INVALID","message":"manifest invalid","detail":{}}]}"#
            ),
            "MANIFEST_INVALID: manifest invalid"
        );
        assert_eq!(registry_message("plain text"), "plain text");
    }

    #[test]
    fn schemes_and_locations() {
        let c = Client::new("127.0.0.1:5000", None, vec![], ClientOptions::default()).unwrap();
        assert_eq!(c.url("a/b/blobs/x"), "http://127.0.0.1:5000/v2/a/b/blobs/x");
        assert_eq!(
            c.location_url("/v2/a/blobs/uploads/u?_state=s", "digest=d"),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/u?_state=s&digest=d"
        );
        assert_eq!(
            c.location_url("http://h/v2/u", "digest=d"),
            "http://h/v2/u?digest=d"
        );
        let opts = ClientOptions {
            insecure_registries: vec!["reg.internal".into()],
            ..ClientOptions::default()
        };
        let c = Client::new("reg.internal:5000", None, vec![], opts).unwrap();
        assert!(c.base.starts_with("http://"));
        let c = Client::new("docker.io", None, vec![], ClientOptions::default()).unwrap();
        assert_eq!(c.base, "https://registry-1.docker.io");
        let a = Some("Bearer t");
        assert_eq!(c.same_origin("https://registry-1.docker.io/v2/x", a), a);
        assert_eq!(
            c.same_origin("https://registry-1.docker.io.evil/v2/x", a),
            None
        );
        assert_eq!(c.same_origin("https://storage.example/u", a), None);
    }

    #[test]
    fn backoff_is_bounded() {
        let c = Client::new("127.0.0.1:1", None, vec![], ClientOptions::default()).unwrap();
        assert_eq!(c.backoff(1), Duration::from_millis(200));
        assert_eq!(c.backoff(2), Duration::from_millis(400));
        assert_eq!(c.backoff(30), Duration::from_secs(10));
    }
}
