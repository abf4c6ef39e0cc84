//! The command line: runs each `cargo oci …` command from its parsed arguments ([`args`]) and
//! prints the result ([`print`]: stdout the result only; stderr everything for people).

use std::ffi::OsString;
use std::io::Read;

use anyhow::Result;
use clap::Parser;
use serde_json::json;

use crate::build::cargo::Messages;
use crate::build::pipeline::Configured;
use crate::commands::build::build_and_deliver;
use crate::commands::{init, inspect, template};
use crate::oci::reference::ImageName;
use crate::registry::auth::{Credential, Secret};
use crate::sink::load;
use crate::sink::push::PushRequest;
use crate::sink::push_ahead::Ahead;
use crate::sink::{Delivered, Output, Sink};
use crate::util::error::UsageError;
use crate::util::reporter::Reporter;

/// Writes a result to stdout. A reader that went away (`| head`) has all it wanted: the command
/// ends quietly instead of panicking; any other write error is reported.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        if let Err(e) = write!(stdout, $($arg)*).and_then(|_| stdout.flush()) {
            stdout_failed(e);
        }
    }};
}

/// [`out!`] with a newline.
macro_rules! outln {
    ($($arg:tt)*) => {{
        out!("{}\n", format_args!($($arg)*))
    }};
}

fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write the result to stdout: {e}");
    std::process::exit(1);
}

mod args;
mod print;

pub use args::*;
use print::{print_built, print_pushed};

/// Parses the arguments, accepting both `cargo oci build` (cargo passes `oci` first) and
/// `cargo-oci build`. A bad command line ends the process with clap's message and exit 2; with
/// `--message-format json` that message is a JSON error object on stdout.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Cli {
    let mut args: Vec<OsString> = args.into_iter().collect();
    if args.get(1).is_some_and(|a| a == "oci") {
        args.remove(1);
    }
    match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() && json_requested(&args) => {
            let text = e.render().to_string();
            eprint!("{text}");
            let mut lines = text.lines().filter(|l| !l.trim().is_empty());
            let message = lines
                .next()
                .unwrap_or_default()
                .trim_start_matches("error: ")
                .to_string();
            let help = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("tip: "))
                .map(str::to_string);
            outln!(
                "{}",
                json!({
                    "reason": "error",
                    "message": message,
                    "help": help.unwrap_or_else(|| "see `cargo oci help`".into()),
                    "causes": [],
                    "exit_code": 2,
                })
            );
            std::process::exit(2);
        }
        Err(e) => e.exit(),
    }
}

/// Whether the raw command line asks for JSON messages.
fn json_requested(args: &[OsString]) -> bool {
    args.iter()
        .zip(args.iter().skip(1).map(Some).chain([None]))
        .any(|(a, next)| {
            a == "--message-format=json"
                || (a == "--message-format" && next.is_some_and(|n| n == "json"))
        })
}

impl Cli {
    /// The `--message-format` of the command.
    pub fn message_format(&self) -> MessageFormat {
        let c = match &self.command {
            Command::Build(a) => &a.image.common,
            Command::Load(a) => &a.image.common,
            Command::Inspect(a) => &a.image.common,
            Command::New(a) => &a.common,
            Command::Init(a) => &a.common,
            Command::Push(a) => &a.image.common,
            Command::Bundle(a) => &a.image.common,
            Command::Export(a) => &a.image.common,
            Command::Merge(a) => &a.common,
            Command::Join(a) => &a.common,
            Command::Clean(a) => &a.common,
            Command::Keygen(a) => &a.common,
        };
        c.message_format
    }
}

