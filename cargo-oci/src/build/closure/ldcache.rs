//! Parses glibc's `/etc/ld.so.cache` into a soname → library-paths table.
//!
//! Supported: the "new" `glibc-ld.so.cache` version `1.1` format, alone or
//! behind the legacy `ld.so-1.7.0` table ("compat" format).
//!
//! This is hand-written because no maintained crate parses `ld.so.cache`; the
//! format is small and documented only by glibc's `sysdeps/generic/dl-cache.h`
//! and `elf/cache.c`:
//!
//! ```text
//! new header (48 bytes):
//!   magic "glibc-ld.so.cache" (17) | version "1.1" (3) | nlibs u32 | len_strings u32
//!   | flags u8 | padding [u8; 3] | extension_offset u32 | unused [u32; 3]
//! then nlibs entries of 24 bytes:
//!   flags i32 | key u32 | value u32 | osversion u32 | hwcap u64
//! then the NUL-terminated strings.
//! ```
//!
//! `key` (the soname) and `value` (the full path) are offsets counted from the
//! start of the *new* header. When the file is new-format only, that is the
//! start of the file (checked against `ldconfig -p` on Debian 12). Files
//! written in the "compat" format start with the legacy header
//! (`ld.so-1.7.0`, `nlibs` u32, `nlibs` × 12-byte entries) and carry the new
//! table at the next 8-byte boundary; the legacy part is skipped. A file
//! holding only the legacy table is rejected, as current glibc no longer
//! writes it.
//!
//! The cache is written in the byte order of the machine that ran
//! `ldconfig`; the new header's `flags` byte records it (0 = unknown,
//! 2 = little-endian, 3 = big-endian). Only little-endian caches are
//! supported; a big-endian one is rejected with [`LdCacheError::UnsupportedByteOrder`].
//! Every offset is bounds-checked: a truncated or hostile file gives an
//! error, never a panic.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

/// Magic + version of the new format.
const NEW_MAGIC: &[u8] = b"glibc-ld.so.cache";
const NEW_VERSION: &[u8] = b"1.1";
/// Magic of the legacy (libc5 / glibc 2.0) format.
const OLD_MAGIC: &[u8] = b"ld.so-1.7.0";
/// `struct cache_file`: 11-byte magic padded to 12, then `nlibs`.
const OLD_HEADER_LEN: usize = 16;
/// `struct file_entry`: flags, key, value.
const OLD_ENTRY_LEN: usize = 12;
/// `struct cache_file_new` without its entries.
const NEW_HEADER_LEN: usize = 48;
/// `struct file_entry_new`.
const NEW_ENTRY_LEN: usize = 24;
/// `__alignof__ (struct cache_file_new)` on 64-bit hosts (it holds a `uint64_t`).
const NEW_ALIGN: usize = 8;

/// Byte-order values of the new header's `flags` field (`cache_file_new_flags_endian_*`).
const ENDIAN_MASK: u8 = 0b11;
const ENDIAN_INVALID: u8 = 1;
#[cfg(test)]
const ENDIAN_LITTLE: u8 = 2;
const ENDIAN_BIG: u8 = 3;

/// Why an `ld.so.cache` file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LdCacheError {
    /// The file exists but could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file does not start with a known ld.so.cache magic.
    #[error("not an ld.so.cache file (no `glibc-ld.so.cache` or `ld.so-1.7.0` magic)")]
    BadMagic,
    /// The new-format header carries a version other than `1.1`.
    #[error("unsupported ld.so.cache version {0:?} (only 1.1 is known)")]
    UnsupportedVersion(String),
    /// Only the legacy `ld.so-1.7.0` table is present.
    #[error("ld.so.cache holds only the legacy ld.so-1.7.0 table, which glibc no longer writes; regenerate it with a current ldconfig")]
    LegacyOnly,
    /// The cache was written for a big-endian machine (or its byte-order flag is invalid).
    #[error("ld.so.cache is in {0} byte order; only little-endian caches are supported")]
    UnsupportedByteOrder(&'static str),
    /// A structure extends past the end of the file.
    #[error("ld.so.cache is truncated: {what} needs bytes {start}..{end} but the file has {len}")]
    Truncated {
        what: &'static str,
        start: u64,
        end: u64,
        len: usize,
    },
    /// An entry points at a string outside the file or without a terminating NUL.
    #[error("ld.so.cache entry {index} has a bad {field} string offset {offset}")]
    BadString {
        index: usize,
        field: &'static str,
        offset: u32,
    },
}

