//! `cargo oci join`: one OCI index from single-platform images already pushed to one repository
//! (one per CI job and architecture), named by digest. Reads each manifest and config (to learn
//! the platform and the package), refuses images that do not belong together, then puts the
//! index by digest and only then its tags. No layer is read or sent, nothing is rebuilt.

use std::io::Read;

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

use crate::oci::digest::Digest;
use crate::oci::index::{self, IndexEntry, INDEX_MEDIA_TYPE};
use crate::oci::reference::{validate_tag, ImageName};
use crate::registry::auth;
use crate::registry::{Client, ClientOptions};
use crate::util::error::UsageError;
use crate::util::reporter::Reporter;

/// What `cargo oci join` was asked to do.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// `HOST/REPO@sha256:…`, one per platform.
    pub inputs: Vec<String>,
    /// Tags to set on the index.
    pub tags: Vec<String>,
    /// The platforms the index must hold, exactly (`--platform`); empty: whatever the inputs are.
    pub platforms: Vec<String>,
    pub client: ClientOptions,
}

/// The index made.
#[derive(Debug, Clone)]
pub struct Joined {
    pub name: ImageName,
    pub digest: Digest,
    pub tags: Vec<String>,
    /// (platform, manifest digest), in the index's order.
    pub platforms: Vec<(String, Digest)>,
}

const HELP: &str = "name each single-platform image by digest, as `cargo oci push` prints it: cargo oci join -t TAG HOST/REPO@sha256:… HOST/REPO@sha256:…";

/// A manifest or config is small: more than this is not one.
const LIMIT: u64 = 4 << 20;

fn parse_input(s: &str) -> Result<(ImageName, Digest), UsageError> {
    let bad = |why: String| UsageError::new(format!("join: `{s}`: {why}")).hint(HELP);
    let (name, digest) = s
        .split_once('@')
        .ok_or_else(|| bad("not pinned by digest (NAME@sha256:…)".into()))?;
    let digest = digest.parse::<Digest>().map_err(|e| bad(e.to_string()))?;
    let name = ImageName::parse(name).map_err(bad)?;
    Ok((name, digest))
}

/// One input as read from the registry.
struct Input {
    text: String,
    entry: IndexEntry,
    /// `title version` labels, when the image has them.
    package: Option<String>,
}

