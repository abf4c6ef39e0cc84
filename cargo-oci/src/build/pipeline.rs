//! The `build` pipeline, one stage after another: metadata → cargo build → closure → plan →
//! layers → image. Each stage is its own module; this one only wires them in order:
//! [`configure`] (the metadata of every selected image, so that a command can check its
//! destinations before any build work), then [`build`]: [`compile`] (one cargo run for every
//! image) and [`assemble_one`] per image, in parallel, ending at the images in the blob store.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Result;

use crate::build::cargo::{self, Artifact, CargoFlags};
use crate::build::closure::{self, Closure, ClosureOptions, Executable};
use crate::build::layer_cache::LayerCache;
use crate::build::plan::{self, CA_BUNDLE};
use crate::build::sbom;
use crate::build::tools;
use crate::config::{self, ImageSpec, Selection};
use crate::oci::compress::{Codec, Compression};
use crate::oci::image::{Image, Platform};
use crate::oci::store::Store;
use crate::registry::ClientOptions;
use crate::util::error::UsageError;
use crate::util::reporter::{self, Reporter};

/// What `cargo oci build` was asked to do.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub selection: Selection,
    pub cargo: CargoFlags,
    pub no_build: bool,
    /// Also build the debug variant (`--debug`), whatever the metadata says.
    pub debug: bool,
    /// How layers are compressed.
    pub compression: Codec,
    /// How a registry holding the base image is reached (`--ca-file`, `--insecure-registry`).
    pub registry: ClientOptions,
    /// The SBOM to write beside the output (`--sbom`), if any.
    pub sbom: Option<sbom::Format>,
    /// Where to write it instead (`--sbom-output`).
    pub sbom_output: Option<PathBuf>,
}

/// The configuration of one image to make, read before anything is built.
#[derive(Debug, Clone)]
pub struct Configured {
    pub spec: ImageSpec,
    /// The target directory in use.
    pub target_dir: PathBuf,
    /// The cargo profile of the build (the same for every image of one command).
    pub profile: String,
}

impl Configured {
    /// Where cargo-oci keeps its own files: `target/oci`.
    pub fn oci_dir(&self) -> PathBuf {
        self.target_dir.join("oci")
    }

    /// The default OCI layout of the image: `target/oci/<name>`, the full name made one path
    /// part (`/` → `+`, `:` → `_`), so that images of one target directory never share one.
    pub fn default_layout(&self) -> PathBuf {
        self.oci_dir()
            .join(self.spec.name.full.replace('/', "+").replace(':', "_"))
    }
}

/// The result of a build: the images in the store and the records of how they were made.
#[derive(Debug, Clone)]
pub struct Built {
    pub image: Image,
    /// The debug variant, when built.
    pub debug: Option<Image>,
    pub closure: Closure,
    /// What each layer holds (the debug variant's layer included), for `cargo oci inspect`.
    pub plan: plan::Plan,
    /// The store holding every blob of the images.
    pub store: Store,
    /// What the image is made of: crates, Debian packages, files (for its SBOM).
    pub inventory: sbom::Inventory,
    /// The cargo profile the binaries were built with.
    pub profile: String,
    /// The package the image was made from.
    pub package: String,
}

impl Built {
    /// The image, then its debug variant when there is one.
    pub fn images(&self) -> Vec<&Image> {
        std::iter::once(&self.image)
            .chain(self.debug.as_ref())
            .collect()
    }
}

/// Reads the metadata: the description of every selected image and the target directory.
pub fn configure(req: &BuildRequest) -> Result<Vec<Configured>> {
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
        cargo::prefetch_rustc_version(&dir);
        config::prefetch_revision(&dir);
    }
    let meta = config::cargo_metadata(&sel)?;
    let all_binaries = config::workspace_defaults(&meta)?
        .all_binaries
        .unwrap_or(false);
    let packages = config::select_packages(&meta, &sel, all_binaries)?;
    if let (Some(bin), [_, _, ..]) = (&sel.bin, packages.as_slice()) {
        return Err(UsageError::new(format!(
            "--bin {bin} selects one binary, but {} packages are selected",
            packages.len()
        ))
        .hint("select one package with -p NAME, or drop --bin and set `bins` in the metadata")
        .into());
    }
    let mut specs = Vec::new();
    for package in packages {
        specs.extend(config::image_specs(&meta, package, &sel)?);
    }
    for spec in &mut specs {
        if req.debug && spec.debug.is_none() {
            spec.debug = Some(config::DebugSpec::default());
        }
    }
    check_distinct(&specs)?;
    let profile = req.cargo.profile_for(&specs.iter().collect::<Vec<_>>())?;
    if let Some(spec) = specs.first() {
        // The host triple (and, for another target, the contract helper's cache key) needs
        // `rustc -vV`: run it while cargo builds.
        cargo::prefetch_rustc_version(&spec.build.package_dir);
    }
    Ok(specs
        .into_iter()
        .map(|spec| Configured {
            target_dir: req
                .cargo
                .target_dir
                .clone()
                .unwrap_or_else(|| spec.build.target_directory.clone()),
            spec,
            profile: profile.clone(),
        })
        .collect())
}

