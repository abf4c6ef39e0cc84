//! Puts an assembled image on a base image: the base's layers go first, its history too, and its
//! config is inherited where the image does not decide (environment, labels, ports, volumes,
//! stop signal). The environment is merged to one entry per variable, the image's own value
//! winning, so that every runtime (Docker, Kubernetes) sees the same thing.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};

use crate::oci::digest::Digest;
use crate::oci::image::{canonical_json, Image};
use crate::oci::store::Store;
use crate::source::Base;

/// Merges two `KEY=VALUE` lists: one entry per key, in the base's order then the image's new
/// keys; the image's value wins. `PATH` keeps the base's directories after the image's when the
/// user did not set it (`user_path` false), so the base's programs stay reachable.
pub fn merge_env(base: &[String], own: &[String], user_path: bool) -> Vec<String> {
    let split = |e: &String| -> (String, String) {
        match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (e.clone(), String::new()),
        }
    };
    // Within one list the last entry wins, as Docker reads it.
    let base_map: BTreeMap<String, String> = base.iter().map(split).collect();
    let own_map: BTreeMap<String, String> = own.iter().map(split).collect();
    let mut keys: Vec<String> = Vec::new();
    for (k, _) in base.iter().chain(own).map(split) {
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.into_iter()
        .map(|k| {
            let v = match (own_map.get(&k), base_map.get(&k)) {
                (Some(mine), Some(bp)) if k == "PATH" && !user_path => {
                    if bp.split(':').any(|d| d == mine) {
                        bp.clone()
                    } else {
                        format!("{mine}:{bp}")
                    }
                }
                (Some(mine), _) => mine.clone(),
                (None, Some(b)) => b.clone(),
                (None, None) => String::new(),
            };
            format!("{k}={v}")
        })
        .collect()
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Merges two JSON objects, `own` winning.
fn merge_object(base: Option<&Value>, own: Option<&Value>) -> Option<Value> {
    let mut out: Map<String, Value> = base.and_then(Value::as_object).cloned().unwrap_or_default();
    if let Some(o) = own.and_then(Value::as_object) {
        out.extend(o.clone());
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

/// The image on top of `base`: new config and manifest in the store, new content tag.
pub fn rebase(store: &Store, image: Image, base: &Base, user_path: bool) -> Result<Image> {
    let mut config: Value = serde_json::from_slice(
        &store
            .read(&image.config)
            .context("cannot read the image config")?,
    )?;
    let empty = json!({});
    let base_cfg = base.config.get("config").unwrap_or(&empty);

    let own_cfg = config.get("config").cloned().unwrap_or_else(|| json!({}));
    let mut cfg = own_cfg.as_object().cloned().unwrap_or_default();
    let env = merge_env(
        &strings(base_cfg.get("Env")),
        &strings(own_cfg.get("Env")),
        user_path,
    );
    cfg.insert("Env".into(), json!(env));
    for key in ["Labels", "ExposedPorts", "Volumes"] {
        if let Some(v) = merge_object(base_cfg.get(key), own_cfg.get(key)) {
            cfg.insert(key.into(), v);
        }
    }
    if let (None, Some(s)) = (cfg.get("StopSignal"), base_cfg.get("StopSignal")) {
        cfg.insert("StopSignal".into(), s.clone());
    }
    config["config"] = Value::Object(cfg);

    let own_diffs = strings(config.pointer("/rootfs/diff_ids"))
        .iter()
        .map(|d| {
            d.parse::<Digest>()
                .map_err(|e| anyhow::anyhow!("the image config's diff_id: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let diffs: Vec<Digest> = base
        .layers
        .iter()
        .map(|l| l.diff_id.clone())
        .chain(own_diffs)
        .collect();
    config["rootfs"] = json!({"type": "layers", "diff_ids": diffs});
    let mut history = base.history();
    history.extend(
        config
            .get("history")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
    );
    config["history"] = Value::Array(history);
    let config_blob = store.put(&canonical_json(&config)?)?;

    let mut manifest: Value = serde_json::from_slice(
        &store
            .read(&image.manifest)
            .context("cannot read the manifest")?,
    )?;
    manifest["config"]["digest"] = json!(config_blob.digest);
    manifest["config"]["size"] = json!(config_blob.size);
    let mut descs: Vec<Value> = base
        .layers
        .iter()
        .map(|l| json!({"mediaType": l.media_type, "digest": l.blob.digest, "size": l.blob.size}))
        .collect();
    descs.extend(
        manifest
            .get("layers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
    );
    manifest["layers"] = Value::Array(descs);
    let manifest_blob = store.put(&canonical_json(&manifest)?)?;

    let content_tag = config_blob.hex()[..16].to_string();
    // The content tag follows the new content, if the image had one (`content-tag`).
    let tagged = image.tags.contains(&image.content_tag);
    let mut tags: Vec<String> = image
        .tags
        .iter()
        .filter(|t| **t != image.content_tag)
        .cloned()
        .collect();
    if tagged && !tags.contains(&content_tag) {
        tags.push(content_tag.clone());
    }
    let mut layers = base.layers.clone();
    layers.extend(image.layers);
    Ok(Image {
        tags,
        content_tag,
        config: config_blob,
        manifest: manifest_blob,
        layers,
        ..image
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn env_has_one_entry_per_key_and_own_wins() {
        let base = v(&["PATH=/usr/bin:/bin", "A=base", "B=base", "A=again"]);
        let own = v(&["PATH=/bin", "B=own", "C=own"]);
        assert_eq!(
            merge_env(&base, &own, false),
            v(&["PATH=/usr/bin:/bin", "A=again", "B=own", "C=own"])
        );
        assert_eq!(
            merge_env(&v(&["PATH=/usr/bin"]), &own, false),
            v(&["PATH=/bin:/usr/bin", "B=own", "C=own"])
        );
        assert_eq!(
            merge_env(&base, &own, true),
            v(&["PATH=/bin", "A=again", "B=own", "C=own"])
        );
    }
}
