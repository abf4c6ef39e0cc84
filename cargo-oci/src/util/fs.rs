//! Writing files so that readers never see half of one (a temporary file in the destination's
//! directory, renamed into place when complete), removing the temporary files an interrupted
//! run left behind, and exclusive locks that serialise writers of one directory.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

/// The name prefix of [`write_atomic`]'s temporary files.
pub const TEMP_PREFIX: &str = ".cargo-oci-";

/// Writes `path` through a temporary file in the same directory, renamed into place on success.
/// The file gets mode 0666 less the umask, as files other tools create.
///
/// It is not flushed to the disk (no `fsync`): a reader never sees half a file, and after a
/// power loss a file may be empty or missing, which every reader here handles. Caches and
/// records are sealed or checked against digests when read, and a build's outputs are, like
/// cargo's own, made again by the next build. An `fsync` costs 3 to 20 ms on an ordinary disk
/// and a build writes a dozen such files.
pub fn write_atomic(path: &Path, f: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    write_atomic_file(path, |file| {
        let mut w = io::BufWriter::new(file);
        f(&mut w)?;
        w.flush()?;
        Ok(())
    })
}

/// [`write_atomic`], handing `f` the temporary file itself: copies from another file into it
/// (`std::io::copy` between files) then stay in the kernel (`copy_file_range`).
pub fn write_atomic_file(path: &Path, f: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    // On any error the temporary file is dropped, and so removed.
    let written = f(tmp.as_file_mut()).and_then(|()| {
        tmp.persist(path)
            .map_err(|e| e.error)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    });
    written.map_err(|e| explain_disk_full(e, dir, path))
}

/// `err` as it is, or, when the disk was full, with a first line saying so: where (`dir`), what
/// was not written (`path`), and what to do.
pub fn explain_disk_full(err: anyhow::Error, dir: &Path, path: &Path) -> anyhow::Error {
    if is_disk_full(&err) {
        let m = disk_full(dir, path);
        err.context(m)
    } else {
        err
    }
}

/// Whether an error, or any of its causes, is the system's "no space left on device" (or a
/// quota exceeded).
pub fn is_disk_full(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<io::Error>().is_some_and(|e| {
            matches!(
                e.kind(),
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
            )
        })
    })
}

/// The message of a write to `path`, in the directory `dir`, that found the disk full.
pub fn disk_full(dir: &Path, path: &Path) -> String {
    format!(
        "the disk holding {} is full (no space left on device): {} was not written, and nothing \
         half-written is left there\n  help: free some space there (`df -h {}` shows it), or \
         write elsewhere",
        dir.display(),
        path.display(),
        dir.display()
    )
}

/// The mode a new file gets here (0666 less the umask), found once by making one.
pub fn new_file_mode() -> u32 {
    use std::os::unix::fs::PermissionsExt;
    static MODE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *MODE.get_or_init(|| {
        tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .permissions(std::fs::Permissions::from_mode(0o666))
            .tempfile()
            .and_then(|f| f.as_file().metadata())
            .map_or(0o644, |m| m.permissions().mode() & 0o777)
    })
}

/// Whether a file of this mode lacks permissions that a file made now would have (a private
/// file that earlier versions wrote, whatever the umask).
pub fn less_open_than_new(mode: u32) -> bool {
    let want = new_file_mode();
    mode & want != want
}

/// Whether a file name is one of cargo-oci's temporary files (blobs on their way into the store
/// or a layout, files on their way into place).
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with(".tmp-") || name.starts_with(TEMP_PREFIX)
}

/// Removes cargo-oci's temporary files directly in `dir` (a directory of cargo-oci's own) not
/// modified for `age` (left by a run that was interrupted; a run in progress keeps writing its
/// own). Returns the bytes removed.
pub fn remove_stale_temps(dir: &Path, age: Duration) -> u64 {
    remove_stale(dir, age, is_temp_name)
}

/// Removes [`write_atomic`]'s temporary files directly in `dir` (any directory: a user's too)
/// not modified for `age`.
pub fn remove_stale_output_temps(dir: &Path, age: Duration) -> u64 {
    remove_stale(dir, age, |n| n.starts_with(TEMP_PREFIX))
}

fn remove_stale(dir: &Path, age: Duration, ours: impl Fn(&str) -> bool) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut freed = 0;
    for entry in entries.flatten() {
        if !ours(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let Ok(m) = entry.metadata() else { continue };
        let old = m
            .modified()
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|a| a >= age);
        if m.is_file() && old && std::fs::remove_file(entry.path()).is_ok() {
            freed += m.len();
        }
    }
    freed
}

/// Takes an exclusive lock on the file `path` (created when missing), waiting for another
/// process that holds it; the lock lasts as long as the returned file is open.
pub fn lock_exclusive(path: &Path) -> Result<File> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    fs4::FileExt::lock(&f).with_context(|| format!("cannot lock {}", path.display()))?;
    Ok(f)
}

/// The environment variable that names the per-machine cache directory.
pub const CACHE_DIR_VAR: &str = "CARGO_OCI_CACHE_DIR";

/// cargo-oci's per-machine cache: `$CARGO_OCI_CACHE_DIR`, else `$XDG_CACHE_HOME/cargo-oci`, else
/// `~/.cache/cargo-oci`.
pub fn cache_dir() -> Result<PathBuf> {
    let absolute = |v: Option<std::ffi::OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(v) = std::env::var_os(CACHE_DIR_VAR).filter(|v| !v.is_empty()) {
        return std::path::absolute(PathBuf::from(&v)).with_context(|| {
            format!(
                "cannot find ${CACHE_DIR_VAR} ({})",
                PathBuf::from(v).display()
            )
        });
    }
    if let Some(x) = absolute(std::env::var_os("XDG_CACHE_HOME")) {
        return Ok(x.join("cargo-oci"));
    }
    if let Some(h) = absolute(std::env::var_os("HOME")) {
        return Ok(h.join(".cache").join("cargo-oci"));
    }
    Err(crate::util::error::UsageError::new(
        "no cache directory for the contract helper: HOME is not set",
    )
    .hint(format!(
        "set {CACHE_DIR_VAR} (or XDG_CACHE_HOME) to a directory cargo-oci may write"
    ))
    .into())
}
