//! The `build` pipeline, one stage after another: metadata → cargo build → closure → plan →
//! layers → image → sink. Each stage is its own module; this one only wires them in order.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cargo_build::{self, Artifact, CargoFlags};
use crate::closure::{self, Closure, ClosureOptions, Executable};
use crate::compress::{Codec, Compression};
use crate::error::UsageError;
use crate::image::{self, Image, Platform};
use crate::layer_cache::LayerCache;
use crate::metadata::{self, ImageSpec, Selection};
use crate::plan::{self, CA_BUNDLE};
use crate::reporter::{self, Reporter};
use crate::sink::{self, Format};
use crate::store::Store;
use crate::tools;

/// Where the image goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An OCI layout directory (default: `target/oci/<name>`).
    Layout(Option<PathBuf>),
    OciArchive(PathBuf),
    DockerArchive(PathBuf),
    /// A docker-archive on stdout.
    Stream,
    /// An OCI runtime bundle directory (`cargo oci bundle`).
    Bundle {
        dir: PathBuf,
        readonly: bool,
    },
    /// The flattened root filesystem as a tar (`cargo oci export`).
    Export(PathBuf),
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
}

/// What `cargo oci build` was asked to do.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub selection: Selection,
    pub cargo: CargoFlags,
    pub no_build: bool,
    pub output: Output,
    /// Also build the debug variant (`--debug`), whatever the metadata says.
    pub debug: bool,
    /// How layers are compressed.
    pub compression: Codec,
}

/// The result of a build.
#[derive(Debug, Clone)]
pub struct Built {
    pub spec: ImageSpec,
    pub image: Image,
    /// The debug variant, when built.
    pub debug: Option<Image>,
    pub closure: Closure,
    /// What each layer holds (the debug variant's layer included), for `cargo oci inspect`.
    pub plan: plan::Plan,
    /// Where the output went (`None` for the stream).
    pub path: Option<PathBuf>,
}

/// The target directory in use.
pub fn target_dir(req: &BuildRequest, spec: &ImageSpec) -> PathBuf {
    req.cargo
        .target_dir
        .clone()
        .unwrap_or_else(|| spec.target_directory.clone())
}

/// Runs the whole pipeline.
pub fn build(req: &BuildRequest, report: &Reporter) -> Result<Built> {
    let mut sel = req.selection.clone();
    sel.manifest_path = sel
        .manifest_path
        .or_else(|| req.cargo.manifest_path.clone());
    // Most builds run in the package's directory: start the probes there during cargo metadata.
    let guess = match &sel.manifest_path {
        Some(m) => m.parent().and_then(|d| d.canonicalize().ok()),
        None => std::env::current_dir().ok(),
    };
    if let Some(dir) = guess {
        cargo_build::prefetch_rustc_version(&dir);
        metadata::prefetch_revision(&dir);
    }
    let meta = metadata::cargo_metadata(&sel)?;
    let package = metadata::select_package(&meta, &sel)?;
    let mut spec = metadata::image_spec(&meta, package, &sel)?;
    if req.debug && spec.debug.is_none() {
        spec.debug = Some(metadata::DebugSpec::default());
    }
    // The contract helper's cache key needs `rustc -vV`: run it while cargo builds.
    cargo_build::prefetch_rustc_version(&spec.package_dir);
    let target_dir = target_dir(req, &spec);

    // Fail on an unwritable output before spending time on a build.
    let out_path = match &req.output {
        Output::Layout(dir) => {
            let dir = dir
                .clone()
                .unwrap_or_else(|| target_dir.join("oci").join(spec.name.short()));
            std::fs::create_dir_all(dir.parent().unwrap_or(Path::new("."))).ok();
            sink::check_writable(&dir, "image layout")?;
            Some(dir)
        }
        Output::OciArchive(p) | Output::DockerArchive(p) => {
            sink::check_writable(p, "image archive")?;
            Some(p.clone())
        }
        Output::Stream => None,
        Output::Bundle { dir, .. } => {
            crate::bundle::check_destination(dir)?;
            sink::check_writable(dir, "image layout")?;
            Some(dir.clone())
        }
        Output::Export(p) => {
            sink::check_writable(p, "root filesystem tar")?;
            Some(p.clone())
        }
    };

    let artifact = if req.no_build {
        cargo_build::existing(&req.cargo, &spec)?
    } else {
        cargo_build::build(&req.cargo, &spec)?
    };
    report.status(
        "Packaging",
        &format!("{} ({})", spec.name, artifact.path.display()),
    );
    let (image, debug, closure, plan) =
        assemble(&spec, &artifact, &target_dir, req.compression, report)?;

    let store = Store::open(&target_dir.join("oci").join(".store"))?;
    let images: Vec<&Image> = std::iter::once(&image).chain(debug.as_ref()).collect();
    match (&req.output, &out_path) {
        (Output::Layout(_), Some(dir)) => sink::write_layout(&store, &images, dir)?,
        (Output::OciArchive(_), Some(p)) => {
            sink::write_atomic(p, |w| sink::write_oci_archive(&store, &images, w))?
        }
        (Output::DockerArchive(_), Some(p)) => {
            sink::write_atomic(p, |w| sink::write_docker_archive(&store, &images, w))?
        }
        (Output::Bundle { readonly, .. }, Some(dir)) => {
            let tree = crate::flatten::flatten(&store, &image)?;
            let config: serde_json::Value =
                serde_json::from_slice(&std::fs::read(store.path(&image.config.digest))?)?;
            let skipped = crate::bundle::write(&tree, &config["config"], *readonly, dir)?;
            if skipped > 0 {
                report.warn(&format!(
                    "{skipped} device nodes or fifos of the image are not in the bundle's rootfs"
                ));
            }
        }
        (Output::Export(_), Some(p)) => {
            let tree = crate::flatten::flatten(&store, &image)?;
            sink::write_atomic(p, |w| crate::export::write_tar(&tree, w))?
        }
        _ => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(1 << 17, stdout.lock());
            sink::write_docker_archive(&store, &images, &mut out)
                .context("cannot write the image to stdout")?;
            out.flush().context("cannot write the image to stdout")?;
        }
    }
    Ok(Built {
        spec,
        image,
        debug,
        closure,
        plan,
        path: out_path,
    })
}

