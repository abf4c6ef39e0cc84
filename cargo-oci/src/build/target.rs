//! What building for another architecture needs, checked before any build work: the Rust
//! target installed, a linker for it, `pkg-config` pointed at the target's libraries, and the
//! target's file system (its sysroot), where the closure of its programs is resolved.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::oci::platform::ElfArch;
use anyhow::Result;

use crate::build::deb_sysroot;
use crate::util::error::UsageError;
use crate::util::reporter::Reporter;

/// The environment variable that names the sysroot of `triple`:
/// `CARGO_OCI_SYSROOT_AARCH64_UNKNOWN_LINUX_GNU`.
pub fn sysroot_var(triple: &str) -> String {
    format!("CARGO_OCI_SYSROOT_{}", env_key(triple))
}

fn env_key(triple: &str) -> String {
    triple.to_uppercase().replace(['-', '.'], "_")
}

/// The architecture `triple` builds for, or a usage error naming the targets cargo-oci knows.
pub fn arch_of(triple: &str) -> Result<ElfArch, UsageError> {
    ElfArch::of_rust_target(triple)
        .filter(|_| triple.contains("-linux-"))
        .ok_or_else(|| {
            UsageError::new(format!(
                "`{triple}` is not a Linux target cargo-oci can build images for"
            ))
            .hint("use a target such as x86_64-unknown-linux-gnu or aarch64-unknown-linux-gnu (or -musl)")
        })
}

/// Checks that `triple` can be built for from `package_dir` with the user's toolchain, before
/// anything is built: its standard library is installed and, for a foreign target, a linker is
/// set (or `<triplet>-gcc` is on PATH, which is then used). Also points `pkg-config` at the
/// target's libraries when nothing else does.
pub fn prepare(triple: &str, host: &str, package_dir: &Path) -> Result<(), UsageError> {
    let arch = arch_of(triple)?;
    if !std_installed(triple, package_dir) {
        return Err(UsageError::new(format!(
            "the Rust standard library for {triple} is not installed"
        ))
        .hint(format!(
            "install it with `rustup target add {triple}`{}",
            linker_advice(triple, arch)
        )));
    }
    if triple == host {
        return Ok(());
    }
    let linker_var = format!("CARGO_TARGET_{}_LINKER", env_key(triple));
    let same_cpu = ElfArch::of_rust_target(host) == Some(arch);
    if std::env::var_os(&linker_var).is_none()
        && !same_cpu
        && !config_names_linker(triple, package_dir)
    {
        let gcc = arch.triplet().map(|t| format!("{t}-gcc"));
        match gcc
            .as_deref()
            .and_then(|g| crate::build::tools::which(g).map(|_| g))
        {
            // A process-wide default, so that the contract helper's build links the same way.
            Some(g) => std::env::set_var(&linker_var, g),
            None => {
                return Err(UsageError::new(format!(
                "no linker for {triple}: {linker_var} is not set and no cross compiler was found"
            ))
                .hint(
                    linker_advice(triple, arch)
                        .trim_start_matches(", then ")
                        .to_string(),
                ))
            }
        }
    }
    // pkg-config for the target's libraries (openssl-sys, libz-sys): its multiarch directory.
    if let (Some(t), false) = (arch.triplet(), triple.ends_with("musl")) {
        let underscored = triple.replace('-', "_");
        let libdir = format!("PKG_CONFIG_LIBDIR_{underscored}");
        let any_set = [
            "PKG_CONFIG_LIBDIR",
            "PKG_CONFIG_PATH",
            "PKG_CONFIG_SYSROOT_DIR",
        ]
        .iter()
        .any(|v| {
            std::env::var_os(format!("{v}_{underscored}")).is_some()
                || std::env::var_os(format!("{v}_{triple}")).is_some()
        });
        if !any_set {
            // A directory of .deb files is where the closure is resolved; linking uses the
            // host's multiarch install.
            let sysroot = std::env::var_os(sysroot_var(triple))
                .map(PathBuf::from)
                .filter(|s| !deb_sysroot::is_deb_dir(s));
            let root = sysroot.clone().unwrap_or_else(|| PathBuf::from("/"));
            let dirs: Vec<String> = [
                format!("usr/lib/{t}/pkgconfig"),
                "usr/share/pkgconfig".into(),
            ]
            .iter()
            .map(|d| root.join(d).to_string_lossy().into_owned())
            .collect();
            std::env::set_var(libdir, dirs.join(":"));
            if let Some(s) = sysroot {
                std::env::set_var(format!("PKG_CONFIG_SYSROOT_DIR_{underscored}"), s);
            }
            std::env::set_var(format!("PKG_CONFIG_ALLOW_CROSS_{underscored}"), "1");
        }
    }
    Ok(())
}

