//! cargo-oci turns a Cargo package into a minimal, hardened, reproducible OCI image.
//!
//! The library is the whole tool; `cargo-oci`'s `main` only parses arguments. Data flows one way:
//! [`metadata`] → [`cargo_build`] → [`closure`] → [`plan`] → [`layer`] → [`image`] → [`sink`],
//! wired together by [`pipeline`]. [`push`] sends a built image to a registry through the
//! protocol client in [`registry`].

pub mod cargo_build;
pub mod cli;
pub mod closure;
pub mod error;
pub mod helper;
pub mod image;
pub mod layer;
pub mod ldcache;
pub mod metadata;
pub mod pipeline;
pub mod plan;
pub mod push;
pub mod reference;
pub mod registry;
pub mod reporter;
pub mod sink;
pub mod store;