/// Tells an error: on stderr for people (`error: ...`, each cause, the help line), and with
/// `--message-format json` also as one JSON object on stdout, for programs.
pub fn report_error(err: &anyhow::Error, format: MessageFormat) {
    eprintln!("error: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    if format == MessageFormat::Json {
        outln!("{}", crate::util::error::to_json(err));
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Build(a) => {
            let output = Output::from_options(a.format, a.output.clone(), a.stream)?;
            let one_path = !matches!(output, Output::Layout(None));
            let what = if a.stream { "--stream" } else { "-o" };
            build_to(&a.image, one_path.then_some(what), a.stream, |conf| {
                output.clone().sink(&conf.default_layout())
            })
        }
        Command::Bundle(a) => build_to(&a.image, Some("bundle"), false, |_| {
            Box::new(crate::sink::Bundle {
                dir: a.dir.clone(),
                readonly: a.readonly,
            })
        }),
        Command::Export(a) => build_to(&a.image, Some("export"), false, |_| {
            Box::new(crate::sink::Export(a.file.clone()))
        }),
        Command::Merge(a) => {
            let report = a.common.reporter();
            let n = crate::commands::merge::merge(&a.inputs, &a.output)?;
            report.status(
                "Finished",
                &format!(
                    "{n} images from {} archives in {}",
                    a.inputs.len(),
                    a.output.display()
                ),
            );
            match a.common.message_format {
                MessageFormat::Json => outln!(
                    "{}",
                    json!({"reason": "merged", "path": a.output, "images": n})
                ),
                MessageFormat::Human => outln!("{}", a.output.display()),
            }
            Ok(())
        }
        Command::Join(a) => {
            let report = a.common.reporter();
            let joined = crate::commands::join::join(
                &crate::commands::join::JoinRequest {
                    inputs: a.inputs.clone(),
                    tags: a.tag.clone(),
                    platforms: a.platform.clone(),
                    client: a.registry.options(),
                },
                &report,
            )?;
            match a.common.message_format {
                MessageFormat::Json => outln!(
                    "{}",
                    json!({
                        "reason": "index-joined",
                        "name": joined.name.full,
                        "digest": joined.digest,
                        "media_type": crate::oci::index::INDEX_MEDIA_TYPE,
                        "tags": joined.tags,
                        "references": joined.tags.iter().map(|t| joined.name.with_tag(t)).collect::<Vec<_>>(),
                        "platforms": joined.platforms.iter().map(|(p, d)| json!({"platform": p, "digest": d})).collect::<Vec<_>>(),
                    })
                ),
                MessageFormat::Human => {
                    for t in &joined.tags {
                        outln!("{}", joined.name.with_tag(t));
                    }
                    outln!("{}@{}", joined.name, joined.digest);
                }
            }
            Ok(())
        }
        Command::Load(a) => {
            let report = a.image.common.reporter();
            // Find the engine first: a missing one costs no build.
            let (runtime, version) = load::detect(a.runtime, &report)?;
            let made = build_and_deliver(
                &a.image.request(),
                |_| Ok(vec![Box::new(load::Engine { runtime }) as Box<dyn Sink>]),
                &report,
            )?;
            for made in &made {
                let said = match made.delivered.first() {
                    Some((_, Delivered::Engine { said })) => said.clone(),
                    _ => String::new(),
                };
                let built = &made.built;
                let images = built.images();
                let references: Vec<String> = images.iter().flat_map(|i| i.references()).collect();
                match a.image.common.message_format {
                    MessageFormat::Json => outln!(
                        "{}",
                        json!({
                            "reason": "image-loaded",
                            "runtime": runtime.program(),
                            "runtime_version": version,
                            "name": built.primary().image.name.full,
                            "package": built.package,
                            "profile": built.profile,
                            "references": references,
                            "digest": images.first().map(|i| i.manifest.digest.clone()),
                            "engine_output": said,
                        })
                    ),
                    MessageFormat::Human => references.iter().for_each(|r| outln!("{r}")),
                }
            }
            Ok(())
        }
        Command::Inspect(a) => {
            let report = a.image.common.reporter();
            // inspect shows what the SBOM would hold; it writes nothing.
            let mut req = a.image.request();
            req.sbom = None;
            let made = build_and_deliver(&req, |_| Ok(Vec::new()), &report)?;
            for built in made.iter().map(|m| &m.built) {
                if a.json || a.image.common.message_format == MessageFormat::Json {
                    outln!("{}", inspect::to_json(built)?);
                } else {
                    out!("{}", inspect::to_text(built)?);
                }
            }
            Ok(())
        }
        Command::New(a) => {
            let report = a.common.reporter();
            let made = template::new_package(&a.path, a.name.as_deref())?;
            report.status(
                "Created",
                &format!(
                    "package `{}` (image {}) in {}",
                    made.name,
                    made.image,
                    made.path.display()
                ),
            );
            report.status(
                "Next",
                &format!(
                    "cd {} && cargo oci build && cargo oci load",
                    made.path.display()
                ),
            );
            match a.common.message_format {
                MessageFormat::Json => outln!(
                    "{}",
                    json!({
                        "reason": "package-created",
                        "name": made.name,
                        "path": made.path,
                        "image": made.image,
                    })
                ),
                MessageFormat::Human => outln!("{}", made.path.display()),
            }
            Ok(())
        }
        Command::Init(a) => {
            let report = a.common.reporter();
            let manifest = init::manifest(a.manifest_path.as_deref())?;
            let done = init::init(&manifest, a.dry_run)?;
            if !a.dry_run {
                report.status(
                    "Added",
                    &format!(
                        "[package.metadata.oci] to {} (package `{}`)",
                        done.manifest.display(),
                        done.package
                    ),
                );
            }
            match a.common.message_format {
                MessageFormat::Json => outln!(
                    "{}",
                    json!({
                        "reason": "metadata-added",
                        "manifest": done.manifest,
                        "package": done.package,
                        "dry_run": done.dry_run,
                        "block": done.block,
                    })
                ),
                MessageFormat::Human if a.dry_run => out!("{}", done.block),
                MessageFormat::Human => outln!("{}", done.manifest.display()),
            }
            Ok(())
        }
        Command::Keygen(a) => {
            let report = a.common.reporter();
            crate::sink::sign::keygen(&a.key, &a.public)?;
            report.status(
                "Created",
                &format!(
                    "ECDSA P-256 key pair: {} (private, 0600) and {}",
                    a.key.display(),
                    a.public.display()
                ),
            );
            match a.common.message_format {
                MessageFormat::Json => outln!(
                    "{}",
                    json!({"reason": "key-created", "key": a.key, "public": a.public})
                ),
                MessageFormat::Human => outln!("{}", a.public.display()),
            }
            Ok(())
        }
        Command::Clean(a) => {
            let report = a.common.reporter();
            let target_dir = match &a.target_dir {
                Some(d) => d.clone(),
                None => crate::config::cargo_metadata(&crate::config::Selection {
                    manifest_path: a.manifest_path.clone(),
                    ..Default::default()
                })?
                .target_directory
                .into_std_path_buf(),
            };
            let dir = target_dir.join("oci");
            let done = crate::commands::clean::clean(&dir, a.all)?;
            report.status(
                "Removed",
                &format!(
                    "{} file{}, {} from {}",
                    done.files,
                    if done.files == 1 { "" } else { "s" },
                    crate::util::reporter::bytes(done.bytes),
                    dir.display()
                ),
            );
            match a.common.message_format {
                MessageFormat::Json => outln!(
                    "{}",
                    json!({"reason": "cleaned", "path": dir, "files": done.files, "bytes": done.bytes})
                ),
                MessageFormat::Human => outln!("{}", dir.display()),
            }
            Ok(())
        }
        Command::Push(a) => {
            let report = a.image.common.reporter();
            // Read once (stdin holds one password), used for every image.
            let mut credential: Option<Option<Credential>> = None;
            // With `--to`, the registry is known now: the conversation starts while the image is
            // configured and built.
            let early = match a.to.as_deref().map(ImageName::parse) {
                Some(Ok(name)) => {
                    let cred = credential.insert(stdin_credential(&a)?).clone();
                    let opts = a.image.registry.options();
                    Some(Ahead::connecting(&name, cred, opts, !a.no_attach_sbom))
                }
                _ => None,
            };
            let mut pushes = 0usize;
            let made = build_and_deliver(
                &a.image.request(),
                |conf| {
                    pushes += 1;
                    if a.to.is_some() && pushes > 1 {
                        return Err(UsageError::new(
                            "--to names one image, but several are selected",
                        )
                        .hint("select one package and binary (-p NAME, --bin NAME), or put the images under one registry path with CARGO_OCI_REPOSITORY")
                        .into());
                    }
                    let cred = match &credential {
                        Some(c) => c.clone(),
                        None => credential.insert(stdin_credential(&a)?).clone(),
                    };
                    Ok(vec![
                        Box::new(push_request(&a, conf, cred, early.as_ref(), &report)?)
                            as Box<dyn Sink>,
                    ])
                },
                &report,
            )?;
            for made in &made {
                for (_, delivered) in &made.delivered {
                    if let Delivered::Registry(pushed) = delivered {
                        for p in pushed {
                            print_pushed(p, &made.built, a.image.common.message_format, &report);
                        }
                    }
                }
            }
            Ok(())
        }
    }
}

