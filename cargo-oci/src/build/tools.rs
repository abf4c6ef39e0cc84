//! Finds the host programs an image carries besides the service: runtime inputs (on the image's
//! PATH) and the debug variant's tools (busybox, or bash and coreutils), and decides where each
//! goes in the image.

use std::path::{Path, PathBuf};

use crate::build::closure;
use crate::config::BuildSpec;
use crate::util::error::UsageError;

/// A host program and where it goes in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub host_path: PathBuf,
    /// Absolute path in the image.
    pub image_path: String,
    /// Whether it is an ELF file (whose closure must come along).
    pub elf: bool,
}

impl Program {
    /// The program as an executable whose closure the image needs (ELF files only).
    pub fn executable(&self) -> Option<closure::Executable> {
        self.elf.then(|| closure::Executable {
            host_path: self.host_path.clone(),
            image_path: self.image_path.clone(),
        })
    }
}

pub use crate::config::paths::DEBUG_BIN;

/// The debug variant's tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugTools {
    pub programs: Vec<Program>,
    /// Symlinks `(image path, target)`, e.g. busybox applets.
    pub links: Vec<(String, String)>,
    /// The shell `/bin/debug` starts.
    pub shell: String,
}

/// Looks a program up: a path is used as is, a bare name is searched on PATH (as `which`).
pub fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

/// Looks a program up in the target's file system at `sysroot`: on the host's PATH when that is
/// `/`, else in the sysroot's `bin` and `sbin` directories (a path is taken inside the sysroot
/// when it is there, else as it is).
pub fn which_in(name: &str, sysroot: &Path) -> Option<PathBuf> {
    if sysroot == Path::new("/") {
        return which(name);
    }
    if name.contains('/') {
        let inside = sysroot.join(name.trim_start_matches('/'));
        return if inside.is_file() {
            Some(inside)
        } else {
            which(name)
        };
    }
    ["usr/local/bin", "usr/bin", "bin", "usr/sbin", "sbin"]
        .iter()
        .map(|d| sysroot.join(d).join(name))
        .find(|p| is_executable(p))
}

