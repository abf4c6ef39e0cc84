//! `cargo oci load`: finds a local container engine (the Docker engine, honouring `DOCKER_HOST`,
//! or podman, whichever answers) and streams the built images into its `load` as a
//! docker-archive, with the bytes shown as they go.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use crate::oci::image::Image;
use crate::oci::store::Store;
use crate::sink::{archive, Delivered, Sink};
use crate::util::reporter::{bytes, Reporter};

/// A container engine that can load images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Runtime {
    Docker,
    Podman,
}

impl Runtime {
    pub fn program(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Podman => "podman",
        }
    }

    /// The command that proves the engine answers.
    fn probe_args(self) -> &'static [&'static str] {
        match self {
            Runtime::Docker => &["version", "--format", "{{.Server.Version}}"],
            Runtime::Podman => &["version", "--format", "{{.Client.Version}}"],
        }
    }
}

/// How long an engine gets to answer `version`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// Asks `rt` for its version: `Ok(version)` when it answers, else why not.
pub fn probe(rt: Runtime) -> Result<String, String> {
    let mut child = Command::new(rt.program())
        .args(rt.probe_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("`{}` is not installed", rt.program()),
            _ => format!("cannot run `{}`: {e}", rt.program()),
        })?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() < PROBE_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`{} version` did not answer in {}s",
                    rt.program(),
                    PROBE_TIMEOUT.as_secs()
                ));
            }
            Err(e) => return Err(format!("`{} version`: {e}", rt.program())),
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("`{} version`: {e}", rt.program()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && !stdout.is_empty() {
        Ok(stdout)
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let err = err.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
        Err(format!(
            "`{} version` failed ({}): {}",
            rt.program(),
            out.status,
            err.trim()
        ))
    }
}

/// The engine to load into: `choice` if it answers, else the first of Docker and podman that
/// does. Called before the build, so a missing engine costs no build time.
pub fn detect(choice: Option<Runtime>, report: &Reporter) -> Result<(Runtime, String)> {
    let candidates = match choice {
        Some(rt) => vec![rt],
        None => vec![Runtime::Docker, Runtime::Podman],
    };
    let mut why = Vec::new();
    for rt in candidates {
        match probe(rt) {
            Ok(v) => {
                report.detail(&format!("{} {v} answers", rt.program()));
                return Ok((rt, v));
            }
            Err(e) => {
                report.detail(&e);
                why.push(e);
            }
        }
    }
    let host = std::env::var("DOCKER_HOST")
        .map(|h| format!(" (DOCKER_HOST={h})"))
        .unwrap_or_default();
    let (what, hint) = match choice {
        Some(Runtime::Docker) => (
            format!("the Docker engine does not answer{host}"),
            "start the Docker engine or point DOCKER_HOST at one (e.g. unix:///run/docker.sock), or use --runtime podman",
        ),
        Some(Runtime::Podman) => (
            "podman does not answer".to_string(),
            "install podman (apt-get install podman), or use --runtime docker",
        ),
        None => (
            format!("no container engine to load into: neither Docker{host} nor podman answers"),
            "install and start Docker (or set DOCKER_HOST to a running engine), or install podman; or write the image to a file with `cargo oci build --format docker-archive -o image.tar`",
        ),
    };
    Err(anyhow!("{what}:\n  {}\n  help: {hint}", why.join("\n  ")))
}

/// A local engine's `load`, found (or named) before the build.
pub struct Engine {
    pub runtime: Runtime,
}

impl Sink for Engine {
    fn kind(&self) -> &'static str {
        "engine"
    }
    fn deliver(&self, store: &Store, images: &[&Image], report: &Reporter) -> Result<Delivered> {
        let said = load(self.runtime, store, images, report)?;
        Ok(Delivered::Engine { said })
    }
}

/// Streams `images` into `rt load`. Returns what the engine said it loaded (its stdout).
pub fn load(rt: Runtime, store: &Store, images: &[&Image], report: &Reporter) -> Result<String> {
    let mut child = Command::new(rt.program())
        .arg("load")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run `{} load`", rt.program()))?;
    let total: u64 = archive_size(images);
    let progress = report.progress("Loading", &format!("into {}", rt.program()), Some(total));
    let written = {
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("no stdin for `{} load`", rt.program()))?;
        let mut w = progress.writer(std::io::BufWriter::with_capacity(1 << 17, stdin));
        let r = archive::write_docker_archive(store, images, &mut w).and_then(|_| Ok(w.flush()?));
        drop(w);
        r
    };
    progress.set_message(&format!("into {} (importing)", rt.program()));
    let out = child
        .wait_with_output()
        .with_context(|| format!("`{} load` did not finish", rt.program()))?;
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // A damaged cache stops the stream, and the engine then fails on it: the cache is the cause.
    if let Err(e) = &written {
        if crate::oci::store::is_damaged(e) {
            return written.map(|_| String::new());
        }
    }
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(anyhow!(
            "`{} load` failed ({}): {err}\n  help: check that the engine has room and answers `{} images`",
            rt.program(),
            out.status,
            rt.program()
        ));
    }
    written.with_context(|| format!("cannot stream the image into `{} load`", rt.program()))?;
    let done = progress.done();
    let secs = progress.elapsed().as_secs_f64();
    progress.finish(
        "Loaded",
        &format!(
            "{} into {} ({} in {secs:.1}s)",
            images
                .first()
                .map(|i| i.name.to_string())
                .unwrap_or_default(),
            rt.program(),
            bytes(done)
        ),
    );
    Ok(said)
}

/// About the size of the docker-archive of `images` (uncompressed layers, each once).
fn archive_size(images: &[&Image]) -> u64 {
    let mut seen = std::collections::BTreeSet::new();
    images
        .iter()
        .flat_map(|i| &i.layers)
        .filter(|l| seen.insert(l.diff_id.clone()))
        .map(|l| l.tar_size + 1024)
        .sum::<u64>()
        + images.iter().map(|i| i.config.size + 1024).sum::<u64>()
}
