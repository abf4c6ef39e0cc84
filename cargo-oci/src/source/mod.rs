//! Reads a base image (`from`): an OCI layout directory, an oci-archive, a docker-archive, or a
//! registry image pinned by digest. Base images are untrusted input: every blob is checked
//! against its digest, every layer against its diff_id and its entries checked (see [`layers`]),
//! JSON is size-capped, and nothing from an archive is ever unpacked to disk. Layers are decoded
//! by the codec their media type names (gzip, zstd or none; a docker-archive's layer files by
//! their first bytes). The result is a [`Base`]: its layers in the blob store, the base config
//! and its history.

mod layers;
mod registry;

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::oci::archive;
use crate::oci::digest::Digest;
use crate::oci::docker_archive;
use crate::oci::layer::Layer;
use crate::oci::reference::ImageName;
use crate::oci::store::Store;
use crate::registry::ClientOptions;
use crate::util::error::UsageError;
use crate::util::reporter::Reporter;

/// Largest JSON document (index, manifest, config) read from a base.
const MAX_JSON: u64 = 8 << 20;

/// Where a base image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseRef {
    /// `oci:DIR[:REF]`: an OCI image layout; REF is a `ref.name` (or the tag part of one).
    Layout {
        dir: PathBuf,
        reference: Option<String>,
    },
    /// `oci-archive:FILE[:REF]`.
    OciArchive {
        file: PathBuf,
        reference: Option<String>,
    },
    /// `docker-archive:FILE[:REF]`: REF is one of its `RepoTags`.
    DockerArchive {
        file: PathBuf,
        reference: Option<String>,
    },
    /// `HOST/REPO@sha256:DIGEST`.
    Registry { name: ImageName, digest: Digest },
}

impl BaseRef {
    /// Parses a `from` value; relative paths are taken from `dir` (the package's directory).
    pub fn parse(s: &str, dir: &Path) -> Result<BaseRef, String> {
        let split = |rest: &str| -> Result<(PathBuf, Option<String>), String> {
            // As skopeo: the path ends at the first `:`.
            let (path, reference) = match rest.split_once(':') {
                Some((p, r)) if !r.is_empty() => (p, Some(r.to_string())),
                Some((p, _)) => (p, None),
                None => (rest, None),
            };
            if path.is_empty() {
                return Err(format!("`{s}` names no path"));
            }
            Ok((dir.join(path), reference))
        };
        if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, reference) = split(rest)?;
            return Ok(BaseRef::Layout { dir, reference });
        }
        if let Some(rest) = s.strip_prefix("oci-archive:") {
            let (file, reference) = split(rest)?;
            return Ok(BaseRef::OciArchive { file, reference });
        }
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            let (file, reference) = split(rest)?;
            return Ok(BaseRef::DockerArchive { file, reference });
        }
        let rest = s.strip_prefix("docker://").unwrap_or(s);
        let Some((name, digest)) = rest.split_once('@') else {
            return Err(format!(
                "`{s}` names a registry image by tag; a tag can move, so the build would not be \
                 reproducible: pin it by digest (`{s}@sha256:…`, `skopeo inspect docker://{s}` shows it)"
            ));
        };
        let digest: Digest = digest.parse()?;
        // `name:tag@digest`: the digest decides; the tag is only a comment.
        let name = match name.rsplit_once(':') {
            Some((n, tag)) if !tag.contains('/') => n,
            _ => name,
        };
        let name = ImageName::parse(name)?;
        Ok(BaseRef::Registry { name, digest })
    }
}

impl std::fmt::Display for BaseRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = |r: &Option<String>| r.as_ref().map(|r| format!(":{r}")).unwrap_or_default();
        match self {
            BaseRef::Layout { dir, reference } => {
                write!(f, "oci:{}{}", dir.display(), r(reference))
            }
            BaseRef::OciArchive { file, reference } => {
                write!(f, "oci-archive:{}{}", file.display(), r(reference))
            }
            BaseRef::DockerArchive { file, reference } => {
                write!(f, "docker-archive:{}{}", file.display(), r(reference))
            }
            BaseRef::Registry { name, digest } => write!(f, "{name}@{digest}"),
        }
    }
}

/// A base image, its layers in the store.
#[derive(Debug, Clone)]
pub struct Base {
    pub layers: Vec<Layer>,
    /// The base's image config (the whole document).
    pub config: Value,
}

