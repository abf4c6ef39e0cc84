//! Reads `[package.metadata.oci]`, with defaults from `[workspace.metadata.oci]` and from Cargo,
//! into a validated [`ImageSpec`]: the one description of the image every later stage works from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cargo_metadata::{Metadata, Package, TargetKind};
use serde::Deserialize;

use crate::oci::reference::{validate_tag, ImageName};
use crate::util::error::UsageError;

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
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let key = if path == "." {
                place.to_string()
            } else {
                format!("{place}.{path}")
            };
            UsageError::new(format!("{}: `{key}`: {}", manifest.display(), e.inner()))
                .hint("fix the key in Cargo.toml; the metadata reference is in cargo-oci's README")
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
        }
    }
}

/// When the image says it was created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// Seconds since the Unix epoch (reproducible).
    Epoch(u64),
    /// The time of the build (not reproducible; an explicit opt-out).
    Now,
}

/// Everything the image is made from, validated.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub package: String,
    pub version: String,
    pub manifest_path: PathBuf,
    pub package_dir: PathBuf,
    pub target_directory: PathBuf,
    pub name: ImageName,
    pub tags: Vec<String>,
    pub bin: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub user: u32,
    pub group: u32,
    pub workdir: String,
    pub ports: Vec<String>,
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub extra_libs: Vec<String>,
    pub ca_certificates: bool,
    /// Timestamp of every file in the layers (SOURCE_DATE_EPOCH or 1).
    pub mtime: u64,
    pub created: Created,
    /// The base image the layers go on (`from`).
    pub from: Option<crate::source::BaseRef>,
    /// At most this many layers, the base's included (`max-layers`, default 100).
    pub max_layers: usize,
    pub live: Option<Probe>,
    pub ready: Option<Probe>,
    /// Host programs (paths or names on PATH) copied with their closure, on the runtime PATH.
    pub runtime_inputs: Vec<String>,
    /// The debug variant, when asked for.
    pub debug: Option<DebugSpec>,
    pub files: Vec<FileSpec>,
    pub perms: Vec<PermSpec>,
    /// The entrypoint runs the service as a child: forwards signals, reaps zombies.
    pub init: bool,
}

impl ImageSpec {
    /// The package's binaries used as probes (`bin = ...`), built along with the service.
    pub fn probe_bins(&self) -> Vec<String> {
        let mut v: Vec<String> = [&self.live, &self.ready]
            .into_iter()
            .flatten()
            .filter_map(|p| match &p.kind {
                ProbeKind::Bin(b) if *b != self.bin => Some(b.clone()),
                _ => None,
            })
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// A health probe: `/bin/live` or `/bin/ready`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub kind: ProbeKind,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    /// GET; healthy on 2xx and 3xx.
    Http(String),
    /// A TCP connect to `host:port`.
    Tcp(String),
    /// A command and its arguments; healthy on exit 0.
    Exec(Vec<String>),
    /// A bin target of the package, built along and installed at `/bin/<name>`.
    Bin(String),
}

/// The debug variant's settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DebugSpec {
    /// Host tools for the debug shell; `None`: busybox if the host has a static one, else bash
    /// and coreutils.
    pub inputs: Option<Vec<String>>,
}

/// A host file or directory copied into the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    pub src: PathBuf,
    /// Absolute path in the image.
    pub dest: String,
    pub mode: Option<u32>,
}

