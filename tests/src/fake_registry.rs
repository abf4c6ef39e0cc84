//! A small in-memory registry on loopback that answers the OCI 1.1 referrers API (none that does
//! is installable here): blob uploads (monolithic and chunked), manifest `PUT`/`GET`/`HEAD` by tag
//! or digest, and `GET /v2/<name>/referrers/<digest>` listing the manifests whose `subject` is
//! that digest. It records every request. Plain HTTP, one request per connection.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::Digest as _;

#[derive(Default)]
struct State {
    /// digest → bytes.
    blobs: HashMap<String, Vec<u8>>,
    /// upload id → bytes so far.
    uploads: HashMap<String, Vec<u8>>,
    /// (repository, tag or digest) → (media type, bytes).
    manifests: HashMap<(String, String), (String, Vec<u8>)>,
    /// `METHOD target` of every request.
    seen: Vec<String>,
}

/// The fake registry, stopped on drop.
pub struct FakeRegistry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

impl FakeRegistry {
    pub fn start() -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake registry");
        let addr = listener.local_addr().expect("its address").to_string();
        listener.set_nonblocking(true).expect("nonblocking");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let ids = Arc::new(AtomicUsize::new(0));
        let (state2, stop2) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            // Bounded: a test that forgets to drop it does not keep it for ever.
            let t0 = Instant::now();
            while !stop2.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(900) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (state, ids) = (state2.clone(), ids.clone());
                        std::thread::spawn(move || {
                            let _ = serve(conn, &state, &ids);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeRegistry {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// `METHOD target` of every request so far.
    pub fn seen(&self) -> Vec<String> {
        self.state.lock().unwrap().seen.clone()
    }

    /// The manifest `reference` names in `repo`.
    pub fn manifest(&self, repo: &str, reference: &str) -> Option<Vec<u8>> {
        let s = self.state.lock().unwrap();
        s.manifests
            .get(&(repo.to_string(), reference.to_string()))
            .map(|(_, b)| b.clone())
    }

    /// The blob `digest`.
    pub fn blob(&self, digest: &str) -> Option<Vec<u8>> {
        self.state.lock().unwrap().blobs.get(digest).cloned()
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn respond(
    out: &mut TcpStream,
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let mut text = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    out.write_all(text.as_bytes())?;
    if !head_only {
        out.write_all(body)?;
    }
    out.flush()?;
    let _ = out.shutdown(Shutdown::Write);
    Ok(())
}

fn serve(conn: TcpStream, state: &Mutex<State>, ids: &AtomicUsize) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    // A TLS handshake (a client trying HTTPS first): plain HTTP only here, so hang up.
    let mut first = [0u8; 1];
    if conn.peek(&mut first)? == 0 || first[0] == 0x16 {
        return Ok(());
    }
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut head = Vec::new();
    for _ in 0..200 {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        head.push(line.trim_end().to_string());
    }
    let request_line = head.first().cloned().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let header = |name: &str| {
        head.iter()
            .filter_map(|h| h.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    };
    let len: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let digest_q = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("digest="))
        .map(|d| d.replace("%3A", ":").replace("%3a", ":"));
    let mut out = conn;
    let mut s = state.lock().unwrap();
    s.seen.push(format!("{method} {target}"));
    let head_only = method == "HEAD";
    if path == "/v2/" || path == "/v2" {
        return respond(&mut out, 200, &[], b"{}", head_only);
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return respond(&mut out, 404, &[], b"{}", head_only);
    };
    if let Some((repo, digest)) = rest.split_once("/referrers/") {
        let mut manifests = Vec::new();
        for ((r, reference), (mt, bytes)) in &s.manifests {
            if r != repo || !reference.starts_with("sha256:") {
                continue;
            }
            let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
            if v["subject"]["digest"] == digest {
                manifests.push(serde_json::json!({
                    "mediaType": mt, "digest": reference, "size": bytes.len(),
                    "artifactType": v["artifactType"], "annotations": v["annotations"],
                }));
            }
        }
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        let ct = (
            "Content-Type",
            "application/vnd.oci.image.index.v1+json".to_string(),
        );
        return respond(
            &mut out,
            200,
            &[ct],
            index.to_string().as_bytes(),
            head_only,
        );
    }
    if let Some((repo, reference)) = rest.split_once("/manifests/") {
        let key = (repo.to_string(), reference.to_string());
        return match method.as_str() {
            "PUT" => {
                let digest = sha256(&body);
                let mt = header("content-type").unwrap_or_default();
                s.manifests.insert(key, (mt.clone(), body.clone()));
                s.manifests
                    .insert((repo.to_string(), digest.clone()), (mt, body));
                respond(
                    &mut out,
                    201,
                    &[("Docker-Content-Digest", digest)],
                    b"",
                    false,
                )
            }
            _ => match s.manifests.get(&key) {
                Some((mt, bytes)) => respond(
                    &mut out,
                    200,
                    &[
                        ("Content-Type", mt.clone()),
                        ("Docker-Content-Digest", sha256(bytes)),
                    ],
                    bytes,
                    head_only,
                ),
                None => respond(&mut out, 404, &[], b"{}", head_only),
            },
        };
    }
    if let Some((_, upload)) = rest.split_once("/blobs/uploads/") {
        if method == "POST" {
            let id = ids.fetch_add(1, Ordering::Relaxed).to_string();
            s.uploads.insert(id.clone(), Vec::new());
            let loc = format!("{path}{id}");
            return respond(&mut out, 202, &[("Location", loc)], b"", false);
        }
        let id = upload.to_string();
        let Some(mut got) = s.uploads.remove(&id) else {
            return respond(&mut out, 404, &[], b"{}", false);
        };
        got.extend_from_slice(&body);
        if method == "PATCH" {
            s.uploads.insert(id, got);
            return respond(&mut out, 202, &[("Location", path.to_string())], b"", false);
        }
        let digest = sha256(&got);
        if digest_q.as_deref() != Some(digest.as_str()) {
            return respond(&mut out, 400, &[], b"{}", false);
        }
        s.blobs.insert(digest.clone(), got);
        return respond(
            &mut out,
            201,
            &[("Docker-Content-Digest", digest)],
            b"",
            false,
        );
    }
    if let Some((_, digest)) = rest.split_once("/blobs/") {
        return match s.blobs.get(digest) {
            Some(b) => {
                let n = b.len();
                let mut text = format!(
                    "HTTP/1.1 200 OK\r\nConnection: close\r\nDocker-Content-Digest: {digest}\r\nContent-Length: {n}\r\n\r\n"
                )
                .into_bytes();
                if !head_only {
                    text.extend_from_slice(b);
                }
                out.write_all(&text)?;
                let _ = out.shutdown(Shutdown::Write);
                Ok(())
            }
            None => respond(&mut out, 404, &[], b"{}", head_only),
        };
    }
    respond(&mut out, 404, &[], b"{}", head_only)
}