impl Base {
    /// The base's history entries, one per layer at least (made up when it has none).
    pub fn history(&self) -> Vec<Value> {
        match self.config.get("history").and_then(Value::as_array) {
            Some(h) => h.clone(),
            None => self
                .layers
                .iter()
                .map(|_| serde_json::json!({"created_by": "base image layer"}))
                .collect(),
        }
    }
}

/// Where blobs of an OCI-shaped source are read from.
trait Blobs {
    /// A blob's bytes.
    fn open(&self, digest: &Digest) -> Result<Box<dyn Read + '_>>;
    /// A small JSON blob, checked against its digest.
    fn json(&self, digest: &Digest) -> Result<(Vec<u8>, Value)> {
        let mut bytes = Vec::new();
        self.open(digest)?
            .take(MAX_JSON + 1)
            .read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_JSON {
            bail!("blob {digest} is larger than {MAX_JSON} bytes: not a manifest or config");
        }
        let got = Digest::of(&bytes);
        if got != *digest {
            bail!("blob {digest} hashes to {got}: the image is corrupt");
        }
        let v =
            serde_json::from_slice(&bytes).with_context(|| format!("blob {digest} is not JSON"))?;
        Ok((bytes, v))
    }
    /// A manifest or image index, checked against its digest (a registry serves them apart
    /// from the other blobs).
    fn manifest(&self, digest: &Digest) -> Result<(Vec<u8>, Value)> {
        self.json(digest)
    }
}

/// A digest read from a base image, parsed once; `what` names where it came from.
fn parse_digest(d: &str, what: &str) -> Result<Digest> {
    d.parse().map_err(|e| anyhow::anyhow!("{what}: {e}"))
}

fn blob_name(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

struct LayoutDir(PathBuf);

impl Blobs for LayoutDir {
    fn open(&self, digest: &Digest) -> Result<Box<dyn Read + '_>> {
        let p = self.0.join(blob_name(digest));
        // A blob that is a link is read only when it stays inside the layout (layouts may link
        // identical blobs); one that leads elsewhere (`/etc/shadow`, another user's file) is
        // refused before a byte of it is read.
        let real = p
            .canonicalize()
            .with_context(|| format!("cannot read blob {}", p.display()))?;
        let root = self
            .0
            .canonicalize()
            .with_context(|| format!("cannot read {}", self.0.display()))?;
        if !real.starts_with(&root) {
            return Err(UsageError::new(format!(
                "blob {} is a link to a file outside the layout {}: refusing to read it",
                p.display(),
                self.0.display()
            ))
            .hint("a layout's blobs must be its own files (`skopeo copy` writes such a layout)")
            .into());
        }
        Ok(Box::new(std::fs::File::open(&real).with_context(|| {
            format!("cannot read blob {}", p.display())
        })?))
    }
}

impl Blobs for archive::Archive {
    fn open(&self, digest: &Digest) -> Result<Box<dyn Read + '_>> {
        Ok(Box::new(self.open_member(&blob_name(digest))?))
    }
}

/// Reads the base image, checks it and puts its layers in the store; a registry is reached with
/// `registry`'s options (TLS roots, plain HTTP hosts, retries).
pub fn load(
    base: &BaseRef,
    store: &Store,
    architecture: &str,
    registry: &ClientOptions,
    report: &Reporter,
) -> Result<Base> {
    report.status("Reading", &format!("base image {base}"));
    let loaded = match base {
        BaseRef::Layout { dir, reference } => {
            let index = std::fs::read(dir.join("index.json")).map_err(|e| {
                UsageError::new(format!(
                    "base image {base}: cannot read {}: {e}",
                    dir.join("index.json").display()
                ))
                .hint("`from = \"oci:DIR\"` needs an OCI image layout directory (with index.json)")
            })?;
            let src = LayoutDir(dir.clone());
            from_index(&src, &index, reference.as_deref(), architecture, store)
        }
        BaseRef::OciArchive { file, reference } => {
            let ar = open_archive(file, base)?;
            if !ar.contains("index.json") {
                return Err(UsageError::new(format!(
                    "base image {base}: {} has no index.json: it is not an oci-archive",
                    file.display()
                ))
                .hint("for a `docker save` file write `from = \"docker-archive:FILE\"`")
                .into());
            }
            let index = ar.read_member("index.json", MAX_JSON)?;
            from_index(&ar, &index, reference.as_deref(), architecture, store)
        }
        BaseRef::DockerArchive { file, reference } => {
            let ar = open_archive(file, base)?;
            from_docker_archive(&ar, reference.as_deref(), store)
        }
        BaseRef::Registry { name, digest } => {
            let src = registry::Source::new(name, store, registry, report);
            src.manifest(digest)
                .and_then(|(_, manifest)| from_manifest(&src, manifest, architecture, store, 0))
        }
    };
    let loaded = loaded.with_context(|| format!("cannot use the base image {base}"))?;
    let arch = loaded
        .config
        .get("architecture")
        .and_then(Value::as_str)
        .unwrap_or("");
    if arch != architecture {
        return Err(UsageError::new(format!(
            "base image {base} is for `{arch}`, but the binary is for `{architecture}`"
        ))
        .hint("choose a base image built for the same architecture")
        .into());
    }
    if loaded.config.get("os").and_then(Value::as_str) != Some("linux") {
        return Err(UsageError::new(format!("base image {base} is not a linux image")).into());
    }
    Ok(loaded)
}

