//! Cargo's metadata to a validated description of the image: what goes in it and how to build
//! it. Reads `cargo metadata` and the environment; writes nothing.

pub mod metadata;
