//! The `build` pipeline, one stage after another: metadata → cargo build → closure → plan →
//! layers → image. Each stage is its own module; this one only wires them in order:
//! [`configure`] (the metadata of every selected image, so that a command can check its
//! destinations before any build work), then [`build`]: [`compile`] (one cargo run for every
//! image) and [`assemble_one`] per image, in parallel, ending at the images in the blob store.

use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::Result;

use crate::build::cargo::{self, Artifact, CargoFlags};
use crate::build::closure::Closure;
use crate::build::plan;
use crate::build::sbom;
use crate::build::target;
use crate::config::{self, ImageSpec, Selection};
use crate::oci::compress::Codec;
use crate::oci::image::Image;
use crate::oci::index::Index;
use crate::oci::store::Store;
use crate::registry::ClientOptions;
use crate::util::error::UsageError;
use crate::util::reporter::Reporter;

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
    /// `--platform`: OCI platforms to build for (glibc targets), unless `--target` names some.
    pub platforms: Vec<String>,
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
    /// The Rust targets, one image each (`--target`, `--platform`, `platforms`; the same for
    /// every image of one command); empty: one image for cargo's default target.
    pub targets: Vec<String>,
    /// The platform a sink that takes one image delivers: the one `--platform` names, else the
    /// host's when built, else the first.
    pub pick: Option<String>,
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

/// The image of one platform and the records of how it was made.
#[derive(Debug, Clone)]
pub struct PlatformBuilt {
    /// The Rust target it was built for.
    pub target: String,
    pub image: Image,
    /// The debug variant, when built.
    pub debug: Option<Image>,
    pub closure: Closure,
    /// What each layer holds (the debug variant's layer included), for `cargo oci inspect`.
    pub plan: plan::Plan,
    /// What the image is made of: crates, Debian packages, files (for its SBOM).
    pub inventory: sbom::Inventory,
}

impl PlatformBuilt {
    /// The image, then its debug variant when there is one.
    pub fn images(&self) -> Vec<&Image> {
        std::iter::once(&self.image)
            .chain(self.debug.as_ref())
            .collect()
    }
}

/// The result of building one image: one image per platform in the store, and with several
/// platforms the index of them (and of their debug variants).
#[derive(Debug, Clone)]
pub struct Built {
    pub platforms: Vec<PlatformBuilt>,
    /// The index, then the debug variants' index, when more than one platform was built.
    pub index: Option<(Index, Option<Index>)>,
    /// Which platform single-image sinks take (see [`Configured::pick`]).
    pub pick: usize,
    /// The store holding every blob of the images.
    pub store: Store,
    /// The cargo profile the binaries were built with.
    pub profile: String,
    /// The package the image was made from.
    pub package: String,
}

impl Built {
    /// The platform single-image sinks take.
    pub fn primary(&self) -> &PlatformBuilt {
        &self.platforms[self.pick]
    }

    /// What a single-image sink takes: the picked platform's image and debug variant, named
    /// and tagged as the index is when there is one.
    pub fn images(&self) -> Vec<Image> {
        let p = self.primary();
        match &self.index {
            None => p.images().into_iter().cloned().collect(),
            Some((index, debug)) => {
                let platform = crate::oci::index::platform_of(&p.image);
                index
                    .image_for(&platform)
                    .into_iter()
                    .chain(debug.as_ref().and_then(|d| d.image_for(&platform)))
                    .collect()
            }
        }
    }

    /// The indexes (the image's, then the debug variant's), when there are.
    pub fn indexes(&self) -> Vec<&Index> {
        match &self.index {
            None => Vec::new(),
            Some((i, d)) => std::iter::once(i).chain(d.as_ref()).collect(),
        }
    }
}