fn open_archive(file: &Path, base: &BaseRef) -> Result<archive::Archive> {
    if !file.is_file() {
        return Err(UsageError::new(format!(
            "base image {base}: {} is not a file",
            file.display()
        ))
        .hint("check the path in `from`; relative paths start at the package's directory")
        .into());
    }
    archive::Archive::open(file).map_err(|e| {
        UsageError::new(format!("base image {base}: {e:#}"))
            .hint("`from` names an image archive: a `docker save` or `skopeo copy` output")
            .into()
    })
}

/// Picks a manifest from an `index.json`: by `ref.name` (or its tag), else the only image.
fn from_index(
    src: &dyn Blobs,
    index: &[u8],
    reference: Option<&str>,
    architecture: &str,
    store: &Store,
) -> Result<Base> {
    let index: Value = serde_json::from_slice(index).context("index.json is not JSON")?;
    let manifests = index
        .get("manifests")
        .and_then(Value::as_array)
        .context("index.json has no `manifests`")?;
    let name_of = |m: &Value| -> Option<String> {
        m.pointer("/annotations/org.opencontainers.image.ref.name")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let chosen: Vec<&Value> = match reference {
        Some(r) => manifests
            .iter()
            .filter(|m| {
                name_of(m)
                    .is_some_and(|n| n == r || n.rsplit_once(':').is_some_and(|(_, t)| t == r))
            })
            .collect(),
        None => manifests.iter().collect(),
    };
    let mut digests: Vec<Digest> = chosen
        .iter()
        .filter_map(|m| m.get("digest").and_then(Value::as_str))
        .map(|d| parse_digest(d, "index.json: a manifest's digest"))
        .collect::<Result<_>>()?;
    digests.sort_unstable();
    digests.dedup();
    let names: Vec<String> = manifests.iter().filter_map(name_of).collect();
    match digests.as_slice() {
        [d] => {
            let (_, v) = src.manifest(d)?;
            from_manifest(src, v, architecture, store, 0)
        }
        [] => Err(UsageError::new(format!(
            "the layout has no image named `{}` (it has: {})",
            reference.unwrap_or(""),
            names.join(", ")
        ))
        .hint("write one of those names after the path: `oci:DIR:NAME`")
        .into()),
        _ => Err(UsageError::new(format!(
            "the layout holds several images ({}): say which",
            names.join(", ")
        ))
        .hint("write its name after the path: `oci:DIR:NAME`")
        .into()),
    }
}

/// Follows an image index to the manifest for `linux/architecture`, then loads that image.
fn from_manifest(
    src: &dyn Blobs,
    manifest: Value,
    architecture: &str,
    store: &Store,
    depth: u32,
) -> Result<Base> {
    if let Some(list) = manifest.get("manifests").and_then(Value::as_array) {
        if depth > 2 {
            bail!("image indexes nest too deep");
        }
        let fits = |m: &&Value| {
            m.pointer("/platform/os").and_then(Value::as_str) == Some("linux")
                && m.pointer("/platform/architecture").and_then(Value::as_str) == Some(architecture)
        };
        let pick = list
            .iter()
            .find(fits)
            .or(if list.len() == 1 { list.first() } else { None })
            .with_context(|| format!("the image index has no linux/{architecture} image"))?;
        let d = pick
            .get("digest")
            .and_then(Value::as_str)
            .context("an index entry has no digest")?;
        let d = parse_digest(d, "an image index entry's digest")?;
        let (_, v) = src.manifest(&d)?;
        return from_manifest(src, v, architecture, store, depth + 1);
    }
    let config_digest = manifest
        .pointer("/config/digest")
        .and_then(Value::as_str)
        .context("the manifest has no config digest")?;
    let config_digest = parse_digest(config_digest, "the manifest's config digest")?;
    let (_, config) = src.json(&config_digest)?;
    let diff_ids = diff_ids(&config)?;
    let descs = manifest
        .get("layers")
        .and_then(Value::as_array)
        .context("the manifest has no `layers`")?;
    if descs.len() != diff_ids.len() {
        bail!(
            "the manifest lists {} layers but the config {} diff_ids",
            descs.len(),
            diff_ids.len()
        );
    }
    let mut layers = Vec::new();
    let mut shape = crate::oci::flatten::Tree::shape();
    for (i, (desc, diff)) in descs.iter().zip(&diff_ids).enumerate() {
        let d = desc
            .get("digest")
            .and_then(Value::as_str)
            .context("a layer has no digest")?;
        let d = parse_digest(d, &format!("the manifest's digest of layer {}", i + 1))?;
        let what = format!("base layer {} ({d})", i + 1);
        let media_type = desc
            .get("mediaType")
            .and_then(Value::as_str)
            .with_context(|| format!("{what} has no mediaType"))?;
        let expected = layers::Expected {
            encoding: Some(layers::Encoding::from_media_type(media_type, &what)?),
            blob: Some(&d),
            diff_id: diff,
        };
        layers.push(layers::import(
            store,
            src.open(&d)?,
            &expected,
            &mut shape,
            &what,
        )?);
    }
    Ok(Base { layers, config })
}

fn diff_ids(config: &Value) -> Result<Vec<Digest>> {
    let ids = config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .context("the image config has no rootfs.diff_ids")?;
    ids.iter()
        .enumerate()
        .map(|(i, d)| {
            let d = d.as_str().context("a diff_id is not a string")?;
            parse_digest(d, &format!("the image config's diff_id {}", i + 1))
        })
        .collect()
}

/// Loads a `docker save` archive: `manifest.json`, its config and layer files.
fn from_docker_archive(
    ar: &archive::Archive,
    reference: Option<&str>,
    store: &Store,
) -> Result<Base> {
    let entries = docker_archive::read_manifest(ar).map_err(|why| {
        UsageError::new(format!(
            "{} is not a docker-archive: {why}",
            ar.path.display()
        ))
        .hint("for an OCI archive write `from = \"oci-archive:FILE\"`")
    })?;
    let entry = match reference {
        Some(r) => entries.iter().find(|e| e.repo_tags.iter().any(|t| t == r)),
        None if entries.len() == 1 => entries.first(),
        None => {
            let all: Vec<&str> = entries
                .iter()
                .flat_map(|e| &e.repo_tags)
                .map(String::as_str)
                .collect();
            return Err(UsageError::new(format!(
                "{} holds several images ({}): say which",
                ar.path.display(),
                all.join(", ")
            ))
            .hint("write one of its tags after the path: `docker-archive:FILE:NAME:TAG`")
            .into());
        }
    }
    .with_context(|| {
        format!(
            "{} has no image tagged `{}`",
            ar.path.display(),
            reference.unwrap_or("")
        )
    })?;
    let config_name = entry.config.as_str();
    let config_bytes = ar.read_member(config_name, MAX_JSON)?;
    let config: Value =
        serde_json::from_slice(&config_bytes).context("the image config is not JSON")?;
    let diff_ids = diff_ids(&config)?;
    let names = &entry.layers;
    if names.len() != diff_ids.len() {
        bail!(
            "manifest.json lists {} layers but the config {} diff_ids",
            names.len(),
            diff_ids.len()
        );
    }
    let mut layers = Vec::new();
    let mut shape = crate::oci::flatten::Tree::shape();
    for (i, (name, diff)) in names.iter().zip(&diff_ids).enumerate() {
        let what = format!("base layer {} ({name})", i + 1);
        // A docker-archive names no media types: the layer file's first bytes tell.
        let expected = layers::Expected {
            encoding: None,
            blob: None,
            diff_id: diff,
        };
        layers.push(layers::import(
            store,
            ar.open_member(name)?,
            &expected,
            &mut shape,
            &what,
        )?);
    }
    Ok(Base { layers, config })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse() {
        let d = Path::new("/pkg");
        assert_eq!(
            BaseRef::parse("oci:base:localhost/x:1", d).unwrap(),
            BaseRef::Layout {
                dir: "/pkg/base".into(),
                reference: Some("localhost/x:1".into())
            }
        );
        assert_eq!(
            BaseRef::parse("docker-archive:/a/b.tar", d).unwrap(),
            BaseRef::DockerArchive {
                file: "/a/b.tar".into(),
                reference: None
            }
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        match BaseRef::parse(&format!("127.0.0.1:5000/team/base:1@{digest}"), d).unwrap() {
            BaseRef::Registry { name, digest: dg } => {
                assert_eq!(name.registry, "127.0.0.1:5000");
                assert_eq!(name.repository, "team/base");
                assert_eq!(dg, digest.as_str());
            }
            other => panic!("{other:?}"),
        }
        let e = BaseRef::parse("127.0.0.1:5000/base:latest", d).unwrap_err();
        assert!(e.contains("by tag") && e.contains("digest"), "{e}");
        assert!(BaseRef::parse("x/y@sha256:abc", d).is_err());
        assert!(BaseRef::parse("oci:", d).is_err());
    }

    /// Blobs served from memory.
    struct Memory(std::collections::HashMap<Digest, Vec<u8>>);

    impl Blobs for Memory {
        fn open(&self, digest: &Digest) -> Result<Box<dyn Read + '_>> {
            let b = self.0.get(digest).context("no such blob")?;
            Ok(Box::new(b.as_slice()))
        }
    }

    #[test]
    fn malformed_digests_are_refused_where_they_enter_naming_where() {
        let d = Path::new("/pkg");
        let long = format!("x/y@sha256:{}", "f".repeat(5000));
        let e = BaseRef::parse(&long, d).unwrap_err();
        assert!(e.contains("not a sha256 digest") && e.len() < 200, "{e}");

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let good = Digest::of(b"layer");
        let config = serde_json::json!({"rootfs": {"type": "layers", "diff_ids": [good]}});
        let config_bytes = serde_json::to_vec(&config).unwrap();
        let config_digest = Digest::of(&config_bytes);
        let src = Memory(
            [(config_digest.clone(), config_bytes)]
                .into_iter()
                .collect(),
        );
        let manifest = |config: &str, layer: &str| {
            serde_json::json!({
                "config": {"digest": config},
                "layers": [{"digest": layer, "mediaType": crate::oci::layer::MEDIA_TYPE_GZIP}],
            })
        };
        let load = |m: Value| {
            format!(
                "{:#}",
                from_manifest(&src, m, "amd64", &store, 0).err().unwrap()
            )
        };
        let junk = format!("sha256:{}", "Q".repeat(3000));
        let e = load(manifest(&junk, good.as_str()));
        assert!(
            e.contains("the manifest's config digest") && e.len() < 300,
            "{e}"
        );
        let e = load(manifest(config_digest.as_str(), "sha256:abc"));
        assert!(
            e.contains("digest of layer 1") && !e.contains("sha256:abc"),
            "the value is not quoted: {e}"
        );
        let e = load(serde_json::json!({"manifests": [{"digest": junk}]}));
        assert!(e.contains("image index entry") && e.len() < 300, "{e}");

        let config = serde_json::json!({"rootfs": {"diff_ids": [good, "md5:1"]}});
        let e = format!("{:#}", diff_ids(&config).unwrap_err());
        assert!(e.contains("diff_id 2") && !e.contains("md5:1"), "{e}");

        let index = serde_json::json!({"manifests": [{"digest": "sha256:../../etc"}]});
        let e = from_index(
            &src,
            &serde_json::to_vec(&index).unwrap(),
            None,
            "amd64",
            &store,
        )
        .err()
        .unwrap();
        assert!(format!("{e:#}").contains("index.json"), "{e:#}");
    }
}