/// Two images of one command must not share a name and tag: the second would replace the first.
fn check_distinct(specs: &[ImageSpec]) -> Result<(), UsageError> {
    for (i, a) in specs.iter().enumerate() {
        for b in &specs[..i] {
            if let Some(t) = a
                .tags
                .iter()
                .find(|t| a.name == b.name && b.tags.contains(t))
            {
                return Err(UsageError::new(format!(
                    "binaries `{}` ({}) and `{}` ({}) would both be the image {}",
                    b.build.bin,
                    b.build.package,
                    a.build.bin,
                    a.build.package,
                    a.name.with_tag(t)
                ))
                .hint("put `{bin}` or `{package}` in `name` (e.g. name = \"registry.example.com/team/{bin}\")"));
            }
        }
    }
    Ok(())
}

/// The executables of every image: one cargo run (shared dependencies compile once), or what an
/// earlier build left (`--no-build`). One [`Artifact`] per [`Configured`], in order.
pub fn compile(req: &BuildRequest, confs: &[Configured]) -> Result<Vec<Artifact>> {
    let Some(profile) = confs.first().map(|c| c.profile.as_str()) else {
        return Ok(Vec::new());
    };
    if req.no_build {
        confs
            .iter()
            .map(|c| cargo::existing(&req.cargo, &c.spec, profile))
            .collect()
    } else {
        let specs: Vec<&ImageSpec> = confs.iter().map(|c| &c.spec).collect();
        cargo::build(&req.cargo, &specs, profile)
    }
}

/// Builds the binaries once, then assembles every image into the store, several at a time.
/// The blob store and layer cache take concurrent writers (a blob appears by an atomic rename);
/// the contract helper and base images are prepared one image at a time.
pub fn build(req: &BuildRequest, confs: Vec<Configured>, report: &Reporter) -> Result<Vec<Built>> {
    let artifacts = compile(req, &confs)?;
    if confs.len() == 1 {
        return confs
            .into_iter()
            .zip(artifacts)
            .map(|(c, a)| assemble_one(req, c, &a, &Mutex::new(()), report))
            .collect();
    }
    let prepare = Mutex::new(());
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(4);
    let jobs: Mutex<Vec<(usize, Configured, Artifact)>> = Mutex::new(
        confs
            .into_iter()
            .zip(artifacts)
            .enumerate()
            .map(|(i, (c, a))| (i, c, a))
            .rev()
            .collect(),
    );
    let done: Mutex<Vec<(usize, Result<Built>)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let next = jobs.lock().map(|mut j| j.pop()).unwrap_or(None);
                let Some((i, conf, artifact)) = next else {
                    break;
                };
                let built = assemble_one(req, conf, &artifact, &prepare, report);
                if let Ok(mut d) = done.lock() {
                    d.push((i, built));
                }
            });
        }
    });
    let mut done = done
        .into_inner()
        .map_err(|_| anyhow::anyhow!("an image assembler panicked"))?;
    done.sort_by_key(|(i, _)| *i);
    if !jobs.lock().map(|j| j.is_empty()).unwrap_or(false) {
        anyhow::bail!("an image assembler panicked");
    }
    done.into_iter().map(|(_, b)| b).collect()
}

/// One image from its built executables: closure, plan, layers, image (and debug variant).
/// `prepare` is held while the contract helper and the base image are made ready.
pub fn assemble_one(
    req: &BuildRequest,
    conf: Configured,
    artifact: &Artifact,
    prepare: &Mutex<()>,
    report: &Reporter,
) -> Result<Built> {
    let Configured {
        spec,
        target_dir,
        profile,
    } = conf;
    report.status(
        "Packaging",
        &format!(
            "{} ({}, `{profile}` profile)",
            spec.name,
            artifact.path.display()
        ),
    );
    let crates = sbom::crates::resolve(&spec, &artifact.target, &req.cargo)?;
    let (image, debug, closure, plan, inventory) =
        assemble(&spec, artifact, crates, &target_dir, req, prepare, report)?;
    let store = Store::open(&target_dir.join("oci").join(".store"))?;
    Ok(Built {
        image,
        debug,
        closure,
        plan,
        store,
        inventory,
        profile,
        package: spec.build.package.clone(),
    })
}