/// Reads the metadata: the description of every selected image and the target directory.
pub fn configure(req: &BuildRequest) -> Result<Vec<Configured>> {
    let mut sel = req.selection.clone();
    sel.manifest_path = sel
        .manifest_path
        .or_else(|| req.cargo.manifest_path.clone());
    // Most builds run in the package's directory: start `rustc -vV` there while the package
    // list is read (git starts for each package's directory as its spec is read).
    let guess = match &sel.manifest_path {
        Some(m) => m.parent().and_then(|d| d.canonicalize().ok()),
        None => std::env::current_dir().ok(),
    };
    if let Some(dir) = guess {
        cargo::prefetch_rustc_version(&dir);
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
    let (targets, pick) = targets(req, &specs)?;
    if let Some(spec) = specs.first() {
        // The host triple (and, for another target, the contract helper's cache key) needs
        // `rustc -vV`: run it while cargo builds.
        cargo::prefetch_rustc_version(&spec.build.package_dir);
        if !targets.is_empty() {
            target::use_configured_sysroots(&specs)?;
            let host = cargo::host_triple(&spec.build.package_dir)?;
            for t in &targets {
                target::prepare(t, &host, &spec.build.package_dir)?;
            }
        }
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
            targets: targets.clone(),
            pick: pick.clone(),
        })
        .collect())
}

