//! Assembles an image from its layers: the config (runtime settings, labels, diff_ids, history)
//! and the manifest, both as canonical JSON (sorted keys) stored as blobs, and the content tag.

use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result};
use oci_spec::image::{
    Arch, ConfigBuilder, DescriptorBuilder, HistoryBuilder, ImageConfigurationBuilder,
    ImageManifestBuilder, MediaType, Os, RootFsBuilder,
};
use serde::Serialize;

use crate::layer::Layer;
use crate::metadata::{Created, ImageSpec};
use crate::reference::ImageName;
use crate::store::{Blob, Store};

/// A complete image in the store.
#[derive(Debug, Clone)]
pub struct Image {
    pub name: ImageName,
    /// Every tag: the configured ones, then the content tag.
    pub tags: Vec<String>,
    /// The tag derived from the image's content.
    pub content_tag: String,
    pub config: Blob,
    pub manifest: Blob,
    pub layers: Vec<Layer>,
    /// GOARCH word (`amd64`, `arm64`, ...).
    pub architecture: String,
}

impl Image {
    /// `name:tag` for every tag.
    pub fn references(&self) -> Vec<String> {
        self.tags.iter().map(|t| self.name.with_tag(t)).collect()
    }
}

/// Platform of the binaries, in Go's GOARCH words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// From an ELF header's machine, class and byte order.
    pub fn from_elf(machine: u16, class64: bool, little_endian: bool) -> Result<Platform> {
        use goblin::elf::header::*;
        let (arch, variant) = match (machine, class64, little_endian) {
            (EM_X86_64, true, _) => ("amd64", None),
            (EM_386, false, _) => ("386", None),
            (EM_AARCH64, true, true) => ("arm64", Some("v8")),
            (EM_ARM, false, true) => ("arm", Some("v7")),
            (EM_RISCV, true, _) => ("riscv64", None),
            (EM_PPC64, true, true) => ("ppc64le", None),
            (EM_PPC64, true, false) => ("ppc64", None),
            (EM_S390, true, _) => ("s390x", None),
            (EM_LOONGARCH, true, _) => ("loong64", None),
            _ => {
                anyhow::bail!("ELF machine {machine} has no OCI architecture name cargo-oci knows")
            }
        };
        Ok(Platform {
            architecture: arch.into(),
            variant: variant.map(str::to_string),
        })
    }
}

/// JSON with sorted keys and no whitespace: the same value always gives the same bytes.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    // serde_json::Value keeps object keys in a BTreeMap (sorted), whatever the source used.
    let v = serde_json::to_value(value)?;
    Ok(serde_json::to_vec(&v)?)
}

/// RFC 3339 text of a `created` setting.
pub fn created_text(created: &Created) -> String {
    let t = match created {
        Created::Epoch(s) => UNIX_EPOCH + Duration::from_secs(*s),
        Created::Now => std::time::SystemTime::now(),
    };
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Writes the config and manifest of an image made of `layers` and returns the image. Its tags
/// are `tags`, or by default the configured ones plus the content tag.
pub fn assemble(
    store: &Store,
    spec: &ImageSpec,
    env: &[String],
    layers: Vec<Layer>,
    platform: &Platform,
    tags: Option<Vec<String>>,
) -> Result<Image> {
    let created = created_text(&spec.created);
    let mut cfg = ConfigBuilder::default()
        .user(format!("{}:{}", spec.user, spec.group))
        .env(env.to_vec())
        .entrypoint(vec!["/bin/entrypoint".to_string()])
        .working_dir(spec.workdir.clone())
        .labels(
            spec.labels
                .clone()
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        );
    if !spec.args.is_empty() {
        cfg = cfg.cmd(spec.args.clone());
    }
    if !spec.ports.is_empty() {
        cfg = cfg.exposed_ports(
            spec.ports
                .iter()
                .map(|p| {
                    if p.contains('/') {
                        p.clone()
                    } else {
                        format!("{p}/tcp")
                    }
                })
                .collect::<Vec<_>>(),
        );
    }
    if !spec.volumes.is_empty() {
        cfg = cfg.volumes(spec.volumes.clone());
    }
    let history = layers
        .iter()
        .map(|l| {
            HistoryBuilder::default()
                .created(created.clone())
                .created_by(format!("cargo-oci: {}", l.role))
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let rootfs = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>())
        .build()?;
    let mut config = ImageConfigurationBuilder::default()
        .created(created)
        .architecture(Arch::from(platform.architecture.as_str()))
        .os(Os::Linux)
        .config(cfg.build()?)
        .rootfs(rootfs)
        .history(history);
    if let Some(v) = &platform.variant {
        config = config.variant(v.clone());
    }
    let config_blob = store.put(&canonical_json(&config.build()?)?)?;

    let config_desc = DescriptorBuilder::default()
        .media_type(MediaType::ImageConfig)
        .digest(config_blob.digest.parse::<oci_spec::image::Digest>()?)
        .size(config_blob.size)
        .build()?;
    let layer_descs = layers
        .iter()
        .map(|l| {
            Ok(DescriptorBuilder::default()
                .media_type(MediaType::from(l.media_type.as_str()))
                .digest(l.blob.digest.parse::<oci_spec::image::Digest>()?)
                .size(l.blob.size)
                .build()?)
        })
        .collect::<Result<Vec<_>>>()?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config_desc)
        .layers(layer_descs)
        .build()?;
    let manifest_blob = store
        .put(&canonical_json(&manifest)?)
        .context("cannot store the manifest")?;

    let content_tag = config_blob.hex()[..16].to_string();
    let tags = tags.unwrap_or_else(|| {
        let mut t = spec.tags.clone();
        if !t.contains(&content_tag) {
            t.push(content_tag.clone());
        }
        t
    });
    Ok(Image {
        name: spec.name.clone(),
        tags,
        content_tag,
        config: config_blob,
        manifest: manifest_blob,
        layers,
        architecture: platform.architecture.clone(),
    })
}
