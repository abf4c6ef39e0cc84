//! What cargo and rustc read before they answer, kept as witnesses that a few `stat` calls can
//! check again: files and directories, present (path, size, inode, mtime and ctime in
//! nanoseconds) or absent, and the toolchain a program name runs (`$CARGO` or `$RUSTC`, the first
//! match on `PATH`, and for the rustup proxy what rustup picks in a directory). An answer is
//! kept in the per-machine cache with its witnesses, under the key of the environment it was
//! asked in, and given again only while every witness is as it was; anything in doubt asks the
//! tool again.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::util::sealed;

/// How long a witness must have been left alone before an answer is recorded under it: files
/// changed within this time of the question may have changed while the tool read them, within
/// one tick of a coarse file system clock.
const SETTLE: Duration = Duration::from_secs(2);

/// One file's identity: a change of content, a replacement or a rename changes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    len: u64,
    ino: u64,
    dev: u64,
    mode: u32,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    fn changed(&self) -> SystemTime {
        let (s, ns) = self.ctime.max(self.mtime);
        let (Ok(s), Ok(ns)) = (u64::try_from(s), u32::try_from(ns)) else {
            return SystemTime::now();
        };
        SystemTime::UNIX_EPOCH + Duration::new(s, ns)
    }
}

/// The identity of what `path` names (through symbolic links), or `None` when nothing is there.
pub fn identity(path: &Path) -> Option<Identity> {
    let m = std::fs::metadata(path).ok()?;
    Some(Identity {
        len: m.len(),
        ino: m.ino(),
        dev: m.dev(),
        mode: m.mode(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

/// Paths whose identity (or absence) an answer depends on, as they were when observed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Witnesses(BTreeMap<PathBuf, Option<Identity>>);

impl Witnesses {
    /// Observes `path` now (once: a path already observed keeps its first observation).
    pub fn add(&mut self, path: impl Into<PathBuf>) -> Option<&Identity> {
        let path = path.into();
        self.0
            .entry(path)
            .or_insert_with_key(|p| identity(p))
            .as_ref()
    }

    /// Whether every witness is still as observed.
    pub fn hold(&self) -> bool {
        self.0.iter().all(|(p, id)| identity(p) == *id)
    }

    /// Whether every present file was last changed before `t`.
    fn present_settled(&self, t: SystemTime) -> bool {
        self.0.values().flatten().all(|id| id.changed() < t)
    }

    /// Whether the directory of every absent file was last changed before `t` (a file removed
    /// since would have changed it).
    fn absent_settled(&self, t: SystemTime) -> bool {
        self.0.iter().filter(|(_, id)| id.is_none()).all(|(p, _)| {
            p.ancestors()
                .skip(1)
                .find_map(identity)
                .is_some_and(|d| d.changed() < t)
        })
    }

    /// Adds the witnesses of `other`.
    pub fn extend(&mut self, other: Witnesses) {
        for (p, id) in other.0 {
            self.0.entry(p).or_insert(id);
        }
    }

    /// Whether no path is witnessed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The environment variables cargo, rustup and rustc read that are named in a key: every
/// `CARGO*` and `RUSTUP_*` variable, and these.
const KEY_VARS: &[&str] = &[
    "RUSTC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTFLAGS",
    "HOME",
    "PATH",
    "LD_LIBRARY_PATH",
];

/// The variables of `vars` a key names, sorted.
pub fn key_env(vars: impl Iterator<Item = (OsString, OsString)>) -> Vec<(OsString, OsString)> {
    let mut out: Vec<(OsString, OsString)> = vars
        .filter(|(k, _)| {
            let k = k.to_string_lossy();
            k.starts_with("CARGO") || k.starts_with("RUSTUP_") || KEY_VARS.contains(&k.as_ref())
        })
        .collect();
    out.sort();
    out
}

/// A question to a tool whose answer is kept in the per-machine cache: the record's place
/// (named by a digest of the question and the environment) and the time it was asked.
#[derive(Debug)]
pub struct Question {
    path: PathBuf,
    asked: SystemTime,
}

#[derive(Serialize, Deserialize)]
struct Record {
    witnesses: Witnesses,
    answer: String,
}

impl Question {
    /// The question `kind` with these `parts` (the directory, the flags) in the environment
    /// `env` ([`key_env`]), kept under `cache` (the per-machine cache directory).
    pub fn new(cache: &Path, kind: &str, parts: &[&OsStr], env: &[(OsString, OsString)]) -> Self {
        let mut h = Sha256::new();
        sealed::field(&mut h, kind.as_bytes());
        for p in parts {
            sealed::field(&mut h, p.as_encoded_bytes());
        }
        for (k, v) in env {
            sealed::field(&mut h, k.as_encoded_bytes());
            sealed::field(&mut h, v.as_encoded_bytes());
        }
        Question {
            path: cache.join(kind).join(hex::encode(&h.finalize()[..16])),
            asked: SystemTime::now(),
        }
    }

    /// Where the answer is kept.
    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// In the per-machine cache, when there is one.
    pub fn in_machine_cache(kind: &str, parts: &[&OsStr]) -> Option<Self> {
        let cache = crate::util::fs::cache_dir().ok()?;
        Some(Self::new(
            &cache,
            kind,
            parts,
            &key_env(std::env::vars_os()),
        ))
    }

    /// The recorded answer, when every witness still holds.
    pub fn answer(&self) -> Option<String> {
        let record: Record = sealed::read(&self.path)?;
        record.witnesses.hold().then_some(record.answer)
    }

    /// Records `answer` under the witnesses observed `before` the tool ran (still as they were)
    /// and those observed `after` it, unless one of them may have changed while the tool read
    /// it: a file changed shortly before the question, or the directory of one observed absent
    /// afterwards. Best effort.
    pub fn record(&self, before: Witnesses, after: Witnesses, answer: String) {
        let Some(t) = self.asked.checked_sub(SETTLE) else {
            return;
        };
        if !(before.hold()
            && before.present_settled(t)
            && after.present_settled(t)
            && after.absent_settled(t))
        {
            return;
        }
        let mut witnesses = before;
        witnesses.extend(after);
        if witnesses.is_empty() {
            return;
        }
        sealed::write(&self.path, &Record { witnesses, answer });
    }
}

/// The file `program` runs: a path as it is, else the first `program` on `PATH` (every place
/// looked at before it is witnessed absent: a new one there would be run instead).
pub fn which(program: &OsStr, w: &mut Witnesses) -> Option<PathBuf> {
    let p = Path::new(program);
    if p.components().count() > 1 {
        // Relative to which directory depends on the caller: not followed.
        return (p.is_absolute() && w.add(p).is_some()).then(|| p.to_path_buf());
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH")?) {
        if !dir.is_absolute() {
            return None;
        }
        let candidate = dir.join(p);
        if w.add(&candidate)
            .is_some_and(|id| id.mode & 0o170000 == 0o100000 && id.mode & 0o111 != 0)
        {
            return Some(candidate);
        }
    }
    None
}

/// Witnesses the toolchain that `program` (the name or path the tool is run by) runs as `tool`
/// (`cargo`, `rustc`) in `dir`: the file itself, and for the rustup proxy everything rustup's
/// choice depends on (see [`rustup_choice`]). `None` when that cannot be told from identities
/// (a script, which may run anything).
pub fn toolchain(program: &OsStr, tool: &str, dir: &Path, w: &mut Witnesses) -> Option<()> {
    let file = which(program, w)?;
    let real = file.canonicalize().ok()?;
    let proxy = real.file_name() == Some(OsStr::new("rustup"))
        || real.parent().is_some_and(|d| {
            let a = identity(&d.join("rustup"));
            a.is_some() && a == identity(&real)
        });
    if proxy {
        let home = rustup_home()?;
        return rustup_choice(&home, tool, dir, w);
    }
    is_elf(&real).then_some(())
}

/// `$RUSTUP_HOME`, else `~/.rustup`.
fn rustup_home() -> Option<PathBuf> {
    match std::env::var_os("RUSTUP_HOME").filter(|v| !v.is_empty()) {
        Some(h) => Some(PathBuf::from(h)),
        None => Some(PathBuf::from(std::env::var_os("HOME")?).join(".rustup")),
    }
}

/// Witnesses what decides which toolchain's `tool` the rustup proxy runs in `dir` (besides
/// `RUSTUP_TOOLCHAIN`, which is in the key): rustup's settings (default and directory
/// overrides), every `rust-toolchain` and `rust-toolchain.toml` of `dir` and its ancestors, the
/// installed toolchains and each one's `bin/<tool>`. A toolchain file naming a toolchain by path
/// is not followed: no witnesses.
pub fn rustup_choice(home: &Path, tool: &str, dir: &Path, w: &mut Witnesses) -> Option<()> {
    let dir = std::path::absolute(dir).ok()?;
    w.add(home.join("settings.toml"));
    for d in dir.ancestors() {
        for name in ["rust-toolchain", "rust-toolchain.toml"] {
            let f = d.join(name);
            if w.add(&f).is_some() {
                let text = std::fs::read_to_string(&f).ok()?;
                if text.contains("path") {
                    return None;
                }
            }
        }
    }
    let toolchains = home.join("toolchains");
    w.add(&toolchains)?;
    for entry in std::fs::read_dir(&toolchains).ok()? {
        w.add(entry.ok()?.path().join("bin").join(tool));
    }
    Some(())
}

fn is_elf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path, text: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn witnesses_see_a_change_a_new_file_and_a_removal() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        touch(&a, "1");
        let mut w = Witnesses::default();
        w.add(&a);
        w.add(&b);
        assert!(w.hold());
        // Same size, new content: mtime and ctime move.
        std::thread::sleep(Duration::from_millis(20));
        touch(&a, "2");
        assert!(!w.hold());
        let mut w = Witnesses::default();
        w.add(&a);
        w.add(&b);
        touch(&b, "");
        assert!(!w.hold());
        let mut w = Witnesses::default();
        w.add(&a);
        std::fs::remove_file(&a).unwrap();
        assert!(!w.hold());
    }

    #[test]
    fn only_settled_witnesses_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let a = dir.path().join("a");
        touch(&a, "x");
        let mut w = Witnesses::default();
        w.add(&a);
        w.add(dir.path().join("absent"));
        let env = key_env(std::iter::empty());
        // Asked right after the change: not recorded.
        let q = Question::new(&cache, "t", &[OsStr::new("q")], &env);
        q.record(w.clone(), Witnesses::default(), "answer".into());
        assert_eq!(q.answer(), None);
        // Asked well after it: recorded, and answered while the witnesses hold.
        let mut q = Question::new(&cache, "t", &[OsStr::new("q")], &env);
        q.asked = SystemTime::now() + 2 * SETTLE;
        q.record(w.clone(), Witnesses::default(), "answer".into());
        assert_eq!(q.answer().as_deref(), Some("answer"));
        // A file observed absent after the tool ran, in a directory changed since the
        // question: it may have been there when the tool looked.
        let mut later = Witnesses::default();
        later.add(dir.path().join("gone"));
        let mut q2 = Question::new(&cache, "t", &[OsStr::new("q2")], &env);
        q2.asked = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        q2.record(Witnesses::default(), later.clone(), "answer".into());
        assert_eq!(q2.answer(), None);
        q2.asked = SystemTime::now() + 2 * SETTLE;
        q2.record(Witnesses::default(), later, "answer".into());
        assert_eq!(q2.answer().as_deref(), Some("answer"));
        let other = Question::new(&cache, "t", &[OsStr::new("other")], &env);
        assert_eq!(other.answer(), None);
        std::thread::sleep(Duration::from_millis(20));
        touch(&a, "y");
        assert_eq!(q.answer(), None);
    }

    #[test]
    fn the_key_names_cargo_rustup_and_rustc_variables_only() {
        let env = |pairs: &[(&str, &str)]| {
            key_env(
                pairs
                    .iter()
                    .map(|(k, v)| (OsString::from(k), OsString::from(v))),
            )
        };
        let cache = Path::new("/cache");
        let key = |e: &[(OsString, OsString)]| Question::new(cache, "k", &[], e).path;
        let base = env(&[("TERM", "xterm"), ("CARGO_HOME", "/h")]);
        assert_eq!(base.len(), 1);
        assert_eq!(
            key(&base),
            key(&env(&[("CARGO_HOME", "/h"), ("TERM", "dumb")]))
        );
        for changed in [
            ("CARGO_TARGET_DIR", "/t"),
            ("RUSTUP_TOOLCHAIN", "nightly"),
            ("RUSTC", "/x/rustc"),
            ("RUSTC_WRAPPER", "sccache"),
            ("RUSTUP_HOME", "/r"),
            ("PATH", "/bin"),
        ] {
            assert_ne!(
                key(&base),
                key(&env(&[("CARGO_HOME", "/h"), changed])),
                "{changed:?}"
            );
        }
    }

    /// A rustup installation: the proxy (`bin/rustc` → `bin/rustup`), its home with settings
    /// and two toolchains, and a project directory under `work`.
    fn rustup_tree(root: &Path) -> (PathBuf, PathBuf) {
        let home = root.join("rustup");
        touch(
            &home.join("settings.toml"),
            "default_toolchain = \"stable\"\n",
        );
        for t in ["stable", "nightly"] {
            touch(&home.join("toolchains").join(t).join("bin/rustc"), t);
        }
        let project = root.join("work/project");
        std::fs::create_dir_all(&project).unwrap();
        (home, project)
    }

    #[test]
    fn rustups_choice_changes_with_settings_toolchain_files_and_toolchains() {
        let dir = tempfile::tempdir().unwrap();
        let (home, project) = rustup_tree(dir.path());
        let observe = || {
            let mut w = Witnesses::default();
            rustup_choice(&home, "rustc", &project, &mut w).expect("witnessed");
            w
        };
        let changes: Vec<Box<dyn Fn()>> = vec![
            Box::new(|| {
                touch(
                    &home.join("settings.toml"),
                    "default_toolchain = \"beta!\"\n",
                )
            }),
            Box::new(|| {
                touch(
                    &project.join("rust-toolchain.toml"),
                    "[toolchain]\nchannel = \"nightly\"\n",
                )
            }),
            Box::new(|| touch(&dir.path().join("work/rust-toolchain"), "nightly\n")),
            Box::new(|| touch(&home.join("toolchains/beta/bin/rustc"), "beta")),
            Box::new(|| touch(&home.join("toolchains/stable/bin/rustc"), "stable 2")),
        ];
        for (i, change) in changes.iter().enumerate() {
            let w = observe();
            assert!(w.hold());
            std::thread::sleep(Duration::from_millis(20));
            change();
            assert!(!w.hold(), "change {i} went unseen");
        }
        // A toolchain named by its path is not followed.
        touch(
            &project.join("rust-toolchain.toml"),
            "[toolchain]\npath = \"/opt/rust\"\n",
        );
        assert_eq!(
            rustup_choice(&home, "rustc", &project, &mut Witnesses::default()),
            None
        );
    }

    #[test]
    fn the_proxy_is_told_from_a_toolchain_and_a_script_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let elf = std::env::current_exe().unwrap();
        std::fs::copy(&elf, bin.join("rustc")).unwrap();
        let mut w = Witnesses::default();
        assert_eq!(
            toolchain(bin.join("rustc").as_os_str(), "rustc", dir.path(), &mut w),
            Some(())
        );
        assert!(w.0.contains_key(&bin.join("rustc")));
        touch(&bin.join("script"), "#!/bin/sh\nexec rustc \"$@\"\n");
        assert_eq!(
            toolchain(bin.join("script").as_os_str(), "rustc", dir.path(), &mut w),
            None
        );
    }
}
