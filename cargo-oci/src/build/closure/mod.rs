//! Resolves the dynamic-library closure of ELF executables the way glibc's `ld.so` would, and says where each file must sit in the image.
//!
//! For every executable the interpreter (`PT_INTERP`) and then its
//! `DT_NEEDED` entries are resolved breadth-first, in the order glibc's loader
//! uses (`elf/dl-load.c`, `_dl_map_object`):
//!
//! 1. `DT_RPATH` of the requesting object, then of the object that loaded it,
//!    and so on up to the executable — only if the requesting object has no
//!    `DT_RUNPATH`;
//! 2. `DT_RUNPATH` of the requesting object only;
//! 3. `ld.so.cache` ([`ldcache`]);
//! 4. the default directories (`/lib/<triplet>`, `/usr/lib/<triplet>`,
//!    `/lib64`, `/usr/lib64`, `/lib`, `/usr/lib`).
//!
//! Steps 3 and 4 are skipped for an object linked with `-z nodeflib`. A
//! candidate only counts if it is an ELF file of the requesting object's
//! class, machine and byte order; others are skipped as the loader does. A name
//! is resolved once per process: a later request for the same name, or for the
//! `DT_SONAME` of an object already loaded (e.g. `ld-linux-x86-64.so.2`, needed
//! by libc and satisfied by the interpreter), reuses that object.
//!
//! Every absolute search path is looked up under [`ClosureOptions::sysroot`];
//! symlinks inside a sysroot are followed as if it were `/` (an absolute link
//! target stays inside the sysroot). The *image path* of a library is the path
//! the search produced, not canonicalised (`/lib/x86_64-linux-gnu/libc.so.6`
//! stays that even though `/lib` is a symlink on the host). An `ld.so.cache`
//! hit outside the default directories is moved next to `libc.so.6`, since the
//! image has no cache; [`Object::relocated_from`] records that.
//!
//! Each executable is resolved as its own process would resolve it (its own
//! `RPATH` chain), and the results are merged by image path.

use std::fmt;
use std::io;
use std::path::PathBuf;

mod elf;
pub mod ldcache;
mod paths;
mod resolve;
#[cfg(test)]
mod tests;

pub use elf::inspect;
pub use resolve::resolve;

use ldcache::LdCacheError;

/// A program to package: where it is on the host and where it goes in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executable {
    /// The file on the host (e.g. `target/release/hello`).
    pub host_path: PathBuf,
    /// Absolute path in the image, e.g. `/bin/hello`; `$ORIGIN` is expanded from it.
    pub image_path: String,
}

/// How to search for libraries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosureOptions {
    /// Root of the target file system: `/` normally, or a cross sysroot.
    /// Prefixed to every absolute search path.
    pub sysroot: PathBuf,
    /// `dlopen()`ed libraries, by soname (`libnss_dns.so.2`) or absolute image
    /// path; resolved like `DT_NEEDED` entries of the first executable, with
    /// their own closure.
    pub extra_libs: Vec<String>,
    /// The `ld.so.cache` to consult (a host path); `None` to use none.
    /// A missing file is the same as `None`; a file that cannot be parsed is
    /// an error ([`ClosureError::LdCache`]).
    pub ld_cache: Option<PathBuf>,
}

impl ClosureOptions {
    /// Options for `sysroot`, using its `etc/ld.so.cache`.
    pub fn new(sysroot: impl Into<PathBuf>) -> Self {
        let sysroot = sysroot.into();
        let ld_cache = Some(sysroot.join("etc/ld.so.cache"));
        ClosureOptions {
            sysroot,
            extra_libs: Vec::new(),
            ld_cache,
        }
    }
}

impl Default for ClosureOptions {
    /// Sysroot `/`, cache `/etc/ld.so.cache`, no extra libraries.
    fn default() -> Self {
        ClosureOptions::new("/")
    }
}

/// Which step of the search found an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FoundVia {
    /// `PT_INTERP` of an executable.
    Interpreter,
    /// A `DT_RPATH` entry (as written, e.g. `$ORIGIN/../lib`).
    Rpath(String),
    /// A `DT_RUNPATH` entry (as written).
    Runpath(String),
    /// `ld.so.cache`.
    LdCache,
    /// One of the default directories (e.g. `/usr/lib/x86_64-linux-gnu`).
    DefaultDir(String),
    /// Listed in [`ClosureOptions::extra_libs`].
    Extra,
    /// A `DT_NEEDED` entry containing a `/`, used as a path directly.
    Direct,
}

