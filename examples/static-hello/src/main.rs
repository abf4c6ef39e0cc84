//! A tiny, fully static program: greets, echoes its arguments and optionally
//! exits with a chosen status code (handy for checking that exit codes reach
//! the container runtime).

use std::env;
use std::process::ExitCode;

fn main() -> ExitCode {
    // `args_os` + lossy conversion: never panic on non-UTF-8 input.
    let args: Vec<String> = env::args_os()
        .skip(1)
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    let greeting = env::var_os("GREETING")
        .map(|value| value.to_string_lossy().into_owned())
        .unwrap_or_else(|| "hello".to_string());

    println!("{greeting} from static-hello");
    for arg in &args {
        println!("arg: {arg}");
    }

    match args.as_slice() {
        [flag, code, ..] if flag == "--exit-code" => match code.parse::<u8>() {
            Ok(code) => ExitCode::from(code),
            Err(_) => {
                eprintln!("static-hello: --exit-code expects a number from 0 to 255, got {code:?}");
                ExitCode::from(2)
            }
        },
        [flag] if flag == "--exit-code" => {
            eprintln!("static-hello: --exit-code expects a number");
            ExitCode::from(2)
        }
        _ => ExitCode::SUCCESS,
    }
}
