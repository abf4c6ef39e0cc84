//! Registry credentials and challenges: finds the credential for a registry (the
//! `CARGO_OCI_REGISTRY_USER`/`_PASSWORD` variables, then containers' `auth.json` where podman
//! keeps it, then Docker's `config.json` with its credential helpers, else anonymous) and says at
//! `-v` which source it used ([`resolve`], for pushes and base-image pulls alike); parses
//! `WWW-Authenticate` challenges.
//!
//! Reading the config files and running `docker-credential-*` helpers is the `docker_credential`
//! crate's job; the challenge parser is small and written here because no well-kept crate does
//! just that without an async HTTP stack. Secrets are only ever put in request headers: the
//! [`Credential`] `Debug` output and every message name the user and the source, never the secret.

use std::fmt;

use base64::Engine;

use crate::util::reporter::Reporter;

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

/// The environment variables that give the credential for every registry.
pub const USER_VAR: &str = "CARGO_OCI_REGISTRY_USER";
pub const PASSWORD_VAR: &str = "CARGO_OCI_REGISTRY_PASSWORD";

/// Finds the credential for `registry`, in this order: `$CARGO_OCI_REGISTRY_USER` with
/// `$CARGO_OCI_REGISTRY_PASSWORD`; containers' `auth.json` where podman keeps it
/// (`$REGISTRY_AUTH_FILE`, else `$XDG_RUNTIME_DIR/containers/auth.json` or, with no
/// `XDG_RUNTIME_DIR`, `/run/containers/$UID/auth.json`; then `~/.config/containers/auth.json`);
/// then Docker's `config.json` (`$DOCKER_CONFIG` or `~/.docker`; `auths`, `credHelpers`,
/// `credsStore`). `Ok(None)` means anonymous. A helper that is configured but fails is an
/// error: pushing anonymously instead would only fail later with a less useful message.
pub fn lookup(registry: &str) -> Result<Option<Credential>, String> {
    let env = |k: &str| std::env::var_os(k);
    if let Some(c) = from_env(&env)? {
        return Ok(Some(c));
    }
    for path in podman_auth_files(&env, current_uid()) {
        if let Some(c) = from_auth_file(&path, registry)? {
            return Ok(Some(c));
        }
    }
    from_docker_config(registry)
}

/// The credential a request to `registry` uses: `given` (from the command line) when there is
/// one, else [`lookup`]'s; and says at `-v` which it is and where it came from (the variables,
/// the auth file's path, Docker's config.json or the credential helper it names), or that the
/// request is anonymous and where no credential was found.
pub fn resolve(
    registry: &str,
    given: Option<&Credential>,
    report: &Reporter,
) -> anyhow::Result<Option<Credential>> {
    let (credential, said) = resolve_said(registry, given)?;
    report.detail(&said);
    Ok(credential)
}

/// [`resolve`], returning what it would say at `-v` instead of saying it (for a lookup made on
/// another thread, told when its result is used).
pub fn resolve_said(
    registry: &str,
    given: Option<&Credential>,
) -> anyhow::Result<(Option<Credential>, String)> {
    let credential = match given {
        Some(c) => Some(c.clone()),
        None => lookup(registry)
            .map_err(|m| anyhow::anyhow!("cannot read the credentials for {registry}: {m}"))?,
    };
    let said = match &credential {
        Some(c) => format!("credentials for {registry}: {}", c.describe()),
        None => format!(
            "no credentials for {registry} (looked in {}): anonymous",
            places()
        ),
    };
    Ok((credential, said))
}

/// Where [`lookup`] looks, for messages about an anonymous request.
pub fn places() -> String {
    let env = |k: &str| std::env::var_os(k);
    let mut v = vec![format!("${USER_VAR}")];
    v.extend(
        podman_auth_files(&env, current_uid())
            .iter()
            .map(|p| p.display().to_string()),
    );
    v.push(docker_config_name());
    v.join(", ")
}

type Env<'a> = &'a dyn Fn(&str) -> Option<std::ffi::OsString>;

