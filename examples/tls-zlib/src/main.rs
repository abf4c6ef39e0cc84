//! Links system libraries beyond libc: OpenSSL (libssl.so.3, libcrypto.so.3)
//! through the `openssl` crate and zlib (libz.so.1) through `libz-sys`.
//! `tls-zlib check` exercises each of them once.

use std::env;
use std::error::Error;
use std::process::ExitCode;

use libz_sys::{uLong, uLongf, Z_OK};
use openssl::hash::{hash, MessageDigest};
use openssl::ssl::{SslConnector, SslMethod};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const USAGE: &str = "usage: tls-zlib [check]";

fn main() -> ExitCode {
    let args: Vec<String> = env::args_os()
        .skip(1)
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();

    match args.as_slice() {
        [] => {}
        [command] if command == "check" => {}
        [other, ..] => {
            eprintln!("tls-zlib: unknown argument: {other}");
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    }

    match check() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("tls-zlib: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Prints one line per library check; returns `Ok(false)` if the zlib
/// round trip produced different data.
fn check() -> Result<bool> {
    println!("arch: {}", env::consts::ARCH);
    // libcrypto: version string and a SHA-256 digest.
    println!("openssl: {}", openssl::version::version());
    let digest = hash(MessageDigest::sha256(), b"hello")?;
    println!("sha256(hello): {}", to_hex(&digest));

    // libssl: a TLS client context using the system's default CA paths.
    let mut connector = SslConnector::builder(SslMethod::tls_client())
        .map_err(|err| format!("cannot create TLS connector: {err}"))?;
    connector
        .set_default_verify_paths()
        .map_err(|err| format!("cannot load default verify paths: {err}"))?;
    let _connector = connector.build();

    // libz: compress + uncompress a repetitive buffer.
    let input: Vec<u8> = b"cargo-oci tls-zlib example "
        .iter()
        .copied()
        .cycle()
        .take(4096)
        .collect();
    let compressed = zlib_compress(&input)?;
    let restored = zlib_uncompress(&compressed, input.len())?;
    let ok = restored == input;
    println!(
        "zlib: {} bytes -> {} bytes -> roundtrip {}",
        input.len(),
        compressed.len(),
        if ok { "ok" } else { "FAILED" }
    );
    Ok(ok)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// zlib's one-shot `compress()`.
fn zlib_compress(input: &[u8]) -> Result<Vec<u8>> {
    let input_len = uLong::try_from(input.len())?;
    // SAFETY: compressBound is a pure function of its argument.
    let bound = unsafe { libz_sys::compressBound(input_len) };
    let mut output = vec![0u8; usize::try_from(bound)?];
    let mut output_len: uLongf = bound;
    // SAFETY: `output` is writable for `output_len` bytes and `input` is
    // readable for `input_len` bytes; zlib updates `output_len` in place.
    let status = unsafe {
        libz_sys::compress(
            output.as_mut_ptr(),
            &mut output_len,
            input.as_ptr(),
            input_len,
        )
    };
    if status != Z_OK {
        return Err(format!("zlib compress() failed with status {status}").into());
    }
    output.truncate(usize::try_from(output_len)?);
    Ok(output)
}

/// zlib's one-shot `uncompress()`; `expected_len` is the original size.
fn zlib_uncompress(input: &[u8], expected_len: usize) -> Result<Vec<u8>> {
    let mut output = vec![0u8; expected_len];
    let mut output_len = uLongf::try_from(expected_len)?;
    // SAFETY: as in `zlib_compress`; zlib never writes past `output_len`.
    let status = unsafe {
        libz_sys::uncompress(
            output.as_mut_ptr(),
            &mut output_len,
            input.as_ptr(),
            uLong::try_from(input.len())?,
        )
    };
    if status != Z_OK {
        return Err(format!("zlib uncompress() failed with status {status}").into());
    }
    output.truncate(usize::try_from(output_len)?);
    Ok(output)
}
