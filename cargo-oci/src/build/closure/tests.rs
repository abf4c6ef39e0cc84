//! Tests of the closure resolver against real system binaries and made-up ELF files.

use std::path::{Path, PathBuf};

use goblin::elf::header;

use super::elf::*;
use super::paths::*;
use super::resolve::same_file;
use super::*;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "cargo-oci-closure-{tag}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn write(&self, rel: &str, contents: &str) -> PathBuf {
        let path = self.0.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `cc` with `args`; `None` (after a note) if there is no C compiler.
fn cc(args: &[&str]) -> Option<bool> {
    match Command::new("cc").args(args).output() {
        Ok(out) => {
            if !out.status.success() {
                eprintln!(
                    "cc {args:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Some(out.status.success())
        }
        Err(e) => {
            eprintln!("note: cannot run cc ({e}); skipping");
            None
        }
    }
}

/// Builds `lib<name>.so` (soname `lib<name>.so`) from `source` into `dir`.
fn build_lib(dir: &Path, name: &str, source: &str, extra: &[&str]) -> Option<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).unwrap();
    let out = dir.join(format!("lib{name}.so"));
    let soname = format!("-Wl,-soname,lib{name}.so");
    let mut args = vec![
        "-shared",
        "-fPIC",
        "-o",
        out.to_str().unwrap(),
        src.to_str().unwrap(),
        &soname,
    ];
    args.extend_from_slice(extra);
    cc(&args)?.then_some(out)
}

fn exe(host: &Path, image: &str) -> Executable {
    Executable {
        host_path: host.to_path_buf(),
        image_path: image.to_owned(),
    }
}

fn image_paths(closure: &Closure) -> BTreeSet<String> {
    closure
        .objects
        .iter()
        .map(|o| o.image_path.clone())
        .collect()
}

fn find<'a>(closure: &'a Closure, image_path: &str) -> &'a Object {
    closure
        .objects
        .iter()
        .find(|o| o.image_path == image_path)
        .unwrap_or_else(|| panic!("{image_path} not in closure: {closure:#?}"))
}

/// Resolved paths printed by `ldd` (`=> PATH` and the interpreter), without the vDSO.
fn ldd_paths(bin: &str) -> Option<BTreeSet<String>> {
    let out = Command::new("ldd").arg(bin).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let mut paths = BTreeSet::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, right)) => right.trim(),
            None => line,
        };
        let path = path.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            paths.insert(path.to_owned());
        }
    }
    Some(paths)
}

const MAIN_CALLING_FOO: &str = "int foo(void);\nint main(void) { return foo(); }\n";

#[test]
fn inspect_openssl() {
    let bin = Path::new("/usr/bin/openssl");
    if !bin.exists() {
        eprintln!("note: {} not installed; skipping", bin.display());
        return;
    }
    let info = inspect(bin).unwrap();
    assert!(info.class64);
    assert!(info.little_endian);
    assert_eq!(info.machine, header::EM_X86_64);
    assert_eq!(
        info.interpreter.as_deref(),
        Some("/lib64/ld-linux-x86-64.so.2")
    );
    for lib in ["libssl.so.3", "libcrypto.so.3", "libc.so.6"] {
        assert!(
            info.needed.iter().any(|n| n == lib),
            "{lib} not in {:?}",
            info.needed
        );
    }
    assert!(!info.is_static);
    assert!(info.rpath.is_empty() && info.runpath.is_empty());

    let libc = inspect(Path::new("/lib/x86_64-linux-gnu/libc.so.6")).unwrap();
    assert_eq!(libc.soname.as_deref(), Some("libc.so.6"));
    assert!(libc.needed.iter().any(|n| n == "ld-linux-x86-64.so.2"));
}

