//! Printing results: on stdout the result only (references and digests, or one JSON object per
//! result); on stderr the summary lines for people.

use serde_json::json;

use crate::build::pipeline::Built;
use crate::commands::build::Made;
use crate::sink::push::{Pushed, Transfer};
use crate::sink::Delivered;
use crate::util::reporter::{Reporter, Verbosity};

use super::*;

pub(super) fn print_pushed(p: &Pushed, built: &Built, format: MessageFormat, report: &Reporter) {
    if let Some(index) = &p.index {
        return print_pushed_index(p, index, built, format, report);
    }
    let img = &p.image;
    let pinned = format!("{}@{}", p.name, img.manifest.digest);
    report.status(
        "Pushed",
        &format!(
            "{} ({}…): {} uploaded ({}), {} mounted, {} skipped",
            p.name,
            img.manifest.digest.short(),
            p.count(Transfer::Uploaded),
            crate::util::reporter::bytes(p.uploaded_bytes),
            p.count(Transfer::Mounted),
            p.count(Transfer::Skipped)
        ),
    );
    match format {
        MessageFormat::Json => outln!(
            "{}",
            json!({
                "reason": "image-pushed",
                "name": p.name.full,
                "package": built.package,
                "profile": built.profile,
                "registry": p.name.registry,
                "repository": p.name.repository,
                "digest": img.manifest.digest,
                "config_digest": img.config.digest,
                "tags": img.tags,
                "references": img.tags.iter().map(|t| p.name.with_tag(t)).collect::<Vec<_>>(),
                "size": img.layers.iter().map(|l| l.blob.size).sum::<u64>() + img.config.size,
                "uploaded_bytes": p.uploaded_bytes,
                "signature": own_signature(p, &img.manifest.digest),
                "signatures": p.signatures,
                "attached": p.attached,
                "blobs": {
                    "uploaded": p.count(Transfer::Uploaded),
                    "mounted": p.count(Transfer::Mounted),
                    "skipped": p.count(Transfer::Skipped),
                    "each": p.blobs.iter().map(|(d, t)| json!({
                        "digest": d,
                        "transfer": format!("{t:?}").to_lowercase(),
                    })).collect::<Vec<_>>(),
                },
            })
        ),
        MessageFormat::Human => outln!("{pinned}"),
    }
}

/// The tag of the signature of the pushed image or index itself, when signed.
fn own_signature<'a>(p: &'a Pushed, digest: &crate::oci::digest::Digest) -> Option<&'a str> {
    p.signatures
        .iter()
        .find(|s| s.subject == *digest)
        .map(|s| s.tag.as_str())
}

fn print_pushed_index(
    p: &Pushed,
    index: &crate::oci::index::Index,
    built: &Built,
    format: MessageFormat,
    report: &Reporter,
) {
    let digest = &index.blob.digest;
    let pinned = format!("{}@{}", p.name, digest);
    report.status(
        "Pushed",
        &format!(
            "{} ({}…, {}): {} uploaded ({}), {} mounted, {} skipped",
            p.name,
            digest.short(),
            index.platforms().join(", "),
            p.count(Transfer::Uploaded),
            crate::util::reporter::bytes(p.uploaded_bytes),
            p.count(Transfer::Mounted),
            p.count(Transfer::Skipped)
        ),
    );
    match format {
        MessageFormat::Json => outln!(
            "{}",
            json!({
                "reason": "image-pushed",
                "name": p.name.full,
                "package": built.package,
                "profile": built.profile,
                "registry": p.name.registry,
                "repository": p.name.repository,
                "digest": digest,
                "media_type": crate::oci::index::INDEX_MEDIA_TYPE,
                "tags": index.tags,
                "references": index.tags.iter().map(|t| p.name.with_tag(t)).collect::<Vec<_>>(),
                "platforms": index.images.iter().map(|i| json!({
                    "platform": crate::oci::index::platform_of(i),
                    "digest": i.manifest.digest,
                })).collect::<Vec<_>>(),
                "uploaded_bytes": p.uploaded_bytes,
                "signature": own_signature(p, digest),
                "signatures": p.signatures,
                "attached": p.attached,
                "blobs": {
                    "uploaded": p.count(Transfer::Uploaded),
                    "mounted": p.count(Transfer::Mounted),
                    "skipped": p.count(Transfer::Skipped),
                },
            })
        ),
        MessageFormat::Human => outln!("{pinned}"),
    }
}

