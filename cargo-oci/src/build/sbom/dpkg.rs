//! Reads a Debian package database (`var/lib/dpkg/status` and `info/*.list` under a root) to
//! say which installed package owns a file, and the distribution's `etc/os-release`. dpkg knows
//! some files only under `/lib/...` and others only under `/usr/lib/...` on a merged-/usr
//! system, so both aliases of a path are tried.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::dpkg_cache;

/// One installed Debian package.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    #[serde(skip)]
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
    /// Reads the database under `root` for the owners of `wanted` (absolute paths as dpkg lists
    /// them; every alias to be tried must be given); an empty database when the root has none
    /// (not Debian). Only the `info/*.list` files are scanned, in the status file's order, and
    /// only for the wanted paths; `cache` (a directory) remembers the answers until the database
    /// changes (see [`dpkg_cache`](super::dpkg_cache)).
    pub fn open(root: &Path, wanted: &BTreeSet<String>, cache: Option<&Path>) -> Result<Dpkg> {
        let admin = root.join("var/lib/dpkg");
        match std::fs::metadata(admin.join("status")) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Dpkg::default()),
            _ => {}
        }
        let cache = cache.map(|dir| dpkg_cache::Record::open(dir, root, &admin));
        let mut known = cache
            .as_ref()
            .and_then(dpkg_cache::Record::load)
            .unwrap_or_default();
        let missing: HashSet<&str> = wanted
            .iter()
            .map(String::as_str)
            .filter(|p| !known.contains_key(*p))
            .collect();
        if !missing.is_empty() {
            let packages = installed(&admin)?;
            let found = scan(&packages, &admin, &missing)?;
            for path in missing {
                let owner = found.get(path).map(|&i| packages[i].clone());
                known.insert(path.to_string(), owner);
            }
            if let Some(cache) = &cache {
                // Another build may have added answers since (the images of a workspace are
                // packaged in parallel): keep them.
                let mut merged = cache.load().unwrap_or_default();
                merged.extend(known.iter().map(|(k, v)| (k.clone(), v.clone())));
                cache.store(&merged);
            }
        }
        let mut db = Dpkg::default();
        let mut index: HashMap<(String, String), usize> = HashMap::new();
        for path in wanted {
            let Some(Some(p)) = known.get(path) else {
                continue;
            };
            let key = (p.name.clone(), p.architecture.clone());
            let i = *index.entry(key).or_insert_with(|| {
                let copyright = root.join("usr/share/doc").join(&p.name).join("copyright");
                db.packages.push(DebPackage {
                    copyright: copyright.is_file().then_some(copyright),
                    ..p.clone()
                });
                db.packages.len() - 1
            });
            db.owners.insert(path.clone(), i);
        }
        Ok(db)
    }

    /// The package that owns `path` (absolute, as seen from the root), trying both merged-/usr
    /// aliases of it; only paths asked for when opening have an owner.
    pub fn owner(&self, path: &str) -> Option<&DebPackage> {
        aliases(path)
            .iter()
            .find_map(|p| self.owners.get(p))
            .map(|&i| &self.packages[i])
    }
}

/// The installed packages of the status file in `admin`, in its order.
fn installed(admin: &Path) -> Result<Vec<DebPackage>> {
    let status = std::fs::read_to_string(admin.join("status"))
        .with_context(|| format!("cannot read {}/status", admin.display()))?;
    let mut packages = Vec::new();
    for record in records(&status) {
        let fields = fields(&record);
        let get = |k: &str| fields.get(k).map(|v| v.to_string()).unwrap_or_default();
        if !get("Status").ends_with(" installed") || get("Package").is_empty() {
            continue;
        }
        let (name, architecture, version) = (get("Package"), get("Architecture"), get("Version"));
        // `Source: openssl (3.0.11-1)` names the source version when it differs.
        let (source, source_version) = match fields.get("Source") {
            Some(s) => match s.split_once(' ') {
                Some((n, v)) => (n.to_string(), v.trim_matches(['(', ')']).to_string()),
                None => (s.to_string(), version.clone()),
            },
            None => (name.clone(), version.clone()),
        };
        packages.push(DebPackage {
            name,
            architecture,
            version,
            source,
            source_version,
            record,
            copyright: None,
        });
    }
    Ok(packages)
}

