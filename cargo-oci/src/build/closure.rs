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
//! 3. `ld.so.cache` ([`crate::build::ldcache`]);
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

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use goblin::container::{Container, Ctx, Endian};
use goblin::elf::dynamic::{self, Dynamic};
use goblin::elf::header;
use goblin::elf::program_header::{self, ProgramHeader};
use goblin::elf::Elf;

use crate::build::ldcache::{LdCache, LdCacheError};

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

/// Reads the loader-relevant parts of the ELF file at `path`.
///
/// Only the ELF header, the program headers, `PT_INTERP`, `PT_DYNAMIC` and
/// the dynamic string table are read, so large binaries are cheap.
pub fn inspect(path: &Path) -> Result<ElfInfo, ClosureError> {
    let mut reader = Reader::open(path)?;
    let ident = reader.read_prefix(64)?;
    if ident.len() < 4 || &ident[..4] != header::ELFMAG {
        return Err(ClosureError::NotElf {
            path: path.to_path_buf(),
        });
    }
    let (class64, little_endian) = ident_class(&ident).map_err(|r| reader.malformed(r))?;
    let header_len = if class64 { 64 } else { 52 };
    if ident.len() < header_len {
        return Err(reader.malformed("truncated ELF header"));
    }
    let hdr = Elf::parse_header(&ident).map_err(|e| reader.malformed(e))?;
    let ctx = Ctx::new(
        if class64 {
            Container::Big
        } else {
            Container::Little
        },
        if little_endian {
            Endian::Little
        } else {
            Endian::Big
        },
    );

    let phnum = u64::from(hdr.e_phnum);
    let phent = ProgramHeader::size(ctx) as u64;
    if phnum > 0 && u64::from(hdr.e_phentsize) != phent {
        return Err(reader.malformed(format!(
            "program header size {} (expected {phent})",
            hdr.e_phentsize
        )));
    }
    let ph_bytes = reader.read_at(hdr.e_phoff, phnum * phent, "program headers")?;
    let phdrs =
        ProgramHeader::parse(&ph_bytes, 0, phnum as usize, ctx).map_err(|e| reader.malformed(e))?;

    let mut info = ElfInfo {
        class64,
        machine: hdr.e_machine,
        little_endian,
        ..ElfInfo::default()
    };

    if let Some(ph) = phdrs
        .iter()
        .find(|ph| ph.p_type == program_header::PT_INTERP)
    {
        let bytes = reader.read_at(ph.p_offset, ph.p_filesz, "PT_INTERP")?;
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        let interp = String::from_utf8(bytes[..end].to_vec())
            .map_err(|_| reader.malformed("PT_INTERP is not UTF-8"))?;
        if interp.is_empty() {
            return Err(reader.malformed("empty PT_INTERP"));
        }
        info.interpreter = Some(interp);
    }

    if let Some(ph) = phdrs
        .iter()
        .find(|ph| ph.p_type == program_header::PT_DYNAMIC)
    {
        let bytes = reader.read_at(ph.p_offset, ph.p_filesz, "PT_DYNAMIC")?;
        // Parse from the buffer just read: same header, offset 0.
        let mut local = ph.clone();
        local.p_offset = 0;
        let dyns = Dynamic::parse(&bytes, &[local], ctx)
            .map_err(|e| reader.malformed(e))?
            .map(|d| d.dyns)
            .unwrap_or_default();
        read_dynamic(&mut reader, &phdrs, &dyns, &mut info)?;
    }

    info.is_static = info.interpreter.is_none() && info.needed.is_empty();
    Ok(info)
}

fn ident_class(ident: &[u8]) -> Result<(bool, bool), String> {
    let class64 = match ident.get(header::EI_CLASS) {
        Some(&header::ELFCLASS32) => false,
        Some(&header::ELFCLASS64) => true,
        other => return Err(format!("unknown ELF class {other:?}")),
    };
    let little = match ident.get(header::EI_DATA) {
        Some(&header::ELFDATA2LSB) => true,
        Some(&header::ELFDATA2MSB) => false,
        other => return Err(format!("unknown ELF byte order {other:?}")),
    };
    Ok((class64, little))
}

/// Fills the string-valued dynamic entries of `info`.
fn read_dynamic(
    reader: &mut Reader,
    phdrs: &[ProgramHeader],
    dyns: &[dynamic::Dyn],
    info: &mut ElfInfo,
) -> Result<(), ClosureError> {
    let mut strtab_addr = None;
    let mut strsz = None;
    let mut needs_strings = false;
    for d in dyns {
        match d.d_tag {
            dynamic::DT_STRTAB => strtab_addr = Some(d.d_val),
            dynamic::DT_STRSZ => strsz = Some(d.d_val),
            dynamic::DT_FLAGS_1 => info.nodeflib = d.d_val & dynamic::DF_1_NODEFLIB != 0,
            dynamic::DT_NEEDED | dynamic::DT_RPATH | dynamic::DT_RUNPATH | dynamic::DT_SONAME => {
                needs_strings = true
            }
            _ => {}
        }
    }
    if !needs_strings {
        return Ok(());
    }
    let addr = strtab_addr.ok_or_else(|| reader.malformed("DT_NEEDED without DT_STRTAB"))?;
    // The string table address is a virtual address: map it through PT_LOAD.
    let (offset, in_segment) = phdrs
        .iter()
        .filter(|ph| ph.p_type == program_header::PT_LOAD)
        .find_map(|ph| {
            let delta = addr.checked_sub(ph.p_vaddr)?;
            (delta < ph.p_filesz).then(|| (ph.p_offset.checked_add(delta), ph.p_filesz - delta))
        })
        .and_then(|(off, avail)| Some((off?, avail)))
        .ok_or_else(|| {
            reader.malformed(format!("DT_STRTAB {addr:#x} is not in a PT_LOAD segment"))
        })?;
    let size = strsz.unwrap_or(in_segment).min(in_segment);
    let size = size.min(reader.len.saturating_sub(offset));
    let strtab = reader.read_at(offset, size, "dynamic string table")?;

    let string = |reader: &Reader, at: u64, what: &str| -> Result<String, ClosureError> {
        let rest = usize::try_from(at)
            .ok()
            .and_then(|at| strtab.get(at..))
            .ok_or_else(|| reader.malformed(format!("{what} string offset {at} out of range")))?;
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| reader.malformed(format!("{what} string is not terminated")))?;
        String::from_utf8(rest[..end].to_vec())
            .map_err(|_| reader.malformed(format!("{what} string is not UTF-8")))
    };
    for d in dyns {
        match d.d_tag {
            dynamic::DT_NEEDED => info.needed.push(string(reader, d.d_val, "DT_NEEDED")?),
            dynamic::DT_SONAME => info.soname = Some(string(reader, d.d_val, "DT_SONAME")?),
            dynamic::DT_RPATH => {
                split_path_list(&string(reader, d.d_val, "DT_RPATH")?, &mut info.rpath)
            }
            dynamic::DT_RUNPATH => {
                split_path_list(&string(reader, d.d_val, "DT_RUNPATH")?, &mut info.runpath)
            }
            _ => {}
        }
    }
    Ok(())
}

fn split_path_list(list: &str, out: &mut Vec<String>) {
    out.extend(list.split(':').filter(|s| !s.is_empty()).map(str::to_owned));
}

/// Bounds-checked reads from a file, with errors naming the file.
struct Reader {
    file: File,
    len: u64,
    path: PathBuf,
}

