//! The crate list in the form scanners read from a Rust binary: cargo-auditable's `.dep-v0`
//! section (zlib-compressed JSON, `{"packages":[{name, version, source, kind, dependencies,
//! root}]}`), added to a copy of the binary as a non-allocated section, which the loader never
//! maps: the program runs exactly as before. A binary that already has one (built with
//! `cargo auditable`) is used as it is.

use std::io::{Read as _, Seek as _, SeekFrom, Write as _};

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::crates::{Crate, Source};
use crate::util::fs::{write_atomic, write_atomic_file};

const SECTION: &str = ".dep-v0";

/// The binary to put in the image: `binary`, or a copy of it under `dir` carrying the crate list.
/// Each source binary has its own directory there, named by a digest of its path: binaries of
/// the same name (one per target, or of two packages) never share a copy. The copy is streamed (memory stays flat in the binary's size) and remembered by a sealed
/// record of the source's identity (device, inode, size, modification time), the section's
/// digest and the copy's own identity: when all three still hold, neither file is read.
pub fn embed(binary: &Path, crates: &[Crate], dir: &Path) -> Result<PathBuf> {
    if crates.is_empty() {
        return Ok(binary.to_path_buf());
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&serde_json::to_vec(&list(crates))?)?;
    let payload = z.finish()?;
    let name = binary.file_name().context("the binary has no file name")?;
    let source = std::path::absolute(binary).unwrap_or_else(|_| binary.to_path_buf());
    let dir = &dir.join(&hex::encode(Sha256::digest(source.as_os_str().as_encoded_bytes()))[..16]);
    let path = dir.join(name);
    let mut record_name = name.to_os_string();
    record_name.push(".record");
    let record_path = dir.join(record_name);
    let src =
        std::fs::metadata(binary).with_context(|| format!("cannot read {}", binary.display()))?;
    let want = |copy: &std::fs::Metadata| {
        let body = format!(
            "{}\n{}\n{}\n",
            identity(&src),
            hex::encode(Sha256::digest(&payload)),
            identity(copy)
        );
        format!("{}\n{body}", hex::encode(Sha256::digest(body.as_bytes())))
    };
    if let (Ok(copy), Ok(record)) = (
        std::fs::metadata(&path),
        std::fs::read_to_string(&record_path),
    ) {
        if record == want(&copy) {
            return Ok(path);
        }
    }
    let mut file =
        std::fs::File::open(binary).with_context(|| format!("cannot read {}", binary.display()))?;
    let elf = Headers::read(&file, src.len())
        .with_context(|| format!("cannot read the ELF headers of {}", binary.display()))?;
    if elf.as_ref().is_some_and(Headers::has_section) {
        return Ok(binary.to_path_buf());
    }
    let elf = elf.with_context(|| {
        format!(
            "cannot add the crate list to {}: it has no usable section header table",
            binary.display()
        )
    })?;
    let (head, tail) = elf.add_section(&payload)?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::remove_file(&record_path).ok();
    // File to file: the kernel copies the bytes (`copy_file_range`), a reflink where the file
    // system can.
    write_atomic_file(&path, |w| {
        w.write_all(&head)?;
        file.seek(SeekFrom::Start(head.len() as u64))?;
        let copied = std::io::copy(&mut (&mut file).take(src.len() - head.len() as u64), w)?;
        if copied + head.len() as u64 != src.len() {
            bail!("{} changed while it was copied", binary.display());
        }
        Ok(w.write_all(&tail)?)
    })?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    // The source must not have changed under the copy.
    let after = std::fs::metadata(binary)?;
    if identity(&after) != identity(&src) {
        bail!("{} changed while it was copied", binary.display());
    }
    let copy = std::fs::metadata(&path)?;
    let record = want(&copy);
    write_atomic(&record_path, |w| Ok(w.write_all(record.as_bytes())?)).ok();
    Ok(path)
}

