//! Checks of single values of the metadata (probes, ports, tags, times, text), each refusal with
//! what is wrong and how to write it instead. Knows nothing of the package or the file system.

use cargo_metadata::{Package, TargetKind};
use serde::Deserialize;

use crate::config::raw::RawProbe;
use crate::config::spec::{DebugSpec, Probe, ProbeKind};

/// A refused value: what is wrong, and the `help:` line saying how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub msg: String,
    pub help: String,
}

/// A refusal with its help line.
pub fn invalid(msg: impl Into<String>, help: impl Into<String>) -> Invalid {
    Invalid {
        msg: msg.into(),
        help: help.into(),
    }
}

/// The longest probe timeout (Kubernetes' own probes are rarely above a minute).
const MAX_PROBE_TIMEOUT_MS: u64 = 300_000;

/// Refuses text that would break a line-based file or an exec argument: control characters.
pub fn plain_text(what: &str, text: &str, help: &str) -> Result<(), Invalid> {
    if text.chars().any(char::is_control) {
        return Err(invalid(
            format!(
                "{what} `{}` holds a control character (newline, tab, NUL...)",
                text.escape_debug()
            ),
            help,
        ));
    }
    Ok(())
}

pub fn probe(p: &RawProbe, which: &str, package: &Package) -> Result<Probe, Invalid> {
    let mut kinds = Vec::new();
    if let Some(url) = &p.http {
        let help = "write a URL such as \"http://127.0.0.1:8080/healthz\" or \"http://127.0.0.1:${PORT:-8080}/healthz\"";
        plain_text("http", url, help)?;
        let url = &as_checked(url).map_err(|m| invalid(format!("http = `{url}`: {m}"), help))?;
        if url.contains(' ') {
            return Err(invalid(format!("http = `{url}` holds a space"), help));
        }
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            invalid(
                format!("http = `{url}`: probes speak plain http:// (the probe runs inside the pod, next to the service)"),
                help,
            )
        })?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(invalid(format!("http = `{url}` has no host"), help));
        }
        kinds.push(ProbeKind::Http(p.http.clone().unwrap_or_default()));
    }
    if let Some(addr) = &p.tcp {
        let help = "write HOST:PORT, such as \"127.0.0.1:8080\" or \"127.0.0.1:${PORT:-8080}\"";
        plain_text("tcp", addr, help)?;
        let addr = &as_checked(addr).map_err(|m| invalid(format!("tcp = `{addr}`: {m}"), help))?;
        let ok = addr.rsplit_once(':').is_some_and(|(h, port)| {
            !h.is_empty() && !h.contains(' ') && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !ok {
            return Err(invalid(format!("tcp = `{addr}` is not HOST:PORT"), help));
        }
        kinds.push(ProbeKind::Tcp(p.tcp.clone().unwrap_or_default()));
    }
    if let Some(argv) = &p.exec {
        let help = "write the command and its arguments as a list, such as [\"svc\", \"check\"]";
        if argv.is_empty() || argv[0].is_empty() {
            return Err(invalid("exec must name a command", help));
        }
        for a in argv {
            plain_text("exec argument", a, help)?;
        }
        kinds.push(ProbeKind::Exec(argv.clone()));
    }
    if let Some(bin) = &p.bin {
        let exists = package
            .targets
            .iter()
            .any(|t| t.kind.contains(&TargetKind::Bin) && t.name == *bin);
        if !exists {
            return Err(invalid(
                format!(
                    "bin = `{bin}` is not a binary target of package `{}`",
                    package.name
                ),
                "name one of the package's [[bin]] targets",
            ));
        }
        kinds.push(ProbeKind::Bin(bin.clone()));
    }
    if kinds.len() != 1 {
        return Err(invalid(
            format!("[package.metadata.oci.{which}] needs exactly one of http, tcp, exec or bin"),
            format!("keep one of them, e.g. `tcp = \"127.0.0.1:8080\"` under [package.metadata.oci.{which}]"),
        ));
    }
    let timeout_ms = match &p.timeout {
        None => 2000,
        Some(t) => {
            let help = "write a duration from 1ms to 5m, such as \"2s\" or \"500ms\"";
            let d = humantime::parse_duration(t)
                .map_err(|e| invalid(format!("timeout = `{t}`: {e}"), help))?;
            let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            if ms == 0 || ms > MAX_PROBE_TIMEOUT_MS {
                return Err(invalid(
                    format!("timeout = `{t}` must be between 1ms and 5m"),
                    help,
                ));
            }
            ms
        }
    };
    Ok(Probe {
        kind: kinds.remove(0),
        timeout_ms,
    })
}

pub fn debug_spec(v: &serde_json::Value) -> Result<Option<DebugSpec>, Invalid> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Table {
        enabled: Option<bool>,
        inputs: Option<Vec<String>>,
        tags: Option<Vec<String>>,
    }
    let help = "write `debug = true`, or a table such as `debug = { inputs = [\"busybox\"] }`";
    match v {
        serde_json::Value::Bool(false) => Ok(None),
        serde_json::Value::Bool(true) => Ok(Some(DebugSpec::default())),
        serde_json::Value::Object(_) => {
            let t: Table =
                serde_json::from_value(v.clone()).map_err(|e| invalid(e.to_string(), help))?;
            for i in t.inputs.iter().flatten() {
                if i.is_empty() {
                    return Err(invalid("an input is empty", help));
                }
            }
            Ok((t.enabled != Some(false)).then_some(DebugSpec {
                inputs: t.inputs,
                tags: t.tags,
            }))
        }
        _ => Err(invalid("expected true, false or a table", help)),
    }
}