/// Joins the images into one index in their repository.
pub fn join(req: &JoinRequest, report: &Reporter) -> Result<Joined> {
    if req.inputs.is_empty() {
        return Err(UsageError::new("join needs the images to join")
            .hint(HELP)
            .into());
    }
    for t in &req.tags {
        validate_tag(t).map_err(|m| UsageError::new(format!("--tag {t}: {m}")))?;
    }
    let parsed = req
        .inputs
        .iter()
        .map(|s| parse_input(s))
        .collect::<Result<Vec<_>, _>>()?;
    let name = parsed[0].0.clone();
    for (n, _) in &parsed[1..] {
        if (n.registry.as_str(), n.repository.as_str())
            != (name.registry.as_str(), name.repository.as_str())
        {
            return Err(UsageError::new(format!(
                "join: {} and {} are in different repositories",
                name, n
            ))
            .hint("push every platform's image to one repository first (`cargo oci push --to`); join writes the index there and copies no layer")
            .into());
        }
    }
    let registry = name.registry.as_str();
    let repo = name.repository.as_str();
    let credential = auth::lookup(registry)
        .map_err(|m| anyhow!("cannot read the credentials for {registry}: {m}"))?;
    let mut client = Client::new(
        registry,
        credential,
        vec![format!("repository:{repo}:pull,push")],
        req.client.clone(),
    )?
    .with_login_hint(format!(
        "log in with `docker login {registry}` or `podman login {registry}`"
    ));
    client.check()?;

    let mut inputs = Vec::new();
    for ((_, digest), text) in parsed.iter().zip(&req.inputs) {
        inputs.push(read_input(&client, repo, digest, text)?);
    }
    check_together(&inputs, &req.platforms)?;
    // The order of --platform, else the order given: the same images in the same order give the
    // same index as a multi-platform build.
    if !req.platforms.is_empty() {
        inputs.sort_by_key(|i| {
            req.platforms
                .iter()
                .position(|p| same_platform(p, &i.entry.platform()))
        });
    }
    let entries: Vec<IndexEntry> = inputs.iter().map(|i| i.entry.clone()).collect();
    let doc = index::index_document_of(&entries)?;
    let digest = Digest::of(&doc);
    client
        .put_manifest(repo, digest.as_str(), INDEX_MEDIA_TYPE, &doc, &digest)
        .context("the index was not pushed: no tag was changed")?;
    let mut moved: Vec<&str> = Vec::new();
    for tag in &req.tags {
        client
            .put_manifest(repo, tag, INDEX_MEDIA_TYPE, &doc, &digest)
            .with_context(|| {
                format!(
                    "{name}@{digest} is pushed but tag `{tag}` could not be set; tags set: {}",
                    if moved.is_empty() {
                        "none".to_string()
                    } else {
                        moved.join(", ")
                    }
                )
            })?;
        moved.push(tag);
    }
    report.status(
        "Joined",
        &format!(
            "{name}@{} ({})",
            digest.short(),
            entries
                .iter()
                .map(IndexEntry::platform)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    Ok(Joined {
        name,
        digest,
        tags: req.tags.clone(),
        platforms: entries
            .iter()
            .map(|e| (e.platform(), e.digest.clone()))
            .collect(),
    })
}

/// `linux/arm64` names the same platform as `linux/arm64/v8` when one has no variant.
fn same_platform(a: &str, b: &str) -> bool {
    let parts = |s: &str| s.split('/').map(str::to_string).collect::<Vec<_>>();
    let (a, b) = (parts(a), parts(b));
    a.len().min(b.len()) >= 2 && a[..2] == b[..2] && (a.len() == 2 || b.len() == 2 || a == b)
}

fn read_input(client: &Client, repo: &str, digest: &Digest, text: &str) -> Result<Input> {
    let bytes = client.get_manifest(repo, digest, LIMIT)?;
    if Digest::of(&bytes) != *digest {
        return Err(anyhow!(
            "join: the registry's manifest for {text} does not match its digest"
        ));
    }
    let manifest: Value = serde_json::from_slice(&bytes)
        .map_err(|e| anyhow!("join: {text} is not a manifest: {e}"))?;
    let media_type = manifest["mediaType"]
        .as_str()
        .unwrap_or("application/vnd.oci.image.manifest.v1+json")
        .to_string();
    if media_type.contains("index")
        || media_type.contains("list")
        || manifest["manifests"].is_array()
    {
        return Err(UsageError::new(format!(
            "join: {text} is already an index, not one platform's image"
        ))
        .hint("join the single-platform images that `cargo oci push --target T` pushes")
        .into());
    }
    let config_digest: Digest = manifest["config"]["digest"]
        .as_str()
        .ok_or_else(|| anyhow!("join: the manifest of {text} names no config"))?
        .parse()
        .map_err(|e| anyhow!("join: the config digest of {text}: {e}"))?;
    let mut config = Vec::new();
    client
        .get_blob(repo, &config_digest)?
        .take(LIMIT + 1)
        .read_to_end(&mut config)
        .with_context(|| format!("cannot read the config of {text}"))?;
    if config.len() as u64 > LIMIT || Digest::of(&config) != config_digest {
        return Err(anyhow!(
            "join: the config of {text} is not what its manifest names"
        ));
    }
    let config: Value = serde_json::from_slice(&config)
        .map_err(|e| anyhow!("join: the config of {text} is not JSON: {e}"))?;
    let architecture = config["architecture"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let os = config["os"].as_str().unwrap_or_default().to_string();
    if architecture.is_empty() || os.is_empty() {
        return Err(UsageError::new(format!(
            "join: the config of {text} names no platform (architecture and os)"
        ))
        .hint("join images built by cargo-oci or another tool that records the platform")
        .into());
    }
    let labels = &config["config"]["Labels"];
    let label = |k: &str| labels[format!("org.opencontainers.image.{k}")].as_str();
    let package = label("title").map(|t| format!("{t} {}", label("version").unwrap_or("")));
    Ok(Input {
        text: text.to_string(),
        entry: IndexEntry {
            media_type,
            digest: digest.clone(),
            size: bytes.len() as u64,
            os,
            architecture,
            variant: config["variant"].as_str().map(str::to_string),
        },
        package,
    })
}

/// Refuses images that do not make one index: two of one platform, two packages (or versions),
/// or not the platforms `--platform` asks for.
fn check_together(inputs: &[Input], want: &[String]) -> Result<(), UsageError> {
    let pairs = || {
        inputs
            .iter()
            .enumerate()
            .flat_map(|(i, a)| inputs[i + 1..].iter().map(move |b| (a, b)))
    };
    for (a, b) in pairs() {
        if let (Some(pa), Some(pb)) = (&a.package, &b.package) {
            if pa != pb {
                return Err(UsageError::new(format!(
                    "join: {} is {} but {} is {}",
                    a.text, pa, b.text, pb
                ))
                .hint("join the images of one package and version, built from one commit"));
            }
        }
    }
    for (a, b) in pairs() {
        if a.entry.platform() == b.entry.platform() {
            return Err(UsageError::new(format!(
                "join: {} and {} are both {}",
                a.text,
                b.text,
                a.entry.platform()
            ))
            .hint("an index holds one image per platform: join one image of each"));
        }
    }
    if !want.is_empty() {
        let have: Vec<String> = inputs.iter().map(|i| i.entry.platform()).collect();
        let missing: Vec<&String> = want
            .iter()
            .filter(|w| !have.iter().any(|h| same_platform(w, h)))
            .collect();
        let extra: Vec<&String> = have
            .iter()
            .filter(|h| !want.iter().any(|w| same_platform(w, h)))
            .collect();
        if !missing.is_empty() || !extra.is_empty() {
            return Err(UsageError::new(format!(
                "join: the images are {}, but --platform asks for {}{}",
                have.join(", "),
                want.join(", "),
                if missing.is_empty() {
                    String::new()
                } else {
                    format!(" (missing: {})", missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))
                }
            ))
            .hint("push the missing platforms' images first (one `cargo oci push --target T` per platform), then join them all"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_pinned_names() {
        let (n, d) = parse_input(
            "127.0.0.1:5000/team/app@sha256:0000000000000000000000000000000000000000000000000000000000000000",
        )
        .unwrap();
        assert_eq!(n.repository, "team/app");
        assert!(d.as_str().starts_with("sha256:"));
        assert!(parse_input("127.0.0.1:5000/team/app:latest").is_err());
        assert!(parse_input("127.0.0.1:5000/team/app@sha256:xyz").is_err());
        assert!(same_platform("linux/arm64", "linux/arm64/v8"));
        assert!(!same_platform("linux/arm64", "linux/amd64"));
        assert!(!same_platform("linux/arm/v7", "linux/arm/v6"));
    }
}