/// Where a program found in `sysroot` goes in the image: its path inside the sysroot.
fn image_path_in(host: &Path, sysroot: &Path) -> String {
    match host.strip_prefix(sysroot) {
        Ok(rel) if sysroot != Path::new("/") => format!("/{}", rel.to_string_lossy()),
        _ => host.to_string_lossy().into_owned(),
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Where runtime inputs that live in the package directory go: the image must not depend on the
/// directory the package was built in.
pub const PACKAGE_INPUTS: &str = "/usr/local/bin";

/// The runtime inputs, each at the path it has on the host (so its `$ORIGIN` still holds), but
/// those of the package itself, which go to [`PACKAGE_INPUTS`]. A relative path was made
/// absolute against the package directory by the configuration.
pub fn runtime_inputs(
    names: &[String],
    machine: u16,
    sysroot: &Path,
    package_dir: &Path,
    build: &BuildSpec,
) -> Result<Vec<Program>, UsageError> {
    names
        .iter()
        .map(|n| {
            let host = which_in(n, sysroot).ok_or_else(|| {
                UsageError::new(format!(
                    "{}: `{n}` is not a file or a program on PATH",
                    build.key_place("runtime-inputs")
                ))
                .hint("install it on the build host, or name it by its full path")
            })?;
            // A PATH entry such as `.` finds relative paths: never let one reach the image.
            let host = std::path::absolute(&host).unwrap_or(host);
            let image_path = match (host.strip_prefix(package_dir), host.file_name()) {
                (Ok(_), Some(name)) => format!("{PACKAGE_INPUTS}/{}", name.to_string_lossy()),
                _ => image_path_in(&host, sysroot),
            };
            program(host, image_path, machine, build, "runtime-inputs")
        })
        .collect()
}

fn program(
    host: PathBuf,
    image_path: String,
    machine: u16,
    build: &BuildSpec,
    key: &str,
) -> Result<Program, UsageError> {
    match closure::inspect(&host) {
        Ok(info) if info.machine != machine => Err(UsageError::new(format!(
            "{}: {} is built for another CPU (ELF machine {}) than the service ({machine})",
            build.key_place(key),
            host.display(),
            info.machine
        ))
        .hint(format!("name a program built for the image's architecture by its path (e.g. from the target's sysroot), or set {} to a file system of that architecture", "CARGO_OCI_SYSROOT_<TARGET>"))),
        Ok(_) => Ok(Program { host_path: host, image_path, elf: true }),
        Err(closure::ClosureError::NotElf { .. }) => Ok(Program { host_path: host, image_path, elf: false }),
        Err(e) => Err(UsageError::new(format!("{}: {e}", build.key_place(key)))
            .hint("name a program file the build host can read")),
    }
}

const COREUTILS: &[&str] = &[
    "cat", "chmod", "cp", "date", "df", "du", "echo", "env", "false", "head", "id", "ln", "ls",
    "mkdir", "mv", "printf", "pwd", "rm", "sleep", "sort", "stat", "tail", "tee", "touch", "true",
    "uname", "wc",
];

/// The debug tools: the ones named, or by default a static busybox when the host has one, else
/// bash and coreutils.
pub fn debug_tools(
    named: Option<&[String]>,
    machine: u16,
    sysroot: &Path,
    build: &BuildSpec,
) -> Result<DebugTools, UsageError> {
    let which = |n: &str| which_in(n, sysroot);
    let names: Vec<String> = match named {
        Some(n) => n.to_vec(),
        None => match which("busybox")
            .filter(|p| closure::inspect(p).is_ok_and(|i| i.is_static && i.machine == machine))
        {
            Some(_) => vec!["busybox".into()],
            None if which("bash")
                .is_some_and(|p| closure::inspect(&p).is_ok_and(|i| i.machine != machine)) =>
            {
                return Err(UsageError::new(format!(
                    "{}: no debug tools for this architecture (ELF machine {machine}): the programs in {} are built for another",
                    build.manifest_path.display(),
                    sysroot.display()
                ))
                .hint(format!("name a busybox of the image's architecture by its path in `debug = {{ inputs = [\"/path/to/busybox\"] }}`, or set {} to a file system of that architecture", "CARGO_OCI_SYSROOT_<TARGET>")));
            }
            None => {
                let mut v = vec!["bash".to_string()];
                v.extend(
                    COREUTILS
                        .iter()
                        .filter(|c| which(c).is_some())
                        .map(|c| c.to_string()),
                );
                v
            }
        },
    };
    let mut programs = Vec::new();
    let mut links = Vec::new();
    for n in &names {
        let host = which(n).ok_or_else(|| {
            UsageError::new(format!(
                "{}: `{n}` is not a file or a program on PATH",
                build.key_place("debug.inputs")
            ))
            .hint("install it on the build host (e.g. busybox-static), or name it by its full path")
        })?;
        let base = host
            .file_name()
            .map(|b| b.to_string_lossy().into_owned())
            .unwrap_or_else(|| n.clone());
        let p = program(
            host.clone(),
            format!("{DEBUG_BIN}/{base}"),
            machine,
            build,
            "debug.inputs",
        )?;
        if base == "busybox" {
            for applet in busybox_applets(&host) {
                if applet != "busybox" && !names.contains(&applet) {
                    links.push((format!("{DEBUG_BIN}/{applet}"), "busybox".to_string()));
                }
            }
        }
        programs.push(p);
    }
    programs.sort_by(|a, b| a.image_path.cmp(&b.image_path));
    programs.dedup_by(|a, b| a.image_path == b.image_path);
    links.sort();
    links.dedup();
    let has = |name: &str| {
        let path = format!("{DEBUG_BIN}/{name}");
        programs.iter().any(|p| p.image_path == path) || links.iter().any(|(l, _)| *l == path)
    };
    let shell = ["sh", "bash", "ash", "dash"]
        .into_iter()
        .find(|s| has(s))
        .map(|s| format!("{DEBUG_BIN}/{s}"))
        .ok_or_else(|| {
            UsageError::new(format!(
                "{} has no shell (sh, bash, ash or dash)",
                build.key_place("debug.inputs")
            ))
            .hint("add \"busybox\" or \"bash\" to debug.inputs")
        })?;
    Ok(DebugTools {
        programs,
        links,
        shell,
    })
}

/// The applets a busybox binary offers (`busybox --list`), sorted; none if it cannot run here.
fn busybox_applets(busybox: &Path) -> Vec<String> {
    let out = std::process::Command::new(busybox)
        .arg("--list")
        .stderr(std::process::Stdio::null())
        .output();
    let mut v: Vec<String> = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.contains('/'))
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    v.sort();
    v
}
