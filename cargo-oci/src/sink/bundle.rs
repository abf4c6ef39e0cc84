//! `cargo oci bundle`: an OCI runtime bundle (`config.json` + `rootfs/`) that `runc run` starts
//! directly. The rootfs is the image's flattened tree; the process is the image's entrypoint and
//! arguments, environment, working directory and user; the container gets its own pid, network,
//! mount, ipc and uts namespaces and `/proc`, `/dev` and `/sys`; `--readonly` makes the root
//! read-only. The bundle is written beside its destination and renamed into place.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::oci::flatten::{Kind, Tree};
use crate::oci::image::canonical_json;
use crate::util::error::UsageError;

/// The runtime config of a bundle for an image config (`config` object of the image).
pub fn runtime_config(image_config: &Value, readonly: bool) -> Result<Value> {
    let strings = |k: &str| -> Vec<String> {
        image_config
            .get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut args = strings("Entrypoint");
    args.extend(strings("Cmd"));
    if args.is_empty() {
        bail!("the image has neither Entrypoint nor Cmd: the bundle would have nothing to run");
    }
    let user = image_config
        .get("User")
        .and_then(Value::as_str)
        .unwrap_or("0");
    let (uid, gid) = match user.split_once(':') {
        Some((u, g)) => (u, g),
        None => (user, user),
    };
    let (Ok(uid), Ok(gid)) = (uid.parse::<u32>(), gid.parse::<u32>()) else {
        bail!("the image's user `{user}` is not numeric `uid:gid`; a bundle needs numbers");
    };
    let cwd = image_config
        .get("WorkingDir")
        .and_then(Value::as_str)
        .filter(|w| !w.is_empty())
        .unwrap_or("/");
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    Ok(json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid},
            "args": args,
            "env": strings("Env"),
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": readonly},
        "hostname": "cargo-oci",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]}
        ],
        "linux": {
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"}
            ],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                "/proc/sysrq-trigger"]
        }
    }))
}

/// Writes the tree under `root` (an empty directory). Device nodes and fifos are left out: the
/// runtime provides `/dev`.
pub fn materialise(tree: &Tree, root: &Path) -> Result<usize> {
    let mut skipped = 0;
    let mut dirs = Vec::new();
    for (path, node) in &tree.nodes {
        let dest = root.join(path);
        // The tree guarantees parents are directories it made; check it on disk anyway.
        if let Some(parent) = dest.parent() {
            let m = fs::symlink_metadata(parent)
                .with_context(|| format!("cannot write {}", dest.display()))?;
            if !m.is_dir() {
                bail!("{} is not a directory", parent.display());
            }
        }
        match &node.kind {
            Kind::Dir => {
                fs::create_dir(&dest)
                    .with_context(|| format!("cannot create {}", dest.display()))?;
                dirs.push((dest.clone(), node.mode));
            }
            Kind::File(data) => {
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&dest)
                    .with_context(|| format!("cannot create {}", dest.display()))?;
                f.write_all(data)?;
                f.set_permissions(fs::Permissions::from_mode(node.mode))?;
            }
            Kind::Symlink(target) => symlink(target, &dest)
                .with_context(|| format!("cannot create {}", dest.display()))?,
            Kind::Char(..) | Kind::Block(..) | Kind::Fifo => {
                skipped += 1;
                continue;
            }
        }
        // Owners as in the image; without the right to, the files stay ours.
        let _ = std::os::unix::fs::lchown(
            &dest,
            u32::try_from(node.uid).ok(),
            u32::try_from(node.gid).ok(),
        );
    }
    // Directory modes last: a read-only directory must be filled first.
    for (d, mode) in dirs.into_iter().rev() {
        fs::set_permissions(&d, fs::Permissions::from_mode(mode))?;
    }
    Ok(skipped)
}

/// Checks that `dir` may receive a bundle: absent, empty, or an earlier bundle.
pub fn check_destination(dir: &Path) -> Result<(), UsageError> {
    match fs::read_dir(dir) {
        Err(_) if !dir.exists() => Ok(()),
        Err(e) => Err(UsageError::new(format!(
            "cannot use {} for the bundle: {e}",
            dir.display()
        ))),
        Ok(mut entries) => {
            if entries.next().is_none() || dir.join("config.json").is_file() {
                Ok(())
            } else {
                Err(UsageError::new(format!(
                    "{} exists and is not a runtime bundle: refusing to replace it",
                    dir.display()
                ))
                .hint("name a new directory, or an earlier bundle to replace"))
            }
        }
    }
}

/// Writes the bundle at `dir`, replacing an earlier one only once the new one is complete.
pub fn write(tree: &Tree, image_config: &Value, readonly: bool, dir: &Path) -> Result<usize> {
    check_destination(dir)?;
    let config = runtime_config(image_config, readonly)?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".cargo-oci-bundle-")
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a directory in {}", parent.display()))?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755))?;
    let rootfs = tmp.path().join("rootfs");
    fs::create_dir(&rootfs)?;
    let skipped = materialise(tree, &rootfs)?;
    fs::write(tmp.path().join("config.json"), canonical_json(&config)?)?;
    fs::set_permissions(&rootfs, fs::Permissions::from_mode(0o755))?;

    let old = parent.join(format!(
        ".cargo-oci-old-{}",
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("bundle")
    ));
    if dir.exists() {
        let _ = remove_tree(&old);
        fs::rename(dir, &old).with_context(|| format!("cannot move {} aside", dir.display()))?;
    }
    let kept = tmp.keep();
    if let Err(e) = fs::rename(&kept, dir) {
        let _ = fs::rename(&old, dir);
        let _ = remove_tree(&kept);
        return Err(e).with_context(|| format!("cannot write {}", dir.display()));
    }
    let _ = remove_tree(&old);
    Ok(skipped)
}

/// Removes a directory tree, making read-only directories writable first.
fn remove_tree(p: &Path) -> std::io::Result<()> {
    if !p.exists() {
        return Ok(());
    }
    for e in walk(p) {
        let _ = fs::set_permissions(&e, fs::Permissions::from_mode(0o755));
    }
    fs::remove_dir_all(p)
}

fn walk(p: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![p.to_path_buf()];
    let mut i = 0;
    while i < out.len() && out.len() < 1_000_000 {
        if let Ok(rd) = fs::read_dir(&out[i]) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out
}
