//! The contract helper of cargo-oci images. One small std-only program, compiled for the image's
//! target with the user's toolchain, installed as `/bin/entrypoint` and linked under the other
//! contract names: `/bin/runtime`, `/bin/live`, `/bin/ready` and, in the debug variant,
//! `/bin/debug`. It reads what it needs from `/etc/cargo-oci/contract` (and, in the debug
//! variant, `/etc/cargo-oci/debug`), written by cargo-oci at build time: one `key=value` a line,
//! list values separated by tabs.
//!
//! It declares the few libc functions it needs for `init` mode (signal, kill, waitpid) itself:
//! std already links libc, and no crate is needed for three functions.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{exit, Command};
use std::time::{Duration, Instant};

const CONTRACT: &str = "/etc/cargo-oci/contract";
const DEBUG: &str = "/etc/cargo-oci/debug";

fn main() {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let rest: Vec<OsString> = args.collect();
    let name = Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let code = match name.as_str() {
        "entrypoint" => entrypoint(rest),
        "runtime" => runtime(rest),
        "live" | "ready" => probe(&name),
        "debug" => debug(rest),
        other => {
            eprintln!(
                "cargo-oci contract helper: unknown contract `{other}` (expected entrypoint, runtime, live, ready or debug)"
            );
            2
        }
    };
    exit(code);
}

/// The value of `key` in a settings file.
fn setting_in(file: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_string())
}

fn setting(key: &str) -> Option<String> {
    setting_in(CONTRACT, key)
}

/// `/bin/entrypoint ARGS...`: starts the service with ARGS. By default it replaces itself with
/// the service, so the service is the container's process: it gets the signals and its exit code
/// is the container's. With `init=1` it runs the service as a child, forwards signals to it and
/// reaps every zombie, as `tini` does. In the debug variant, `DEBUG_SLEEP=SECONDS` waits first.
fn entrypoint(args: Vec<OsString>) -> i32 {
    let Some(service) = setting("exec") else {
        eprintln!("entrypoint: {CONTRACT} names no service (`exec=`); the image is incomplete");
        return 127;
    };
    if Path::new(DEBUG).exists() {
        if let Ok(s) = std::env::var("DEBUG_SLEEP") {
            match s.trim().trim_end_matches('s').parse::<f64>() {
                Ok(secs) if secs >= 0.0 && secs.is_finite() => {
                    eprintln!(
                        "entrypoint: DEBUG_SLEEP={s}: waiting {secs}s before starting {service}"
                    );
                    std::thread::sleep(Duration::from_secs_f64(secs));
                }
                _ => {
                    eprintln!("entrypoint: DEBUG_SLEEP={s} is not a number of seconds; not waiting")
                }
            }
        }
    }
    let mut cmd = Command::new(&service);
    cmd.arg0(&service).args(args);
    if setting("init").as_deref() == Some("1") {
        return init::run(cmd, &service);
    }
    let err = cmd.exec();
    eprintln!("entrypoint: cannot start {service}: {err}");
    127
}

/// PID 1 duties for services that do not handle signals themselves.
mod init {
    use std::process::Command;
    use std::sync::atomic::{AtomicI32, Ordering};

    unsafe extern "C" {
        fn signal(signum: i32, handler: usize) -> usize;
        fn kill(pid: i32, sig: i32) -> i32;
        fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
    }

    /// The signals passed on to the service (numbers shared by every Linux architecture
    /// cargo-oci builds for).
    const FORWARDED: [i32; 7] = [1, 2, 3, 10, 12, 15, 28]; // HUP INT QUIT USR1 USR2 TERM WINCH
    const ECHILD: i32 = 10;
    const EINTR: i32 = 4;

    static CHILD: AtomicI32 = AtomicI32::new(0);

    extern "C" fn forward(sig: i32) {
        let pid = CHILD.load(Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: kill is async-signal-safe.
            unsafe { kill(pid, sig) };
        }
    }

    pub fn run(mut cmd: Command, service: &str) -> i32 {
        for sig in FORWARDED {
            // SAFETY: installs a handler that only calls an async-signal-safe function.
            unsafe { signal(sig, forward as *const () as usize) };
        }
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("entrypoint: cannot start {service}: {e}");
                return 127;
            }
        };
        let pid = child.id() as i32;
        CHILD.store(pid, Ordering::SeqCst);
        loop {
            let mut status = 0i32;
            // SAFETY: waitpid writes the status into a valid i32.
            let got = unsafe { waitpid(-1, &mut status, 0) };
            if got < 0 {
                match std::io::Error::last_os_error().raw_os_error() {
                    Some(EINTR) => continue,
                    Some(ECHILD) => return 0,
                    _ => return 1,
                }
            }
            if got == pid {
                let sig = status & 0x7f;
                return if sig == 0 {
                    (status >> 8) & 0xff
                } else {
                    128 + sig
                };
            }
            // Any other pid was an orphan adopted by PID 1: reaped, nothing more to do.
        }
    }
}