impl fmt::Display for FoundVia {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FoundVia::Interpreter => f.write_str("PT_INTERP"),
            FoundVia::Rpath(dir) => write!(f, "RPATH {dir}"),
            FoundVia::Runpath(dir) => write!(f, "RUNPATH {dir}"),
            FoundVia::LdCache => f.write_str("ld.so.cache"),
            FoundVia::DefaultDir(dir) => write!(f, "default directory {dir}"),
            FoundVia::Extra => f.write_str("extra library"),
            FoundVia::Direct => f.write_str("DT_NEEDED path"),
        }
    }
}

/// One file of the closure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// Where to read it on the host (symlinks are followed when reading; for a
    /// sysroot other than `/`, symlinks inside the sysroot are already resolved).
    pub host_path: PathBuf,
    /// Absolute path in the image; the image gets a regular file there.
    pub image_path: String,
    /// The name as requested: soname, `DT_NEEDED` path or interpreter path.
    pub name: String,
    /// Image path of the object that first needed it.
    pub needed_by: String,
    /// Which search step found it.
    pub found_via: FoundVia,
    /// For an `ld.so.cache` hit outside the default directories: the cache's
    /// path, while [`Object::image_path`] is the directory of `libc.so.6`.
    pub relocated_from: Option<String>,
}

/// The libraries and interpreters the executables need (not the executables).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Closure {
    /// Sorted by `image_path`, no duplicate image paths.
    pub objects: Vec<Object>,
}

/// What the loader needs to know about an ELF file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElfInfo {
    /// ELFCLASS64.
    pub class64: bool,
    /// `e_machine` (62 = x86-64, 183 = AArch64, …).
    pub machine: u16,
    /// ELFDATA2LSB.
    pub little_endian: bool,
    /// `PT_INTERP`, if any.
    pub interpreter: Option<String>,
    /// `DT_NEEDED` entries, in order.
    pub needed: Vec<String>,
    /// `DT_RPATH` directories, split at `:`, empty entries dropped.
    pub rpath: Vec<String>,
    /// `DT_RUNPATH` directories, split at `:`, empty entries dropped.
    pub runpath: Vec<String>,
    /// No `PT_INTERP` and no `DT_NEEDED`: nothing to resolve.
    pub is_static: bool,
    /// `DT_SONAME`, if any.
    pub soname: Option<String>,
    /// `DF_1_NODEFLIB`: neither the cache nor the default directories are searched.
    pub nodeflib: bool,
}

/// Why a closure could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum ClosureError {
    /// A file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file is not ELF at all.
    #[error("{path} is not an ELF executable: cargo-oci packages Linux ELF binaries")]
    NotElf { path: PathBuf },
    /// A file is ELF but its headers are broken or truncated.
    #[error("{path} is a malformed ELF file: {reason}")]
    Malformed { path: PathBuf, reason: String },
    /// No search location had a usable file.
    #[error("{}", not_found_message(.name, .needed_by, .searched))]
    LibraryNotFound {
        name: String,
        needed_by: String,
        searched: Vec<PathBuf>,
    },
    /// An interpreter or a library given by path is ELF for another machine.
    #[error("{path} (needed by {needed_by}) is {found}, but {needed_by} is {expected}")]
    WrongArchitecture {
        path: PathBuf,
        needed_by: String,
        expected: String,
        found: String,
    },
    /// The ld.so.cache exists but cannot be parsed.
    #[error("cannot use the ld.so cache {path}: {source}")]
    LdCache {
        path: PathBuf,
        #[source]
        source: LdCacheError,
    },
    /// An image path is not absolute.
    #[error("image path {image_path:?} for {host_path} must be absolute")]
    RelativeImagePath {
        image_path: String,
        host_path: PathBuf,
    },
    /// Two different files would land at the same image path.
    #[error(
        "two different files would be placed at {image_path} in the image: {first} and {second}"
    )]
    ImagePathConflict {
        image_path: String,
        first: PathBuf,
        second: PathBuf,
    },
}

fn not_found_message(name: &str, needed_by: &str, searched: &[PathBuf]) -> String {
    let mut msg = format!("library {name} needed by {needed_by} was not found; searched:");
    if searched.is_empty() {
        msg.push_str(" nowhere (no search path applies)");
    }
    for path in searched {
        msg.push_str("\n  ");
        msg.push_str(&path.display().to_string());
    }
    msg.push_str("\nhint: install the package that provides it, or add the directory to RUNPATH");
    msg
}
