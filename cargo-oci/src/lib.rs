//! cargo-oci turns a Cargo package into a minimal, hardened, reproducible OCI image.
//!
//! The library is the whole tool; `cargo-oci`'s `main` only parses arguments. The modules are
//! layers, each importing only those below it (`ARCHITECTURE.md` is the map):
//!
//! - [`util`]: errors and exit codes, messages, background probes;
//! - [`oci`]: the image vocabulary (store, codecs, layers, images, names, flattening);
//! - [`registry`]: the distribution-API client;
//! - [`source`]: base images read from a layout, an archive or a registry;
//! - [`config`]: Cargo metadata to the image's description;
//! - [`build`]: cargo, closure, plan, layers: ends at a built image in the store;
//! - [`sink`]: where a built image goes (layout, archives, stream, engine, registry, bundle,
//!   rootfs);
//! - [`commands`] and [`cli`]: the commands and their arguments.

pub(crate) mod build;
pub(crate) mod cli;
pub(crate) mod commands;
pub(crate) mod config;
pub(crate) mod oci;
pub(crate) mod registry;
pub(crate) mod sink;
pub(crate) mod source;
pub(crate) mod util;

pub use cli::{parse, report_error, run, Cli, MessageFormat};
pub use util::error::exit_code;

/// What `examples/bench_layer.rs` (the layer-writing benchmark of `scripts/bench.sh`) drives:
/// the layer writer on a plan of its own.
pub mod bench {
    pub use crate::build::layer_writer::write_layer;
    pub use crate::build::plan::{Content, Entry, LayerPlan};
    pub use crate::oci::compress::{Codec, Compression};
    pub use crate::oci::store::Store;
}

#[cfg(test)]
mod layering_tests;
