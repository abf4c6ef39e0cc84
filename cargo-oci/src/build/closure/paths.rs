//! Path work for the loader's search: the architecture's default directories and dynamic string
//! tokens (`$ORIGIN`, `$LIB`, `$PLATFORM`), image paths (normalised, absolute, `/`-separated),
//! and host paths inside a sysroot with its symlinks followed as if it were `/`.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use super::ElfInfo;
use crate::oci::platform::ElfArch;

/// The architecture of an ELF file, as the platform table keys it.
pub(super) fn elf_arch(info: &ElfInfo) -> ElfArch {
    ElfArch {
        machine: info.machine,
        class64: info.class64,
        little_endian: info.little_endian,
    }
}

pub(super) fn arch_of(info: &ElfInfo) -> (bool, u16, bool) {
    (info.class64, info.machine, info.little_endian)
}

pub(super) fn describe_arch((class64, machine, little_endian): (bool, u16, bool)) -> String {
    ElfArch {
        machine,
        class64,
        little_endian,
    }
    .describe()
}

/// The Debian multiarch triplet for an ELF class + machine.
pub(super) fn triplet(info: &ElfInfo) -> Option<&'static str> {
    elf_arch(info).triplet()
}

/// The loader's default directories, in search order (image paths), for the file system at
/// `sysroot`. A multiarch system (Debian's layout: `/lib/<triplet>` or `/usr/lib/<triplet>`
/// exists) has a loader that searches those, then `/lib` and `/usr/lib`, never `/lib64`; other
/// systems keep 64-bit libraries in `/lib64` and `/usr/lib64`.
pub(super) fn default_dirs(info: &ElfInfo, sysroot: &Path) -> Vec<String> {
    let mut dirs = Vec::new();
    let mut multiarch = false;
    if let Some(t) = triplet(info) {
        multiarch = [format!("lib/{t}"), format!("usr/lib/{t}")]
            .iter()
            .any(|d| sysroot.join(d).is_dir());
        dirs.push(format!("/lib/{t}"));
        dirs.push(format!("/usr/lib/{t}"));
    }
    if info.class64 && !multiarch {
        dirs.push("/lib64".to_owned());
        dirs.push("/usr/lib64".to_owned());
    }
    dirs.push("/lib".to_owned());
    dirs.push("/usr/lib".to_owned());
    dirs
}

/// `$LIB`, simplified: `lib64` on 64-bit x86 and AArch64, else `lib`.
pub(super) fn dst_lib(info: &ElfInfo) -> &'static str {
    elf_arch(info).dst_lib()
}

/// `$PLATFORM`, simplified to the base platform name.
pub(super) fn dst_platform(info: &ElfInfo) -> Option<&'static str> {
    elf_arch(info).dst_platform()
}

/// An RPATH/RUNPATH entry after dynamic-string-token expansion.
pub(super) enum Expanded {
    /// Starts with `$ORIGIN`: the rest, relative to the object's directory.
    Origin(String),
    /// An absolute directory (image terms).
    Absolute(String),
}

/// Expands `$ORIGIN`, `$LIB`, `$PLATFORM` (and the `${…}` forms). `None` if the
/// entry cannot be used: a relative directory, `$ORIGIN` not at the start, or
/// a token this machine has no value for.
pub(super) fn expand_dst(entry: &str, info: &ElfInfo) -> Option<Expanded> {
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
pub(super) fn normalize_image_path(path: &str) -> Option<String> {
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
pub(super) fn image_dir(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[..i],
        None => "",
    }
}

pub(super) fn join_image(dir: &str, name: &str) -> String {
    normalize_image_path(&format!("{dir}/{name}")).unwrap_or_else(|| format!("/{name}"))
}

/// Resolves `rel` inside `root` like `chroot(root)` would: absolute symlink
/// targets and `..` never leave `root`.
pub(super) fn resolve_in_root(root: &Path, rel: &Path) -> PathBuf {
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
pub(super) fn push_components(stack: &mut Vec<OsString>, path: &Path) {
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
