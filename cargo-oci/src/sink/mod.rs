//! Where a built image goes. Every place is a [`Sink`]: an OCI layout, an OCI archive, a
//! docker-archive (file or stdout), a runtime bundle, a root filesystem tar, a local engine
//! ([`load`]) and a registry ([`push`]). A command is "build, then these sinks": each sink is
//! checked before the build and delivers the images from the blob store after it. Every file
//! output appears atomically: a failed or interrupted write leaves the previous output as it was.

pub mod archive;
pub mod attach;
pub mod bundle;
pub mod export;
pub mod layout;
pub mod load;
pub mod push;
pub mod push_ahead;
pub mod push_blobs;
pub mod push_index;
pub mod sign;
pub mod signature_push;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::oci::flatten;
use crate::oci::image::Image;
use crate::oci::index::Index;
use crate::oci::store::Store;
use crate::util::error::UsageError;
use crate::util::fs::write_atomic;
use crate::util::reporter::Reporter;

/// A place images go.
pub trait Sink {
    /// What the sink makes, as the JSON result names it (`oci`, `docker-archive`, ...).
    fn kind(&self) -> &'static str;

    /// Checks, before any build work, that the destination can take the images.
    fn check(&self) -> Result<()> {
        Ok(())
    }

    /// The file or directory it writes, when it writes one (the SBOM goes beside it).
    fn output_path(&self) -> Option<&Path> {
        None
    }

    /// After [`Sink::deliver`]: attaches `artifacts` (the images' SBOMs) to the images it
    /// delivered, where the destination keeps such things (a registry), and records them in
    /// `delivered`.
    fn attach(
        &self,
        _store: &Store,
        _delivered: &mut Delivered,
        _artifacts: &[attach::Artifact],
        _report: &Reporter,
    ) -> Result<()> {
        Ok(())
    }

    /// Delivers `picked` (or, for a multi-platform build, `indexes`) and attaches `artifacts`:
    /// [`Sink::deliver`] (or [`Sink::deliver_index`]), then [`Sink::attach`], unless the sink
    /// does both at once.
    fn deliver_attached(
        &self,
        store: &Store,
        picked: &[&Image],
        indexes: &[&Index],
        artifacts: &[attach::Artifact],
        report: &Reporter,
    ) -> Result<Delivered> {
        let mut done = if indexes.is_empty() {
            self.deliver(store, picked, report)?
        } else {
            self.deliver_index(store, indexes, picked, report)?
        };
        self.attach(store, &mut done, artifacts, report)?;
        Ok(done)
    }

    /// Delivers `images` (the image, then its variants) from `store`.
    fn deliver(&self, store: &Store, images: &[&Image], report: &Reporter) -> Result<Delivered>;

    /// Delivers a multi-platform build: `indexes` (the index, then its debug variant's). A sink
    /// that takes one image (the default) delivers `picked`, one platform's images named as the
    /// index is, and says which platform it took.
    fn deliver_index(
        &self,
        store: &Store,
        indexes: &[&Index],
        picked: &[&Image],
        report: &Reporter,
    ) -> Result<Delivered> {
        if let (Some(index), Some(image)) = (indexes.first(), picked.first()) {
            report.status(
                "Selected",
                &format!(
                    "{} of the platforms {} for the {} (choose with --platform)",
                    crate::oci::index::platform_of(image),
                    index.platforms().join(", "),
                    self.kind()
                ),
            );
        }
        self.deliver(store, picked, report)
    }
}

/// What a sink did.
#[derive(Debug, Clone)]
pub enum Delivered {
    /// Wrote this file or directory.
    Path(PathBuf),
    /// Wrote to stdout.
    Stdout,
    /// Loaded into an engine, which said this.
    Engine { said: String },
    /// Pushed to a registry: one result per image.
    Registry(Vec<push::Pushed>),
}

/// An OCI image layout directory, created or updated.
pub struct Layout(pub PathBuf);