#[test]
fn openssl_closure_matches_ldd() {
    let bin = "/usr/bin/openssl";
    if !Path::new(bin).exists() {
        eprintln!("note: {bin} not installed; skipping");
        return;
    }
    let closure = resolve(&[exe(Path::new(bin), bin)], &ClosureOptions::default()).unwrap();
    let paths = image_paths(&closure);
    assert_eq!(paths.len(), closure.objects.len(), "duplicate image paths");
    let sorted: Vec<_> = closure
        .objects
        .iter()
        .map(|o| o.image_path.clone())
        .collect();
    assert_eq!(
        sorted,
        paths.iter().cloned().collect::<Vec<_>>(),
        "not sorted"
    );

    let interp = find(&closure, "/lib64/ld-linux-x86-64.so.2");
    assert_eq!(interp.found_via, FoundVia::Interpreter);
    assert_eq!(interp.needed_by, bin);
    for lib in ["libssl.so.3", "libcrypto.so.3", "libc.so.6"] {
        let obj = closure
            .objects
            .iter()
            .find(|o| o.name == lib)
            .unwrap_or_else(|| panic!("{lib} missing: {closure:#?}"));
        assert!(obj.host_path.is_file());
        assert_eq!(obj.needed_by, bin);
        assert_eq!(obj.relocated_from, None);
    }
    if let Some(expected) = ldd_paths(bin) {
        assert_eq!(paths, expected);
    }
}

#[test]
fn system_binaries_match_ldd() {
    let mut compared = 0;
    for bin in [
        "/bin/ls",
        "/usr/bin/openssl",
        "/usr/bin/curl",
        "/usr/bin/git",
        "/usr/bin/ssh",
        "/usr/bin/python3",
        "/usr/bin/gpg",
    ] {
        if !Path::new(bin).exists() {
            continue;
        }
        let Some(expected) = ldd_paths(bin) else {
            continue;
        };
        let closure = resolve(&[exe(Path::new(bin), bin)], &ClosureOptions::default())
            .unwrap_or_else(|e| panic!("{bin}: {e}"));
        assert_eq!(image_paths(&closure), expected, "{bin}");
        compared += 1;
    }
    eprintln!("compared {compared} binaries with ldd");
}

#[test]
fn several_executables_merge() {
    let bins: Vec<&str> = ["/bin/ls", "/usr/bin/openssl"]
        .into_iter()
        .filter(|b| Path::new(b).exists())
        .collect();
    if bins.len() < 2 {
        eprintln!("note: need /bin/ls and /usr/bin/openssl; skipping");
        return;
    }
    let exes: Vec<_> = bins.iter().map(|b| exe(Path::new(b), b)).collect();
    let closure = resolve(&exes, &ClosureOptions::default()).unwrap();
    let mut expected = BTreeSet::new();
    for bin in &bins {
        expected.extend(ldd_paths(bin).unwrap_or_default());
    }
    if !expected.is_empty() {
        assert_eq!(image_paths(&closure), expected);
    }
    assert_eq!(image_paths(&closure).len(), closure.objects.len());
    // libc is first needed by the first executable.
    let libc = find(&closure, "/lib/x86_64-linux-gnu/libc.so.6");
    assert_eq!(libc.needed_by, "/bin/ls");
}

#[test]
fn extra_libs_are_resolved_with_their_closure() {
    let bin = "/usr/bin/openssl";
    if !Path::new(bin).exists() || !Path::new("/lib/x86_64-linux-gnu/libnss_dns.so.2").exists() {
        eprintln!("note: need {bin} and libnss_dns.so.2; skipping");
        return;
    }
    let opts = ClosureOptions {
        extra_libs: vec![
            "libnss_dns.so.2".to_owned(),
            // Same file as libc.so.6 from the search: kept once.
            "/lib/x86_64-linux-gnu/libc.so.6".to_owned(),
        ],
        ..ClosureOptions::default()
    };
    let closure = resolve(&[exe(Path::new(bin), "/usr/bin/openssl")], &opts).unwrap();
    let nss = find(&closure, "/lib/x86_64-linux-gnu/libnss_dns.so.2");
    assert_eq!(nss.found_via, FoundVia::Extra);
    assert_eq!(nss.needed_by, "/usr/bin/openssl");
    let libc: Vec<_> = closure
        .objects
        .iter()
        .filter(|o| o.image_path.ends_with("/libc.so.6"))
        .collect();
    assert_eq!(libc.len(), 1, "{libc:#?}");
    assert_eq!(image_paths(&closure).len(), closure.objects.len());

    let missing = ClosureOptions {
        extra_libs: vec!["libdoesnotexist.so.9".to_owned()],
        ..ClosureOptions::default()
    };
    match resolve(&[exe(Path::new(bin), "/bin/openssl")], &missing) {
        Err(ClosureError::LibraryNotFound {
            name, needed_by, ..
        }) => {
            assert_eq!(name, "libdoesnotexist.so.9");
            assert_eq!(needed_by, "/bin/openssl");
        }
        other => panic!("expected LibraryNotFound, got {other:?}"),
    }
}

