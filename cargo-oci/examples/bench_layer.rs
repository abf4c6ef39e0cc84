//! Benchmark driver for `scripts/bench.sh`: writes one layer holding every file under a directory
//! through the library's layer writer (the code path of `cargo oci build`, without the cache),
//! and prints `tar_bytes blob_bytes seconds digest`.
//!
//! Usage: `bench_layer DIR STORE [gzip|zstd] [THREADS]`

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use cargo_oci::bench::{Codec, Compression, Content, Entry, LayerPlan, Store};

fn walk(root: &Path, dir: &Path, out: &mut Vec<Entry>) -> Result<()> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for p in names {
        let rel = p
            .strip_prefix(root)?
            .to_str()
            .context("non-UTF-8 path")?
            .to_string();
        let meta = std::fs::symlink_metadata(&p)?;
        let entry = |content| Entry {
            path: rel.clone(),
            content,
            mode: 0o555,
            uid: 0,
            gid: 0,
        };
        if meta.is_dir() {
            out.push(entry(Content::Dir));
            walk(root, &p, out)?;
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&p)?;
            out.push(entry(Content::Symlink(target.to_string_lossy().into())));
        } else {
            out.push(entry(Content::File(p.clone())));
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(store)) = (args.get(1), args.get(2)) else {
        anyhow::bail!("usage: bench_layer DIR STORE [gzip|zstd] [THREADS]");
    };
    let codec = match args.get(3).map(String::as_str) {
        None | Some("gzip") => Codec::Gzip,
        Some("zstd") => Codec::Zstd,
        Some(other) => anyhow::bail!("unknown codec {other}: gzip or zstd"),
    };
    let mut comp = Compression::new(codec);
    if let Some(t) = args.get(4) {
        comp.threads = t.parse().context("THREADS must be a number")?;
    }
    let mut entries = Vec::new();
    walk(Path::new(dir), Path::new(dir), &mut entries)?;
    let plan = LayerPlan {
        role: "payload".into(),
        entries,
    };
    let store = Store::open(Path::new(store))?;
    let start = Instant::now();
    let layer = cargo_oci::bench::write_layer(&store, &plan, 1, comp)?;
    println!(
        "{} {} {:.3} {}",
        layer.tar_size,
        layer.blob.size,
        start.elapsed().as_secs_f64(),
        layer.blob.digest
    );
    Ok(())
}