/// From the built executables to the images (standard, and debug when asked) in the store.
fn assemble(
    spec: &ImageSpec,
    artifact: &Artifact,
    target_dir: &Path,
    codec: Codec,
    report: &Reporter,
) -> Result<(Image, Option<Image>, Closure, plan::Plan)> {
    let info = closure::inspect(&artifact.path)?;
    let platform = Platform::from_elf(info.machine, info.class64, info.little_endian)?;
    let helper = crate::helper::ensure(target_dir, &artifact.target, &spec.package_dir)?;
    let runtime_inputs = tools::runtime_inputs(&spec.runtime_inputs, info.machine)?;
    let store = Store::open(&target_dir.join("oci").join(".store"))?;
    let base = match &spec.from {
        Some(from) => Some(crate::source::load(
            from,
            &store,
            &platform.architecture,
            report,
        )?),
        None => None,
    };
    let base_layers = base.as_ref().map_or(0, |b| b.layers.len());
    if base_layers + usize::from(spec.debug.is_some()) >= spec.max_layers {
        return Err(UsageError::new(format!(
            "the base image has {base_layers} layers: `max-layers = {}` leaves none for the image's own",
            spec.max_layers
        ))
        .hint("raise `max-layers` in [package.metadata.oci], or use a base with fewer layers")
        .into());
    }

    let mut executables = vec![
        Executable {
            host_path: artifact.path.clone(),
            image_path: format!("{}/{}", plan::IMAGE_PATH, spec.bin),
        },
        Executable {
            host_path: helper.clone(),
            image_path: "/bin/entrypoint".into(),
        },
    ];
    for (bin, path) in &artifact.extra {
        executables.push(Executable {
            host_path: path.clone(),
            image_path: format!("{}/{bin}", plan::IMAGE_PATH),
        });
    }
    executables.extend(runtime_inputs.iter().filter_map(tools::Program::executable));
    let opts = ClosureOptions {
        extra_libs: spec.extra_libs.clone(),
        ..ClosureOptions::default()
    };
    let closure = closure::resolve(&executables, &opts)?;

    let debug_tools = spec
        .debug
        .as_ref()
        .map(|d| tools::debug_tools(d.inputs.as_deref(), info.machine))
        .transpose()?;
    let debug_closure = match &debug_tools {
        Some(t) => {
            let exes: Vec<Executable> = t
                .programs
                .iter()
                .filter_map(tools::Program::executable)
                .collect();
            let mut c = closure::resolve(&exes, &ClosureOptions::default())?;
            c.objects
                .retain(|o| !closure.objects.iter().any(|s| s.image_path == o.image_path));
            Some(c)
        }
        None => None,
    };

    let ca_bundle = if spec.ca_certificates {
        let p = PathBuf::from(CA_BUNDLE);
        if !p.is_file() {
            return Err(UsageError::new(format!("the host has no CA bundle at {CA_BUNDLE} to put in the image"))
                .hint("install the ca-certificates package, or set `ca-certificates = false` in [package.metadata.oci]")
                .into());
        }
        Some(p)
    } else {
        None
    };

    let mut plan = plan::plan(&plan::Inputs {
        spec,
        service: artifact.path.clone(),
        helper,
        closure: &closure,
        ca_bundle,
        runtime_inputs: &runtime_inputs,
        probe_bins: &artifact.extra,
        debug: debug_tools.as_ref().zip(debug_closure.as_ref()),
    })?;
    // The debug variant adds one layer on top: keep room for it in the budget.
    let budget = spec.max_layers - base_layers - usize::from(plan.debug_layer.is_some());
    plan.layers = crate::layering::fit(plan.layers, budget);
    let all: Vec<&plan::LayerPlan> = plan
        .layers
        .iter()
        .chain(plan.debug_layer.as_ref())
        .collect();
    let mut layers = write_layers(&store, target_dir, &all, spec.mtime, codec, report)?;
    let debug_layer = plan.debug_layer.as_ref().and_then(|_| layers.pop());
    let user_path = spec.env.contains_key("PATH");
    let mut image = image::assemble(&store, spec, &plan.env, layers.clone(), &platform, None)?;
    if let Some(base) = &base {
        image = crate::rebase::rebase(&store, image, base, user_path)?;
    }
    report.detail(&format!(
        "closure: {} objects; {} layers, {} bytes compressed",
        closure.objects.len(),
        image.layers.len(),
        image.layers.iter().map(|l| l.blob.size).sum::<u64>()
    ));
    let debug = match debug_layer {
        Some(dl) => {
            let mut all = layers;
            all.push(dl);
            let tags: Vec<String> = image.tags.iter().map(|t| format!("{t}-debug")).collect();
            let mut d =
                image::assemble(&store, spec, &plan.env, all, &platform, Some(tags.clone()))?;
            if let Some(base) = &base {
                d = crate::rebase::rebase(&store, d, base, user_path)?;
                d.tags = tags;
            }
            Some(d)
        }
        None => None,
    };
    Ok((image, debug, closure, plan))
}

