//! Reads `[package.metadata.oci]`, with defaults from `[workspace.metadata.oci]` and from Cargo,
//! into a validated [`ImageSpec`]: the one description of the image every later stage works from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cargo_metadata::{Metadata, Package, TargetKind};
use serde::Deserialize;

use crate::error::UsageError;
use crate::reference::{validate_tag, ImageName};

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
    })
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
    crate::prefetch::start(GIT_REVISION, dir, run_git_clean_head);
}

/// The commit of HEAD when the work tree holding `dir` is clean; nothing otherwise.
fn git_clean_head(dir: &Path) -> Option<String> {
    crate::prefetch::once(GIT_REVISION, dir, run_git_clean_head)
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
