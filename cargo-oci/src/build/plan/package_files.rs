//! Copies a `files` entry of the package into a layer tree, and nothing from outside it: a
//! symlink is stored as a symlink when it points inside the copied tree and refused otherwise;
//! pipes, sockets and devices are refused; cargo target directories and VCS directories are
//! left out.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::{dir_mode, Content, Tree};
use crate::config::{FileSpec, ImageSpec};

/// A refusal: what is wrong and how to fix it.
pub type Refusal = (String, &'static str);

/// Version control directories (or files), never copied from inside a tree.
const VCS_DIRS: &[&str] = &[".git", ".hg", ".svn"];

const LINK_HELP: &str = "make the link point inside the copied directory, or copy what it points to into the package and name that";

/// Adds `f` to `tree`: its source is checked by the configuration to be inside the package.
pub(crate) fn add(tree: &mut Tree, f: &FileSpec, spec: &ImageSpec) -> Result<(), Refusal> {
    let dest = f.dest.trim_start_matches('/');
    let meta = std::fs::metadata(&f.src).map_err(|e| cannot_read(&f.src, e))?;
    if !meta.is_dir() {
        return add_file(tree, &f.src, dest, &meta, f.mode);
    }
    let walk = Walk {
        root: &f.src,
        spec,
        mode: f.mode,
    };
    if !dest.is_empty() {
        tree.put(dest, Content::Dir, dir_mode(dest));
    }
    walk.dir(tree, &f.src, dest, 0)
}

struct Walk<'a> {
    /// The copied directory, symlinks resolved.
    root: &'a Path,
    spec: &'a ImageSpec,
    mode: Option<u32>,
}

/// How deep a copied tree may go (symlinks are not followed, so only a real tree this deep).
const MAX_DEPTH: usize = 256;

impl Walk<'_> {
    fn dir(&self, tree: &mut Tree, dir: &Path, dest: &str, depth: usize) -> Result<(), Refusal> {
        if depth > MAX_DEPTH {
            return Err((
                format!(
                    "{} is more than {MAX_DEPTH} directories deep",
                    dir.display()
                ),
                "copy a shallower tree",
            ));
        }
        let mut children: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| cannot_read(dir, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| cannot_read(dir, e))?;
        children.sort_by_key(|e| e.file_name());
        for c in children {
            let path = c.path();
            let name = c.file_name().into_string().map_err(|n| {
                (
                    format!("{} has a name that is not UTF-8 ({n:?})", path.display()),
                    "rename it, or leave it out of the copied directory",
                )
            })?;
            if name.starts_with(".wh.") {
                return Err((
                    format!(
                        "{}: `{name}` is a layer whiteout name (it would delete files of the layers below)",
                        path.display()
                    ),
                    "rename it, or leave it out of the copied directory",
                ));
            }
            let d = if dest.is_empty() {
                name.clone()
            } else {
                format!("{dest}/{name}")
            };
            if VCS_DIRS.contains(&name.as_str()) {
                // A work tree's `.git` may be a file naming the repository: left out as well.
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).map_err(|e| cannot_read(&path, e))?;
            let kind = meta.file_type();
            if kind.is_symlink() {
                tree.link(&d, &self.link_target(&path)?);
            } else if kind.is_dir() {
                if self.left_out(&path) {
                    continue;
                }
                tree.put(&d, Content::Dir, dir_mode(&d));
                self.dir(tree, &path, &d, depth + 1)?;
            } else {
                add_file(tree, &path, &d, &meta, self.mode)?;
            }
        }
        Ok(())
    }

    /// Cargo target directories (the package's `target/`, the configured target directory, any
    /// directory tagged CACHEDIR.TAG) are never copied implicitly.
    fn left_out(&self, path: &Path) -> bool {
        path == self.spec.build.package_dir.join("target")
            || path.join("CACHEDIR.TAG").is_file()
            || path.canonicalize().ok().as_deref()
                == self
                    .spec
                    .build
                    .target_directory
                    .canonicalize()
                    .ok()
                    .as_deref()
    }

    /// The target a symlink inside the tree keeps in the image: relative, and inside the tree.
    fn link_target(&self, link: &Path) -> Result<String, Refusal> {
        let target = std::fs::read_link(link).map_err(|e| cannot_read(link, e))?;
        let resolved = link.canonicalize().map_err(|_| {
            (
                format!(
                    "the symlink {} points to {}, which does not exist",
                    link.display(),
                    target.display()
                ),
                LINK_HELP,
            )
        })?;
        let Ok(inside) = resolved.strip_prefix(self.root) else {
            return Err((
                format!(
                    "the symlink {} points to {}, outside the copied directory {}",
                    link.display(),
                    resolved.display(),
                    self.root.display()
                ),
                LINK_HELP,
            ));
        };
        // From the link's directory to the resolved target, both relative to the root.
        let from: Vec<Component> = link
            .parent()
            .and_then(|p| p.strip_prefix(self.root).ok())
            .map(|p| p.components().collect())
            .unwrap_or_default();
        let to: Vec<Component> = inside.components().collect();
        let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
        let mut rel = PathBuf::new();
        for _ in common..from.len() {
            rel.push("..");
        }
        for c in &to[common..] {
            rel.push(c);
        }
        let rel = rel.to_string_lossy().into_owned();
        Ok(if rel.is_empty() { ".".into() } else { rel })
    }
}

fn add_file(
    tree: &mut Tree,
    path: &Path,
    dest: &str,
    meta: &std::fs::Metadata,
    mode: Option<u32>,
) -> Result<(), Refusal> {
    let kind = meta.file_type();
    if kind.is_fifo() || kind.is_socket() || kind.is_block_device() || kind.is_char_device() {
        return Err((
            format!(
                "{} is a special file (a pipe, socket or device)",
                path.display()
            ),
            "only regular files, directories and symlinks inside them are copied: remove it or copy another directory",
        ));
    }
    let exec = meta.permissions().mode() & 0o111 != 0;
    tree.file(
        dest,
        path.to_path_buf(),
        mode.unwrap_or(if exec { 0o555 } else { 0o444 }),
    );
    Ok(())
}

fn cannot_read(path: &Path, e: std::io::Error) -> Refusal {
    (
        format!("cannot read {}: {e}", path.display()),
        "make it readable, or leave it out of the package's `files`",
    )
}