/// The Rust targets to build (`--target`, else `--platform`, else `platforms` in the metadata),
/// each once, and the platform single-image sinks take when `--platform` names one of several.
fn targets(req: &BuildRequest, specs: &[ImageSpec]) -> Result<(Vec<String>, Option<String>)> {
    let mut from_platform = Vec::new();
    for p in &req.platforms {
        let t = crate::oci::platform::rust_target(p, false).ok_or_else(|| {
            UsageError::new(format!(
                "--platform {p}: not a platform cargo-oci can build for"
            ))
            .hint(format!(
                "use one or more of {} (comma-separated); for musl, name the targets with --target",
                crate::oci::platform::known_platforms().join(", ")
            ))
        })?;
        from_platform.push(t);
    }
    let mut targets = if !req.cargo.targets.is_empty() {
        req.cargo.targets.clone()
    } else if !from_platform.is_empty() {
        from_platform.clone()
    } else {
        // One cargo run builds every image for the same targets.
        let first = specs.first().map(|s| s.targets.clone()).unwrap_or_default();
        if let Some(other) = specs.iter().find(|s| s.targets != first) {
            return Err(UsageError::new(format!(
                "the selected packages ask for different `platforms`: {} ({}) and {} ({})",
                if first.is_empty() {
                    "none".to_string()
                } else {
                    first.join(", ")
                },
                specs[0].build.package,
                if other.targets.is_empty() {
                    "none".to_string()
                } else {
                    other.targets.join(", ")
                },
                other.build.package,
            ))
            .hint("set one `platforms` in [workspace.metadata.oci], or pass --platform")
            .into());
        }
        first
    };
    let mut seen = std::collections::BTreeSet::new();
    targets.retain(|t| seen.insert(t.clone()));
    for t in &targets {
        target::arch_of(t)?;
    }
    // Two targets of one architecture (gnu and musl) would make two entries of one platform.
    let mut arches = std::collections::BTreeSet::new();
    for t in &targets {
        let arch = target::arch_of(t)?.machine;
        if !arches.insert(arch) {
            return Err(UsageError::new(format!(
                "two targets for the same platform: {}",
                targets.join(", ")
            ))
            .hint("an index holds one image per platform: name one target per architecture")
            .into());
        }
    }
    // `--target` with `--platform`: the platform picks among the targets.
    let pick = match (req.cargo.targets.is_empty(), req.platforms.as_slice()) {
        (false, [p]) => Some(p.clone()),
        _ => None,
    };
    Ok((targets, pick))
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

/// The executables of every image, for every target: one cargo run (shared dependencies compile
/// once), or what an earlier build left (`--no-build`). Per [`Configured`], in order, one
/// [`Artifact`] per target.
pub fn compile(req: &BuildRequest, confs: &[Configured]) -> Result<Vec<Vec<Artifact>>> {
    let Some(first) = confs.first() else {
        return Ok(Vec::new());
    };
    let profile = first.profile.as_str();
    let flags = CargoFlags {
        targets: first.targets.clone(),
        ..req.cargo.clone()
    };
    if req.no_build {
        confs
            .iter()
            .map(|c| cargo::existing(&flags, &c.spec, profile))
            .collect()
    } else {
        let specs: Vec<&ImageSpec> = confs.iter().map(|c| &c.spec).collect();
        cargo::build(&flags, &specs, profile)
    }
}

/// Builds the binaries once, then assembles every image into the store, several at a time.
/// The blob store and layer cache take concurrent writers (a blob appears by an atomic rename);
/// the contract helper and base images are prepared one image at a time.
pub fn build(req: &BuildRequest, confs: Vec<Configured>, report: &Reporter) -> Result<Vec<Built>> {
    // The crate lists of the SBOMs do not depend on the build: cargo is asked for them while
    // it builds.
    let (artifacts, early) = std::thread::scope(|s| {
        let early = s.spawn(|| early_crates(req, &confs));
        let artifacts = compile(req, &confs);
        (artifacts, early.join().unwrap_or_default())
    });
    let artifacts = artifacts?;
    let mut early = early.into_iter();
    let jobs: Vec<(Configured, Vec<Artifact>, EarlyCrates)> = confs
        .into_iter()
        .zip(artifacts)
        .map(|(c, a)| (c, a, early.next().unwrap_or_default()))
        .collect();
    if jobs.len() == 1 {
        return jobs
            .into_iter()
            .map(|(c, a, e)| assemble_one(req, c, &a, e, &Mutex::new(()), report))
            .collect();
    }
    let prepare = Mutex::new(());
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(4);
    let jobs: Mutex<Vec<Job>> = Mutex::new(
        jobs.into_iter()
            .enumerate()
            .map(|(i, (c, a, e))| (i, c, a, e))
            .rev()
            .collect(),
    );
    let done: Mutex<Vec<(usize, Result<Built>)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let next = jobs.lock().map(|mut j| j.pop()).unwrap_or(None);
                let Some((i, conf, artifact, early)) = next else {
                    break;
                };
                let built = assemble_one(req, conf, &artifact, early, &prepare, report);
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

/// The crate lists of an image resolved ahead, by target.
type EarlyCrates = Vec<(String, Vec<sbom::Crate>)>;

/// One image to assemble: its place in the command's order, its configuration, its executables.
type Job = (usize, Configured, Vec<Artifact>, EarlyCrates);

/// The crate lists of every image for the targets it is about to be built for (cargo's default
/// target: the host's). Each is resolved with `--locked`, so that cargo never rewrites
/// Cargo.lock under the running build; one that fails here is resolved again, and its error
/// reported, when the image is packaged.
fn early_crates(req: &BuildRequest, confs: &[Configured]) -> Vec<EarlyCrates> {
    let locked = CargoFlags {
        locked: true,
        ..req.cargo.clone()
    };
    confs
        .iter()
        .map(|c| {
            let targets = if c.targets.is_empty() {
                cargo::host_triple(&c.spec.build.package_dir)
                    .ok()
                    .into_iter()
                    .collect()
            } else {
                c.targets.clone()
            };
            let cache = c.oci_dir().join(".cache");
            targets
                .into_iter()
                .filter_map(|t| {
                    let crates = sbom::crates::resolve(&c.spec, &t, &locked, &cache).ok()?;
                    Some((t, crates))
                })
                .collect()
        })
        .collect()
}

/// One image from its built executables, for every platform: closure, plan, layers, image (and
/// debug variant), then the index of the platforms when there are several. `prepare` is held
/// while the contract helper and the base image are made ready.
pub fn assemble_one(
    req: &BuildRequest,
    conf: Configured,
    artifacts: &[Artifact],
    early: EarlyCrates,
    prepare: &Mutex<()>,
    report: &Reporter,
) -> Result<Built> {
    let Configured {
        spec,
        target_dir,
        profile,
        pick,
        ..
    } = conf;
    // The platforms of one image are packaged side by side: their layers share the process's
    // compressing threads, and what one waits for (a file read, a cache record) the other
    // fills with work.
    let one = |artifact: &Artifact| -> Result<PlatformBuilt> {
        report.status(
            "Packaging",
            &format!(
                "{} for {} ({}, `{profile}` profile)",
                spec.name,
                artifact.target,
                artifact.path.display()
            ),
        );
        let crates = match early.iter().find(|(t, _)| *t == artifact.target) {
            Some((_, crates)) => crates.clone(),
            None => sbom::crates::resolve(
                &spec,
                &artifact.target,
                &req.cargo,
                &target_dir.join("oci").join(".cache"),
            )?,
        };
        let (image, debug, closure, plan, inventory) = crate::build::package::assemble(
            &spec,
            artifact,
            crates,
            &target_dir,
            req.compression,
            &req.registry,
            prepare,
            report,
        )?;
        Ok(PlatformBuilt {
            target: artifact.target.clone(),
            image,
            debug,
            closure,
            plan,
            inventory,
        })
    };
    let platforms: Vec<PlatformBuilt> = match artifacts {
        [artifact] => vec![one(artifact)?],
        _ => std::thread::scope(|s| {
            let jobs: Vec<_> = artifacts.iter().map(|a| s.spawn(|| one(a))).collect();
            jobs.into_iter()
                .map(|j| {
                    j.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("an image assembler panicked")))
                })
                .collect::<Result<Vec<_>>>()
        })?,
    };
    let store = Store::open(&target_dir.join("oci").join(".store"))?;
    let index = index_of(&store, &platforms, &spec, report)?;
    let pick = pick_platform(&platforms, pick.as_deref(), &spec)?;
    Ok(Built {
        platforms,
        index,
        pick,
        store,
        profile,
        package: spec.build.package.clone(),
    })
}

