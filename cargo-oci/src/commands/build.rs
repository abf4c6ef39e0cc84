//! "Build, then these sinks": every command that makes images reads the configuration of each,
//! checks every destination (and where each SBOM goes) before any build work, builds all the
//! images (one cargo run), writes each image's SBOM beside its output (and a multi-platform
//! index's, `-index`), then hands each image to its sinks in turn; a sink that can (a registry)
//! then attaches each image's (and index's) SBOM to it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::build::pipeline::{self, BuildRequest, Built, Configured};
use crate::build::sbom::{self, Subject};
use crate::sink::attach::Artifact;
use crate::sink::{check_writable, Delivered, Sink};
use crate::util::error::UsageError;
use crate::util::fs::write_atomic;
use crate::util::reporter::Reporter;

/// One image built and what each of its sinks did with it, in the sinks' order.
pub struct Made {
    pub built: Built,
    pub delivered: Vec<(&'static str, Delivered)>,
    /// The SBOM files written, one per image (the image, then its variants).
    pub sboms: Vec<PathBuf>,
}

/// Builds every selected image and delivers each to the sinks that `sinks` chooses from its
/// configuration. Returns one [`Made`] per image, in the order of the selection.
pub fn build_and_deliver(
    req: &BuildRequest,
    mut sinks: impl FnMut(&Configured) -> Result<Vec<Box<dyn Sink>>>,
    report: &Reporter,
) -> Result<Vec<Made>> {
    let confs = pipeline::configure(req)?;
    let sinks: Vec<Vec<Box<dyn Sink>>> = confs.iter().map(&mut sinks).collect::<Result<_>>()?;
    for sink in sinks.iter().flatten() {
        sink.check()?;
    }
    if req.sbom_output.is_some() && confs.len() > 1 {
        return Err(UsageError::new(format!(
            "--sbom-output names one file, but {} images are selected",
            confs.len()
        ))
        .hint("drop --sbom-output: each image's SBOM is then written beside its own output")
        .into());
    }
    let sbom_paths: Vec<Option<PathBuf>> = sinks.iter().map(|s| sbom_path(req, s)).collect();
    for path in sbom_paths.iter().flatten() {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).ok();
        }
        check_writable(path, "SBOM")?;
    }
    let built = pipeline::build(req, confs, report)?;
    let mut made = Vec::new();
    for ((built, sinks), sbom_path) in built.into_iter().zip(sinks).zip(sbom_paths) {
        let picked = built.images();
        let picked: Vec<&crate::oci::image::Image> = picked.iter().collect();
        let indexes = built.indexes();
        let sboms = match (req.sbom, sbom_path) {
            (Some(format), Some(base)) => write_sboms(format, &base, &built, report)?,
            _ => Vec::new(),
        };
        let artifacts = match req.sbom {
            Some(format) => sbom_artifacts(format, &built)?,
            None => Vec::new(),
        };
        let mut delivered = Vec::new();
        for sink in &sinks {
            let done =
                sink.deliver_attached(&built.store, &picked, &indexes, &artifacts, report)?;
            delivered.push((sink.kind(), done));
        }
        made.push(Made {
            built,
            delivered,
            sboms,
        })
    }
    Ok(made)
}

/// Where an image's SBOM goes: `--sbom-output`, else beside its output; a command that writes
/// no file (push, load, --stream) writes none.
fn sbom_path(req: &BuildRequest, sinks: &[Box<dyn Sink>]) -> Option<PathBuf> {
    let format = req.sbom?;
    if let Some(file) = &req.sbom_output {
        return Some(file.clone());
    }
    sinks
        .iter()
        .find_map(|s| s.output_path())
        .map(|beside| with_suffix(beside, format.suffix()))
}