/// The credential of `$CARGO_OCI_REGISTRY_USER` / `$CARGO_OCI_REGISTRY_PASSWORD`, if set.
fn from_env(env: Env) -> Result<Option<Credential>, String> {
    let Some(user) = env(USER_VAR) else {
        return Ok(None);
    };
    let username = user
        .into_string()
        .map_err(|_| format!("${USER_VAR} is not valid UTF-8"))?;
    let password = match env(PASSWORD_VAR).map(|p| p.into_string()) {
        Some(Ok(p)) if !p.is_empty() => p,
        Some(Err(_)) => return Err(format!("${PASSWORD_VAR} is not valid UTF-8")),
        _ => {
            return Err(format!(
                "${USER_VAR} is set but ${PASSWORD_VAR} is empty or unset; set both, or neither"
            ))
        }
    };
    Ok(Some(Credential {
        secret: Secret::Basic { username, password },
        source: format!("${USER_VAR}/${PASSWORD_VAR}"),
    }))
}

/// The uid of this process (the owner of `/proc/self`), for podman's `/run/containers/$UID`.
fn current_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}

/// The `auth.json` files podman reads, in its order (containers-auth.json(5)).
fn podman_auth_files(env: Env, uid: u32) -> Vec<std::path::PathBuf> {
    use std::path::PathBuf;
    if let Some(p) = env("REGISTRY_AUTH_FILE").filter(|p| !p.is_empty()) {
        return vec![PathBuf::from(p)];
    }
    let mut v = vec![match env("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        Some(d) => PathBuf::from(d).join("containers/auth.json"),
        None => PathBuf::from(format!("/run/containers/{uid}/auth.json")),
    }];
    if let Some(home) = env("HOME").filter(|p| !p.is_empty()) {
        v.push(PathBuf::from(home).join(".config/containers/auth.json"));
    }
    v
}

fn convert(c: docker_credential::DockerCredential, source: String) -> Credential {
    use docker_credential::DockerCredential as D;
    Credential {
        secret: match c {
            D::UsernamePassword(username, password) => Secret::Basic { username, password },
            D::IdentityToken(t) => Secret::IdentityToken(t),
        },
        source,
    }
}

/// The credential for `registry` in one `auth.json`, if the file exists and has one.
fn from_auth_file(path: &std::path::Path, registry: &str) -> Result<Option<Credential>, String> {
    use docker_credential::CredentialRetrievalError as E;
    let Ok(text) = std::fs::read(path) else {
        return Ok(None);
    };
    for key in server_keys(registry) {
        match docker_credential::get_credential_from_reader(text.as_slice(), &key) {
            Ok(c) => return Ok(Some(convert(c, path.display().to_string()))),
            Err(E::ConfigNotFound | E::NoCredentialConfigured) => {}
            Err(E::ConfigReadError) => {
                return Err(format!("{}: not a readable auth.json", path.display()))
            }
            Err(e) => return Err(format!("{}: {}", path.display(), helper_error(&e))),
        }
    }
    Ok(None)
}

/// Docker's config.json as the `docker_credential` crate finds it: `$DOCKER_CONFIG/config.json`,
/// else `$HOME/.docker/config.json`.
fn docker_config_path() -> Option<std::path::PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    env("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| env("HOME").map(|h| std::path::PathBuf::from(h).join(".docker")))
        .map(|d| d.join("config.json"))
}

fn docker_config_name() -> String {
    docker_config_path()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "~/.docker/config.json".into())
}

/// Where Docker's config.json gave the credential for `key` from: its own `auths`, or the
/// credential helper it names (`credHelpers` for that registry, else `credsStore`), as the
/// `docker_credential` crate chooses.
fn docker_source(config: &[u8], key: &str, path: &str) -> String {
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(config) else {
        return path.to_string();
    };
    let helper = |h: &str| format!("the credential helper `docker-credential-{h}` named in {path}");
    if let Some(h) = v["credHelpers"][key].as_str() {
        return helper(h);
    }
    let store = v["credsStore"].as_str().map(str::to_string);
    if let Some(o) = v.as_object_mut() {
        o.remove("credsStore");
        o.remove("credHelpers");
    }
    let plain = serde_json::to_vec(&v).unwrap_or_default();
    match (
        docker_credential::get_credential_from_reader(plain.as_slice(), key),
        store,
    ) {
        (Err(_), Some(s)) => helper(&s),
        _ => path.to_string(),
    }
}

