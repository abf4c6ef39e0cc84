//! cargo-oci turns a Cargo package into a minimal, hardened, reproducible OCI image.
//!
//! The library is the whole tool; `cargo-oci`'s `main` only parses arguments. Data flows one way:
//! [`metadata`] → [`cargo_build`] → [`closure`] → [`plan`] → [`layer`] → [`image`] → [`sink`],
//! wired together by [`pipeline`]. Around it: [`load`] (into a local engine), [`inspect`]
//! (what an image holds and why), [`template`] and [`init`] (starting packages).

pub mod cargo_build;
pub mod cli;
pub mod closure;
pub mod error;
pub mod helper;
pub mod image;
pub mod init;
pub mod inspect;
pub mod layer;
pub mod ldcache;
pub mod load;
pub mod metadata;
pub mod pipeline;
pub mod plan;
pub mod reference;
pub mod reporter;
pub mod sink;
pub mod store;
pub mod template;
pub mod tools;
