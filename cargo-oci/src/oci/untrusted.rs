//! Checks the parts of tar entries that come from outside (base images, archives): every path is
//! made a normalised relative path or refused, so that nothing read from an archive can name a
//! place outside the tree it is read into. Hand-written because it is a few lines of policy, not
//! parsing: the tar crate does the parsing.

/// What went wrong reading a tar (or another format read from outside), in words that never
/// quote the input: the tar crate's messages can hold bytes of a malformed header (a field's
/// text, the name it was reading), which for a file that is not a tar at all means a piece of
/// whatever the file holds. Errors of the system (permissions, I/O, a short file) are kept.
pub fn io_error_text(e: &std::io::Error) -> String {
    if e.raw_os_error().is_some() || e.kind() == std::io::ErrorKind::UnexpectedEof {
        e.to_string()
    } else {
        "malformed data where a tar header should be".to_string()
    }
}

/// The longest path accepted in a layer or an archive.
pub const MAX_PATH: usize = 4096;

/// A normalised relative path (`a/b/c`, no `.`, `..`, empty parts or leading `/`), or `""` for
/// the root itself. `..` is refused, not resolved: a well-formed image never needs it.
pub fn normalize(raw: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(raw)
        .map_err(|_| format!("path {:?} is not UTF-8", String::from_utf8_lossy(raw)))?;
    if text.len() > MAX_PATH {
        return Err(format!("a path of {} bytes is too long", text.len()));
    }
    if text.contains('\0') {
        return Err(format!("path {text:?} holds a NUL byte"));
    }
    let mut parts = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(format!("path {text:?} climbs out with `..`")),
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// The parent of a normalised path (`""` for a top-level one).
pub fn parent(path: &str) -> &str {
    path.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

/// The last part of a normalised path.
pub fn file_name(path: &str) -> &str {
    path.rsplit_once('/').map(|(_, n)| n).unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_or_refused() {
        assert_eq!(normalize(b"./a//b/./c/").unwrap(), "a/b/c");
        assert_eq!(normalize(b"/etc/passwd").unwrap(), "etc/passwd");
        assert_eq!(normalize(b"./").unwrap(), "");
        assert!(normalize(b"../x").is_err());
        assert!(normalize(b"a/../../x").is_err());
        assert!(normalize(b"a/b\0").is_err());
        assert!(normalize(&[0xff, b'a']).is_err());
        assert!(normalize("x".repeat(5000).as_bytes()).is_err());
        assert_eq!(parent("a/b/c"), "a/b");
        assert_eq!(parent("a"), "");
        assert_eq!(file_name("a/b/c"), "c");
    }
}
