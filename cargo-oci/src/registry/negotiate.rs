//! Authentication negotiation: answers a registry's `WWW-Authenticate` challenge with HTTP basic
//! credentials or a bearer token fetched from the token service it names, for the client's
//! scopes (`repository:R:pull` to read a base image, `pull,push` to push).
//!
//! Credentials only go where they are safe: a token service is sent a password or an identity
//! token over HTTPS, or over plain HTTP only on the registry's own host when that host may be
//! reached over plain HTTP (loopback, `--insecure-registry`). Never over plain HTTP to another
//! host, where anyone on the path could read it.

use anyhow::{anyhow, bail, Context, Result};

use super::auth::{self, Challenge, Credential, Secret};
use super::client::{drain, retryable, unexpected, Client};
use crate::util::error::UsageError;

/// The host of a URL or of a `host[:port]` registry name, without brackets or port.
fn host_of(authority: &str) -> &str {
    let authority = authority
        .split_once("://")
        .map_or(authority, |(_, rest)| rest)
        .split(['/', '?'])
        .next()
        .unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    }
}

/// Whether credentials may be sent to the token service at `realm`, for a registry reached at
/// `base` (`http://host:port`, `https://host`) where `plain_allowed` says plain HTTP is allowed.
fn may_send_credentials(realm: &str, base: &str, plain_allowed: bool) -> bool {
    if realm.starts_with("https://") {
        return true;
    }
    plain_allowed && host_of(realm).eq_ignore_ascii_case(host_of(base))
}

impl Client {
    /// Refuses a token service that would receive the credentials in clear on another host.
    fn check_realm(&self, realm: &str) -> Result<()> {
        let Some(credential) = &self.credential else {
            return Ok(());
        };
        if !realm.starts_with("http://") && !realm.starts_with("https://") {
            bail!(
                "{} names a token service that is not an http(s) URL: {realm}",
                self.registry
            );
        }
        if may_send_credentials(realm, &self.base, self.plain_allowed) {
            return Ok(());
        }
        let host = host_of(realm);
        let why = if host.eq_ignore_ascii_case(host_of(&self.base)) {
            format!(
                "over plain HTTP, not allowed for {host} (it is for loopback hosts and \
                 --insecure-registry ones)"
            )
        } else {
            "on another host over plain HTTP".to_string()
        };
        Err(anyhow!(
            "{} sends its clients to the token service {realm}, {why}: cargo-oci does not \
             send {} there in clear",
            self.registry,
            credential.describe()
        ))
    }

    /// Answers a `WWW-Authenticate` challenge: sets the `Authorization` value to use.
    pub(super) fn authenticate(&self, challenge: Option<&str>) -> Result<()> {
        let challenge = challenge.and_then(auth::parse_challenge).context(
            "the registry asked for authentication without a usable WWW-Authenticate challenge",
        )?;
        let value = match challenge {
            Challenge::Basic => match self.credential.as_ref().and_then(Credential::basic_header) {
                Some(h) => h,
                None => {
                    return Err(UsageError::new(format!(
                        "{} asks for credentials: it needs a user name and password and none \
                         was found for it",
                        self.registry
                    ))
                    .hint(self.login_hint.clone())
                    .into())
                }
            },
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
        self.check_realm(realm)?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(host_of("http://127.0.0.1:5000/token?x=1"), "127.0.0.1");
        assert_eq!(
            host_of("https://auth.example.com/token"),
            "auth.example.com"
        );
        assert_eq!(host_of("http://[::1]:80/t"), "::1");
        assert_eq!(host_of("127.0.0.2:5000"), "127.0.0.2");
        assert_eq!(host_of("http://u@evil.example:1/t"), "evil.example");
    }

    #[test]
    fn credentials_go_over_https_or_to_the_registry_host() {
        let reg = "http://127.0.0.1:5000";
        assert!(may_send_credentials(
            "https://auth.example.com/t",
            reg,
            true
        ));
        assert!(may_send_credentials("http://127.0.0.1:5001/t", reg, true));
        assert!(!may_send_credentials("http://127.0.0.2:5001/t", reg, true));
        assert!(!may_send_credentials(
            "http://auth.example.com/t",
            reg,
            true
        ));
        assert!(!may_send_credentials(
            "http://registry.example.com/t",
            "https://registry.example.com",
            false
        ));
    }
}
