//! The SBOM of a multi-platform index: the index itself (its purl and digest) and the platform
//! images it lists, each a package with its own purl and digest, related as parts of the index
//! (SPDX `CONTAINS`, a CycloneDX dependency). What each image holds is in its own SBOM.

use anyhow::Result;
use serde_json::{json, Value};

use super::spdx::{container, rel};
use super::{pct, Format, Subject};
use crate::oci::index::{platform_of, Index};

/// `pkg:oci/NAME@sha256%3A...?repository_url=...` of the index.
pub fn index_purl(index: &Index) -> String {
    let name = &index.name;
    let last = name
        .repository
        .rsplit('/')
        .next()
        .unwrap_or(&name.repository);
    format!(
        "pkg:oci/{}@{}?repository_url={}",
        last.to_lowercase(),
        pct(index.blob.digest.as_ref()),
        pct(&format!("{}/{}", name.registry, name.repository)),
    )
}

/// Each platform image of `index`: its platform, digest and purl.
pub fn platform_images(index: &Index) -> Vec<(String, String, String)> {
    index
        .images
        .iter()
        .map(|image| {
            let purl = Subject {
                image,
                debug: false,
            }
            .purl();
            (platform_of(image), image.manifest.digest.to_string(), purl)
        })
        .collect()
}

/// The SBOM of `index` in `format`; `created` is the documents' creation time (seconds).
pub fn render_index(format: Format, index: &Index, created: u64) -> Result<Vec<u8>> {
    let doc = match format {
        Format::Spdx => spdx(index, created)?,
        Format::Cyclonedx => cyclonedx(index, created)?,
    };
    let mut out = serde_json::to_vec_pretty(&doc)?;
    out.push(b'\n');
    Ok(out)
}

fn spdx(index: &Index, created: u64) -> Result<Value> {
    let mut packages = vec![container(
        "SPDXRef-Index",
        &index.name.full,
        index.blob.digest.as_str(),
        index_purl(index),
        format!(
            "multi-platform image index; platforms: {}; tags: {}",
            index.platforms().join(", "),
            index.tags.join(", ")
        ),
    )];
    let mut rels = vec![rel("SPDXRef-DOCUMENT", "DESCRIBES", "SPDXRef-Index")];
    for (i, ((platform, digest, purl), image)) in
        platform_images(index).iter().zip(&index.images).enumerate()
    {
        let id = format!("SPDXRef-Image-{i}-{}", image.architecture.replace('_', "-"));
        packages.push(container(
            &id,
            &image.name.full,
            digest,
            purl.clone(),
            format!("the {platform} image; its own SBOM lists what it holds"),
        ));
        rels.push(rel("SPDXRef-Index", "CONTAINS", &id));
    }
    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}@{}", index.name.full, index.blob.digest),
        "creationInfo": {
            "created": super::rfc3339(created),
            "creators": [format!("Tool: cargo-oci-{}", env!("CARGO_PKG_VERSION"))],
        },
        "packages": packages,
        "relationships": rels,
    });
    let id = super::content_uuid(&serde_json::to_vec(&doc)?);
    let last = index.name.repository.rsplit('/').next().unwrap_or("image");
    doc["documentNamespace"] = json!(format!(
        "https://spdx.org/spdxdocs/cargo-oci/{last}-index-{id}"
    ));
    Ok(doc)
}

fn cyclonedx(index: &Index, created: u64) -> Result<Value> {
    let prop = |name: &str, value: &str| json!({ "name": name, "value": value });
    let index_ref = format!("index:{}", index.blob.digest);
    let mut components = Vec::new();
    let mut dependencies = Vec::new();
    let mut refs = Vec::new();
    for ((platform, digest, purl), image) in platform_images(index).iter().zip(&index.images) {
        let r = format!("image:{digest}");
        components.push(json!({
            "type": "container",
            "bom-ref": r,
            "name": image.name.full,
            "version": digest,
            "purl": purl,
            "hashes": [{ "alg": "SHA-256", "content": image.manifest.hex() }],
            "properties": [prop("cargo-oci:platform", platform)],
        }));
        dependencies.push(json!({ "ref": r, "dependsOn": [] }));
        refs.push(r);
    }
    dependencies.insert(0, json!({ "ref": index_ref, "dependsOn": refs }));
    let mut metadata = json!({
        "tools": { "components": [{ "type": "application", "name": "cargo-oci",
                                    "version": env!("CARGO_PKG_VERSION") }] },
        "component": {
            "type": "container",
            "bom-ref": index_ref,
            "name": index.name.full,
            "version": index.blob.digest.to_string(),
            "purl": index_purl(index),
            "hashes": [{ "alg": "SHA-256", "content": index.blob.hex() }],
            "properties": [prop("cargo-oci:platforms", &index.platforms().join(" "))],
        },
    });
    if std::env::var_os("SOURCE_DATE_EPOCH").is_some() {
        metadata["timestamp"] = json!(super::rfc3339(created));
    }
    let mut doc = json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "version": 1,
        "metadata": metadata,
        "components": components,
        "dependencies": dependencies,
    });
    doc["serialNumber"] = json!(format!(
        "urn:uuid:{}",
        super::content_uuid(&serde_json::to_vec(&doc)?)
    ));
    Ok(doc)
}
