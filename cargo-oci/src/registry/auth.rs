//! Registry credentials and challenges: finds the credential for a registry (explicit, then
//! containers' `auth.json`, then Docker's `config.json` with its credential helpers, else
//! anonymous), parses `WWW-Authenticate` challenges and fetches bearer tokens.
//!
//! Reading the config files and running `docker-credential-*` helpers is the `docker_credential`
//! crate's job; the challenge parser is small and written here because no well-kept crate does
//! just that without an async HTTP stack. Secrets are only ever put in request headers: the
//! [`Credential`] `Debug` output and every message name the user and the source, never the secret.

use std::fmt;

use base64::Engine;

/// A secret with the place it came from.
#[derive(Clone)]
pub struct Credential {
    pub secret: Secret,
    /// Where it came from, for messages (`--password-stdin`, `~/.docker/config.json`, ...).
    pub source: String,
}

/// The secret itself.
#[derive(Clone)]
pub enum Secret {
    Basic {
        username: String,
        password: String,
    },
    /// An identity (refresh) token, exchanged for a bearer token.
    IdentityToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({})", self.describe())
    }
}

impl Credential {
    /// `user `x` (from SOURCE)`: what messages may say about a credential.
    pub fn describe(&self) -> String {
        match &self.secret {
            Secret::Basic { username, .. } => format!("user `{username}` (from {})", self.source),
            Secret::IdentityToken(_) => format!("an identity token (from {})", self.source),
        }
    }

    /// The `Authorization` value for HTTP basic auth, if this is a user and password.
    pub fn basic_header(&self) -> Option<String> {
        match &self.secret {
            Secret::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            Secret::IdentityToken(_) => None,
        }
    }
}

/// The keys a registry may be filed under in credential stores.
fn server_keys(registry: &str) -> Vec<String> {
    if registry == "docker.io"
        || registry == "index.docker.io"
        || registry == "registry-1.docker.io"
    {
        vec![
            "https://index.docker.io/v1/".into(),
            "docker.io".into(),
            "index.docker.io".into(),
        ]
    } else {
        vec![registry.to_string()]
    }
}

/// Finds the stored credential for `registry`: containers' `auth.json` (`$REGISTRY_AUTH_FILE`,
/// `$XDG_RUNTIME_DIR/containers/auth.json`), then Docker's `config.json` (`$DOCKER_CONFIG` or
/// `~/.docker`; `auths`, `credHelpers`, `credsStore`). `Ok(None)` means anonymous. A helper
/// that is configured but fails is an error: pushing anonymously instead would only fail later
/// with a less useful message.
pub fn lookup(registry: &str) -> Result<Option<Credential>, String> {
    use docker_credential::{CredentialRetrievalError as E, DockerCredential as D};
    let convert = |c: D, source: &str| Credential {
        secret: match c {
            D::UsernamePassword(username, password) => Secret::Basic { username, password },
            D::IdentityToken(t) => Secret::IdentityToken(t),
        },
        source: source.to_string(),
    };
    let auth_json = std::env::var_os("REGISTRY_AUTH_FILE")
        .map(|p| format!("$REGISTRY_AUTH_FILE ({})", p.to_string_lossy()))
        .unwrap_or_else(|| "containers auth.json".into());
    let docker_json = std::env::var_os("DOCKER_CONFIG")
        .map(|p| format!("{}/config.json", p.to_string_lossy()))
        .unwrap_or_else(|| "~/.docker/config.json".into());
    for key in server_keys(registry) {
        match docker_credential::get_podman_credential(&key) {
            Ok(c) => return Ok(Some(convert(c, &auth_json))),
            Err(E::ConfigNotFound | E::ConfigReadError | E::NoCredentialConfigured) => {}
            Err(e) => return Err(format!("{auth_json}: {}", helper_error(&e))),
        }
    }
    for key in server_keys(registry) {
        match docker_credential::get_credential(&key) {
            Ok(c) => return Ok(Some(convert(c, &docker_json))),
            Err(E::ConfigNotFound | E::ConfigReadError | E::NoCredentialConfigured) => {}
            // A store (`credsStore`) that has nothing for this registry: anonymous.
            Err(E::HelperFailure { stdout, stderr, .. })
                if not_found(&stdout) || not_found(&stderr) => {}
            Err(e) => return Err(format!("{docker_json}: {}", helper_error(&e))),
        }
    }
    Ok(None)
}

/// The docker-credential-helpers protocol's answer for a server it has nothing for.
fn not_found(text: &str) -> bool {
    text.contains("credentials not found")
}

/// A credential-store error, without the helper's stdout (which may hold a secret).
fn helper_error(e: &docker_credential::CredentialRetrievalError) -> String {
    match e {
        docker_credential::CredentialRetrievalError::HelperFailure { helper, stderr, .. } => {
            format!(
                "the credential helper `{helper}` failed: {}",
                stderr.trim().lines().next().unwrap_or("no message")
            )
        }
        docker_credential::CredentialRetrievalError::HelperCommunicationError => {
            "cannot run the configured docker-credential helper (is it on PATH?)".into()
        }
        other => other.to_string(),
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(rest);
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
        })
    } else {
        None
    }
}

/// `k="v", k2=v2` pairs; quoted values may hold commas and `\"`.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if key.is_empty() || chars.next() != Some('=') {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect();
        }
        out.push((key.trim().to_string(), value.trim().to_string()));
    }
    out
}

/// Percent-encodes a query parameter value (RFC 3986 unreserved characters kept).
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:team/app:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into()),
                scope: Some("repository:team/app:pull,push".into()),
            })
        );
        let c = parse_challenge(r#"bearer realm=https://a/t, service="s""#);
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://a/t".into(),
                service: Some("s".into()),
                scope: None
            })
        );
        assert_eq!(parse_challenge("Bearer service=\"x\""), None);
    }

    #[test]
    fn basic_challenge() {
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let c = Credential {
            secret: Secret::Basic {
                username: "ann".into(),
                password: "hunter2".into(),
            },
            source: "--password-stdin".into(),
        };
        let shown = format!("{c:?} {}", c.describe());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("ann"));
        assert_eq!(c.basic_header().as_deref(), Some("Basic YW5uOmh1bnRlcjI="));
    }

    #[test]
    fn escapes_scopes() {
        assert_eq!(
            query_escape("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
    }
}