/// Writes the SBOM of each image of `built` (the debug variant's beside the image's); of a
/// multi-platform build, the platform single-image sinks take.
fn write_sboms(
    format: sbom::Format,
    base: &Path,
    built: &Built,
    report: &Reporter,
) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for (i, image) in built.images().iter().enumerate() {
        let path = if i == 0 {
            base.to_path_buf()
        } else {
            debug_path(base, format.suffix())
        };
        let subject = Subject {
            image,
            debug: i > 0,
        };
        let bytes = sbom::render(format, &built.primary().inventory, &subject)?;
        // An SBOM already there with these bytes is left as it is.
        if std::fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
            write_atomic(&path, |w| Ok(w.write_all(&bytes)?))
                .with_context(|| format!("cannot write the SBOM to {}", path.display()))?;
        }
        report.status("SBOM", &path.display().to_string());
        out.push(path);
    }
    // A multi-platform build: the index's own (and its debug variant's), beside the image's.
    for (i, index) in built.indexes().into_iter().enumerate() {
        let path = variant_path(
            base,
            format.suffix(),
            if i == 0 { "-index" } else { "-debug-index" },
        );
        let bytes = sbom::render_index(format, index, built.primary().inventory.created)?;
        if std::fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
            write_atomic(&path, |w| Ok(w.write_all(&bytes)?))
                .with_context(|| format!("cannot write the SBOM to {}", path.display()))?;
        }
        report.status("SBOM", &format!("{} (the index)", path.display()));
        out.push(path);
    }
    Ok(out)
}

/// The SBOM of every image built (each platform's image and debug variant), to attach to it.
fn sbom_artifacts(format: sbom::Format, built: &Built) -> Result<Vec<Artifact>> {
    let mut out = Vec::new();
    for platform in &built.platforms {
        for (i, image) in platform.images().into_iter().enumerate() {
            let subject = Subject {
                image,
                debug: i > 0,
            };
            out.push(Artifact {
                subject: image.manifest.digest.clone(),
                media_type: format.media_type().to_string(),
                title: format!(
                    "sbom{}{}",
                    if i > 0 { "-debug" } else { "" },
                    format.suffix()
                ),
                bytes: sbom::render(format, &platform.inventory, &subject)?,
            });
        }
    }
    for (i, index) in built.indexes().into_iter().enumerate() {
        out.push(Artifact {
            subject: index.blob.digest.clone(),
            media_type: format.media_type().to_string(),
            title: format!(
                "sbom{}-index{}",
                if i > 0 { "-debug" } else { "" },
                format.suffix()
            ),
            bytes: sbom::render_index(format, index, built.primary().inventory.created)?,
        });
    }
    Ok(out)
}

/// `dir/out` → `dir/out.spdx.json` (a trailing `/` dropped).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.components().collect::<PathBuf>().into_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// The debug variant's SBOM: `x.spdx.json` → `x-debug.spdx.json`.
fn debug_path(path: &Path, suffix: &str) -> PathBuf {
    variant_path(path, suffix, "-debug")
}

/// Another SBOM beside `path`: `x.spdx.json` → `x<variant>.spdx.json`.
fn variant_path(path: &Path, suffix: &str, variant: &str) -> PathBuf {
    let s = path.to_string_lossy();
    match s.strip_suffix(suffix) {
        Some(stem) => PathBuf::from(format!("{stem}{variant}{suffix}")),
        None => PathBuf::from(format!("{s}{variant}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sbom_paths_sit_beside_the_output() {
        assert_eq!(
            with_suffix(Path::new("target/oci/app/"), ".spdx.json"),
            PathBuf::from("target/oci/app.spdx.json")
        );
        assert_eq!(
            debug_path(Path::new("a/app.cdx.json"), ".cdx.json"),
            PathBuf::from("a/app-debug.cdx.json")
        );
        assert_eq!(
            debug_path(Path::new("a/sbom"), ".cdx.json"),
            PathBuf::from("a/sbom-debug")
        );
        assert_eq!(
            variant_path(Path::new("a/app.spdx.json"), ".spdx.json", "-index"),
            PathBuf::from("a/app-index.spdx.json")
        );
    }
}