/// The first package of `packages` (in status order) whose file list holds each of `wanted`; the
/// scan stops once every path has its owner.
fn scan(
    packages: &[DebPackage],
    admin: &Path,
    wanted: &HashSet<&str>,
) -> Result<HashMap<String, usize>> {
    // About a thousand small files on a desktop system: read on every core, each thread a
    // contiguous share of the packages; the first package (in the status file's order) that
    // lists a path owns it, as when read in turn.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let share = packages.len().div_ceil(threads).max(1);
    let parts: Vec<Result<HashMap<String, usize>>> = std::thread::scope(|s| {
        let jobs: Vec<_> = (0..packages.len())
            .step_by(share)
            .map(|from| {
                s.spawn(move || {
                    scan_share(
                        packages,
                        from..(from + share).min(packages.len()),
                        admin,
                        wanted,
                    )
                })
            })
            .collect();
        jobs.into_iter()
            .map(|j| {
                j.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("reading the package lists panicked")))
            })
            .collect()
    });
    let mut found: HashMap<String, usize> = HashMap::new();
    for part in parts {
        for (path, index) in part? {
            let owner = found.entry(path).or_insert(index);
            *owner = (*owner).min(index);
        }
    }
    Ok(found)
}

/// [`scan`] of the packages in `range`.
fn scan_share(
    packages: &[DebPackage],
    range: std::ops::Range<usize>,
    admin: &Path,
    wanted: &HashSet<&str>,
) -> Result<HashMap<String, usize>> {
    let mut found: HashMap<String, usize> = HashMap::new();
    let longest = wanted.iter().map(|p| p.len()).max().unwrap_or(0);
    let mut lengths = vec![false; longest + 1];
    for p in wanted {
        lengths[p.len()] = true;
    }
    for index in range {
        let p = &packages[index];
        if found.len() == wanted.len() {
            break;
        }
        let text = [
            format!("{}:{}.list", p.name, p.architecture),
            format!("{}.list", p.name),
        ]
        .into_iter()
        .map(|f| admin.join("info").join(f))
        .find_map(|list| match std::fs::read_to_string(&list) {
            Ok(text) => Some(Ok(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(Err(e).with_context(|| format!("cannot read {}", list.display()))),
        })
        .transpose()?;
        for line in text.iter().flat_map(|t| t.lines()) {
            if line.len() <= longest && lengths[line.len()] && wanted.contains(line) {
                found.entry(line.to_string()).or_insert(index);
            }
        }
    }
    Ok(found)
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
fn fields(record: &str) -> HashMap<&str, &str> {
    record
        .lines()
        .filter(|l| !l.starts_with([' ', '\t']))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k, v.trim()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The paths the tests ask about, each with its merged-/usr aliases.
    const ASKED: [&str; 4] = [
        "/usr/lib/x86_64-linux-gnu/libz.so.1",
        "/lib/x86_64-linux-gnu/libssl.so.3",
        "/etc/ssl/certs/ca-certificates.crt",
        "/lib/libc.so.6",
    ];

    fn open(root: &Path, cache: Option<&Path>) -> Dpkg {
        let wanted = ASKED.iter().flat_map(|p| aliases(p)).collect();
        Dpkg::open(root, &wanted, cache).unwrap()
    }

    fn owner_of(db: &Dpkg, path: &str) -> Option<String> {
        db.owner(path).map(|p| format!("{} {}", p.name, p.version))
    }

    /// A database where zlib1g owns libz and libssl3 owns libssl.
    fn database(root: &Path) {
        let admin = root.join("var/lib/dpkg");
        std::fs::create_dir_all(admin.join("info")).unwrap();
        std::fs::write(
            admin.join("status"),
            "Package: zlib1g\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1\n\n\
             Package: libssl3\nStatus: install ok installed\nArchitecture: amd64\nVersion: 3\n",
        )
        .unwrap();
        std::fs::write(
            admin.join("info/zlib1g:amd64.list"),
            "/.\n/usr/lib/x86_64-linux-gnu/libz.so.1\n",
        )
        .unwrap();
        std::fs::write(
            admin.join("info/libssl3.list"),
            "/usr/lib/x86_64-linux-gnu/libssl.so.3\n",
        )
        .unwrap();
    }

    #[test]
    fn remembered_owners_hold_until_the_database_changes() {
        let root = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        database(root.path());
        let libz = "/lib/x86_64-linux-gnu/libz.so.1";
        let db = open(root.path(), Some(cache.path()));
        assert_eq!(owner_of(&db, libz).as_deref(), Some("zlib1g 1"));
        assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 1);
        // The answers come from the record while the database's identity holds: a list file
        // edited in place (which dpkg never does) is not read again.
        let info = root.path().join("var/lib/dpkg/info");
        std::fs::write(info.join("zlib1g:amd64.list"), "/.\n").unwrap();
        let db = open(root.path(), Some(cache.path()));
        assert_eq!(owner_of(&db, libz).as_deref(), Some("zlib1g 1"));
        assert_eq!(owner_of(&open(root.path(), None), libz), None);
        std::fs::write(
            info.join("zlib1g:amd64.list"),
            "/.\n/usr/lib/x86_64-linux-gnu/libz.so.1\n",
        )
        .unwrap();
        // A package upgrade rewrites the status file and replaces a list file: the new owner.
        let admin = root.path().join("var/lib/dpkg");
        std::fs::write(
            admin.join("status.new"),
            "Package: zlib1g\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2\n\n\
             Package: libssl3\nStatus: install ok installed\nArchitecture: amd64\nVersion: 3\n",
        )
        .unwrap();
        std::fs::rename(admin.join("status.new"), admin.join("status")).unwrap();
        let db = open(root.path(), Some(cache.path()));
        assert_eq!(owner_of(&db, libz).as_deref(), Some("zlib1g 2"));
        // A list file renamed into place (dpkg's way) with a new path: found, not remembered.
        std::fs::write(
            info.join("libssl3.list-new"),
            "/usr/lib/x86_64-linux-gnu/libssl.so.3\n/usr/lib/libc.so.6\n",
        )
        .unwrap();
        std::fs::rename(info.join("libssl3.list-new"), info.join("libssl3.list")).unwrap();
        let db = open(root.path(), Some(cache.path()));
        assert_eq!(
            owner_of(&db, "/lib/libc.so.6").as_deref(),
            Some("libssl3 3")
        );
        // A removed package owns nothing any more.
        std::fs::write(
            admin.join("status.new"),
            "Package: libssl3\nStatus: install ok installed\nArchitecture: amd64\nVersion: 3\n",
        )
        .unwrap();
        std::fs::rename(admin.join("status.new"), admin.join("status")).unwrap();
        let db = open(root.path(), Some(cache.path()));
        assert_eq!(owner_of(&db, libz), None);
        assert_eq!(
            owner_of(&db, "/lib/libc.so.6").as_deref(),
            Some("libssl3 3")
        );
        // The same answers without a cache.
        let plain = open(root.path(), None);
        for p in ASKED {
            assert_eq!(owner_of(&plain, p), owner_of(&db, p), "{p}");
        }
        // A damaged record is not read.
        let record = std::fs::read_dir(cache.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut bytes = std::fs::read(&record).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 1;
        std::fs::write(&record, bytes).unwrap();
        let db = open(root.path(), Some(cache.path()));
        assert_eq!(
            owner_of(&db, "/lib/libc.so.6").as_deref(),
            Some("libssl3 3")
        );
    }

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
        let db = open(dir.path(), None);
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
    fn of_two_packages_listing_a_path_the_first_in_the_status_file_owns_it() {
        let root = tempfile::tempdir().unwrap();
        let admin = root.path().join("var/lib/dpkg");
        std::fs::create_dir_all(admin.join("info")).unwrap();
        // Enough packages that each core reads a share; the path is listed by a package early in
        // the first share and by one in a later share.
        let mut status = String::new();
        for n in 0..40 {
            status.push_str(&format!(
                "Package: p{n:02}\nStatus: install ok installed\nArchitecture: amd64\nVersion: {n}\n\n"
            ));
            let listed = if n == 5 || n == 25 || n == 39 {
                "/usr/lib/x86_64-linux-gnu/libz.so.1\n"
            } else {
                "/.\n"
            };
            std::fs::write(admin.join(format!("info/p{n:02}.list")), listed).unwrap();
        }
        std::fs::write(admin.join("status"), status).unwrap();
        let db = open(root.path(), None);
        assert_eq!(
            owner_of(&db, "/usr/lib/x86_64-linux-gnu/libz.so.1").as_deref(),
            Some("p05 5")
        );
    }

    #[test]
    fn a_root_without_dpkg_owns_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(open(dir.path(), None).owner("/lib/libc.so.6").is_none());
        assert!(os_release(dir.path()).is_none());
    }
}
