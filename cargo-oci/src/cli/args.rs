//! The command line as clap reads it: every command's arguments, the options the image commands
//! share (cargo's, the image's, the registry's), and their translation into requests.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::build::cargo::{CargoFlags, Messages};
use crate::build::pipeline::BuildRequest;
use crate::build::sbom;
use crate::config::Selection;
use crate::oci::compress::Codec;
use crate::registry::ClientOptions;
use crate::sink::load;
use crate::sink::Format;
use crate::util::reporter::{Reporter, Verbosity};

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
    /// Make an ECDSA P-256 key pair for `push --sign` (cosign's signature format).
    Keygen(KeygenArgs),
    /// Join single-platform images pushed to one repository into one multi-platform index.
    Join(JoinArgs),
    /// Empty cargo-oci's caches in target/oci (the blob store keeps what the layouts there use).
    Clean(CleanArgs),
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// The private key to write (PKCS#8 PEM, mode 0600).
    #[arg(long, value_name = "FILE", default_value = "cargo-oci.key")]
    pub key: PathBuf,
    /// The public key to write (PEM), for verifiers.
    #[arg(long = "pub", value_name = "FILE", default_value = "cargo-oci.pub")]
    pub public: PathBuf,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Args)]
pub struct CleanArgs {
    /// Remove target/oci whole: layouts, blob store, layer cache.
    #[arg(long)]
    pub all: bool,
    /// Path to Cargo.toml.
    #[arg(long, value_name = "PATH")]
    pub manifest_path: Option<PathBuf>,
    /// Directory for all generated artifacts.
    #[arg(long, value_name = "DIRECTORY")]
    pub target_dir: Option<PathBuf>,
    #[command(flatten)]
    pub common: Common,
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

#[derive(Debug, Args)]
pub struct JoinArgs {
    /// The images to join, one per platform, pinned: `HOST/REPO@sha256:…` (one repository).
    #[arg(value_name = "IMAGE@DIGEST", required = true)]
    pub inputs: Vec<String>,
    /// Tag the index (repeatable); without one, the index is pushed by digest only.
    #[arg(short, long, value_name = "TAG")]
    pub tag: Vec<String>,
    /// The platforms the index must hold, exactly (`linux/amd64,linux/arm64`).
    #[arg(long, value_name = "OS/ARCH", value_delimiter = ',')]
    pub platform: Vec<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
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

/// When stderr is coloured (as cargo's `--color`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            ColorChoice::Auto => "auto",
            ColorChoice::Always => "always",
            ColorChoice::Never => "never",
        }
    }
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
    /// Coloring: auto, always, never (default: $CARGO_TERM_COLOR, else auto; passed to cargo).
    #[arg(
        long,
        value_enum,
        value_name = "WHEN",
        env = "CARGO_TERM_COLOR",
        global = true
    )]
    pub color: Option<ColorChoice>,
}

