//! Image names and tags: parsing and validating `[host[:port]/]path[/more]` references the way
//! registries and the distribution spec define them.

use std::fmt;

/// A repository name such as `registry.example.com:5000/team/app`, split into its registry and
/// repository path. Names without a registry mean Docker Hub (`docker.io/library/x` for one part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName {
    /// As the user wrote it (used in `ref.name` and `RepoTags`).
    pub full: String,
    /// Registry host (and port), e.g. `127.0.0.1:5000` or `docker.io`.
    pub registry: String,
    /// Repository path inside the registry, e.g. `team/app` or `library/app`.
    pub repository: String,
}

impl ImageName {
    pub fn parse(s: &str) -> Result<ImageName, String> {
        if s.is_empty() {
            return Err("the image name is empty".into());
        }
        if s.contains('@') || s.rsplit('/').next().is_some_and(|last| last.contains(':')) {
            return Err(format!(
                "`{s}` must be a name without a tag or digest (put tags in `tags`)"
            ));
        }
        let (registry, path) = match s.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => ("docker.io".to_string(), s.to_string()),
        };
        if registry != "docker.io" || s.starts_with("docker.io/") {
            validate_host(&registry).map_err(|m| format!("`{s}`: {m}"))?;
        }
        for comp in path.split('/') {
            validate_component(comp).map_err(|m| format!("`{s}`: {m}"))?;
        }
        let repository = if registry == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        Ok(ImageName {
            full: s.to_string(),
            registry,
            repository,
        })
    }

    /// `name:tag` as written in `ref.name` annotations and docker-archive `RepoTags`.
    pub fn with_tag(&self, tag: &str) -> String {
        format!("{}:{tag}", self.full)
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

fn validate_host(h: &str) -> Result<(), String> {
    let (host, port) = match h.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (h, None),
    };
    if let Some(p) = port {
        if p.parse::<u16>().is_err() {
            return Err(format!("registry port `{p}` is not a number"));
        }
    }
    let ok = !host.is_empty()
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
        });
    if !ok {
        return Err(format!("registry host `{host}` is not a valid host name"));
    }
    Ok(())
}

/// A path component: lowercase alphanumerics separated by `.`, `_`, `__` or runs of `-`.
fn validate_component(c: &str) -> Result<(), String> {
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bad = || {
        Err(format!(
            "path part `{c}` must be lowercase letters and digits, separated by `.`, `_`, `__` or `-`"
        ))
    };
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return bad();
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|b| b == b'-');
        if !ok {
            return bad();
        }
    }
    Ok(())
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn validate_tag(t: &str) -> Result<(), String> {
    let mut chars = t.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !first_ok || !rest_ok || t.len() > 128 {
        return Err(format!(
            "`{t}` is not a valid tag: up to 128 letters, digits, `_`, `.` or `-`, not starting with `.` or `-`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let n = ImageName::parse("hello").unwrap();
        assert_eq!(
            (n.registry.as_str(), n.repository.as_str()),
            ("docker.io", "library/hello")
        );
        let n = ImageName::parse("127.0.0.1:5000/team/sub/app").unwrap();
        assert_eq!(
            (n.registry.as_str(), n.repository.as_str()),
            ("127.0.0.1:5000", "team/sub/app")
        );
        let n = ImageName::parse("localhost/x").unwrap();
        assert_eq!(n.registry, "localhost");
        let n = ImageName::parse("user/app").unwrap();
        assert_eq!(
            (n.registry.as_str(), n.repository.as_str()),
            ("docker.io", "user/app")
        );
        assert!(ImageName::parse("Hello").is_err());
        assert!(ImageName::parse("a//b").is_err());
        assert!(ImageName::parse("app:1.0").is_err());
        assert!(ImageName::parse("host:port/app").is_err());
        assert!(ImageName::parse("a__b/c-d--e").is_ok());
    }

    #[test]
    fn tags() {
        assert!(validate_tag("1.0.0").is_ok());
        assert!(validate_tag("latest").is_ok());
        assert!(validate_tag(".x").is_err());
        assert!(validate_tag("a/b").is_err());
        assert!(validate_tag("").is_err());
    }
}
