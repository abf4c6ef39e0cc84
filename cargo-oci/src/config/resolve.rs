//! From the metadata as written (workspace defaults merged in) to the validated [`ImageSpec`]:
//! every value checked, every path resolved. Reads the package directory to resolve `files`
//! sources; writes nothing.

use std::path::{Component, Path, PathBuf};

use cargo_metadata::{Metadata, Package};

use crate::config::env::ConfigEnv;
use crate::config::package::{
    choose_bin, default_labels, default_name, Selection, LABEL_PREFIX, REVISION_LABEL,
};
use crate::config::paths::{normalize, owned_by_image, volume_conflict};
use crate::config::raw::{RawFile, RawOci};
use crate::config::spec::{BuildSpec, Created, FileSpec, ImageSpec, PermSpec, RuntimeConfig};
use crate::config::tags::{debug_tags, image_tags};
use crate::config::validate::{
    debug_spec, expand_placeholders, invalid, parse_created, plain_text, platform_targets, probe,
    profile_name, stop_signal, sysroots, validate_port, Invalid,
};
use crate::config::workspace::{extra_bins, prefixed_name, workspace_defaults, Origin};
use crate::oci::reference::ImageName;
use crate::util::error::UsageError;

/// The default `max-layers`.
pub const DEFAULT_MAX_LAYERS: usize = 100;

/// Reads and validates the image specs of `package` (one per binary it ships as an image), with
/// this process's environment.
pub fn image_specs(
    meta: &Metadata,
    package: &Package,
    sel: &Selection,
) -> Result<Vec<ImageSpec>, UsageError> {
    image_specs_with(meta, package, sel, &ConfigEnv::from_process())
}

/// Reads and validates the image specs of `package`: one per binary of `bins`, else the one of
/// `--bin`, `bin` or the package's only binary.
pub fn image_specs_with(
    meta: &Metadata,
    package: &Package,
    sel: &Selection,
    environment: &ConfigEnv,
) -> Result<Vec<ImageSpec>, UsageError> {
    let manifest = package.manifest_path.as_std_path();
    let defaults = workspace_defaults(meta)?;
    let own = match package.metadata.get("oci") {
        Some(v) => RawOci::parse(v, "package.metadata.oci", manifest)?,
        None => RawOci::default(),
    };
    let origin = Origin {
        manifest,
        ws_manifest: meta.workspace_root.join("Cargo.toml").into_std_path_buf(),
        own: package.metadata.get("oci"),
        workspace: meta.workspace_metadata.get("oci"),
    };
    if own.all_binaries.is_some() {
        return Err(origin.error(
            "all-binaries",
            invalid(
                "is a setting of the whole workspace",
                "move `all-binaries` to [workspace.metadata.oci] in the workspace's Cargo.toml",
            ),
        ));
    }
    let raw = own.with_defaults(defaults);
    let bins = match (&sel.bin, &raw.bins, &raw.bin) {
        (Some(b), _, _) => vec![choose_bin(package, Some(b), None)?],
        (None, Some(_), Some(_)) => {
            return Err(origin.error(
                "bins",
                invalid(
                    "`bin` and `bins` are both set",
                    "keep `bins` for one image per binary, or `bin` for one image",
                ),
            ))
        }
        (None, Some(list), None) => {
            if list.is_empty() {
                return Err(origin.error(
                    "bins",
                    invalid("the list is empty", "name at least one [[bin]] target"),
                ));
            }
            let mut v: Vec<String> = Vec::new();
            for b in list {
                let b = choose_bin(package, Some(b), Some(&origin.place("bins")))?;
                if !v.contains(&b) {
                    v.push(b);
                }
            }
            v
        }
        (None, None, b) => vec![choose_bin(
            package,
            b.as_deref(),
            Some(&origin.place("bin")),
        )?],
    };
    let several = bins.len() > 1;
    bins.into_iter()
        .map(|bin| image_spec_for(meta, package, sel, environment, &raw, &origin, bin, several))
        .collect()
}

