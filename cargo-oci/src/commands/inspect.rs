//! `cargo oci inspect`: what a built image holds, told from the build's own records (the layer
//! plan, the layers in the store and the library closure): every layer with its role, sizes and
//! digests, each file (a base image's layers are listed from their tars), and for every library
//! the object that needed it and the search step that found it. Data here; the command line
//! prints it.

use std::fmt::Write as _;
use std::io::Read;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::build::closure::{FoundVia, Object};
use crate::build::pipeline::{Built, PlatformBuilt};
use crate::build::plan::{Content, Entry};
use crate::build::sbom::{self, Inventory};
use crate::oci::image::Image;
use crate::oci::layer::Layer;
use crate::oci::store::Store;
use crate::util::reporter::bytes;

/// The image as one JSON object (`reason: "image-inspected"`).
fn one_json(b: &PlatformBuilt, store: &Store) -> Result<Value> {
    let img = &b.image;
    let layers = layers(b, store)?
        .iter()
        .map(|r| {
            json!({
                "role": r.layer.role,
                "origin": if r.own { "own" } else { "base-image" },
                "digest": r.layer.blob.digest,
                "media_type": r.layer.media_type,
                "size": r.layer.blob.size,
                "diff_id": r.layer.diff_id,
                "uncompressed_size": r.layer.tar_size,
                "files": r.files.iter().map(File::to_json).collect::<Vec<_>>(),
            })
        })
        .collect::<Vec<_>>();
    Ok(json!({
        "reason": "image-inspected",
        "name": img.name.full,
        "references": img.references(),
        "digest": img.manifest.digest,
        "config_digest": img.config.digest,
        "architecture": img.architecture,
        "path": serde_json::Value::Null,
        "size": img.layers.iter().map(|l| l.blob.size).sum::<u64>(),
        "uncompressed_size": img.layers.iter().map(|l| l.tar_size).sum::<u64>(),
        "layers": layers,
        "libraries": b.closure.objects.iter().map(library_json).collect::<Vec<_>>(),
        "software": software_json(&b.inventory),
        "debug": b.debug.as_ref().map(|d| json!({
            "references": d.references(),
            "digest": d.manifest.digest,
        })),
    }))
}

/// One layer of the image and what it holds.
struct Row<'a> {
    layer: &'a Layer,
    /// Written by this build (false: a layer of the base image, `from`).
    own: bool,
    files: Vec<File>,
}

/// Every layer of the built images, bottom to top: the base image's layers (their files read
/// from their tars), then the image's own, each with its plan; then the debug variant's own
/// layer when there is one.
fn layers<'a>(b: &'a PlatformBuilt, store: &Store) -> Result<Vec<Row<'a>>> {
    let img = &b.image;
    let Some(base_count) = img.layers.len().checked_sub(b.plan.layers.len()) else {
        bail!(
            "the image has {} layers but its plan {}",
            img.layers.len(),
            b.plan.layers.len()
        );
    };
    let mut rows = Vec::new();
    for (i, l) in img.layers[..base_count].iter().enumerate() {
        let tar = l
            .open_tar(store)
            .with_context(|| format!("cannot read base layer {}", i + 1))?;
        rows.push(Row {
            layer: l,
            own: false,
            files: tar_files(tar).with_context(|| format!("cannot list base layer {}", i + 1))?,
        });
    }
    let own = img.layers[base_count..].iter().zip(&b.plan.layers);
    let debug = match (&b.debug, &b.plan.debug_layer) {
        (Some(d), Some(p)) => d.layers.last().map(|l| (l, p)),
        _ => None,
    };
    for (l, p) in own.chain(debug) {
        if l.role != p.role {
            bail!(
                "layer {} is a {} layer, but its plan a {}",
                l.blob.digest,
                l.role,
                p.role
            );
        }
        rows.push(Row {
            layer: l,
            own: true,
            files: p.entries.iter().map(File::from_entry).collect(),
        });
    }
    Ok(rows)
}

/// A file, directory or link of a layer.
struct File {
    /// Absolute path in the image.
    path: String,
    kind: &'static str,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    /// Where on the host it comes from.
    source: Option<String>,
    /// A symlink's (or hard link's) target.
    target: Option<String>,
}

