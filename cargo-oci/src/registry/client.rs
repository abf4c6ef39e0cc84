//! The transport of the registry client: one [`Client`] per registry, with its TLS roots (the
//! system's plus `--ca-file`), its scheme (HTTPS, or plain HTTP for loopback and
//! `--insecure-registry` hosts when HTTPS does not answer there), and [`Client::send`], which
//! retries every request with bounded exponential backoff on 5xx, 408, 429 (honouring
//! `Retry-After`) and broken connections, and answers one authentication challenge (see
//! [`super::negotiate`]). A request that gets no answer fails with a [`NoAnswer`] that says why
//! first: nothing listens there, an untrusted certificate, or the transport error.
//!
//! One client is shared by the upload threads of a push: `ureq`'s agent pools connections (up
//! to 32 kept open per registry, so that questions asked at once reuse theirs) and the current
//! `Authorization` value sits behind a lock.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use ureq::http::Response;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig, TlsProvider};
use ureq::{Agent, Body};

use super::auth::Credential;
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

/// Sends one request, given the `Authorization` value to use.
pub(super) type MakeRequest<'a> =
    dyn Fn(&Agent, Option<&str>) -> Result<Response<Body>, ureq::Error> + 'a;

/// A client for one registry.
pub struct Client {
    pub(super) agent: Agent,
    /// `http://host:port` or `https://host`.
    pub(super) base: String,
    /// Plain HTTP is allowed (loopback or `--insecure-registry`): HTTPS is tried first.
    pub(super) plain_allowed: bool,
    /// The registry as named (`docker.io`, `127.0.0.1:5000`), for messages.
    pub registry: String,
    pub(super) credential: Option<Credential>,
    /// Scopes asked for in token requests.
    pub(super) scopes: Vec<String>,
    pub(super) authorization: Mutex<Option<String>>,
    pub(super) opts: ClientOptions,
    /// How to give credentials, for messages (the push command has options for it).
    pub(super) login_hint: String,
}

/// Why a transport error happened, as far as it tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Nothing listens at the address.
    Refused,
    /// The TLS handshake failed: a certificate not trusted, say.
    Tls,
    /// Anything else: a reset, a timeout, a name that does not resolve.
    Other,
}

/// A request that got no HTTP answer, after every attempt.
#[derive(Debug)]
pub struct NoAnswer {
    /// What the request was for.
    pub what: String,
    pub registry: String,
    /// `host:port` connected to.
    pub address: String,
    pub attempts: u32,
    pub cause: Cause,
    pub error: ureq::Error,
}

impl std::fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.attempts;
        let tries = if n == 1 {
            "1 attempt".into()
        } else {
            format!("{n} attempts")
        };
        match self.cause {
            Cause::Refused => write!(
                f,
                "{}: nothing listens at {} (connection refused, {tries}); is the registry running, \
                 and is that its address?",
                self.what, self.address
            ),
            Cause::Tls => write!(
                f,
                "{}: {} answers HTTPS with a certificate cargo-oci does not trust ({}); for a \
                 certificate of your own CA, pass --ca-file FILE",
                self.what, self.registry, self.error
            ),
            Cause::Other => write!(
                f,
                "{}: no answer from {} after {tries}: {}",
                self.what, self.registry, self.error
            ),
        }
    }
}

impl std::error::Error for NoAnswer {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// What a transport error says about its cause.
pub fn cause(e: &ureq::Error) -> Cause {
    match e {
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => Cause::Refused,
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) => Cause::Tls,
        e if e.to_string().contains("certificate") => Cause::Tls,
        _ => Cause::Other,
    }
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
pub(super) fn registry_message(body: &str) -> String {
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

pub(super) fn header(resp: &Response<Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// An HTTP answer that is not what the protocol step expected.
pub(super) fn unexpected(what: &str, mut resp: Response<Body>) -> anyhow::Error {
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
pub(super) fn drain(mut resp: Response<Body>) {
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
            // Every upload thread and every question asked at once keeps its connection.
            .max_idle_connections(64)
            .max_idle_connections_per_host(32)
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
            login_hint: format!(
                "log in with `docker login {registry}` or `podman login {registry}`"
            ),
        })
    }

    /// Says how to give credentials in messages about missing or refused ones.
    pub fn with_login_hint(mut self, hint: impl Into<String>) -> Client {
        self.login_hint = hint.into();
        self
    }

    /// Whether token requests ask for `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// `host:port` of the registry, as connected to.
    pub(super) fn address(&self) -> String {
        let authority = self.base.split_once("://").map_or(&*self.base, |(_, a)| a);
        if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            && !authority.ends_with(']')
        {
            authority.to_string()
        } else if self.base.starts_with("https://") {
            format!("{authority}:443")
        } else {
            format!("{authority}:80")
        }
    }

    /// `base + /v2/...`.
    pub(super) fn url(&self, path: &str) -> String {
        format!("{}/v2/{path}", self.base)
    }

    /// An upload location (absolute or relative) with `query` appended.
    pub(super) fn location_url(&self, location: &str, query: &str) -> String {
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
    pub(super) fn same_origin<'a>(&self, url: &str, auth: Option<&'a str>) -> Option<&'a str> {
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
    pub(super) fn send(&self, what: &str, make: &MakeRequest) -> Result<Response<Body>> {
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
                    let check = if self.credential.is_some() {
                        "check the user name and password"
                    } else {
                        "it needs credentials"
                    };
                    return Err(err.context(format!(
                        "{} refused {who} ({status}); {check}: {}",
                        self.registry, self.login_hint
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
                Err(e) => return Err(self.no_answer(what, attempt, e).into()),
            }
        }
    }

    pub(super) fn no_answer(&self, what: &str, attempts: u32, error: ureq::Error) -> NoAnswer {
        NoAnswer {
            what: what.to_string(),
            registry: self.registry.clone(),
            address: self.address(),
            attempts,
            cause: cause(&error),
            error,
        }
    }

    pub(super) fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.opts
            .backoff
            .saturating_mul(factor)
            .min(self.opts.max_backoff)
    }

    /// Sends the API root request (`GET /v2/`), logging in if the registry asks: checks that
    /// the registry answers and that the credentials work before anything else. Where plain
    /// HTTP is allowed, HTTPS is tried first (once, no retries) and kept when it answers; a
    /// registry that speaks TLS with a certificate not trusted is reported as such, not tried
    /// over plain HTTP.
    pub fn check(&mut self) -> Result<()> {
        let what = format!("reach {}", self.registry);
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
                Err(e) if cause(&e) == Cause::Tls => {
                    return Err(self.no_answer(&what, 1, e).into());
                }
                // No TLS there (or nothing at all): plain HTTP says which.
                Err(_) => {}
            }
        }
        let url = self.url("");
        let resp = self.send(&what, &|a, auth| with_auth(a.get(&url), auth).call())?;
        if resp.status().is_success() {
            drain(resp);
            Ok(())
        } else {
            Err(unexpected(&what, resp))
        }
    }
}

pub(super) fn with_auth<B>(
    req: ureq::RequestBuilder<B>,
    auth: Option<&str>,
) -> ureq::RequestBuilder<B> {
    match auth {
        Some(v) => req.header("Authorization", v),
        None => req,
    }
}

/// Transport failures worth another try: the connection broke or timed out.
/// A TLS failure (a certificate not trusted, say) surfaces as invalid data and is not retried.
pub(super) fn retryable(e: &ureq::Error) -> bool {
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
