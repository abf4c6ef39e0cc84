//! The command line: clap definitions for `cargo oci …`, turned into pipeline requests, and the
//! printing of results (stdout: the result only; stderr: everything for humans).

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::cargo_build::CargoFlags;
use crate::load;
use crate::metadata::Selection;
use crate::pipeline::{self, BuildRequest, Built, Output};
use crate::reporter::{Reporter, Verbosity};
use crate::sink::Format;
use crate::store::Store;
use crate::{init, inspect, template};

#[derive(Debug, Parser)]
#[command(
    name = "cargo-oci",
    bin_name = "cargo oci",
    version,
    about = "Build minimal, hardened, reproducible OCI images from Cargo packages",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the package and write its image (default: an OCI layout in target/oci/<name>/).
    Build(BuildArgs),
    /// Build, then load the image into the local Docker engine or podman, whichever answers.
    Load(LoadArgs),
    /// Build, then show the image's layers, files, and why each library is in it.
    Inspect(InspectArgs),
    /// Create a package from the starter service: an HTTP server with probes, ready to build.
    New(NewArgs),
    /// Add a commented [package.metadata.oci] block to the package's Cargo.toml.
    Init(InitArgs),
}

/// How results are printed on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum MessageFormat {
    #[default]
    Human,
    Json,
}

/// Options every command shares.
#[derive(Debug, Args)]
pub struct Common {
    /// Say nothing on stderr but errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Explain each step (-vv passes -vv to cargo).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Print results as human text or one JSON object per result.
    #[arg(long, value_enum, default_value_t, global = true)]
    pub message_format: MessageFormat,
}

/// The `cargo build` options cargo-oci passes through.
#[derive(Debug, Args)]
pub struct CargoArgs {
    /// Package to build (see `cargo help pkgid`).
    #[arg(short, long, value_name = "SPEC")]
    pub package: Option<String>,
    /// Binary to put in the image (default: `bin` in metadata, else the only binary).
    #[arg(long, value_name = "NAME")]
    pub bin: Option<String>,
    /// Path to Cargo.toml.
    #[arg(long, value_name = "PATH")]
    pub manifest_path: Option<PathBuf>,
    /// Build for the target triple.
    #[arg(long, value_name = "TRIPLE")]
    pub target: Option<String>,
    /// Build with the release profile.
    #[arg(short, long)]
    pub release: bool,
    /// Build with the given profile.
    #[arg(long, value_name = "NAME", conflicts_with = "release")]
    pub profile: Option<String>,
    /// Space or comma separated list of features to activate.
    #[arg(short = 'F', long, value_name = "FEATURES")]
    pub features: Vec<String>,
    /// Activate all available features.
    #[arg(long)]
    pub all_features: bool,
    /// Do not activate the `default` feature.
    #[arg(long)]
    pub no_default_features: bool,
    /// Assert that Cargo.lock will remain unchanged.
    #[arg(long)]
    pub locked: bool,
    /// Equivalent to --locked and --offline.
    #[arg(long)]
    pub frozen: bool,
    /// Run without accessing the network.
    #[arg(long)]
    pub offline: bool,
    /// Directory for all generated artifacts.
    #[arg(long, value_name = "DIRECTORY")]
    pub target_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub cargo: CargoArgs,
    #[command(flatten)]
    pub common: Common,
    /// Package what is already in target/ instead of running cargo build.
    #[arg(long)]
    pub no_build: bool,
    /// Output format.
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Output path (a directory for `oci`, a file for the archives).
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Write a docker-archive to stdout, for `| docker load` or `| podman load`.
    #[arg(long)]
    pub stream: bool,
    /// Also build the debug variant (tags `<tag>-debug`), as `debug = true` does.
    #[arg(long)]
    pub debug: bool,
    /// Another tag (repeatable), besides the configured ones.
    #[arg(long = "tag", short = 't', value_name = "TAG")]
    pub tags: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    pub cargo: CargoArgs,
    #[command(flatten)]
    pub common: Common,
    /// Package what is already in target/ instead of running cargo build.
    #[arg(long)]
    pub no_build: bool,
    /// Also build and load the debug variant (tags `<tag>-debug`).
    #[arg(long)]
    pub debug: bool,
    /// Another tag (repeatable), besides the configured ones.
    #[arg(long = "tag", short = 't', value_name = "TAG")]
    pub tags: Vec<String>,
    /// The engine to load into (default: Docker if it answers, else podman).
    #[arg(long, value_enum)]
    pub runtime: Option<load::Runtime>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub cargo: CargoArgs,
    #[command(flatten)]
    pub common: Common,
    /// Inspect what is already in target/ instead of running cargo build.
    #[arg(long)]
    pub no_build: bool,
    /// Include the debug variant's layer.
    #[arg(long)]
    pub debug: bool,
    /// Print one JSON object (as --message-format json).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// Directory to create; its last part is the package name unless --name says otherwise.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// The package name.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Path to Cargo.toml (default: ./Cargo.toml).
    #[arg(long, value_name = "PATH")]
    pub manifest_path: Option<PathBuf>,
    /// Print the block instead of adding it.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub common: Common,
}

