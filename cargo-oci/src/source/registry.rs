//! A minimal registry client for pulling a base image by digest: GET of manifests and blobs over
//! the distribution API, anonymous or with basic auth (`CARGO_OCI_REGISTRY_USER` /
//! `CARGO_OCI_REGISTRY_PASSWORD`, else the credentials `push` finds), following a bearer-token
//! challenge. Small and synchronous on
//! `ureq`; plain HTTP for loopback registries, HTTPS elsewhere. Blobs already in the store are
//! not fetched again: the store is the cache.

use std::cell::RefCell;
use std::io::Read;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine;
use serde_json::Value;

use super::{Blobs, MAX_JSON};
use crate::oci::reference::ImageName;
use crate::oci::store::{digest_of, Store};

const ACCEPT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

pub struct Client<'a> {
    agent: ureq::Agent,
    base: String,
    registry: String,
    repository: String,
    store: &'a Store,
    auth: RefCell<Option<String>>,
}

/// `http` for registries on this machine, `https` elsewhere.
fn scheme(host: &str) -> &'static str {
    let h = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    if h == "localhost" || h.starts_with("127.") || h == "[::1]" {
        "http"
    } else {
        "https"
    }
}

/// Basic credentials for `registry`, base64-encoded: `CARGO_OCI_REGISTRY_USER` /
/// `CARGO_OCI_REGISTRY_PASSWORD`, else what `cargo oci push` would use (containers' auth.json,
/// Docker's config.json and its credential helpers).
fn basic_credentials(registry: &str) -> Option<String> {
    let (user, pass) = match std::env::var("CARGO_OCI_REGISTRY_USER") {
        Ok(user) => (
            user,
            std::env::var("CARGO_OCI_REGISTRY_PASSWORD").unwrap_or_default(),
        ),
        Err(_) => match crate::registry::auth::lookup(registry)
            .ok()
            .flatten()?
            .secret
        {
            crate::registry::auth::Secret::Basic { username, password } => (username, password),
            crate::registry::auth::Secret::IdentityToken(_) => return None,
        },
    };
    Some(base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
}

/// The parameters of a `WWW-Authenticate: Bearer k="v",…` challenge.
fn challenge_params(h: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = h.trim();
    while !rest.is_empty() {
        let Some((k, v)) = rest.split_once('=') else {
            break;
        };
        let k = k.trim().trim_start_matches(',').trim().to_string();
        let v = v.trim_start();
        let (val, after) = if let Some(q) = v.strip_prefix('"') {
            match q.split_once('"') {
                Some((val, after)) => (val.to_string(), after),
                None => (q.to_string(), ""),
            }
        } else {
            match v.split_once(',') {
                Some((val, after)) => (val.to_string(), after),
                None => (v.to_string(), ""),
            }
        };
        out.push((k, val));
        rest = after.trim_start().trim_start_matches(',');
    }
    out
}

impl<'a> Client<'a> {
    pub fn new(name: &ImageName, store: &'a Store) -> Result<Client<'a>> {
        let host = if name.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            name.registry.as_str()
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_global(Some(Duration::from_secs(1800)))
            .build()
            .into();
        Ok(Client {
            agent,
            base: format!("{}://{host}/v2/{}", scheme(host), name.repository),
            registry: name.registry.clone(),
            repository: name.repository.clone(),
            store,
            auth: RefCell::new(basic_credentials(&name.registry).map(|c| format!("Basic {c}"))),
        })
    }

    /// GET `path` under the repository, answering one auth challenge.
    fn get(&self, path: &str, accept: &str) -> Result<ureq::http::Response<ureq::Body>> {
        let url = format!("{}/{path}", self.base);
        for _ in 0..2 {
            let mut req = self.agent.get(&url).header("Accept", accept);
            if let Some(a) = self.auth.borrow().as_ref() {
                req = req.header("Authorization", a);
            }
            let resp = req.call().with_context(|| format!("GET {url} failed"))?;
            let status = resp.status().as_u16();
            if status == 401
                && self
                    .auth
                    .borrow()
                    .as_deref()
                    .is_none_or(|a| a.starts_with("Basic"))
            {
                let challenge = resp
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                if let Some(params) = challenge.strip_prefix("Bearer ") {
                    let token = self.token(params)?;
                    *self.auth.borrow_mut() = Some(format!("Bearer {token}"));
                    continue;
                }
                bail!(
                    "GET {url}: the registry asks for credentials: log in (docker login / podman \
                     login), or set CARGO_OCI_REGISTRY_USER and CARGO_OCI_REGISTRY_PASSWORD"
                );
            }
            if !(200..300).contains(&status) {
                bail!("GET {url}: the registry answered {status}");
            }
            return Ok(resp);
        }
        bail!("GET {url}: the registry refused the credentials")
    }

    /// A bearer token for pulling, from the challenge's realm.
    fn token(&self, params: &str) -> Result<String> {
        let params = challenge_params(params);
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let realm = get("realm").context("the registry's bearer challenge names no realm")?;
        let scope = get("scope").unwrap_or_else(|| format!("repository:{}:pull", self.repository));
        let mut req = self.agent.get(&realm).query("scope", &scope);
        if let Some(service) = get("service") {
            req = req.query("service", &service);
        }
        if let Some(c) = basic_credentials(&self.registry) {
            req = req.header("Authorization", &format!("Basic {c}"));
        }
        let mut resp = req.call().with_context(|| format!("GET {realm} failed"))?;
        if !resp.status().is_success() {
            bail!("the token service {realm} answered {}", resp.status());
        }
        let v: Value = serde_json::from_slice(
            &resp
                .body_mut()
                .with_config()
                .limit(MAX_JSON)
                .read_to_vec()?,
        )
        .context("the token service did not answer JSON")?;
        v.get("token")
            .or_else(|| v.get("access_token"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .context("the token service gave no token")
    }

    /// A manifest or config by digest (from the store when it is there), checked and stored.
    pub fn json(&self, digest: &str) -> Result<(Vec<u8>, Value)> {
        Blobs::json(self, digest)
    }
}

impl Blobs for Client<'_> {
    fn open(&self, digest: &str) -> Result<Box<dyn Read + '_>> {
        super::check_digest(digest)?;
        if self.store.contains(digest) {
            return Ok(Box::new(crate::oci::store::open(&self.store.path(digest))?));
        }
        // Manifests live under /manifests, everything else under /blobs; try the manifest
        // endpoint only for documents, which are small.
        let resp = match self.get(&format!("blobs/{digest}"), "*/*") {
            Ok(r) => r,
            Err(e) => match self.get(&format!("manifests/{digest}"), ACCEPT_MANIFEST) {
                Ok(r) => r,
                Err(_) => return Err(e),
            },
        };
        Ok(Box::new(resp.into_body().into_reader()))
    }

    fn json(&self, digest: &str) -> Result<(Vec<u8>, Value)> {
        super::check_digest(digest)?;
        let bytes = if self.store.contains(digest) {
            std::fs::read(self.store.path(digest))?
        } else {
            let resp = match self.get(&format!("manifests/{digest}"), ACCEPT_MANIFEST) {
                Ok(r) => r,
                Err(_) => self.get(&format!("blobs/{digest}"), "*/*")?,
            };
            let mut v = Vec::new();
            resp.into_body()
                .into_reader()
                .take(MAX_JSON + 1)
                .read_to_end(&mut v)?;
            v
        };
        if bytes.len() as u64 > MAX_JSON {
            bail!("{digest} is larger than {MAX_JSON} bytes: not a manifest or config");
        }
        let got = digest_of(&bytes);
        if got != digest {
            bail!("the registry sent {got} for {digest}: refusing it");
        }
        self.store.put(&bytes)?;
        let v = serde_json::from_slice(&bytes).with_context(|| format!("{digest} is not JSON"))?;
        Ok((bytes, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let p = challenge_params(
            r#"realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull""#,
        );
        assert_eq!(
            p[0],
            ("realm".into(), "https://auth.example.com/token".into())
        );
        assert_eq!(p[2].1, "repository:a/b:pull");
        assert_eq!(scheme("127.0.0.1:5000"), "http");
        assert_eq!(scheme("ghcr.io"), "https");
    }
}
