//! `cargo oci export`: the image's flattened root filesystem as one tar (whiteouts applied, hard
//! links as copies), for `podman import`, `docker import` or any tool that wants a plain rootfs.
//! Entries keep their modes, owners and times and come in path order, so the tar is reproducible.

use std::io::{self, Write};

use anyhow::Result;
use tar::{EntryType, Header};

use crate::oci::flatten::{Kind, Tree};

/// Writes the tree as a tar to `out`.
pub fn write_tar(tree: &Tree, out: &mut dyn Write) -> Result<()> {
    let mut b = tar::Builder::new(out);
    for (path, node) in &tree.nodes {
        let mut h = Header::new_gnu();
        h.set_mode(node.mode);
        h.set_uid(node.uid);
        h.set_gid(node.gid);
        h.set_mtime(node.mtime);
        h.set_size(0);
        match &node.kind {
            Kind::File(data) => {
                h.set_entry_type(EntryType::Regular);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, data.as_slice())?;
            }
            Kind::Dir => {
                h.set_entry_type(EntryType::Directory);
                b.append_data(&mut h, format!("{path}/"), io::empty())?;
            }
            Kind::Symlink(target) => {
                h.set_entry_type(EntryType::Symlink);
                b.append_link(&mut h, path, target)?;
            }
            Kind::Char(major, minor) | Kind::Block(major, minor) => {
                h.set_entry_type(if matches!(node.kind, Kind::Char(..)) {
                    EntryType::Char
                } else {
                    EntryType::Block
                });
                h.set_device_major(*major)?;
                h.set_device_minor(*minor)?;
                b.append_data(&mut h, path, io::empty())?;
            }
            Kind::Fifo => {
                h.set_entry_type(EntryType::Fifo);
                b.append_data(&mut h, path, io::empty())?;
            }
        }
    }
    b.into_inner()?.flush()?;
    Ok(())
}
