//! `cargo oci new`: creates a package from the starter service in `template/` (embedded here),
//! with its package and image names replaced. The package appears whole or not at all: it is
//! written to a temporary directory, then renamed into place.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::util::error::UsageError;

/// The template's name, replaced by the new package's name.
const TEMPLATE_NAME: &str = "cargo-oci-template";

/// The template's files: (path in the package, contents).
const FILES: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../../../template/Cargo.toml")),
    ("src/main.rs", include_str!("../../../template/src/main.rs")),
    (".gitignore", include_str!("../../../template/.gitignore")),
];

/// A package created by [`new_package`].
#[derive(Debug, Clone)]
pub struct Created {
    pub name: String,
    pub path: PathBuf,
    /// The image name written in its metadata.
    pub image: String,
}

/// Checks a package name as cargo would: ASCII letters, digits, `-` and `_`, not starting with a
/// digit.
pub fn check_name(name: &str) -> Result<(), UsageError> {
    let bad = |why: &str| {
        UsageError::new(format!("`{name}` is not a valid package name: {why}")).hint(
            "use ASCII letters, digits, `-` and `_`, starting with a letter, e.g. `my-service`",
        )
    };
    match name.chars().next() {
        None => return Err(bad("it is empty")),
        Some(c) if c.is_ascii_digit() => return Err(bad("it starts with a digit")),
        _ => {}
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(bad(&format!("it contains `{c}`")));
    }
    Ok(())
}

/// The contents of the template's files for package `name`.
pub fn render(name: &str) -> Vec<(&'static str, String)> {
    let image = image_name(name);
    FILES
        .iter()
        .map(|(path, text)| {
            let text = if *path == "Cargo.toml" {
                // Image paths (`localhost/NAME`, `ghcr.io/you/NAME`) get the lowercased name.
                text.replace(&format!("/{TEMPLATE_NAME}"), &format!("/{image}"))
                    .replace(TEMPLATE_NAME, name)
            } else {
                text.to_string()
            };
            (*path, text)
        })
        .collect()
}

/// The image name for a package: `localhost/<name, lowercased>`, what `cargo oci load` and a
/// local registry accept; the user changes it to a registry path to push.
fn image_name(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// Creates package `name` (default) in `dir` from the template. `dir` must not exist.
pub fn new_package(dir: &Path, name: Option<&str>) -> Result<Created> {
    let name = match name {
        Some(n) => n.to_string(),
        None => dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| {
                UsageError::new(format!("cannot take a package name from {}", dir.display()))
                    .hint("name it with --name NAME")
            })?,
    };
    check_name(&name)?;
    if dir.exists() {
        return Err(UsageError::new(format!("{} already exists", dir.display()))
            .hint("choose a new directory, or run `cargo oci init` in an existing package to add image settings to it")
            .into());
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(UsageError::new(format!(
            "cannot create {}: {} is not a directory",
            dir.display(),
            parent.display()
        ))
        .hint("create the parent directory first, or choose another path")
        .into());
    }
    let tmp = tempfile::Builder::new()
        .prefix(".cargo-oci-new-")
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a directory in {}", parent.display()))?;
    for (path, text) in render(&name) {
        let p = tmp.path().join(path);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
    }
    let staged = tmp.keep();
    if let Err(e) = std::fs::rename(&staged, dir) {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(e).with_context(|| format!("cannot create {}", dir.display()));
    }
    // A temporary directory is 0700; a package directory is not.
    set_mode(dir, 0o755);
    Ok(Created {
        image: format!("localhost/{}", image_name(&name)),
        name,
        path: dir.to_path_buf(),
    })
}

fn set_mode(dir: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("demo").is_ok());
        assert!(check_name("my_svc-2").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("2fast").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name("a/b").is_err());
    }

    #[test]
    fn render_replaces_names() {
        let files = render("My_Svc");
        let toml = &files.iter().find(|(p, _)| *p == "Cargo.toml").unwrap().1;
        assert!(toml.contains("name = \"My_Svc\""), "{toml}");
        assert!(toml.contains("name = \"localhost/my_svc\""), "{toml}");
        assert!(!toml.contains(TEMPLATE_NAME), "{toml}");
        let doc: toml_edit::DocumentMut = toml.parse().unwrap();
        assert!(doc["package"]["metadata"]["oci"]["live"].is_table());
    }

    #[test]
    fn new_package_refuses_an_existing_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let err = new_package(tmp.path(), Some("demo")).unwrap_err();
        assert_eq!(crate::util::error::exit_code(&err), 2);
        let made = new_package(&tmp.path().join("svc"), None).unwrap();
        assert_eq!(made.name, "svc");
        assert!(made.path.join("src/main.rs").is_file());
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".cargo-oci"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
