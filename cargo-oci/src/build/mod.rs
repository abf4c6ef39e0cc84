//! From a resolved configuration to an image in the blob store: cargo, the contract helper, the
//! ELF closure, the layer plan, layer writing with its cache, the base image underneath. Ends at
//! a built image in the store; where it goes next is the sinks' job.

pub mod assemble;
pub mod cargo;
pub mod closure;
pub mod deb_sysroot;
pub mod helper;
pub mod layer_cache;
pub mod layer_writer;
pub mod layering;
pub mod package;
pub mod pipeline;
pub mod plan;
pub mod rebase;
pub mod sbom;
pub mod target;
pub mod tools;
