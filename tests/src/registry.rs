//! A real registry for the tests (Debian's `docker-registry` on 127.0.0.1, a free port and a
//! temporary storage directory, optionally behind htpasswd), killed when its guard drops; and a
//! small loopback HTTP proxy that counts requests and injects faults (error answers, dropped
//! connections) in front of it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::tool;

/// A running `docker-registry`, stopped on drop.
pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The htpasswd user and password, when protected.
    pub login: Option<(String, String)>,
    child: Child,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Registry {
    /// Starts a registry, protected by `login` when given. None when the tools are missing
    /// (outside CI).
    pub fn start(login: Option<(&str, &str)>) -> Option<Registry> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut auth = String::new();
        if let Some((user, pass)) = login {
            tool("htpasswd")?;
            let file = dir.path().join("htpasswd");
            crate::ok(
                Command::new("htpasswd")
                    .arg("-Bbc")
                    .arg(&file)
                    .args([user, pass]),
            );
            auth = format!(
                "auth:\n  htpasswd:\n    realm: cargo-oci-test\n    path: {}\n",
                file.display()
            );
        }
        Registry::start_with(dir, &auth, None, login)
    }

    /// Starts a registry serving HTTPS with a certificate for 127.0.0.1 from a CA of its own;
    /// returns it with that CA's certificate (PEM).
    pub fn start_tls() -> Option<(Registry, std::path::PathBuf)> {
        tool("openssl")?;
        let dir = tempfile::tempdir().expect("temp dir");
        let p = |n: &str| dir.path().join(n);
        let openssl = |args: &[&str]| {
            crate::ok(
                Command::new("openssl")
                    .current_dir(dir.path())
                    .args(args)
                    .stderr(Stdio::null()),
            )
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=cargo-oci test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(
            p("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .expect("ext");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ]);
        let ca = p("ca.pem");
        let tls = Some((p("server.pem"), p("server.key")));
        Registry::start_with(dir, "", tls, None).map(|r| (r, ca))
    }

    /// Starts a registry that trusts the bearer tokens of `tokens`.
    pub fn start_with_tokens(tokens: &TokenServer) -> Option<Registry> {
        let dir = tempfile::tempdir().expect("temp dir");
        let auth = format!(
            "auth:\n  token:\n    realm: http://{}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            tokens.addr,
            tokens.cert.display()
        );
        let login = Some((tokens.login.0.as_str(), tokens.login.1.as_str()));
        Registry::start_with(dir, &auth, None, login)
    }

    /// Starts a registry with `auth` (a YAML `auth:` section, or nothing) in its configuration,
    /// serving HTTPS with `tls` (certificate, key) when given.
    fn start_with(
        dir: tempfile::TempDir,
        auth: &str,
        tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
        login: Option<(&str, &str)>,
    ) -> Option<Registry> {
        let bin = tool("docker-registry")?;
        for _ in 0..5 {
            let addr = format!("127.0.0.1:{}", free_port());
            let tls = match &tls {
                Some((cert, key)) => format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    cert.display(),
                    key.display()
                ),
                None => String::new(),
            };
            let config = dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n  secret: cargo-oci-test\n{tls}{auth}",
                    dir.path().join("data").display()
                ),
            )
            .expect("write registry config");
            let mut child = Command::new(&bin)
                .arg("serve")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start docker-registry");
            let t0 = Instant::now();
            let mut up = false;
            while t0.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // the port was taken meanwhile: try another
                }
                if let Some((status, _, _)) = http(&addr, "GET", "/v2/", &[]) {
                    // 400: a TLS registry answering plain HTTP.
                    if status == 200 || status == 401 || status == 400 {
                        up = true;
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if up {
                return Some(Registry {
                    addr,
                    login: login.map(|(u, p)| (u.to_string(), p.to_string())),
                    child,
                    _dir: dir,
                });
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("docker-registry did not start on a free loopback port in 5 tries");
    }

    /// The `--creds` argument for skopeo, if protected.
    pub fn skopeo_creds(&self) -> Vec<String> {
        match &self.login {
            Some((u, p)) => vec!["--creds".into(), format!("{u}:{p}")],
            None => vec![],
        }
    }

    /// The repositories the registry holds (`/v2/_catalog`).
    pub fn catalog(&self) -> Vec<String> {
        let auth = self.login.as_ref().map(|(u, p)| basic(u, p));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        let (status, _, body) = http(&self.addr, "GET", "/v2/_catalog", &headers)
            .expect("the registry answers /v2/_catalog");
        assert_eq!(status, 200, "catalog: {}", String::from_utf8_lossy(&body));
        let v: serde_json::Value = serde_json::from_slice(&body).expect("catalog JSON");
        v["repositories"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| r.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `Basic base64(user:pass)`.
pub fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64(format!("{user}:{pass}").as_bytes(), false)
    )
}

/// Base64 (standard, padded) or base64url (unpadded) of `input`.
pub fn base64(input: &[u8], url: bool) -> String {
    let t: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(t[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else if !url {
                out.push('=');
            }
        }
    }
    out
}

/// The `service` and `issuer` of the test token server.
pub const SERVICE: &str = "cargo-oci-test-registry";
pub const ISSUER: &str = "cargo-oci-test-issuer";

/// A bearer-token service for a registry (`auth: token`): checks a user and password (basic
/// auth), then grants the requested scopes in an RS256 JWT signed by `openssl` with a fresh
/// self-signed key, whose certificate the registry trusts.
pub struct TokenServer {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    pub login: (String, String),
    /// The certificate (PEM) the registry trusts.
    pub cert: std::path::PathBuf,
    /// Every token request's query string.
    pub requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
}

impl TokenServer {
    pub fn start(user: &str, pass: &str) -> Option<TokenServer> {
        TokenServer::start_on("127.0.0.1", user, pass)
    }

    /// A token server listening on `ip` (a loopback address: `127.0.0.2` is another host than
    /// a registry on `127.0.0.1`).
    pub fn start_on(ip: &str, user: &str, pass: &str) -> Option<TokenServer> {
        tool("openssl")?;
        let dir = tempfile::tempdir().expect("temp dir");
        let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        crate::ok(
            Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                ])
                .args(["-subj", "/CN=cargo-oci-test-token"])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .stderr(Stdio::null()),
        );
        let der = std::process::Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .expect("openssl x509")
            .stdout;
        let x5c = base64(&der, false);
        let listener = TcpListener::bind((ip, 0)).expect("bind token server");
        let addr = listener.local_addr().expect("addr").to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let expected = basic(user, pass);
        let (requests2, stop2) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let _ = serve_token(conn, &expected, &x5c, &key, &requests2);
            }
        });
        Some(TokenServer {
            addr,
            login: (user.to_string(), pass.to_string()),
            cert,
            requests,
            stop,
            _dir: dir,
        })
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(&self.addr);
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn serve_token(
    conn: TcpStream,
    expected: &str,
    x5c: &str,
    key: &std::path::Path,
    requests: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        head.push(line.trim_end().to_string());
    }
    let target = head
        .first()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_default()
        .to_string();
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
    requests.lock().unwrap().push(query.to_string());
    let authorized = head.iter().any(|h| {
        h.split_once(':')
            .is_some_and(|(k, v)| k.eq_ignore_ascii_case("authorization") && v.trim() == expected)
    });
    let mut out = conn;
    if !authorized {
        write!(
            out,
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 27\r\nConnection: close\r\n\r\n{{\"details\":\"bad password\"}}"
        )?;
        return Ok(());
    }
    let mut access = Vec::new();
    for (k, v) in query.split('&').filter_map(|p| p.split_once('=')) {
        if k == "scope" {
            let scope = percent_decode(v);
            let parts: Vec<&str> = scope.splitn(3, ':').collect();
            if let [typ, name, actions] = parts[..] {
                access.push(serde_json::json!({
                    "type": typ, "name": name, "actions": actions.split(',').collect::<Vec<_>>(),
                }));
            }
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": "ann", "aud": SERVICE, "exp": now + 600, "nbf": now - 10,
        "iat": now, "jti": format!("{now}-{}", requests.lock().unwrap().len()), "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        base64(header.to_string().as_bytes(), true),
        base64(claims.to_string().as_bytes(), true)
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(signing_input.as_bytes())?;
    let sig = child.wait_with_output()?.stdout;
    let token = format!("{signing_input}.{}", base64(&sig, true));
    let body = serde_json::json!({"token": token, "expires_in": 600}).to_string();
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(())
}

/// One plain HTTP/1.1 request (`Connection: close`): status, headers (lowercase names), body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<(u16, HashMap<String, String>, Vec<u8>)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some((status, headers, raw[end + 4..].to_vec()))
}

/// What the proxy does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Pass,
    /// Answer with this status (429 comes with `Retry-After: 1`).
    Status(u16),
    /// Close the connection without an answer.
    Drop,
    /// Pass the request on, then close the connection without passing the answer back: the
    /// registry did the work, the client does not know.
    LoseAnswer,
}

/// Decides the fate of a request from its method, path (without query) and how many times a
/// request with that method and path was seen before (0 for the first).
pub type Rule = Arc<dyn Fn(&str, &str, usize) -> Fault + Send + Sync>;

/// A request seen by the proxy.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub target: String,
    pub fault: Fault,
}