#[test]
fn static_binary_has_empty_closure() {
    let dir = TempDir::new("static");
    let src = dir.write("hello.c", "int main(void) { return 0; }\n");
    let out = dir.path().join("hello");
    match cc(&[
        "-static",
        "-o",
        out.to_str().unwrap(),
        src.to_str().unwrap(),
    ]) {
        None => return,
        Some(false) => {
            eprintln!("note: no static libc; skipping the static-binary test");
            return;
        }
        Some(true) => {}
    }
    let info = inspect(&out).unwrap();
    assert!(info.is_static, "{info:?}");
    assert!(info.interpreter.is_none() && info.needed.is_empty());
    let closure = resolve(&[exe(&out, "/bin/hello")], &ClosureOptions::default()).unwrap();
    assert!(closure.objects.is_empty(), "{closure:#?}");
}

#[test]
fn text_file_is_not_elf() {
    let dir = TempDir::new("text");
    let path = dir.write("script.sh", "#!/bin/sh\necho hello\n");
    let err = inspect(&path).unwrap_err();
    assert!(
        matches!(&err, ClosureError::NotElf { path: p } if p == &path),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("is not an ELF executable"),
        "{err}"
    );
    let err = resolve(&[exe(&path, "/bin/script")], &ClosureOptions::default()).unwrap_err();
    assert!(matches!(err, ClosureError::NotElf { .. }), "{err:?}");
    // Empty and 3-byte files too.
    let empty = dir.write("empty", "");
    assert!(matches!(inspect(&empty), Err(ClosureError::NotElf { .. })));
}

#[test]
fn unreadable_file_is_io_error() {
    let missing =
        std::env::temp_dir().join(format!("cargo-oci-closure-nope-{}", std::process::id()));
    let err = inspect(&missing).unwrap_err();
    assert!(
        matches!(&err, ClosureError::Io { path, .. } if path == &missing),
        "{err:?}"
    );
    assert!(err.to_string().contains(&missing.display().to_string()));
}

#[test]
fn missing_library_is_reported() {
    let dir = TempDir::new("missing");
    let Some(lib) = build_lib(dir.path(), "missing", "int foo(void) { return 0; }\n", &[]) else {
        return;
    };
    let main = dir.write("main.c", MAIN_CALLING_FOO);
    let app = dir.path().join("app");
    let libdir = format!("-L{}", dir.path().display());
    if cc(&[
        "-o",
        app.to_str().unwrap(),
        main.to_str().unwrap(),
        &libdir,
        "-lmissing",
    ]) != Some(true)
    {
        return;
    }
    std::fs::remove_file(&lib).unwrap();
    let err = resolve(&[exe(&app, "/usr/bin/app")], &ClosureOptions::default()).unwrap_err();
    let ClosureError::LibraryNotFound {
        name,
        needed_by,
        searched,
    } = &err
    else {
        panic!("expected LibraryNotFound, got {err:?}");
    };
    assert_eq!(name, "libmissing.so");
    assert_eq!(needed_by, "/usr/bin/app");
    for dir in [
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/lib",
        "/usr/lib",
    ] {
        let p = PathBuf::from(format!("{dir}/libmissing.so"));
        assert!(searched.contains(&p), "{p:?} not in {searched:?}");
    }
    // A multiarch loader never searches /lib64: a library there would not be found at run time.
    if Path::new("/usr/lib/x86_64-linux-gnu").is_dir() {
        assert!(
            !searched.iter().any(|p| p.starts_with("/lib64")),
            "{searched:?}"
        );
    }
    let msg = err.to_string();
    assert!(
        msg.contains("libmissing.so") && msg.contains("/usr/bin/app"),
        "{msg}"
    );
    assert!(
        msg.contains("/usr/lib/x86_64-linux-gnu/libmissing.so"),
        "{msg}"
    );
    assert!(msg.contains("install the package that provides it, or add the directory to RUNPATH"));
}