/// A probe address as the build checks it: the container's variables, which the probe expands
/// at run time (`$NAME`, `${NAME}`, `${NAME:-default}`), become their default, or `1` (a valid
/// port) when they have none. Refuses what the probe could not expand.
fn as_checked(text: &str) -> Result<String, String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        let (name, default, after) = if let Some(body) = rest.strip_prefix('{') {
            let end = body.find('}').ok_or("`${` is not closed")?;
            let (name, default) = match body[..end].split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (&body[..end], None),
            };
            (name, default, &body[end + 1..])
        } else {
            let end = rest.find(|c| !is_name(c)).unwrap_or(rest.len());
            (&rest[..end], None, &rest[end..])
        };
        if name.is_empty() || !name.chars().all(is_name) {
            return Err(
                "a `$` names no variable (write $NAME, ${NAME} or ${NAME:-default})".into(),
            );
        }
        out.push_str(default.unwrap_or("1"));
        rest = after;
    }
    out.push_str(rest);
    Ok(out)
}

/// A cargo profile name: what `--profile` takes.
pub fn profile_name(p: &str) -> Result<String, Invalid> {
    if p.is_empty()
        || !p
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(invalid(
            format!("`{}` is not a profile name", p.escape_debug()),
            "name a profile such as \"release\" or one of [profile.NAME] in the workspace's Cargo.toml",
        ));
    }
    Ok(p.to_string())
}

/// The signals a service may ask to be stopped with, as the image config's `StopSignal` names
/// them (numbers shared by every Linux architecture cargo-oci builds for).
const STOP_SIGNALS: [(&str, u8); 7] = [
    ("SIGHUP", 1),
    ("SIGINT", 2),
    ("SIGQUIT", 3),
    ("SIGKILL", 9),
    ("SIGUSR1", 10),
    ("SIGUSR2", 12),
    ("SIGTERM", 15),
];

/// `stop-signal`: `SIGINT`, `INT`, `sigint` or `2` all give `SIGINT`.
pub fn stop_signal(text: &str) -> Result<String, Invalid> {
    let upper = text.trim().to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper.clone()
    } else {
        format!("SIG{upper}")
    };
    STOP_SIGNALS
        .iter()
        .find(|(n, num)| *n == name || upper.parse::<u8>().ok() == Some(*num))
        .map(|(n, _)| n.to_string())
        .ok_or_else(|| {
            invalid(
                format!("`{}` is not a signal a service is stopped with", text.escape_debug()),
                format!(
                    "use one of {} (SIGINT for services that stop on Ctrl-C, such as tokio's `ctrl_c`)",
                    STOP_SIGNALS.map(|(n, _)| n).join(", ")
                ),
            )
        })
}

