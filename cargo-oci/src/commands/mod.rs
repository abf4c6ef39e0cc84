//! The commands that are more than "build, then a sink": inspecting a build, joining archives,
//! joining pushed platforms into one index, starting a package, cleaning the caches.

pub mod build;
pub mod clean;
pub mod init;
pub mod inspect;
pub mod join;
pub mod merge;
pub mod template;
