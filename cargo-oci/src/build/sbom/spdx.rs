//! The inventory of one image as an SPDX 2.3 JSON document: the image, the binary's crates, the
//! Debian packages and the unowned files, with their relationships. Build-time crates are
//! related as build dependencies, not as parts of the image.

use std::collections::BTreeSet;

use anyhow::Result;
use serde_json::{json, Value};
use sha1::Digest as _;

use super::crates::Source;
use super::{crate_purl, deb_purl, Inventory, Subject};

const NONE: &str = "NOASSERTION";

/// `SPDXRef-` followed by what an SPDX identifier may hold.
fn spdx_id(kind: &str, name: &str, taken: &mut BTreeSet<String>) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let base = format!("SPDXRef-{kind}-{clean}");
    let mut id = base.clone();
    let mut n = 1;
    while !taken.insert(id.clone()) {
        n += 1;
        id = format!("{base}-{n}");
    }
    id
}

fn purl_ref(purl: String) -> Value {
    json!([{ "referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl }])
}

/// A relationship: `a` is `kind` of `b`.
pub(super) fn rel(a: &str, kind: &str, b: &str) -> Value {
    json!({ "spdxElementId": a, "relationshipType": kind, "relatedSpdxElement": b })
}

/// The package of an image or an index: its name, its manifest's digest and purl.
pub(super) fn container(
    id: &str,
    name: &str,
    digest: &str,
    purl: String,
    comment: String,
) -> Value {
    json!({
        "SPDXID": id,
        "name": name,
        "versionInfo": digest,
        "downloadLocation": NONE,
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
        "checksums": [{
            "algorithm": "SHA256",
            "checksumValue": digest.strip_prefix("sha256:").unwrap_or(digest),
        }],
        "licenseConcluded": NONE,
        "licenseDeclared": NONE,
        "copyrightText": NONE,
        "externalRefs": purl_ref(purl),
        "comment": comment,
    })
}

pub(super) fn render(inv: &Inventory, s: &Subject<'_>) -> Result<Vec<u8>> {
    let image = s.image;
    let mut taken = BTreeSet::new();
    let mut packages = Vec::new();
    let mut files = Vec::new();
    let mut rels = Vec::new();
    let image_id = "SPDXRef-Image".to_string();
    taken.insert(image_id.clone());
    rels.push(rel("SPDXRef-DOCUMENT", "DESCRIBES", &image_id));
    packages.push(container(
        &image_id,
        &image.name.full,
        image.manifest.digest.as_str(),
        s.purl(),
        format!(
            "platform linux/{}; tags: {}",
            image.architecture,
            image.tags.join(", ")
        ),
    ));

    let crate_ids: Vec<String> = inv
        .crates
        .iter()
        .map(|c| spdx_id("Crate", &format!("{}-{}", c.name, c.version), &mut taken))
        .collect();
    for (i, c) in inv.crates.iter().enumerate() {
        let download = match &c.source {
            Source::Registry(r) if r.contains("crates.io-index") => format!(
                "https://crates.io/api/v1/crates/{}/{}/download",
                c.name, c.version
            ),
            Source::Git { url, rev } => format!("git+{url}@{rev}"),
            _ => NONE.to_string(),
        };
        let mut p = json!({
            "SPDXID": crate_ids[i],
            "name": c.name,
            "versionInfo": c.version,
            "downloadLocation": download,
            "filesAnalyzed": false,
            "primaryPackagePurpose": if i == 0 { "APPLICATION" } else { "LIBRARY" },
            "licenseConcluded": NONE,
            "licenseDeclared": c.license.as_deref().unwrap_or(NONE),
            "copyrightText": NONE,
            "externalRefs": purl_ref(crate_purl(c)),
        });
        let source_info = match &c.source {
            Source::Registry(r) => format!("registry {r}"),
            Source::Git { url, rev } => format!("git {url} revision {rev}"),
            Source::Path => "local path".to_string(),
        };
        p["sourceInfo"] = json!(source_info);
        if let Some(sum) = &c.checksum {
            p["checksums"] = json!([{ "algorithm": "SHA256", "checksumValue": sum }]);
        }
        if i == 0 {
            p["comment"] = json!(format!(
                "the binary {} (SHA-256 {})",
                inv.binary.0, inv.binary.1
            ));
        } else if c.build_time {
            p["comment"] = json!(if c.proc_macro {
                "build time only: a procedural macro, run by the compiler, not in the image"
            } else {
                "build time only: used by procedural macros, not in the image"
            });
        }
        packages.push(p);
    }
    if let Some(root) = crate_ids.first() {
        rels.push(rel(&image_id, "CONTAINS", root));
    }
    for (i, c) in inv.crates.iter().enumerate() {
        for &d in &c.deps {
            if inv.crates[d].build_time {
                rels.push(rel(&crate_ids[d], "BUILD_DEPENDENCY_OF", &crate_ids[i]));
            } else {
                rels.push(rel(&crate_ids[i], "DEPENDS_ON", &crate_ids[d]));
            }
        }
    }

    let distro = inv.distro.as_ref();
    for d in inv.debs.iter().filter(|d| s.debug || !d.debug_only) {
        let p = &d.package;
        let id = spdx_id("Deb", &format!("{}-{}", p.name, p.architecture), &mut taken);
        packages.push(json!({
            "SPDXID": id,
            "name": p.name,
            "versionInfo": p.version,
            "downloadLocation": NONE,
            "filesAnalyzed": false,
            "primaryPackagePurpose": "LIBRARY",
            "sourceInfo": format!("built from the source package {} {}", p.source, p.source_version),
            "licenseConcluded": NONE,
            "licenseDeclared": NONE,
            "copyrightText": NONE,
            "externalRefs": purl_ref(deb_purl(p, distro)),
            "comment": format!("provides {}", d.paths.join(", ")),
        }));
        rels.push(rel(&image_id, "CONTAINS", &id));
        if let Some(root) = crate_ids.first() {
            rels.push(rel(root, "DEPENDS_ON", &id));
        }
    }
    for f in inv.files.iter().filter(|f| s.debug || !f.debug_only) {
        let id = spdx_id("File", &f.path, &mut taken);
        files.push(json!({
            "SPDXID": id,
            "fileName": format!(".{}", f.path),
            "checksums": [
                { "algorithm": "SHA1", "checksumValue": f.sha1 },
                { "algorithm": "SHA256", "checksumValue": f.sha256 },
            ],
            "licenseConcluded": NONE,
            "copyrightText": NONE,
        }));
        rels.push(rel(&image_id, "CONTAINS", &id));
    }

    // A package that contains files must say so, with the code that verifies them.
    if !files.is_empty() {
        let mut sums: Vec<&str> = inv
            .files
            .iter()
            .filter(|f| s.debug || !f.debug_only)
            .map(|f| f.sha1.as_str())
            .collect();
        sums.sort_unstable();
        packages[0]["filesAnalyzed"] = json!(true);
        packages[0]["packageVerificationCode"] = json!({
            "packageVerificationCodeValue": hex::encode(sha1::Sha1::digest(sums.concat().as_bytes())),
        });
    }

    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}@{}", image.name.full, image.manifest.digest),
        "creationInfo": {
            "created": super::rfc3339(inv.created),
            "creators": [format!("Tool: cargo-oci-{}", env!("CARGO_PKG_VERSION"))],
        },
        "packages": packages,
        "files": files,
        "relationships": rels,
    });
    let id = super::content_uuid(&serde_json::to_vec(&doc)?);
    let last = image.name.repository.rsplit('/').next().unwrap_or("image");
    doc["documentNamespace"] = json!(format!("https://spdx.org/spdxdocs/cargo-oci/{last}-{id}"));
    let mut out = serde_json::to_vec_pretty(&doc)?;
    out.push(b'\n');
    Ok(out)
}
