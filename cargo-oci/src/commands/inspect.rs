//! `cargo oci inspect`: what a built image holds, told from the build's own records (the layer
//! plan, the layers in the store and the library closure): each layer with its sizes and
//! digests, each file, and for every library the object that needed it and the search step that
//! found it. Data here; the command line prints it.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::build::closure::{FoundVia, Object};
use crate::build::pipeline::Built;
use crate::build::plan::{Content, Entry, LayerPlan};
use crate::oci::image::Image;
use crate::oci::layer::Layer;
use crate::util::reporter::bytes;

/// The image as one JSON object (`reason: "image-inspected"`).
pub fn to_json(b: &Built) -> Value {
    let img = &b.image;
    json!({
        "reason": "image-inspected",
        "name": img.name.full,
        "references": img.references(),
        "digest": img.manifest.digest,
        "config_digest": img.config.digest,
        "architecture": img.architecture,
        "path": serde_json::Value::Null,
        "size": img.layers.iter().map(|l| l.blob.size).sum::<u64>(),
        "uncompressed_size": img.layers.iter().map(|l| l.tar_size).sum::<u64>(),
        "layers": layers(b).iter().map(|(l, p)| layer_json(l, p)).collect::<Vec<_>>(),
        "libraries": b.closure.objects.iter().map(library_json).collect::<Vec<_>>(),
        "debug": b.debug.as_ref().map(|d| json!({
            "references": d.references(),
            "digest": d.manifest.digest,
        })),
    })
}

/// The layers of the built images, bottom to top, with their plans: the standard image's, then
/// the debug variant's own layer when there is one.
fn layers(b: &Built) -> Vec<(&Layer, &LayerPlan)> {
    let mut v: Vec<(&Layer, &LayerPlan)> = b.image.layers.iter().zip(&b.plan.layers).collect();
    if let (Some(d), Some(p)) = (&b.debug, &b.plan.debug_layer) {
        if let Some(l) = d.layers.last() {
            v.push((l, p));
        }
    }
    v
}

fn layer_json(l: &Layer, p: &LayerPlan) -> Value {
    json!({
        "role": l.role,
        "digest": l.blob.digest,
        "size": l.blob.size,
        "diff_id": l.diff_id,
        "uncompressed_size": l.tar_size,
        "files": p.entries.iter().map(file_json).collect::<Vec<_>>(),
    })
}

fn file_json(e: &Entry) -> Value {
    let (kind, size, source, target) = describe(e);
    json!({
        "path": format!("/{}", e.path),
        "type": kind,
        "mode": format!("{:04o}", e.mode),
        "uid": e.uid,
        "gid": e.gid,
        "size": size,
        "source": source,
        "target": target,
    })
}

/// (type, size, host source, link target) of an entry.
fn describe(e: &Entry) -> (&'static str, u64, Option<String>, Option<String>) {
    match &e.content {
        Content::File(p) => (
            "file",
            std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
            Some(p.display().to_string()),
            None,
        ),
        Content::Bytes(b) => ("file", b.len() as u64, None, None),
        Content::Dir => ("dir", 0, None, None),
        Content::Symlink(t) => ("symlink", 0, None, Some(t.clone())),
    }
}

/// The search path a library was found through, as a directory or file.
fn search_path(o: &Object) -> Option<String> {
    match &o.found_via {
        FoundVia::Rpath(d) | FoundVia::Runpath(d) | FoundVia::DefaultDir(d) => Some(d.clone()),
        FoundVia::LdCache => Some("/etc/ld.so.cache".into()),
        FoundVia::Interpreter | FoundVia::Extra | FoundVia::Direct => None,
    }
}

fn found_via_kind(f: &FoundVia) -> &'static str {
    match f {
        FoundVia::Interpreter => "interpreter",
        FoundVia::Rpath(_) => "rpath",
        FoundVia::Runpath(_) => "runpath",
        FoundVia::LdCache => "ld.so.cache",
        FoundVia::DefaultDir(_) => "default-dir",
        FoundVia::Extra => "extra-libs",
        FoundVia::Direct => "path",
    }
}

fn library_json(o: &Object) -> Value {
    json!({
        "path": o.image_path,
        "name": o.name,
        "needed_by": o.needed_by,
        "found_via": found_via_kind(&o.found_via),
        "search_path": search_path(o),
        "why": why(o),
        "host_path": o.host_path,
        "relocated_from": o.relocated_from,
        "size": std::fs::metadata(&o.host_path).map(|m| m.len()).unwrap_or(0),
    })
}

/// One line on why a library is in the image.
fn why(o: &Object) -> String {
    let mut s = match &o.found_via {
        FoundVia::Interpreter => format!("{} names it as its ELF interpreter", o.needed_by),
        FoundVia::Extra => "listed in extra-libs".to_string(),
        other => format!("{} needs {} (found via {other})", o.needed_by, o.name),
    };
    if let Some(from) = &o.relocated_from {
        let _ = write!(
            s,
            "; moved from {from} next to libc (the image has no ld.so.cache)"
        );
    }
    s
}

/// The human report.
pub fn to_text(b: &Built) -> String {
    let img: &Image = &b.image;
    let mut s = String::new();
    let _ = writeln!(s, "image    {}@{}", img.name, img.manifest.digest);
    let _ = writeln!(s, "tags     {}", img.tags.join(", "));
    if let Some(d) = &b.debug {
        let _ = writeln!(s, "debug    {}", d.tags.join(", "));
    }
    let _ = writeln!(
        s,
        "size     {} compressed, {} uncompressed, {}",
        bytes(img.layers.iter().map(|l| l.blob.size).sum()),
        bytes(img.layers.iter().map(|l| l.tar_size).sum()),
        img.architecture
    );
    let _ = writeln!(s, "\nlayers (bottom to top)");
    let all = layers(b);
    for (l, p) in &all {
        let _ = writeln!(
            s,
            "  {:<10} {:>11} {:>11} uncompressed  {} entries  {}",
            l.role,
            bytes(l.blob.size),
            bytes(l.tar_size),
            p.entries.len(),
            l.blob.digest
        );
    }
    for (l, p) in &all {
        let _ = writeln!(s, "\nfiles of the {} layer", l.role);
        for e in &p.entries {
            let (kind, size, source, target) = describe(e);
            let what = match (kind, source, target) {
                ("symlink", _, Some(t)) => format!(" -> {t}"),
                (_, Some(src), _) if !src.ends_with(&e.path) => format!("  (from {src})"),
                _ => String::new(),
            };
            let _ = writeln!(
                s,
                "  {}{:04o} {:>5}:{:<5} {:>11}  /{}{}",
                match kind {
                    "dir" => 'd',
                    "symlink" => 'l',
                    _ => '-',
                },
                e.mode,
                e.uid,
                e.gid,
                if kind == "file" {
                    bytes(size)
                } else {
                    String::new()
                },
                e.path,
                what
            );
        }
    }
    let _ = writeln!(s, "\nlibraries (why each is there)");
    if b.closure.objects.is_empty() {
        let _ = writeln!(s, "  none: the binary is static");
    }
    for o in &b.closure.objects {
        let _ = writeln!(s, "  {}\n      {}", o.image_path, why(o));
    }
    s
}
