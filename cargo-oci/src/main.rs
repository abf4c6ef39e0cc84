//! `cargo oci`: the command-line entry point. Parsing and work live in the library.

fn main() {
    let cli = cargo_oci::parse(std::env::args_os());
    let format = cli.message_format();
    if let Err(err) = cargo_oci::run(cli) {
        cargo_oci::report_error(&err, format);
        std::process::exit(cargo_oci::exit_code(&err));
    }
}