/// Modes and owners applied to entries as the layers are written.
#[derive(Debug, Clone)]
pub struct PermSpec {
    /// Absolute path in the image.
    pub path: String,
    /// When set, applies to `path` and everything under it whose absolute path matches.
    pub regex: Option<regex::Regex>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// What the user selected on the command line that changes how the spec is read.
#[derive(Debug, Default, Clone)]
pub struct Selection {
    pub package: Option<String>,
    pub bin: Option<String>,
    pub manifest_path: Option<PathBuf>,
    /// Extra tags from `--tag`.
    pub tags: Vec<String>,
}

/// The default timestamp: 1970-01-01T00:00:01Z (some tools treat 0 as "unset").
pub const DEFAULT_EPOCH: u64 = 1;

/// The default `max-layers`.
pub const DEFAULT_MAX_LAYERS: usize = 100;

const LABEL_PREFIX: &str = "org.opencontainers.image.";

/// Loads `cargo metadata` for the selection, using the user's cargo.
pub fn cargo_metadata(sel: &Selection) -> anyhow::Result<Metadata> {
    let mut cmd = cargo_metadata::MetadataCommand::new();
    cmd.no_deps();
    if let Some(p) = &sel.manifest_path {
        cmd.manifest_path(p);
    }
    cmd.exec().map_err(|e| match e {
        cargo_metadata::Error::CargoMetadata { stderr } => anyhow::Error::new(UsageError::new(
            format!("cargo metadata failed:\n{}", stderr.trim_end()),
        )),
        other => anyhow::Error::new(other).context("could not run `cargo metadata`"),
    })
}

/// Picks the package the image is built from.
pub fn select_package<'a>(meta: &'a Metadata, sel: &Selection) -> Result<&'a Package, UsageError> {
    let members = meta.workspace_packages();
    if let Some(name) = &sel.package {
        return members
            .into_iter()
            .find(|p| p.name.as_str() == name)
            .ok_or_else(|| {
                UsageError::new(format!(
                    "package `{name}` is not a member of the workspace at {}",
                    meta.workspace_root
                ))
                .hint("pass the name of a workspace member with -p")
            });
    }
    if let Some(p) = meta.root_package() {
        return Ok(p);
    }
    if members.len() == 1 {
        return Ok(members[0]);
    }
    let names: Vec<&str> = members.iter().map(|p| p.name.as_str()).collect();
    Err(UsageError::new(format!(
        "{} is a virtual workspace with several packages ({})",
        meta.workspace_root.join("Cargo.toml"),
        names.join(", ")
    ))
    .hint("choose one with -p NAME, or run from the package's directory"))
}

