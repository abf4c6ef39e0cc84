//! The registry as a sink: an image is pushed by [`push_image`]; a multi-platform image is every
//! platform's image by digest (blobs, then manifest), then the index by digest, and only then its
//! tags (those that do not name it already). A push that fails before the index leaves every tag
//! where it was. With `--sign`, each platform image is signed once it is in place, and the index
//! once it and its tags are. Checking the sink begins the registry conversation, so that it runs
//! while the images are built.

use anyhow::{Context, Result};

use crate::oci::digest::Digest;
use crate::oci::image::Image;
use crate::oci::index::{Index, INDEX_MEDIA_TYPE};
use crate::oci::reference::ImageName;
use crate::oci::store::Store;
use crate::sink::push::{push_image, put_tags, session, Connection, PushRequest, Pushed};
use crate::sink::push_ahead::{ask_names, Answers};
use crate::sink::signature_push::push_signature;
use crate::sink::{attach, Delivered, Sink};
use crate::util::reporter::Reporter;

impl Sink for PushRequest {
    fn kind(&self) -> &'static str {
        "registry"
    }
    /// Begins the registry conversation: it runs while the images are built.
    fn check(&self) -> Result<()> {
        self.start_ahead();
        Ok(())
    }
    /// Pushes the image, then its debug variant when there is one; one result per image.
    fn deliver(&self, store: &Store, images: &[&Image], report: &Reporter) -> Result<Delivered> {
        let pushed = images
            .iter()
            .map(|image| {
                let name = self
                    .destination
                    .clone()
                    .unwrap_or_else(|| image.name.clone());
                push_image(store, image, &name, self, &self.cache_dir, report)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Delivered::Registry(pushed))
    }
    /// Pushes each image with its SBOM got ready meanwhile ([`attach::push_attached`]); a
    /// multi-platform build, or one with `--no-attach-sbom`: the images, then the SBOMs.
    fn deliver_attached(
        &self,
        store: &Store,
        picked: &[&Image],
        indexes: &[&Index],
        artifacts: &[attach::Artifact],
        report: &Reporter,
    ) -> Result<Delivered> {
        if !indexes.is_empty() || !self.attach_sbom {
            let mut done = match indexes.is_empty() {
                true => self.deliver(store, picked, report)?,
                false => self.deliver_index(store, indexes, picked, report)?,
            };
            self.attach(store, &mut done, artifacts, report)?;
            return Ok(done);
        }
        let pushed = picked
            .iter()
            .map(|image| {
                let name = self
                    .destination
                    .clone()
                    .unwrap_or_else(|| image.name.clone());
                attach::push_attached(store, image, &name, self, artifacts, report)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Delivered::Registry(pushed))
    }
    /// Attaches the SBOMs to the pushed images (unless `--no-attach-sbom`), after the images and
    /// their tags are in place.
    fn attach(
        &self,
        store: &Store,
        delivered: &mut Delivered,
        artifacts: &[crate::sink::attach::Artifact],
        report: &Reporter,
    ) -> Result<()> {
        if let (true, Delivered::Registry(pushed)) = (self.attach_sbom, delivered) {
            crate::sink::attach::attach_all(store, pushed, artifacts, self, report)?;
        }
        Ok(())
    }
    /// Pushes every platform's image by digest, then the index, then its tags; then the debug
    /// variants' index the same way.
    fn deliver_index(
        &self,
        store: &Store,
        indexes: &[&crate::oci::index::Index],
        _: &[&Image],
        report: &Reporter,
    ) -> Result<Delivered> {
        let pushed = indexes
            .iter()
            .map(|index| {
                let name = self
                    .destination
                    .clone()
                    .unwrap_or_else(|| index.name.clone());
                push_index(store, index, &name, self, report)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Delivered::Registry(pushed))
    }
}

/// Pushes `index` and the images it lists to `name`'s repository.
pub fn push_index(
    store: &Store,
    index: &Index,
    name: &ImageName,
    req: &PushRequest,
    report: &Reporter,
) -> Result<Pushed> {
    let mut blobs = Vec::new();
    let mut uploaded_bytes = 0;
    let mut platform_signatures = Vec::new();
    let mut connection = None;
    for image in &index.images {
        let mut untagged = image.clone();
        untagged.tags.clear();
        let p =
            push_image(store, &untagged, name, req, &req.cache_dir, report).with_context(|| {
                format!(
                    "the {} image was not pushed: no tag of {name} was changed",
                    crate::oci::index::platform_of(image)
                )
            })?;
        uploaded_bytes += p.uploaded_bytes;
        platform_signatures.extend(p.signatures);
        connection.get_or_insert((p.client, p.answers));
        for b in p.blobs {
            if !blobs.iter().any(|(d, _)| *d == b.0) {
                blobs.push(b);
            }
        }
    }
    let repo = name.repository.as_str();
    // The platform images' connection (an index lists at least one image).
    let (connection, mut answers) = match connection {
        Some(c) => c,
        None => {
            let registry = name.registry.as_str();
            let scopes = vec![format!("repository:{repo}:pull,push")];
            let (client, answers) = session(registry, repo, scopes, req, report, &|_| Ok(()))?;
            (Connection(std::sync::Arc::new(client)), answers)
        }
    };
    let client = &*connection.0;
    let doc = store
        .read(&index.blob)
        .with_context(|| format!("cannot read the index {}", index.blob.digest))?;
    let digest = &index.blob.digest;
    // What the tags not answered yet name, asked at once.
    let unasked: Vec<String> = (index.tags.iter())
        .filter(|t| !answers.names.contains_key(*t))
        .cloned()
        .collect();
    ask_names(client, repo, &unasked, &mut answers);
    if !answers.holds(digest) {
        client
            .put_manifest(repo, digest.as_str(), INDEX_MEDIA_TYPE, &doc, digest)
            .with_context(|| {
                format!("the index was not pushed: no tag of {name} was changed (the platforms' images are in place; run the push again)")
            })?;
    }
    let in_place = in_place(&answers, digest);
    let media = (INDEX_MEDIA_TYPE, &doc[..]);
    put_tags(client, name, digest, media, &index.tags, &in_place, report)?;
    // With the index and its tags in place, its signature (each platform image has its own).
    let mut signatures = Vec::new();
    if let Some(key) = &req.sign {
        signatures.push(push_signature(
            store,
            client,
            name,
            digest,
            key,
            req.chunk_size,
            report,
        )?);
    }
    signatures.extend(platform_signatures);
    blobs.sort();
    Ok(Pushed {
        name: name.clone(),
        image: index.images[0].clone(),
        blobs,
        uploaded_bytes,
        index: Some(index.clone()),
        signatures,
        attached: Vec::new(),
        client: connection,
        answers,
    })
}

/// The tags that name `digest`, as answered.
fn in_place(answers: &Answers, digest: &Digest) -> std::collections::BTreeSet<String> {
    (answers.names.iter())
        .filter(|(_, d)| d.as_ref() == Some(digest))
        .map(|(t, _)| t.clone())
        .collect()
}
