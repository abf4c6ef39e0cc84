//! The validated description of the image, [`ImageSpec`]: what every later stage works from.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::oci::reference::ImageName;

/// When the image says it was created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// Seconds since the Unix epoch (reproducible).
    Epoch(u64),
    /// The time of the build (not reproducible; an explicit opt-out).
    Now,
}

/// How to build the program the image carries: the package, its binary, where cargo works.
#[derive(Debug, Clone, Default)]
pub struct BuildSpec {
    /// The package's name.
    pub package: String,
    pub manifest_path: PathBuf,
    /// The workspace's own Cargo.toml first, then every member's: what cargo's crate
    /// resolution reads besides Cargo.lock (which lies beside the first).
    pub workspace_manifests: Vec<PathBuf>,
    pub package_dir: PathBuf,
    pub target_directory: PathBuf,
    /// cargo's id of the package (which artifacts of a build are its own).
    pub package_id: String,
    /// How `cargo build -p` names exactly this package: its id (`path+file:///...#1.2.0`) when
    /// cargo writes ids as package ID specs, else `name@version`.
    pub package_spec: String,
    /// The cargo profile from the metadata (`profile`); the command line overrides it.
    pub profile: Option<String>,
    /// The package's features turned on (`features`).
    pub features: Vec<String>,
    /// Other binaries of the package installed in `/bin` next to the service (`extra-bins`).
    pub extra_bins: Vec<String>,
    /// The binary that is the service.
    pub bin: String,
    /// The metadata keys (top level) whose value comes from `[workspace.metadata.oci]`.
    pub keys_from_workspace: Vec<String>,
}

impl BuildSpec {
    /// Where the metadata key `key` (`files[0]`, `debug.inputs`, ...) was written, for errors
    /// about its value: `FILE: `TABLE.KEY``, the workspace's Cargo.toml and
    /// `workspace.metadata.oci` for a value from there, else the package's.
    pub fn key_place(&self, key: &str) -> String {
        let top = key.split(['[', '.']).next().unwrap_or(key);
        match self.workspace_manifests.first() {
            Some(ws) if self.keys_from_workspace.iter().any(|k| k == top) => {
                format!("{}: `workspace.metadata.oci.{key}`", ws.display())
            }
            _ => format!(
                "{}: `package.metadata.oci.{key}`",
                self.manifest_path.display()
            ),
        }
    }
}

/// What the image's config tells the runtime: how to start the process and as whom.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub user: u32,
    pub group: u32,
    pub workdir: String,
    pub ports: Vec<String>,
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// The directory whose git HEAD names the `revision` label when its work tree is clean
    /// (asked in the background, and waited for only when the config is written); `None` when
    /// the metadata sets that label.
    pub revision_from: Option<PathBuf>,
    pub created: Created,
    /// The signal that asks the service to stop (`StopSignal`: `SIGINT`, ...); `None`: the
    /// runtime's default, SIGTERM.
    pub stop_signal: Option<String>,
}

/// Everything the image is made from, validated: how to build its program ([`BuildSpec`]), its
/// names, what its config says ([`RuntimeConfig`]), and what goes into its layers (the rest).
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub build: BuildSpec,
    pub name: ImageName,
    /// Whether `name` comes from the metadata (else it is the default: the package name).
    pub name_configured: bool,
    pub tags: Vec<String>,
    pub runtime: RuntimeConfig,
    pub extra_libs: Vec<String>,
    pub ca_certificates: bool,
    /// Timestamp of every file in the layers (SOURCE_DATE_EPOCH or 1).
    pub mtime: u64,
    /// The base image the layers go on (`from`).
    pub from: Option<crate::source::BaseRef>,
    /// At most this many layers, the base's included (`max-layers`, default 100).
    pub max_layers: usize,
    pub live: Option<Probe>,
    pub ready: Option<Probe>,
    /// Host programs copied with their closure, on the runtime PATH: absolute paths (relative
    /// ones resolved against the package directory) or names looked up on PATH.
    pub runtime_inputs: Vec<String>,
    /// The debug variant, when asked for.
    pub debug: Option<DebugSpec>,
    pub files: Vec<FileSpec>,
    pub perms: Vec<PermSpec>,
    /// The entrypoint runs the service as a child: forwards signals, reaps zombies.
    pub init: bool,
    /// Whether the images also get the content tag (`content-tag`, default true).
    pub content_tag: bool,
    /// The image carries what scanners read: dpkg records, copyright files, os-release.
    pub scanner_metadata: bool,
    /// `platforms`: the Rust targets to build one image each for (empty: one image, for
    /// cargo's default target).
    pub targets: Vec<String>,
    /// `sysroots`: the file system of a Rust target, where its closure is resolved (absolute).
    pub sysroots: std::collections::BTreeMap<String, PathBuf>,
    /// `sign-key`: the key `push` signs with unless `--sign` names one (absolute).
    pub sign_key: Option<PathBuf>,
}

impl ImageSpec {
    /// The package's other binaries installed in `/bin` and built along with the service: the
    /// probes (`bin = ...`) and `extra-bins`.
    pub fn bins_along(&self) -> Vec<String> {
        let mut v: Vec<String> = [&self.live, &self.ready]
            .into_iter()
            .flatten()
            .filter_map(|p| match &p.kind {
                ProbeKind::Bin(b) if *b != self.build.bin => Some(b.clone()),
                _ => None,
            })
            .chain(self.build.extra_bins.iter().cloned())
            .filter(|b| *b != self.build.bin)
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// A health probe: `/bin/live` or `/bin/ready`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub kind: ProbeKind,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    /// GET; healthy on 2xx and 3xx.
    Http(String),
    /// A TCP connect to `host:port`.
    Tcp(String),
    /// A command and its arguments; healthy on exit 0.
    Exec(Vec<String>),
    /// A bin target of the package, built along and installed at `/bin/<name>`.
    Bin(String),
}

/// The debug variant's settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DebugSpec {
    /// Host tools for the debug shell; `None`: busybox if the host has a static one, else bash
    /// and coreutils.
    pub inputs: Option<Vec<String>>,
    /// The debug variant's tags (placeholders expanded); `None`: `<tag>-debug` for every tag of
    /// the standard image.
    pub tags: Option<Vec<String>>,
}

/// A host file or directory of the package copied into the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// The source with every symlink resolved: inside [`ImageSpec::package_dir`].
    pub src: PathBuf,
    /// As written in the metadata, for messages.
    pub src_text: String,
    /// Absolute, normalized path in the image (`/srv/static`; `/` for a directory copied to the
    /// root).
    pub dest: String,
    pub mode: Option<u32>,
}

/// Modes and owners applied to entries as the layers are written.
#[derive(Debug, Clone)]
pub struct PermSpec {
    /// Absolute path in the image.
    pub path: String,
    /// When set, applies to `path` and everything under it whose absolute path matches.
    pub regex: Option<regex::Regex>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}
