//! Flattens an image's layers into one file tree, as a runtime's overlay would show it: upper
//! layers replace lower entries, whiteouts (`.wh.NAME`) delete, opaque markers (`.wh..wh..opq`)
//! empty a directory of what lower layers put there, hard links become copies of their target.
//! The tree is held in memory (images cargo-oci makes are small) and is safe to materialise:
//! every path is normalised, and no entry ever sits below a symlink or a file, so writing the
//! tree into a directory can never follow a link out of it.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::oci::image::Image;
use crate::oci::store::Store;
use crate::oci::untrusted;

/// What a node of the tree is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File(Arc<Vec<u8>>),
    Dir,
    Symlink(String),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

/// One file, directory, link or device of the flattened tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
}

/// The flattened tree: normalised relative path → node, parents before children.
#[derive(Debug, Default)]
pub struct Tree {
    pub nodes: BTreeMap<String, Node>,
    /// Keep only the shape (kinds and paths), not file contents: for checking layers.
    pub shape_only: bool,
}

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

impl Tree {
    /// A tree that records paths and kinds only, to check a stack of layers cheaply.
    pub fn shape() -> Tree {
        Tree {
            nodes: BTreeMap::new(),
            shape_only: true,
        }
    }

    /// Removes `path` and everything below it.
    fn remove_all(&mut self, path: &str) {
        self.nodes.remove(path);
        let prefix = format!("{path}/");
        let below: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in below {
            self.nodes.remove(&k);
        }
    }

