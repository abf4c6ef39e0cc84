//! The image vocabulary, knowing nothing of Cargo or builds: the blob store, digests, codecs,
//! layers, images and names, and how layers flatten to a file tree. Everything above speaks it.

pub mod archive;
pub mod compress;
pub mod digest;
pub mod docker_archive;
pub mod flatten;
pub mod image;
pub mod index;
pub mod layer;
pub mod platform;
pub mod reference;
pub mod store;
pub mod untrusted;
