//! "Build, then these sinks": every command that makes an image reads the configuration, checks
//! each destination (and where the SBOM goes) before any build work, builds the images into the
//! store, writes their SBOMs beside the output, then hands the images to each sink in turn.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::build::pipeline::{self, BuildRequest, Built, Configured};
use crate::build::sbom::{self, Subject};
use crate::sink::{check_writable, Delivered, Sink};
use crate::util::fs::write_atomic;
use crate::util::reporter::Reporter;

/// A build and what each sink did with it, in the sinks' order.
pub struct Made {
    pub built: Built,
    pub delivered: Vec<(&'static str, Delivered)>,
    /// The SBOM files written, one per image (the image, then its variants).
    pub sboms: Vec<PathBuf>,
}

/// Builds the image and delivers it to the sinks that `sinks` chooses from the configuration.
pub fn build_and_deliver(
    req: &BuildRequest,
    sinks: impl FnOnce(&Configured) -> Result<Vec<Box<dyn Sink>>>,
    report: &Reporter,
) -> Result<Made> {
    let conf = pipeline::configure(req)?;
    let sinks = sinks(&conf)?;
    for sink in &sinks {
        sink.check()?;
    }
    let sbom_base = match (req.sbom, &req.sbom_output) {
        (None, _) => None,
        (Some(_), Some(file)) => Some(file.clone()),
        // Beside the output; a command that writes no file (push, load, --stream) writes none.
        (Some(f), None) => sinks
            .iter()
            .find_map(|s| s.output_path())
            .map(|beside| with_suffix(beside, f.suffix())),
    };
    if let Some(path) = &sbom_base {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).ok();
        }
        check_writable(path, "SBOM")?;
    }
    let built = pipeline::build(req, conf, report)?;
    let images = built.images();
    let mut sboms = Vec::new();
    if let (Some(format), Some(base)) = (req.sbom, &sbom_base) {
        for (i, image) in images.iter().enumerate() {
            let path = if i == 0 {
                base.clone()
            } else {
                debug_path(base, format.suffix())
            };
            let subject = Subject {
                image,
                debug: i > 0,
            };
            let bytes = sbom::render(format, &built.inventory, &subject)?;
            write_atomic(&path, |w| Ok(w.write_all(&bytes)?))
                .with_context(|| format!("cannot write the SBOM to {}", path.display()))?;
            report.status("SBOM", &path.display().to_string());
            sboms.push(path);
        }
    }
    let mut delivered = Vec::new();
    for sink in &sinks {
        delivered.push((sink.kind(), sink.deliver(&built.store, &images, report)?));
    }
    Ok(Made {
        built,
        delivered,
        sboms,
    })
}

/// `dir/out` → `dir/out.spdx.json` (a trailing `/` dropped).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.components().collect::<PathBuf>().into_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// The debug variant's SBOM: `x.spdx.json` → `x-debug.spdx.json`.
fn debug_path(path: &Path, suffix: &str) -> PathBuf {
    let s = path.to_string_lossy();
    match s.strip_suffix(suffix) {
        Some(stem) => PathBuf::from(format!("{stem}-debug{suffix}")),
        None => PathBuf::from(format!("{s}-debug")),
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
    }
}
