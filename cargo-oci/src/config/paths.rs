//! Where cargo-oci puts its own files in the image, and the rules every image path written in
//! the metadata (`files` dest, `volumes`, `perms` path, `workdir`) must follow.

/// The image's PATH, where the service, its probes and the contract helper live.
pub const IMAGE_PATH: &str = "/bin";
/// Where the contract helper reads its settings in the image.
pub const CONTRACT_FILE: &str = "etc/cargo-oci/contract";
/// The debug variant's settings (its presence marks the debug image).
pub const DEBUG_FILE: &str = "etc/cargo-oci/debug";
/// Where CA certificates go, and what `SSL_CERT_FILE` says.
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Where the debug tools live in the debug image.
pub const DEBUG_BIN: &str = "/debug/bin";

/// Paths the image's contract owns, with what they are: nothing the user places may be at or
/// under them, and no volume may hide them.
const OWNED: &[(&str, &str)] = &[
    ("/bin/entrypoint", "the entrypoint (the contract helper)"),
    ("/bin/runtime", "the `runtime` contract program"),
    ("/bin/live", "the liveness probe"),
    ("/bin/ready", "the readiness probe"),
    ("/bin/debug", "the debug shell of the debug variant"),
    ("/debug", "the debug variant's tools"),
    ("/etc/passwd", "the image's user database"),
    ("/etc/group", "the image's group database"),
    ("/etc/nsswitch.conf", "the name service settings"),
    ("/etc/cargo-oci", "the contract files"),
    (CA_BUNDLE, "the CA bundle"),
    ("/proc", "a directory the container runtime mounts over"),
    ("/sys", "a directory the container runtime mounts over"),
    ("/dev", "a directory the container runtime mounts over"),
];

/// Directories cargo-oci creates with modes of their own (`/bin` 0555, `/tmp` 1777).
const OWN_DIRS: &[&str] = &["/", "/bin", "/tmp"];

/// Checks an absolute image path and writes it in one canonical form: `/a/b` (no `.`, empty
/// components or trailing `/`), `/` for the root. Refuses relative paths, `..`, control
/// characters and layer whiteouts (`.wh.` names), which would delete files of lower layers.
pub fn normalize(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("`{}` is not an absolute path", path.escape_debug()));
    }
    if path.chars().any(char::is_control) {
        return Err(format!(
            "`{}` holds a control character (NUL, newline, tab...)",
            path.escape_debug()
        ));
    }
    let mut parts = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(format!("`{path}` goes up with `..`")),
            c if c.starts_with(".wh.") => {
                return Err(format!(
                    "`{path}`: `{c}` is a layer whiteout name (it would delete files of the layers below)"
                ))
            }
            c => parts.push(c),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// True when `path` is `base` or under it (both normalized).
pub fn is_at_or_under(path: &str, base: &str) -> bool {
    path == base || base == "/" || path.starts_with(&format!("{base}/"))
}

/// What cargo-oci itself puts at or above `path` (normalized), if anything: a place no `files`
/// entry may take. `programs` are the binaries installed in `/bin` (the service, probe bins).
pub fn owned_by_image(path: &str, programs: &[&str]) -> Option<String> {
    if OWN_DIRS.contains(&path) {
        return Some(format!("`{path}` is a directory cargo-oci creates"));
    }
    for (p, what) in OWNED {
        if is_at_or_under(path, p) {
            return Some(format!("`{p}` is {what}"));
        }
    }
    for bin in programs {
        let p = format!("{IMAGE_PATH}/{bin}");
        if is_at_or_under(path, &p) {
            return Some(format!("`{p}` is the binary `{bin}` of the package"));
        }
    }
    None
}

/// Why a volume at `path` (normalized) would hide or hand over something of the image, if it
/// would: a volume is a mount point owned by the image user.
pub fn volume_conflict(path: &str, programs: &[&str]) -> Option<String> {
    if let Some(why) = owned_by_image(path, programs) {
        return Some(why);
    }
    for (p, what) in OWNED {
        if is_at_or_under(p, path) {
            return Some(format!("it holds `{p}`, {what}"));
        }
    }
    for d in OWN_DIRS {
        if is_at_or_under(d, path) {
            return Some(format!("it holds `{d}`, a directory cargo-oci creates"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized_or_refused() {
        assert_eq!(
            normalize("/./bin/./entrypoint").as_deref(),
            Ok("/bin/entrypoint")
        );
        assert_eq!(normalize("/srv//x/").as_deref(), Ok("/srv/x"));
        assert_eq!(normalize("/").as_deref(), Ok("/"));
        assert!(normalize("srv").is_err());
        assert!(normalize("/a/../etc/passwd").is_err());
        assert!(normalize("/.wh.bin").is_err());
        assert!(normalize("/etc/.wh..wh..opq").is_err());
        assert!(normalize("/a\0b").is_err());
        assert!(normalize("/a\nb").is_err());
    }

    #[test]
    fn the_contract_paths_are_owned() {
        let bins = ["svc"];
        for p in [
            "/bin/entrypoint",
            "/etc/passwd",
            "/etc/cargo-oci/contract",
            "/bin/svc",
            "/bin",
            "/",
        ] {
            assert!(owned_by_image(p, &bins).is_some(), "{p}");
        }
        for p in ["/srv/static", "/bin/tool", "/etc/app.conf", "/data"] {
            assert!(owned_by_image(p, &bins).is_none(), "{p}");
        }
        assert!(volume_conflict("/etc", &bins).is_some());
        assert!(volume_conflict("/etc/passwd", &bins).is_some());
        assert!(volume_conflict("/data", &bins).is_none());
    }
}
