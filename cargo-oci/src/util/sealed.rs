//! The file format of the per-machine caches (the SBOM's, the package list, `rustc -vV`): a
//! JSON record after a line holding the SHA-256 of the record's bytes, written atomically. A record whose seal does not match (damaged, cut short,
//! edited) reads as no record; one that cannot be written only costs the next run the work.
//! Also the length-prefixed fields cache keys are hashed from.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::util::fs::write_atomic;

/// Adds `bytes` to a key, prefixed by their length so that fields never run together.
pub fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// The record at `path`, when there is one and its seal holds.
pub fn read<T: DeserializeOwned>(path: &Path) -> Option<T> {
    let text = std::fs::read(path).ok()?;
    let (seal, body) = text.split_at(text.iter().position(|&b| b == b'\n')?);
    let body = &body[1..];
    if seal != hex::encode(Sha256::digest(body)).as_bytes() {
        return None;
    }
    serde_json::from_slice(body).ok()
}

/// Writes `record` to `path`, sealed, creating its directory. Failures are ignored: a record
/// is only ever a shortcut.
pub fn write<T: Serialize>(path: &Path, record: &T) {
    let Ok(body) = serde_json::to_vec(record) else {
        return;
    };
    let seal = hex::encode(Sha256::digest(&body));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    write_atomic(path, |w| {
        w.write_all(seal.as_bytes())?;
        w.write_all(b"\n")?;
        Ok(w.write_all(&body)?)
    })
    .ok();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_and_a_damaged_one_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deep").join("r.json");
        write(&path, &vec![1u32, 2, 3]);
        assert_eq!(read::<Vec<u32>>(&path), Some(vec![1, 2, 3]));
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 2] = b'4';
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read::<Vec<u32>>(&path), None);
        assert_eq!(read::<Vec<u32>>(&dir.path().join("missing")), None);
    }
}