/// Reads and validates the image spec of `package`.
pub fn image_spec(
    meta: &Metadata,
    package: &Package,
    sel: &Selection,
) -> Result<ImageSpec, UsageError> {
    let manifest = package.manifest_path.as_std_path();
    let ws_manifest = meta.workspace_root.join("Cargo.toml");
    let defaults = match meta.workspace_metadata.get("oci") {
        Some(v) => RawOci::parse(v, "workspace.metadata.oci", ws_manifest.as_std_path())?,
        None => RawOci::default(),
    };
    let own = match package.metadata.get("oci") {
        Some(v) => RawOci::parse(v, "package.metadata.oci", manifest)?,
        None => RawOci::default(),
    };
    let raw = own.with_defaults(defaults);
    let err = |key: &str, msg: String| {
        UsageError::new(format!(
            "{}: `package.metadata.oci.{key}`: {msg}",
            manifest.display()
        ))
    };

    let name_text = raw.name.clone().unwrap_or_else(|| package.name.to_string());
    let name = ImageName::parse(&name_text).map_err(|m| {
        err("name", m).hint("use a lowercase reference such as \"registry.example.com/team/app\"")
    })?;

    let bin = choose_bin(package, sel.bin.as_deref().or(raw.bin.as_deref()), manifest)?;

    let mut tags = Vec::new();
    for t in raw
        .tags
        .clone()
        .unwrap_or_else(|| vec!["latest".into()])
        .iter()
        .chain(&sel.tags)
    {
        let t = expand_tag(t, package).map_err(|m| err("tags", m))?;
        validate_tag(&t).map_err(|m| err("tags", m))?;
        if !tags.contains(&t) {
            tags.push(t);
        }
    }

    let env = raw.env.clone().unwrap_or_default();
    for k in env.keys() {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(err("env", format!("`{k}` is not a valid variable name")));
        }
    }

    let workdir = raw.workdir.clone().unwrap_or_else(|| "/".into());
    if !workdir.starts_with('/') {
        return Err(err(
            "workdir",
            format!("`{workdir}` must be an absolute path"),
        ));
    }
    let ports = raw.ports.clone().unwrap_or_default();
    for p in &ports {
        validate_port(p).map_err(|m| err("ports", m))?;
    }
    let volumes = raw.volumes.clone().unwrap_or_default();
    for v in &volumes {
        if !v.starts_with('/') {
            return Err(err("volumes", format!("`{v}` must be an absolute path")));
        }
    }

    let mut labels = default_labels(package);
    for (k, v) in raw.labels.clone().unwrap_or_default() {
        if k.is_empty() {
            return Err(err("labels", "a label key is empty".into()));
        }
        let key = if k.contains('.') {
            k
        } else {
            format!("{LABEL_PREFIX}{k}")
        };
        labels.insert(key, v);
    }

    let mtime = source_date_epoch()
        .map_err(|m| UsageError::new(m).hint("set SOURCE_DATE_EPOCH to a number of seconds"))?;
    let created = match raw.created.as_deref() {
        None => Created::Epoch(mtime),
        Some("now") => Created::Now,
        Some(s) => Created::Epoch(parse_created(s).map_err(|m| err("created", m))?),
    };

    let from = match raw.from.as_deref() {
        None => None,
        Some(f) => Some(crate::source::BaseRef::parse(f, manifest.parent().unwrap_or(Path::new("."))).map_err(|m| {
            err("from", m).hint(
                "use \"oci:DIR[:REF]\", \"oci-archive:FILE[:REF]\", \"docker-archive:FILE[:REF]\" or \"HOST/REPO@sha256:DIGEST\"",
            )
        })?),
    };
    let max_layers = match raw.max_layers {
        None => DEFAULT_MAX_LAYERS,
        Some(0) => return Err(err("max-layers", "must be at least 1".into())),
        Some(n) => n as usize,
    };
    let live = raw
        .live
        .as_ref()
        .map(|p| probe(p, "live", package))
        .transpose()
        .map_err(|m| err("live", m))?;
    let ready = raw
        .ready
        .as_ref()
        .map(|p| probe(p, "ready", package))
        .transpose()
        .map_err(|m| err("ready", m))?;
    let debug = match &raw.debug {
        None => None,
        Some(v) => debug_spec(v).map_err(|m| err("debug", m))?,
    };
    let package_dir = manifest.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut files = Vec::new();
    for (i, f) in raw.files.iter().flatten().enumerate() {
        let at = |m: String| err(&format!("files[{i}]"), m);
        if !f.dest.starts_with('/') || f.dest.split('/').any(|c| c == "..") {
            return Err(at(format!(
                "dest `{}` must be an absolute path without `..`",
                f.dest
            )));
        }
        let src = package_dir.join(&f.src);
        if !src.exists() {
            return Err(at(format!(
                "src `{}` does not exist (looked at {})",
                f.src,
                src.display()
            )));
        }
        files.push(FileSpec {
            src,
            dest: f.dest.trim_end_matches('/').to_string(),
            mode: f.mode.map(|m| m.0),
        });
    }
    let mut perms = Vec::new();
    for (i, p) in raw.perms.iter().flatten().enumerate() {
        let at = |m: String| err(&format!("perms[{i}]"), m);
        if !p.path.starts_with('/') {
            return Err(at(format!("path `{}` must be absolute", p.path)));
        }
        let regex = p
            .regex
            .as_deref()
            .map(regex::Regex::new)
            .transpose()
            .map_err(|e| at(format!("regex: {e}")))?;
        perms.push(PermSpec {
            path: p.path.trim_end_matches('/').to_string(),
            regex,
            mode: p.mode.map(|m| m.0),
            uid: p.uid,
            gid: p.gid,
        });
    }

    let user = raw.user.unwrap_or(65534);
    Ok(ImageSpec {
        package: package.name.to_string(),
        version: package.version.to_string(),
        manifest_path: manifest.to_path_buf(),
        package_dir: manifest.parent().map(Path::to_path_buf).unwrap_or_default(),
        target_directory: meta.target_directory.clone().into_std_path_buf(),
        name,
        tags,
        bin,
        args: raw.args.clone().unwrap_or_default(),
        env,
        user,
        group: raw.group.unwrap_or(user),
        workdir,
        ports,
        volumes,
        labels,
        extra_libs: raw.extra_libs.clone().unwrap_or_default(),
        ca_certificates: raw.ca_certificates.unwrap_or(true),
        mtime,
        created,
        from,
        max_layers,
        live,
        ready,
        runtime_inputs: raw.runtime_inputs.clone().unwrap_or_default(),
        debug,
        files,
        perms,
        init: raw.init.unwrap_or(false),
    })
}

