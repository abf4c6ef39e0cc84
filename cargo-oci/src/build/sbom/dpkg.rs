//! Reads a Debian package database (`var/lib/dpkg/status` and `info/*.list` under a root) to
//! say which installed package owns a file, and the distribution's `etc/os-release`. dpkg knows
//! some files only under `/lib/...` and others only under `/usr/lib/...` on a merged-/usr
//! system, so both aliases of a path are tried.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// One installed Debian package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebPackage {
    pub name: String,
    pub architecture: String,
    pub version: String,
    /// The source package (the binary package's own name when the record names none).
    pub source: String,
    pub source_version: String,
    /// The package's record in the status file, as dpkg wrote it (ends with a newline).
    pub record: String,
    /// Its `usr/share/doc/<name>/copyright` on the host, when there is one.
    pub copyright: Option<PathBuf>,
}

/// The installed packages of a root and the files each one owns.
#[derive(Debug, Default)]
pub struct Dpkg {
    packages: Vec<DebPackage>,
    /// Absolute path as dpkg lists it → index in `packages`.
    owners: HashMap<String, usize>,
}

/// The distribution a root runs, from its `etc/os-release`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distro {
    /// `ID` (`debian`).
    pub id: String,
    /// `VERSION_ID` (`12`).
    pub version_id: String,
    /// The file's text, for the image.
    pub text: String,
}

impl Distro {
    /// `debian-12`, as package URLs name it.
    pub fn purl_name(&self) -> String {
        if self.version_id.is_empty() {
            self.id.clone()
        } else {
            format!("{}-{}", self.id, self.version_id)
        }
    }
}

/// Reads `root/etc/os-release` (or `root/usr/lib/os-release`); `None` when neither exists.
pub fn os_release(root: &Path) -> Option<Distro> {
    let text = ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .find_map(|p| std::fs::read_to_string(root.join(p)).ok())?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim().trim_matches('"').to_string())
            .unwrap_or_default()
    };
    let id = field("ID");
    (!id.is_empty()).then(|| Distro {
        version_id: field("VERSION_ID"),
        id,
        text: text.clone(),
    })
}

impl Dpkg {
    /// Reads the database under `root`; an empty database when the root has none (not Debian).
    pub fn open(root: &Path) -> Result<Dpkg> {
        let admin = root.join("var/lib/dpkg");
        let status = match std::fs::read_to_string(admin.join("status")) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Dpkg::default()),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}/status", admin.display()))
            }
        };
        let mut db = Dpkg::default();
        for record in records(&status) {
            let fields = fields(&record);
            let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
            if !get("Status").ends_with(" installed") || get("Package").is_empty() {
                continue;
            }
            let (name, architecture, version) =
                (get("Package"), get("Architecture"), get("Version"));
            // `Source: openssl (3.0.11-1)` names the source version when it differs.
            let (source, source_version) = match fields.get("Source") {
                Some(s) => match s.split_once(' ') {
                    Some((n, v)) => (n.to_string(), v.trim_matches(['(', ')']).to_string()),
                    None => (s.clone(), version.clone()),
                },
                None => (name.clone(), version.clone()),
            };
            let copyright = root.join("usr/share/doc").join(&name).join("copyright");
            let index = db.packages.len();
            let list = [
                format!("{name}:{architecture}.list"),
                format!("{name}.list"),
            ]
            .into_iter()
            .map(|f| admin.join("info").join(f))
            .find(|p| p.is_file());
            if let Some(list) = list {
                let text = std::fs::read_to_string(&list)
                    .with_context(|| format!("cannot read {}", list.display()))?;
                for line in text.lines().filter(|l| l.starts_with('/')) {
                    db.owners.entry(line.to_string()).or_insert(index);
                }
            }
            db.packages.push(DebPackage {
                name,
                architecture,
                version,
                source,
                source_version,
                record,
                copyright: copyright.is_file().then_some(copyright),
            });
        }
        Ok(db)
    }

    /// The package that owns `path` (absolute, as seen from the root), trying both merged-/usr
    /// aliases of it.
    pub fn owner(&self, path: &str) -> Option<&DebPackage> {
        aliases(path)
            .iter()
            .find_map(|p| self.owners.get(p))
            .map(|&i| &self.packages[i])
    }
}

/// `path` and its other merged-/usr spelling (`/lib/x` ↔ `/usr/lib/x`).
pub fn aliases(path: &str) -> Vec<String> {
    let mut out = vec![path.to_string()];
    for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        if let Some(rest) = path.strip_prefix(&format!("/usr/{top}/")) {
            out.push(format!("/{top}/{rest}"));
        } else if let Some(rest) = path.strip_prefix(&format!("/{top}/")) {
            out.push(format!("/usr/{top}/{rest}"));
        }
    }
    out
}

/// The records of a status file, each with its trailing newline.
fn records(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The single-line fields of a record (continuation lines are skipped).
fn fields(record: &str) -> HashMap<String, String> {
    record
        .lines()
        .filter(|l| !l.starts_with([' ', '\t']))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_merged_usr_aliases_are_tried() {
        let dir = tempfile::tempdir().unwrap();
        let admin = dir.path().join("var/lib/dpkg");
        std::fs::create_dir_all(admin.join("info")).unwrap();
        std::fs::write(
            admin.join("status"),
            "Package: zlib1g\nStatus: install ok installed\nArchitecture: amd64\nSource: zlib\n\
             Version: 1:1.2.13.dfsg-1\nDescription: compression\n more text\n\n\
             Package: libssl3\nStatus: install ok installed\nArchitecture: amd64\n\
             Source: openssl (3.0.11-1)\nVersion: 3.0.11-1~deb12u2\n\n\
             Package: gone\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1\n",
        )
        .unwrap();
        std::fs::write(
            admin.join("info/zlib1g:amd64.list"),
            "/.\n/lib/x86_64-linux-gnu/libz.so.1\n",
        )
        .unwrap();
        std::fs::write(
            admin.join("info/libssl3.list"),
            "/usr/lib/x86_64-linux-gnu/libssl.so.3\n",
        )
        .unwrap();
        let db = Dpkg::open(dir.path()).unwrap();
        let z = db.owner("/usr/lib/x86_64-linux-gnu/libz.so.1").unwrap();
        assert_eq!(
            (z.name.as_str(), z.version.as_str()),
            ("zlib1g", "1:1.2.13.dfsg-1")
        );
        assert_eq!(z.source, "zlib");
        assert!(z.record.contains(" more text\n"));
        let s = db.owner("/lib/x86_64-linux-gnu/libssl.so.3").unwrap();
        assert_eq!(
            (s.source.as_str(), s.source_version.as_str()),
            ("openssl", "3.0.11-1")
        );
        assert!(db.owner("/etc/ssl/certs/ca-certificates.crt").is_none());
    }

    #[test]
    fn a_root_without_dpkg_owns_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Dpkg::open(dir.path())
            .unwrap()
            .owner("/lib/libc.so.6")
            .is_none());
        assert!(os_release(dir.path()).is_none());
    }
}
