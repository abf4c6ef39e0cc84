//! The command line: clap definitions for `cargo oci …`, turned into pipeline requests, and the
//! printing of results (stdout: the result only; stderr: everything for humans).

use std::ffi::OsString;
use std::io::Read;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::build::cargo::CargoFlags;
use crate::build::pipeline::{BuildRequest, Configured};
use crate::commands::build::{build_and_deliver, Made};
use crate::commands::{init, inspect, template};
use crate::config::Selection;
use crate::oci::compress::Codec;
use crate::oci::reference::ImageName;
use crate::registry::auth::{Credential, Secret};
use crate::registry::ClientOptions;
use crate::sink::load;
use crate::sink::push::{PushRequest, Pushed, Transfer};
use crate::sink::Format;
use crate::sink::{Delivered, Output, Sink};
use crate::util::error::UsageError;
use crate::util::reporter::{Reporter, Verbosity};

/// Writes a result to stdout. A reader that went away (`| head`) has all it wanted: the command
/// ends quietly instead of panicking; any other write error is reported.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        if let Err(e) = write!(stdout, $($arg)*).and_then(|_| stdout.flush()) {
            stdout_failed(e);
        }
    }};
}

/// [`out!`] with a newline.
macro_rules! outln {
    ($($arg:tt)*) => {{
        out!("{}\n", format_args!($($arg)*))
    }};
}

fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write the result to stdout: {e}");
    std::process::exit(1);
}

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
    /// Build the package (or reuse the build) and push its image to the registry in `name`.
    Push(PushArgs),
    /// Build the package and write an OCI runtime bundle (config.json + rootfs/) for `runc run`.
    Bundle(BundleArgs),
    /// Build the package and write its flattened root filesystem as a tar (for `podman import`).
    Export(ExportArgs),
    /// Merge docker-archives into one that `docker load` / `podman load` read as several images.
    Merge(MergeArgs),
}

#[derive(Debug, Args)]
pub struct BundleArgs {
    /// The bundle directory to write (absent, empty, or an earlier bundle).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Make the container's root filesystem read-only.
    #[arg(long)]
    pub readonly: bool,
    #[command(flatten)]
    pub image: ImageArgs,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The tar file to write.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub image: ImageArgs,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The merged docker-archive to write.
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// The docker-archives to merge, in order.
    #[arg(value_name = "ARCHIVE", required = true)]
    pub inputs: Vec<PathBuf>,
    #[command(flatten)]
    pub common: Common,
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

/// What every command that makes an image takes: cargo's options, the image's, and how to talk.
#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(flatten)]
    pub cargo: CargoArgs,
    #[command(flatten)]
    pub common: Common,
    /// Package what is already in target/ instead of running cargo build.
    #[arg(long)]
    pub no_build: bool,
    /// Also build the debug variant (tags `<tag>-debug`), as `debug = true` does.
    #[arg(long)]
    pub debug: bool,
    /// Another tag (repeatable), besides the configured ones.
    #[arg(long = "tag", short = 't', value_name = "TAG")]
    pub tags: Vec<String>,
    /// Layer compression (gzip: read by every runtime; zstd: about twice as fast).
    #[arg(long, value_enum, default_value_t)]
    pub compression: Codec,
}