impl File {
    fn from_entry(e: &Entry) -> File {
        let (kind, size, source, target) = match &e.content {
            Content::File(p) => (
                "file",
                std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
                Some(p.display().to_string()),
                None,
            ),
            Content::Bytes(b) => ("file", b.len() as u64, None, None),
            Content::Dir => ("dir", 0, None, None),
            Content::Symlink(t) => ("symlink", 0, None, Some(t.clone())),
        };
        File {
            path: format!("/{}", e.path),
            kind,
            mode: e.mode,
            uid: e.uid.into(),
            gid: e.gid.into(),
            size,
            source,
            target,
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "path": self.path,
            "type": self.kind,
            "mode": format!("{:04o}", self.mode),
            "uid": self.uid,
            "gid": self.gid,
            "size": self.size,
            "source": self.source,
            "target": self.target,
        })
    }
}

/// The entries of a layer tar, as they are (whiteouts included).
fn tar_files(tar: impl Read) -> Result<Vec<File>> {
    use tar::EntryType as T;
    let mut files = Vec::new();
    for entry in tar::Archive::new(tar).entries()? {
        let entry = entry?;
        let h = entry.header();
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let path = format!("/{}", path.trim_start_matches("./").trim_start_matches('/'));
        let path = match path.trim_end_matches('/') {
            "" => "/".to_string(),
            p => p.to_string(),
        };
        let kind = match h.entry_type() {
            T::Regular | T::Continuous => "file",
            T::Directory => "dir",
            T::Symlink => "symlink",
            T::Link => "hardlink",
            T::Char => "char",
            T::Block => "block",
            T::Fifo => "fifo",
            _ => continue,
        };
        files.push(File {
            path,
            kind,
            mode: h.mode().unwrap_or(0) & 0o7777,
            uid: h.uid().unwrap_or(0),
            gid: h.gid().unwrap_or(0),
            size: if kind == "file" { entry.size() } else { 0 },
            source: None,
            target: entry
                .link_name_bytes()
                .map(|t| String::from_utf8_lossy(&t).into_owned()),
        });
    }
    Ok(files)
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
fn one_text(b: &PlatformBuilt, store: &Store) -> Result<String> {
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
    let all = layers(b, store)?;
    let label = |r: &Row| {
        if r.own {
            r.layer.role.clone()
        } else {
            "base image".to_string()
        }
    };
    let width = all.iter().map(|r| label(r).len()).max().unwrap_or(0);
    for r in &all {
        let _ = writeln!(
            s,
            "  {:<width$} {:>11} {:>11} uncompressed  {} entries  {}",
            label(r),
            bytes(r.layer.blob.size),
            bytes(r.layer.tar_size),
            r.files.len(),
            r.layer.blob.digest
        );
    }
    for (i, r) in all.iter().enumerate() {
        if r.own {
            let _ = writeln!(s, "\nfiles of the {} layer", r.layer.role);
        } else {
            let _ = writeln!(s, "\nfiles of base image layer {}", i + 1);
        }
        for f in &r.files {
            let what = match (f.kind, &f.source, &f.target) {
                ("symlink", _, Some(t)) => format!(" -> {t}"),
                ("hardlink", _, Some(t)) => format!(" link to /{}", t.trim_start_matches('/')),
                (_, Some(src), _) if !src.ends_with(&f.path) => format!("  (from {src})"),
                _ => String::new(),
            };
            let _ = writeln!(
                s,
                "  {}{:04o} {:>5}:{:<5} {:>11}  {}{}",
                match f.kind {
                    "dir" => 'd',
                    "symlink" => 'l',
                    "char" => 'c',
                    "block" => 'b',
                    "fifo" => 'p',
                    _ => '-',
                },
                f.mode,
                f.uid,
                f.gid,
                if f.kind == "file" {
                    bytes(f.size)
                } else {
                    String::new()
                },
                f.path,
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
    software_text(&b.inventory, &mut s);
    Ok(s)
}

/// The image as one JSON object (`reason: "image-inspected"`); a multi-platform image lists
/// every platform's under `platforms`.
pub fn to_json(b: &Built) -> Result<Value> {
    let Some((index, debug)) = &b.index else {
        return one_json(b.primary(), &b.store);
    };
    let platforms = b
        .platforms
        .iter()
        .map(|p| {
            let mut v = one_json(p, &b.store)?;
            v["platform"] = json!(crate::oci::index::platform_of(&p.image));
            v["target"] = json!(p.target);
            Ok(v)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(json!({
        "reason": "image-inspected",
        "name": index.name.full,
        "references": index.references(),
        "digest": index.blob.digest,
        "media_type": crate::oci::index::INDEX_MEDIA_TYPE,
        "software": index_software_json(index),
        "platforms": platforms,
        "debug": debug.as_ref().map(|d| json!({
            "references": d.references(),
            "digest": d.blob.digest,
        })),
    }))
}

/// The human report; for a multi-platform image, the index, then every platform's report.
pub fn to_text(b: &Built) -> Result<String> {
    let Some((index, _)) = &b.index else {
        return one_text(b.primary(), &b.store);
    };
    let mut s = String::new();
    let _ = writeln!(s, "index    {}@{}", index.name, index.blob.digest);
    let _ = writeln!(s, "tags     {}", index.tags.join(", "));
    let _ = writeln!(s, "platforms {}", index.platforms().join(", "));
    let _ = writeln!(
        s,
        "\nsoftware (what the index's SBOM lists)\n  the index  {}",
        sbom::index_purl(index)
    );
    for (platform, _, purl) in sbom::platform_images(index) {
        let _ = writeln!(s, "    contains the {platform} image  {purl}");
    }
    for p in &b.platforms {
        let _ = writeln!(
            s,
            "\n=== platform {} ({}) ===",
            crate::oci::index::platform_of(&p.image),
            p.target
        );
        s.push_str(&one_text(p, &b.store)?);
    }
    Ok(s)
}

/// What the index's SBOM lists: the index and the platform images it contains.
fn index_software_json(index: &crate::oci::index::Index) -> Value {
    json!({
        "purl": sbom::index_purl(index),
        "images": sbom::platform_images(index).into_iter().map(|(platform, digest, purl)| json!({
            "platform": platform, "digest": digest, "purl": purl,
        })).collect::<Vec<_>>(),
    })
}

/// What the SBOM lists: crates, Debian packages, files no package owns.
fn software_json(inv: &Inventory) -> Value {
    let distro = inv.distro.as_ref();
    json!({
        "crates": inv.crates.iter().map(|c| json!({
            "name": c.name,
            "version": c.version,
            "license": c.license,
            "checksum": c.checksum,
            "build_time": c.build_time,
            "purl": sbom::crate_purl(c),
        })).collect::<Vec<_>>(),
        "debian_packages": inv.debs.iter().map(|d| json!({
            "name": d.package.name,
            "version": d.package.version,
            "architecture": d.package.architecture,
            "source": d.package.source,
            "purl": sbom::deb_purl(&d.package, distro),
            "paths": d.paths,
            "debug_only": d.debug_only,
        })).collect::<Vec<_>>(),
        "files": inv.files.iter().map(|f| json!({
            "path": f.path, "sha256": f.sha256, "debug_only": f.debug_only,
        })).collect::<Vec<_>>(),
        "distro": distro.map(|d| d.purl_name()),
    })
}

fn software_text(inv: &Inventory, s: &mut String) {
    let build_time = inv.crates.iter().filter(|c| c.build_time).count();
    let _ = writeln!(
        s,
        "\nsoftware (what the SBOM lists)\n  crates: {} ({build_time} at build time only)",
        inv.crates.len()
    );
    for c in &inv.crates {
        let _ = writeln!(
            s,
            "    {} {}  {}{}",
            c.name,
            c.version,
            c.license.as_deref().unwrap_or("(no SPDX license)"),
            if c.build_time {
                "  build time only"
            } else {
                ""
            }
        );
    }
    let distro = inv
        .distro
        .as_ref()
        .map_or("no dpkg database".into(), |d| d.purl_name());
    let _ = writeln!(s, "  Debian packages ({distro}): {}", inv.debs.len());
    for d in &inv.debs {
        let p = &d.package;
        let _ = writeln!(
            s,
            "    {} {} {}  ({})  {}",
            p.name,
            p.version,
            p.architecture,
            p.source,
            d.paths.join(" ")
        );
    }
    let _ = writeln!(s, "  files no package owns: {}", inv.files.len());
    for f in &inv.files {
        let _ = writeln!(s, "    {}", f.path);
    }
}
