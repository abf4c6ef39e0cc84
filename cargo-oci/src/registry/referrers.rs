//! The OCI 1.1 referrers of a manifest, as the registry serves them: the referrers API
//! (`GET /v2/<name>/referrers/<digest>`) when the registry has one, and the manifest a tag names
//! (for the fallback tag `sha256-<hex>` that registries without the API need).

use std::io::Read;

use anyhow::{bail, Result};

use super::client::{drain, with_auth, Client};
use crate::oci::digest::Digest;

/// The largest referrers index read.
const INDEX_LIMIT: u64 = 4 << 20;

impl Client {
    /// The referrers API's index of the manifests whose `subject` is `digest`; `None` when the
    /// registry has no referrers API (it answers 404, 400, 405 or 501, as registries without it
    /// do).
    pub fn referrers(&self, repo: &str, digest: &Digest) -> Result<Option<Vec<u8>>> {
        let url = self.url(&format!("{repo}/referrers/{digest}"));
        let what = format!(
            "ask {} for the referrers of {digest} in {repo}",
            self.registry
        );
        let resp = self.send(&what, &|a, auth| {
            with_auth(a.get(&url), auth)
                .header("Accept", crate::oci::index::INDEX_MEDIA_TYPE)
                .call()
        })?;
        match resp.status().as_u16() {
            200 => read_limited(resp, &what).map(Some),
            400 | 404 | 405 | 501 => {
                drain(resp);
                Ok(None)
            }
            _ => Err(super::client::unexpected(&what, resp)),
        }
    }

    /// The manifest or index `reference` (a tag or a digest) names in `repo`, if any.
    pub fn get_manifest_ref(
        &self,
        repo: &str,
        reference: &str,
        accept: &str,
    ) -> Result<Option<Vec<u8>>> {
        let url = self.url(&format!("{repo}/manifests/{reference}"));
        let what = format!("get the manifest {reference} of {repo}");
        let resp = self.send(&what, &|a, auth| {
            with_auth(a.get(&url), auth).header("Accept", accept).call()
        })?;
        match resp.status().as_u16() {
            200 => read_limited(resp, &what).map(Some),
            404 => {
                drain(resp);
                Ok(None)
            }
            _ => Err(super::client::unexpected(&what, resp)),
        }
    }
}

fn read_limited(resp: ureq::http::Response<ureq::Body>, what: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    resp.into_body()
        .into_reader()
        .take(INDEX_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| anyhow::anyhow!("{what}: the answer broke off: {e}"))?;
    if bytes.len() as u64 > INDEX_LIMIT {
        bail!("{what}: the answer is larger than {INDEX_LIMIT} bytes");
    }
    Ok(bytes)
}