/// The spec of one image of `package`: the one carrying `bin`.
#[allow(clippy::too_many_arguments)]
fn image_spec_for(
    meta: &Metadata,
    package: &Package,
    sel: &Selection,
    environment: &ConfigEnv,
    raw: &RawOci,
    origin: &Origin,
    bin: String,
    several: bool,
) -> Result<ImageSpec, UsageError> {
    let manifest = package.manifest_path.as_std_path();
    let err = |key: &str, bad: Invalid| origin.error(key, bad);
    let package_dir = manifest.parent().map(Path::to_path_buf).unwrap_or_default();
    // Symlinks resolved, so that `files` sources can be checked against it.
    let package_dir = package_dir.canonicalize().unwrap_or(package_dir);

    let name_help = "use a lowercase reference such as \"registry.example.com/team/{package}\"";
    let default_name = default_name(if several {
        "{bin}"
    } else {
        package.name.as_str()
    });
    let name_text =
        expand_placeholders(raw.name.as_deref().unwrap_or(&default_name), package, &bin)
            .map_err(|m| err("name", invalid(m, name_help)))?;
    let repository = environment
        .repository
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty());
    let name = match repository {
        Some(repo) => prefixed_name(repo, &name_text)?,
        _ => ImageName::parse(&name_text).map_err(|m| err("name", invalid(m, name_help)))?,
    };

    let (tags, content_tag) = image_tags(raw, &sel.tags, package, &bin, &err)?;
    let stop_signal = raw
        .stop_signal
        .as_deref()
        .map(stop_signal)
        .transpose()
        .map_err(|m| err("stop-signal", m))?;

    let env = raw.env.clone().unwrap_or_default();
    for k in env.keys() {
        if k.is_empty() || k.contains('=') || k.chars().any(char::is_control) {
            return Err(err(
                "env",
                invalid(
                    format!("`{}` is not a valid variable name", k.escape_debug()),
                    "name variables with letters, digits and `_`, such as RUST_LOG",
                ),
            ));
        }
    }
    for a in raw.args.iter().flatten() {
        if a.contains('\0') {
            return Err(err(
                "args",
                invalid("an argument holds a NUL character", "remove it"),
            ));
        }
    }

    let workdir_help = "write an absolute path such as \"/\" or \"/srv\"";
    let workdir = normalize(raw.workdir.as_deref().unwrap_or("/"))
        .map_err(|m| err("workdir", invalid(m, workdir_help)))?;

    let ports = raw.ports.clone().unwrap_or_default();
    for p in &ports {
        validate_port(p).map_err(|m| {
            err(
                "ports",
                invalid(m, "write ports such as \"8080\" or \"53/udp\""),
            )
        })?;
    }

    let user = raw.user.unwrap_or(65534);
    let group = raw.group.unwrap_or(user);
    for (key, id) in [("user", user), ("group", group)] {
        if id == u32::MAX {
            return Err(err(
                key,
                invalid(
                    format!("{id} is (uid_t)-1, which no process can run as"),
                    "use an id from 0 to 4294967294, e.g. 65534 (nobody)",
                ),
            ));
        }
    }

    // The binaries installed in /bin: the service and its probe binaries.
    let probe_bins: Vec<&str> = [&raw.live, &raw.ready]
        .into_iter()
        .flatten()
        .filter_map(|p| p.bin.as_deref())
        .collect();
    let extra_bins = extra_bins(raw, package, &bin).map_err(|m| err("extra-bins", m))?;
    let programs: Vec<&str> = std::iter::once(bin.as_str())
        .chain(probe_bins)
        .chain(extra_bins.iter().map(String::as_str))
        .collect();
    let profile = raw
        .profile
        .as_deref()
        .map(|p| profile_name(p).map_err(|m| err("profile", m)))
        .transpose()?;
    let features = raw.features.clone().unwrap_or_default();
    for f in &features {
        if !package.features.contains_key(f) {
            let mut known: Vec<&str> = package.features.keys().map(String::as_str).collect();
            known.retain(|k| *k != "default");
            return Err(err(
                "features",
                invalid(
                    format!(
                        "package `{}` has no feature `{f}` (it has: {})",
                        package.name,
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    ),
                    "name features of the package's [features] table",
                ),
            ));
        }
    }

    let volume_help = "name a directory of its own for the service's data, such as \"/data\"";
    let mut volumes: Vec<String> = Vec::new();
    for v in raw.volumes.iter().flatten() {
        let at = |m: String| err("volumes", invalid(m, volume_help));
        let path = normalize(v).map_err(at)?;
        if let Some(why) = volume_conflict(&path, &programs) {
            return Err(at(format!(
                "`{v}` cannot be a volume: {why} (a volume is a mount point owned by the image user)"
            )));
        }
        if !volumes.contains(&path) {
            volumes.push(path);
        }
    }

    let mut labels = default_labels(package);
    for (k, v) in raw.labels.clone().unwrap_or_default() {
        if k.is_empty() {
            return Err(err(
                "labels",
                invalid(
                    "a label key is empty",
                    "give each label a key, such as vendor = \"Example\"",
                ),
            ));
        }
        let key = if k.contains('.') {
            k
        } else {
            format!("{LABEL_PREFIX}{k}")
        };
        labels.insert(key, v);
    }

    // git is asked in the background (while cargo builds); its answer is waited for when the
    // config is written.
    let revision_from = match (
        labels.contains_key(REVISION_LABEL),
        package.manifest_path.parent(),
    ) {
        (false, Some(dir)) => {
            super::package::prefetch_revision(dir.as_std_path());
            Some(dir.as_std_path().to_path_buf())
        }
        _ => None,
    };

    let mtime = environment
        .epoch()
        .map_err(|m| UsageError::new(m).hint("set SOURCE_DATE_EPOCH to a number of seconds"))?;
    let created = match raw.created.as_deref() {
        None => Created::Epoch(mtime),
        Some("now") => Created::Now,
        Some(s) => Created::Epoch(parse_created(s).map_err(|m| {
            err(
                "created",
                invalid(
                    m,
                    "write \"now\" or a time such as \"2024-01-01T00:00:00Z\"",
                ),
            )
        })?),
    };

    let from = match raw.from.as_deref() {
        None => None,
        Some(f) => Some(crate::source::BaseRef::parse(f, &package_dir).map_err(|m| {
            err("from", invalid(m,
                "use \"oci:DIR[:REF]\", \"oci-archive:FILE[:REF]\", \"docker-archive:FILE[:REF]\" or \"HOST/REPO@sha256:DIGEST\"",
            ))
        })?),
    };
    let max_layers = match raw.max_layers {
        None => DEFAULT_MAX_LAYERS,
        Some(0) => {
            return Err(err(
                "max-layers",
                invalid("must be at least 1", "leave it out for the default, 100"),
            ))
        }
        Some(n) => n as usize,
    };
    let live = raw
        .live
        .as_ref()
        .map(|p| probe(p, "live", package))
        .transpose()
        .map_err(|m| err("live", m))?;
    let ready = raw
        .ready
        .as_ref()
        .map(|p| probe(p, "ready", package))
        .transpose()
        .map_err(|m| err("ready", m))?;
    let mut debug = match &raw.debug {
        None => None,
        Some(v) => debug_spec(v).map_err(|m| err("debug", m))?,
    };
    if let Some(d) = debug.as_mut() {
        if let Some(raw_tags) = d.tags.take() {
            d.tags = Some(debug_tags(&raw_tags, &tags, package, &bin, &err)?);
        }
    }

    let mut files = Vec::new();
    for (i, f) in raw.files.iter().flatten().enumerate() {
        files.push(
            file_spec(f, &package_dir, &programs).map_err(|m| err(&format!("files[{i}]"), m))?,
        );
    }
    let mut perms = Vec::new();
    for (i, p) in raw.perms.iter().flatten().enumerate() {
        let at = |m: Invalid| err(&format!("perms[{i}]"), m);
        let path = normalize(&p.path).map_err(|m| {
            at(invalid(
                format!("path {m}"),
                "name an absolute path the image holds",
            ))
        })?;
        let regex = p
            .regex
            .as_deref()
            .map(regex::Regex::new)
            .transpose()
            .map_err(|e| {
                at(invalid(
                    format!("regex: {e}"),
                    "write a regular expression as the regex crate reads it, e.g. \"\\\\.html$\"",
                ))
            })?;
        perms.push(PermSpec {
            path,
            regex,
            mode: p.mode.map(|m| m.0),
            uid: p.uid,
            gid: p.gid,
        });
    }

    let extra_libs = raw.extra_libs.clone().unwrap_or_default();
    for l in &extra_libs {
        if l.is_empty() || l.contains('/') || l.chars().any(char::is_control) {
            return Err(err(
                "extra-libs",
                invalid(
                    format!("`{}` is not a library file name", l.escape_debug()),
                    "name libraries by file name, such as \"libnss_dns.so.2\"",
                ),
            ));
        }
    }

    let mut runtime_inputs = Vec::new();
    for r in raw.runtime_inputs.iter().flatten() {
        runtime_inputs.push(runtime_input(r, &package_dir).map_err(|m| err("runtime-inputs", m))?);
    }

    let sysroots = sysroots(raw, &package_dir).map_err(|m| err("sysroots", m))?;
    let sign_key = match raw.sign_key.as_deref() {
        Some("") => Err(err(
            "sign-key",
            super::validate::invalid(
                "the key path is empty",
                "name the private key file, relative to the package directory",
            ),
        ))?,
        k => k.map(|k| package_dir.join(k)),
    };
    Ok(ImageSpec {
        build: BuildSpec {
            package: package.name.to_string(),
            manifest_path: manifest.to_path_buf(),
            workspace_manifests: std::iter::once(meta.workspace_root.join("Cargo.toml"))
                .chain(
                    meta.workspace_packages()
                        .iter()
                        .map(|p| p.manifest_path.clone()),
                )
                .map(|p| p.into_std_path_buf())
                .collect(),
            package_dir,
            target_directory: meta.target_directory.clone().into_std_path_buf(),
            package_id: package.id.repr.clone(),
            package_spec: if package.id.repr.contains("://") && !package.id.repr.contains(' ') {
                package.id.repr.clone()
            } else {
                format!("{}@{}", package.name, package.version)
            },
            profile,
            features,
            extra_bins,
            bin,
            keys_from_workspace: origin.keys_from_workspace(),
        },
        name,
        name_configured: raw.name.is_some() || repository.is_some(),
        tags,
        runtime: RuntimeConfig {
            args: raw.args.clone().unwrap_or_default(),
            env,
            user,
            group,
            workdir,
            ports,
            volumes,
            labels,
            revision_from,
            created,
            stop_signal,
        },
        extra_libs,
        ca_certificates: raw.ca_certificates.unwrap_or(true),
        mtime,
        from,
        max_layers,
        live,
        ready,
        runtime_inputs,
        debug,
        files,
        perms,
        init: raw.init.unwrap_or(false),
        content_tag,
        scanner_metadata: raw.scanner_metadata.unwrap_or(true),
        targets: platform_targets(raw.platforms.as_deref()).map_err(|m| err("platforms", m))?,
        sysroots,
        sign_key,
    })
}