/// Makes the `sysroots` of the metadata the sysroots of this run, where
/// `$CARGO_OCI_SYSROOT_<TRIPLE>` does not already name one (the environment wins). Two images of
/// one run that name different sysroots for one target are refused.
pub fn use_configured_sysroots(specs: &[crate::config::ImageSpec]) -> Result<(), UsageError> {
    let mut chosen: std::collections::BTreeMap<&str, &Path> = Default::default();
    for spec in specs {
        for (triple, dir) in &spec.sysroots {
            match chosen.insert(triple, dir) {
                Some(other) if other != dir.as_path() => {
                    return Err(UsageError::new(format!(
                        "two sysroots for {triple} in one run: {} and {}",
                        other.display(),
                        dir.display()
                    ))
                    .hint("give the packages one `sysroots` entry for the target (e.g. in [workspace.metadata.oci]), or build them in separate runs"))
                }
                _ => {}
            }
        }
    }
    for (triple, dir) in chosen {
        let var = sysroot_var(triple);
        if std::env::var_os(&var).is_none() {
            // Process-wide, like the linker default, so that pkg-config and the closure agree.
            std::env::set_var(var, dir);
        }
    }
    Ok(())
}

/// `, then set the linker: ...` for a foreign target.
fn linker_advice(triple: &str, arch: ElfArch) -> String {
    let var = format!("CARGO_TARGET_{}_LINKER", env_key(triple));
    match arch.triplet() {
        Some(t) => {
            let pkg = format!("gcc-{}", t.replace('_', "-"));
            format!(", then set the linker: `apt-get install {pkg}` and `export {var}={t}-gcc` (or `[target.{triple}] linker = \"{t}-gcc\"` in .cargo/config.toml)")
        }
        None => format!(", then set the linker in {var}"),
    }
}

/// Whether `rustc --print target-libdir --target T` names a directory holding `std`.
fn std_installed(triple: &str, package_dir: &Path) -> bool {
    crate::build::cargo::rustc_target_libdir(triple, package_dir).is_some_and(|dir| {
        std::fs::read_dir(&dir).is_ok_and(|rd| {
            rd.filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().starts_with("libstd-"))
        })
    })
}

/// Whether a cargo configuration file that applies in `package_dir` sets a linker for `triple`.
fn config_names_linker(triple: &str, package_dir: &Path) -> bool {
    let mut files = Vec::new();
    for dir in package_dir.ancestors() {
        files.push(dir.join(".cargo/config.toml"));
        files.push(dir.join(".cargo/config"));
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(h) = home {
        files.push(h.join("config.toml"));
        files.push(h.join("config"));
    }
    files.iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|t| t.contains(triple) && t.contains("linker"))
    })
}