/// One entry of the cache, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// Full path of the library, as written by ldconfig (not canonicalised).
    pub path: PathBuf,
    /// `FLAG_*` bits: low byte is the type (3 = ELF libc6), next byte the ABI
    /// (e.g. 0x03 = x86-64, 0x0a = AArch64).
    pub flags: i32,
    /// Hardware-capability bits; non-zero for `glibc-hwcaps` subdirectory
    /// entries (bit 62 set) or legacy hwcap subdirectories.
    pub hwcap: u64,
}

impl CacheEntry {
    /// True for an entry that only a CPU with extra capabilities would use
    /// (`glibc-hwcaps/x86-64-v3/…` and the like).
    pub fn is_hwcap_specific(&self) -> bool {
        self.hwcap != 0
    }
}

/// The parsed cache: soname → candidate paths, in file order.
#[derive(Debug, Clone, Default)]
pub struct LdCache {
    paths: HashMap<String, Vec<PathBuf>>,
    entries: HashMap<String, Vec<CacheEntry>>,
    len: usize,
}

impl LdCache {
    /// Reads and parses the cache at `path`. `Ok(None)` if the file does not exist.
    pub fn load(path: &Path) -> Result<Option<LdCache>, LdCacheError> {
        match std::fs::read(path) {
            Ok(bytes) => Self::parse(&bytes).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(LdCacheError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parses the bytes of a cache file.
    pub fn parse(bytes: &[u8]) -> Result<LdCache, LdCacheError> {
        let base = if bytes.starts_with(OLD_MAGIC) {
            let nlibs = read_u32(bytes, 12, "legacy header")?;
            let old_end = (nlibs as u64)
                .checked_mul(OLD_ENTRY_LEN as u64)
                .and_then(|n| n.checked_add(OLD_HEADER_LEN as u64))
                .ok_or(LdCacheError::Truncated {
                    what: "legacy entries",
                    start: OLD_HEADER_LEN as u64,
                    end: u64::MAX,
                    len: bytes.len(),
                })?;
            let aligned = old_end.div_ceil(NEW_ALIGN as u64) * NEW_ALIGN as u64;
            if aligned.saturating_add(NEW_HEADER_LEN as u64) > bytes.len() as u64
                || !bytes[aligned as usize..].starts_with(NEW_MAGIC)
            {
                // glibc's own reader falls back to the legacy table here.
                return Err(LdCacheError::LegacyOnly);
            }
            aligned as usize
        } else if bytes.starts_with(NEW_MAGIC) {
            0
        } else {
            return Err(LdCacheError::BadMagic);
        };
        Self::parse_new(bytes, base)
    }

    /// Parses the new-format table whose header starts at `base`.
    fn parse_new(bytes: &[u8], base: usize) -> Result<LdCache, LdCacheError> {
        check_range(bytes, base as u64, NEW_HEADER_LEN as u64, "header")?;
        let header = &bytes[base..base + NEW_HEADER_LEN];
        let version = &header[NEW_MAGIC.len()..NEW_MAGIC.len() + NEW_VERSION.len()];
        if version != NEW_VERSION {
            return Err(LdCacheError::UnsupportedVersion(
                String::from_utf8_lossy(version).into_owned(),
            ));
        }
        // 0 (written before glibc 2.32) means host order: assumed little-endian.
        match header[28] & ENDIAN_MASK {
            ENDIAN_BIG => return Err(LdCacheError::UnsupportedByteOrder("big-endian")),
            ENDIAN_INVALID => return Err(LdCacheError::UnsupportedByteOrder("an invalid")),
            _ => {}
        }
        let nlibs = read_u32(bytes, base + 20, "header")? as usize;
        let entries_start = (base + NEW_HEADER_LEN) as u64;
        let entries_len = (nlibs as u64) * NEW_ENTRY_LEN as u64;
        check_range(bytes, entries_start, entries_len, "library entries")?;

        // Strings are offsets from the new header; they live in the rest of the file.
        let strings = &bytes[base..];
        let mut cache = LdCache::default();
        for index in 0..nlibs {
            let at = entries_start as usize + index * NEW_ENTRY_LEN;
            let flags = read_u32(bytes, at, "library entry")? as i32;
            let key = read_u32(bytes, at + 4, "library entry")?;
            let value = read_u32(bytes, at + 8, "library entry")?;
            let hwcap = read_u64(bytes, at + 16, "library entry")?;
            let name = c_string(strings, key).ok_or(LdCacheError::BadString {
                index,
                field: "name",
                offset: key,
            })?;
            let path = c_string(strings, value).ok_or(LdCacheError::BadString {
                index,
                field: "path",
                offset: value,
            })?;
            // A soname that is not UTF-8 can never be asked for through `lookup`.
            let Ok(name) = std::str::from_utf8(name) else {
                continue;
            };
            let path = bytes_to_path(path);
            cache
                .paths
                .entry(name.to_owned())
                .or_default()
                .push(path.clone());
            cache
                .entries
                .entry(name.to_owned())
                .or_default()
                .push(CacheEntry { path, flags, hwcap });
            cache.len += 1;
        }
        Ok(cache)
    }

    /// All paths recorded for `soname`, in file order (empty if none).
    #[cfg(test)]
    pub fn lookup(&self, soname: &str) -> &[PathBuf] {
        self.paths.get(soname).map(Vec::as_slice).unwrap_or(&[])
    }

    /// All entries (with flags and hwcap) recorded for `soname`, in file order.
    pub fn entries(&self, soname: &str) -> &[CacheEntry] {
        self.entries.get(soname).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Number of entries with a UTF-8 soname.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if the cache has no entries.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

fn check_range(bytes: &[u8], start: u64, len: u64, what: &'static str) -> Result<(), LdCacheError> {
    let end = start.saturating_add(len);
    if end > bytes.len() as u64 {
        return Err(LdCacheError::Truncated {
            what,
            start,
            end,
            len: bytes.len(),
        });
    }
    Ok(())
}

fn read_u32(bytes: &[u8], at: usize, what: &'static str) -> Result<u32, LdCacheError> {
    check_range(bytes, at as u64, 4, what)?;
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    Ok(u32::from_le_bytes(b))
}

fn read_u64(bytes: &[u8], at: usize, what: &'static str) -> Result<u64, LdCacheError> {
    check_range(bytes, at as u64, 8, what)?;
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    Ok(u64::from_le_bytes(b))
}

/// The NUL-terminated string at `offset`, or `None` if it is out of bounds or unterminated.
fn c_string(strings: &[u8], offset: u32) -> Option<&[u8]> {
    let rest = strings.get(offset as usize..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    Some(&rest[..end])
}

#[cfg(unix)]
fn bytes_to_path(bytes: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
}

#[cfg(not(unix))]
fn bytes_to_path(bytes: &[u8]) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(bytes).into_owned())
}

/// Builds a little-endian cache file, for tests here and in `crate::build::closure`.
#[cfg(test)]
pub(crate) fn build_cache_for_tests(entries: &[(&str, &str)], with_legacy_header: bool) -> Vec<u8> {
    let mut strings: Vec<u8> = Vec::new();
    let mut offsets = Vec::new();
    let table_len = NEW_HEADER_LEN + entries.len() * NEW_ENTRY_LEN;
    for (name, path) in entries {
        let k = table_len + strings.len();
        strings.extend_from_slice(name.as_bytes());
        strings.push(0);
        let v = table_len + strings.len();
        strings.extend_from_slice(path.as_bytes());
        strings.push(0);
        offsets.push((k as u32, v as u32));
    }
    let mut new = Vec::new();
    new.extend_from_slice(NEW_MAGIC);
    new.extend_from_slice(NEW_VERSION);
    new.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    new.extend_from_slice(&(strings.len() as u32).to_le_bytes());
    new.push(ENDIAN_LITTLE);
    new.extend_from_slice(&[0; 3]);
    new.extend_from_slice(&0u32.to_le_bytes()); // no extension
    new.extend_from_slice(&[0; 12]);
    for (k, v) in &offsets {
        new.extend_from_slice(&0x0303i32.to_le_bytes());
        new.extend_from_slice(&k.to_le_bytes());
        new.extend_from_slice(&v.to_le_bytes());
        new.extend_from_slice(&0u32.to_le_bytes());
        new.extend_from_slice(&0u64.to_le_bytes());
    }
    new.extend_from_slice(&strings);
    if !with_legacy_header {
        return new;
    }
    // Legacy table with the same entries; its strings start right after its
    // entries, i.e. the (aligned) new table is hidden inside its string area.
    let old_end = OLD_HEADER_LEN + entries.len() * OLD_ENTRY_LEN;
    let aligned = old_end.div_ceil(NEW_ALIGN) * NEW_ALIGN;
    let pad = aligned - old_end;
    let mut out = Vec::new();
    out.extend_from_slice(OLD_MAGIC);
    out.push(0);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (k, v) in &offsets {
        out.extend_from_slice(&3i32.to_le_bytes());
        out.extend_from_slice(&(k + pad as u32).to_le_bytes());
        out.extend_from_slice(&(v + pad as u32).to_le_bytes());
    }
    out.resize(aligned, 0);
    out.extend_from_slice(&new);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    const REAL: &str = "/etc/ld.so.cache";

    #[test]
    fn real_cache_resolves_libc() {
        let Some(cache) = LdCache::load(Path::new(REAL)).unwrap() else {
            eprintln!("note: {REAL} does not exist; skipping");
            return;
        };
        assert!(!cache.is_empty());
        let libc = cache.lookup("libc.so.6");
        assert!(!libc.is_empty(), "libc.so.6 not in {REAL}");
        assert!(
            libc.iter().any(|p| p.is_file()),
            "no libc.so.6 path from the cache exists: {libc:?}"
        );
        assert!(cache.lookup("no-such-library.so.42").is_empty());
    }

    /// Every line of `ldconfig -p` (`name (flags) => path`) must be in the parsed cache.
    #[test]
    fn real_cache_matches_ldconfig_p() {
        let Some(cache) = LdCache::load(Path::new(REAL)).unwrap() else {
            eprintln!("note: {REAL} does not exist; skipping");
            return;
        };
        let out = ["ldconfig", "/sbin/ldconfig", "/usr/sbin/ldconfig"]
            .iter()
            .find_map(|exe| Command::new(exe).arg("-p").output().ok());
        let Some(out) = out.filter(|o| o.status.success()) else {
            eprintln!("note: ldconfig -p unavailable; skipping");
            return;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let mut checked = 0;
        for line in text.lines().skip(1) {
            let Some((left, path)) = line.split_once(" => ") else {
                continue;
            };
            let Some(name) = left.split_whitespace().next() else {
                continue;
            };
            assert!(
                cache.lookup(name).iter().any(|p| p == Path::new(path)),
                "{name} => {path} from ldconfig -p missing; parsed {:?}",
                cache.lookup(name)
            );
            checked += 1;
        }
        assert_eq!(checked, cache.len(), "entry count differs from ldconfig -p");
    }

    #[test]
    fn truncated_real_cache_errors() {
        let Ok(bytes) = std::fs::read(REAL) else {
            eprintln!("note: {REAL} unreadable; skipping");
            return;
        };
        // Every cut inside the header and entry table must fail cleanly.
        let nlibs = u32::from_le_bytes(bytes[20..24].try_into().unwrap()) as usize;
        let table_end = NEW_HEADER_LEN + nlibs * NEW_ENTRY_LEN;
        for cut in (0..table_end.min(bytes.len())).step_by(7) {
            assert!(
                LdCache::parse(&bytes[..cut]).is_err(),
                "cut at {cut} parsed"
            );
        }
        // A cut inside the strings either fails or parses; it must not panic.
        for cut in (table_end..bytes.len()).step_by(97) {
            let _ = LdCache::parse(&bytes[..cut]);
        }
        assert!(matches!(
            LdCache::parse(&bytes[..bytes.len() / 2]),
            Err(LdCacheError::BadString { .. }) | Err(LdCacheError::Truncated { .. })
        ));
    }

    #[test]
    fn garbage_errors() {
        assert!(matches!(LdCache::parse(b""), Err(LdCacheError::BadMagic)));
        assert!(matches!(
            LdCache::parse(b"hello world, this is not a cache at all"),
            Err(LdCacheError::BadMagic)
        ));
        // Pseudo-random bytes behind a valid magic: errors or parses, never panics.
        let mut state = 0x1234_5678_9abc_def0u64;
        for len in [0usize, 1, 19, 20, 47, 48, 49, 100, 1000, 4096] {
            for _ in 0..50 {
                let mut bytes = NEW_MAGIC.to_vec();
                bytes.extend_from_slice(NEW_VERSION);
                while bytes.len() < 20 + len {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    bytes.push(state as u8);
                }
                let _ = LdCache::parse(&bytes);
                let mut old = OLD_MAGIC.to_vec();
                old.extend_from_slice(&bytes[..len.min(bytes.len())]);
                let _ = LdCache::parse(&old);
            }
        }
        // Huge nlibs must not allocate or overflow.
        let mut bytes = build_cache_for_tests(&[("libx.so.1", "/lib/libx.so.1")], false);
        bytes[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            LdCache::parse(&bytes),
            Err(LdCacheError::Truncated { .. })
        ));
        let mut old = build_cache_for_tests(&[("libx.so.1", "/lib/libx.so.1")], true);
        old[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(LdCache::parse(&old).is_err());
    }

    #[test]
    fn synthetic_new_and_compat_formats() {
        let entries = [
            ("libfoo.so.1", "/opt/foo/lib/libfoo.so.1"),
            ("libfoo.so.1", "/usr/lib/libfoo.so.1"),
            ("libbar.so", "/usr/local/lib/libbar.so"),
        ];
        for legacy in [false, true] {
            let cache = LdCache::parse(&build_cache_for_tests(&entries, legacy)).unwrap();
            assert_eq!(cache.len(), 3);
            assert_eq!(
                cache.lookup("libfoo.so.1"),
                [
                    PathBuf::from("/opt/foo/lib/libfoo.so.1"),
                    PathBuf::from("/usr/lib/libfoo.so.1")
                ]
            );
            assert_eq!(
                cache.lookup("libbar.so"),
                [PathBuf::from("/usr/local/lib/libbar.so")]
            );
            assert_eq!(cache.entries("libbar.so")[0].flags, 0x0303);
            assert!(!cache.entries("libbar.so")[0].is_hwcap_specific());
        }
    }

    #[test]
    fn rejects_big_endian_legacy_only_and_unknown_version() {
        let mut be = build_cache_for_tests(&[("liba.so", "/lib/liba.so")], false);
        be[28] = ENDIAN_BIG;
        assert!(matches!(
            LdCache::parse(&be),
            Err(LdCacheError::UnsupportedByteOrder(_))
        ));
        let mut v2 = build_cache_for_tests(&[("liba.so", "/lib/liba.so")], false);
        v2[17..20].copy_from_slice(b"2.0");
        assert!(matches!(
            LdCache::parse(&v2),
            Err(LdCacheError::UnsupportedVersion(_))
        ));
        // Legacy header, zero entries, nothing after it.
        let mut legacy = OLD_MAGIC.to_vec();
        legacy.push(0);
        legacy.extend_from_slice(&0u32.to_le_bytes());
        assert!(matches!(
            LdCache::parse(&legacy),
            Err(LdCacheError::LegacyOnly)
        ));
        // An offset past the end of the file.
        let mut bad = build_cache_for_tests(&[("liba.so", "/lib/liba.so")], false);
        bad[NEW_HEADER_LEN + 8..NEW_HEADER_LEN + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            LdCache::parse(&bad),
            Err(LdCacheError::BadString { field: "path", .. })
        ));
    }

    #[test]
    fn missing_file_is_none() {
        let p =
            std::env::temp_dir().join(format!("cargo-oci-ldcache-missing-{}", std::process::id()));
        assert!(LdCache::load(&p).unwrap().is_none());
    }
}
