//! Cargo's metadata to a validated description of the image: what goes in it and how to build
//! it. Reads `cargo metadata`, the package directory and the environment; writes nothing.
//!
//! `raw` (the keys as written) → `validate` (single values) and `paths` (image paths) →
//! `resolve` (→ [`ImageSpec`]); `package` picks the package and binary; `env` reads the
//! environment.

pub mod env;
pub mod package;
pub mod paths;
pub mod raw;
pub mod resolve;
pub mod spec;
pub mod tags;
pub mod validate;

pub use package::{cargo_metadata, default_name, prefetch_revision, select_packages, Selection};
pub use resolve::{image_specs, workspace_defaults};
pub use spec::*;