/// The file system the closure of `triple`'s programs is resolved in: `/` for the host's own
/// architecture; else `$CARGO_OCI_SYSROOT_<TRIPLE>`, else a multiarch install on this host
/// (`/lib/<triplet>`, `/usr/lib/<triplet>`: sysroot `/`), else the cross packages' `/usr/<triplet>`.
/// A `$CARGO_OCI_SYSROOT_<TRIPLE>` that names a directory of `.deb` files is made into a file
/// system with a package database (see [`deb_sysroot`]).
pub fn sysroot(triple: &str, host: &str, report: &Reporter) -> Result<PathBuf> {
    let var = sysroot_var(triple);
    if let Some(s) = std::env::var_os(&var) {
        let s = PathBuf::from(s);
        if !s.is_dir() {
            return Err(UsageError::new(format!(
                "{var} names {}, which is not a directory",
                s.display()
            ))
            .hint("set it to the root of the target's file system (where lib/ and usr/lib/ are), or to a directory of the target's .deb files")
            .into());
        }
        if deb_sysroot::is_deb_dir(&s) {
            let deb = arch_of(triple)?.debian_arch().unwrap_or("ARCH");
            let (root, fresh) = deb_sysroot::make(&s, deb, &crate::util::fs::cache_dir()?)?;
            report.detail(&format!(
                "sysroot of {triple}: the packages in {} {} {}",
                s.display(),
                if fresh {
                    "unpacked into"
                } else {
                    "already unpacked in"
                },
                root.display()
            ));
            return Ok(root);
        }
        return Ok(s);
    }
    let arch = arch_of(triple)?;
    if ElfArch::of_rust_target(host) == Some(arch) {
        return Ok(PathBuf::from("/"));
    }
    let Some(t) = arch.triplet() else {
        return Err(UsageError::new(format!("no sysroot for {triple}"))
            .hint(format!("set {var} to the root of the target's file system"))
            .into());
    };
    let has_libc = |root: &Path| {
        ["lib", "usr/lib"].iter().any(|d| {
            [
                root.join(d).join(t).join("libc.so.6"),
                root.join(d).join("libc.so.6"),
            ]
            .iter()
            .any(|p| {
                crate::build::closure::inspect(p)
                    .is_ok_and(|i| i.machine == arch.machine && i.class64 == arch.class64)
            })
        })
    };
    let cross = PathBuf::from("/usr").join(t);
    if has_libc(Path::new("/")) {
        Ok(PathBuf::from("/"))
    } else if has_libc(&cross) {
        Ok(cross)
    } else {
        let deb = arch.debian_arch().unwrap_or("ARCH");
        Err(UsageError::new(format!(
            "no C library for {triple} on this host: searched /lib/{t}, /usr/lib/{t} and {}/lib",
            cross.display()
        ))
        .hint(format!(
            "install the target's libraries (`dpkg --add-architecture {deb} && apt-get update && apt-get install libc6:{deb}`), or download them into a directory (`apt-get download libc6:{deb}`) and set {var} to it"
        ))
        .into())
    }
}

/// The error for a library missing from the target's file system: what was searched, and
/// the package that holds the library on this host (`dpkg -S`), for the target's architecture.
pub fn missing_library(
    name: &str,
    needed_by: &str,
    searched: &[PathBuf],
    triple: &str,
    arch: ElfArch,
    sysroot: &Path,
) -> UsageError {
    let deb = arch.debian_arch().unwrap_or("ARCH");
    let base = name.rsplit('/').next().unwrap_or(name);
    let package = Command::new("dpkg")
        .args(["-S", &format!("*/{base}")])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .and_then(|l| l.split(':').next())
                .map(str::to_string)
        });
    let pkg = package.unwrap_or_else(|| format!("the package that provides {base}"));
    let mut msg = format!(
        "library {name} needed by {needed_by} was not found in the file system of {triple} (sysroot {}); searched:",
        sysroot.display()
    );
    for p in searched {
        msg.push_str(&format!("\n  {}", p.display()));
    }
    let hint = if sysroot == Path::new("/") {
        format!("install the {deb} library: `dpkg --add-architecture {deb} && apt-get update && apt-get install {pkg}:{deb}`")
    } else {
        format!(
            "download the target's packages into a directory (`mkdir debs && cd debs && apt-get download {pkg}:{deb} libc6:{deb} ...`) and point {} (or `sysroots` in [package.metadata.oci]) at it: cargo-oci unpacks the .deb files and knows their packages",
            sysroot_var(triple)
        )
    };
    UsageError::new(msg).hint(hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_cargo_conventions() {
        assert_eq!(
            sysroot_var("aarch64-unknown-linux-gnu"),
            "CARGO_OCI_SYSROOT_AARCH64_UNKNOWN_LINUX_GNU"
        );
        assert!(arch_of("aarch64-apple-darwin").is_err());
        assert!(arch_of("wasm32-unknown-unknown").is_err());
        assert_eq!(arch_of("aarch64-unknown-linux-musl").unwrap().machine, 183);
        let advice = linker_advice(
            "aarch64-unknown-linux-gnu",
            arch_of("aarch64-unknown-linux-gnu").unwrap(),
        );
        assert!(
            advice.contains("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc"),
            "{advice}"
        );
        assert!(advice.contains("gcc-aarch64-linux-gnu"), "{advice}");
    }
}
