//! The registry conversation of a push, begun while the build runs. When the push sink is
//! checked (before any build work; with `--to`, as soon as the command starts, the tags handed
//! over once the image is configured), a thread looks up the credentials, connects (the API
//! root, a token) and asks what the image's configured tags name; for the one manifest they name, it
//! also asks what names its content tag would have, and which artifacts are attached to it (the
//! referrers API's list, else the fallback tag's, and whether the listed manifests are there).
//! After the build the push starts from these answers ([`Answers`]): a repeat push whose tags
//! already name its manifest, with its SBOM attached, asks the registry nothing more.
//!
//! Answers older than [`FRESH`] are not used (the push asks again); a question that went wrong
//! counts as not asked. A connection that failed fails the push as connecting after the build
//! would have, with the same error. Also here: [`connect`], [`at_once`] and [`fallback_tag`],
//! which the push, the index push and the attached artifacts share.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::oci::digest::Digest;
use crate::oci::index::INDEX_MEDIA_TYPE;
use crate::oci::reference::ImageName;
use crate::registry::auth::{self, Credential};
use crate::registry::{Client, ClientOptions};

/// How old the answers may be when the push uses them.
pub const FRESH: Duration = Duration::from_secs(10);

/// How long a conversation started before the image was configured waits for its tags.
const WAIT_FOR_TAGS: Duration = Duration::from_secs(600);

/// What a push asks for when it asks what a tag names: an image manifest or an index.
pub const ANY_MANIFEST: &str =
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

/// The most listed artifacts whose presence is asked about.
const MAX_LISTED: usize = 8;

/// The most questions in flight at once.
const MAX_AT_ONCE: usize = 16;

/// What the repository was seen to hold.
#[derive(Debug, Clone, Default)]
pub struct Answers {
    /// A tag → the digest it names (`None`: it names nothing).
    pub names: BTreeMap<String, Option<Digest>>,
    /// Manifests seen in the repository, by digest.
    pub present: BTreeSet<Digest>,
    /// A manifest → the artifacts attached to it, as listed.
    pub referrers: BTreeMap<Digest, Listing>,
}

impl Answers {
    /// Whether the repository is known to hold the manifest `digest` (asked by digest, or a tag
    /// names it).
    pub fn holds(&self, digest: &Digest) -> bool {
        self.present.contains(digest) || self.names.values().any(|d| d.as_ref() == Some(digest))
    }
}

/// How the artifacts attached to a manifest are listed.
#[derive(Debug, Clone)]
pub enum Listing {
    /// The referrers API's index.
    Api(Vec<u8>),
    /// No referrers API: the fallback tag's index, if there is one.
    Fallback(Option<Vec<u8>>),
}

impl Listing {
    /// Whether the list names `digest`.
    pub fn names(&self, digest: &Digest) -> bool {
        let bytes = match self {
            Listing::Api(b) | Listing::Fallback(Some(b)) => b,
            Listing::Fallback(None) => return false,
        };
        listed(bytes).iter().any(|d| d == digest)
    }
}