impl Sink for Layout {
    fn output_path(&self) -> Option<&Path> {
        Some(&self.0)
    }
    fn kind(&self) -> &'static str {
        "oci"
    }
    fn check(&self) -> Result<()> {
        if let Some(parent) = self.0.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).ok();
        }
        check_writable(&self.0, "image layout")?;
        Ok(layout::check_destination(&self.0)?)
    }
    fn deliver(&self, store: &Store, images: &[&Image], _: &Reporter) -> Result<Delivered> {
        layout::write_layout(store, &layout::Named::images(images), &self.0)?;
        Ok(Delivered::Path(self.0.clone()))
    }
    fn deliver_index(
        &self,
        store: &Store,
        indexes: &[&Index],
        _: &[&Image],
        _: &Reporter,
    ) -> Result<Delivered> {
        layout::write_layout(store, &layout::Named::indexes(indexes), &self.0)?;
        Ok(Delivered::Path(self.0.clone()))
    }
}

/// An OCI archive file.
pub struct OciArchive(pub PathBuf);

impl Sink for OciArchive {
    fn output_path(&self) -> Option<&Path> {
        Some(&self.0)
    }
    fn kind(&self) -> &'static str {
        "oci-archive"
    }
    fn check(&self) -> Result<()> {
        Ok(check_writable(&self.0, "image archive")?)
    }
    fn deliver(&self, store: &Store, images: &[&Image], _: &Reporter) -> Result<Delivered> {
        remove_stale_beside(&self.0);
        let items = layout::Named::images(images);
        write_atomic(&self.0, |w| archive::write_oci_archive(store, &items, w))?;
        Ok(Delivered::Path(self.0.clone()))
    }
    fn deliver_index(
        &self,
        store: &Store,
        indexes: &[&Index],
        _: &[&Image],
        _: &Reporter,
    ) -> Result<Delivered> {
        remove_stale_beside(&self.0);
        let items = layout::Named::indexes(indexes);
        write_atomic(&self.0, |w| archive::write_oci_archive(store, &items, w))?;
        Ok(Delivered::Path(self.0.clone()))
    }
}

/// A docker-archive file.
pub struct DockerArchive(pub PathBuf);

impl Sink for DockerArchive {
    fn output_path(&self) -> Option<&Path> {
        Some(&self.0)
    }
    fn kind(&self) -> &'static str {
        "docker-archive"
    }
    fn check(&self) -> Result<()> {
        Ok(check_writable(&self.0, "image archive")?)
    }
    fn deliver(&self, store: &Store, images: &[&Image], _: &Reporter) -> Result<Delivered> {
        remove_stale_beside(&self.0);
        write_atomic(&self.0, |w| archive::write_docker_archive(store, images, w))?;
        Ok(Delivered::Path(self.0.clone()))
    }
}

/// A docker-archive on stdout, for `docker load` and `podman load`.
pub struct Stream;

impl Sink for Stream {
    fn kind(&self) -> &'static str {
        "docker-archive"
    }
    fn deliver(&self, store: &Store, images: &[&Image], _: &Reporter) -> Result<Delivered> {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::with_capacity(1 << 17, stdout.lock());
        archive::write_docker_archive(store, images, &mut out)
            .context("cannot write the image to stdout")?;
        out.flush().context("cannot write the image to stdout")?;
        Ok(Delivered::Stdout)
    }
}

/// An OCI runtime bundle of the image (its variants are not bundled).
pub struct Bundle {
    pub dir: PathBuf,
    pub readonly: bool,
}

impl Sink for Bundle {
    fn output_path(&self) -> Option<&Path> {
        Some(&self.dir)
    }
    fn kind(&self) -> &'static str {
        "runtime-bundle"
    }
    fn check(&self) -> Result<()> {
        bundle::check_destination(&self.dir)?;
        Ok(check_writable(&self.dir, "image layout")?)
    }
    fn deliver(&self, store: &Store, images: &[&Image], report: &Reporter) -> Result<Delivered> {
        let image = first(images)?;
        let tree = flatten::flatten(store, image)?;
        let config: serde_json::Value = serde_json::from_slice(&store.read(&image.config)?)
            .context("cannot read the image config")?;
        let skipped = bundle::write(&tree, &config["config"], self.readonly, &self.dir)?;
        if skipped > 0 {
            report.warn(&format!(
                "{skipped} device nodes or fifos of the image are not in the bundle's rootfs"
            ));
        }
        Ok(Delivered::Path(self.dir.clone()))
    }
}

