//! A multi-platform image: an OCI image index in the blob store whose entries are the images of
//! each platform, each entry with its platform (Docker refuses an entry without one). The index
//! carries the names and tags; the images it lists are untagged.

use anyhow::Result;
use oci_spec::image::{DescriptorBuilder, ImageIndexBuilder, MediaType, PlatformBuilder};

use crate::oci::digest::Digest;
use crate::oci::image::{canonical_json, Image};
use crate::oci::reference::ImageName;
use crate::oci::store::{Blob, Store};

/// The OCI image index media type.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// An index in the store and the images it lists.
#[derive(Debug, Clone)]
pub struct Index {
    pub name: ImageName,
    /// Every tag: the configured ones, then the content tag.
    pub tags: Vec<String>,
    /// The tag derived from the index's content.
    pub content_tag: String,
    /// The index document.
    pub blob: Blob,
    /// One image per platform, in the order of the index.
    pub images: Vec<Image>,
}

/// The platform of an index entry: `linux/<GOARCH>`.
pub fn platform_of(image: &Image) -> String {
    format!("linux/{}", image.architecture)
}

/// One entry of an index: a platform's manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl IndexEntry {
    /// `os/arch[/variant]`.
    pub fn platform(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }
}

/// The index document listing `entries` (a platform on every one), as canonical JSON.
pub fn index_document_of(entries: &[IndexEntry]) -> Result<Vec<u8>> {
    let manifests = entries
        .iter()
        .map(|e| {
            let mut platform = PlatformBuilder::default()
                .architecture(oci_spec::image::Arch::from(e.architecture.as_str()))
                .os(oci_spec::image::Os::from(e.os.as_str()));
            if let Some(v) = &e.variant {
                platform = platform.variant(v.clone());
            }
            Ok(DescriptorBuilder::default()
                .media_type(MediaType::from(e.media_type.as_str()))
                .digest(e.digest.to_oci())
                .size(e.size)
                .platform(platform.build()?)
                .build()?)
        })
        .collect::<Result<Vec<_>>>()?;
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()?;
    canonical_json(&index)
}

/// The index document listing `images` (a platform on every entry), as canonical JSON.
pub fn index_document(images: &[&Image]) -> Result<Vec<u8>> {
    let entries: Vec<IndexEntry> = images
        .iter()
        .map(|i| IndexEntry {
            media_type: MediaType::ImageManifest.to_string(),
            digest: i.manifest.digest.clone(),
            size: i.manifest.size,
            os: "linux".into(),
            architecture: i.architecture.clone(),
            variant: i.variant.clone(),
        })
        .collect();
    index_document_of(&entries)
}

impl Index {
    /// Writes the index of `images` (one per platform) to the store. Its tags are `tags`, or
    /// by default `configured` plus the content tag; the images lose theirs.
    pub fn make(
        store: &Store,
        images: Vec<Image>,
        configured: &[String],
        tags: Option<Vec<String>>,
    ) -> Result<Index> {
        let refs: Vec<&Image> = images.iter().collect();
        let doc = index_document(&refs)?;
        let blob = store.put(&doc)?;
        let content_tag = blob.hex()[..16].to_string();
        let tags = tags.unwrap_or_else(|| {
            let mut t = configured.to_vec();
            if !t.contains(&content_tag) {
                t.push(content_tag.clone());
            }
            t
        });
        let name = images
            .first()
            .map(|i| i.name.clone())
            .ok_or_else(|| anyhow::anyhow!("an index needs at least one image"))?;
        let images = images
            .into_iter()
            .map(|mut i| {
                i.tags.clear();
                i
            })
            .collect();
        Ok(Index {
            name,
            tags,
            content_tag,
            blob,
            images,
        })
    }

    /// `name:tag` for every tag.
    pub fn references(&self) -> Vec<String> {
        self.tags.iter().map(|t| self.name.with_tag(t)).collect()
    }

    /// The platforms, in order (`linux/amd64`).
    pub fn platforms(&self) -> Vec<String> {
        self.images.iter().map(platform_of).collect()
    }

    /// The image of `platform` (`linux/arm64`, or only the architecture), carrying the index's
    /// names and tags: what a sink that takes one image delivers.
    pub fn image_for(&self, platform: &str) -> Option<Image> {
        let arch = platform.strip_prefix("linux/").unwrap_or(platform);
        let arch = arch.split('/').next().unwrap_or(arch);
        self.images
            .iter()
            .find(|i| i.architecture == arch)
            .map(|i| Image {
                tags: self.tags.clone(),
                ..i.clone()
            })
    }
}
