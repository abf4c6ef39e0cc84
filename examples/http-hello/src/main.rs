//! A tiny HTTP/1.1 server built on `std::net` only (one thread per
//! connection, no dependencies).
//!
//! Routes: `GET /`, `GET /healthz`, `GET /readyz`; everything else is 404.

use std::env;
use std::error::Error;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
const USAGE: &str = "usage: http-hello [serve [--listen ADDR] | self-test]";
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound on the size of a request head (request line + headers).
const MAX_HEAD_BYTES: u64 = 16 * 1024;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

enum Command {
    Serve { listen: String },
    SelfTest,
    Help,
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args_os()
        .skip(1)
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();

    let command = match parse_args(&args) {
        Ok(command) => command,
        Err(message) => {
            eprintln!("http-hello: {message}");
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };

    let result = match command {
        Command::Serve { listen } => serve(&listen),
        Command::SelfTest => self_test(),
        Command::Help => {
            println!("{USAGE}");
            Ok(())
        }
    };

    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("http-hello: {err}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args(args: &[String]) -> std::result::Result<Command, String> {
    let (subcommand, rest) = match args.split_first() {
        Some((first, rest)) if first == "serve" => ("serve", rest),
        Some((first, rest)) if first == "self-test" => ("self-test", rest),
        Some((first, [])) if first == "-h" || first == "--help" => return Ok(Command::Help),
        // No subcommand: behave like `serve`.
        _ => ("serve", args),
    };

    if subcommand == "self-test" {
        return match rest.first() {
            Some(arg) => Err(format!("unknown argument: {arg}")),
            None => Ok(Command::SelfTest),
        };
    }

    let mut listen = DEFAULT_LISTEN.to_string();
    let mut rest = rest.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--listen" => match rest.next() {
                Some(addr) => listen.clone_from(addr),
                None => return Err("--listen requires an address, e.g. 0.0.0.0:8080".into()),
            },
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    Ok(Command::Serve { listen })
}

/// Binds `listen` and serves forever.
fn serve(listen: &str) -> Result<()> {
    let listener =
        TcpListener::bind(listen).map_err(|err| format!("cannot listen on {listen}: {err}"))?;
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening on {}", listener.local_addr()?)?;
    stdout.flush()?;
    drop(stdout);
    accept_loop(&listener, true);
    Ok(())
}

fn accept_loop(listener: &TcpListener, log_requests: bool) {
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                thread::spawn(move || {
                    if let Err(err) = handle_connection(stream, log_requests) {
                        eprintln!("http-hello: connection error: {err}");
                    }
                });
            }
            Err(err) => eprintln!("http-hello: accept failed: {err}"),
        }
    }
}

fn handle_connection(mut stream: TcpStream, log_requests: bool) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;

    // Read the whole request head so that closing the socket afterwards
    // does not reset the connection under the client's feet.
    let mut reader = BufReader::new((&stream).take(MAX_HEAD_BYTES));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        // Connected and closed without a request (e.g. a TCP health probe).
        return Ok(());
    }
    let mut header = String::new();
    loop {
        header.clear();
        if reader.read_line(&mut header)? == 0 || header.trim_end().is_empty() {
            break;
        }
    }

    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");

    let (status, body) = match (method, path) {
        ("", _) | (_, "") => ("400 Bad Request", "bad request\n"),
        ("GET", "/") => ("200 OK", "hello from http-hello\n"),
        ("GET", "/healthz") => ("200 OK", "ok\n"),
        ("GET", "/readyz") => ("200 OK", "ready\n"),
        _ => ("404 Not Found", "not found\n"),
    };
    if log_requests {
        eprintln!("{method} {target} -> {status}");
    }

    write!(
        stream,
        "HTTP/1.1 {status}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\
         \r\n\
         {body}",
        body.len()
    )?;
    stream.flush()
}

/// Serves on an ephemeral local port in the background, fetches `GET /`
/// over real TCP and prints the body it received.
fn self_test() -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    thread::spawn(move || accept_loop(&listener, false));

    let body = http_get(addr, "/")?;
    print!("{body}");
    io::stdout().flush()?;
    Ok(())
}

/// Minimal HTTP/1.1 client: sends one GET request and returns the body of a
/// `200 OK` response.
fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    stream.flush()?;

    let mut response = String::new();
    stream.read_to_string(&mut response)?;

    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or("malformed response: no end of headers")?;
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or("");
    if !status_line.starts_with("HTTP/1.1 200 ") {
        return Err(format!("unexpected status: {status_line:?}").into());
    }
    let content_length = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .ok_or("response has no Content-Length")?
        .1
        .trim()
        .parse::<usize>()?;
    if content_length != body.len() {
        return Err(format!(
            "Content-Length is {content_length} but body has {} bytes",
            body.len()
        )
        .into());
    }
    Ok(body.to_string())
}
