//! The crate list of a build remembered between runs, so that a rebuild with nothing changed
//! does not ask cargo for the whole resolve graph again. A record in `target/oci/.cache/crates`
//! is keyed by everything the resolution reads: cargo-oci's version, the package, its manifest,
//! the target, the features, Cargo.lock's bytes and the bytes of every manifest of the workspace
//! and of every local package the graph reached. It is sealed by a digest of its content; a
//! missing, corrupt or stale record means resolving again. The same record serves in any cache
//! directory: the per-machine cache keeps one for a fresh checkout at the same place.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::crates::Crate;
use super::sealed::{self, field};
use crate::build::cargo::CargoFlags;
use crate::config::BuildSpec;
use crate::util::fs::write_atomic;

/// What a record says besides the crates: the key of its fixed inputs, and the manifests outside
/// the workspace (local path dependencies) with the digests of their bytes.
#[derive(Serialize, Deserialize)]
struct Record {
    key: String,
    manifests: Vec<(PathBuf, String)>,
    crates: Vec<Crate>,
}

/// The record's file and the key of the inputs known before resolving.
pub struct Entry {
    path: PathBuf,
    key: String,
}

/// A file's bytes as a key field; a missing or unreadable file is a distinct value.
fn file_field(h: &mut Sha256, path: &Path) {
    field(h, path.as_os_str().as_encoded_bytes());
    match std::fs::read(path) {
        Ok(b) => {
            h.update([1]);
            field(h, &b);
        }
        Err(_) => h.update([0]),
    }
}

fn file_digest(path: &Path) -> String {
    let mut h = Sha256::new();
    file_field(&mut h, path);
    hex::encode(h.finalize())
}

impl Entry {
    /// The entry of this build's resolution in `cache` (`target/oci/.cache`).
    pub fn new(cache: &Path, b: &BuildSpec, target: &str, flags: &CargoFlags) -> Entry {
        let mut id = Sha256::new();
        field(&mut id, b.manifest_path.as_os_str().as_encoded_bytes());
        field(&mut id, b.package.as_bytes());
        field(&mut id, target.as_bytes());
        let name = hex::encode(id.finalize());
        let mut h = Sha256::new();
        field(&mut h, env!("CARGO_PKG_VERSION").as_bytes());
        field(&mut h, name.as_bytes());
        for f in flags.features.iter().chain(&b.features) {
            field(&mut h, f.as_bytes());
        }
        h.update([
            u8::from(flags.all_features),
            u8::from(flags.no_default_features),
        ]);
        let lock = b
            .workspace_manifests
            .first()
            .and_then(|m| m.parent())
            .map(|d| d.join("Cargo.lock"));
        if let Some(lock) = &lock {
            file_field(&mut h, lock);
        }
        for m in &b.workspace_manifests {
            file_field(&mut h, m);
        }
        Entry {
            path: cache.join("crates").join(&name[..32]),
            key: hex::encode(h.finalize()),
        }
    }

    /// The crates of a current record, if there is one.
    pub fn load(&self) -> Option<Vec<Crate>> {
        let record: Record = sealed::read(&self.path)?;
        let current = record.key == self.key
            && record
                .manifests
                .iter()
                .all(|(path, digest)| file_digest(path) == *digest);
        current.then_some(record.crates)
    }

    /// Takes the record of `other` (the same entry in another cache directory) as it is.
    pub fn copy_from(&self, other: &Entry) {
        let Ok(bytes) = std::fs::read(&other.path) else {
            return;
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).ok();
        }
        write_atomic(&self.path, |w| Ok(w.write_all(&bytes)?)).ok();
    }

    /// Remembers `crates`, resolved with the local manifests `local` (besides the workspace's).
    /// A cache that cannot be written only costs the next run a resolution.
    pub fn store(&self, crates: &[Crate], local: &[PathBuf]) {
        let record = Record {
            key: self.key.clone(),
            manifests: local.iter().map(|p| (p.clone(), file_digest(p))).collect(),
            crates: crates.to_vec(),
        };
        sealed::write(&self.path, &record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::sbom::crates::Source;

    #[test]
    fn a_record_holds_until_an_input_changes_or_it_is_damaged() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = tmp.path().join("ws");
        std::fs::create_dir_all(&ws).unwrap();
        std::fs::write(ws.join("Cargo.toml"), "[package]\nname = \"app\"\n").unwrap();
        std::fs::write(ws.join("Cargo.lock"), "version = 4\n").unwrap();
        let local = tmp.path().join("dep/Cargo.toml");
        std::fs::create_dir_all(local.parent().unwrap()).unwrap();
        std::fs::write(&local, "[package]\nname = \"dep\"\n").unwrap();
        let spec = BuildSpec {
            package: "app".into(),
            manifest_path: ws.join("Cargo.toml"),
            workspace_manifests: vec![ws.join("Cargo.toml")],
            ..Default::default()
        };
        let flags = CargoFlags::default();
        let cache = tmp.path().join("cache");
        let crates = vec![Crate {
            name: "app".into(),
            version: "0.1.0".into(),
            source: Source::Path,
            checksum: None,
            license: Some("MIT".into()),
            build_time: false,
            proc_macro: false,
            deps: vec![],
        }];
        let entry = |spec: &BuildSpec, flags: &CargoFlags| {
            Entry::new(&cache, spec, "x86_64-unknown-linux-gnu", flags)
        };
        assert!(entry(&spec, &flags).load().is_none());
        entry(&spec, &flags).store(&crates, std::slice::from_ref(&local));
        assert_eq!(entry(&spec, &flags).load(), Some(crates.clone()));
        // Another target, feature or package: not this record.
        assert!(
            Entry::new(&cache, &spec, "aarch64-unknown-linux-gnu", &flags)
                .load()
                .is_none()
        );
        let mut featured = flags.clone();
        featured.features = vec!["app/more".into()];
        assert!(entry(&spec, &featured).load().is_none());
        // Cargo.lock, a workspace manifest, a local dependency's manifest changed: stale.
        std::fs::write(ws.join("Cargo.lock"), "version = 4\n# changed\n").unwrap();
        assert!(entry(&spec, &flags).load().is_none());
        entry(&spec, &flags).store(&crates, std::slice::from_ref(&local));
        std::fs::write(ws.join("Cargo.toml"), "[package]\nname = \"app\" \n").unwrap();
        assert!(entry(&spec, &flags).load().is_none());
        entry(&spec, &flags).store(&crates, std::slice::from_ref(&local));
        std::fs::write(&local, "[package]\nname = \"dep\" \n").unwrap();
        assert!(entry(&spec, &flags).load().is_none());
        // A damaged record.
        entry(&spec, &flags).store(&crates, std::slice::from_ref(&local));
        let path = entry(&spec, &flags).path;
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(entry(&spec, &flags).load().is_none());
    }
}
