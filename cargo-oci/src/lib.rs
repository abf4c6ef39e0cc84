//! cargo-oci turns a Cargo package into a minimal, hardened, reproducible OCI image.
//!
//! The library is the whole tool; `cargo-oci`'s `main` only parses arguments. Data flows one way:
//! [`metadata`] → [`cargo_build`] → [`closure`] → [`plan`] → [`layer`] (through [`layer_cache`]
//! and [`compress`]) → [`image`] → [`sink`], wired together by [`pipeline`]. A base image
//! ([`source`]) goes under the layers ([`rebase`]); [`layering`] fits them to `max-layers`;
//! [`flatten`] gives the root filesystem for [`bundle`] and [`export`]; [`merge`] joins
//! docker-archives. [`push`] sends a built image to a registry through the protocol client in
//! [`registry`]. Around it: [`load`] (into a local engine), [`inspect`] (what an image holds and
//! why), [`template`] and [`init`] (starting packages).

pub mod bundle;
pub mod cargo_build;
pub mod cli;
pub mod closure;
pub mod compress;
pub mod error;
pub mod export;
pub mod flatten;
pub mod helper;
pub mod image;
pub mod init;
pub mod inspect;
pub mod layer;
pub mod layer_cache;
pub mod layering;
pub mod ldcache;
pub mod load;
pub mod merge;
pub mod metadata;
pub mod pipeline;
pub mod plan;
pub mod prefetch;
pub mod push;
pub mod rebase;
pub mod reference;
pub mod registry;
pub mod reporter;
pub mod sink;
pub mod source;
pub mod store;
pub mod template;
pub mod tools;
pub mod untrusted;
