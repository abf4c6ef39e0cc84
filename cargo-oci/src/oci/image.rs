//! An image in the blob store: its config and manifest blobs, its layers, its names and tags,
//! its platform; and canonical JSON, the one way cargo-oci serialises what it digests.

use anyhow::Result;
use serde::Serialize;

use crate::oci::layer::Layer;
use crate::oci::reference::ImageName;
use crate::oci::store::Blob;

/// A complete image in the store.
#[derive(Debug, Clone)]
pub struct Image {
    pub name: ImageName,
    /// Every tag: the configured ones, then the content tag.
    pub tags: Vec<String>,
    /// The tag derived from the image's content.
    pub content_tag: String,
    pub config: Blob,
    pub manifest: Blob,
    pub layers: Vec<Layer>,
    /// GOARCH word (`amd64`, `arm64`, ...).
    pub architecture: String,
}

impl Image {
    /// `name:tag` for every tag.
    pub fn references(&self) -> Vec<String> {
        self.tags.iter().map(|t| self.name.with_tag(t)).collect()
    }
}

/// Platform of the binaries, in Go's GOARCH words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// From an ELF header's machine, class and byte order.
    pub fn from_elf(machine: u16, class64: bool, little_endian: bool) -> Result<Platform> {
        use goblin::elf::header::*;
        let (arch, variant) = match (machine, class64, little_endian) {
            (EM_X86_64, true, _) => ("amd64", None),
            (EM_386, false, _) => ("386", None),
            (EM_AARCH64, true, true) => ("arm64", Some("v8")),
            (EM_ARM, false, true) => ("arm", Some("v7")),
            (EM_RISCV, true, _) => ("riscv64", None),
            (EM_PPC64, true, true) => ("ppc64le", None),
            (EM_PPC64, true, false) => ("ppc64", None),
            (EM_S390, true, _) => ("s390x", None),
            (EM_LOONGARCH, true, _) => ("loong64", None),
            _ => {
                anyhow::bail!("ELF machine {machine} has no OCI architecture name cargo-oci knows")
            }
        };
        Ok(Platform {
            architecture: arch.into(),
            variant: variant.map(str::to_string),
        })
    }
}

/// JSON with sorted keys and no whitespace: the same value always gives the same bytes.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    // serde_json::Value keeps object keys in a BTreeMap (sorted), whatever the source used.
    let v = serde_json::to_value(value)?;
    Ok(serde_json::to_vec(&v)?)
}
