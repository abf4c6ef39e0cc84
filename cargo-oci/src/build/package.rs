//! One platform's image from its built executables: the contract helper and the base image made
//! ready, the closure resolved in the target's file system, the layer plan, the layers written
//! (through the layer cache), the image (and its debug variant) assembled in the store.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Result;

use crate::build::cargo::{self, Artifact};
use crate::build::closure::{self, Closure, ClosureOptions, Executable};
use crate::build::layer_cache::LayerCache;
use crate::build::plan::{self, CA_BUNDLE};
use crate::build::sbom;
use crate::build::{target, tools};
use crate::config::ImageSpec;
use crate::oci::compress::{Codec, Compression};
use crate::oci::image::{Image, Platform};
use crate::oci::store::Store;
use crate::registry::ClientOptions;
use crate::util::error::UsageError;
use crate::util::reporter::{self, Reporter};

/// From the built executables to the images (standard, and debug when asked) in the store.
#[allow(clippy::too_many_arguments)] // the stage's inputs, each from another stage
pub fn assemble(
    spec: &ImageSpec,
    artifact: &Artifact,
    crates: Vec<sbom::Crate>,
    target_dir: &Path,
    compression: Codec,
    registry: &ClientOptions,
    prepare: &Mutex<()>,
    report: &Reporter,
) -> Result<(Image, Option<Image>, Closure, plan::Plan, sbom::Inventory)> {
    let info = closure::inspect(&artifact.path)?;
    let platform = Platform::from_elf(info.machine, info.class64, info.little_endian)?;
    let prepared = prepare
        .lock()
        .map_err(|_| anyhow::anyhow!("an image assembler panicked"))?;
    let helper = crate::build::helper::ensure(&artifact.target, &spec.build.package_dir, report)?;
    // The target's file system, where its libraries and programs are found; a static program
    // needs none.
    let host = cargo::host_triple(&spec.build.package_dir)?;
    let sysroot = if info.is_static && spec.runtime_inputs.is_empty() && spec.debug.is_none() {
        PathBuf::from("/")
    } else {
        target::sysroot(&artifact.target, &host, report)?
    };
    let runtime_inputs = tools::runtime_inputs(
        &spec.runtime_inputs,
        info.machine,
        &sysroot,
        &spec.build.package_dir,
        &spec.build,
    )?;
    let store = Store::open(&target_dir.join("oci").join(".store"))?;
    let base = match &spec.from {
        Some(from) => Some(crate::source::load(
            from,
            &store,
            &platform.architecture,
            registry,
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
        ..ClosureOptions::new(&sysroot)
    };
    let foreign = artifact.target != host;
    let explain = |e: closure::ClosureError| -> anyhow::Error {
        match &e {
            closure::ClosureError::LibraryNotFound {
                name,
                needed_by,
                searched,
            } if foreign => target::missing_library(
                name,
                needed_by,
                searched,
                &artifact.target,
                crate::oci::platform::ElfArch {
                    machine: info.machine,
                    class64: info.class64,
                    little_endian: info.little_endian,
                },
                &sysroot,
            )
            .into(),
            _ => e.into(),
        }
    };
    let closure = closure::resolve(&executables, &opts).map_err(explain)?;

    let debug_tools = spec
        .debug
        .as_ref()
        .map(|d| tools::debug_tools(d.inputs.as_deref(), info.machine, &sysroot, &spec.build))
        .transpose()?;
    let debug_closure = match &debug_tools {
        Some(t) => {
            let exes: Vec<Executable> = t
                .programs
                .iter()
                .filter_map(tools::Program::executable)
                .collect();
            let mut c = closure::resolve(&exes, &ClosureOptions::new(&sysroot)).map_err(explain)?;
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
    // The package records of the target's file system, when it has them.
    let records = if sysroot.join("var/lib/dpkg").is_dir() {
        sysroot.as_path()
    } else {
        if sysroot != Path::new("/") {
            report.detail(&format!(
                "the sysroot {} has no package database (var/lib/dpkg/status): its files are listed as files, without their packages",
                sysroot.display()
            ));
        }
        Path::new("/")
    };
    // Which package owns which file, remembered per machine (any checkout reads the same
    // package database).
    let owners_cache = crate::util::fs::cache_dir().ok().map(|d| d.join("dpkg"));
    let mut inventory = sbom::gather(&plan, crates, &binary, records, owners_cache.as_deref())?;
    inventory.created = spec.mtime;
    if spec.scanner_metadata {
        if let Some(layer) = sbom::scanner::layer(&inventory, &plan) {
            // Above cargo-oci's base files, under everything that changes more often.
            plan.layers.insert(plan.layers.len().min(1), layer);
        }
        sbom::scanner::add_debug_records(&inventory, &mut plan);
    }
    // The debug variant adds one layer on top: keep room for it in the budget.
    let budget = spec.max_layers - base_layers - usize::from(plan.debug_layer.is_some());
    plan.layers = crate::build::layering::fit(plan.layers, budget);
    let all: Vec<&plan::LayerPlan> = plan
        .layers
        .iter()
        .chain(plan.debug_layer.as_ref())
        .collect();
    // The binary's digest, for the SBOM, is taken while the layers are written.
    let (layers, hashed) = std::thread::scope(|s| {
        let digests = target_dir.join("oci").join(".cache").join("digests");
        let inv = &mut inventory;
        let hashing = s.spawn(move || sbom::hash_binary(inv, Some(&digests)));
        let layers = write_layers(spec, &store, target_dir, &all, compression, report);
        let hashed = hashing
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("hashing the binary panicked")));
        (layers, hashed)
    });
    let mut layers = layers?;
    hashed?;
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
    spec: &ImageSpec,
    store: &Store,
    target_dir: &Path,
    all: &[&plan::LayerPlan],
    codec: Codec,
    report: &Reporter,
) -> Result<Vec<crate::oci::layer::Layer>> {
    let (name, mtime) = (spec.name.to_string(), spec.mtime);
    let mut cache = LayerCache::open(&target_dir.join("oci").join(".cache").join("layers"))?;
    // Layers of the machine's own files (the C library, the contract helper) are compressed
    // once per machine; the workspace's and the target directory's files are the project's.
    if let Ok(machine) = crate::util::fs::cache_dir() {
        let mut project = vec![
            target_dir.to_path_buf(),
            spec.build.target_directory.clone(),
            spec.build.package_dir.clone(),
        ];
        project.extend(
            spec.build
                .workspace_manifests
                .first()
                .and_then(|m| m.parent())
                .map(Path::to_path_buf),
        );
        let project = project
            .into_iter()
            .map(|p| std::path::absolute(&p).unwrap_or(p))
            .collect();
        // Best effort: without it, these layers are compressed here, as before.
        match cache.clone().sharing(&machine.join("layers"), project) {
            Ok(shared) => cache = shared,
            Err(e) => report.detail(&format!("the machine's layer cache is not used: {e:#}")),
        }
    }
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