/// The longest probe timeout (Kubernetes' own probes are rarely above a minute).
const MAX_PROBE_TIMEOUT_MS: u64 = 300_000;

fn probe(p: &RawProbe, which: &str, package: &Package) -> Result<Probe, String> {
    let mut kinds = Vec::new();
    if let Some(url) = &p.http {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!("http = `{url}`: probes speak plain http:// (the probe runs inside the pod, next to the service)")
        })?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(format!("http = `{url}` has no host"));
        }
        kinds.push(ProbeKind::Http(url.clone()));
    }
    if let Some(addr) = &p.tcp {
        let ok = addr
            .rsplit_once(':')
            .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok());
        if !ok {
            return Err(format!("tcp = `{addr}` is not HOST:PORT"));
        }
        kinds.push(ProbeKind::Tcp(addr.clone()));
    }
    if let Some(argv) = &p.exec {
        if argv.is_empty() || argv.iter().any(|a| a.contains(['\t', '\n'])) {
            return Err(
                "exec must be a non-empty list of arguments without tabs or newlines".into(),
            );
        }
        kinds.push(ProbeKind::Exec(argv.clone()));
    }
    if let Some(bin) = &p.bin {
        let exists = package
            .targets
            .iter()
            .any(|t| t.kind.contains(&TargetKind::Bin) && t.name == *bin);
        if !exists {
            return Err(format!(
                "bin = `{bin}` is not a binary target of package `{}`",
                package.name
            ));
        }
        kinds.push(ProbeKind::Bin(bin.clone()));
    }
    if kinds.len() != 1 {
        return Err(format!(
            "[package.metadata.oci.{which}] needs exactly one of http, tcp, exec or bin"
        ));
    }
    let timeout_ms = match &p.timeout {
        None => 2000,
        Some(t) => {
            let d = humantime::parse_duration(t)
                .map_err(|e| format!("timeout = `{t}`: {e} (write e.g. \"2s\" or \"500ms\")"))?;
            let ms = d.as_millis() as u64;
            if ms == 0 || ms > MAX_PROBE_TIMEOUT_MS {
                return Err(format!("timeout = `{t}` must be between 1ms and 5m"));
            }
            ms
        }
    };
    Ok(Probe {
        kind: kinds.remove(0),
        timeout_ms,
    })
}

fn debug_spec(v: &serde_json::Value) -> Result<Option<DebugSpec>, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Table {
        enabled: Option<bool>,
        inputs: Option<Vec<String>>,
    }
    match v {
        serde_json::Value::Bool(false) => Ok(None),
        serde_json::Value::Bool(true) => Ok(Some(DebugSpec::default())),
        serde_json::Value::Object(_) => {
            let t: Table = serde_json::from_value(v.clone()).map_err(|e| format!("{e}"))?;
            Ok((t.enabled != Some(false)).then_some(DebugSpec { inputs: t.inputs }))
        }
        _ => Err("expected true, false or a table such as { inputs = [\"busybox\"] }".into()),
    }
}

