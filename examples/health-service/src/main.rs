//! An HTTP service made to be operated: `/healthz` (liveness), `/readyz` (readiness), static
//! files from `/srv/static`, `/slow` (answers after 30 s, to watch a probe time out), and a
//! prompt, graceful stop on SIGTERM even as PID 1.
//!
//! ```text
//! health-service serve [--listen ADDR] [--ready-after SECONDS]
//! health-service check [ADDR]     # GET /healthz; exit 0 when healthy (an exec probe)
//! health-service once             # print the version and exit
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

const STATIC_DIR: &str = "/srv/static";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        [] | ["serve", ..] => serve(words.get(1..).unwrap_or_default()),
        ["check"] => check("127.0.0.1:8080"),
        ["check", addr] => check(addr),
        ["once"] => {
            println!("health-service {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: health-service [serve [--listen ADDR] [--ready-after SECONDS] | check [ADDR] | once]");
            ExitCode::from(2)
        }
    }
}

fn serve(opts: &[&str]) -> ExitCode {
    let mut listen = "0.0.0.0:8080".to_string();
    let mut ready_after = std::env::var("READY_AFTER").ok().and_then(|s| s.parse().ok()).unwrap_or(0.0);
    let mut it = opts.iter();
    while let Some(opt) = it.next() {
        match (*opt, it.next()) {
            ("--listen", Some(v)) => listen = v.to_string(),
            ("--ready-after", Some(v)) => match v.parse::<f64>() {
                Ok(s) if s >= 0.0 && s.is_finite() => ready_after = s,
                _ => {
                    eprintln!("health-service: --ready-after wants seconds, got {v:?}");
                    return ExitCode::from(2);
                }
            },
            (other, _) => {
                eprintln!("health-service: unknown or incomplete option {other:?}");
                return ExitCode::from(2);
            }
        }
    }

    // SIGTERM (docker/podman stop, Kubernetes) ends the service at once, also as PID 1.
    match Signals::new([SIGTERM, SIGINT]) {
        Ok(mut signals) => {
            std::thread::spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    eprintln!("health-service: signal {sig}, stopping");
                    std::process::exit(0);
                }
            });
        }
        Err(e) => eprintln!("health-service: cannot handle signals: {e}"),
    }

    if ready_after > 0.0 {
        eprintln!("health-service: warming up for {ready_after}s");
        std::thread::sleep(Duration::from_secs_f64(ready_after));
    }
    let listener = match TcpListener::bind(&listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("health-service: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("listening on {listen}");
    let _ = std::io::stdout().flush();
    for conn in listener.incoming().flatten() {
        std::thread::spawn(move || handle(conn));
    }
    ExitCode::SUCCESS
}

fn handle(mut conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    if BufReader::new(&conn).read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/");
    let path = path.split('?').next().unwrap_or(path);
    let (status, body) = match path {
        "/healthz" => ("200 OK", b"ok\n".to_vec()),
        "/readyz" => ("200 OK", b"ready\n".to_vec()),
        "/slow" => {
            // Answers late: shows a probe timing out.
            std::thread::sleep(Duration::from_secs(30));
            ("200 OK", b"late\n".to_vec())
        }
        "/" => static_file("index.html"),
        p => static_file(p.trim_start_matches('/')),
    };
    let head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    let _ = conn.write_all(head.as_bytes()).and_then(|_| conn.write_all(&body));
}

fn static_file(name: &str) -> (&'static str, Vec<u8>) {
    if name.split('/').any(|c| c == ".." || c.is_empty()) {
        return ("404 Not Found", b"not found\n".to_vec());
    }
    match std::fs::read(format!("{STATIC_DIR}/{name}")) {
        Ok(b) => ("200 OK", b),
        Err(_) => ("404 Not Found", b"not found\n".to_vec()),
    }
}

/// GET /healthz on ADDR; exit 0 on 200.
fn check(addr: &str) -> ExitCode {
    let result = (|| -> std::io::Result<String> {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n")?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(answer)
    })();
    match result {
        Ok(a) if a.starts_with("HTTP/1.1 200") => ExitCode::SUCCESS,
        Ok(a) => {
            eprintln!("check: {addr} answered {:?}", a.lines().next().unwrap_or_default());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("check: {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}
