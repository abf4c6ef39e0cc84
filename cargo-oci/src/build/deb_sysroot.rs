//! A target's file system made from a directory of `.deb` files (what `apt-get download
//! pkg:arm64 ...` leaves): every package unpacked into the per-machine cache, with a dpkg
//! database for them (`var/lib/dpkg/status` and `info/<pkg>[:<arch>].list`), so that the
//! closure is resolved in it and its files are known by their packages. The directory is keyed
//! by the digests of the `.deb` files and the architecture, made in a temporary directory and
//! renamed into place: concurrent and interrupted runs are safe, and a second run unpacks nothing.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::util::error::UsageError;

/// The version of the unpacked layout: part of every cache key.
const FORMAT: &str = "cargo-oci deb sysroot 1";

/// Whether `dir` is a directory of `.deb` files rather than a file system: `.deb` files at its
/// top level and no `lib` or `usr` tree.
pub fn is_deb_dir(dir: &Path) -> bool {
    if dir.join("lib").exists() || dir.join("usr").exists() {
        return false;
    }
    !deb_files(dir).unwrap_or_default().is_empty()
}

/// The `.deb` files directly in `dir`, by name.
fn deb_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb") && p.is_file())
        .collect();
    out.sort();
    Ok(out)
}

/// One package read from its `.deb` file.
struct Deb {
    file: PathBuf,
    name: String,
    version: String,
    architecture: String,
    multi_arch_same: bool,
    /// The control paragraph, without its trailing blank lines.
    control: String,
    /// The uncompressed `data.tar`.
    data: Vec<u8>,
}

/// The file system of the packages in `dir` for the Debian architecture `arch` (`arm64`):
/// unpacked into `cache/sysroots/<key>` unless it is there already. Returns the root and
/// whether it was unpacked now.
pub fn make(dir: &Path, arch: &str, cache: &Path) -> Result<(PathBuf, bool)> {
    let files = deb_files(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let mut key = Sha256::new();
    key.update(FORMAT.as_bytes());
    key.update([0]);
    key.update(arch.as_bytes());
    for f in &files {
        let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
        key.update([0]);
        key.update(Sha256::digest(&bytes));
    }
    let parent = cache.join("sysroots");
    let root = parent.join(&hex::encode(key.finalize())[..32]);
    if root.join("var/lib/dpkg/status").is_file() {
        return Ok((root, false));
    }
    // Every package is read and checked before anything is written.
    let mut debs: BTreeMap<String, Deb> = BTreeMap::new();
    for f in &files {
        let deb = read_deb(f)?;
        if deb.architecture != arch && deb.architecture != "all" {
            return Err(UsageError::new(format!(
                "{} is package {} for architecture {}, not for the target's {arch}",
                f.display(),
                deb.name,
                deb.architecture
            ))
            .hint(format!(
                "download the target's package instead (`apt-get download {}:{arch}`) and remove this file from {}",
                deb.name,
                dir.display()
            ))
            .into());
        }
        if let Some(other) = debs.get(&deb.name) {
            if other.version != deb.version {
                return Err(UsageError::new(format!(
                    "two versions of package {} in {}: {} ({}) and {} ({})",
                    deb.name,
                    dir.display(),
                    other.version,
                    other.file.display(),
                    deb.version,
                    f.display()
                ))
                .hint("keep one version of each package in the directory")
                .into());
            }
            continue;
        }
        debs.insert(deb.name.clone(), deb);
    }
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    remove_stale_dirs(&parent);
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a directory in {}", parent.display()))?;
    let mut status = String::new();
    for deb in debs.values() {
        let list = unpack(deb, tmp.path())?;
        let info = tmp.path().join("var/lib/dpkg/info");
        std::fs::create_dir_all(&info)?;
        let list_name = if deb.multi_arch_same {
            format!("{}:{}.list", deb.name, deb.architecture)
        } else {
            format!("{}.list", deb.name)
        };
        std::fs::write(info.join(list_name), list)?;
        status.push_str(&status_record(&deb.control));
        status.push('\n');
    }
    let admin = tmp.path().join("var/lib/dpkg");
    std::fs::create_dir_all(&admin)?;
    std::fs::write(admin.join("status"), status)?;
    let made = tmp.keep();
    match std::fs::rename(&made, &root) {
        Ok(()) => Ok((root, true)),
        // Another run put the same packages there first.
        Err(_) if root.join("var/lib/dpkg/status").is_file() => {
            std::fs::remove_dir_all(&made).ok();
            Ok((root, false))
        }
        Err(e) => {
            std::fs::remove_dir_all(&made).ok();
            Err(anyhow::Error::new(e).context(format!("cannot create {}", root.display())))
        }
    }
}

/// Removes the temporary directories that interrupted runs left in `parent` (a run in progress
/// is done with its own well within the hour).
fn remove_stale_dirs(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let old = e
            .metadata()
            .ok()
            .filter(|m| m.is_dir())
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() >= 3600);
        if old && e.file_name().to_string_lossy().starts_with(".tmp-") {
            std::fs::remove_dir_all(e.path()).ok();
        }
    }
}