fn choose_bin(
    package: &Package,
    wanted: Option<&str>,
    manifest: &Path,
) -> Result<String, UsageError> {
    let bins: Vec<&str> = package
        .targets
        .iter()
        .filter(|t| t.kind.contains(&TargetKind::Bin))
        .map(|t| t.name.as_str())
        .collect();
    if let Some(w) = wanted {
        if bins.contains(&w) {
            return Ok(w.to_string());
        }
        return Err(UsageError::new(format!(
            "{}: `package.metadata.oci.bin`: package `{}` has no binary named `{w}` (it has: {})",
            manifest.display(),
            package.name,
            if bins.is_empty() {
                "none".to_string()
            } else {
                bins.join(", ")
            }
        ))
        .hint("name one of the package's [[bin]] targets"));
    }
    if let Some(d) = &package.default_run {
        return Ok(d.clone());
    }
    match bins.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(UsageError::new(format!(
            "{}: package `{}` has no binary target to put in an image",
            manifest.display(),
            package.name
        ))
        .hint("add src/main.rs or a [[bin]] target")),
        many => Err(UsageError::new(format!(
            "{}: package `{}` has several binaries ({}) and `package.metadata.oci.bin` is missing",
            manifest.display(),
            package.name,
            many.join(", ")
        ))
        .hint("set `bin = \"NAME\"` in [package.metadata.oci], or pass --bin NAME")),
    }
}

fn expand_tag(tag: &str, package: &Package) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = tag;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .ok_or_else(|| format!("`{tag}` has an unclosed `{{`"))?
            + start;
        match &rest[start + 1..end] {
            "version" => out.push_str(&package.version.to_string()),
            "package" => out.push_str(package.name.as_str()),
            other => {
                return Err(format!(
                    "`{tag}` uses the unknown placeholder `{{{other}}}` (known: {{version}}, {{package}})"
                ))
            }
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    // Semver build metadata (`+`) is not allowed in tags; registries use `_` by convention.
    Ok(out.replace('+', "_"))
}

fn validate_port(p: &str) -> Result<(), String> {
    let (num, proto) = p.split_once('/').unwrap_or((p, "tcp"));
    let ok_num = num.parse::<u16>().map(|n| n > 0).unwrap_or(false);
    if !ok_num || !matches!(proto, "tcp" | "udp" | "sctp") {
        return Err(format!(
            "`{p}` is not a port: expected \"PORT\" or \"PORT/tcp|udp|sctp\""
        ));
    }
    Ok(())
}

fn default_labels(p: &Package) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            l.insert(format!("{LABEL_PREFIX}{k}"), v);
        }
    };
    put("title", Some(p.name.to_string()));
    put("version", Some(p.version.to_string()));
    put("description", p.description.clone());
    put("licenses", p.license.clone());
    put("source", p.repository.clone());
    put("url", p.homepage.clone());
    if let Some(dir) = p.manifest_path.parent() {
        put("revision", git_clean_head(dir.as_std_path()));
    }
    l
}

const GIT_REVISION: &str = "git revision";

/// Starts finding the `revision` label of a package in `dir` in the background.
pub fn prefetch_revision(dir: &Path) {
    crate::util::prefetch::start(GIT_REVISION, dir, run_git_clean_head);
}

/// The commit of HEAD when the work tree holding `dir` is clean; nothing otherwise.
fn git_clean_head(dir: &Path) -> Option<String> {
    crate::util::prefetch::once(GIT_REVISION, dir, run_git_clean_head)
}

fn run_git_clean_head(dir: &Path) -> Option<String> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let status = git(&["status", "--porcelain", "--untracked-files=no"])?;
    if !status.is_empty() {
        return None;
    }
    git(&["rev-parse", "HEAD"]).filter(|h| h.len() >= 40)
}

/// `SOURCE_DATE_EPOCH` if set, else [`DEFAULT_EPOCH`].
pub fn source_date_epoch() -> Result<u64, String> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| format!("SOURCE_DATE_EPOCH=`{v}` is not a whole number of seconds")),
        _ => Ok(DEFAULT_EPOCH),
    }
}

fn parse_created(s: &str) -> Result<u64, String> {
    let t = humantime::parse_rfc3339(s).map_err(|_| {
        format!("`{s}` is not \"now\" or an RFC 3339 time like 2024-01-01T00:00:00Z")
    })?;
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| format!("`{s}` is before 1970"))
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
}