/// With several platforms: their index, and the debug variants' when every platform has one.
fn index_of(
    store: &Store,
    platforms: &[PlatformBuilt],
    spec: &ImageSpec,
    report: &Reporter,
) -> Result<Option<(Index, Option<Index>)>> {
    if platforms.len() < 2 {
        return Ok(None);
    }
    let images = platforms.iter().map(|p| p.image.clone()).collect();
    let index = Index::make(store, images, &spec.tags, None)?;
    let debug = match platforms
        .iter()
        .map(|p| p.debug.clone())
        .collect::<Option<Vec<_>>>()
    {
        Some(d) => {
            let tags = index.tags.iter().map(|t| format!("{t}-debug")).collect();
            Some(Index::make(store, d, &[], Some(tags))?)
        }
        None => None,
    };
    report.detail(&format!(
        "index {} of {}",
        index.blob.digest,
        index.platforms().join(", ")
    ));
    Ok(Some((index, debug)))
}

/// The platform single-image sinks take: the one named, else the host's, else the first.
fn pick_platform(
    platforms: &[PlatformBuilt],
    named: Option<&str>,
    spec: &ImageSpec,
) -> Result<usize> {
    if let Some(p) = named {
        let arch = p.strip_prefix("linux/").unwrap_or(p);
        let arch = arch.split('/').next().unwrap_or(arch);
        return Ok(platforms
            .iter()
            .position(|b| b.image.architecture == arch)
            .ok_or_else(|| {
                UsageError::new(format!("--platform {p} is not one of the targets built"))
                    .hint("name a --platform that one of the --target options builds")
            })?);
    }
    let host = cargo::host_triple(&spec.build.package_dir)?;
    let host_arch = target::arch_of(&host).ok().map(|a| a.machine);
    Ok(platforms
        .iter()
        .position(|b| target::arch_of(&b.target).ok().map(|a| a.machine) == host_arch)
        .unwrap_or(0))
}
