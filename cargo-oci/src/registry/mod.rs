//! The registry protocol client (OCI distribution API), low in the stack: it knows blobs,
//! manifests, credentials and HTTP, nothing of builds. The push sink and the reading of base
//! images share it, and with it the TLS roots (`--ca-file`), the scheme choice
//! (`--insecure-registry`), the retries and the credentials.
//!
//! Why a small synchronous client of our own over `ureq` (rustls with the `ring` provider)
//! rather than `oci-client`: `oci-client` re-uploads blobs the registry already has, fails on a
//! `202 Accepted` answer to a mount, has no retries and no Docker-config credentials, and brings
//! tokio plus a TLS stack that cost much more build time. What a push or a pull needs is a
//! handful of requests (GET, HEAD, POST, PATCH, PUT), each simple to retry; `ureq` does
//! HTTP/1.1, pooling and TLS well, and std threads give the bounded parallelism. Credentials
//! files and helpers are read by the `docker_credential` crate ([`auth`]).
//!
//! [`client`] is the transport (TLS, scheme, retries, errors), [`negotiate`] answers
//! authentication challenges, [`push`] and [`pull`] are the operations of each direction, [`referrers`] the
//! OCI 1.1 referrers of a manifest.

pub mod auth;
pub mod client;
mod negotiate;
pub mod pull;
pub mod push;
pub mod referrers;

pub use client::{Client, ClientOptions};
pub use push::{BlobFile, Mount};