#[test]
fn runpath_origin_maps_to_image() {
    let dir = TempDir::new("runpath");
    let libdir = dir.path().join("app/lib");
    let Some(lib) = build_lib(&libdir, "foo", "int foo(void) { return 0; }\n", &[]) else {
        return;
    };
    let main = dir.write("main.c", MAIN_CALLING_FOO);
    std::fs::create_dir_all(dir.path().join("app/bin")).unwrap();
    let x = dir.path().join("app/bin/x");
    let l = format!("-L{}", libdir.display());
    let built = cc(&[
        "-o",
        x.to_str().unwrap(),
        main.to_str().unwrap(),
        &l,
        "-lfoo",
        "-Wl,-rpath,$ORIGIN/../lib",
        "-Wl,--enable-new-dtags",
    ]);
    if built != Some(true) {
        return;
    }
    let info = inspect(&x).unwrap();
    assert_eq!(info.runpath, ["$ORIGIN/../lib"]);
    assert!(info.rpath.is_empty());
    assert!(info.needed.iter().any(|n| n == "libfoo.so"));

    let closure = resolve(&[exe(&x, "/app/bin/x")], &ClosureOptions::default()).unwrap();
    let foo = find(&closure, "/app/lib/libfoo.so");
    assert_eq!(
        foo.found_via,
        FoundVia::Runpath("$ORIGIN/../lib".to_owned())
    );
    assert_eq!(foo.name, "libfoo.so");
    assert_eq!(foo.needed_by, "/app/bin/x");
    assert!(same_file(&foo.host_path, &lib), "{:?}", foo.host_path);
    assert!(closure
        .objects
        .iter()
        .any(|o| o.image_path == "/lib64/ld-linux-x86-64.so.2"));
    assert!(closure.objects.iter().any(|o| o.name == "libc.so.6"));
}

/// Non-ELF and wrong-machine files earlier in the search are skipped.
#[test]
fn unusable_candidates_are_skipped() {
    let dir = TempDir::new("skip");
    let libdir = dir.path().join("app/lib");
    let Some(lib) = build_lib(&libdir, "foo", "int foo(void) { return 0; }\n", &[]) else {
        return;
    };
    dir.write("app/text/libfoo.so", "INPUT(-lfoo)\n");
    let mut arm = std::fs::read(&lib).unwrap();
    arm[18..20].copy_from_slice(&header::EM_AARCH64.to_le_bytes());
    std::fs::create_dir_all(dir.path().join("app/arm")).unwrap();
    std::fs::write(dir.path().join("app/arm/libfoo.so"), arm).unwrap();

    let main = dir.write("main.c", MAIN_CALLING_FOO);
    std::fs::create_dir_all(dir.path().join("app/bin")).unwrap();
    let x = dir.path().join("app/bin/x");
    let l = format!("-L{}", libdir.display());
    let built = cc(&[
        "-o",
        x.to_str().unwrap(),
        main.to_str().unwrap(),
        &l,
        "-lfoo",
        "-Wl,-rpath,$ORIGIN/../text:${ORIGIN}/../arm:$ORIGIN/../lib",
        "-Wl,--enable-new-dtags",
    ]);
    if built != Some(true) {
        return;
    }
    let closure = resolve(&[exe(&x, "/app/bin/x")], &ClosureOptions::default()).unwrap();
    let foo = find(&closure, "/app/lib/libfoo.so");
    assert_eq!(
        foo.found_via,
        FoundVia::Runpath("$ORIGIN/../lib".to_owned())
    );
    assert!(!closure
        .objects
        .iter()
        .any(|o| o.image_path.contains("/text/") || o.image_path.contains("/arm/")));
}