/// The image's flattened root filesystem as one tar.
pub struct Export(pub PathBuf);

impl Sink for Export {
    fn output_path(&self) -> Option<&Path> {
        Some(&self.0)
    }
    fn kind(&self) -> &'static str {
        "rootfs-tar"
    }
    fn check(&self) -> Result<()> {
        Ok(check_writable(&self.0, "root filesystem tar")?)
    }
    fn deliver(&self, store: &Store, images: &[&Image], _: &Reporter) -> Result<Delivered> {
        let tree = flatten::flatten(store, first(images)?)?;
        remove_stale_beside(&self.0);
        write_atomic(&self.0, |w| export::write_tar(&tree, w))?;
        Ok(Delivered::Path(self.0.clone()))
    }
}

/// Removes the temporary files that interrupted writes of earlier runs left beside `path`.
fn remove_stale_beside(path: &Path) {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    crate::util::fs::remove_stale_output_temps(dir, crate::oci::store::STALE_AFTER);
}

fn first<'a>(images: &[&'a Image]) -> Result<&'a Image> {
    images.first().copied().context("no image to deliver")
}

/// The output formats of `cargo oci build`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// OCI image layout directory.
    Oci,
    /// OCI image layout in a tar file.
    OciArchive,
    /// `docker save` format, for `docker load` and `podman load`.
    DockerArchive,
}

/// The file outputs of `cargo oci build`, as its options name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An OCI layout directory (default: `target/oci/<name>`).
    Layout(Option<PathBuf>),
    OciArchive(PathBuf),
    DockerArchive(PathBuf),
    /// A docker-archive on stdout.
    Stream,
}

impl Output {
    /// From the `--format`, `-o` and `--stream` options.
    pub fn from_options(
        format: Option<Format>,
        output: Option<PathBuf>,
        stream: bool,
    ) -> Result<Output, UsageError> {
        match (format, output, stream) {
            (None | Some(Format::DockerArchive), None, true) => Ok(Output::Stream),
            (Some(_), _, true) => Err(UsageError::new(
                "--stream writes a docker-archive; it takes no other --format",
            )),
            (_, Some(_), true) => Err(UsageError::new("--stream writes to stdout; it takes no -o")),
            (None | Some(Format::Oci), o, false) => Ok(Output::Layout(o)),
            (Some(Format::OciArchive), Some(o), false) => Ok(Output::OciArchive(o)),
            (Some(Format::DockerArchive), Some(o), false) => Ok(Output::DockerArchive(o)),
            (Some(f), None, false) => Err(UsageError::new(format!(
                "--format {} writes a file: name it with -o FILE",
                match f {
                    Format::OciArchive => "oci-archive",
                    _ => "docker-archive",
                }
            ))
            .hint("or use --stream to write a docker-archive to stdout")),
        }
    }

    /// The sink, with `default_layout` for a layout named by no `-o`.
    pub fn sink(self, default_layout: &Path) -> Box<dyn Sink> {
        match self {
            Output::Layout(dir) => Box::new(Layout(dir.unwrap_or_else(|| default_layout.into()))),
            Output::OciArchive(p) => Box::new(OciArchive(p)),
            Output::DockerArchive(p) => Box::new(DockerArchive(p)),
            Output::Stream => Box::new(Stream),
        }
    }
}

/// Checks, before any work, that `path` can be written: its directory exists and is a directory.
pub fn check_writable(path: &Path, what: &str) -> Result<(), UsageError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let fail = |why: String| {
        UsageError::new(format!(
            "cannot write the {what} to {}: {why}",
            path.display()
        ))
        .hint("choose an output path in an existing, writable directory")
    };
    match std::fs::metadata(&parent) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(fail(format!("{} is not a directory", parent.display()))),
        Err(e) => return Err(fail(format!("{}: {e}", parent.display()))),
    }
    if path.is_dir() && what != "image layout" {
        return Err(fail("it is a directory".into()));
    }
    // Prove it by creating (and removing) a file where the output will go.
    tempfile::Builder::new()
        .prefix(".cargo-oci-check-")
        .tempfile_in(&parent)
        .map(drop)
        .map_err(|e| fail(e.to_string()))
}

#[cfg(test)]
mod tests;