/// From the built executables to the images (standard, and debug when asked) in the store.
fn assemble(
    spec: &ImageSpec,
    artifact: &Artifact,
    crates: Vec<sbom::Crate>,
    target_dir: &Path,
    req: &BuildRequest,
    prepare: &Mutex<()>,
    report: &Reporter,
) -> Result<(Image, Option<Image>, Closure, plan::Plan, sbom::Inventory)> {
    let info = closure::inspect(&artifact.path)?;
    let platform = Platform::from_elf(info.machine, info.class64, info.little_endian)?;
    let prepared = prepare
        .lock()
        .map_err(|_| anyhow::anyhow!("an image assembler panicked"))?;
    let helper = crate::build::helper::ensure(&artifact.target, &spec.build.package_dir, report)?;
    let runtime_inputs = tools::runtime_inputs(
        &spec.runtime_inputs,
        info.machine,
        &spec.build.package_dir,
        &spec.build.manifest_path,
    )?;
    let store = Store::open(&target_dir.join("oci").join(".store"))?;
    let base = match &spec.from {
        Some(from) => Some(crate::source::load(
            from,
            &store,
            &platform.architecture,
            &req.registry,
            report,
        )?),
        None => None,
    };
    drop(prepared);
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
            image_path: format!("{}/{}", plan::IMAGE_PATH, spec.build.bin),
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
        .map(|d| tools::debug_tools(d.inputs.as_deref(), info.machine, &spec.build.manifest_path))
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

    // The crate list scanners read from a Rust binary, in a copy of it.
    let service = if spec.scanner_metadata {
        sbom::embed_crate_list(
            &artifact.path,
            &crates,
            &target_dir.join("oci").join(".cache").join("auditable"),
        )?
    } else {
        artifact.path.clone()
    };
    let mut plan = plan::plan(&plan::Inputs {
        spec,
        service,
        helper,
        closure: &closure,
        ca_bundle,
        runtime_inputs: &runtime_inputs,
        probe_bins: &artifact.extra,
        debug: debug_tools.as_ref().zip(debug_closure.as_ref()),
    })?;
    let binary = format!("{}/{}", plan::IMAGE_PATH, spec.build.bin);
    let mut inventory = sbom::gather(&plan, crates, &binary, Path::new("/"))?;
    inventory.created = spec.mtime;
    if spec.scanner_metadata {
        if let Some(layer) = sbom::scanner::layer(&inventory, &plan) {
            // Above cargo-oci's base files, under everything that changes more often.
            plan.layers.insert(plan.layers.len().min(1), layer);
        }
    }
    // The debug variant adds one layer on top: keep room for it in the budget.
    let budget = spec.max_layers - base_layers - usize::from(plan.debug_layer.is_some());
    plan.layers = crate::build::layering::fit(plan.layers, budget);
    let all: Vec<&plan::LayerPlan> = plan
        .layers
        .iter()
        .chain(plan.debug_layer.as_ref())
        .collect();
    let mut layers = write_layers(
        &spec.name.to_string(),
        &store,
        target_dir,
        &all,
        spec.mtime,
        req.compression,
        report,
    )?;
    let debug_layer = plan.debug_layer.as_ref().and_then(|_| layers.pop());
    let user_path = spec.runtime.env.contains_key("PATH");
    let mut image =
        crate::build::assemble::assemble(&store, spec, &plan.env, layers.clone(), &platform, None)?;
    if let Some(base) = &base {
        image = crate::build::rebase::rebase(&store, image, base, user_path)?;
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
            let tags: Vec<String> = match spec.debug.as_ref().and_then(|d| d.tags.clone()) {
                Some(t) => t,
                None => image.tags.iter().map(|t| format!("{t}-debug")).collect(),
            };
            let mut d = crate::build::assemble::assemble(
                &store,
                spec,
                &plan.env,
                all,
                &platform,
                Some(tags.clone()),
            )?;
            if let Some(base) = &base {
                d = crate::build::rebase::rebase(&store, d, base, user_path)?;
                d.tags = tags;
            }
            Some(d)
        }
        None => None,
    };
    for repair in store.take_repairs() {
        report.warn(&format!("repaired a damaged cache entry: {repair}"));
    }
    Ok((image, debug, closure, plan, inventory))
}

/// Writes every layer at once (through the layer cache): the small ones compress while the big
/// one does, instead of leaving cores idle at the end of each layer. Reports what it did.
fn write_layers(
    name: &str,
    store: &Store,
    target_dir: &Path,
    all: &[&plan::LayerPlan],
    mtime: u64,
    codec: Codec,
    report: &Reporter,
) -> Result<Vec<crate::oci::layer::Layer>> {
    let cache = LayerCache::open(&target_dir.join("oci").join(".cache").join("layers"))?;
    let comp = Compression::new(codec);
    let total = all
        .iter()
        .map(|l| crate::build::layer_writer::tar_size_estimate(l))
        .sum();
    let progress = report.progress("Compressing", &format!("{} layers", all.len()), Some(total));
    let layers = std::thread::scope(|s| {
        let jobs: Vec<_> = all
            .iter()
            .map(|l| {
                let (progress, cache, store) = (&progress, &cache, &store);
                s.spawn(move || {
                    let written = cache.layer(store, l, mtime, comp);
                    progress.inc(crate::build::layer_writer::tar_size_estimate(l));
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
    // Images assembled in parallel print their tables one at a time.
    static PRINTING: Mutex<()> = Mutex::new(());
    let _printing = PRINTING.lock();
    progress.finish(
        if reused == layers.len() {
            "Reused"
        } else {
            "Compressed"
        },
        &format!(
            "{name}, {} layers: {} -> {}{}",
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
                l.blob.digest.short(),
                if l.reused { "  reused" } else { "" }
            ),
        );
    }
    Ok(layers)
}
