//! An image in the blob store: its config and manifest blobs, its layers, its names and tags,
//! its platform; and canonical JSON, the one way cargo-oci serialises what it digests.

use anyhow::Result;
use serde::Serialize;

use crate::oci::layer::Layer;
pub use crate::oci::platform::Platform;
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
    /// The CPU variant its config names (`v8` on arm64), if any.
    pub variant: Option<String>,
}

impl Image {
    /// `name:tag` for every tag.
    pub fn references(&self) -> Vec<String> {
        self.tags.iter().map(|t| self.name.with_tag(t)).collect()
    }
}

/// JSON with sorted keys and no whitespace: the same value always gives the same bytes.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    // serde_json::Value keeps object keys in a BTreeMap (sorted), whatever the source used.
    let v = serde_json::to_value(value)?;
    Ok(serde_json::to_vec(&v)?)
}