/// The credential for `registry` in Docker's config.json, or its credential helpers.
fn from_docker_config(registry: &str) -> Result<Option<Credential>, String> {
    use docker_credential::CredentialRetrievalError as E;
    let docker_json = docker_config_name();
    for key in server_keys(registry) {
        match docker_credential::get_credential(&key) {
            Ok(c) => {
                let config = docker_config_path()
                    .and_then(|p| std::fs::read(p).ok())
                    .unwrap_or_default();
                return Ok(Some(convert(c, docker_source(&config, &key, &docker_json))));
            }
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
    fn podman_auth_files_follow_podman() {
        use std::ffi::OsString;
        use std::path::PathBuf;
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let files = podman_auth_files(&env(&[("HOME", "/root")]), 0);
        assert_eq!(
            files,
            [
                PathBuf::from("/run/containers/0/auth.json"),
                PathBuf::from("/root/.config/containers/auth.json")
            ]
        );
        let files = podman_auth_files(&env(&[("XDG_RUNTIME_DIR", "/run/user/1000")]), 1000);
        assert_eq!(
            files,
            [PathBuf::from("/run/user/1000/containers/auth.json")]
        );
        let files = podman_auth_files(
            &env(&[("REGISTRY_AUTH_FILE", "/a.json"), ("HOME", "/h")]),
            7,
        );
        assert_eq!(files, [PathBuf::from("/a.json")]);
    }

    #[test]
    fn environment_credentials_need_both_variables() {
        use std::ffi::OsString;
        let none = |_: &str| None::<OsString>;
        assert!(from_env(&none).unwrap().is_none());
        let user_only = |k: &str| (k == USER_VAR).then(|| OsString::from("ann"));
        let e = from_env(&user_only).unwrap_err();
        assert!(e.contains(PASSWORD_VAR), "{e}");
        let both = |k: &str| match k {
            USER_VAR => Some(OsString::from("ann")),
            PASSWORD_VAR => Some(OsString::from("pw")),
            _ => None,
        };
        let c = from_env(&both).unwrap().unwrap();
        assert!(c.describe().contains("ann") && c.describe().contains(USER_VAR));
        assert_eq!(c.basic_header().as_deref(), Some("Basic YW5uOnB3"));
    }

    #[test]
    fn auth_files_are_read_for_the_registry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        assert!(from_auth_file(&path, "r.example").unwrap().is_none());
        std::fs::write(&path, r#"{"auths":{"127.0.0.1:5000":{"auth":"YW5uOnB3"}}}"#).unwrap();
        let c = from_auth_file(&path, "127.0.0.1:5000").unwrap().unwrap();
        assert_eq!(c.basic_header().as_deref(), Some("Basic YW5uOnB3"));
        assert_eq!(c.source, path.display().to_string());
        assert!(from_auth_file(&path, "other.example").unwrap().is_none());
        std::fs::write(&path, "not json").unwrap();
        assert!(from_auth_file(&path, "127.0.0.1:5000").is_err());
    }

    #[test]
    fn docker_sources_name_the_helper_or_the_file() {
        let path = "/h/.docker/config.json";
        let auths = br#"{"auths":{"r.example":{"auth":"YW5uOnB3"}},"credsStore":"desktop"}"#;
        assert_eq!(docker_source(auths, "r.example", path), path);
        assert_eq!(
            docker_source(auths, "other.example", path),
            "the credential helper `docker-credential-desktop` named in /h/.docker/config.json"
        );
        let helpers = br#"{"auths":{"r.example":{"auth":"YW5uOnB3"}},"credHelpers":{"r.example":"ecr-login"}}"#;
        assert!(docker_source(helpers, "r.example", path).contains("docker-credential-ecr-login"));
        assert_eq!(docker_source(b"{}", "r.example", path), path);
    }

    #[test]
    fn escapes_scopes() {
        assert_eq!(
            query_escape("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
    }
}
