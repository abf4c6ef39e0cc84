//! The bottom layer: what every other layer uses and nothing of images: user-facing errors and
//! exit codes, human messages on stderr, background probes of the environment, sealed cache records.

pub mod error;
pub mod fs;
pub mod prefetch;
pub mod reporter;
pub mod sealed;