const OUTSIDE_HELP: &str = "files come from the package directory only: copy what you need into the package (e.g. with a step before `cargo oci build`) and name that copy";

/// One `files` entry: the source resolved inside the package, the destination normalized.
fn file_spec(f: &RawFile, package_dir: &Path, programs: &[&str]) -> Result<FileSpec, Invalid> {
    let dest = normalize(&f.dest).map_err(|m| {
        invalid(
            format!("dest {m}"),
            "write an absolute path in the image, such as \"/srv/static\"",
        )
    })?;
    if let Some(why) = owned_by_image(&dest, programs).filter(|_| dest != "/") {
        return Err(invalid(
            format!(
                "dest `{}` would replace what cargo-oci puts there: {why}",
                f.dest
            ),
            "put your files in a directory of their own, such as /srv or /usr/share/<package>",
        ));
    }
    if f.src.is_empty() {
        return Err(invalid(
            "src is empty",
            "name a file or directory of the package, relative to Cargo.toml (\".\" is the whole package, without target/ and VCS directories)",
        ));
    }
    let given = package_dir.join(&f.src);
    let src = given.canonicalize().map_err(|e| {
        invalid(
            format!("src `{}` cannot be read ({}: {e})", f.src, given.display()),
            "name a file or directory of the package, relative to Cargo.toml",
        )
    })?;
    if !src.starts_with(package_dir) {
        return Err(invalid(
            format!(
                "src `{}` is {}, outside the package directory {}",
                f.src,
                src.display(),
                package_dir.display()
            ),
            OUTSIDE_HELP,
        ));
    }
    let meta = std::fs::metadata(&src).map_err(|e| {
        invalid(
            format!("src `{}` cannot be read: {e}", f.src),
            "name a file or directory of the package",
        )
    })?;
    if !meta.is_dir() && !meta.is_file() {
        return Err(invalid(
            format!(
                "src `{}` is a special file (a pipe, socket or device), not a file or directory",
                f.src
            ),
            "name a regular file or a directory",
        ));
    }
    if meta.is_file() && dest == "/" {
        return Err(invalid(
            format!(
                "dest `{}` is the root directory; a file needs a name",
                f.dest
            ),
            "write the file's path in the image, such as \"/etc/app.conf\"",
        ));
    }
    Ok(FileSpec {
        src,
        src_text: f.src.clone(),
        dest,
        mode: f.mode.map(|m| m.0),
    })
}