/// The control paragraph as a status record: `Status: install ok installed` after `Package`.
fn status_record(control: &str) -> String {
    let mut out = String::new();
    for line in control.lines() {
        out.push_str(line);
        out.push('\n');
        if line.starts_with("Package:") {
            out.push_str("Status: install ok installed\n");
        }
    }
    out
}

/// The error for a file that is not a readable `.deb`.
fn damaged(file: &Path, what: impl std::fmt::Display) -> anyhow::Error {
    UsageError::new(format!(
        "{} is not a readable Debian package: {what}",
        file.display()
    ))
    .hint("download it again (`apt-get download PACKAGE:ARCH`), or remove it from the directory")
    .into()
}

/// Reads a `.deb`: an `ar` archive of `debian-binary`, `control.tar.*` and `data.tar.*`.
fn read_deb(file: &Path) -> Result<Deb> {
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let mut archive = ar::Archive::new(std::io::BufReader::new(f));
    let (mut control, mut data, mut magic) = (None, None, None);
    let mut members = 0;
    while let Some(entry) = archive.next_entry() {
        members += 1;
        if members > 16 {
            return Err(damaged(file, "too many members"));
        }
        let mut entry = entry.map_err(|e| damaged(file, e))?;
        let name = String::from_utf8_lossy(entry.header().identifier())
            .trim_end_matches('/')
            .to_string();
        let size = entry.header().size();
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| damaged(file, format!("{name}: {e}")))?;
        if bytes.len() as u64 != size {
            return Err(damaged(file, format!("{name} is cut short")));
        }
        if name == "debian-binary" {
            magic = Some(bytes);
        } else if let Some(codec) = name.strip_prefix("control.tar") {
            control = Some(decompress(codec, &bytes).map_err(|e| damaged(file, e))?);
        } else if let Some(codec) = name.strip_prefix("data.tar") {
            data = Some(decompress(codec, &bytes).map_err(|e| damaged(file, e))?);
        }
    }
    if !magic.is_some_and(|m| m.starts_with(b"2.")) {
        return Err(damaged(file, "no debian-binary member of format 2.x"));
    }
    let (Some(control), Some(data)) = (control, data) else {
        return Err(damaged(file, "no control.tar or data.tar member"));
    };
    let text = control_file(&control).map_err(|e| damaged(file, e))?;
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let (name, version, architecture) = (field("Package"), field("Version"), field("Architecture"));
    if name.is_empty() || version.is_empty() || architecture.is_empty() {
        return Err(damaged(
            file,
            "its control file lacks Package, Version or Architecture",
        ));
    }
    // The whole data archive is read once here, so that a damaged one is found before anything
    // is written.
    list_files(&data).map_err(|e| damaged(file, e))?;
    Ok(Deb {
        file: file.to_path_buf(),
        multi_arch_same: field("Multi-Arch") == "same",
        control: text.trim_end().to_string(),
        name,
        version,
        architecture,
        data,
    })
}

/// A member's bytes uncompressed, by its name's suffix (`.xz`, `.gz`, `.zst`, or none).
fn decompress(suffix: &str, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    match suffix {
        "" => out.extend_from_slice(bytes),
        ".gz" => {
            flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut out)
                .map_err(|e| format!("gzip: {e}"))?;
        }
        ".xz" => lzma_rs::xz_decompress(&mut std::io::BufReader::new(bytes), &mut out)
            .map_err(|e| format!("xz: {e}"))?,
        ".zst" => {
            zstd::stream::read::Decoder::new(bytes)
                .and_then(|mut d| d.read_to_end(&mut out))
                .map_err(|e| format!("zstd: {e}"))?;
        }
        other => return Err(format!("unknown compression `tar{other}`")),
    }
    Ok(out)
}