/// The manifest digests an index lists.
fn listed(bytes: &[u8]) -> Vec<Digest> {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| {
            v["manifests"].as_array().map(|m| {
                m.iter()
                    .filter_map(|e| e["digest"].as_str()?.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// The fallback tag of `digest`'s referrers: `sha256-<hex>`.
pub fn fallback_tag(digest: &Digest) -> String {
    digest.as_str().replace(':', "-")
}

/// A connection made ahead, with what it learnt.
pub struct Early {
    pub client: Client,
    /// The credential in use (looked up once per push).
    pub credential: Option<Credential>,
    pub answers: Answers,
    asked: Instant,
}

/// What the credential look-up says at `-v` (once it was made), and the conversation or why
/// it failed.
pub type Conversation = (Option<String>, Result<Early>);

enum State {
    /// Nothing to ask ahead (or not asked yet): the push connects after the build.
    Idle,
    /// Asked for when the sink is checked.
    Planned {
        name: ImageName,
        tags: Vec<String>,
    },
    Running {
        registry: String,
        repository: String,
        thread: JoinHandle<Conversation>,
        /// Where the tags go, for a conversation started before they were known.
        tags: Option<mpsc::Sender<Vec<String>>>,
    },
    Taken,
}

/// The conversation of one push sink, begun by [`Ahead::start`] and taken by the first image
/// pushed to its repository.
pub struct Ahead(Mutex<State>);

impl std::fmt::Debug for Ahead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ahead")
    }
}

impl Ahead {
    /// Nothing asked ahead.
    #[cfg(test)]
    pub fn none() -> Arc<Ahead> {
        Arc::new(Ahead(Mutex::new(State::Idle)))
    }

    /// To ask, once started, what `tags` of `name` name.
    pub fn planned(name: ImageName, tags: Vec<String>) -> Arc<Ahead> {
        Arc::new(Ahead(Mutex::new(State::Planned { name, tags })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the conversation on a thread of its own (once).
    pub fn start(&self, given: Option<Credential>, opts: ClientOptions, attach: bool) {
        let mut state = self.lock();
        if !matches!(*state, State::Planned { .. }) {
            return;
        }
        let State::Planned { name, tags } = std::mem::replace(&mut *state, State::Idle) else {
            return;
        };
        let registry = name.registry.as_str().to_string();
        let repository = name.repository.as_str().to_string();
        let (r, repo) = (registry.clone(), repository.clone());
        let thread = std::thread::Builder::new()
            .name("registry".into())
            .spawn(move || converse(&r, &repo, Tags::Known(tags), given.as_ref(), opts, attach));
        *state = match thread {
            Ok(thread) => State::Running {
                registry,
                repository,
                thread,
                tags: None,
            },
            Err(_) => State::Idle,
        };
    }

    /// Connects to `name`'s repository at once, before the image to push there is known; what
    /// its tags name is asked once [`Ahead::plan`] gives them.
    pub fn connecting(
        name: &ImageName,
        given: Option<Credential>,
        opts: ClientOptions,
        attach: bool,
    ) -> Arc<Ahead> {
        let (registry, repository) = (name.registry.clone(), name.repository.clone());
        let (r, repo) = (registry.clone(), repository.clone());
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("registry".into())
            .spawn(move || converse(&r, &repo, Tags::Later(rx), given.as_ref(), opts, attach));
        let state = match thread {
            Ok(thread) => State::Running {
                registry,
                repository,
                thread,
                tags: Some(tx),
            },
            Err(_) => State::Idle,
        };
        Arc::new(Ahead(Mutex::new(state)))
    }

    /// The conversation for pushing an image with `tags` to `name`: this one, when it connects
    /// to that repository and waits for the tags (they are handed over), else a new one that
    /// asks once started.
    pub fn plan(self: &Arc<Self>, name: ImageName, tags: Vec<String>) -> Arc<Ahead> {
        let mut state = self.lock();
        if let State::Running {
            registry,
            repository,
            tags: waiting @ Some(_),
            ..
        } = &mut *state
        {
            if *registry == name.registry && *repository == name.repository {
                if let Some(tx) = waiting.take() {
                    let _ = tx.send(tags);
                }
                return self.clone();
            }
        }
        drop(state);
        Ahead::planned(name, tags)
    }

    /// The conversation, when it was with `repository` of `registry` (waited for if still under
    /// way); its answers are dropped when they are no longer fresh. `None`: the push connects
    /// itself.
    pub fn take(&self, registry: &str, repository: &str) -> Option<Conversation> {
        let mut state = self.lock();
        match &*state {
            State::Running {
                registry: r,
                repository: p,
                ..
            } if r == registry && p == repository => {}
            _ => return None,
        }
        let State::Running { thread, .. } = std::mem::replace(&mut *state, State::Taken) else {
            return None;
        };
        drop(state);
        let mut early = match thread.join() {
            Ok(r) => r,
            Err(_) => return None,
        };
        if let (_, Ok(e)) = &mut early {
            if e.asked.elapsed() > FRESH {
                e.answers = Answers::default();
            }
        }
        Some(early)
    }
}

/// A checked connection to `registry` with `scopes`.
pub fn connect(
    registry: &str,
    credential: Option<Credential>,
    scopes: Vec<String>,
    opts: &ClientOptions,
) -> Result<Client> {
    let mut client =
        Client::new(registry, credential, scopes, opts.clone())?.with_login_hint(format!(
            "pass --username USER --password-stdin, set CARGO_OCI_REGISTRY_USER and \
             CARGO_OCI_REGISTRY_PASSWORD, or log in with `docker login {registry}` or \
             `podman login {registry}`"
        ));
    client.check()?;
    Ok(client)
}

/// `f` of every item, all at once (up to 16 at a time), in the items' order.
pub fn at_once<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    if items.len() <= 1 {
        return items.iter().map(&f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let out: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..items.len().min(MAX_AT_ONCE) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                *out[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            });
        }
    });
    out.into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .map(|r| r.expect("every item was answered"))
        .collect()
}

/// The tags to ask about: known when the conversation starts, or given later.
enum Tags {
    Known(Vec<String>),
    Later(mpsc::Receiver<Vec<String>>),
}

/// The conversation: connect, then what the tags name, then about the manifest they name.
fn converse(
    registry: &str,
    repo: &str,
    tags: Tags,
    given: Option<&Credential>,
    opts: ClientOptions,
    attach: bool,
) -> Conversation {
    let (credential, said) = match auth::resolve_said(registry, given) {
        Ok(found) => found,
        Err(e) => return (None, Err(e)),
    };
    let scopes = vec![format!("repository:{repo}:pull,push")];
    let client = match connect(registry, credential.clone(), scopes, &opts) {
        Ok(c) => c,
        Err(e) => return (Some(said), Err(e)),
    };
    // Given later: by the time the image is configured (none when that failed).
    let tags = match tags {
        Tags::Known(t) => t,
        Tags::Later(rx) => rx.recv_timeout(WAIT_FOR_TAGS).unwrap_or_default(),
    };
    let asked = Instant::now();
    let mut answers = Answers::default();
    ask_names(&client, repo, &tags, &mut answers);
    let named: BTreeSet<&Digest> = answers.names.values().flatten().collect();
    if let [digest] = named.into_iter().collect::<Vec<_>>()[..] {
        let digest = digest.clone();
        answers.present.insert(digest.clone());
        about(&client, repo, &digest, attach, &mut answers);
    }
    let early = Early {
        client,
        credential,
        answers,
        asked,
    };
    (Some(said), Ok(early))
}

/// Asks what each of `tags` names, at once; a question that goes wrong is left out.
pub fn ask_names(client: &Client, repo: &str, tags: &[String], answers: &mut Answers) {
    let got = at_once(tags, |t| client.manifest_digest(repo, t, ANY_MANIFEST));
    for (t, d) in tags.iter().zip(got) {
        if let Ok(d) = d {
            answers.names.insert(t.clone(), d);
        }
    }
}

/// About the manifest `digest` the tags name: its content tag (the first 16 hex digits of its
/// config's digest for an image, of its own for an index) and, with `attach`, its referrers.
fn about(client: &Client, repo: &str, digest: &Digest, attach: bool, answers: &mut Answers) {
    // One round: the manifest itself and the referrers API.
    let (manifest, api) = std::thread::scope(|s| {
        let api = attach.then(|| s.spawn(|| client.referrers(repo, digest)));
        let manifest = client.get_manifest_ref(repo, digest.as_str(), ANY_MANIFEST);
        (manifest, api.map(|t| t.join()))
    });
    let listing = match api {
        Some(Ok(Ok(Some(index)))) => Some(Listing::Api(index)),
        Some(Ok(Ok(None))) => client
            .get_manifest_ref(repo, &fallback_tag(digest), INDEX_MEDIA_TYPE)
            .ok()
            .map(Listing::Fallback),
        _ => None,
    };
    // The next: the content tags it may have, and whether the artifacts listed under the
    // fallback tag are there (the referrers API lists only what is).
    let mut tags: Vec<String> = vec![digest.hex()[..16].to_string()];
    if let Some(config) = manifest.ok().flatten().and_then(|m| config_of(&m)) {
        tags.push(config.hex()[..16].to_string());
    }
    tags.retain(|t| !answers.names.contains_key(t));
    let artifacts: Vec<Digest> = match &listing {
        Some(Listing::Fallback(Some(index))) => {
            listed(index).into_iter().take(MAX_LISTED).collect()
        }
        _ => Vec::new(),
    };
    let asks: Vec<Ask> = (tags.into_iter().map(Ask::Tag))
        .chain(artifacts.into_iter().map(Ask::Manifest))
        .collect();
    let got = at_once(&asks, |a| match a {
        Ask::Tag(t) => client.manifest_digest(repo, t, ANY_MANIFEST),
        Ask::Manifest(d) => client.manifest_digest(repo, d.as_str(), ANY_MANIFEST),
    });
    for (a, d) in asks.into_iter().zip(got) {
        match (a, d) {
            (Ask::Tag(t), Ok(d)) => {
                answers.names.insert(t, d);
            }
            (Ask::Manifest(want), Ok(Some(d))) if d == want => {
                answers.present.insert(d);
            }
            _ => {}
        }
    }
    if let Some(listing) = listing {
        answers.referrers.insert(digest.clone(), listing);
    }
}

enum Ask {
    Tag(String),
    Manifest(Digest),
}

/// The config digest of an image manifest.
fn config_of(manifest: &[u8]) -> Option<Digest> {
    let v: serde_json::Value = serde_json::from_slice(manifest).ok()?;
    v["config"]["digest"].as_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_name_their_entries() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{ "digest": a.as_str(), "size": 1 }],
        }))
        .unwrap();
        assert!(Listing::Api(index.clone()).names(&a));
        assert!(!Listing::Api(index.clone()).names(&b));
        assert!(Listing::Fallback(Some(index)).names(&a));
        assert!(!Listing::Fallback(None).names(&a));
        assert!(!Listing::Api(b"not json".to_vec()).names(&a));
    }

    #[test]
    fn answers_hold_what_a_tag_names() {
        let a = Digest::of(b"a");
        let mut answers = Answers::default();
        assert!(!answers.holds(&a));
        answers.names.insert("latest".into(), None);
        assert!(!answers.holds(&a));
        answers.names.insert("v1".into(), Some(a.clone()));
        assert!(answers.holds(&a));
    }

    #[test]
    fn at_once_keeps_the_order() {
        let items: Vec<u32> = (0..40).collect();
        let out = at_once(&items, |i| i * 2);
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        assert!(at_once(&[] as &[u32], |i| *i).is_empty());
    }

    #[test]
    fn a_conversation_begun_early_is_kept_when_the_sink_is_checked() {
        // Nothing listens on port 9 of loopback: the conversation ends in an error at once.
        let name = ImageName::parse("127.0.0.1:9/app").unwrap();
        let opts = ClientOptions {
            attempts: 1,
            ..ClientOptions::default()
        };
        let early = Ahead::connecting(&name, None, opts.clone(), false);
        let ahead = early.plan(name.clone(), vec!["latest".into()]);
        assert!(
            Arc::ptr_eq(&early, &ahead),
            "the tags go to the conversation under way"
        );
        ahead.start(None, opts, false);
        assert!(ahead.take("127.0.0.1:9", "other").is_none());
        let (said, taken) = ahead.take("127.0.0.1:9", "app").expect("the conversation");
        // What -v says of the credentials is kept for the push to say, even on a failure.
        assert!(said.is_some_and(|s| s.contains("127.0.0.1:9")));
        let err = format!("{:#}", taken.err().expect("nothing listens there"));
        assert!(err.contains("127.0.0.1:9"), "{err}");
        assert!(ahead.take("127.0.0.1:9", "app").is_none(), "taken once");
        // Another repository: a conversation of its own, once started.
        let other = ImageName::parse("127.0.0.1:9/other").unwrap();
        assert!(!Arc::ptr_eq(&early, &early.plan(other, vec![])));
    }

    #[test]
    fn a_push_to_another_repository_does_not_take_the_conversation() {
        let ahead = Ahead::none();
        assert!(ahead.take("127.0.0.1:5000", "app").is_none());
        let name = ImageName::parse("127.0.0.1:9/app").unwrap();
        let planned = Ahead::planned(name, vec!["latest".into()]);
        // Planned but not started: nothing to take.
        assert!(planned.take("127.0.0.1:9", "app").is_none());
    }
}