impl Common {
    pub fn reporter(&self) -> Reporter {
        Reporter::new(if self.quiet {
            Verbosity::Quiet
        } else if self.verbose > 0 {
            Verbosity::Verbose
        } else {
            Verbosity::Normal
        })
    }
}

impl CargoArgs {
    fn flags(&self, common: &Common) -> CargoFlags {
        CargoFlags {
            manifest_path: self.manifest_path.clone(),
            target: self.target.clone(),
            release: self.release,
            profile: self.profile.clone(),
            features: self.features.clone(),
            all_features: self.all_features,
            no_default_features: self.no_default_features,
            locked: self.locked,
            frozen: self.frozen,
            offline: self.offline,
            target_dir: self.target_dir.clone(),
            quiet: common.quiet,
            verbose: common.verbose.saturating_sub(1),
        }
    }

    fn request(
        &self,
        common: &Common,
        tags: &[String],
        no_build: bool,
        debug: bool,
        output: Output,
    ) -> BuildRequest {
        BuildRequest {
            selection: self.selection(tags),
            cargo: self.flags(common),
            no_build,
            debug,
            output,
        }
    }

    fn selection(&self, tags: &[String]) -> Selection {
        Selection {
            package: self.package.clone(),
            bin: self.bin.clone(),
            manifest_path: self.manifest_path.clone(),
            tags: tags.to_vec(),
        }
    }
}