/// DT_RPATH of the executable is used for its libraries' dependencies;
/// DT_RUNPATH is not.
#[test]
fn rpath_is_inherited_runpath_is_not() {
    let dir = TempDir::new("rpath");
    let libdir = dir.path().join("app/lib");
    if build_lib(&libdir, "bar", "int bar(void) { return 0; }\n", &[]).is_none() {
        return;
    }
    let l = format!("-L{}", libdir.display());
    if build_lib(
        &libdir,
        "foo",
        "int bar(void);\nint foo(void) { return bar(); }\n",
        &[&l, "-lbar"],
    )
    .is_none()
    {
        return;
    }
    let main = dir.write("main.c", MAIN_CALLING_FOO);
    std::fs::create_dir_all(dir.path().join("app/bin")).unwrap();
    let rpath_link = format!("-Wl,-rpath-link,{}", libdir.display());
    for (exe_name, dtags) in [
        ("old", "--disable-new-dtags"),
        ("new", "--enable-new-dtags"),
    ] {
        let x = dir.path().join("app/bin").join(exe_name);
        let dtags = format!("-Wl,{dtags}");
        let built = cc(&[
            "-o",
            x.to_str().unwrap(),
            main.to_str().unwrap(),
            &l,
            &rpath_link,
            "-lfoo",
            "-Wl,-rpath,$ORIGIN/../lib",
            &dtags,
        ]);
        if built != Some(true) {
            return;
        }
    }
    let old = dir.path().join("app/bin/old");
    assert_eq!(inspect(&old).unwrap().rpath, ["$ORIGIN/../lib"]);
    let closure = resolve(&[exe(&old, "/app/bin/old")], &ClosureOptions::default()).unwrap();
    let foo = find(&closure, "/app/lib/libfoo.so");
    assert_eq!(foo.found_via, FoundVia::Rpath("$ORIGIN/../lib".to_owned()));
    let bar = find(&closure, "/app/lib/libbar.so");
    assert_eq!(bar.found_via, FoundVia::Rpath("$ORIGIN/../lib".to_owned()));
    assert_eq!(bar.needed_by, "/app/lib/libfoo.so");

    let new = dir.path().join("app/bin/new");
    let err = resolve(&[exe(&new, "/app/bin/new")], &ClosureOptions::default()).unwrap_err();
    match err {
        ClosureError::LibraryNotFound {
            name, needed_by, ..
        } => {
            assert_eq!(name, "libbar.so");
            assert_eq!(needed_by, "/app/lib/libfoo.so");
        }
        other => panic!("expected LibraryNotFound for libbar.so, got {other:?}"),
    }
}

/// A sysroot: absolute symlinks stay inside it, its ld.so.cache (compat
/// format) is used, and a cache hit outside the default directories is
/// moved next to libc.
#[test]
fn sysroot_cache_and_relocation() {
    let real_libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
    let real_ld = Path::new("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2");
    if !real_libc.exists() || !real_ld.exists() {
        eprintln!("note: no x86-64 glibc; skipping");
        return;
    }
    let dir = TempDir::new("sysroot");
    let sysroot = dir.path().join("sysroot");
    let multiarch = sysroot.join("lib/x86_64-linux-gnu");
    std::fs::create_dir_all(&multiarch).unwrap();
    std::fs::copy(real_libc, multiarch.join("libc.so.6")).unwrap();
    std::fs::copy(real_ld, multiarch.join("ld-linux-x86-64.so.2")).unwrap();
    std::fs::create_dir_all(sysroot.join("lib64")).unwrap();
    std::os::unix::fs::symlink(
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        sysroot.join("lib64/ld-linux-x86-64.so.2"),
    )
    .unwrap();
    let odd = sysroot.join("opt/odd");
    if build_lib(&odd, "foo", "int foo(void) { return 0; }\n", &[]).is_none() {
        return;
    }
    let cache = crate::build::closure::ldcache::build_cache_for_tests(
        &[
            ("libfoo.so", "/opt/odd/libfoo.so"),
            ("libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6"),
        ],
        true,
    );
    std::fs::create_dir_all(sysroot.join("etc")).unwrap();
    std::fs::write(sysroot.join("etc/ld.so.cache"), cache).unwrap();

    let main = dir.write("main.c", MAIN_CALLING_FOO);
    let app = dir.path().join("app");
    let l = format!("-L{}", odd.display());
    if cc(&[
        "-o",
        app.to_str().unwrap(),
        main.to_str().unwrap(),
        &l,
        "-lfoo",
    ]) != Some(true)
    {
        return;
    }

    let closure = resolve(
        &[exe(&app, "/usr/local/bin/app")],
        &ClosureOptions::new(&sysroot),
    )
    .unwrap();
    assert_eq!(
        image_paths(&closure),
        BTreeSet::from([
            "/lib/x86_64-linux-gnu/libc.so.6".to_owned(),
            "/lib/x86_64-linux-gnu/libfoo.so".to_owned(),
            "/lib64/ld-linux-x86-64.so.2".to_owned(),
        ]),
        "{closure:#?}"
    );
    for obj in &closure.objects {
        assert!(
            obj.host_path.starts_with(&sysroot),
            "{obj:?} escapes the sysroot"
        );
        assert!(obj.host_path.is_file(), "{obj:?}");
    }
    let interp = find(&closure, "/lib64/ld-linux-x86-64.so.2");
    assert_eq!(interp.host_path, multiarch.join("ld-linux-x86-64.so.2"));
    let foo = find(&closure, "/lib/x86_64-linux-gnu/libfoo.so");
    assert_eq!(foo.found_via, FoundVia::LdCache);
    assert_eq!(foo.relocated_from.as_deref(), Some("/opt/odd/libfoo.so"));
    assert_eq!(foo.host_path, odd.join("libfoo.so"));
    let libc = find(&closure, "/lib/x86_64-linux-gnu/libc.so.6");
    assert_eq!(libc.found_via, FoundVia::LdCache);
    assert_eq!(libc.relocated_from, None);

    // Without the cache, libfoo.so is not in a default directory.
    let no_cache = ClosureOptions {
        ld_cache: None,
        ..ClosureOptions::new(&sysroot)
    };
    match resolve(&[exe(&app, "/usr/local/bin/app")], &no_cache) {
        Err(ClosureError::LibraryNotFound { name, searched, .. }) => {
            assert_eq!(name, "libfoo.so");
            assert!(
                searched.iter().all(|p| p.starts_with(&sysroot)),
                "{searched:?}"
            );
        }
        other => panic!("expected LibraryNotFound, got {other:?}"),
    }

    // A corrupt cache is an error naming it.
    std::fs::write(
        sysroot.join("etc/ld.so.cache"),
        b"glibc-ld.so.cache1.1\xff\xff",
    )
    .unwrap();
    let err = resolve(
        &[exe(&app, "/usr/local/bin/app")],
        &ClosureOptions::new(&sysroot),
    )
    .unwrap_err();
    assert!(matches!(err, ClosureError::LdCache { .. }), "{err:?}");
}