/// A loopback proxy in front of a registry, one thread per connection.
pub struct Proxy {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    pub fn start(upstream: &str, rule: Rule) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr").to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
        let (seen2, stop2, upstream) = (seen.clone(), stop.clone(), upstream.to_string());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (seen, counts, rule, upstream) = (
                    seen2.clone(),
                    counts.clone(),
                    rule.clone(),
                    upstream.clone(),
                );
                std::thread::spawn(move || {
                    let _ = handle(conn, &upstream, &rule, &counts, &seen);
                });
            }
        });
        Proxy {
            addr,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Forgets the requests seen so far.
    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn handle(
    conn: TcpStream,
    upstream: &str,
    rule: &Rule,
    counts: &Mutex<HashMap<String, usize>>,
    seen: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    // A TLS handshake (a client trying HTTPS first): plain HTTP only here, so hang up.
    let mut first = [0u8; 1];
    if conn.peek(&mut first)? == 0 || first[0] == 0x16 {
        return Ok(());
    }
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line == "\r\n" || line == "\n" {
            break;
        }
        head.push(line.trim_end().to_string());
    }
    let Some(request_line) = head.first().cloned() else {
        return Ok(());
    };
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let path = target.split('?').next().unwrap_or_default().to_string();
    let mut body = Vec::new();
    let len = head
        .iter()
        .filter_map(|h| h.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    assert!(
        !head
            .iter()
            .any(|h| h.to_ascii_lowercase().starts_with("transfer-encoding")),
        "the test proxy handles only Content-Length bodies: {request_line}"
    );
    body.resize(len, 0);
    reader.read_exact(&mut body)?;

    let n = {
        let mut c = counts.lock().unwrap();
        let e = c.entry(format!("{method} {path}")).or_insert(0);
        *e += 1;
        *e - 1
    };
    let fault = rule(&method, &path, n);
    seen.lock().unwrap().push(Seen {
        method: method.clone(),
        target: target.clone(),
        fault,
    });
    let mut out = conn;
    match fault {
        Fault::Drop => {
            let _ = out.shutdown(Shutdown::Both);
            return Ok(());
        }
        Fault::Status(code) => {
            let extra = if code == 429 {
                "Retry-After: 1\r\n"
            } else {
                ""
            };
            write!(
                out,
                "HTTP/1.1 {code} Injected\r\nContent-Type: application/json\r\n{extra}Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            )?;
            let _ = out.shutdown(Shutdown::Both);
            return Ok(());
        }
        Fault::Pass | Fault::LoseAnswer => {}
    }
    let mut up = TcpStream::connect(upstream)?;
    let mut req = format!("{request_line}\r\n");
    for h in &head[1..] {
        if !h.to_ascii_lowercase().starts_with("connection:") {
            req.push_str(h);
            req.push_str("\r\n");
        }
    }
    req.push_str("Connection: close\r\n\r\n");
    up.write_all(req.as_bytes())?;
    up.write_all(&body)?;
    if fault == Fault::LoseAnswer {
        std::io::copy(&mut up, &mut std::io::sink())?;
        let _ = out.shutdown(Shutdown::Both);
        return Ok(());
    }
    std::io::copy(&mut up, &mut out)?;
    let _ = out.shutdown(Shutdown::Both);
    Ok(())
}
