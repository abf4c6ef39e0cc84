//! The keys of `[package.metadata.oci]` as written, read with serde: every key optional, unknown
//! keys and wrong types refused with the key's place. Nothing here judges values; see `validate`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::util::error::UsageError;

const HELP: &str = "fix the key in Cargo.toml; the metadata reference is in cargo-oci's README";

/// The keys of `[package.metadata.oci]`, as written by the user. Every field is optional so that
/// workspace defaults and package values can be merged before defaults from Cargo apply.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawOci {
    pub name: Option<String>,
    pub tags: Option<Vec<String>>,
    pub bin: Option<String>,
    pub args: Option<Vec<String>>,
    pub env: Option<BTreeMap<String, String>>,
    pub user: Option<u32>,
    pub group: Option<u32>,
    pub workdir: Option<String>,
    pub ports: Option<Vec<String>>,
    pub volumes: Option<Vec<String>>,
    pub labels: Option<BTreeMap<String, String>>,
    pub extra_libs: Option<Vec<String>>,
    pub ca_certificates: Option<bool>,
    pub created: Option<String>,
    pub from: Option<String>,
    pub max_layers: Option<u32>,
    pub live: Option<RawProbe>,
    pub ready: Option<RawProbe>,
    pub runtime_inputs: Option<Vec<String>>,
    /// `true`/`false`, or a table `{ enabled = true, inputs = [...] }`.
    pub debug: Option<serde_json::Value>,
    pub files: Option<Vec<RawFile>>,
    pub perms: Option<Vec<RawPerm>>,
    pub init: Option<bool>,
    pub stop_signal: Option<String>,
    pub content_tag: Option<bool>,
    pub scanner_metadata: Option<bool>,
    /// One image per binary (instead of `bin`).
    pub bins: Option<Vec<String>>,
    /// Other binaries of the package installed next to the service in `/bin`, built along.
    pub extra_bins: Option<Vec<String>>,
    /// The cargo profile the image's binaries are built with.
    pub profile: Option<String>,
    /// Features of the package turned on for the build.
    pub features: Option<Vec<String>>,
    /// `[workspace.metadata.oci]` only: `--workspace` takes every member with a binary.
    pub all_binaries: Option<bool>,
    /// OCI platforms (`linux/arm64`) or Rust targets (`aarch64-unknown-linux-musl`).
    pub platforms: Option<Vec<String>>,
    /// The file system of each Rust target (`{ "aarch64-unknown-linux-gnu" = "sysroots/arm64" }`),
    /// relative to the package directory.
    pub sysroots: Option<std::collections::BTreeMap<String, String>>,
    /// The key `push` signs with (relative to the package directory); `--sign` and
    /// `CARGO_OCI_SIGN_KEY` take precedence.
    pub sign_key: Option<String>,
}

/// `[package.metadata.oci.live]` / `.ready`: one of `http`, `tcp`, `exec`, `bin`, and a timeout.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawProbe {
    pub http: Option<String>,
    pub tcp: Option<String>,
    pub exec: Option<Vec<String>>,
    pub bin: Option<String>,
    pub timeout: Option<String>,
}

/// `[[package.metadata.oci.files]]`: host files or directories copied into the image.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawFile {
    pub src: String,
    pub dest: String,
    pub mode: Option<Mode>,
}

/// `[[package.metadata.oci.perms]]`: modes and owners applied when the layers are written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawPerm {
    pub path: String,
    pub regex: Option<String>,
    pub mode: Option<Mode>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// A file mode, written as an octal string (`"0644"`) or a TOML integer (`0o644`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Mode;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a file mode: an octal string such as \"0644\" or an integer such as 0o644",
                )
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Mode, E> {
                if v > 0o7777 {
                    return Err(E::custom(format!("mode {v:o} is more than 0o7777")));
                }
                Ok(Mode(v as u32))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Mode, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom("a mode cannot be negative"))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Mode, E> {
                let digits = v.strip_prefix("0o").unwrap_or(v);
                u32::from_str_radix(digits, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777 && !digits.is_empty())
                    .map(Mode)
                    .ok_or_else(|| {
                        E::custom(format!("`{v}` is not an octal mode such as \"0644\""))
                    })
            }
        }
        d.deserialize_any(V)
    }
}

impl RawOci {
    /// Parses one `metadata.oci` table; `place` is its dotted location, used in error messages.
    pub fn parse(
        value: &serde_json::Value,
        place: &str,
        manifest: &Path,
    ) -> Result<Self, UsageError> {
        let fail = |key: String, msg: String| {
            UsageError::new(format!("{}: `{key}`: {msg}", manifest.display())).hint(HELP)
        };
        let value = plain_value(value, place).map_err(|(key, msg)| fail(key, msg))?;
        serde_path_to_error::deserialize(&value).map_err(|e| {
            let path = e.path().to_string();
            let key = if path == "." {
                place.to_string()
            } else {
                format!("{place}.{path}")
            };
            fail(key, e.inner().to_string())
        })
    }

