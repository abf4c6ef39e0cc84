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
                "signature": p.signature,
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

pub(super) fn print_built(made: &Made, format: MessageFormat, report: &Reporter) {
    let b = &made.built;
    let img = &b.image;
    let size: u64 = img.layers.iter().map(|l| l.blob.size).sum();
    let (fmt, delivered) = match made.delivered.first() {
        Some((kind, d)) => (*kind, d.clone()),
        None => ("none", Delivered::Stdout),
    };
    let path = match &delivered {
        Delivered::Path(p) => Some(p.clone()),
        _ => None,
    };
    let stream = matches!(delivered, Delivered::Stdout);
    let pinned = format!("{}@{}", img.name, img.manifest.digest);
    if let Some(p) = &path {
        report.status(
            "Finished",
            &format!("{fmt} image at {} (`{}` profile)", p.display(), b.profile),
        );
    }
    let lines = match format {
        MessageFormat::Json => vec![json!({
            "reason": "image-built",
            "name": img.name.full,
            "package": b.package,
            "profile": b.profile,
            "tags": img.tags,
            "references": img.references(),
            "content_tag": img.content_tag,
            "digest": img.manifest.digest,
            "config_digest": img.config.digest,
            "format": fmt,
            "path": path,
            "size": size,
            "architecture": img.architecture,
            "sbom": made.sboms,
            "layers": img.layers.iter().map(|l| json!({
                "role": l.role, "digest": l.blob.digest, "size": l.blob.size,
                "diff_id": l.diff_id, "uncompressed_size": l.tar_size,
                "media_type": l.media_type, "reused": l.reused,
            })).collect::<Vec<_>>(),
            "debug": b.debug.as_ref().map(|d| json!({
                "tags": d.tags,
                "references": d.references(),
                "digest": d.manifest.digest,
                "config_digest": d.config.digest,
                "layers": d.layers.iter().map(|l| json!({
                    "role": l.role, "digest": l.blob.digest, "size": l.blob.size,
                })).collect::<Vec<_>>(),
            })),
        })
        .to_string()],
        MessageFormat::Human => {
            let mut lines = img.references();
            lines.extend(b.debug.iter().flat_map(|d| d.references()));
            lines.push(pinned);
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
