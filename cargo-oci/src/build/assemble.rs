//! Assembles an image from its layers: the config (runtime settings, labels, diff_ids, history)
//! and the manifest, both as canonical JSON (sorted keys) stored as blobs, and the content tag.

use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result};
use oci_spec::image::{
    Arch, ConfigBuilder, DescriptorBuilder, HistoryBuilder, ImageConfigurationBuilder,
    ImageManifestBuilder, MediaType, Os, RootFsBuilder,
};

use crate::config::{Created, ImageSpec};
use crate::oci::image::{canonical_json, Image, Platform};
use crate::oci::layer::Layer;
use crate::oci::store::Store;

/// RFC 3339 text of a `created` setting.
pub fn created_text(created: &Created) -> String {
    let t = match created {
        Created::Epoch(s) => UNIX_EPOCH + Duration::from_secs(*s),
        Created::Now => std::time::SystemTime::now(),
    };
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Writes the config and manifest of an image made of `layers` and returns the image. Its tags
/// are `tags`, or by default the configured ones plus the content tag (unless `content-tag =
/// false`).
pub fn assemble(
    store: &Store,
    spec: &ImageSpec,
    env: &[String],
    layers: Vec<Layer>,
    platform: &Platform,
    tags: Option<Vec<String>>,
) -> Result<Image> {
    let created = created_text(&spec.runtime.created);
    let mut labels = spec.runtime.labels.clone();
    let revision = spec.runtime.revision_from.as_deref();
    if let Some(rev) = revision.and_then(crate::config::package::git_clean_head) {
        labels.insert(crate::config::package::REVISION_LABEL.to_string(), rev);
    }
    let mut cfg = ConfigBuilder::default()
        .user(format!("{}:{}", spec.runtime.user, spec.runtime.group))
        .env(env.to_vec())
        .entrypoint(vec!["/bin/entrypoint".to_string()])
        .working_dir(spec.runtime.workdir.clone())
        .labels(
            labels
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        );
    if !spec.runtime.args.is_empty() {
        cfg = cfg.cmd(spec.runtime.args.clone());
    }
    if !spec.runtime.ports.is_empty() {
        cfg = cfg.exposed_ports(
            spec.runtime
                .ports
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
    if let Some(s) = &spec.runtime.stop_signal {
        cfg = cfg.stop_signal(s.clone());
    }
    if !spec.runtime.volumes.is_empty() {
        cfg = cfg.volumes(spec.runtime.volumes.clone());
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
        .diff_ids(
            layers
                .iter()
                .map(|l| l.diff_id.to_string())
                .collect::<Vec<_>>(),
        )
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
        .digest(config_blob.digest.to_oci())
        .size(config_blob.size)
        .build()?;
    let layer_descs = layers
        .iter()
        .map(|l| {
            Ok(DescriptorBuilder::default()
                .media_type(MediaType::from(l.media_type.as_str()))
                .digest(l.blob.digest.to_oci())
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
        if spec.content_tag && !t.contains(&content_tag) {
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
        variant: platform.variant.clone(),
    })
}