/// One image of a build as the JSON result lists it.
fn image_json(img: &crate::oci::image::Image) -> serde_json::Value {
    json!({
        "digest": img.manifest.digest,
        "config_digest": img.config.digest,
        "size": img.layers.iter().map(|l| l.blob.size).sum::<u64>(),
        "architecture": img.architecture,
        "layers": img.layers.iter().map(|l| json!({
            "role": l.role, "digest": l.blob.digest, "size": l.blob.size,
            "diff_id": l.diff_id, "uncompressed_size": l.tar_size,
            "media_type": l.media_type, "reused": l.reused,
        })).collect::<Vec<_>>(),
    })
}

pub(super) fn print_built(made: &Made, format: MessageFormat, report: &Reporter) {
    let b = &made.built;
    let (fmt, delivered) = match made.delivered.first() {
        Some((kind, d)) => (*kind, d.clone()),
        None => ("none", Delivered::Stdout),
    };
    let path = match &delivered {
        Delivered::Path(p) => Some(p.clone()),
        _ => None,
    };
    let stream = matches!(delivered, Delivered::Stdout);
    if let Some(p) = &path {
        report.status(
            "Finished",
            &format!("{fmt} image at {} (`{}` profile)", p.display(), b.profile),
        );
    }
    let lines = match (&b.index, format) {
        (Some((index, debug)), MessageFormat::Json) => vec![json!({
            "reason": "image-built",
            "name": index.name.full,
            "package": b.package,
            "profile": b.profile,
            "tags": index.tags,
            "references": index.references(),
            "content_tag": index.content_tag,
            "digest": index.blob.digest,
            "media_type": crate::oci::index::INDEX_MEDIA_TYPE,
            "format": fmt,
            "path": path,
            "sbom": made.sboms,
            "platforms": b.platforms.iter().map(|p| {
                let mut v = image_json(&p.image);
                v["platform"] = json!(crate::oci::index::platform_of(&p.image));
                v["target"] = json!(p.target);
                v
            }).collect::<Vec<_>>(),
            "debug": debug.as_ref().map(|d| json!({
                "tags": d.tags,
                "references": d.references(),
                "digest": d.blob.digest,
            })),
        })
        .to_string()],
        (Some((index, debug)), MessageFormat::Human) => {
            let mut lines = index.references();
            lines.extend(debug.iter().flat_map(|d| d.references()));
            lines.push(format!("{}@{}", index.name, index.blob.digest));
            lines
        }
        (None, MessageFormat::Json) => {
            let p = b.primary();
            let img = &p.image;
            let mut v = image_json(img);
            for (k, x) in [
                ("reason", json!("image-built")),
                ("name", json!(img.name.full)),
                ("package", json!(b.package)),
                ("profile", json!(b.profile)),
                ("tags", json!(img.tags)),
                ("references", json!(img.references())),
                ("content_tag", json!(img.content_tag)),
                ("format", json!(fmt)),
                ("path", json!(path)),
                ("sbom", json!(made.sboms)),
                (
                    "debug",
                    json!(p.debug.as_ref().map(|d| json!({
                        "tags": d.tags,
                        "references": d.references(),
                        "digest": d.manifest.digest,
                        "config_digest": d.config.digest,
                        "layers": d.layers.iter().map(|l| json!({
                            "role": l.role, "digest": l.blob.digest, "size": l.blob.size,
                        })).collect::<Vec<_>>(),
                    }))),
                ),
            ] {
                v[k] = x;
            }
            vec![v.to_string()]
        }
        (None, MessageFormat::Human) => {
            let p = b.primary();
            let mut lines = p.image.references();
            lines.extend(p.debug.iter().flat_map(|d| d.references()));
            lines.push(format!("{}@{}", p.image.name, p.image.manifest.digest));
            lines
        }
    };
    // With --stream, stdout carries the image: the result goes to stderr (unless -q).
    for l in lines {
        if stream {
            if report.verbosity > Verbosity::Quiet {
                eprintln!("{l}");
            }
        } else {
            outln!("{l}");
        }
    }
}
