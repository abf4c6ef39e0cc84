//! The registry protocol client (OCI distribution API), low in the stack: it knows blobs,
//! manifests, credentials and HTTP, nothing of builds, so the push command and any future image
//! puller share it.
//!
//! Why a small synchronous client of our own over `ureq` (rustls with the `ring` provider)
//! rather than `oci-client`: `oci-client` re-uploads blobs the registry already has, fails on a
//! `202 Accepted` answer to a mount, has no retries and no Docker-config credentials, and brings
//! tokio plus a TLS stack that cost much more build time. What a push needs is a handful of
//! requests (HEAD, POST, PATCH, PUT), each simple to retry; `ureq` does HTTP/1.1, pooling and
//! TLS well, and std threads give the bounded parallelism. Credentials files and helpers are
//! read by the `docker_credential` crate ([`auth`]).

pub mod auth;
pub mod client;

pub use client::{BlobFile, Client, ClientOptions, Mount};