/// `/bin/runtime COMMAND ARGS...`: runs COMMAND (looked up on the image's PATH) in the image's
/// runtime environment. Without a command it starts the runtime shell, if the image has one.
fn runtime(args: Vec<OsString>) -> i32 {
    let (program, rest) = match args.split_first() {
        Some((p, rest)) => (p.clone(), rest.to_vec()),
        None => match setting_in(DEBUG, "shell") {
            Some(shell) => (OsString::from(shell), Vec::new()),
            None => {
                let path = std::env::var("PATH").unwrap_or_default();
                eprintln!(
                    "runtime: this image has no shell; run `/bin/runtime COMMAND [ARGS...]` with a COMMAND from PATH={path}"
                );
                return 2;
            }
        },
    };
    let err = Command::new(&program).args(rest).exec();
    eprintln!("runtime: cannot run {}: {err}", program.to_string_lossy());
    if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

/// `/bin/debug [SHELL ARGS...]`: a banner, then the debug shell with the debug tools and the
/// runtime inputs on PATH.
fn debug(args: Vec<OsString>) -> i32 {
    let (Some(shell), Some(tools)) = (setting_in(DEBUG, "shell"), setting_in(DEBUG, "path")) else {
        eprintln!("debug: this is not a debug image (no {DEBUG}); build it with `cargo oci build --debug`");
        return 2;
    };
    let path = match std::env::var("PATH") {
        Ok(p) if !p.is_empty() => format!("{p}:{tools}"),
        _ => tools.clone(),
    };
    let service = setting("exec").unwrap_or_default();
    eprintln!("cargo-oci debug shell: tools in {tools}; the service is {service} (started by /bin/entrypoint)");
    let err = Command::new(&shell).args(args).env("PATH", path).exec();
    eprintln!("debug: cannot start {shell}: {err}");
    127
}

/// `/bin/live`, `/bin/ready`: exit 0 when healthy; otherwise one line on stderr and exit 1.
fn probe(which: &str) -> i32 {
    let Some(spec) = setting(which) else {
        eprintln!("{which}: this image has no {which} probe configured");
        return 2;
    };
    let timeout = setting(&format!("{which}.timeout"))
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(2));
    let mut parts = spec.split('\t');
    let kind = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    let deadline = Instant::now() + timeout;
    let env = |k: &str| std::env::var(k).ok();
    let result = match (kind, rest.as_slice()) {
        ("http", [url]) => expand(url, &env).and_then(|url| http_probe(&url, deadline)),
        ("tcp", [addr]) => expand(addr, &env).and_then(|addr| connect(&addr, deadline).map(drop)),
        ("exec", [program, args @ ..]) => exec_probe(program, args, deadline),
        _ => Err(format!("cannot read the probe setting `{spec}`")),
    };
    match result {
        Ok(()) => 0,
        Err(why) => {
            eprintln!("{which}: unhealthy: {why}");
            1
        }
    }
}

/// Expands `$NAME`, `${NAME}` and `${NAME:-default}` (the default also when NAME is empty) in a
/// probe address, from the container's environment, so that a deployment that sets `PORT` is
/// probed on its port. A variable that is unset, with no default, is an error.
fn expand(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        let (name, default, after) = if let Some(body) = rest.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("`{text}` has an unclosed `${{`"))?;
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            (name, default, &body[end + 1..])
        } else {
            let end = rest.find(|c| !is_name(c)).unwrap_or(rest.len());
            (&rest[..end], None, &rest[end..])
        };
        if name.is_empty() || !name.chars().all(is_name) {
            return Err(format!("`{text}` names no variable after `$`"));
        }
        match (env(name).filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => return Err(format!("`{text}` uses ${name}, which is not set")),
        }
        rest = after;
    }
    out.push_str(rest);
    Ok(out)
}

fn left(deadline: Instant, what: &str) -> Result<Duration, String> {
    let d = deadline.saturating_duration_since(Instant::now());
    if d.is_zero() {
        return Err(format!("timed out {what}"));
    }
    Ok(d)
}

fn connect(addr: &str, deadline: Instant) -> Result<TcpStream, String> {
    let addrs: Vec<_> = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?
        .collect();
    let mut last = format!("{addr} has no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, left(deadline, &format!("connecting to {addr}"))?) {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("cannot connect to {a}: {e}"),
        }
    }
    Err(last)
}