/// The `cargo build` options cargo-oci passes through.
#[derive(Debug, Args)]
pub struct CargoArgs {
    /// Package to make images of (repeatable; `name`, `name@1.2.0`, a glob: see `cargo help
    /// pkgid`). Default: the package of the current directory or --manifest-path.
    #[arg(short, long, value_name = "SPEC")]
    pub package: Vec<String>,
    /// Every member of the workspace with [package.metadata.oci] (with a binary, when the
    /// workspace metadata sets `all-binaries = true`).
    #[arg(long, conflicts_with = "package")]
    pub workspace: bool,
    /// Leave a package out of --workspace (repeatable).
    #[arg(long, value_name = "SPEC", requires = "workspace")]
    pub exclude: Vec<String>,
    /// Binary to put in the image (default: `bins` or `bin` in metadata, else the only binary).
    #[arg(long, value_name = "NAME")]
    pub bin: Option<String>,
    /// Path to Cargo.toml.
    #[arg(long, value_name = "PATH")]
    pub manifest_path: Option<PathBuf>,
    /// Build for the target triple; repeated, one image per target, joined in an OCI index.
    #[arg(long, value_name = "TRIPLE")]
    pub target: Vec<String>,
    /// Build for these OCI platforms (`linux/amd64,linux/arm64`), joined in an OCI index.
    /// With one image output (load, --stream, docker-archive, bundle, export): the platform
    /// it takes.
    #[arg(long, value_name = "OS/ARCH", value_delimiter = ',')]
    pub platform: Vec<String>,
    /// Build with the release profile (the default, unless `profile` in the metadata says
    /// otherwise).
    #[arg(short, long)]
    pub release: bool,
    /// Build with the dev profile (unoptimized, as plain `cargo build`).
    #[arg(long, conflicts_with = "release")]
    pub dev: bool,
    /// Build with the given profile.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["release", "dev"])]
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
    /// Number of parallel jobs of cargo (passed to `cargo build --jobs`).
    #[arg(short, long, value_name = "N", allow_hyphen_values = true)]
    pub jobs: Option<String>,
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
    /// The SBOM written beside the output (`<output>.spdx.json` / `.cdx.json`), or none.
    #[arg(long, value_name = "FORMAT", default_value = "spdx", value_parser = parse_sbom)]
    pub sbom: SbomChoice,
    /// Write the SBOM to this file instead (the debug variant's gets `-debug` before the suffix).
    #[arg(long, value_name = "FILE")]
    pub sbom_output: Option<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `--sbom spdx|cyclonedx|none`.
#[derive(Debug, Clone, Copy)]
pub struct SbomChoice(pub Option<sbom::Format>);

fn parse_sbom(s: &str) -> Result<SbomChoice, String> {
    match s {
        "none" => Ok(SbomChoice(None)),
        _ => <sbom::Format as ValueEnum>::from_str(s, true)
            .map(|f| SbomChoice(Some(f)))
            .map_err(|_| format!("`{s}` is not an SBOM format: use spdx, cyclonedx or none")),
    }
}

/// How registries are reached, for a base image (`from`) as for a push.
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Allow plain HTTP for this registry host when HTTPS does not answer (loopback hosts
    /// always may; repeatable).
    #[arg(long, value_name = "HOST[:PORT]")]
    pub insecure_registry: Vec<String>,
    /// Also trust the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE", value_parser = existing_file)]
    pub ca_file: Option<PathBuf>,
}

impl RegistryArgs {
    pub(super) fn options(&self) -> ClientOptions {
        ClientOptions {
            insecure_registries: self.insecure_registry.clone(),
            ca_file: self.ca_file.clone(),
            ..ClientOptions::default()
        }
    }
}

impl ImageArgs {
    /// The pipeline request for these options.
    pub(super) fn request(&self) -> BuildRequest {
        BuildRequest {
            selection: self.cargo.selection(&self.tags),
            cargo: self.cargo.flags(&self.common),
            no_build: self.no_build,
            debug: self.debug,
            compression: self.compression,
            registry: self.registry.options(),
            sbom: self.sbom.0,
            sbom_output: self.sbom_output.clone(),
            platforms: self.cargo.platform.clone(),
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
    /// Blobs sent at the same time.
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=32))]
    pub upload_jobs: u16,
    /// Blobs larger than this go up in chunks of this size (bytes, or with K, M, G).
    #[arg(long, value_name = "SIZE", default_value = "16M", value_parser = parse_size)]
    pub chunk_size: u64,
    /// Sign each pushed manifest with this ECDSA P-256 key (PEM), in cosign's format (instead
    /// of the metadata's `sign-key`).
    #[arg(long, value_name = "KEY", env = "CARGO_OCI_SIGN_KEY")]
    pub sign: Option<PathBuf>,
    /// Do not attach each image's SBOM to it in the registry (attached by default, as an OCI 1.1
    /// artifact, whenever there is an SBOM: `--sbom none` makes none).
    #[arg(long)]
    pub no_attach_sbom: bool,
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
        let r = Reporter::new(if self.quiet {
            Verbosity::Quiet
        } else if self.verbose > 0 {
            Verbosity::Verbose
        } else {
            Verbosity::Normal
        });
        match self.color {
            Some(ColorChoice::Always) => r.with_color(true),
            Some(ColorChoice::Never) => r.with_color(false),
            Some(ColorChoice::Auto) | None => r,
        }
    }
}

impl CargoArgs {
    pub(super) fn flags(&self, common: &Common) -> CargoFlags {
        CargoFlags {
            manifest_path: self.manifest_path.clone(),
            targets: self.target.clone(),
            release: self.release,
            dev: self.dev,
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
            color: common.color.map(|c| c.as_str().to_string()),
            jobs: self.jobs.clone(),
            messages: match common.message_format {
                MessageFormat::Json => Messages::Stdout,
                MessageFormat::Human => Messages::Hidden,
            },
        }
    }

    pub(super) fn selection(&self, tags: &[String]) -> Selection {
        Selection {
            packages: self.package.clone(),
            workspace: self.workspace,
            exclude: self.exclude.clone(),
            bin: self.bin.clone(),
            manifest_path: self.manifest_path.clone(),
            tags: tags.to_vec(),
        }
    }
}

/// Parses `--chunk-size`: bytes, or with a `K`/`M`/`G` (KiB, MiB, GiB) suffix.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 1 << 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{s}` is not a size: use bytes, or a number with K, M or G"))
}

/// Where `--ca-file` and friends point, checked early.
pub fn existing_file(p: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(p);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{p} is not a file"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("8M"), Ok(8 << 20));
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert!(parse_size("0").is_err());
        assert!(parse_size("lots").is_err());
    }
}
