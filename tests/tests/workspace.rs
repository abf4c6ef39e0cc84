//! Workspaces end to end, on `tests/fixtures/workspace`: a root package (gateway) and two member
//! services (billing; multi, with two binaries shipped as two images and a third inside both).
//! Each member directory packages that member, and a workspace root what `cargo build` there
//! builds (its `default-members`, or every member of a virtual workspace); `--workspace` builds every image with one cargo
//! run and pushes them with the shared layers sent once; a CI-style run takes its profile,
//! features and registry from the metadata and the environment; bad selections exit 2; errors
//! about a value name the Cargo.toml it was written in.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cargo_oci_tests::registry::Registry;
use cargo_oci_tests::*;
use serde_json::Value;

/// A copy of the fixture workspace at `tmp`, with its own target directory.
fn workspace(tmp: &Path) -> PathBuf {
    let src = root().join("tests/fixtures/workspace");
    ok(Command::new("cp").arg("-r").arg(&src).arg(tmp.join("ws")));
    tmp.join("ws")
}

/// `cargo oci ARGS` in `dir` of the workspace `ws`, with cargo replaced by a wrapper that logs
/// each run to `ws/cargo.log`.
fn oci_in(ws: &Path, dir: &Path, args: &[&str]) -> Command {
    let wrapper = ws.join("cargo-wrapper");
    if !wrapper.is_file() {
        let real = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        write_script(
            &wrapper,
            &format!(
                "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec '{real}' \"$@\"\n",
                ws.join("cargo.log").display()
            ),
        );
    }
    let mut c = cargo_oci(dir, args);
    c.env("CARGO_TARGET_DIR", ws.join("target"))
        .env("CARGO", &wrapper)
        .env_remove("CARGO_OCI_REPOSITORY");
    c
}

/// The `cargo build` runs of the images (not the contract helper's) logged so far.
fn image_builds(ws: &Path) -> Vec<String> {
    std::fs::read_to_string(ws.join("cargo.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("build ") && l.contains("--message-format=json"))
        .map(str::to_string)
        .collect()
}

fn names(v: &[Value]) -> Vec<String> {
    v.iter()
        .map(|o| o["name"].as_str().unwrap().to_string())
        .collect()
}

fn fails_with_2(out: Output, wanted: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains("help:"), "no help line:\n{stderr}");
    for w in wanted {
        assert!(stderr.contains(w), "`{w}` missing from:\n{stderr}");
    }
    // No result on stdout: with --message-format json, only the error as one JSON object.
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !stdout.is_empty() {
        let j = result(&stdout);
        assert_eq!(
            j["reason"], "error",
            "a failure printed a result:\n{stdout}"
        );
        assert_eq!(j["exit_code"], 2, "{stdout}");
    }
    stderr
}

const JSON: &[&str] = &["--message-format", "json", "-q"];

fn args<'a>(a: &[&'a str]) -> Vec<&'a str> {
    a.iter().chain(JSON).copied().collect()
}