/// A runtime input: a name looked up on PATH as it is, a path made absolute against the package
/// directory (never against the directory cargo-oci runs in).
fn runtime_input(r: &str, package_dir: &Path) -> Result<String, Invalid> {
    let help =
        "name a program on PATH (\"openssl\") or a path (absolute, or relative to Cargo.toml)";
    if r.is_empty() {
        return Err(invalid("an input is empty", help));
    }
    plain_text("input", r, help)?;
    if !r.contains('/') {
        return Ok(r.to_string());
    }
    let p = package_dir.join(r);
    let clean: PathBuf = if p.components().any(|c| c == Component::ParentDir) {
        p.canonicalize()
            .map_err(|e| invalid(format!("`{r}` cannot be read ({}: {e})", p.display()), help))?
    } else {
        p.components().filter(|c| *c != Component::CurDir).collect()
    };
    clean
        .to_str()
        .map(str::to_string)
        .ok_or_else(|| invalid(format!("`{r}` is not valid UTF-8"), help))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_runtime_inputs_resolve_against_the_package() {
        let dir = Path::new("/pkg");
        assert_eq!(runtime_input("./tool", dir).as_deref(), Ok("/pkg/tool"));
        assert_eq!(
            runtime_input("bin/./tool", dir).as_deref(),
            Ok("/pkg/bin/tool")
        );
        assert_eq!(
            runtime_input("/usr/bin/jq", dir).as_deref(),
            Ok("/usr/bin/jq")
        );
        assert_eq!(runtime_input("openssl", dir).as_deref(), Ok("openssl"));
        assert!(runtime_input("", dir).is_err());
    }

    #[test]
    fn files_stay_inside_the_package() {
        let tmp = tempfile::tempdir().unwrap();
        let pkg = tmp.path().canonicalize().unwrap().join("pkg");
        std::fs::create_dir_all(pkg.join("static")).unwrap();
        std::fs::write(pkg.join("static/a.txt"), "a").unwrap();
        std::fs::write(tmp.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret"), pkg.join("static/link")).unwrap();
        let f = |src: &str, dest: &str| RawFile {
            src: src.into(),
            dest: dest.into(),
            mode: None,
        };
        let ok = file_spec(&f("static", "/srv/static/"), &pkg, &["svc"]).unwrap();
        assert_eq!(ok.dest, "/srv/static");
        for (src, dest) in [
            ("static/link", "/x"),
            ("../secret", "/x"),
            ("/etc/hostname", "/x"),
            ("", "/x"),
            ("static", "/./bin/./entrypoint"),
            ("static", "/etc/passwd"),
            ("static", "/bin/svc"),
            ("static", "/etc/cargo-oci/contract"),
            ("static", "/.wh.bin"),
            ("static", "/etc/.wh..wh..opq"),
            ("static", "/bin/"),
            ("static/a.txt", "/"),
        ] {
            let e = file_spec(&f(src, dest), &pkg, &["svc"]).unwrap_err();
            assert!(!e.help.is_empty(), "{src} -> {dest}: {e:?}");
        }
    }
}