impl Reader {
    fn open(path: &Path) -> Result<Reader, ClosureError> {
        let io_err = |source| ClosureError::Io {
            path: path.to_path_buf(),
            source,
        };
        // Checked before opening: opening a FIFO would block.
        let meta = std::fs::metadata(path).map_err(io_err)?;
        if !meta.is_file() {
            return Err(io_err(io::Error::other("not a regular file")));
        }
        let file = File::open(path).map_err(io_err)?;
        Ok(Reader {
            file,
            len: meta.len(),
            path: path.to_path_buf(),
        })
    }

    fn malformed(&self, reason: impl fmt::Display) -> ClosureError {
        ClosureError::Malformed {
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    /// Up to `max` bytes from the start (fewer if the file is shorter).
    fn read_prefix(&mut self, max: u64) -> Result<Vec<u8>, ClosureError> {
        let mut buf = Vec::new();
        (&mut self.file)
            .take(max)
            .read_to_end(&mut buf)
            .map_err(|source| ClosureError::Io {
                path: self.path.clone(),
                source,
            })?;
        Ok(buf)
    }

    /// Exactly `len` bytes at `offset`; a range past the end is malformed.
    fn read_at(&mut self, offset: u64, len: u64, what: &str) -> Result<Vec<u8>, ClosureError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => {}
            _ => {
                return Err(self.malformed(format!(
                    "{what} at offset {offset:#x} (+{len:#x}) is past the end of the {}-byte file",
                    self.len
                )))
            }
        }
        let mut buf = vec![0; len as usize];
        self.file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.file.read_exact(&mut buf))
            .map_err(|source| ClosureError::Io {
                path: self.path.clone(),
                source,
            })?;
        Ok(buf)
    }
}

/// Class, machine and byte order of the ELF file at `path`, or `None` if it
/// is not a readable ELF file. Used to skip unusable search candidates.
fn probe(path: &Path) -> Option<(bool, u16, bool)> {
    let mut reader = Reader::open(path).ok()?;
    let ident = reader.read_prefix(64).ok()?;
    if ident.len() < 4 || &ident[..4] != header::ELFMAG {
        return None;
    }
    let (class64, little) = ident_class(&ident).ok()?;
    if ident.len() < if class64 { 64 } else { 52 } {
        return None;
    }
    let hdr = Elf::parse_header(&ident).ok()?;
    Some((class64, hdr.e_machine, little))
}

fn arch_of(info: &ElfInfo) -> (bool, u16, bool) {
    (info.class64, info.machine, info.little_endian)
}

fn describe_arch((class64, machine, little): (bool, u16, bool)) -> String {
    let name = match machine {
        header::EM_X86_64 => "x86-64".to_owned(),
        header::EM_386 => "i386".to_owned(),
        header::EM_AARCH64 => "AArch64".to_owned(),
        header::EM_ARM => "ARM".to_owned(),
        header::EM_RISCV => "RISC-V".to_owned(),
        header::EM_PPC64 => "PowerPC64".to_owned(),
        header::EM_S390 => "S/390".to_owned(),
        other => format!("machine {other}"),
    };
    format!(
        "{}-bit {}-endian {name}",
        if class64 { 64 } else { 32 },
        if little { "little" } else { "big" }
    )
}

/// The Debian multiarch triplet for an ELF class + machine.
fn triplet(info: &ElfInfo) -> Option<&'static str> {
    Some(match (info.machine, info.class64) {
        (header::EM_X86_64, true) => "x86_64-linux-gnu",
        (header::EM_X86_64, false) => "x86_64-linux-gnux32",
        (header::EM_386, false) => "i386-linux-gnu",
        (header::EM_AARCH64, true) => "aarch64-linux-gnu",
        (header::EM_ARM, false) => "arm-linux-gnueabihf",
        (header::EM_RISCV, true) => "riscv64-linux-gnu",
        (header::EM_PPC64, true) if info.little_endian => "powerpc64le-linux-gnu",
        (header::EM_PPC64, true) => "powerpc64-linux-gnu",
        (header::EM_S390, true) => "s390x-linux-gnu",
        _ => return None,
    })
}

/// The loader's default directories, in search order (image paths).
fn default_dirs(info: &ElfInfo) -> Vec<String> {
    let mut dirs = Vec::new();
    if let Some(t) = triplet(info) {
        dirs.push(format!("/lib/{t}"));
        dirs.push(format!("/usr/lib/{t}"));
    }
    if info.class64 {
        dirs.push("/lib64".to_owned());
        dirs.push("/usr/lib64".to_owned());
    }
    dirs.push("/lib".to_owned());
    dirs.push("/usr/lib".to_owned());
    dirs
}

/// `$LIB`, simplified: `lib64` on 64-bit x86 and AArch64, else `lib`.
fn dst_lib(info: &ElfInfo) -> &'static str {
    match (info.machine, info.class64) {
        (header::EM_X86_64 | header::EM_AARCH64, true) => "lib64",
        _ => "lib",
    }
}

/// `$PLATFORM`, simplified to the base platform name.
fn dst_platform(info: &ElfInfo) -> Option<&'static str> {
    Some(match info.machine {
        header::EM_X86_64 => "x86_64",
        header::EM_386 => "i686",
        header::EM_AARCH64 => "aarch64",
        header::EM_RISCV => "riscv64",
        header::EM_PPC64 if info.little_endian => "ppc64le",
        header::EM_PPC64 => "ppc64",
        header::EM_S390 => "s390x",
        _ => return None,
    })
}

/// An RPATH/RUNPATH entry after dynamic-string-token expansion.
enum Expanded {
    /// Starts with `$ORIGIN`: the rest, relative to the object's directory.
    Origin(String),
    /// An absolute directory (image terms).
    Absolute(String),
}

/// Expands `$ORIGIN`, `$LIB`, `$PLATFORM` (and the `${…}` forms). `None` if the
/// entry cannot be used: a relative directory, `$ORIGIN` not at the start, or
/// a token this machine has no value for.
fn expand_dst(entry: &str, info: &ElfInfo) -> Option<Expanded> {
    let mut out = String::new();
    let mut origin = false;
    let mut rest = entry;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        match name {
            "ORIGIN" if len > 0 => {
                if pos != 0 || !out.is_empty() {
                    return None;
                }
                origin = true;
            }
            "LIB" if len > 0 => out.push_str(dst_lib(info)),
            "PLATFORM" if len > 0 => out.push_str(dst_platform(info)?),
            _ => {
                // Not a known token: copied literally, as glibc does.
                out.push('$');
                rest = after;
                continue;
            }
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    if origin {
        Some(Expanded::Origin(out))
    } else if out.starts_with('/') {
        Some(Expanded::Absolute(out))
    } else {
        None
    }
}

/// Lexically normalises an absolute image path (`.`, `..`, `//`). `None` if relative.
fn normalize_image_path(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// Directory part of a normalised absolute image path (`""` for the root).
fn image_dir(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[..i],
        None => "",
    }
}

fn join_image(dir: &str, name: &str) -> String {
    normalize_image_path(&format!("{dir}/{name}")).unwrap_or_else(|| format!("/{name}"))
}

/// Resolves `rel` inside `root` like `chroot(root)` would: absolute symlink
/// targets and `..` never leave `root`.
fn resolve_in_root(root: &Path, rel: &Path) -> PathBuf {
    let mut pending: Vec<OsString> = Vec::new();
    push_components(&mut pending, rel);
    let mut resolved: Vec<OsString> = Vec::new();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&resolved);
        candidate.push(&part);
        let is_link = std::fs::symlink_metadata(&candidate)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false);
        if !is_link {
            resolved.push(part);
            continue;
        }
        hops += 1;
        let Ok(target) = std::fs::read_link(&candidate) else {
            resolved.push(part);
            continue;
        };
        if hops > 40 {
            // A loop: give up and let opening the path fail.
            resolved.push(part);
            resolved.extend(pending.drain(..).rev());
            break;
        }
        if target.has_root() {
            resolved.clear();
        }
        push_components(&mut pending, &target);
    }
    let mut out = root.to_path_buf();
    out.extend(resolved);
    out
}

