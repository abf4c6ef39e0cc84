//! The crate list in the form scanners read from a Rust binary: cargo-auditable's `.dep-v0`
//! section (zlib-compressed JSON, `{"packages":[{name, version, source, kind, dependencies,
//! root}]}`), added to a copy of the binary as a non-allocated section, which the loader never
//! maps: the program runs exactly as before. A binary that already has one (built with
//! `cargo auditable`) is used as it is.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::crates::{Crate, Source};
use crate::util::fs::write_atomic;

const SECTION: &str = ".dep-v0";

/// The binary to put in the image: `binary`, or a copy of it in `dir` carrying the crate list.
pub fn embed(binary: &Path, crates: &[Crate], dir: &Path) -> Result<PathBuf> {
    let elf = std::fs::read(binary).with_context(|| format!("cannot read {}", binary.display()))?;
    if crates.is_empty() || has_section(&elf)? {
        return Ok(binary.to_path_buf());
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&serde_json::to_vec(&list(crates))?)?;
    let payload = z.finish()?;
    let out = add_section(&elf, &payload)
        .with_context(|| format!("cannot add the crate list to {}", binary.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = binary.file_name().context("the binary has no file name")?;
    let path = dir.join(name);
    // An unchanged copy is left as it is: the layer cache knows it by its file's identity.
    if std::fs::read(&path).is_ok_and(|old| old == out) {
        return Ok(path);
    }
    write_atomic(&path, |w| Ok(w.write_all(&out)?))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// cargo-auditable's JSON: every crate, its kind, its dependencies by index, the root marked.
fn list(crates: &[Crate]) -> serde_json::Value {
    let packages: Vec<serde_json::Value> = crates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let source = match &c.source {
                Source::Registry(r) if r.contains("crates.io-index") => "crates.io",
                Source::Registry(_) => "registry",
                Source::Git { .. } => "git",
                Source::Path => "local",
            };
            let mut p = json!({ "name": c.name, "version": c.version, "source": source });
            if c.build_time {
                p["kind"] = json!("build");
            }
            if !c.deps.is_empty() {
                p["dependencies"] = json!(c.deps);
            }
            if i == 0 {
                p["root"] = json!(true);
            }
            p
        })
        .collect();
    json!({ "packages": packages })
}

fn u16_at(b: &[u8], at: usize) -> Result<u16> {
    Ok(u16::from_le_bytes(
        b.get(at..at + 2).context("truncated ELF")?.try_into()?,
    ))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    Ok(u32::from_le_bytes(
        b.get(at..at + 4).context("truncated ELF")?.try_into()?,
    ))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64> {
    Ok(u64::from_le_bytes(
        b.get(at..at + 8).context("truncated ELF")?.try_into()?,
    ))
}

/// The section header table: (offset, count, entry size, index of the name table).
fn headers(elf: &[u8]) -> Result<(usize, usize, usize, usize)> {
    if elf.get(0..4) != Some(b"\x7fELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        bail!("only 64-bit little-endian ELF files are supported");
    }
    let shoff = usize::try_from(u64_at(elf, 0x28)?)?;
    let entsize = usize::from(u16_at(elf, 0x3A)?);
    let count = usize::from(u16_at(elf, 0x3C)?);
    let strndx = usize::from(u16_at(elf, 0x3E)?);
    if shoff == 0 || count == 0 || entsize < 64 || strndx == 0 || strndx >= count.min(0xff00) {
        bail!("the ELF file has no usable section header table");
    }
    if shoff + count * entsize > elf.len() {
        bail!("the ELF file's section headers lie outside it");
    }
    Ok((shoff, count, entsize, strndx))
}

/// The name table's (offset, size).
fn strtab(elf: &[u8], shoff: usize, entsize: usize, strndx: usize) -> Result<(usize, usize)> {
    let h = shoff + strndx * entsize;
    let off = usize::try_from(u64_at(elf, h + 0x18)?)?;
    let size = usize::try_from(u64_at(elf, h + 0x20)?)?;
    if off + size > elf.len() {
        bail!("the ELF file's section names lie outside it");
    }
    Ok((off, size))
}

fn has_section(elf: &[u8]) -> Result<bool> {
    let Ok((shoff, count, entsize, strndx)) = headers(elf) else {
        return Ok(false);
    };
    let (soff, ssize) = strtab(elf, shoff, entsize, strndx)?;
    let names = &elf[soff..soff + ssize];
    for i in 0..count {
        let n = u32_at(elf, shoff + i * entsize)? as usize;
        let name = names.get(n..).unwrap_or_default();
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        if &name[..end] == SECTION.as_bytes() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `elf` with one more section: its bytes, a longer copy of the name table and a longer copy of
/// the section header table appended at the end; the header points at the new table.
fn add_section(elf: &[u8], payload: &[u8]) -> Result<Vec<u8>> {
    let (shoff, count, entsize, strndx) = headers(elf)?;
    let (soff, ssize) = strtab(elf, shoff, entsize, strndx)?;
    let mut out = elf.to_vec();
    let data_at = out.len();
    out.extend_from_slice(payload);
    let names_at = out.len();
    let name_index = ssize;
    out.extend_from_slice(&elf[soff..soff + ssize]);
    out.extend_from_slice(SECTION.as_bytes());
    out.push(0);
    let new_names_size = out.len() - names_at;
    while out.len() % 8 != 0 {
        out.push(0);
    }
    let table_at = out.len();
    out.extend_from_slice(&elf[shoff..shoff + count * entsize]);
    let put64 = |out: &mut Vec<u8>, at: usize, v: usize| {
        out[at..at + 8].copy_from_slice(&(v as u64).to_le_bytes());
    };
    let s = table_at + strndx * entsize;
    put64(&mut out, s + 0x18, names_at);
    put64(&mut out, s + 0x20, new_names_size);
    let mut h = vec![0u8; entsize];
    h[0..4].copy_from_slice(&u32::try_from(name_index)?.to_le_bytes());
    h[4..8].copy_from_slice(&1u32.to_le_bytes()); // SHT_PROGBITS, no flags: not loaded
    h[0x18..0x20].copy_from_slice(&(data_at as u64).to_le_bytes());
    h[0x20..0x28].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    h[0x30..0x38].copy_from_slice(&1u64.to_le_bytes()); // alignment
    out.extend_from_slice(&h);
    put64(&mut out, 0x28, table_at);
    let n = u16::try_from(count + 1).context("too many sections")?;
    out[0x3C..0x3E].copy_from_slice(&n.to_le_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_is_added_once_and_goblin_reads_it() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(!has_section(&me).unwrap());
        let out = add_section(&me, b"payload").unwrap();
        assert!(has_section(&out).unwrap());
        let elf = goblin::elf::Elf::parse(&out).unwrap();
        let sh = elf
            .section_headers
            .iter()
            .find(|s| elf.shdr_strtab.get_at(s.sh_name) == Some(SECTION))
            .unwrap();
        let at = sh.sh_offset as usize;
        assert_eq!(&out[at..at + sh.sh_size as usize], b"payload");
        assert_eq!(
            elf.program_headers.len(),
            goblin::elf::Elf::parse(&me).unwrap().program_headers.len()
        );
    }
}