    /// Makes sure every ancestor of `path` is a directory, creating missing ones; an ancestor
    /// that is a link or a file is an error (writing below it could leave the tree).
    fn ensure_parents(&mut self, path: &str, what: &str) -> Result<()> {
        let mut ancestors = Vec::new();
        let mut p = untrusted::parent(path);
        while !p.is_empty() {
            ancestors.push(p.to_string());
            p = untrusted::parent(p);
        }
        for a in ancestors.into_iter().rev() {
            match self.nodes.get(&a) {
                Some(Node {
                    kind: Kind::Dir, ..
                }) => {}
                Some(_) => bail!("{what}: {path:?} lies below {a:?}, which is not a directory"),
                None => {
                    self.nodes.insert(
                        a,
                        Node {
                            kind: Kind::Dir,
                            mode: 0o755,
                            uid: 0,
                            gid: 0,
                            mtime: 0,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// Applies one layer tar on top of the tree.
    pub fn apply(&mut self, tar: impl Read, what: &str) -> Result<()> {
        let mut ar = tar::Archive::new(tar);
        let mut opaque_done: Vec<String> = Vec::new();
        let mut added: Vec<String> = Vec::new();
        for entry in ar
            .entries()
            .map_err(|e| anyhow::anyhow!("{what} is not a tar: {}", untrusted::io_error_text(&e)))?
        {
            let mut entry = entry.map_err(|e| {
                anyhow::anyhow!(
                    "{what}: a tar header cannot be read: {}",
                    untrusted::io_error_text(&e)
                )
            })?;
            let path = untrusted::normalize(&entry.path_bytes())
                .map_err(|m| anyhow::anyhow!("{what}: {m}"))?;
            if path.is_empty() {
                continue;
            }
            let name = untrusted::file_name(&path);
            let dir = untrusted::parent(&path);
            if name == OPAQUE {
                // Empty the directory of what lower layers put there (not this layer's entries).
                if !opaque_done.iter().any(|d| d == dir) {
                    let prefix = if dir.is_empty() {
                        String::new()
                    } else {
                        format!("{dir}/")
                    };
                    let lower: Vec<String> = self
                        .nodes
                        .keys()
                        .filter(|k| k.starts_with(&prefix) && k.as_str() != dir)
                        .filter(|k| {
                            !added
                                .iter()
                                .any(|a| a == *k || k.starts_with(&format!("{a}/")))
                        })
                        .cloned()
                        .collect();
                    for k in lower {
                        self.nodes.remove(&k);
                    }
                    opaque_done.push(dir.to_string());
                }
                continue;
            }
            if let Some(hidden) = name.strip_prefix(WHITEOUT) {
                let target = if dir.is_empty() {
                    hidden.to_string()
                } else {
                    format!("{dir}/{hidden}")
                };
                self.remove_all(&target);
                continue;
            }
            let h = entry.header().clone();
            let mode = h.mode().unwrap_or(0o644) & 0o7777;
            let uid = h.uid().unwrap_or(0);
            let gid = h.gid().unwrap_or(0);
            let mtime = h.mtime().unwrap_or(0);
            let dev = |h: &tar::Header| {
                (
                    h.device_major().ok().flatten().unwrap_or(0),
                    h.device_minor().ok().flatten().unwrap_or(0),
                )
            };
            use tar::EntryType as T;
            let kind = match h.entry_type() {
                T::Regular | T::Continuous => {
                    let mut data = Vec::new();
                    if !self.shape_only {
                        entry
                            .read_to_end(&mut data)
                            .with_context(|| format!("{what}: cannot read {path:?}"))?;
                    }
                    Kind::File(Arc::new(data))
                }
                T::Directory => Kind::Dir,
                T::Symlink => {
                    let t = entry.link_name_bytes().unwrap_or_default();
                    let t = String::from_utf8(t.into_owned())
                        .map_err(|_| anyhow::anyhow!("{what}: link {path:?} is not UTF-8"))?;
                    Kind::Symlink(t)
                }
                T::Link => {
                    let t = untrusted::normalize(&entry.link_name_bytes().unwrap_or_default())
                        .map_err(|m| anyhow::anyhow!("{what}: hard link {path:?}: {m}"))?;
                    match self.nodes.get(&t) {
                        Some(Node { kind: k @ Kind::File(_), .. }) => k.clone(),
                        _ => bail!("{what}: hard link {path:?} points at {t:?}, which is not a file before it"),
                    }
                }
                T::Char => {
                    let (a, b) = dev(&h);
                    Kind::Char(a, b)
                }
                T::Block => {
                    let (a, b) = dev(&h);
                    Kind::Block(a, b)
                }
                T::Fifo => Kind::Fifo,
                T::XGlobalHeader => continue,
                other => bail!("{what}: entry {path:?} has an unsupported type {other:?}"),
            };
            self.ensure_parents(&path, what)?;
            let node = Node {
                kind,
                mode,
                uid,
                gid,
                mtime,
            };
            match (self.nodes.get(&path).map(|n| &n.kind), &node.kind) {
                (Some(Kind::Dir), Kind::Dir) => {}
                (Some(_), _) => self.remove_all(&path),
                (None, _) => {}
            }
            self.nodes.insert(path.clone(), node);
            added.push(path);
        }
        Ok(())
    }
}

/// The flattened file tree of an image in the store.
pub fn flatten(store: &Store, image: &Image) -> Result<Tree> {
    let mut tree = Tree::default();
    for (i, l) in image.layers.iter().enumerate() {
        tree.apply(
            l.open_tar(store)?,
            &format!("layer {} ({})", i + 1, l.blob.digest),
        )?;
    }
    Ok(tree)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (p, t, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*t);
            h.set_mode(0o644);
            match t {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    h.set_size(0);
                    b.append_link(&mut h, p, data).unwrap();
                }
                _ => {
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, p, data.as_bytes()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn whiteouts_and_opaque_dirs_apply() {
        use tar::EntryType::*;
        let mut t = Tree::default();
        t.apply(
            &tar(&[
                ("a/x", Regular, "1"),
                ("a/y", Regular, "2"),
                ("b/z", Regular, "3"),
                ("c", Regular, "c"),
            ])[..],
            "l1",
        )
        .unwrap();
        t.apply(
            &tar(&[
                ("a/.wh..wh..opq", Regular, ""),
                ("a/new", Regular, "n"),
                ("b/.wh.z", Regular, ""),
                ("c/d", Regular, "d"),
            ])[..],
            "l2",
        )
        .unwrap_err();
        let mut t = Tree::default();
        t.apply(
            &tar(&[
                ("a/x", Regular, "1"),
                ("a/y", Regular, "2"),
                ("b/z", Regular, "3"),
            ])[..],
            "l1",
        )
        .unwrap();
        t.apply(
            &tar(&[
                ("a/new", Regular, "n"),
                ("a/.wh..wh..opq", Regular, ""),
                ("b/.wh.z", Regular, ""),
                ("h", Link, "a/new"),
            ])[..],
            "l2",
        )
        .unwrap();
        let keys: Vec<&str> = t.nodes.keys().map(String::as_str).collect();
        assert_eq!(keys, ["a", "a/new", "b", "h"]);
        assert_eq!(t.nodes["h"].kind, Kind::File(Arc::new(b"n".to_vec())));
    }

    #[test]
    fn nothing_goes_below_a_link() {
        use tar::EntryType::*;
        let mut t = Tree::default();
        let e = t
            .apply(
                &tar(&[("l", Symlink, "/etc"), ("l/passwd", Regular, "x")])[..],
                "l1",
            )
            .unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
        let mut t = Tree::default();
        assert!(t
            .apply(&tar(&[("h", Link, "../../etc/passwd")])[..], "l1")
            .is_err());
    }
}
