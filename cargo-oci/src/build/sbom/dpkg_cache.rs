//! Which Debian package owns which path, remembered between runs: scanning a database's
//! `info/*.list` files reads every path of every package, while a build asks about a handful.
//! A record per root, in the per-machine cache, holds the answers found so far (the owner's
//! status record, or none), so that a build whose files are all known reads neither the list
//! files nor the status file, under the identity of the database: the status file's and the `info` directory's
//! device, inode, size, modification and change times. dpkg rewrites the status file on every
//! install, upgrade and removal, and replaces a list file by renaming it into the directory, so
//! any change of the database is a new identity and the record is dropped. The record is sealed
//! by a digest of its content; a missing, damaged or stale one means scanning again.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::dpkg::DebPackage;
use super::sealed::{self, field};

/// Path → the package that owns it (its status record), or `None` for a path no package owns.
pub type Owners = BTreeMap<String, Option<DebPackage>>;

#[derive(Serialize, Deserialize)]
struct Body {
    key: String,
    owners: Owners,
}

/// The record of one root's database.
pub struct Record {
    path: PathBuf,
    key: String,
}

/// A file's identity as a key field; a missing one is a distinct value.
fn identity(h: &mut Sha256, path: &Path) {
    field(h, path.as_os_str().as_encoded_bytes());
    match std::fs::metadata(path) {
        Ok(m) => {
            h.update([1]);
            for v in [
                m.dev(),
                m.ino(),
                m.size(),
                m.mtime() as u64,
                m.mtime_nsec() as u64,
                m.ctime() as u64,
                m.ctime_nsec() as u64,
            ] {
                h.update(v.to_le_bytes());
            }
        }
        Err(_) => h.update([0]),
    }
}

impl Record {
    /// The record of the database `admin` (`root/var/lib/dpkg`) in the cache directory `dir`.
    pub fn open(dir: &Path, root: &Path, admin: &Path) -> Record {
        let name = hex::encode(Sha256::digest(root.as_os_str().as_encoded_bytes()));
        let mut h = Sha256::new();
        field(&mut h, env!("CARGO_PKG_VERSION").as_bytes());
        identity(&mut h, &admin.join("status"));
        identity(&mut h, &admin.join("info"));
        Record {
            path: dir.join(&name[..32]),
            key: hex::encode(h.finalize()),
        }
    }

    /// The answers of a current record, if there is one.
    pub fn load(&self) -> Option<Owners> {
        let body: Body = sealed::read(&self.path)?;
        (body.key == self.key).then_some(body.owners)
    }

    /// Remembers `owners`. A cache that cannot be written only costs the next run a scan.
    pub fn store(&self, owners: &Owners) {
        let body = Body {
            key: self.key.clone(),
            owners: owners.clone(),
        };
        sealed::write(&self.path, &body);
    }
}