impl ImageArgs {
    /// The pipeline request for these options.
    fn request(&self) -> BuildRequest {
        BuildRequest {
            selection: self.cargo.selection(&self.tags),
            cargo: self.cargo.flags(&self.common),
            no_build: self.no_build,
            debug: self.debug,
            compression: self.compression,
        }
    }
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// Output format.
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Output path (a directory for `oci`, a file for the archives).
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Write a docker-archive to stdout, for `| docker load` or `| podman load`.
    #[arg(long)]
    pub stream: bool,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// Push to this name (`host[:port]/path/repo`) instead of the configured `name`.
    #[arg(long, value_name = "NAME")]
    pub to: Option<String>,
    /// User name for the registry (the password comes from --password-stdin).
    #[arg(short, long, value_name = "USER", requires = "password_stdin")]
    pub username: Option<String>,
    /// Read the registry password from stdin.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
    /// Allow plain HTTP for this registry host when HTTPS does not answer (loopback hosts
    /// always may; repeatable).
    #[arg(long, value_name = "HOST[:PORT]")]
    pub insecure_registry: Vec<String>,
    /// Also trust the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE", value_parser = crate::sink::push::existing_file)]
    pub ca_file: Option<PathBuf>,
    /// Blobs sent at the same time.
    #[arg(short, long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=32))]
    pub jobs: u16,
    /// Blobs larger than this go up in chunks of this size (bytes, or with K, M, G).
    #[arg(long, value_name = "SIZE", default_value = "16M", value_parser = crate::sink::push::parse_size)]
    pub chunk_size: u64,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// The engine to load into (default: Docker if it answers, else podman).
    #[arg(long, value_enum)]
    pub runtime: Option<load::Runtime>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub image: ImageArgs,
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
            let output = Output::from_options(a.format, a.output.clone(), a.stream)?;
            build_to(&a.image, |conf| output.sink(&conf.default_layout()))
        }
        Command::Bundle(a) => build_to(&a.image, |_| {
            Box::new(crate::sink::Bundle {
                dir: a.dir.clone(),
                readonly: a.readonly,
            })
        }),
        Command::Export(a) => build_to(&a.image, |_| Box::new(crate::sink::Export(a.file.clone()))),
        Command::Merge(a) => {
            let report = a.common.reporter();
            let n = crate::commands::merge::merge(&a.inputs, &a.output)?;
            report.status(
                "Finished",
                &format!(
                    "{n} images from {} archives in {}",
                    a.inputs.len(),
                    a.output.display()
                ),
            );
            match a.common.message_format {
                MessageFormat::Json => outln!(
                    "{}",
                    json!({"reason": "merged", "path": a.output, "images": n})
                ),
                MessageFormat::Human => outln!("{}", a.output.display()),
            }
            Ok(())
        }
        Command::Load(a) => {
            let report = a.image.common.reporter();
            // Find the engine first: a missing one costs no build.
            let (runtime, version) = load::detect(a.runtime, &report)?;
            let engine = load::Engine {
                runtime,
                version: version.clone(),
            };
            let made = build_and_deliver(
                &a.image.request(),
                |_| Ok(vec![Box::new(engine) as Box<dyn Sink>]),
                &report,
            )?;
            let said = match made.delivered.first() {
                Some((_, Delivered::Engine { said })) => said.clone(),
                _ => String::new(),
            };
            let built = &made.built;
            let images = built.images();
            let references: Vec<String> = images.iter().flat_map(|i| i.references()).collect();
            match a.image.common.message_format {
                MessageFormat::Json => outln!(
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
                MessageFormat::Human => references.iter().for_each(|r| outln!("{r}")),
            }
            Ok(())
        }
        Command::Inspect(a) => {
            let report = a.image.common.reporter();
            let built = build_and_deliver(&a.image.request(), |_| Ok(Vec::new()), &report)?.built;
            if a.json || a.image.common.message_format == MessageFormat::Json {
                outln!("{}", inspect::to_json(&built));
            } else {
                out!("{}", inspect::to_text(&built));
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
                MessageFormat::Json => outln!(
                    "{}",
                    json!({
                        "reason": "package-created",
                        "name": made.name,
                        "path": made.path,
                        "image": made.image,
                    })
                ),
                MessageFormat::Human => outln!("{}", made.path.display()),
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
                MessageFormat::Json => outln!(
                    "{}",
                    json!({
                        "reason": "metadata-added",
                        "manifest": done.manifest,
                        "package": done.package,
                        "dry_run": done.dry_run,
                        "block": done.block,
                    })
                ),
                MessageFormat::Human if a.dry_run => out!("{}", done.block),
                MessageFormat::Human => outln!("{}", done.manifest.display()),
            }
            Ok(())
        }
        Command::Push(a) => {
            let report = a.image.common.reporter();
            let made = build_and_deliver(
                &a.image.request(),
                |conf| Ok(vec![Box::new(push_request(&a, conf)?) as Box<dyn Sink>]),
                &report,
            )?;
            for (_, delivered) in &made.delivered {
                if let Delivered::Registry(pushed) = delivered {
                    for p in pushed {
                        print_pushed(p, a.image.common.message_format, &report);
                    }
                }
            }
            Ok(())
        }
    }
}

