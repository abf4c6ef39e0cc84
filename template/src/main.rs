//! An HTTP service made to run in a container, on std alone:
//!
//! - `GET /` answers a greeting, `GET /healthz` (liveness) answers `ok` while the process works,
//!   `GET /readyz` (readiness) answers `ready`, or 503 once the service is stopping;
//! - it listens on `0.0.0.0:$PORT` (default 8080);
//! - on SIGTERM or SIGINT it stops accepting connections, finishes the requests in flight and
//!   exits 0, also as PID 1 in a container.
//!
//! The signal handler only sets a flag; the accept loop is non-blocking and looks at the flag
//! every 100 ms. `signal` is declared here directly: std already links libc, and one function
//! needs no crate.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Set by the signal handler: stop accepting, drain, exit.
static STOPPING: AtomicBool = AtomicBool::new(false);
/// Requests being answered.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;
/// How long requests in flight may take to finish once the service is stopping.
const DRAIN: Duration = Duration::from_secs(10);

unsafe extern "C" {
    fn signal(signum: i32, handler: usize) -> usize;
}

extern "C" fn on_stop_signal(_signum: i32) {
    // Only an atomic store: async-signal-safe.
    STOPPING.store(true, Ordering::SeqCst);
}

fn main() -> ExitCode {
    let name = env!("CARGO_PKG_NAME");
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let addr = format!("0.0.0.0:{port}");

    for sig in [SIGTERM, SIGINT] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { signal(sig, on_stop_signal as *const () as usize) };
    }

    let listener = match TcpListener::bind(&addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{name}: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = listener.set_nonblocking(true) {
        eprintln!("{name}: cannot make the listener non-blocking: {e}");
        return ExitCode::FAILURE;
    }
    eprintln!("{name} {} listening on {addr}", env!("CARGO_PKG_VERSION"));

    while !STOPPING.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((conn, _)) => {
                IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    handle(conn, name);
                    IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("{name}: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    drop(listener);
    eprintln!("{name}: stopping, finishing requests in flight");
    let deadline = Instant::now() + DRAIN;
    while IN_FLIGHT.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = IN_FLIGHT.load(Ordering::SeqCst);
    if left > 0 {
        eprintln!("{name}: {left} requests still running after {DRAIN:?}; exiting");
        return ExitCode::FAILURE;
    }
    eprintln!("{name}: stopped");
    ExitCode::SUCCESS
}

/// Answers one request on `conn` and closes it.
fn handle(conn: TcpStream, name: &str) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(&conn);
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    // Read (and ignore) the headers, up to the blank line.
    let mut header = String::new();
    for _ in 0..100 {
        header.clear();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => break,
            Ok(_) if header.trim_end().is_empty() => break,
            Ok(_) => {}
        }
    }

    let mut words = request.split_whitespace();
    let method = words.next().unwrap_or("");
    let path = words.next().unwrap_or("/");
    let path = path.split('?').next().unwrap_or(path);
    let (status, body) = match (method, path) {
        ("GET" | "HEAD", "/healthz") => ("200 OK", "ok\n".to_string()),
        ("GET" | "HEAD", "/readyz") if STOPPING.load(Ordering::SeqCst) => {
            ("503 Service Unavailable", "stopping\n".to_string())
        }
        ("GET" | "HEAD", "/readyz") => ("200 OK", "ready\n".to_string()),
        ("GET" | "HEAD", "/") => ("200 OK", format!("hello from {name}\n")),
        ("GET" | "HEAD", _) => ("404 Not Found", "not found\n".to_string()),
        _ => ("405 Method Not Allowed", "method not allowed\n".to_string()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut conn = &conn;
    let _ = conn.write_all(head.as_bytes());
    if method != "HEAD" {
        let _ = conn.write_all(body.as_bytes());
    }
}