/// The `control` file of a control archive.
fn control_file(tar_bytes: &[u8]) -> Result<String, String> {
    let mut archive = tar::Archive::new(tar_bytes);
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let path = entry.path().map_err(|e| e.to_string())?.into_owned();
        if path == Path::new("./control") || path == Path::new("control") {
            let mut s = String::new();
            entry
                .read_to_string(&mut s)
                .map_err(|e| format!("control: {e}"))?;
            return Ok(s);
        }
    }
    Err("no control file in control.tar".into())
}

/// The paths of a data archive as dpkg lists them (`/.`, `/lib`, `/lib/x`), reading every entry.
fn list_files(tar_bytes: &[u8]) -> Result<String, String> {
    let mut out = String::new();
    let mut archive = tar::Archive::new(tar_bytes);
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let path = entry.path().map_err(|e| e.to_string())?.into_owned();
        std::io::copy(&mut entry, &mut std::io::sink()).map_err(|e| e.to_string())?;
        let rel = path.to_string_lossy();
        let rel = rel.trim_start_matches("./").trim_end_matches('/');
        if rel.is_empty() || rel == "." {
            out.push_str("/.\n");
        } else {
            out.push('/');
            out.push_str(rel);
            out.push('\n');
        }
    }
    Ok(out)
}

/// Unpacks a package's files under `root`; returns its file list.
fn unpack(deb: &Deb, root: &Path) -> Result<String> {
    let list = list_files(&deb.data).map_err(|e| damaged(&deb.file, e))?;
    let mut archive = tar::Archive::new(deb.data.as_slice());
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    for entry in archive.entries()? {
        let mut entry = entry?;
        entry.unpack_in(root).with_context(|| {
            format!(
                "cannot unpack {} of {} into {}",
                entry
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                deb.file.display(),
                root.display()
            )
        })?;
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn deb(path: &Path, name: &str, version: &str, arch: &str) {
        let control = format!(
            "Package: {name}\nVersion: {version}\nArchitecture: {arch}\nMulti-Arch: same\nDescription: test\n"
        );
        let control_tar = tar_of(&[("./control", control.as_bytes())]);
        let data_tar = tar_of(&[(&format!("./usr/lib/{name}.so"), b"lib".as_slice())]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data_tar).unwrap();
        let data_gz = gz.finish().unwrap();
        let mut a = ar::Builder::new(std::fs::File::create(path).unwrap());
        for (n, bytes) in [
            ("debian-binary", b"2.0\n".to_vec()),
            ("control.tar", control_tar),
            ("data.tar.gz", data_gz),
        ] {
            a.append(
                &ar::Header::new(n.into(), bytes.len() as u64),
                bytes.as_slice(),
            )
            .unwrap();
        }
    }

    #[test]
    fn unpacks_once_with_a_database_and_refuses_bad_sets() {
        let dir = tempfile::tempdir().unwrap();
        let debs = dir.path().join("debs");
        std::fs::create_dir(&debs).unwrap();
        deb(&debs.join("a.deb"), "liba", "1.0-1", "arm64");
        deb(&debs.join("b.deb"), "libb", "2", "all");
        assert!(is_deb_dir(&debs));
        let cache = dir.path().join("cache");
        let (root, fresh) = make(&debs, "arm64", &cache).unwrap();
        assert!(fresh);
        assert_eq!(std::fs::read(root.join("usr/lib/liba.so")).unwrap(), b"lib");
        let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
        assert!(
            status.contains("Package: liba\nStatus: install ok installed\nVersion: 1.0-1\n"),
            "{status}"
        );
        let list = std::fs::read_to_string(root.join("var/lib/dpkg/info/liba:arm64.list")).unwrap();
        assert!(list.contains("/usr/lib/liba.so\n"), "{list}");
        assert_eq!(make(&debs, "arm64", &cache).unwrap(), (root.clone(), false));

        // Another architecture, two versions, a damaged file: refused, nothing new written.
        let refused = |cache: &Path| {
            let e = make(&debs, "arm64", cache).unwrap_err();
            assert!(e.downcast_ref::<UsageError>().is_some(), "{e:#}");
            assert!(!cache.join("sysroots").exists());
            e.to_string()
        };
        deb(&debs.join("c.deb"), "libc", "1", "amd64");
        assert!(refused(&dir.path().join("c1")).contains("architecture amd64"));
        deb(&debs.join("c.deb"), "liba", "1.1", "arm64");
        assert!(refused(&dir.path().join("c2")).contains("two versions"));
        let bytes = std::fs::read(debs.join("a.deb")).unwrap();
        std::fs::write(debs.join("c.deb"), &bytes[..bytes.len() - 40]).unwrap();
        assert!(refused(&dir.path().join("c3")).contains("not a readable"));
    }
}