/// Pushes the normal and `..` components of `path` onto `stack` so that they
/// pop in order.
fn push_components(stack: &mut Vec<OsString>, path: &Path) {
    let parts: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect();
    stack.extend(parts.into_iter().rev());
}

/// One loaded object during resolution of one executable.
struct Node {
    image_path: String,
    /// The host path as the search produced it (the base of its `$ORIGIN`).
    search_path: PathBuf,
    /// The host path to read.
    host_path: PathBuf,
    info: ElfInfo,
    /// The object whose request loaded this one (`l_loader`).
    loader: Option<usize>,
    name: String,
    needed_by: String,
    found_via: FoundVia,
    relocated_from: Option<String>,
}

/// A place to look for a library.
struct Candidate {
    image_path: String,
    search_path: PathBuf,
    via: FoundVia,
    from_cache: bool,
}

struct Resolver<'a> {
    opts: &'a ClosureOptions,
    sysroot_is_root: bool,
    cache: Option<LdCache>,
    infos: HashMap<PathBuf, ElfInfo>,
}

/// Resolves the closure of `executables` (see the module documentation).
pub fn resolve(executables: &[Executable], opts: &ClosureOptions) -> Result<Closure, ClosureError> {
    let sysroot_is_root = opts.sysroot.as_os_str().is_empty()
        || (opts.sysroot.has_root()
            && opts
                .sysroot
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::CurDir)));
    let mut resolver = Resolver {
        opts,
        sysroot_is_root,
        cache: None,
        infos: HashMap::new(),
    };
    if let Some(path) = &opts.ld_cache {
        let host = resolver.open_path(path);
        resolver.cache = LdCache::load(&host).map_err(|source| ClosureError::LdCache {
            path: path.clone(),
            source,
        })?;
    }

    let mut exe_paths: HashMap<String, PathBuf> = HashMap::new();
    for exe in executables {
        let image = normalize_image_path(&exe.image_path).ok_or_else(|| {
            ClosureError::RelativeImagePath {
                image_path: exe.image_path.clone(),
                host_path: exe.host_path.clone(),
            }
        })?;
        exe_paths
            .entry(image)
            .or_insert_with(|| exe.host_path.clone());
    }

    let mut merged: BTreeMap<String, Object> = BTreeMap::new();
    for (i, exe) in executables.iter().enumerate() {
        let extras: &[String] = if i == 0 { &opts.extra_libs } else { &[] };
        for node in resolver.resolve_executable(exe, extras)? {
            if let Some(exe_host) = exe_paths.get(&node.image_path) {
                if same_file(exe_host, &node.host_path) {
                    continue;
                }
                return Err(ClosureError::ImagePathConflict {
                    image_path: node.image_path,
                    first: exe_host.clone(),
                    second: node.host_path,
                });
            }
            if let Some(existing) = merged.get(&node.image_path) {
                if same_file(&existing.host_path, &node.host_path) {
                    continue;
                }
                return Err(ClosureError::ImagePathConflict {
                    image_path: node.image_path,
                    first: existing.host_path.clone(),
                    second: node.host_path,
                });
            }
            merged.insert(
                node.image_path.clone(),
                Object {
                    host_path: node.host_path,
                    image_path: node.image_path,
                    name: node.name,
                    needed_by: node.needed_by,
                    found_via: node.found_via,
                    relocated_from: node.relocated_from,
                },
            );
        }
    }
    Ok(Closure {
        objects: merged.into_values().collect(),
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

impl Resolver<'_> {
    /// All objects one executable's process loads, except the executable.
    fn resolve_executable(
        &mut self,
        exe: &Executable,
        extras: &[String],
    ) -> Result<Vec<Node>, ClosureError> {
        let info = self.inspect_cached(&exe.host_path)?;
        // Fallback for relocated cache hits; replaced by libc's directory below.
        let fallback = match triplet(&info) {
            Some(t) => format!("/lib/{t}"),
            None => "/lib".to_owned(),
        };
        let (nodes, names) = self.run(exe, extras, &fallback)?;
        let relocated = nodes.iter().any(|n| n.relocated_from.is_some());
        let libc_dir = names
            .get("libc.so.6")
            .map(|&i| &nodes[i])
            .filter(|n| n.relocated_from.is_none())
            .map(|n| image_dir(&n.image_path).to_owned());
        let nodes = match libc_dir {
            // Relocated objects' $ORIGIN depends on where they go: redo with libc's directory.
            Some(dir) if relocated && dir != fallback => self.run(exe, extras, &dir)?.0,
            _ => nodes,
        };
        Ok(nodes.into_iter().skip(1).collect())
    }

    /// Breadth-first resolution of one process; node 0 is the executable.
    fn run(
        &mut self,
        exe: &Executable,
        extras: &[String],
        reloc_dir: &str,
    ) -> Result<(Vec<Node>, HashMap<String, usize>), ClosureError> {
        let image_path = normalize_image_path(&exe.image_path).ok_or_else(|| {
            ClosureError::RelativeImagePath {
                image_path: exe.image_path.clone(),
                host_path: exe.host_path.clone(),
            }
        })?;
        let info = self.inspect_cached(&exe.host_path)?;
        let mut names: HashMap<String, usize> = HashMap::new();
        if let Some(soname) = &info.soname {
            names.insert(soname.clone(), 0);
        }
        let interp = info.interpreter.clone();
        let mut nodes = vec![Node {
            image_path: image_path.clone(),
            search_path: exe.host_path.clone(),
            host_path: exe.host_path.clone(),
            info,
            loader: None,
            name: image_path.clone(),
            needed_by: String::new(),
            found_via: FoundVia::Direct,
            relocated_from: None,
        }];

        if let Some(interp) = interp {
            let node = self.load_path(&nodes, 0, &interp, FoundVia::Interpreter)?;
            if let Some(soname) = &node.info.soname {
                names.entry(soname.clone()).or_insert(nodes.len());
            }
            names.insert(interp, nodes.len());
            nodes.push(node);
        }

        let mut cursor = 0;
        let mut extras_done = false;
        loop {
            while cursor < nodes.len() {
                // The interpreter's own dependencies are not loaded by it.
                if nodes[cursor].found_via != FoundVia::Interpreter {
                    let needed = nodes[cursor].info.needed.clone();
                    for name in &needed {
                        self.request(&mut nodes, &mut names, name, cursor, false, reloc_dir)?;
                    }
                }
                cursor += 1;
            }
            if extras_done || extras.is_empty() {
                break;
            }
            for name in extras {
                self.request(&mut nodes, &mut names, name, 0, true, reloc_dir)?;
            }
            extras_done = true;
        }
        Ok((nodes, names))
    }

    /// Resolves `name` requested by `nodes[requester]` unless already loaded.
    fn request(
        &mut self,
        nodes: &mut Vec<Node>,
        names: &mut HashMap<String, usize>,
        name: &str,
        requester: usize,
        extra: bool,
        reloc_dir: &str,
    ) -> Result<(), ClosureError> {
        if names.contains_key(name) {
            return Ok(());
        }
        let node = if name.contains('/') {
            let via = if extra {
                FoundVia::Extra
            } else {
                FoundVia::Direct
            };
            self.load_path(nodes, requester, name, via)?
        } else {
            self.search(nodes, requester, name, extra, reloc_dir)?
        };
        let index = nodes.len();
        if let Some(soname) = &node.info.soname {
            names.entry(soname.clone()).or_insert(index);
        }
        names.insert(name.to_owned(), index);
        nodes.push(node);
        Ok(())
    }

    /// Loads an object named by absolute path (interpreter, DT_NEEDED with `/`, extra path).
    fn load_path(
        &mut self,
        nodes: &[Node],
        requester: usize,
        name: &str,
        via: FoundVia,
    ) -> Result<Node, ClosureError> {
        let req = &nodes[requester];
        let Some(image_path) = normalize_image_path(name) else {
            // Relative to the process's working directory: unknowable here.
            return Err(ClosureError::LibraryNotFound {
                name: name.to_owned(),
                needed_by: req.image_path.clone(),
                searched: vec![PathBuf::from(name)],
            });
        };
        let search_path = self.sysroot_join(&image_path);
        let host_path = self.open_path(&search_path);
        let Some(arch) = probe(&host_path) else {
            if host_path.exists() {
                return Err(ClosureError::NotElf { path: host_path });
            }
            return Err(ClosureError::LibraryNotFound {
                name: name.to_owned(),
                needed_by: req.image_path.clone(),
                searched: vec![search_path],
            });
        };
        if arch != arch_of(&req.info) {
            return Err(ClosureError::WrongArchitecture {
                path: host_path,
                needed_by: req.image_path.clone(),
                expected: describe_arch(arch_of(&req.info)),
                found: describe_arch(arch),
            });
        }
        let info = self.inspect_cached(&host_path)?;
        Ok(Node {
            image_path,
            search_path,
            host_path,
            info,
            loader: Some(requester),
            name: name.to_owned(),
            needed_by: req.image_path.clone(),
            found_via: via,
            relocated_from: None,
        })
    }

    /// Searches for a bare soname in glibc's order.
    fn search(
        &mut self,
        nodes: &[Node],
        requester: usize,
        name: &str,
        extra: bool,
        reloc_dir: &str,
    ) -> Result<Node, ClosureError> {
        let req = &nodes[requester];
        let want = arch_of(&req.info);
        let mut searched: Vec<PathBuf> = Vec::new();
        for cand in self.candidates(nodes, requester, name) {
            if searched.contains(&cand.search_path) {
                continue;
            }
            searched.push(cand.search_path.clone());
            let host_path = self.open_path(&cand.search_path);
            if probe(&host_path) != Some(want) {
                continue;
            }
            let info = self.inspect_cached(&host_path)?;
            let mut image_path = cand.image_path;
            let mut relocated_from = None;
            if cand.from_cache {
                let in_default_dir = default_dirs(&req.info)
                    .iter()
                    .any(|d| d == image_dir(&image_path));
                let named_as_requested = image_path.rsplit('/').next() == Some(name);
                if !in_default_dir || !named_as_requested {
                    relocated_from = Some(image_path);
                    image_path = join_image(reloc_dir, name);
                }
            }
            return Ok(Node {
                image_path,
                search_path: cand.search_path,
                host_path,
                info,
                loader: Some(requester),
                name: name.to_owned(),
                needed_by: req.image_path.clone(),
                found_via: if extra { FoundVia::Extra } else { cand.via },
                relocated_from,
            });
        }
        Err(ClosureError::LibraryNotFound {
            name: name.to_owned(),
            needed_by: req.image_path.clone(),
            searched,
        })
    }

    /// Every place to look for `name`, in glibc's order.
    fn candidates(&self, nodes: &[Node], requester: usize, name: &str) -> Vec<Candidate> {
        let req = &nodes[requester];
        let mut out = Vec::new();
        if req.info.runpath.is_empty() {
            let mut next = Some(requester);
            while let Some(i) = next {
                for entry in &nodes[i].info.rpath {
                    if let Some(c) =
                        self.dir_candidate(&nodes[i], entry, name, FoundVia::Rpath(entry.clone()))
                    {
                        out.push(c);
                    }
                }
                next = nodes[i].loader;
            }
        }
        for entry in &req.info.runpath {
            if let Some(c) = self.dir_candidate(req, entry, name, FoundVia::Runpath(entry.clone()))
            {
                out.push(c);
            }
        }
        if req.info.nodeflib {
            return out;
        }
        if let Some(cache) = &self.cache {
            let entries = cache.entries(name);
            // Baseline entries first: the image may run on a CPU without the
            // capabilities a glibc-hwcaps entry is built for.
            let ordered = entries
                .iter()
                .filter(|e| !e.is_hwcap_specific())
                .chain(entries.iter().filter(|e| e.is_hwcap_specific()));
            for entry in ordered {
                let Some(image_path) = entry.path.to_str().and_then(normalize_image_path) else {
                    continue;
                };
                out.push(Candidate {
                    search_path: self.sysroot_join(&image_path),
                    image_path,
                    via: FoundVia::LdCache,
                    from_cache: true,
                });
            }
        }
        for dir in default_dirs(&req.info) {
            let image_path = join_image(&dir, name);
            out.push(Candidate {
                search_path: self.sysroot_join(&image_path),
                image_path,
                via: FoundVia::DefaultDir(dir),
                from_cache: false,
            });
        }
        out
    }

    /// The candidate for `name` in RPATH/RUNPATH `entry` of `owner`.
    fn dir_candidate(
        &self,
        owner: &Node,
        entry: &str,
        name: &str,
        via: FoundVia,
    ) -> Option<Candidate> {
        match expand_dst(entry, &owner.info)? {
            Expanded::Origin(rest) => {
                // `$ORIGIN` is replaced textually, as glibc does.
                let image_path =
                    join_image(&format!("{}{rest}", image_dir(&owner.image_path)), name);
                let host_dir = match owner.search_path.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => Path::new("."),
                };
                let mut host_dir = host_dir.as_os_str().to_os_string();
                host_dir.push(&rest);
                Some(Candidate {
                    image_path,
                    search_path: PathBuf::from(host_dir).join(name),
                    via,
                    from_cache: false,
                })
            }
            Expanded::Absolute(dir) => {
                let image_path = join_image(&dir, name);
                Some(Candidate {
                    search_path: self.sysroot_join(&image_path),
                    image_path,
                    via,
                    from_cache: false,
                })
            }
        }
    }

    /// `image_path` (absolute) under the sysroot, unresolved.
    fn sysroot_join(&self, image_path: &str) -> PathBuf {
        self.opts.sysroot.join(image_path.trim_start_matches('/'))
    }

    /// The path to actually open for `path`: inside a sysroot other than `/`,
    /// symlinks are resolved relative to the sysroot.
    fn open_path(&self, path: &Path) -> PathBuf {
        if self.sysroot_is_root {
            return path.to_path_buf();
        }
        match path.strip_prefix(&self.opts.sysroot) {
            Ok(rel) => resolve_in_root(&self.opts.sysroot, rel),
            Err(_) => path.to_path_buf(),
        }
    }

    fn inspect_cached(&mut self, path: &Path) -> Result<ElfInfo, ClosureError> {
        if let Some(info) = self.infos.get(path) {
            return Ok(info.clone());
        }
        let info = inspect(path)?;
        self.infos.insert(path.to_path_buf(), info.clone());
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::process::Command;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!(
                "cargo-oci-closure-{tag}-{}-{n}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn path(&self) -> &Path {
            &self.0
        }

        fn write(&self, rel: &str, contents: &str) -> PathBuf {
            let path = self.0.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, contents).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Runs `cc` with `args`; `None` (after a note) if there is no C compiler.
    fn cc(args: &[&str]) -> Option<bool> {
        match Command::new("cc").args(args).output() {
            Ok(out) => {
                if !out.status.success() {
                    eprintln!(
                        "cc {args:?} failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                Some(out.status.success())
            }
            Err(e) => {
                eprintln!("note: cannot run cc ({e}); skipping");
                None
            }
        }
    }

    /// Builds `lib<name>.so` (soname `lib<name>.so`) from `source` into `dir`.
    fn build_lib(dir: &Path, name: &str, source: &str, extra: &[&str]) -> Option<PathBuf> {
        std::fs::create_dir_all(dir).unwrap();
        let src = dir.join(format!("{name}.c"));
        std::fs::write(&src, source).unwrap();
        let out = dir.join(format!("lib{name}.so"));
        let soname = format!("-Wl,-soname,lib{name}.so");
        let mut args = vec![
            "-shared",
            "-fPIC",
            "-o",
            out.to_str().unwrap(),
            src.to_str().unwrap(),
            &soname,
        ];
        args.extend_from_slice(extra);
        cc(&args)?.then_some(out)
    }

    fn exe(host: &Path, image: &str) -> Executable {
        Executable {
            host_path: host.to_path_buf(),
            image_path: image.to_owned(),
        }
    }

    fn image_paths(closure: &Closure) -> BTreeSet<String> {
        closure
            .objects
            .iter()
            .map(|o| o.image_path.clone())
            .collect()
    }

    fn find<'a>(closure: &'a Closure, image_path: &str) -> &'a Object {
        closure
            .objects
            .iter()
            .find(|o| o.image_path == image_path)
            .unwrap_or_else(|| panic!("{image_path} not in closure: {closure:#?}"))
    }

    /// Resolved paths printed by `ldd` (`=> PATH` and the interpreter), without the vDSO.
    fn ldd_paths(bin: &str) -> Option<BTreeSet<String>> {
        let out = Command::new("ldd").arg(bin).output().ok()?;
        if !out.status.success() {
            return None;
        }
        let mut paths = BTreeSet::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, right)) => right.trim(),
                None => line,
            };
            let path = path.split(" (").next().unwrap_or("").trim();
            if path.starts_with('/') {
                paths.insert(path.to_owned());
            }
        }
        Some(paths)
    }

    const MAIN_CALLING_FOO: &str = "int foo(void);\nint main(void) { return foo(); }\n";

    #[test]
    fn inspect_openssl() {
        let bin = Path::new("/usr/bin/openssl");
        if !bin.exists() {
            eprintln!("note: {} not installed; skipping", bin.display());
            return;
        }
        let info = inspect(bin).unwrap();
        assert!(info.class64);
        assert!(info.little_endian);
        assert_eq!(info.machine, header::EM_X86_64);
        assert_eq!(
            info.interpreter.as_deref(),
            Some("/lib64/ld-linux-x86-64.so.2")
        );
        for lib in ["libssl.so.3", "libcrypto.so.3", "libc.so.6"] {
            assert!(
                info.needed.iter().any(|n| n == lib),
                "{lib} not in {:?}",
                info.needed
            );
        }
        assert!(!info.is_static);
        assert!(info.rpath.is_empty() && info.runpath.is_empty());

        let libc = inspect(Path::new("/lib/x86_64-linux-gnu/libc.so.6")).unwrap();
        assert_eq!(libc.soname.as_deref(), Some("libc.so.6"));
        assert!(libc.needed.iter().any(|n| n == "ld-linux-x86-64.so.2"));
    }

    #[test]
    fn openssl_closure_matches_ldd() {
        let bin = "/usr/bin/openssl";
        if !Path::new(bin).exists() {
            eprintln!("note: {bin} not installed; skipping");
            return;
        }
        let closure = resolve(&[exe(Path::new(bin), bin)], &ClosureOptions::default()).unwrap();
        let paths = image_paths(&closure);
        assert_eq!(paths.len(), closure.objects.len(), "duplicate image paths");
        let sorted: Vec<_> = closure
            .objects
            .iter()
            .map(|o| o.image_path.clone())
            .collect();
        assert_eq!(
            sorted,
            paths.iter().cloned().collect::<Vec<_>>(),
            "not sorted"
        );

        let interp = find(&closure, "/lib64/ld-linux-x86-64.so.2");
        assert_eq!(interp.found_via, FoundVia::Interpreter);
        assert_eq!(interp.needed_by, bin);
        for lib in ["libssl.so.3", "libcrypto.so.3", "libc.so.6"] {
            let obj = closure
                .objects
                .iter()
                .find(|o| o.name == lib)
                .unwrap_or_else(|| panic!("{lib} missing: {closure:#?}"));
            assert!(obj.host_path.is_file());
            assert_eq!(obj.needed_by, bin);
            assert_eq!(obj.relocated_from, None);
        }
        if let Some(expected) = ldd_paths(bin) {
            assert_eq!(paths, expected);
        }
    }

    #[test]
    fn system_binaries_match_ldd() {
        let mut compared = 0;
        for bin in [
            "/bin/ls",
            "/usr/bin/openssl",
            "/usr/bin/curl",
            "/usr/bin/git",
            "/usr/bin/ssh",
            "/usr/bin/python3",
            "/usr/bin/gpg",
        ] {
            if !Path::new(bin).exists() {
                continue;
            }
            let Some(expected) = ldd_paths(bin) else {
                continue;
            };
            let closure = resolve(&[exe(Path::new(bin), bin)], &ClosureOptions::default())
                .unwrap_or_else(|e| panic!("{bin}: {e}"));
            assert_eq!(image_paths(&closure), expected, "{bin}");
            compared += 1;
        }
        eprintln!("compared {compared} binaries with ldd");
    }

    #[test]
    fn several_executables_merge() {
        let bins: Vec<&str> = ["/bin/ls", "/usr/bin/openssl"]
            .into_iter()
            .filter(|b| Path::new(b).exists())
            .collect();
        if bins.len() < 2 {
            eprintln!("note: need /bin/ls and /usr/bin/openssl; skipping");
            return;
        }
        let exes: Vec<_> = bins.iter().map(|b| exe(Path::new(b), b)).collect();
        let closure = resolve(&exes, &ClosureOptions::default()).unwrap();
        let mut expected = BTreeSet::new();
        for bin in &bins {
            expected.extend(ldd_paths(bin).unwrap_or_default());
        }
        if !expected.is_empty() {
            assert_eq!(image_paths(&closure), expected);
        }
        assert_eq!(image_paths(&closure).len(), closure.objects.len());
        // libc is first needed by the first executable.
        let libc = find(&closure, "/lib/x86_64-linux-gnu/libc.so.6");
        assert_eq!(libc.needed_by, "/bin/ls");
    }

    #[test]
    fn extra_libs_are_resolved_with_their_closure() {
        let bin = "/usr/bin/openssl";
        if !Path::new(bin).exists() || !Path::new("/lib/x86_64-linux-gnu/libnss_dns.so.2").exists()
        {
            eprintln!("note: need {bin} and libnss_dns.so.2; skipping");
            return;
        }
        let opts = ClosureOptions {
            extra_libs: vec![
                "libnss_dns.so.2".to_owned(),
                // Same file as libc.so.6 from the search: kept once.
                "/lib/x86_64-linux-gnu/libc.so.6".to_owned(),
            ],
            ..ClosureOptions::default()
        };
        let closure = resolve(&[exe(Path::new(bin), "/usr/bin/openssl")], &opts).unwrap();
        let nss = find(&closure, "/lib/x86_64-linux-gnu/libnss_dns.so.2");
        assert_eq!(nss.found_via, FoundVia::Extra);
        assert_eq!(nss.needed_by, "/usr/bin/openssl");
        let libc: Vec<_> = closure
            .objects
            .iter()
            .filter(|o| o.image_path.ends_with("/libc.so.6"))
            .collect();
        assert_eq!(libc.len(), 1, "{libc:#?}");
        assert_eq!(image_paths(&closure).len(), closure.objects.len());

        let missing = ClosureOptions {
            extra_libs: vec!["libdoesnotexist.so.9".to_owned()],
            ..ClosureOptions::default()
        };
        match resolve(&[exe(Path::new(bin), "/bin/openssl")], &missing) {
            Err(ClosureError::LibraryNotFound {
                name, needed_by, ..
            }) => {
                assert_eq!(name, "libdoesnotexist.so.9");
                assert_eq!(needed_by, "/bin/openssl");
            }
            other => panic!("expected LibraryNotFound, got {other:?}"),
        }
    }

    #[test]
    fn static_binary_has_empty_closure() {
        let dir = TempDir::new("static");
        let src = dir.write("hello.c", "int main(void) { return 0; }\n");
        let out = dir.path().join("hello");
        match cc(&[
            "-static",
            "-o",
            out.to_str().unwrap(),
            src.to_str().unwrap(),
        ]) {
            None => return,
            Some(false) => {
                eprintln!("note: no static libc; skipping the static-binary test");
                return;
            }
            Some(true) => {}
        }
        let info = inspect(&out).unwrap();
        assert!(info.is_static, "{info:?}");
        assert!(info.interpreter.is_none() && info.needed.is_empty());
        let closure = resolve(&[exe(&out, "/bin/hello")], &ClosureOptions::default()).unwrap();
        assert!(closure.objects.is_empty(), "{closure:#?}");
    }

    #[test]
    fn text_file_is_not_elf() {
        let dir = TempDir::new("text");
        let path = dir.write("script.sh", "#!/bin/sh\necho hello\n");
        let err = inspect(&path).unwrap_err();
        assert!(
            matches!(&err, ClosureError::NotElf { path: p } if p == &path),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("is not an ELF executable"),
            "{err}"
        );
        let err = resolve(&[exe(&path, "/bin/script")], &ClosureOptions::default()).unwrap_err();
        assert!(matches!(err, ClosureError::NotElf { .. }), "{err:?}");
        // Empty and 3-byte files too.
        let empty = dir.write("empty", "");
        assert!(matches!(inspect(&empty), Err(ClosureError::NotElf { .. })));
    }

    #[test]
    fn unreadable_file_is_io_error() {
        let missing =
            std::env::temp_dir().join(format!("cargo-oci-closure-nope-{}", std::process::id()));
        let err = inspect(&missing).unwrap_err();
        assert!(
            matches!(&err, ClosureError::Io { path, .. } if path == &missing),
            "{err:?}"
        );
        assert!(err.to_string().contains(&missing.display().to_string()));
    }

    #[test]
    fn missing_library_is_reported() {
        let dir = TempDir::new("missing");
        let Some(lib) = build_lib(dir.path(), "missing", "int foo(void) { return 0; }\n", &[])
        else {
            return;
        };
        let main = dir.write("main.c", MAIN_CALLING_FOO);
        let app = dir.path().join("app");
        let libdir = format!("-L{}", dir.path().display());
        if cc(&[
            "-o",
            app.to_str().unwrap(),
            main.to_str().unwrap(),
            &libdir,
            "-lmissing",
        ]) != Some(true)
        {
            return;
        }
        std::fs::remove_file(&lib).unwrap();
        let err = resolve(&[exe(&app, "/usr/bin/app")], &ClosureOptions::default()).unwrap_err();
        let ClosureError::LibraryNotFound {
            name,
            needed_by,
            searched,
        } = &err
        else {
            panic!("expected LibraryNotFound, got {err:?}");
        };
        assert_eq!(name, "libmissing.so");
        assert_eq!(needed_by, "/usr/bin/app");
        for dir in [
            "/lib/x86_64-linux-gnu",
            "/usr/lib/x86_64-linux-gnu",
            "/lib64",
            "/usr/lib64",
            "/lib",
            "/usr/lib",
        ] {
            let p = PathBuf::from(format!("{dir}/libmissing.so"));
            assert!(searched.contains(&p), "{p:?} not in {searched:?}");
        }
        let msg = err.to_string();
        assert!(
            msg.contains("libmissing.so") && msg.contains("/usr/bin/app"),
            "{msg}"
        );
        assert!(
            msg.contains("/usr/lib/x86_64-linux-gnu/libmissing.so"),
            "{msg}"
        );
        assert!(
            msg.contains("install the package that provides it, or add the directory to RUNPATH")
        );
    }

    #[test]
    fn runpath_origin_maps_to_image() {
        let dir = TempDir::new("runpath");
        let libdir = dir.path().join("app/lib");
        let Some(lib) = build_lib(&libdir, "foo", "int foo(void) { return 0; }\n", &[]) else {
            return;
        };
        let main = dir.write("main.c", MAIN_CALLING_FOO);
        std::fs::create_dir_all(dir.path().join("app/bin")).unwrap();
        let x = dir.path().join("app/bin/x");
        let l = format!("-L{}", libdir.display());
        let built = cc(&[
            "-o",
            x.to_str().unwrap(),
            main.to_str().unwrap(),
            &l,
            "-lfoo",
            "-Wl,-rpath,$ORIGIN/../lib",
            "-Wl,--enable-new-dtags",
        ]);
        if built != Some(true) {
            return;
        }
        let info = inspect(&x).unwrap();
        assert_eq!(info.runpath, ["$ORIGIN/../lib"]);
        assert!(info.rpath.is_empty());
        assert!(info.needed.iter().any(|n| n == "libfoo.so"));

        let closure = resolve(&[exe(&x, "/app/bin/x")], &ClosureOptions::default()).unwrap();
        let foo = find(&closure, "/app/lib/libfoo.so");
        assert_eq!(
            foo.found_via,
            FoundVia::Runpath("$ORIGIN/../lib".to_owned())
        );
        assert_eq!(foo.name, "libfoo.so");
        assert_eq!(foo.needed_by, "/app/bin/x");
        assert!(same_file(&foo.host_path, &lib), "{:?}", foo.host_path);
        assert!(closure
            .objects
            .iter()
            .any(|o| o.image_path == "/lib64/ld-linux-x86-64.so.2"));
        assert!(closure.objects.iter().any(|o| o.name == "libc.so.6"));
    }

    /// Non-ELF and wrong-machine files earlier in the search are skipped.
    #[test]
    fn unusable_candidates_are_skipped() {
        let dir = TempDir::new("skip");
        let libdir = dir.path().join("app/lib");
        let Some(lib) = build_lib(&libdir, "foo", "int foo(void) { return 0; }\n", &[]) else {
            return;
        };
        dir.write("app/text/libfoo.so", "INPUT(-lfoo)\n");
        let mut arm = std::fs::read(&lib).unwrap();
        arm[18..20].copy_from_slice(&header::EM_AARCH64.to_le_bytes());
        std::fs::create_dir_all(dir.path().join("app/arm")).unwrap();
        std::fs::write(dir.path().join("app/arm/libfoo.so"), arm).unwrap();

        let main = dir.write("main.c", MAIN_CALLING_FOO);
        std::fs::create_dir_all(dir.path().join("app/bin")).unwrap();
        let x = dir.path().join("app/bin/x");
        let l = format!("-L{}", libdir.display());
        let built = cc(&[
            "-o",
            x.to_str().unwrap(),
            main.to_str().unwrap(),
            &l,
            "-lfoo",
            "-Wl,-rpath,$ORIGIN/../text:${ORIGIN}/../arm:$ORIGIN/../lib",
            "-Wl,--enable-new-dtags",
        ]);
        if built != Some(true) {
            return;
        }
        let closure = resolve(&[exe(&x, "/app/bin/x")], &ClosureOptions::default()).unwrap();
        let foo = find(&closure, "/app/lib/libfoo.so");
        assert_eq!(
            foo.found_via,
            FoundVia::Runpath("$ORIGIN/../lib".to_owned())
        );
        assert!(!closure
            .objects
            .iter()
            .any(|o| o.image_path.contains("/text/") || o.image_path.contains("/arm/")));
    }

    /// DT_RPATH of the executable is used for its libraries' dependencies;
    /// DT_RUNPATH is not.
    #[test]
    fn rpath_is_inherited_runpath_is_not() {
        let dir = TempDir::new("rpath");
        let libdir = dir.path().join("app/lib");
        if build_lib(&libdir, "bar", "int bar(void) { return 0; }\n", &[]).is_none() {
            return;
        }
        let l = format!("-L{}", libdir.display());
        if build_lib(
            &libdir,
            "foo",
            "int bar(void);\nint foo(void) { return bar(); }\n",
            &[&l, "-lbar"],
        )
        .is_none()
        {
            return;
        }
        let main = dir.write("main.c", MAIN_CALLING_FOO);
        std::fs::create_dir_all(dir.path().join("app/bin")).unwrap();
        let rpath_link = format!("-Wl,-rpath-link,{}", libdir.display());
        for (exe_name, dtags) in [
            ("old", "--disable-new-dtags"),
            ("new", "--enable-new-dtags"),
        ] {
            let x = dir.path().join("app/bin").join(exe_name);
            let dtags = format!("-Wl,{dtags}");
            let built = cc(&[
                "-o",
                x.to_str().unwrap(),
                main.to_str().unwrap(),
                &l,
                &rpath_link,
                "-lfoo",
                "-Wl,-rpath,$ORIGIN/../lib",
                &dtags,
            ]);
            if built != Some(true) {
                return;
            }
        }
        let old = dir.path().join("app/bin/old");
        assert_eq!(inspect(&old).unwrap().rpath, ["$ORIGIN/../lib"]);
        let closure = resolve(&[exe(&old, "/app/bin/old")], &ClosureOptions::default()).unwrap();
        let foo = find(&closure, "/app/lib/libfoo.so");
        assert_eq!(foo.found_via, FoundVia::Rpath("$ORIGIN/../lib".to_owned()));
        let bar = find(&closure, "/app/lib/libbar.so");
        assert_eq!(bar.found_via, FoundVia::Rpath("$ORIGIN/../lib".to_owned()));
        assert_eq!(bar.needed_by, "/app/lib/libfoo.so");

        let new = dir.path().join("app/bin/new");
        let err = resolve(&[exe(&new, "/app/bin/new")], &ClosureOptions::default()).unwrap_err();
        match err {
            ClosureError::LibraryNotFound {
                name, needed_by, ..
            } => {
                assert_eq!(name, "libbar.so");
                assert_eq!(needed_by, "/app/lib/libfoo.so");
            }
            other => panic!("expected LibraryNotFound for libbar.so, got {other:?}"),
        }
    }

    /// A sysroot: absolute symlinks stay inside it, its ld.so.cache (compat
    /// format) is used, and a cache hit outside the default directories is
    /// moved next to libc.
    #[test]
    fn sysroot_cache_and_relocation() {
        let real_libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
        let real_ld = Path::new("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2");
        if !real_libc.exists() || !real_ld.exists() {
            eprintln!("note: no x86-64 glibc; skipping");
            return;
        }
        let dir = TempDir::new("sysroot");
        let sysroot = dir.path().join("sysroot");
        let multiarch = sysroot.join("lib/x86_64-linux-gnu");
        std::fs::create_dir_all(&multiarch).unwrap();
        std::fs::copy(real_libc, multiarch.join("libc.so.6")).unwrap();
        std::fs::copy(real_ld, multiarch.join("ld-linux-x86-64.so.2")).unwrap();
        std::fs::create_dir_all(sysroot.join("lib64")).unwrap();
        std::os::unix::fs::symlink(
            "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            sysroot.join("lib64/ld-linux-x86-64.so.2"),
        )
        .unwrap();
        let odd = sysroot.join("opt/odd");
        if build_lib(&odd, "foo", "int foo(void) { return 0; }\n", &[]).is_none() {
            return;
        }
        let cache = crate::build::ldcache::build_cache_for_tests(
            &[
                ("libfoo.so", "/opt/odd/libfoo.so"),
                ("libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6"),
            ],
            true,
        );
        std::fs::create_dir_all(sysroot.join("etc")).unwrap();
        std::fs::write(sysroot.join("etc/ld.so.cache"), cache).unwrap();

        let main = dir.write("main.c", MAIN_CALLING_FOO);
        let app = dir.path().join("app");
        let l = format!("-L{}", odd.display());
        if cc(&[
            "-o",
            app.to_str().unwrap(),
            main.to_str().unwrap(),
            &l,
            "-lfoo",
        ]) != Some(true)
        {
            return;
        }

        let closure = resolve(
            &[exe(&app, "/usr/local/bin/app")],
            &ClosureOptions::new(&sysroot),
        )
        .unwrap();
        assert_eq!(
            image_paths(&closure),
            BTreeSet::from([
                "/lib/x86_64-linux-gnu/libc.so.6".to_owned(),
                "/lib/x86_64-linux-gnu/libfoo.so".to_owned(),
                "/lib64/ld-linux-x86-64.so.2".to_owned(),
            ]),
            "{closure:#?}"
        );
        for obj in &closure.objects {
            assert!(
                obj.host_path.starts_with(&sysroot),
                "{obj:?} escapes the sysroot"
            );
            assert!(obj.host_path.is_file(), "{obj:?}");
        }
        let interp = find(&closure, "/lib64/ld-linux-x86-64.so.2");
        assert_eq!(interp.host_path, multiarch.join("ld-linux-x86-64.so.2"));
        let foo = find(&closure, "/lib/x86_64-linux-gnu/libfoo.so");
        assert_eq!(foo.found_via, FoundVia::LdCache);
        assert_eq!(foo.relocated_from.as_deref(), Some("/opt/odd/libfoo.so"));
        assert_eq!(foo.host_path, odd.join("libfoo.so"));
        let libc = find(&closure, "/lib/x86_64-linux-gnu/libc.so.6");
        assert_eq!(libc.found_via, FoundVia::LdCache);
        assert_eq!(libc.relocated_from, None);

        // Without the cache, libfoo.so is not in a default directory.
        let no_cache = ClosureOptions {
            ld_cache: None,
            ..ClosureOptions::new(&sysroot)
        };
        match resolve(&[exe(&app, "/usr/local/bin/app")], &no_cache) {
            Err(ClosureError::LibraryNotFound { name, searched, .. }) => {
                assert_eq!(name, "libfoo.so");
                assert!(
                    searched.iter().all(|p| p.starts_with(&sysroot)),
                    "{searched:?}"
                );
            }
            other => panic!("expected LibraryNotFound, got {other:?}"),
        }

        // A corrupt cache is an error naming it.
        std::fs::write(
            sysroot.join("etc/ld.so.cache"),
            b"glibc-ld.so.cache1.1\xff\xff",
        )
        .unwrap();
        let err = resolve(
            &[exe(&app, "/usr/local/bin/app")],
            &ClosureOptions::new(&sysroot),
        )
        .unwrap_err();
        assert!(matches!(err, ClosureError::LdCache { .. }), "{err:?}");
    }

    /// A relocated cache hit moves next to libc (here in `/usr/lib/<triplet>`),
    /// and its `$ORIGIN` dependencies follow it.
    #[test]
    fn relocated_library_origin_follows_libc() {
        let real_libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
        let real_ld = Path::new("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2");
        if !real_libc.exists() || !real_ld.exists() {
            eprintln!("note: no x86-64 glibc; skipping");
            return;
        }
        let dir = TempDir::new("reloc");
        let sysroot = dir.path().join("sysroot");
        let usr_multiarch = sysroot.join("usr/lib/x86_64-linux-gnu");
        std::fs::create_dir_all(&usr_multiarch).unwrap();
        std::fs::create_dir_all(sysroot.join("lib64")).unwrap();
        std::fs::copy(real_libc, usr_multiarch.join("libc.so.6")).unwrap();
        std::fs::copy(real_ld, sysroot.join("lib64/ld-linux-x86-64.so.2")).unwrap();
        let odd = sysroot.join("opt/odd");
        let sub = odd.join("sub");
        if build_lib(&sub, "baz", "int baz(void) { return 7; }\n", &[]).is_none() {
            return;
        }
        let l = format!("-L{}", sub.display());
        let foo_src = "int baz(void);\nint foo(void) { return baz(); }\n";
        let foo_args = [
            &l,
            "-lbaz",
            "-Wl,-rpath,$ORIGIN/sub",
            "-Wl,--enable-new-dtags",
        ];
        if build_lib(&odd, "foo", foo_src, &foo_args).is_none() {
            return;
        }
        let cache = crate::build::ldcache::build_cache_for_tests(
            &[("libfoo.so", "/opt/odd/libfoo.so")],
            false,
        );
        std::fs::create_dir_all(sysroot.join("etc")).unwrap();
        std::fs::write(sysroot.join("etc/ld.so.cache"), cache).unwrap();
        let main = dir.write("main.c", MAIN_CALLING_FOO);
        let app = dir.path().join("app");
        let l = format!("-L{}", odd.display());
        let link = format!("-Wl,-rpath-link,{}", sub.display());
        if cc(&[
            "-o",
            app.to_str().unwrap(),
            main.to_str().unwrap(),
            &l,
            &link,
            "-lfoo",
        ]) != Some(true)
        {
            return;
        }
        let closure =
            resolve(&[exe(&app, "/usr/bin/app")], &ClosureOptions::new(&sysroot)).unwrap();
        assert_eq!(
            image_paths(&closure),
            BTreeSet::from([
                "/lib64/ld-linux-x86-64.so.2".to_owned(),
                "/usr/lib/x86_64-linux-gnu/libc.so.6".to_owned(),
                "/usr/lib/x86_64-linux-gnu/libfoo.so".to_owned(),
                "/usr/lib/x86_64-linux-gnu/sub/libbaz.so".to_owned(),
            ]),
            "{closure:#?}"
        );
        let libc = find(&closure, "/usr/lib/x86_64-linux-gnu/libc.so.6");
        assert_eq!(
            libc.found_via,
            FoundVia::DefaultDir("/usr/lib/x86_64-linux-gnu".to_owned())
        );
        let baz = find(&closure, "/usr/lib/x86_64-linux-gnu/sub/libbaz.so");
        assert_eq!(baz.found_via, FoundVia::Runpath("$ORIGIN/sub".to_owned()));
        assert_eq!(baz.needed_by, "/usr/lib/x86_64-linux-gnu/libfoo.so");
        assert_eq!(baz.host_path, sub.join("libbaz.so"));
    }

    #[test]
    fn relative_image_path_is_rejected() {
        let bin = Path::new("/bin/ls");
        if !bin.exists() {
            return;
        }
        let err = resolve(&[exe(bin, "bin/ls")], &ClosureOptions::default()).unwrap_err();
        assert!(
            matches!(err, ClosureError::RelativeImagePath { .. }),
            "{err:?}"
        );
    }

    /// Truncated and corrupted copies of a real binary give errors or
    /// results, never panics.
    #[test]
    fn hostile_elf_does_not_panic() {
        let src = ["/bin/true", "/usr/bin/true", "/bin/ls"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists());
        let Some(src) = src else {
            return;
        };
        let bytes = std::fs::read(src).unwrap();
        let dir = TempDir::new("fuzz");
        let path = dir.path().join("bin");
        let mut cuts: Vec<usize> = (0..200).collect();
        cuts.extend((200..bytes.len()).step_by(bytes.len() / 50 + 1));
        for cut in cuts {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let _ = inspect(&path);
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        // Corrupt header and program-header bytes, and bytes anywhere.
        for round in 0..400 {
            let mut copy = bytes.clone();
            for _ in 0..(1 + round % 8) {
                let limit = if round % 2 == 0 {
                    0x400.min(copy.len())
                } else {
                    copy.len()
                };
                let at = (next() as usize) % limit;
                copy[at] = next() as u8;
            }
            std::fs::write(&path, &copy).unwrap();
            let _ = inspect(&path);
            if round % 20 == 0 {
                let _ = resolve(&[exe(&path, "/bin/x")], &ClosureOptions::default());
            }
        }
    }

    #[test]
    fn dst_expansion() {
        let info = ElfInfo {
            class64: true,
            machine: header::EM_X86_64,
            little_endian: true,
            ..ElfInfo::default()
        };
        let origin = |s: &str| match expand_dst(s, &info) {
            Some(Expanded::Origin(rest)) => Some(format!("O:{rest}")),
            Some(Expanded::Absolute(dir)) => Some(dir),
            None => None,
        };
        assert_eq!(origin("$ORIGIN/../lib").as_deref(), Some("O:/../lib"));
        assert_eq!(origin("${ORIGIN}").as_deref(), Some("O:"));
        assert_eq!(origin("/opt/$LIB").as_deref(), Some("/opt/lib64"));
        assert_eq!(
            origin("/opt/${PLATFORM}/x").as_deref(),
            Some("/opt/x86_64/x")
        );
        assert_eq!(origin("/opt/$ORIGINAL").as_deref(), Some("/opt/$ORIGINAL"));
        assert_eq!(origin("/opt/$ORIGIN"), None);
        assert_eq!(origin("relative/dir"), None);
        assert_eq!(
            origin("/a/${unterminated").as_deref(),
            Some("/a/${unterminated")
        );
    }

    #[test]
    fn image_path_normalisation() {
        assert_eq!(
            normalize_image_path("/app/bin/../lib/").as_deref(),
            Some("/app/lib")
        );
        assert_eq!(normalize_image_path("//a/./b").as_deref(), Some("/a/b"));
        assert_eq!(normalize_image_path("/../..").as_deref(), Some("/"));
        assert_eq!(normalize_image_path("a/b"), None);
        assert_eq!(join_image("", "libx.so"), "/libx.so");
        assert_eq!(image_dir("/app/bin/x"), "/app/bin");
    }
}
