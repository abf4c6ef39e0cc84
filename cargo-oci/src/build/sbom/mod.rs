//! What an image is made of, for its software bill of materials: the crates of the binary
//! ([`crates`]), the Debian packages its files come from ([`dpkg`]) and the files no package
//! owns. The [`Inventory`] is gathered once per build from the layer plan; [`render`] writes it
//! as SPDX 2.3 or CycloneDX 1.6 JSON for one image, named by its digest; [`render_index`] writes
//! the SBOM of a multi-platform index. The bytes depend only on the inputs: no clock is read,
//! identifiers are derived from the content.

mod auditable;
mod crate_cache;
pub mod crates;
mod cyclonedx;
pub mod dpkg;
mod dpkg_cache;
mod index;
pub mod scanner;
mod spdx;

use crate::util::sealed;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::Digest as _;

use crate::build::plan::{Content, Plan};
use crate::oci::image::Image;

pub use auditable::embed as embed_crate_list;
pub use crates::Crate;
pub use dpkg::{DebPackage, Distro};
pub use index::{index_purl, platform_images, render_index};

/// The SBOM formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    /// SPDX 2.3 JSON.
    #[default]
    Spdx,
    /// CycloneDX 1.6 JSON.
    Cyclonedx,
}

impl Format {
    /// The file name suffix (`.spdx.json`, `.cdx.json`).
    pub fn suffix(self) -> &'static str {
        match self {
            Format::Spdx => ".spdx.json",
            Format::Cyclonedx => ".cdx.json",
        }
    }

    /// The media type, as an OCI artifact names it.
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Spdx => "application/spdx+json",
            Format::Cyclonedx => "application/vnd.cyclonedx+json",
        }
    }
}

/// A Debian package in the image and the image paths it provides.
#[derive(Debug, Clone)]
pub struct DebUse {
    pub package: DebPackage,
    pub paths: Vec<String>,
    /// Only the debug variant carries it.
    pub debug_only: bool,
}

/// A file in the image that no package owns.
#[derive(Debug, Clone)]
pub struct FileUse {
    /// Absolute path in the image.
    pub path: String,
    pub sha1: String,
    pub sha256: String,
    pub debug_only: bool,
}

/// What the image is made of.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// The crates of the binary, its own package first.
    pub crates: Vec<Crate>,
    /// The binary's path in the image and its SHA-256 (empty until [`hash_binary`] fills it).
    pub binary: (String, String),
    /// Where the binary is on the host.
    pub binary_host: Option<PathBuf>,
    pub debs: Vec<DebUse>,
    pub files: Vec<FileUse>,
    /// The distribution the packages come from (the host's, or the sysroot's).
    pub distro: Option<Distro>,
    /// Seconds since the epoch the image's files carry: the documents' creation time.
    pub created: u64,
}

/// Gathers the inventory of the planned image: every host file of the plan is either the
/// binary, a file of an installed Debian package of `root`, or a file of its own. `cache` (a
/// directory) remembers the owners of files between runs.
pub fn gather(
    plan: &Plan,
    crates: Vec<Crate>,
    binary: &str,
    root: &Path,
    cache: Option<&Path>,
) -> Result<Inventory> {
    let layers = plan.layers.iter().map(|l| (l, false));
    let mut files = Vec::new();
    for (layer, debug_only) in layers.chain(plan.debug_layer.iter().map(|l| (l, true))) {
        for e in &layer.entries {
            let Content::File(host) = &e.content else {
                continue;
            };
            let image_path = format!("/{}", e.path);
            let known_as = if image_path == binary {
                Vec::new()
            } else {
                host_aliases(host, root)
            };
            files.push((image_path, host, known_as, debug_only));
        }
    }
    let wanted: BTreeSet<String> = files
        .iter()
        .flat_map(|(_, _, known_as, _)| known_as.iter().flat_map(|p| dpkg::aliases(p)))
        .collect();
    let db = dpkg::Dpkg::open(root, &wanted, cache)?;
    let mut inv = Inventory {
        crates,
        distro: dpkg::os_release(root),
        ..Inventory::default()
    };
    let mut debs: BTreeMap<(String, String), DebUse> = BTreeMap::new();
    for (image_path, host, known_as, debug_only) in files {
        if image_path == binary {
            inv.binary = (image_path, String::new());
            inv.binary_host = Some(host.clone());
            continue;
        }
        let owner = known_as.iter().find_map(|p| db.owner(p)).cloned();
        match owner {
            Some(pkg) => {
                let key = (pkg.name.clone(), pkg.architecture.clone());
                let d = debs.entry(key).or_insert_with(|| DebUse {
                    package: pkg,
                    paths: Vec::new(),
                    debug_only,
                });
                d.debug_only &= debug_only;
                d.paths.push(image_path);
            }
            None => inv.files.push(FileUse {
                path: image_path,
                sha1: hash_file::<sha1::Sha1>(host)?,
                sha256: hash_file::<sha2::Sha256>(host)?,
                debug_only,
            }),
        }
    }
    inv.debs = debs.into_values().collect();
    for d in &mut inv.debs {
        d.paths.sort();
    }
    inv.files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(inv)
}