/// Parses the arguments, accepting both `cargo oci build` (cargo passes `oci` first) and
/// `cargo-oci build`.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Cli {
    let mut args: Vec<OsString> = args.into_iter().collect();
    if args.get(1).is_some_and(|a| a == "oci") {
        args.remove(1);
    }
    Cli::parse_from(args)
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Build(a) => {
            let report = a.common.reporter();
            let output = Output::from_options(a.format, a.output.clone(), a.stream)?;
            let req = a
                .cargo
                .request(&a.common, &a.tags, a.no_build, a.debug, output);
            let built = pipeline::build(&req, &report)?;
            print_built(&built, &req.output, a.common.message_format, &report);
            Ok(())
        }
        Command::Load(a) => {
            let report = a.common.reporter();
            // Find the engine first: a missing one costs no build.
            let (runtime, version) = load::detect(a.runtime, &report)?;
            let req = a.cargo.request(
                &a.common,
                &a.tags,
                a.no_build,
                a.debug,
                Output::Layout(None),
            );
            let built = pipeline::build(&req, &report)?;
            let store = Store::open(
                &pipeline::target_dir(&req, &built.spec)
                    .join("oci")
                    .join(".store"),
            )?;
            let images: Vec<_> = std::iter::once(&built.image)
                .chain(built.debug.as_ref())
                .collect();
            let said = load::load(runtime, &store, &images, &report)?;
            let references: Vec<String> = images.iter().flat_map(|i| i.references()).collect();
            match a.common.message_format {
                MessageFormat::Json => println!(
                    "{}",
                    json!({
                        "reason": "image-loaded",
                        "runtime": runtime.program(),
                        "runtime_version": version,
                        "name": built.image.name.full,
                        "references": references,
                        "digest": built.image.manifest.digest,
                        "engine_output": said,
                    })
                ),
                MessageFormat::Human => references.iter().for_each(|r| println!("{r}")),
            }
            Ok(())
        }
        Command::Inspect(a) => {
            let report = a.common.reporter();
            let req = a
                .cargo
                .request(&a.common, &[], a.no_build, a.debug, Output::Layout(None));
            let built = pipeline::build(&req, &report)?;
            if a.json || a.common.message_format == MessageFormat::Json {
                println!("{}", inspect::to_json(&built));
            } else {
                print!("{}", inspect::to_text(&built));
            }
            Ok(())
        }
        Command::New(a) => {
            let report = a.common.reporter();
            let made = template::new_package(&a.path, a.name.as_deref())?;
            report.status(
                "Created",
                &format!(
                    "package `{}` (image {}) in {}",
                    made.name,
                    made.image,
                    made.path.display()
                ),
            );
            report.status(
                "Next",
                &format!(
                    "cd {} && cargo oci build && cargo oci load",
                    made.path.display()
                ),
            );
            match a.common.message_format {
                MessageFormat::Json => println!(
                    "{}",
                    json!({
                        "reason": "package-created",
                        "name": made.name,
                        "path": made.path,
                        "image": made.image,
                    })
                ),
                MessageFormat::Human => println!("{}", made.path.display()),
            }
            Ok(())
        }
        Command::Init(a) => {
            let report = a.common.reporter();
            let manifest = init::manifest(a.manifest_path.as_deref())?;
            let done = init::init(&manifest, a.dry_run)?;
            if !a.dry_run {
                report.status(
                    "Added",
                    &format!(
                        "[package.metadata.oci] to {} (package `{}`)",
                        done.manifest.display(),
                        done.package
                    ),
                );
            }
            match a.common.message_format {
                MessageFormat::Json => println!(
                    "{}",
                    json!({
                        "reason": "metadata-added",
                        "manifest": done.manifest,
                        "package": done.package,
                        "dry_run": done.dry_run,
                        "block": done.block,
                    })
                ),
                MessageFormat::Human if a.dry_run => print!("{}", done.block),
                MessageFormat::Human => println!("{}", done.manifest.display()),
            }
            Ok(())
        }
    }
}

fn print_built(b: &Built, output: &Output, format: MessageFormat, report: &Reporter) {
    let img = &b.image;
    let size: u64 = img.layers.iter().map(|l| l.blob.size).sum();
    let fmt = match output {
        Output::Layout(_) => "oci",
        Output::OciArchive(_) => "oci-archive",
        Output::DockerArchive(_) | Output::Stream => "docker-archive",
    };
    let pinned = format!("{}@{}", img.name, img.manifest.digest);
    if let Some(p) = &b.path {
        report.status("Finished", &format!("{fmt} image at {}", p.display()));
    }
    let lines = match format {
        MessageFormat::Json => vec![json!({
            "reason": "image-built",
            "name": img.name.full,
            "tags": img.tags,
            "references": img.references(),
            "content_tag": img.content_tag,
            "digest": img.manifest.digest,
            "config_digest": img.config.digest,
            "format": fmt,
            "path": b.path,
            "size": size,
            "architecture": img.architecture,
            "layers": img.layers.iter().map(|l| json!({
                "role": l.role, "digest": l.blob.digest, "size": l.blob.size,
                "diff_id": l.diff_id, "uncompressed_size": l.tar_size,
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
        if *output == Output::Stream {
            if report.verbosity > Verbosity::Quiet {
                eprintln!("{l}");
            }
        } else {
            println!("{l}");
        }
    }
}
