//! Reading a base image from a registry, pinned by digest: the policy only (the protocol is
//! [`crate::registry`]'s client, the same one `push` uses, with its TLS roots, scheme choice,
//! retries and credentials). Manifests and indexes come from `/manifests/`, configs and layers
//! from `/blobs/`; every document is size-capped and checked against its digest before use, and
//! layers are checked by the caller as they stream in. The blob store is the cache: nothing
//! already there intact is fetched again (every cached blob is hashed before use; a damaged one
//! is removed, fetched again and reported as a repair), and a build whose base is all in the
//! store does not reach the registry at all.
//!
//! Credentials: those `push` finds ([`auth::resolve`]: `CARGO_OCI_REGISTRY_USER` /
//! `CARGO_OCI_REGISTRY_PASSWORD`, containers' auth.json, Docker's config.json and its credential
//! helpers), else anonymous, with the source said at `-v` as `push` says it; tokens are asked
//! for the repository's `pull` scope only.

use std::cell::OnceCell;
use std::io::Read;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{Blobs, MAX_JSON};
use crate::oci::digest::Digest;
use crate::oci::reference::ImageName;
use crate::oci::store::Store;
use crate::registry::auth;
use crate::registry::{Client, ClientOptions};
use crate::util::reporter::Reporter;

/// A registry repository as a source of blobs, connected on first need.
pub struct Source<'a> {
    name: &'a ImageName,
    store: &'a Store,
    opts: &'a ClientOptions,
    report: &'a Reporter,
    client: OnceCell<Client>,
}

impl<'a> Source<'a> {
    pub fn new(
        name: &'a ImageName,
        store: &'a Store,
        opts: &'a ClientOptions,
        report: &'a Reporter,
    ) -> Source<'a> {
        Source {
            name,
            store,
            opts,
            report,
            client: OnceCell::new(),
        }
    }

    /// The client, connected and logged in on first use.
    fn client(&self) -> Result<&Client> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let registry = &self.name.registry;
        let scopes = vec![format!("repository:{}:pull", self.name.repository)];
        let credential = auth::resolve(registry, None, self.report)?;
        let mut client = Client::new(registry, credential, scopes, self.opts.clone())?
            .with_login_hint(format!(
                "log in with `docker login {registry}` or `podman login {registry}`, or set \
                 CARGO_OCI_REGISTRY_USER and CARGO_OCI_REGISTRY_PASSWORD"
            ));
        client.check()?;
        Ok(self.client.get_or_init(|| client))
    }

    /// Whether the store holds the blob `digest` intact. A damaged copy (bytes that do not hash to
    /// its name: a disk error, an interrupted copy, a hand edit) is removed, so that it is
    /// fetched again, and the repair is noted for the build's report.
    fn cached(&self, digest: &Digest) -> bool {
        if !self.store.contains(digest) {
            return false;
        }
        let path = self.store.path(digest);
        match crate::oci::store::file_digest(&path) {
            Ok(got) if &got == digest => true,
            found => {
                let why = match found {
                    Ok(got) => format!("its bytes hash to {got}"),
                    Err(e) => format!("it cannot be read: {e}"),
                };
                let removed = std::fs::remove_file(&path).is_ok();
                self.store.note_repair(format!(
                    "base image blob {digest} in {} ({why}){}",
                    self.store.root().display(),
                    if removed {
                        "; fetched again from the registry"
                    } else {
                        ""
                    }
                ));
                false
            }
        }
    }

    /// A JSON document by digest, from the store or else from `fetch`; checked and stored.
    fn document(
        &self,
        digest: &Digest,
        fetch: impl FnOnce(&Client) -> Result<Vec<u8>>,
    ) -> Result<(Vec<u8>, Value)> {
        let bytes = if self.cached(digest) {
            std::fs::read(self.store.path(digest))?
        } else {
            fetch(self.client()?)?
        };
        if bytes.len() as u64 > MAX_JSON {
            bail!("{digest} is larger than {MAX_JSON} bytes: not a manifest or config");
        }
        let got = Digest::of(&bytes);
        if got != *digest {
            bail!("the registry sent {got} for {digest}: refusing it");
        }
        self.store.put(&bytes)?;
        let v = serde_json::from_slice(&bytes).with_context(|| format!("{digest} is not JSON"))?;
        Ok((bytes, v))
    }
}

impl Blobs for Source<'_> {
    fn open(&self, digest: &Digest) -> Result<Box<dyn Read + '_>> {
        if self.cached(digest) {
            return Ok(Box::new(crate::oci::store::open(&self.store.path(digest))?));
        }
        Ok(Box::new(
            self.client()?.get_blob(&self.name.repository, digest)?,
        ))
    }

    fn json(&self, digest: &Digest) -> Result<(Vec<u8>, Value)> {
        self.document(digest, |c| {
            let mut bytes = Vec::new();
            c.get_blob(&self.name.repository, digest)?
                .take(MAX_JSON + 1)
                .read_to_end(&mut bytes)?;
            Ok(bytes)
        })
    }

    fn manifest(&self, digest: &Digest) -> Result<(Vec<u8>, Value)> {
        self.document(digest, |c| {
            c.get_manifest(&self.name.repository, digest, MAX_JSON)
        })
    }
}