/// The paths under which dpkg may know a host file: as named, and where its links lead.
fn host_aliases(host: &Path, root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let inside = |p: &Path| {
        p.strip_prefix(root)
            .ok()
            .map(|r| format!("/{}", r.to_string_lossy()))
    };
    out.extend(inside(host));
    if let Some(real) = std::fs::canonicalize(host).ok().as_deref().and_then(inside) {
        out.push(real);
    }
    out
}

/// Fills in the binary's SHA-256: 40 MB of binary take tens of milliseconds, so the build runs
/// this beside the layer writing rather than before it. The digest is remembered in `cache` (a
/// directory, one record per binary path) with the file's identity (device, inode, size,
/// modification and change times): the identity the layer cache already trusts to reuse the
/// layer that holds this same file. A binary cargo has not relinked is not read again.
pub fn hash_binary(inv: &mut Inventory, cache: Option<&Path>) -> Result<()> {
    use crate::config::fingerprint::{identity, Identity};
    #[derive(serde::Serialize, serde::Deserialize, PartialEq)]
    struct Record {
        identity: Identity,
        sha256: String,
    }
    let Some(host) = &inv.binary_host else {
        return Ok(());
    };
    let record_path = cache.map(|c| {
        let name = sha2::Sha256::digest(host.as_os_str().as_encoded_bytes());
        c.join(hex::encode(&name[..16]))
    });
    let before = identity(host);
    if let (Some(path), Some(id)) = (&record_path, &before) {
        if let Some(r) = sealed::read::<Record>(path).filter(|r| r.identity == *id) {
            inv.binary.1 = r.sha256;
            return Ok(());
        }
    }
    inv.binary.1 = hash_file::<sha2::Sha256>(host)?;
    // Only a file that did not change while it was read is remembered.
    if let (Some(path), Some(id)) = (&record_path, before) {
        if identity(host).as_ref() == Some(&id) {
            let record = Record {
                identity: id,
                sha256: inv.binary.1.clone(),
            };
            sealed::write(path, &record);
        }
    }
    Ok(())
}

fn hash_file<D: sha2::Digest>(path: &Path) -> Result<String> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut h = D::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// The image an SBOM describes.
pub struct Subject<'a> {
    pub image: &'a Image,
    /// The debug variant: its packages and files count too.
    pub debug: bool,
}

impl Subject<'_> {
    /// `pkg:oci/NAME@sha256%3A...?arch=...&repository_url=...`
    pub fn purl(&self) -> String {
        let name = &self.image.name;
        let last = name
            .repository
            .rsplit('/')
            .next()
            .unwrap_or(&name.repository);
        format!(
            "pkg:oci/{}@{}?arch={}&repository_url={}",
            last.to_lowercase(),
            pct(self.image.manifest.digest.as_ref()),
            self.image.architecture,
            pct(&format!("{}/{}", name.registry, name.repository)),
        )
    }
}

