//! The contract helper of cargo-oci images. One small std-only program, compiled for the image's
//! target with the user's toolchain, installed as `/bin/entrypoint` and linked under the other
//! contract names (`/bin/runtime`, ...). It reads what it needs from `/etc/cargo-oci/contract`,
//! written by cargo-oci at build time, one `key=value` per line.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, exit};

const CONFIG: &str = "/etc/cargo-oci/contract";

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
        other => {
            eprintln!("cargo-oci contract helper: unknown contract `{other}` (expected entrypoint or runtime)");
            2
        }
    };
    exit(code);
}

/// The value of `key` in the contract file.
fn setting(key: &str) -> Option<String> {
    let text = std::fs::read_to_string(CONFIG).ok()?;
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_string())
}

/// `/bin/entrypoint ARGS...`: replaces itself with the service, so the service is the container's
/// process: it gets the signals and its exit code is the container's.
fn entrypoint(args: Vec<OsString>) -> i32 {
    let Some(service) = setting("exec") else {
        eprintln!("entrypoint: {CONFIG} names no service (`exec=`); the image is incomplete");
        return 127;
    };
    let err = Command::new(&service).arg0(&service).args(args).exec();
    eprintln!("entrypoint: cannot start {service}: {err}");
    127
}

/// `/bin/runtime COMMAND ARGS...`: runs COMMAND (looked up on the image's PATH) in the image's
/// runtime environment. Without a command it starts the runtime shell, if the image has one.
fn runtime(args: Vec<OsString>) -> i32 {
    let (program, rest) = match args.split_first() {
        Some((p, rest)) => (p.clone(), rest.to_vec()),
        None => match setting("shell") {
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
    if err.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 }
}