#[test]
fn each_member_directory_packages_that_member() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(tmp.path());
    let billing = ws.join("services/billing");

    let built = results(&ok(oci_in(&ws, &billing, &args(&["build"]))));
    assert_eq!(names(&built), ["localhost/fleet/billing"]);
    assert_eq!(built[0]["package"], "billing");
    // cargo built billing, not the root package.
    let runs = image_builds(&ws);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(runs[0].contains("/ws/services/billing#1.2.0"), "{runs:?}");
    assert!(!runs[0].contains("gateway"), "{runs:?}");

    let by_path = results(&ok(oci_in(
        &ws,
        &ws,
        &args(&[
            "build",
            "--no-build",
            "--manifest-path",
            "services/billing/Cargo.toml",
        ]),
    )));
    assert_eq!(names(&by_path), ["localhost/fleet/billing"]);
    assert_eq!(by_path[0]["digest"], built[0]["digest"]);

    let root = results(&ok(oci_in(&ws, &ws, &args(&["build"]))));
    assert_eq!(names(&root), ["localhost/fleet/gateway"]);
    let by_spec = results(&ok(oci_in(
        &ws,
        &ws.join("src"),
        &args(&["build", "--no-build", "-p", "billing@1.2.0"]),
    )));
    assert_eq!(names(&by_spec), ["localhost/fleet/billing"]);

    // The package with two binaries: two images, each with the extra binary beside it.
    let multi = ws.join("services/multi");
    let two = results(&ok(oci_in(&ws, &multi, &args(&["build"]))));
    assert_eq!(
        names(&two),
        ["localhost/fleet/server", "localhost/fleet/cli"]
    );
    assert_ne!(two[0]["digest"], two[1]["digest"]);
    let inspected = results(&ok(oci_in(
        &ws,
        &multi,
        &args(&["inspect", "--no-build", "--json"]),
    )));
    assert_eq!(inspected.len(), 2);
    for (image, bin, other) in [
        (&inspected[0], "server", "cli"),
        (&inspected[1], "cli", "server"),
    ] {
        let files: Vec<&str> = image["layers"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|l| l["files"].as_array().unwrap())
            .filter_map(|f| f["path"].as_str())
            .collect();
        assert!(files.contains(&format!("/bin/{bin}").as_str()), "{files:?}");
        assert!(files.contains(&"/bin/tool"), "{files:?}");
        assert!(
            !files.contains(&format!("/bin/{other}").as_str()),
            "{files:?}"
        );
    }

    // The root package's workspace with `default-members`: from the root, cargo builds those,
    // not the root package, and so does cargo oci.
    let manifest = ws.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let with_defaults = |defaults: &str| {
        text.replace(
            "[workspace]\n",
            &format!("[workspace]\ndefault-members = [{defaults}]\n"),
        )
    };
    std::fs::write(&manifest, with_defaults(r#""services/billing""#)).unwrap();
    assert_eq!(cargo_builds(&ws), ["billing"]);
    let defaults = results(&ok(oci_in(&ws, &ws, &args(&["build", "--no-build"]))));
    assert_eq!(names(&defaults), ["localhost/fleet/billing"]);

    // A virtual workspace: from a member's directory, that member.
    let start = text.find("[package]").unwrap();
    let end = text.find("[workspace]").unwrap();
    let text = format!("{}{}", &text[..start], &text[end..]);
    std::fs::write(&manifest, &text).unwrap();
    let virt = results(&ok(oci_in(&ws, &billing, &args(&["build", "--no-build"]))));
    assert_eq!(names(&virt), ["localhost/fleet/billing"]);
    // From its root, what `cargo build` there builds: every member, of which those that ask for
    // an image (`common` is a library).
    assert_eq!(cargo_builds(&ws), ["billing", "multi"]);
    let all = results(&ok(oci_in(&ws, &ws, &args(&["build", "--no-build"]))));
    assert_eq!(
        names(&all),
        [
            "localhost/fleet/billing",
            "localhost/fleet/server",
            "localhost/fleet/cli"
        ]
    );
    assert_eq!(all[0]["digest"], built[0]["digest"]);
    // `--bin NAME` there: the member that has that binary, as cargo finds it.
    let one = results(&ok(oci_in(
        &ws,
        &ws,
        &args(&["build", "--no-build", "--bin", "server"]),
    )));
    assert_eq!(names(&one), ["localhost/fleet/server"]);
    fails_with_2(
        run(oci_in(
            &ws,
            &ws,
            &args(&["build", "--no-build", "--bin", "nope"]),
        )),
        &["--bin nope", "`nope`", "billing", "multi"],
    );
    // With `default-members`, those: a library among them asks for no image.
    let with_defaults = |defaults: &str| {
        text.replace(
            "[workspace]\n",
            &format!("[workspace]\ndefault-members = [{defaults}]\n"),
        )
    };
    std::fs::write(&manifest, with_defaults(r#""services/multi", "common""#)).unwrap();
    assert_eq!(cargo_builds(&ws), ["multi"]);
    let some = results(&ok(oci_in(&ws, &ws, &args(&["build", "--no-build"]))));
    assert_eq!(
        names(&some),
        ["localhost/fleet/server", "localhost/fleet/cli"]
    );
    // Default members of which none asks for an image (two libraries): said, with the way out.
    let lib = ws.join("services/lib");
    std::fs::create_dir_all(lib.join("src")).unwrap();
    std::fs::write(
        lib.join("Cargo.toml"),
        "[package]\nname = \"lib\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    )
    .unwrap();
    std::fs::write(lib.join("src/lib.rs"), "").unwrap();
    std::fs::write(
        &manifest,
        with_defaults(r#""common", "services/lib""#).replace(
            r#"members = ["common", "#,
            r#"members = ["common", "services/lib", "#,
        ),
    )
    .unwrap();
    assert!(cargo_builds(&ws).is_empty());
    fails_with_2(
        run(oci_in(&ws, &ws, &args(&["build", "--no-build"]))),
        &["(common, lib)", "asks for an image", "-p NAME"],
    );
}

/// The packages whose binaries `cargo build` builds in `ws` with no package flags, by name,
/// sorted.
fn cargo_builds(ws: &Path) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = ok(Command::new(cargo)
        .args(["build", "--release", "--message-format=json", "-q"])
        .current_dir(ws)
        .env("CARGO_TARGET_DIR", ws.join("target")));
    // `path+file:///…/ws/services/billing#1.2.0`, or `…#name@1.0.0` when the directory's name
    // is not the package's.
    let name = |id: &str| {
        let (url, fragment) = id.split_once('#').unwrap_or((id, ""));
        match fragment.split_once('@') {
            Some((n, _)) => n.to_string(),
            None => url.rsplit('/').next().unwrap_or(url).to_string(),
        }
    };
    let mut built: Vec<String> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact")
        .filter(|v| {
            v["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
        })
        .filter_map(|v| v["package_id"].as_str().map(str::to_string))
        .filter(|id| id.starts_with("path+file://"))
        .map(|id| name(&id))
        .collect();
    built.sort();
    built.dedup();
    built
}

#[test]
fn workspace_builds_with_one_cargo_run_and_pushes_shared_layers_once() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(tmp.path());
    let prefix = format!("{}/fleet", reg.addr);
    let out =
        ok(oci_in(&ws, &ws, &args(&["push", "--workspace"])).env("CARGO_OCI_REPOSITORY", &prefix));
    let pushed = results(&out);
    let mut got = names(&pushed);
    got.sort();
    assert_eq!(
        got,
        ["billing", "cli", "gateway", "server"].map(|n| format!("{prefix}/{n}"))
    );

    // One cargo run built every binary of every selected package.
    let runs = image_builds(&ws);
    assert_eq!(runs.len(), 1, "{runs:?}");
    for id in [
        "/ws/services/billing#1.2.0",
        "/ws/services/multi#0.1.0",
        "/ws#gateway@0.3.0",
    ] {
        assert!(runs[0].contains(id), "{id} missing: {runs:?}");
    }
    for bin in ["server", "cli", "tool", "billing", "gateway"] {
        assert!(runs[0].contains(&format!("--bin {bin}")), "{runs:?}");
    }
    assert!(!runs[0].contains("common"), "{runs:?}");

    // The layers every image shares are uploaded once; the other images mount or skip them.
    let mut uploads: std::collections::BTreeMap<String, usize> = Default::default();
    let mut holders: std::collections::BTreeMap<String, usize> = Default::default();
    for p in &pushed {
        assert_eq!(p["profile"], "release");
        for b in p["blobs"]["each"].as_array().unwrap() {
            let d = b["digest"].as_str().unwrap().to_string();
            *holders.entry(d.clone()).or_default() += 1;
            if b["transfer"] == "uploaded" {
                *uploads.entry(d).or_default() += 1;
            }
        }
    }
    let shared: Vec<&String> = holders
        .iter()
        .filter(|(_, n)| **n == pushed.len())
        .map(|(d, _)| d)
        .collect();
    assert!(
        shared.len() >= 3,
        "the base and closure layers are shared: {holders:?}"
    );
    for d in shared {
        assert_eq!(
            uploads.get(d),
            Some(&1),
            "{d} uploaded {:?} times",
            uploads.get(d)
        );
    }
    // The registry holds the four repositories, each manifest reachable by its digest.
    let catalog = reg.catalog();
    for n in ["billing", "cli", "gateway", "server"] {
        assert!(catalog.contains(&format!("fleet/{n}")), "{catalog:?}");
    }
}

#[test]
fn ci_run_takes_profile_features_and_registry_from_metadata_and_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(tmp.path());
    let manifest = ws.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap().replace(
        "[workspace.metadata.oci]\n",
        "[workspace.metadata.oci]\nprofile = \"ci\"\n",
    );
    std::fs::write(&manifest, text).unwrap();
    let billing = ws.join("services/billing/Cargo.toml");
    let text = std::fs::read_to_string(&billing).unwrap().replace(
        "[package.metadata.oci]\n",
        "[package.metadata.oci]\nfeatures = [\"premium\"]\n",
    );
    std::fs::write(&billing, text).unwrap();

    let out = ok(oci_in(
        &ws,
        &ws.join("services/billing"),
        &["build", "--message-format", "json"],
    )
    .env("CARGO_OCI_REPOSITORY", "registry.example.com/team"));
    let built = results(&out);
    assert_eq!(names(&built), ["registry.example.com/team/billing"]);
    assert_eq!(built[0]["profile"], "ci");
    let runs = image_builds(&ws);
    assert!(
        runs[0].contains("--profile ci") && runs[0].contains("--features billing/premium"),
        "{runs:?}"
    );
    // The binary in the image is the `ci` build with the feature on.
    let said = ok(Command::new(ws.join("target/ci/billing")));
    assert!(said.contains("BILLING-PREMIUM-ENABLED"), "{said}");

    // The command line still wins over the metadata.
    let dev = results(&ok(oci_in(
        &ws,
        &ws.join("services/billing"),
        &args(&["build", "--dev"]),
    )));
    assert_eq!(dev[0]["profile"], "dev");
    assert_eq!(dev[0]["name"], "localhost/fleet/billing");
}

#[test]
fn bad_selections_exit_2_with_help_before_any_build() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(tmp.path());
    for (a, wanted) in [
        (
            vec!["build", "-p", "nope"],
            vec!["-p `nope`", "billing@1.2.0"],
        ),
        (vec!["build", "-p", "billing@9"], vec!["-p `billing@9`"]),
        (
            vec!["build", "--workspace", "--exclude", "nope"],
            vec!["--exclude `nope`"],
        ),
        (
            vec!["build", "--workspace", "--bin", "server"],
            vec!["--bin server"],
        ),
        (
            vec!["build", "-p", "multi", "-o", "img"],
            vec!["-o writes one image"],
        ),
    ] {
        fails_with_2(run(oci_in(&ws, &ws, &a)), &wanted);
    }
    // Options the command line parser refuses: exit 2 too, naming what is missing.
    let out = run(oci_in(&ws, &ws, &["build", "--exclude", "billing"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--workspace"));
    // One cargo run has one profile: members asking for different ones are refused.
    let multi = ws.join("services/multi/Cargo.toml");
    let text = std::fs::read_to_string(&multi).unwrap();
    std::fs::write(
        &multi,
        text.replace(
            "[package.metadata.oci]\n",
            "[package.metadata.oci]\nprofile = \"dev\"\n",
        ),
    )
    .unwrap();
    fails_with_2(
        run(oci_in(&ws, &ws, &["build", "--workspace"])),
        &["profile `dev`", "multi", "one cargo build has one profile"],
    );
    std::fs::write(&multi, text).unwrap();
    // A placeholder nobody knows, written in the workspace's table: the error names that table
    // and file, not the member's.
    let manifest = ws.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("localhost/fleet/{package}", "localhost/fleet/{service}");
    std::fs::write(&manifest, text).unwrap();
    let e = fails_with_2(
        run(oci_in(&ws, &ws.join("services/billing"), &["build"])),
        &["`workspace.metadata.oci.name`", "{service}"],
    );
    assert!(
        e.contains(&format!("{}:", manifest.display())),
        "the workspace manifest is not named:\n{e}"
    );
    assert!(!e.contains("services/billing/Cargo.toml"), "{e}");
    assert!(
        image_builds(&ws).is_empty(),
        "a bad selection ran cargo build"
    );
    assert!(!ws.join("target/oci/localhost+fleet+billing").exists());
}

/// Errors about a value name the Cargo.toml and table it was written in, also when they are found
/// after the metadata is read (planning the layers, finding the runtime inputs): the workspace's
/// for a value from `[workspace.metadata.oci]`, the member's for one from its own table; as text
/// and as JSON.
#[test]
fn errors_name_the_manifest_the_value_was_written_in() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(tmp.path());
    let billing = ws.join("services/billing");
    ok(oci_in(&ws, &billing, &args(&["build"])));
    let ws_manifest = ws.join("Cargo.toml");
    let own_manifest = billing.join("Cargo.toml");
    let ws_text = std::fs::read_to_string(&ws_manifest).unwrap();
    let own_text = std::fs::read_to_string(&own_manifest).unwrap();
    // A directory of the package with a link out of it, for `files`.
    std::fs::create_dir_all(billing.join("static")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", billing.join("static/out")).unwrap();

    // (the value, the key the error names, what it says)
    let cases = [
        (
            r#"perms = [{ path = "/nowhere", mode = "0644" }]"#,
            "perms[0]",
            "matches nothing in the image",
        ),
        (
            r#"files = [{ src = "static", dest = "/srv" }]"#,
            "files[0]",
            "outside the copied directory",
        ),
        (
            r#"runtime-inputs = ["no-such-program-for-cargo-oci"]"#,
            "runtime-inputs",
            "is not a file or a program on PATH",
        ),
        (r#"bin = "nope""#, "bin", "has no binary named `nope`"),
    ];
    for (value, key, says) in cases {
        for in_workspace in [true, false] {
            let (manifest, table, other) = if in_workspace {
                std::fs::write(
                    &ws_manifest,
                    ws_text.replace(
                        "[workspace.metadata.oci]\n",
                        &format!("[workspace.metadata.oci]\n{value}\n"),
                    ),
                )
                .unwrap();
                std::fs::write(&own_manifest, &own_text).unwrap();
                (&ws_manifest, "workspace.metadata.oci", &own_manifest)
            } else {
                std::fs::write(&ws_manifest, &ws_text).unwrap();
                std::fs::write(
                    &own_manifest,
                    own_text.replace(
                        "[package.metadata.oci]\n",
                        &format!("[package.metadata.oci]\n{value}\n"),
                    ),
                )
                .unwrap();
                (&own_manifest, "package.metadata.oci", &ws_manifest)
            };
            let place = format!("{}: `{table}.{key}`: ", manifest.display());
            // Text.
            let e = fails_with_2(
                run(oci_in(&ws, &billing, &["build", "--no-build"])),
                &[&place, says],
            );
            assert!(!e.contains(&format!("{}:", other.display())), "{e}");
            // JSON: the message, as jq and any JSON reader sees it.
            let out = run(oci_in(&ws, &billing, &args(&["build", "--no-build"])));
            fails_with_2(out.clone(), &[]);
            let error = result(&String::from_utf8_lossy(&out.stdout));
            let message = error["message"].as_str().unwrap();
            assert!(
                message.starts_with(&place) && message.contains(says),
                "{place} … {says}: {error}"
            );
            assert!(error["help"].as_str().is_some_and(|h| !h.is_empty()));
        }
    }
}