fn http_probe(url: &str, deadline: Instant) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url} is not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let mut s = connect(&addr, deadline)?;
    s.set_write_timeout(Some(left(deadline, "sending the request")?))
        .ok();
    let req = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: cargo-oci-probe\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| format!("cannot send the request to {url}: {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.contains(&b'\n') && head.len() < 4096 {
        s.set_read_timeout(Some(left(deadline, &format!("waiting for {url}"))?))
            .ok();
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!("timed out waiting for {url}"));
            }
            Err(e) => return Err(format!("cannot read the answer of {url}: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok());
    match status {
        Some(code) if (200..400).contains(&code) => Ok(()),
        Some(code) => Err(format!("{url} answered HTTP {code}")),
        None => Err(format!("{url} gave no HTTP status line")),
    }
}

fn exec_probe(program: &str, args: &[&str], deadline: Instant) -> Result<(), String> {
    let mut child = Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    // The probe's own last words become part of the one line this probe prints.
    let stderr = child.stderr.take();
    let said = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut e) = stderr {
            let _ = e.read_to_string(&mut text);
        }
        text.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_string())
    });
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => {
                let why = said
                    .join()
                    .ok()
                    .flatten()
                    .map(|l| format!(": {l}"))
                    .unwrap_or_default();
                return Err(format!("{program} {st}{why}"));
            }
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{program} did not finish within the probe's timeout"
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("cannot wait for {program}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-shot HTTP server on loopback answering `status`; returns its address.
    fn answer(status: &'static str) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = s.write_all(format!("HTTP/1.0 {status}\r\n\r\n").as_bytes());
            }
        });
        addr
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn settings_are_read_by_key() {
        let dir = std::env::temp_dir().join(format!("contract-{}", std::process::id()));
        std::fs::write(&dir, "service=/bin/app\nargs=a\tb\nx=1=2\n").unwrap();
        let file = dir.to_str().unwrap();
        assert_eq!(setting_in(file, "service").as_deref(), Some("/bin/app"));
        assert_eq!(setting_in(file, "args").as_deref(), Some("a\tb"));
        assert_eq!(setting_in(file, "x").as_deref(), Some("1=2"));
        assert_eq!(setting_in(file, "missing"), None);
        assert_eq!(setting_in("/nonexistent/contract", "service"), None);
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn http_probe_reads_the_status() {
        let ok = answer("204 No Content");
        assert_eq!(http_probe(&format!("http://{ok}/healthz"), soon()), Ok(()));
        let bad = answer("503 Service Unavailable");
        let err = http_probe(&format!("http://{bad}/"), soon()).unwrap_err();
        assert!(err.contains("HTTP 503"), "{err}");
        let err = http_probe("https://127.0.0.1:1/", soon()).unwrap_err();
        assert!(err.contains("not an http:// URL"), "{err}");
    }

    #[test]
    fn probes_fail_on_closed_ports_and_past_deadlines() {
        // Bind, then free a port: nothing listens there.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = connect(&format!("127.0.0.1:{port}"), soon()).unwrap_err();
        assert!(err.contains("cannot connect"), "{err}");
        let err = left(Instant::now(), "waiting").unwrap_err();
        assert_eq!(err, "timed out waiting");
    }

    #[test]
    fn probe_addresses_read_the_environment() {
        let env = |k: &str| match k {
            "PORT" => Some("9090".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        let x = |t: &str| expand(t, &env);
        assert_eq!(
            x("http://127.0.0.1:${PORT:-8080}/healthz").unwrap(),
            "http://127.0.0.1:9090/healthz"
        );
        assert_eq!(x("127.0.0.1:${NOPE:-8080}").unwrap(), "127.0.0.1:8080");
        assert_eq!(x("127.0.0.1:${EMPTY:-7}").unwrap(), "127.0.0.1:7");
        assert_eq!(x("127.0.0.1:$PORT").unwrap(), "127.0.0.1:9090");
        assert_eq!(x("h:${PORT}/a").unwrap(), "h:9090/a");
        assert_eq!(x("no variables").unwrap(), "no variables");
        assert!(x("h:$NOPE").unwrap_err().contains("NOPE"));
        assert!(x("h:${PORT").is_err());
        assert!(x("h:$/x").is_err());
    }

    #[test]
    fn exec_probe_follows_the_exit_status() {
        assert_eq!(exec_probe("true", &[], soon()), Ok(()));
        assert!(exec_probe("false", &[], soon()).is_err());
        let err = exec_probe("/nonexistent/probe", &[], soon()).unwrap_err();
        assert!(err.contains("cannot run"), "{err}");
    }
}
