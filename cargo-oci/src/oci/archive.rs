//! Reads members of an image archive (oci-archive, docker-archive) in place: one pass over the tar
//! headers makes a catalog of regular files (name → offset, size); members are then read straight
//! from the file. Nothing is ever unpacked to disk, so no name in the archive can write anywhere.
//! Links between members (older `docker save` links identical layers) are followed inside the
//! catalog only.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::oci::untrusted;

/// At most this many members in an archive.
const MAX_MEMBERS: usize = 1_000_000;

/// An image archive opened for reading.
#[derive(Debug)]
pub struct Archive {
    pub path: PathBuf,
    file: File,
    /// Regular files: normalised name → (data offset, size).
    members: BTreeMap<String, (u64, u64)>,
    /// Links between members: normalised name → normalised target.
    links: BTreeMap<String, String>,
}

impl Archive {
    /// Opens `path` and reads its catalog. A file that is not a tar is an error saying so.
    pub fn open(path: &Path) -> Result<Archive> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut members = BTreeMap::new();
        let mut links = BTreeMap::new();
        // Never quote the tar crate's message: for a file that is not a tar it holds bytes of
        // the file.
        let not_tar = |e: io::Error| {
            anyhow::anyhow!(
                "{} is not a readable tar archive: {}",
                path.display(),
                untrusted::io_error_text(&e)
            )
        };
        {
            let mut ar = tar::Archive::new(&file);
            let entries = ar.entries_with_seek().map_err(not_tar)?;
            for (n, entry) in entries.enumerate() {
                if n >= MAX_MEMBERS {
                    bail!("{} has more than {MAX_MEMBERS} members", path.display());
                }
                let entry = entry.map_err(not_tar)?;
                let Ok(name) = untrusted::normalize(&entry.path_bytes()) else {
                    // A name that climbs out can never be referenced: ignore it.
                    continue;
                };
                match entry.header().entry_type() {
                    tar::EntryType::Regular | tar::EntryType::Continuous => {
                        members.insert(name, (entry.raw_file_position(), entry.size()));
                    }
                    tar::EntryType::Symlink | tar::EntryType::Link => {
                        let Some(target) = entry.link_name_bytes() else {
                            continue;
                        };
                        let target = if entry.header().entry_type() == tar::EntryType::Symlink
                            && !target.starts_with(b"/")
                        {
                            // Relative to the link's directory.
                            let mut t = untrusted::parent(&name).as_bytes().to_vec();
                            t.push(b'/');
                            t.extend_from_slice(&target);
                            resolve_dots(&t)
                        } else {
                            untrusted::normalize(&target).ok()
                        };
                        if let Some(t) = target {
                            links.insert(name, t);
                        }
                    }
                    _ => {}
                }
            }
        }
        if members.is_empty() {
            bail!(
                "{} holds no files: it is not an image archive",
                path.display()
            );
        }
        Ok(Archive {
            path: path.to_path_buf(),
            file,
            members,
            links,
        })
    }

    /// The (offset, size) of a member, following links inside the archive.
    fn find(&self, name: &str) -> Option<(u64, u64)> {
        let mut name = untrusted::normalize(name.as_bytes()).ok()?;
        for _ in 0..8 {
            if let Some(m) = self.members.get(&name) {
                return Some(*m);
            }
            name = self.links.get(&name)?.clone();
        }
        None
    }

    pub fn contains(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    /// The size of a member.
    pub fn size(&self, name: &str) -> Option<u64> {
        self.find(name).map(|(_, s)| s)
    }

    /// A reader of a member's bytes.
    pub fn open_member(&self, name: &str) -> Result<impl Read + '_> {
        let (offset, size) = self
            .find(name)
            .with_context(|| format!("{} has no member `{name}`", self.path.display()))?;
        let mut f = &self.file;
        f.seek(SeekFrom::Start(offset))?;
        Ok(f.take(size))
    }

    /// A member's bytes, refused when larger than `max` (JSON files are small).
    pub fn read_member(&self, name: &str, max: u64) -> Result<Vec<u8>> {
        let size = self
            .size(name)
            .with_context(|| format!("{} has no member `{name}`", self.path.display()))?;
        if size > max {
            bail!(
                "member `{name}` of {} is {size} bytes, more than the {max} allowed",
                self.path.display()
            );
        }
        let mut v = Vec::with_capacity(size as usize);
        self.open_member(name)?.read_to_end(&mut v)?;
        if v.len() as u64 != size {
            bail!("member `{name}` of {} is cut short", self.path.display());
        }
        Ok(v)
    }
}

/// Resolves `.` and `..` in a path inside the archive; `None` when it climbs out.
fn resolve_dots(path: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(path).ok()?;
    let mut parts: Vec<&str> = Vec::new();
    for p in text.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// A tar header for a regular file of an archive output.
pub fn file_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_size(size);
    h
}

pub fn dir_header() -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_mtime(0);
    h.set_size(0);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dots_resolve_inside_only() {
        assert_eq!(
            resolve_dots(b"a/../b/layer.tar").as_deref(),
            Some("b/layer.tar")
        );
        assert_eq!(resolve_dots(b"a/../../etc"), None);
    }
}
