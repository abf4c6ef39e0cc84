//! `cargo oci`: the command-line entry point. Parsing and work live in the library.

fn main() {
    let cli = cargo_oci::parse(std::env::args_os());
    if let Err(err) = cargo_oci::run(cli) {
        eprintln!("error: {err}");
        for cause in err.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        std::process::exit(cargo_oci::exit_code(&err));
    }
}