fn push_request(
    a: &PushArgs,
    conf: &Configured,
    credential: Option<Credential>,
    early: Option<&std::sync::Arc<Ahead>>,
    report: &Reporter,
) -> Result<PushRequest> {
    let destination =
        a.to.as_deref()
            .map(|t| {
                ImageName::parse(t).map_err(|m| {
                    UsageError::new(format!("--to: {m}")).hint("use host[:port]/path/repo")
                })
            })
            .transpose()?;
    if destination.is_none() && !conf.spec.name_configured {
        let name = &conf.spec.name;
        report.warn(&format!(
            "no `name` in [package.metadata.oci]: pushing to {} on {} (set `name` or \
             CARGO_OCI_REPOSITORY, or pass --to)",
            name.full, name.registry
        ));
    }
    Ok(PushRequest {
        destination: destination.clone(),
        credential,
        client: a.image.registry.options(),
        jobs: usize::from(a.upload_jobs),
        chunk_size: a.chunk_size,
        cache_dir: conf.oci_dir(),
        // `--sign` (or CARGO_OCI_SIGN_KEY), else the metadata's `sign-key`; read before any build.
        sign: match (&a.sign, &conf.spec.sign_key) {
            (Some(key), _) => Some(crate::sink::sign::SignKey::read(key)?),
            (None, Some(key)) => Some(crate::sink::sign::SignKey::read_from(
                key,
                &format!(
                    "sign-key in [package.metadata.oci] of {}",
                    conf.spec.build.manifest_path.display()
                ),
            )?),
            (None, None) => None,
        },
        attach_sbom: !a.no_attach_sbom,
        // What the configured tags name is asked while the image is built.
        ahead: {
            let name = destination.unwrap_or_else(|| conf.spec.name.clone());
            match early {
                Some(e) => e.plan(name, conf.spec.tags.clone()),
                None => Ahead::planned(name, conf.spec.tags.clone()),
            }
        },
    })
}

