//! Cargo's metadata to a validated description of the image: what goes in it and how to build
//! it. Reads `cargo metadata`, the package directory and the environment; writes nothing but
//! the per-machine cache's record of the package list.
//!
//! `raw` (the keys as written) → `validate` (single values) and `paths` (image paths) →
//! `resolve` (→ [`ImageSpec`]); `package` picks the packages and binaries, as cargo does;
//! `workspace` adds the workspace's defaults and the registry prefix; `env` reads the environment.
//! `package_list` keeps cargo's package list in the per-machine cache under the `fingerprint`
//! of what cargo read for it.

pub mod env;
pub mod fingerprint;
pub mod package;
pub mod package_list;
pub mod paths;
pub mod raw;
pub mod resolve;
pub mod spec;
pub mod tags;
pub mod validate;
pub mod workspace;

pub use package::{cargo_metadata, default_name, select_packages, Selection};
pub use resolve::image_specs;
pub use spec::*;
pub use workspace::workspace_defaults;