fn push_request(a: &PushArgs, conf: &Configured) -> Result<PushRequest> {
    let destination =
        a.to.as_deref()
            .map(|t| {
                ImageName::parse(t).map_err(|m| {
                    UsageError::new(format!("--to: {m}")).hint("use host[:port]/path/repo")
                })
            })
            .transpose()?;
    let credential = match &a.username {
        Some(username) if a.password_stdin => {
            let mut password = String::new();
            std::io::stdin()
                .read_to_string(&mut password)
                .map_err(|e| {
                    UsageError::new(format!("cannot read the password from stdin: {e}"))
                })?;
            let password = password.trim_end_matches(['\n', '\r']).to_string();
            if password.is_empty() {
                return Err(UsageError::new("--password-stdin: stdin held no password")
                    .hint("pipe the password in: `echo \"$PASSWORD\" | cargo oci push --username USER --password-stdin`")
                    .into());
            }
            Some(Credential {
                secret: Secret::Basic {
                    username: username.clone(),
                    password,
                },
                source: "--password-stdin".into(),
            })
        }
        _ => None,
    };
    Ok(PushRequest {
        destination,
        credential,
        client: ClientOptions {
            insecure_registries: a.insecure_registry.clone(),
            ca_file: a.ca_file.clone(),
            ..ClientOptions::default()
        },
        jobs: usize::from(a.jobs),
        chunk_size: a.chunk_size,
        cache_dir: conf.oci_dir(),
    })
}

fn print_pushed(p: &Pushed, format: MessageFormat, report: &Reporter) {
    let img = &p.image;
    let pinned = format!("{}@{}", p.name, img.manifest.digest);
    report.status(
        "Pushed",
        &format!(
            "{} ({}…): {} uploaded ({}), {} mounted, {} skipped",
            p.name,
            &img.manifest.digest[..19.min(img.manifest.digest.len())],
            p.count(Transfer::Uploaded),
            crate::util::reporter::bytes(p.uploaded_bytes),
            p.count(Transfer::Mounted),
            p.count(Transfer::Skipped)
        ),
    );
    match format {
        MessageFormat::Json => outln!(
            "{}",
            json!({
                "reason": "image-pushed",
                "name": p.name.full,
                "registry": p.name.registry,
                "repository": p.name.repository,
                "digest": img.manifest.digest,
                "config_digest": img.config.digest,
                "tags": img.tags,
                "references": img.tags.iter().map(|t| p.name.with_tag(t)).collect::<Vec<_>>(),
                "size": img.layers.iter().map(|l| l.blob.size).sum::<u64>() + img.config.size,
                "uploaded_bytes": p.uploaded_bytes,
                "blobs": {
                    "uploaded": p.count(Transfer::Uploaded),
                    "mounted": p.count(Transfer::Mounted),
                    "skipped": p.count(Transfer::Skipped),
                    "each": p.blobs.iter().map(|(d, t)| json!({
                        "digest": d,
                        "transfer": format!("{t:?}").to_lowercase(),
                    })).collect::<Vec<_>>(),
                },
            })
        ),
        MessageFormat::Human => outln!("{pinned}"),
    }
}

/// Builds and delivers to the one sink `sink` names, then prints the result.
fn build_to(image: &ImageArgs, sink: impl FnOnce(&Configured) -> Box<dyn Sink>) -> Result<()> {
    let report = image.common.reporter();
    let made = build_and_deliver(&image.request(), |conf| Ok(vec![sink(conf)]), &report)?;
    print_built(&made, image.common.message_format, &report);
    Ok(())
}

fn print_built(made: &Made, format: MessageFormat, report: &Reporter) {
    let b = &made.built;
    let img = &b.image;
    let size: u64 = img.layers.iter().map(|l| l.blob.size).sum();
    let (fmt, delivered) = match made.delivered.first() {
        Some((kind, d)) => (*kind, d.clone()),
        None => ("none", Delivered::Stdout),
    };
    let path = match &delivered {
        Delivered::Path(p) => Some(p.clone()),
        _ => None,
    };
    let stream = matches!(delivered, Delivered::Stdout);
    let pinned = format!("{}@{}", img.name, img.manifest.digest);
    if let Some(p) = &path {
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
            "path": path,
            "size": size,
            "architecture": img.architecture,
            "layers": img.layers.iter().map(|l| json!({
                "role": l.role, "digest": l.blob.digest, "size": l.blob.size,
                "diff_id": l.diff_id, "uncompressed_size": l.tar_size,
                "media_type": l.media_type, "reused": l.reused,
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
        if stream {
            if report.verbosity > Verbosity::Quiet {
                eprintln!("{l}");
            }
        } else {
            outln!("{l}");
        }
    }
}