/// A relocated cache hit moves next to libc (here in `/usr/lib/<triplet>`),
/// and its `$ORIGIN` dependencies follow it.
#[test]
fn relocated_library_origin_follows_libc() {
    let real_libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
    let real_ld = Path::new("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2");
    if !real_libc.exists() || !real_ld.exists() {
        eprintln!("note: no x86-64 glibc; skipping");
        return;
    }
    let dir = TempDir::new("reloc");
    let sysroot = dir.path().join("sysroot");
    let usr_multiarch = sysroot.join("usr/lib/x86_64-linux-gnu");
    std::fs::create_dir_all(&usr_multiarch).unwrap();
    std::fs::create_dir_all(sysroot.join("lib64")).unwrap();
    std::fs::copy(real_libc, usr_multiarch.join("libc.so.6")).unwrap();
    std::fs::copy(real_ld, sysroot.join("lib64/ld-linux-x86-64.so.2")).unwrap();
    let odd = sysroot.join("opt/odd");
    let sub = odd.join("sub");
    if build_lib(&sub, "baz", "int baz(void) { return 7; }\n", &[]).is_none() {
        return;
    }
    let l = format!("-L{}", sub.display());
    let foo_src = "int baz(void);\nint foo(void) { return baz(); }\n";
    let foo_args = [
        &l,
        "-lbaz",
        "-Wl,-rpath,$ORIGIN/sub",
        "-Wl,--enable-new-dtags",
    ];
    if build_lib(&odd, "foo", foo_src, &foo_args).is_none() {
        return;
    }
    let cache = crate::build::closure::ldcache::build_cache_for_tests(
        &[("libfoo.so", "/opt/odd/libfoo.so")],
        false,
    );
    std::fs::create_dir_all(sysroot.join("etc")).unwrap();
    std::fs::write(sysroot.join("etc/ld.so.cache"), cache).unwrap();
    let main = dir.write("main.c", MAIN_CALLING_FOO);
    let app = dir.path().join("app");
    let l = format!("-L{}", odd.display());
    let link = format!("-Wl,-rpath-link,{}", sub.display());
    if cc(&[
        "-o",
        app.to_str().unwrap(),
        main.to_str().unwrap(),
        &l,
        &link,
        "-lfoo",
    ]) != Some(true)
    {
        return;
    }
    let closure = resolve(&[exe(&app, "/usr/bin/app")], &ClosureOptions::new(&sysroot)).unwrap();
    assert_eq!(
        image_paths(&closure),
        BTreeSet::from([
            "/lib64/ld-linux-x86-64.so.2".to_owned(),
            "/usr/lib/x86_64-linux-gnu/libc.so.6".to_owned(),
            "/usr/lib/x86_64-linux-gnu/libfoo.so".to_owned(),
            "/usr/lib/x86_64-linux-gnu/sub/libbaz.so".to_owned(),
        ]),
        "{closure:#?}"
    );
    let libc = find(&closure, "/usr/lib/x86_64-linux-gnu/libc.so.6");
    assert_eq!(
        libc.found_via,
        FoundVia::DefaultDir("/usr/lib/x86_64-linux-gnu".to_owned())
    );
    let baz = find(&closure, "/usr/lib/x86_64-linux-gnu/sub/libbaz.so");
    assert_eq!(baz.found_via, FoundVia::Runpath("$ORIGIN/sub".to_owned()));
    assert_eq!(baz.needed_by, "/usr/lib/x86_64-linux-gnu/libfoo.so");
    assert_eq!(baz.host_path, sub.join("libbaz.so"));
}