/// Replaces `{version}`, `{package}` and `{bin}` in a tag or an image name.
pub fn expand_placeholders(text: &str, package: &Package, bin: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .ok_or_else(|| format!("`{text}` has an unclosed `{{`"))?
            + start;
        match &rest[start + 1..end] {
            "version" => out.push_str(&package.version.to_string()),
            "package" => out.push_str(package.name.as_str()),
            "bin" => out.push_str(bin),
            other => {
                return Err(format!(
                    "`{text}` uses the unknown placeholder `{{{other}}}` (known: {{version}}, {{package}}, {{bin}})"
                ))
            }
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A tag with its placeholders replaced. Semver build metadata (`+`) is not allowed in tags;
/// registries use `_` by convention.
pub fn expand_tag(tag: &str, package: &Package, bin: &str) -> Result<String, String> {
    Ok(expand_placeholders(tag, package, bin)?.replace('+', "_"))
}

pub fn validate_port(p: &str) -> Result<(), String> {
    let (num, proto) = p.split_once('/').unwrap_or((p, "tcp"));
    let ok_num = num.parse::<u16>().map(|n| n > 0).unwrap_or(false);
    if !ok_num || !matches!(proto, "tcp" | "udp" | "sctp") {
        return Err(format!(
            "`{p}` is not a port: expected \"PORT\" or \"PORT/tcp|udp|sctp\""
        ));
    }
    Ok(())
}

pub fn parse_created(s: &str) -> Result<u64, String> {
    let t = humantime::parse_rfc3339(s).map_err(|_| {
        format!("`{s}` is not \"now\" or an RFC 3339 time like 2024-01-01T00:00:00Z")
    })?;
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| format!("`{s}` is before 1970"))
}

/// `sysroots`: each target's file system, an existing directory (relative to the package).
pub(crate) fn sysroots(
    raw: &crate::config::raw::RawOci,
    package_dir: &std::path::Path,
) -> Result<std::collections::BTreeMap<String, std::path::PathBuf>, Invalid> {
    let mut out = std::collections::BTreeMap::new();
    for (triple, dir) in raw.sysroots.iter().flatten() {
        if !triple.contains("-linux-") {
            return Err(invalid(
                format!("{triple:?} is not a Linux Rust target"),
                "key each sysroot by a Rust target, such as \"aarch64-unknown-linux-gnu\"",
            ));
        }
        let path = package_dir.join(dir);
        if !path.is_dir() {
            return Err(invalid(
                format!("the sysroot of {triple}, {}, is not a directory", path.display()),
                "name the root of the target's file system (where lib/ and usr/lib/ are), relative to the package",
            ));
        }
        out.insert(triple.clone(), path);
    }
    Ok(out)
}

/// `platforms` as Rust targets, in order.
pub(crate) fn platform_targets(platforms: Option<&[String]>) -> Result<Vec<String>, Invalid> {
    platforms
        .unwrap_or_default()
        .iter()
        .map(|p| platform_target(p))
        .collect()
}

/// A `platforms` entry as a Rust target: an OCI platform (`linux/arm64`, glibc) or a target.
fn platform_target(p: &str) -> Result<String, Invalid> {
    if p.contains('/') {
        crate::oci::platform::rust_target(p, false).ok_or_else(|| {
            invalid(
                format!("`{p}` is not a platform cargo-oci can build for"),
                format!(
                    "use one of {}, or a Rust target such as \"aarch64-unknown-linux-musl\"",
                    crate::oci::platform::known_platforms().join(", ")
                ),
            )
        })
    } else if p.contains("-linux-") && crate::oci::platform::ElfArch::of_rust_target(p).is_some() {
        Ok(p.to_string())
    } else {
        Err(invalid(
            format!("`{p}` is neither an OCI platform nor a Linux Rust target"),
            "write \"linux/amd64\", \"linux/arm64\" or a target such as \"aarch64-unknown-linux-gnu\"",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_checked() {
        assert!(validate_port("8080").is_ok());
        assert!(validate_port("53/udp").is_ok());
        assert!(validate_port("http").is_err());
        assert!(validate_port("80/icmp").is_err());
    }

    #[test]
    fn created_parses() {
        assert_eq!(parse_created("1970-01-01T00:00:10Z"), Ok(10));
        assert!(parse_created("yesterday").is_err());
    }

    #[test]
    fn control_characters_are_refused() {
        assert!(plain_text("x", "http://a/\nexec=/bin/sh", "h").is_err());
        assert!(plain_text("x", "a\tb", "h").is_err());
        assert!(plain_text("x", "http://a:1/ok", "h").is_ok());
    }
}