/// The credential of `--username` and `--password-stdin`, when given.
fn stdin_credential(a: &PushArgs) -> Result<Option<Credential>> {
    Ok(match &a.username {
        Some(username) if a.password_stdin => {
            let mut password = String::new();
            std::io::stdin()
                .read_to_string(&mut password)
                .map_err(|e| {
                    UsageError::new(format!("cannot read the password from stdin: {e}"))
                })?;
            let password = password.trim_end_matches(['\n', '\r']).to_string();
            if password.is_empty() {
                return Err(UsageError::new("--password-stdin: stdin held no password")
                    .hint("pipe the password in: `echo \"$PASSWORD\" | cargo oci push --username USER --password-stdin`")
                    .into());
            }
            Some(Credential {
                secret: Secret::Basic {
                    username: username.clone(),
                    password,
                },
                source: "--password-stdin".into(),
            })
        }
        _ => None,
    })
}

/// Builds and delivers each image to the sink `sink` names, then prints the results. A sink
/// writing one given path (`one_path` names its option) takes one image only. When stdout
/// carries the image (`stream`), cargo's messages go to stderr.
fn build_to(
    image: &ImageArgs,
    one_path: Option<&str>,
    stream: bool,
    sink: impl Fn(&Configured) -> Box<dyn Sink>,
) -> Result<()> {
    let report = image.common.reporter();
    let mut first: Option<String> = None;
    let mut req = image.request();
    if stream && req.cargo.messages == Messages::Stdout {
        req.cargo.messages = Messages::Stderr;
    }
    let made = build_and_deliver(
        &req,
        |conf| {
            if let (Some(what), Some(before)) = (one_path, &first) {
                return Err(UsageError::new(format!(
                    "{what} writes one image, but several are selected ({before} and {})",
                    conf.spec.name
                ))
                .hint("select one package and binary (-p NAME, --bin NAME), or leave out the output path: each image then goes to its own layout in target/oci/")
                .into());
            }
            first = Some(conf.spec.name.to_string());
            Ok(vec![sink(conf)])
        },
        &report,
    )?;
    for m in &made {
        print_built(m, image.common.message_format, &report);
    }
    Ok(())
}
