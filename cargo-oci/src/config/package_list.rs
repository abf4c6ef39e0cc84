//! The package list (`cargo metadata --no-deps`) kept in the per-machine cache, so that a run
//! whose manifests did not change does not start cargo for it. The record is keyed by the
//! directory, the `--manifest-path` flag and the environment cargo reads, and holds with it the
//! witnesses of everything cargo read to produce it (see [`witnesses`]); it answers only while
//! every one of them is as it was.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use cargo_metadata::Metadata;

use super::fingerprint::{self, Question, Witnesses};

const KIND: &str = "package-list";

/// The package list for `manifest` (`--manifest-path`) asked in the current directory: the
/// recorded one while it holds, else `run`'s, recorded for the next run.
pub fn cached(
    manifest: Option<&Path>,
    run: impl FnOnce() -> anyhow::Result<Metadata>,
) -> anyhow::Result<Metadata> {
    let Ok(cwd) = std::env::current_dir() else {
        return run();
    };
    let flag = manifest.map_or_else(
        || OsStr::new("-").to_owned(),
        |m| {
            let mut f = OsStr::new("=").to_owned();
            f.push(m);
            f
        },
    );
    let question = Question::in_machine_cache(KIND, &[cwd.as_os_str(), &flag]);
    if let Some(meta) = question
        .as_ref()
        .and_then(Question::answer)
        .and_then(|text| serde_json::from_str(&text).ok())
    {
        return Ok(meta);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let before = question
        .as_ref()
        .and_then(|_| read_before(&cwd, manifest, &cargo));
    let meta = run()?;
    if let (Some(q), Some(before)) = (question, before) {
        if let (Some(after), Ok(text)) = (read_after(&meta), serde_json::to_string(&meta)) {
            q.record(before, after, text);
        }
    }
    Ok(meta)
}

/// What `cargo` (run as `cargo` in `cwd` with `--manifest-path manifest`) reads before it
/// knows the workspace: the toolchain it runs; every ancestor's `Cargo.toml` (a new one may be
/// the workspace root) and `.cargo/config.toml` chain, and `$CARGO_HOME`'s. `None` when that
/// cannot be told (then nothing is kept).
pub fn read_before(cwd: &Path, manifest: Option<&Path>, cargo: &OsStr) -> Option<Witnesses> {
    let mut w = Witnesses::default();
    fingerprint::toolchain(cargo, "cargo", cwd, &mut w)?;
    let start = manifest.and_then(|m| cwd.join(m).parent().map(Path::to_path_buf));
    for dir in cwd
        .ancestors()
        .chain(start.iter().flat_map(|s| s.ancestors()))
    {
        w.add(dir.join("Cargo.toml"));
        w.add(dir.join(".cargo/config.toml"));
        w.add(dir.join(".cargo/config"));
    }
    let cargo_home = match std::env::var_os("CARGO_HOME").filter(|h| !h.is_empty()) {
        Some(h) => cwd.join(h),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cargo"),
    };
    w.add(cargo_home.join("config.toml"));
    w.add(cargo_home.join("config"));
    Some(w)
}

/// What cargo read to answer `meta`: the workspace root's manifest and the directories its
/// member globs expand in; for every member its manifest, the files and directories cargo
/// discovers targets and a readme from, each target's source file and the manifest of each
/// path dependency. `None` when that cannot be told (then nothing is kept).
pub fn read_after(meta: &Metadata) -> Option<Witnesses> {
    let mut w = Witnesses::default();
    let root = meta.workspace_root.as_std_path();
    w.add(root.join("Cargo.toml"));
    member_globs(root, &mut w)?;
    for p in &meta.packages {
        w.add(p.manifest_path.as_std_path());
        let dir = p.manifest_path.parent()?.as_std_path();
        for f in [
            "build.rs",
            "src/main.rs",
            "src/lib.rs",
            "README.md",
            "README.txt",
            "README",
        ] {
            w.add(dir.join(f));
        }
        for d in ["src/bin", "examples", "tests", "benches"] {
            let d = dir.join(d);
            if w.add(&d).is_some() {
                for e in std::fs::read_dir(&d).ok()?.flatten() {
                    if e.file_type().ok()?.is_dir() {
                        w.add(e.path());
                    }
                }
            }
        }
        for t in &p.targets {
            w.add(t.src_path.as_std_path());
        }
        for d in &p.dependencies {
            if let Some(path) = &d.path {
                w.add(path.as_std_path().join("Cargo.toml"));
            }
        }
    }
    Some(w)
}

/// Witnesses the directories the globs of `members` and `default-members` of the workspace
/// root's manifest expand in: each directory whose entries a glob is matched against, each
/// literal part on the way (present or not), and each match with its manifest. `None` for a
/// pattern this does not follow (`[…]` classes).
fn member_globs(root: &Path, w: &mut Witnesses) -> Option<()> {
    let Ok(text) = std::fs::read_to_string(root.join("Cargo.toml")) else {
        return Some(());
    };
    let doc: toml_edit::DocumentMut = text.parse().ok()?;
    let Some(ws) = doc.get("workspace") else {
        return Some(());
    };
    let patterns = ["members", "default-members"]
        .into_iter()
        .filter_map(|k| ws.get(k)?.as_array())
        .flat_map(|a| a.iter().filter_map(|v| v.as_str()));
    for pattern in patterns {
        if !pattern.contains(['*', '?', '[']) {
            continue;
        }
        if pattern.contains('[') {
            return None;
        }
        let mut level = vec![root.to_path_buf()];
        for part in Path::new(pattern).components() {
            let part = part.as_os_str();
            let mut next = Vec::new();
            for dir in &level {
                match part.to_str().filter(|p| p.contains(['*', '?'])) {
                    Some(glob) => {
                        // Its entries are matched: its identity changes with them.
                        w.add(dir);
                        let Ok(entries) = std::fs::read_dir(dir) else {
                            continue;
                        };
                        next.extend(entries.flatten().filter_map(|e| {
                            let name = e.file_name();
                            let name = name.to_str()?;
                            super::package::glob_matches(glob, name).then(|| e.path())
                        }));
                    }
                    None => {
                        w.add(dir.join(part));
                        next.push(dir.join(part));
                    }
                }
            }
            level = next;
        }
        for m in level {
            w.add(&m);
            w.add(m.join("Cargo.toml"));
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn write(p: &Path, text: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn member(ws: &Path, dir: &str, name: &str) {
        write(
            &ws.join(dir).join("Cargo.toml"),
            &format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n"),
        );
        write(&ws.join(dir).join("src/main.rs"), "fn main() {}\n");
    }

    /// A workspace under `<tmp>/outer/ws` with members `crates/*` (`a`, `b`) and `tools/x`.
    fn workspace(tmp: &Path) -> PathBuf {
        let ws = tmp.join("outer/ws");
        write(
            &ws.join("Cargo.toml"),
            "[workspace]\nmembers = [\"crates/*\", \"tools/x\"]\nresolver = \"2\"\n",
        );
        member(&ws, "crates/a", "a");
        member(&ws, "crates/b", "b");
        member(&ws, "tools/x", "x");
        ws
    }

    /// What cargo reads in `ws`, before and after it knows the workspace.
    fn both(ws: &Path, meta: &Metadata) -> Option<Witnesses> {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut w = read_before(ws, None, &cargo)?;
        w.extend(read_after(meta)?);
        Some(w)
    }

    fn observe(ws: &Path) -> Witnesses {
        let meta = cargo_metadata::MetadataCommand::new()
            .no_deps()
            .current_dir(ws)
            .exec()
            .expect("cargo metadata");
        assert!(meta.packages.len() >= 3);
        let w = both(ws, &meta).expect("witnessed");
        assert!(w.hold());
        w
    }

    #[test]
    fn every_input_of_the_package_list_invalidates_it() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = workspace(tmp.path());
        type Change<'a> = (&'a str, Box<dyn Fn() + 'a>);
        let changes: Vec<Change> = vec![
            (
                "a new member under a glob",
                Box::new(|| member(&ws, "crates/c", "c")),
            ),
            (
                "a member's manifest",
                Box::new(|| {
                    let m = ws.join("crates/a/Cargo.toml");
                    let text = std::fs::read_to_string(&m).unwrap();
                    write(&m, &format!("{text}description = \"d\"\n"));
                }),
            ),
            (
                "the root manifest",
                Box::new(|| {
                    let m = ws.join("Cargo.toml");
                    let text = std::fs::read_to_string(&m).unwrap();
                    write(
                        &m,
                        &format!("{text}\n[workspace.package]\nversion = \"1.0.0\"\n"),
                    );
                }),
            ),
            (
                "an ancestor's Cargo.toml",
                Box::new(|| write(&tmp.path().join("outer/Cargo.toml"), "[workspace]\n")),
            ),
            (
                "a .cargo/config.toml",
                Box::new(|| {
                    write(
                        &ws.join(".cargo/config.toml"),
                        "[build]\ntarget-dir = \"t\"\n",
                    )
                }),
            ),
            (
                "an ancestor's .cargo/config",
                Box::new(|| write(&tmp.path().join(".cargo/config"), "")),
            ),
            (
                "a new binary",
                Box::new(|| write(&ws.join("tools/x/src/bin/more.rs"), "fn main() {}\n")),
            ),
            (
                "a directory under src/bin",
                Box::new(|| std::fs::create_dir_all(ws.join("tools/x/src/bin/two")).unwrap()),
            ),
            (
                "its main.rs",
                Box::new(|| write(&ws.join("tools/x/src/bin/two/main.rs"), "fn main() {}\n")),
            ),
            (
                "a library",
                Box::new(|| write(&ws.join("crates/b/src/lib.rs"), "")),
            ),
            (
                "a readme",
                Box::new(|| write(&ws.join("crates/a/README.md"), "r")),
            ),
        ];
        for (what, change) in &changes {
            let w = observe(&ws);
            std::thread::sleep(Duration::from_millis(20));
            change();
            assert!(!w.hold(), "{what} went unseen");
            // Leave the workspace as cargo can read it (and without the ancestor workspace).
            std::fs::remove_file(tmp.path().join("outer/Cargo.toml")).ok();
        }
    }

    #[test]
    fn a_new_directory_in_a_nested_glob_invalidates() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = tmp.path().join("ws");
        write(
            &ws.join("Cargo.toml"),
            "[workspace]\nmembers = [\"svc/*/app\"]\n",
        );
        member(&ws, "svc/one/app", "one");
        let meta = cargo_metadata::MetadataCommand::new()
            .no_deps()
            .current_dir(&ws)
            .exec()
            .unwrap();
        let w = both(&ws, &meta).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        std::fs::create_dir_all(ws.join("svc/two")).unwrap();
        assert!(!w.hold());
        let w = both(&ws, &meta).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        member(&ws, "svc/two/app", "two");
        assert!(!w.hold());
        // Character classes are not followed: nothing to record.
        write(
            &ws.join("Cargo.toml"),
            "[workspace]\nmembers = [\"svc/[ot]*/app\"]\n",
        );
        assert!(both(&ws, &meta).is_none());
    }

    #[test]
    fn the_record_is_keyed_by_directory_flag_and_target_dir() {
        let cache = Path::new("/cache");
        let key = |cwd: &str, flag: &str, vars: &[(&str, &str)]| {
            let env = fingerprint::key_env(vars.iter().map(|(k, v)| (k.into(), v.into())));
            Question::new(cache, KIND, &[OsStr::new(cwd), OsStr::new(flag)], &env)
                .path()
                .to_path_buf()
        };
        let base = key("/ws", "-", &[]);
        assert_ne!(base, key("/ws/a", "-", &[]));
        assert_ne!(base, key("/ws", "=a/Cargo.toml", &[]));
        assert_ne!(base, key("/ws", "-", &[("CARGO_TARGET_DIR", "/t")]));
        assert_ne!(base, key("/ws", "-", &[("CARGO_BUILD_TARGET_DIR", "/t")]));
        assert_eq!(base, key("/ws", "-", &[("LANG", "C")]));
    }

    #[test]
    fn a_recorded_list_reads_back_as_cargo_gave_it() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = workspace(tmp.path());
        let meta = cargo_metadata::MetadataCommand::new()
            .no_deps()
            .current_dir(&ws)
            .exec()
            .unwrap();
        let text = serde_json::to_string(&meta).unwrap();
        let back: Metadata = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), text);
        assert_eq!(back.workspace_default_packages().len(), 3);
    }
}