#[test]
fn relative_image_path_is_rejected() {
    let bin = Path::new("/bin/ls");
    if !bin.exists() {
        return;
    }
    let err = resolve(&[exe(bin, "bin/ls")], &ClosureOptions::default()).unwrap_err();
    assert!(
        matches!(err, ClosureError::RelativeImagePath { .. }),
        "{err:?}"
    );
}

/// Truncated and corrupted copies of a real binary give errors or
/// results, never panics.
#[test]
fn hostile_elf_does_not_panic() {
    let src = ["/bin/true", "/usr/bin/true", "/bin/ls"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists());
    let Some(src) = src else {
        return;
    };
    let bytes = std::fs::read(src).unwrap();
    let dir = TempDir::new("fuzz");
    let path = dir.path().join("bin");
    let mut cuts: Vec<usize> = (0..200).collect();
    cuts.extend((200..bytes.len()).step_by(bytes.len() / 50 + 1));
    for cut in cuts {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let _ = inspect(&path);
    }
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // Corrupt header and program-header bytes, and bytes anywhere.
    for round in 0..400 {
        let mut copy = bytes.clone();
        for _ in 0..(1 + round % 8) {
            let limit = if round % 2 == 0 {
                0x400.min(copy.len())
            } else {
                copy.len()
            };
            let at = (next() as usize) % limit;
            copy[at] = next() as u8;
        }
        std::fs::write(&path, &copy).unwrap();
        let _ = inspect(&path);
        if round % 20 == 0 {
            let _ = resolve(&[exe(&path, "/bin/x")], &ClosureOptions::default());
        }
    }
}

#[test]
fn dst_expansion() {
    let info = ElfInfo {
        class64: true,
        machine: header::EM_X86_64,
        little_endian: true,
        ..ElfInfo::default()
    };
    let origin = |s: &str| match expand_dst(s, &info) {
        Some(Expanded::Origin(rest)) => Some(format!("O:{rest}")),
        Some(Expanded::Absolute(dir)) => Some(dir),
        None => None,
    };
    assert_eq!(origin("$ORIGIN/../lib").as_deref(), Some("O:/../lib"));
    assert_eq!(origin("${ORIGIN}").as_deref(), Some("O:"));
    assert_eq!(origin("/opt/$LIB").as_deref(), Some("/opt/lib64"));
    assert_eq!(
        origin("/opt/${PLATFORM}/x").as_deref(),
        Some("/opt/x86_64/x")
    );
    assert_eq!(origin("/opt/$ORIGINAL").as_deref(), Some("/opt/$ORIGINAL"));
    assert_eq!(origin("/opt/$ORIGIN"), None);
    assert_eq!(origin("relative/dir"), None);
    assert_eq!(
        origin("/a/${unterminated").as_deref(),
        Some("/a/${unterminated")
    );
}

#[test]
fn image_path_normalisation() {
    assert_eq!(
        normalize_image_path("/app/bin/../lib/").as_deref(),
        Some("/app/lib")
    );
    assert_eq!(normalize_image_path("//a/./b").as_deref(), Some("/a/b"));
    assert_eq!(normalize_image_path("/../..").as_deref(), Some("/"));
    assert_eq!(normalize_image_path("a/b"), None);
    assert_eq!(join_image("", "libx.so"), "/libx.so");
    assert_eq!(image_dir("/app/bin/x"), "/app/bin");
}