/// The SBOM of one image in `format`.
pub fn render(format: Format, inv: &Inventory, subject: &Subject<'_>) -> Result<Vec<u8>> {
    match format {
        Format::Spdx => spdx::render(inv, subject),
        Format::Cyclonedx => cyclonedx::render(inv, subject),
    }
}

/// `pkg:cargo/NAME@VERSION`.
pub fn crate_purl(c: &Crate) -> String {
    format!("pkg:cargo/{}@{}", c.name, pct(&c.version))
}

/// `pkg:deb/debian/NAME@VERSION?arch=ARCH&distro=debian-12`.
pub fn deb_purl(p: &DebPackage, distro: Option<&Distro>) -> String {
    let vendor = distro.map_or("debian", |d| d.id.as_str());
    let mut s = format!(
        "pkg:deb/{vendor}/{}@{}?arch={}",
        p.name,
        pct(&p.version),
        p.architecture
    );
    if let Some(d) = distro {
        s.push_str(&format!("&distro={}", d.purl_name()));
    }
    if p.source != p.name {
        s.push_str(&format!("&upstream={}", pct(&p.source)));
    }
    s
}

/// Percent-encodes what a package URL component may not hold as is.
fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A hex digest of `bytes`, for identifiers derived from the content.
fn content_id(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A UUID (version 5 layout) derived from the content.
fn content_uuid(bytes: &[u8]) -> String {
    let h = content_id(bytes);
    format!(
        "{}-{}-5{}-{}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        ["8", "9", "a", "b"][usize::from(h.as_bytes()[16] % 4)],
        &h[17..20],
        &h[20..32]
    )
}

/// RFC 3339 UTC time of `secs` since the epoch.
fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purls_encode_what_they_must() {
        let p = DebPackage {
            name: "zlib1g".into(),
            architecture: "amd64".into(),
            version: "1:1.2.13.dfsg-1".into(),
            source: "zlib".into(),
            source_version: "1:1.2.13.dfsg-1".into(),
            record: String::new(),
            copyright: None,
        };
        let d = Distro {
            id: "debian".into(),
            version_id: "12".into(),
            text: String::new(),
        };
        assert_eq!(
            deb_purl(&p, Some(&d)),
            "pkg:deb/debian/zlib1g@1%3A1.2.13.dfsg-1?arch=amd64&distro=debian-12&upstream=zlib"
        );
        let u = content_uuid(b"x");
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "5");
        assert_eq!(rfc3339(1), "1970-01-01T00:00:01Z");
    }

    #[test]
    fn the_binary_digest_is_remembered_until_the_binary_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (bin, cache) = (dir.path().join("app"), dir.path().join("digests"));
        std::fs::write(&bin, b"first build").unwrap();
        let inventory = || Inventory {
            binary: ("/bin/app".into(), String::new()),
            binary_host: Some(bin.clone()),
            ..Inventory::default()
        };
        let sha = |b: &[u8]| hex::encode(sha2::Sha256::digest(b));

        let mut inv = inventory();
        hash_binary(&mut inv, Some(&cache)).unwrap();
        assert_eq!(inv.binary.1, sha(b"first build"));
        let records: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
        assert_eq!(records.len(), 1);
        let record = records[0].as_ref().unwrap().path();

        // While the file keeps its identity, the record answers (shown by one written by hand).
        let mut kept: serde_json::Value = sealed::read(&record).unwrap();
        kept["sha256"] = "remembered".into();
        sealed::write(&record, &kept);
        let mut inv = inventory();
        hash_binary(&mut inv, Some(&cache)).unwrap();
        assert_eq!(inv.binary.1, "remembered");

        // A relinked binary (a new file, same size) is read again, and remembered instead.
        std::fs::remove_file(&bin).unwrap();
        std::fs::write(&bin, b"other build").unwrap();
        let mut inv = inventory();
        hash_binary(&mut inv, Some(&cache)).unwrap();
        assert_eq!(inv.binary.1, sha(b"other build"));
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);

        // No cache: always read.
        let mut inv = inventory();
        hash_binary(&mut inv, None).unwrap();
        assert_eq!(inv.binary.1, sha(b"other build"));
    }
}