    /// Package values win; maps (`env`, `labels`) are merged key by key.
    pub fn with_defaults(self, defaults: RawOci) -> RawOci {
        fn map(
            a: Option<BTreeMap<String, String>>,
            b: Option<BTreeMap<String, String>>,
        ) -> Option<BTreeMap<String, String>> {
            match (a, b) {
                (Some(a), Some(mut b)) => {
                    b.extend(a);
                    Some(b)
                }
                (a, b) => a.or(b),
            }
        }
        RawOci {
            name: self.name.or(defaults.name),
            tags: self.tags.or(defaults.tags),
            bin: self.bin.or(defaults.bin),
            args: self.args.or(defaults.args),
            env: map(self.env, defaults.env),
            user: self.user.or(defaults.user),
            group: self.group.or(defaults.group),
            workdir: self.workdir.or(defaults.workdir),
            ports: self.ports.or(defaults.ports),
            volumes: self.volumes.or(defaults.volumes),
            labels: map(self.labels, defaults.labels),
            extra_libs: self.extra_libs.or(defaults.extra_libs),
            ca_certificates: self.ca_certificates.or(defaults.ca_certificates),
            created: self.created.or(defaults.created),
            from: self.from.or(defaults.from),
            max_layers: self.max_layers.or(defaults.max_layers),
            live: self.live.or(defaults.live),
            ready: self.ready.or(defaults.ready),
            runtime_inputs: self.runtime_inputs.or(defaults.runtime_inputs),
            debug: self.debug.or(defaults.debug),
            files: self.files.or(defaults.files),
            perms: self.perms.or(defaults.perms),
            init: self.init.or(defaults.init),
            stop_signal: self.stop_signal.or(defaults.stop_signal),
            content_tag: self.content_tag.or(defaults.content_tag),
            scanner_metadata: self.scanner_metadata.or(defaults.scanner_metadata),
            bins: self.bins.or(defaults.bins),
            extra_bins: self.extra_bins.or(defaults.extra_bins),
            profile: self.profile.or(defaults.profile),
            features: self.features.or(defaults.features),
            all_binaries: self.all_binaries.or(defaults.all_binaries),
            platforms: self.platforms.or(defaults.platforms),
            sysroots: self.sysroots.or(defaults.sysroots),
            sign_key: self.sign_key.or(defaults.sign_key),
        }
    }
}

/// `cargo metadata` turns TOML into JSON: `inf` and `nan` become `null` (which serde would read
/// as a missing key) and a date-time becomes a one-key table. Refuses both (a date-time is taken
/// as its text for `created`), and NUL characters anywhere: no image field can carry one.
fn plain_value(
    value: &serde_json::Value,
    place: &str,
) -> Result<serde_json::Value, (String, String)> {
    use serde_json::Value;
    const DATETIME: &str = "$__toml_private_datetime";
    Ok(match value {
        Value::Null => {
            return Err((
                place.to_string(),
                "`inf` and `nan` are not values cargo-oci reads".into(),
            ))
        }
        Value::String(s) if s.contains('\0') => {
            return Err((place.to_string(), "the text holds a NUL character".into()))
        }
        Value::Object(m) if m.len() == 1 && m.contains_key(DATETIME) => {
            if place.ends_with(".created") {
                m[DATETIME].clone()
            } else {
                return Err((
                    place.to_string(),
                    "a TOML date-time is not valid here (only `created` takes one)".into(),
                ));
            }
        }
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    if k.contains('\0') {
                        return Err((place.to_string(), "a key holds a NUL character".into()));
                    }
                    Ok((k.clone(), plain_value(v, &format!("{place}.{k}"))?))
                })
                .collect::<Result<_, _>>()?,
        ),
        Value::Array(a) => Value::Array(
            a.iter()
                .enumerate()
                .map(|(i, v)| plain_value(v, &format!("{place}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_key_names_its_place() {
        let e = RawOci::parse(
            &json!({"nmae": "x"}),
            "package.metadata.oci",
            Path::new("/p/Cargo.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/p/Cargo.toml"), "{e}");
        assert!(e.contains("nmae"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let e = RawOci::parse(
            &json!({"ports": [8080]}),
            "package.metadata.oci",
            Path::new("C"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("package.metadata.oci.ports[0]"), "{e}");
        assert!(e.contains("expected a string"), "{e}");
    }

    #[test]
    fn package_values_win_and_maps_merge() {
        let ws = RawOci {
            user: Some(1),
            env: Some([("A".into(), "ws".into()), ("B".into(), "ws".into())].into()),
            ..Default::default()
        };
        let pkg = RawOci {
            user: Some(2),
            env: Some([("A".into(), "pkg".into())].into()),
            ..Default::default()
        };
        let m = pkg.with_defaults(ws);
        assert_eq!(m.user, Some(2));
        let env = m.env.unwrap_or_default();
        assert_eq!(env.get("A").map(String::as_str), Some("pkg"));
        assert_eq!(env.get("B").map(String::as_str), Some("ws"));
    }

    #[test]
    fn inf_nan_and_nul_are_refused_with_their_place() {
        let parse = |v: serde_json::Value| {
            RawOci::parse(&v, "package.metadata.oci", Path::new("C"))
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let e = parse(json!({"args": null})).unwrap_err();
        assert!(
            e.contains("package.metadata.oci.args") && e.contains("inf"),
            "{e}"
        );
        assert!(e.contains("help:"), "{e}");
        let e = parse(json!({"workdir": "/a\u{0}b"})).unwrap_err();
        assert!(
            e.contains("package.metadata.oci.workdir") && e.contains("NUL"),
            "{e}"
        );
        let e = parse(json!({"files": [{"src": "a", "dest": null}]})).unwrap_err();
        assert!(e.contains("package.metadata.oci.files[0].dest"), "{e}");
        let created = json!({"created": {"$__toml_private_datetime": "2024-01-01T00:00:00Z"}});
        assert!(parse(created).is_ok());
        assert!(parse(json!({"workdir": {"$__toml_private_datetime": "2024-01-01"}})).is_err());
    }
}
