//! The readiness probe of health-service, shipped in the image as `/bin/probe` and run by
//! `/bin/ready`: GET /readyz on 127.0.0.1:8080 (or the address given), exit 0 on 200.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8080".into());
    let answer = (|| -> std::io::Result<String> {
        let mut s = TcpStream::connect(&addr)?;
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        s.write_all(b"GET /readyz HTTP/1.0\r\n\r\n")?;
        let mut a = String::new();
        s.read_to_string(&mut a)?;
        Ok(a)
    })();
    match answer {
        Ok(a) if a.starts_with("HTTP/1.1 200") => ExitCode::SUCCESS,
        Ok(a) => {
            eprintln!("probe: {addr} is not ready: {:?}", a.lines().next().unwrap_or_default());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("probe: {addr} is not ready: {e}");
            ExitCode::FAILURE
        }
    }
}
