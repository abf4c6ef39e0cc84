//! The inventory of one image as a CycloneDX 1.6 JSON document: the image as the metadata's
//! component, the binary's crates (build-time ones with scope `excluded`), the Debian packages and
//! the unowned files, and the dependency graph between them.

use anyhow::Result;
use serde_json::{json, Value};

use super::crates::Source;
use super::{crate_purl, deb_purl, Inventory, Subject};

pub(super) fn render(inv: &Inventory, s: &Subject<'_>) -> Result<Vec<u8>> {
    let image = s.image;
    let image_ref = format!("image:{}", image.manifest.digest);
    let mut components = Vec::new();
    let mut dependencies = Vec::new();
    let mut image_deps = Vec::new();

    let crate_refs: Vec<String> = inv
        .crates
        .iter()
        .map(|c| format!("crate:{}@{}:{}", c.name, c.version, source_tag(&c.source)))
        .collect();
    for (i, c) in inv.crates.iter().enumerate() {
        let mut comp = json!({
            "type": if i == 0 { "application" } else { "library" },
            "bom-ref": crate_refs[i],
            "name": c.name,
            "version": c.version,
            "purl": crate_purl(c),
            "scope": if c.build_time { "excluded" } else { "required" },
        });
        if let Some(l) = &c.license {
            comp["licenses"] = json!([{ "expression": l }]);
        }
        if let Some(sum) = &c.checksum {
            comp["hashes"] = json!([{ "alg": "SHA-256", "content": sum }]);
        }
        let mut props = Vec::new();
        match &c.source {
            Source::Registry(r) => {
                props.push(prop("cargo-oci:crate:source", &format!("registry {r}")));
                if r.contains("crates.io-index") {
                    comp["externalReferences"] = json!([{ "type": "distribution", "url":
                        format!("https://crates.io/api/v1/crates/{}/{}/download", c.name, c.version) }]);
                }
            }
            Source::Git { url, rev } => {
                props.push(prop("cargo-oci:crate:source", &format!("git {url} {rev}")));
                comp["externalReferences"] =
                    json!([{ "type": "vcs", "url": format!("{url}#{rev}") }]);
            }
            Source::Path => props.push(prop("cargo-oci:crate:source", "path")),
        }
        if c.build_time {
            props.push(prop(
                "cargo-oci:crate:build-time",
                if c.proc_macro {
                    "proc-macro"
                } else {
                    "proc-macro dependency"
                },
            ));
        }
        if i == 0 {
            props.push(prop("cargo-oci:binary", &inv.binary.0));
            comp["hashes"] = json!([{ "alg": "SHA-256", "content": inv.binary.1 }]);
        }
        comp["properties"] = json!(props);
        components.push(comp);
        let deps: Vec<&String> = c.deps.iter().map(|&d| &crate_refs[d]).collect();
        dependencies.push(json!({ "ref": crate_refs[i], "dependsOn": deps }));
    }
    if let Some(root) = crate_refs.first() {
        image_deps.push(root.clone());
    }

    let distro = inv.distro.as_ref();
    let mut deb_refs = Vec::new();
    for d in inv.debs.iter().filter(|d| s.debug || !d.debug_only) {
        let p = &d.package;
        let purl = deb_purl(p, distro);
        components.push(json!({
            "type": "library",
            "bom-ref": purl,
            "name": p.name,
            "version": p.version,
            "purl": purl,
            "properties": [
                prop("cargo-oci:deb:architecture", &p.architecture),
                prop("cargo-oci:deb:source", &format!("{} {}", p.source, p.source_version)),
                prop("cargo-oci:deb:paths", &d.paths.join(" ")),
            ],
        }));
        dependencies.push(json!({ "ref": purl, "dependsOn": [] }));
        image_deps.push(purl.clone());
        deb_refs.push(purl);
    }
    if let Some(root) = crate_refs.first() {
        if let Some(entry) = dependencies.first_mut() {
            let mut all: Vec<Value> = entry["dependsOn"].as_array().cloned().unwrap_or_default();
            all.extend(deb_refs.iter().map(|r| json!(r)));
            entry["dependsOn"] = json!(all);
            debug_assert_eq!(entry["ref"], json!(root));
        }
    }
    for f in inv.files.iter().filter(|f| s.debug || !f.debug_only) {
        let r = format!("file:{}", f.path);
        components.push(json!({
            "type": "file",
            "bom-ref": r,
            "name": f.path,
            "hashes": [
                { "alg": "SHA-1", "content": f.sha1 },
                { "alg": "SHA-256", "content": f.sha256 },
            ],
        }));
        dependencies.push(json!({ "ref": r, "dependsOn": [] }));
        image_deps.push(r);
    }
    dependencies.insert(0, json!({ "ref": image_ref, "dependsOn": image_deps }));

    let mut metadata = json!({
        "tools": { "components": [{ "type": "application", "name": "cargo-oci",
                                    "version": env!("CARGO_PKG_VERSION") }] },
        "component": {
            "type": "container",
            "bom-ref": image_ref,
            "name": image.name.full,
            "version": image.manifest.digest.to_string(),
            "purl": s.purl(),
            "hashes": [{ "alg": "SHA-256", "content": image.manifest.hex() }],
            "properties": [prop("cargo-oci:platform", &format!("linux/{}", image.architecture))],
        },
    });
    if std::env::var_os("SOURCE_DATE_EPOCH").is_some() {
        metadata["timestamp"] = json!(super::rfc3339(inv.created));
    }
    if let Some(d) = distro {
        if let Some(a) = metadata["component"]["properties"].as_array_mut() {
            a.push(prop("cargo-oci:distro", &d.purl_name()));
        }
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
    let mut out = serde_json::to_vec_pretty(&doc)?;
    out.push(b'\n');
    Ok(out)
}

fn prop(name: &str, value: &str) -> Value {
    json!({ "name": name, "value": value })
}

fn source_tag(s: &Source) -> &'static str {
    match s {
        Source::Registry(_) => "registry",
        Source::Git { .. } => "git",
        Source::Path => "path",
    }
}
