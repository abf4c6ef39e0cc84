//! `cargo oci clean`: empties cargo-oci's caches under `target/oci`. The blob store keeps only
//! what the layouts there reference; layer-cache records whose blob is gone and every temporary
//! file an interrupted run left go too. `--all` removes `target/oci` whole.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::oci::digest::Digest;
use crate::sink::layout;
use crate::util::fs::is_temp_name;

/// What a clean removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cleaned {
    pub files: u64,
    pub bytes: u64,
}

/// The layouts under `oci_dir` (directories holding an `oci-layout` file, a few levels deep;
/// cargo-oci's own hidden directories are not searched).
fn layouts(oci_dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![(oci_dir.to_path_buf(), 0)];
    while let Some((dir, depth)) = todo.pop() {
        if dir.join("oci-layout").is_file() {
            found.push(dir);
            continue;
        }
        if depth >= 4 {
            continue;
        }
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let hidden = e.file_name().to_string_lossy().starts_with('.');
            if !hidden && e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push((e.path(), depth + 1));
            }
        }
    }
    found
}

/// Removes one file, counting it.
fn remove(path: &Path, done: &mut Cleaned) {
    let size = std::fs::symlink_metadata(path).map_or(0, |m| m.len());
    if std::fs::remove_file(path).is_ok() {
        done.files += 1;
        done.bytes += size;
    }
}

/// Removes the temporary files directly in `dir`.
fn remove_temps(dir: &Path, done: &mut Cleaned) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if is_temp_name(&e.file_name().to_string_lossy()) && e.path().is_file() {
            remove(&e.path(), done);
        }
    }
}

/// Bytes and files under `dir`.
fn tally(dir: &Path) -> Cleaned {
    let mut t = Cleaned::default();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(ft) if ft.is_dir() => todo.push(e.path()),
                Ok(_) => {
                    t.files += 1;
                    t.bytes += e.metadata().map_or(0, |m| m.len());
                }
                Err(_) => {}
            }
        }
    }
    t
}

/// Cleans `oci_dir` (`target/oci`); with `all`, removes it. Meant for when no build is running
/// on this target directory.
pub fn clean(oci_dir: &Path, all: bool) -> Result<Cleaned> {
    if !oci_dir.is_dir() {
        return Ok(Cleaned::default());
    }
    if all {
        let t = tally(oci_dir);
        std::fs::remove_dir_all(oci_dir)
            .with_context(|| format!("cannot remove {}", oci_dir.display()))?;
        return Ok(t);
    }
    let mut done = Cleaned::default();
    let mut keep = BTreeSet::new();
    for l in layouts(oci_dir) {
        keep.extend(layout::referenced_blobs(&l).unwrap_or_default());
        remove_temps(&l, &mut done);
        remove_temps(&l.join("blobs").join("sha256"), &mut done);
    }
    // Layouts hold copies of their blobs: whatever the store loses is only cache.
    let store = oci_dir.join(".store").join("sha256");
    for e in std::fs::read_dir(&store).into_iter().flatten().flatten() {
        if !keep.contains(e.file_name().to_string_lossy().as_ref()) && e.path().is_file() {
            remove(&e.path(), &mut done);
        }
    }
    let records = oci_dir.join(".cache").join("layers");
    for e in std::fs::read_dir(&records).into_iter().flatten().flatten() {
        let path = e.path();
        let blob = std::fs::read(&path)
            .ok()
            .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok())
            .and_then(|v| {
                v["layer"]["blob"]["digest"]
                    .as_str()?
                    .parse::<Digest>()
                    .ok()
            });
        let live = blob.is_some_and(|d| store.join(d.hex()).is_file());
        if !live && path.is_file() {
            remove(&path, &mut done);
        }
    }
    remove_temps(oci_dir, &mut done);
    Ok(done)
}