/// A file's identity: device, inode, size, modification time to the nanosecond.
fn identity(m: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!(
        "{} {} {} {}.{:09}",
        m.dev(),
        m.ino(),
        m.len(),
        m.mtime(),
        m.mtime_nsec()
    )
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

/// What adding a section needs of an ELF file, read without reading the rest: its header, its
/// section header table, its section name table, and its length.
struct Headers {
    header: Vec<u8>,
    table: Vec<u8>,
    names: Vec<u8>,
    len: u64,
    count: usize,
    entsize: usize,
    strndx: usize,
}

impl Headers {
    /// The headers of `file` (`len` bytes long); `None` when it is not a 64-bit little-endian ELF
    /// file with a usable section header table.
    fn read(file: &std::fs::File, len: u64) -> Result<Option<Headers>> {
        use std::os::unix::fs::FileExt;
        let at = |off: u64, n: usize| -> Result<Option<Vec<u8>>> {
            if off.checked_add(n as u64).is_none_or(|end| end > len) {
                return Ok(None);
            }
            let mut b = vec![0u8; n];
            file.read_exact_at(&mut b, off)?;
            Ok(Some(b))
        };
        let Some(header) = at(0, 64)? else {
            return Ok(None);
        };
        if header.get(0..4) != Some(b"\x7fELF") || header[4] != 2 || header[5] != 1 {
            return Ok(None);
        }
        let shoff = u64_at(&header, 0x28)?;
        let entsize = usize::from(u16_at(&header, 0x3A)?);
        let count = usize::from(u16_at(&header, 0x3C)?);
        let strndx = usize::from(u16_at(&header, 0x3E)?);
        if shoff == 0 || count == 0 || entsize < 64 || strndx == 0 || strndx >= count.min(0xff00) {
            return Ok(None);
        }
        let Some(table) = at(shoff, count * entsize)? else {
            return Ok(None);
        };
        let h = strndx * entsize;
        let Some(names) = at(
            u64_at(&table, h + 0x18)?,
            usize::try_from(u64_at(&table, h + 0x20)?)?,
        )?
        else {
            return Ok(None);
        };
        Ok(Some(Headers {
            header,
            table,
            names,
            len,
            count,
            entsize,
            strndx,
        }))
    }

    fn has_section(&self) -> bool {
        (0..self.count).any(|i| {
            let n = u32_at(&self.table, i * self.entsize).unwrap_or(u32::MAX) as usize;
            let name = self.names.get(n..).unwrap_or_default();
            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            &name[..end] == SECTION.as_bytes()
        })
    }

    /// The file with one more section, as a new header to write over its first 64 bytes and
    /// what to append after it: the section's bytes, a longer copy of the name table and a longer
    /// copy of the section header table, which the new header points at.
    fn add_section(&self, payload: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
        let base = usize::try_from(self.len)?;
        let mut tail = Vec::new();
        let data_at = base;
        tail.extend_from_slice(payload);
        let names_at = base + tail.len();
        let name_index = self.names.len();
        tail.extend_from_slice(&self.names);
        tail.extend_from_slice(SECTION.as_bytes());
        tail.push(0);
        let new_names_size = base + tail.len() - names_at;
        while (base + tail.len()) % 8 != 0 {
            tail.push(0);
        }
        let table_at = base + tail.len();
        let table_start = tail.len();
        tail.extend_from_slice(&self.table);
        let put64 = |b: &mut [u8], at: usize, v: usize| {
            b[at..at + 8].copy_from_slice(&(v as u64).to_le_bytes());
        };
        let s = table_start + self.strndx * self.entsize;
        put64(&mut tail, s + 0x18, names_at);
        put64(&mut tail, s + 0x20, new_names_size);
        let mut h = vec![0u8; self.entsize];
        h[0..4].copy_from_slice(&u32::try_from(name_index)?.to_le_bytes());
        h[4..8].copy_from_slice(&1u32.to_le_bytes()); // SHT_PROGBITS, no flags: not loaded
        h[0x18..0x20].copy_from_slice(&(data_at as u64).to_le_bytes());
        h[0x20..0x28].copy_from_slice(&(payload.len() as u64).to_le_bytes());
        h[0x30..0x38].copy_from_slice(&1u64.to_le_bytes()); // alignment
        tail.extend_from_slice(&h);
        let mut header = self.header.clone();
        put64(&mut header, 0x28, table_at);
        let n = u16::try_from(self.count + 1).context("too many sections")?;
        header[0x3C..0x3E].copy_from_slice(&n.to_le_bytes());
        Ok((header, tail))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_is_added_once_and_goblin_reads_it() {
        let exe = std::env::current_exe().unwrap();
        let me = std::fs::read(&exe).unwrap();
        let file = std::fs::File::open(&exe).unwrap();
        let headers = Headers::read(&file, me.len() as u64).unwrap().unwrap();
        assert!(!headers.has_section());
        let (head, tail) = headers.add_section(b"payload").unwrap();
        let out = [&head[..], &me[head.len()..], &tail[..]].concat();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("out"), &out).unwrap();
        let again = std::fs::File::open(dir.path().join("out")).unwrap();
        assert!(Headers::read(&again, out.len() as u64)
            .unwrap()
            .unwrap()
            .has_section());
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

    fn one_crate() -> Vec<Crate> {
        vec![Crate {
            name: "app".into(),
            version: "0.1.0".into(),
            source: Source::Path,
            checksum: None,
            license: None,
            build_time: false,
            proc_macro: false,
            deps: vec![],
        }]
    }

    #[test]
    fn an_unchanged_binary_keeps_its_copy_and_a_changed_one_gets_a_new_copy() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("app");
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        std::fs::write(&bin, &me).unwrap();
        let dir = tmp.path().join("copies");
        let out = embed(&bin, &one_crate(), &dir).unwrap();
        assert_ne!(out, bin);
        let first = std::fs::read(&out).unwrap();
        assert_eq!(&first[64..me.len()], &me[64..]);
        let ino = std::fs::metadata(&out).unwrap().ino();
        // Nothing changed: the same file, not rewritten.
        assert_eq!(embed(&bin, &one_crate(), &dir).unwrap(), out);
        assert_eq!(std::fs::metadata(&out).unwrap().ino(), ino);
        // A different crate list: a different copy.
        let mut other = one_crate();
        other[0].version = "0.2.0".into();
        embed(&bin, &other, &dir).unwrap();
        assert_ne!(std::fs::read(&out).unwrap(), first);
        // A changed binary of the same size: a different copy with the new bytes.
        let mut changed = me.clone();
        let at = me.len() / 2;
        changed[at] ^= 0xff;
        std::fs::remove_file(&bin).unwrap();
        std::fs::write(&bin, &changed).unwrap();
        embed(&bin, &other, &dir).unwrap();
        let copy = std::fs::read(&out).unwrap();
        assert_eq!(copy[at], changed[at]);
        // A damaged record is not trusted.
        std::fs::write(out.with_file_name("app.record"), b"x").unwrap();
        std::fs::write(&out, b"tampered").unwrap();
        embed(&bin, &other, &dir).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), copy);
    }

    #[test]
    fn binaries_of_one_name_from_two_targets_get_two_copies() {
        let tmp = tempfile::tempdir().unwrap();
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let dir = tmp.path().join("copies");
        let mut outs = Vec::new();
        for (triple, flip) in [
            ("x86_64-unknown-linux-gnu", 0u8),
            ("aarch64-unknown-linux-gnu", 1),
        ] {
            let bin = tmp.path().join(triple).join("release").join("app");
            std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
            let mut bytes = me.clone();
            let at = bytes.len() / 2;
            bytes[at] ^= flip;
            std::fs::write(&bin, &bytes).unwrap();
            outs.push((embed(&bin, &one_crate(), &dir).unwrap(), bytes[at], at));
        }
        assert_ne!(outs[0].0, outs[1].0);
        // Each copy still holds its own binary's bytes after the other was made.
        for (out, byte, at) in &outs {
            assert_eq!(std::fs::read(out).unwrap()[*at], *byte);
        }
    }
}