/// Writes every layer at once (through the layer cache): the small ones compress while the big
/// one does, instead of leaving cores idle at the end of each layer. Reports what it did.
fn write_layers(
    store: &Store,
    target_dir: &Path,
    all: &[&plan::LayerPlan],
    mtime: u64,
    codec: Codec,
    report: &Reporter,
) -> Result<Vec<crate::layer::Layer>> {
    let cache = LayerCache::open(&target_dir.join("oci").join(".cache").join("layers"))?;
    let comp = Compression::new(codec);
    let total = all.iter().map(|l| crate::layer::tar_size_estimate(l)).sum();
    let progress = report.progress("Compressing", &format!("{} layers", all.len()), Some(total));
    let layers = std::thread::scope(|s| {
        let jobs: Vec<_> = all
            .iter()
            .map(|l| {
                let (progress, cache, store) = (&progress, &cache, &store);
                s.spawn(move || {
                    let written = cache.layer(store, l, mtime, comp);
                    progress.inc(crate::layer::tar_size_estimate(l));
                    written
                })
            })
            .collect();
        jobs.into_iter()
            .map(|j| {
                j.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a layer writer panicked")))
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let reused = layers.iter().filter(|l| l.reused).count();
    progress.finish(
        if reused == layers.len() {
            "Reused"
        } else {
            "Compressed"
        },
        &format!(
            "{} layers: {} -> {}{}",
            layers.len(),
            reporter::bytes(layers.iter().map(|l| l.tar_size).sum()),
            reporter::bytes(layers.iter().map(|l| l.blob.size).sum()),
            if reused > 0 {
                format!(" ({reused} unchanged, reused)")
            } else {
                String::new()
            }
        ),
    );
    let width = layers.iter().map(|l| l.role.len()).max().unwrap_or(0);
    for l in &layers {
        report.status(
            "",
            &format!(
                "{:<width$}  {:>10} -> {:>10}  {}{}",
                l.role,
                reporter::bytes(l.tar_size),
                reporter::bytes(l.blob.size),
                &l.blob.digest[..19.min(l.blob.digest.len())],
                if l.reused { "  reused" } else { "" }
            ),
        );
    }
    Ok(layers)
}
