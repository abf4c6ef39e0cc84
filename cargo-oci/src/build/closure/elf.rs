//! Reads what the loader needs from an ELF file (class, machine, byte order, `PT_INTERP`,
//! `DT_NEEDED`, `RPATH`/`RUNPATH`, `DT_SONAME`, flags) from its headers alone, without reading
//! the whole file.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use goblin::container::{Container, Ctx, Endian};
use goblin::elf::dynamic::{self, Dynamic};
use goblin::elf::header;
use goblin::elf::program_header::{self, ProgramHeader};
use goblin::elf::Elf;

use super::{ClosureError, ElfInfo};

/// Reads the loader-relevant parts of the ELF file at `path`.
///
/// Only the ELF header, the program headers, `PT_INTERP`, `PT_DYNAMIC` and
/// the dynamic string table are read, so large binaries are cheap.
pub fn inspect(path: &Path) -> Result<ElfInfo, ClosureError> {
    let mut reader = Reader::open(path)?;
    let ident = reader.read_prefix(64)?;
    if ident.len() < 4 || &ident[..4] != header::ELFMAG {
        return Err(ClosureError::NotElf {
            path: path.to_path_buf(),
        });
    }
    let (class64, little_endian) = ident_class(&ident).map_err(|r| reader.malformed(r))?;
    let header_len = if class64 { 64 } else { 52 };
    if ident.len() < header_len {
        return Err(reader.malformed("truncated ELF header"));
    }
    let hdr = Elf::parse_header(&ident).map_err(|e| reader.malformed(e))?;
    let ctx = Ctx::new(
        if class64 {
            Container::Big
        } else {
            Container::Little
        },
        if little_endian {
            Endian::Little
        } else {
            Endian::Big
        },
    );

    let phnum = u64::from(hdr.e_phnum);
    let phent = ProgramHeader::size(ctx) as u64;
    if phnum > 0 && u64::from(hdr.e_phentsize) != phent {
        return Err(reader.malformed(format!(
            "program header size {} (expected {phent})",
            hdr.e_phentsize
        )));
    }
    let ph_bytes = reader.read_at(hdr.e_phoff, phnum * phent, "program headers")?;
    let phdrs =
        ProgramHeader::parse(&ph_bytes, 0, phnum as usize, ctx).map_err(|e| reader.malformed(e))?;

    let mut info = ElfInfo {
        class64,
        machine: hdr.e_machine,
        little_endian,
        ..ElfInfo::default()
    };

    if let Some(ph) = phdrs
        .iter()
        .find(|ph| ph.p_type == program_header::PT_INTERP)
    {
        let bytes = reader.read_at(ph.p_offset, ph.p_filesz, "PT_INTERP")?;
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        let interp = String::from_utf8(bytes[..end].to_vec())
            .map_err(|_| reader.malformed("PT_INTERP is not UTF-8"))?;
        if interp.is_empty() {
            return Err(reader.malformed("empty PT_INTERP"));
        }
        info.interpreter = Some(interp);
    }

    if let Some(ph) = phdrs
        .iter()
        .find(|ph| ph.p_type == program_header::PT_DYNAMIC)
    {
        let bytes = reader.read_at(ph.p_offset, ph.p_filesz, "PT_DYNAMIC")?;
        // Parse from the buffer just read: same header, offset 0.
        let mut local = ph.clone();
        local.p_offset = 0;
        let dyns = Dynamic::parse(&bytes, &[local], ctx)
            .map_err(|e| reader.malformed(e))?
            .map(|d| d.dyns)
            .unwrap_or_default();
        read_dynamic(&mut reader, &phdrs, &dyns, &mut info)?;
    }

    info.is_static = info.interpreter.is_none() && info.needed.is_empty();
    Ok(info)
}

pub(super) fn ident_class(ident: &[u8]) -> Result<(bool, bool), String> {
    let class64 = match ident.get(header::EI_CLASS) {
        Some(&header::ELFCLASS32) => false,
        Some(&header::ELFCLASS64) => true,
        other => return Err(format!("unknown ELF class {other:?}")),
    };
    let little = match ident.get(header::EI_DATA) {
        Some(&header::ELFDATA2LSB) => true,
        Some(&header::ELFDATA2MSB) => false,
        other => return Err(format!("unknown ELF byte order {other:?}")),
    };
    Ok((class64, little))
}

/// Fills the string-valued dynamic entries of `info`.
pub(super) fn read_dynamic(
    reader: &mut Reader,
    phdrs: &[ProgramHeader],
    dyns: &[dynamic::Dyn],
    info: &mut ElfInfo,
) -> Result<(), ClosureError> {
    let mut strtab_addr = None;
    let mut strsz = None;
    let mut needs_strings = false;
    for d in dyns {
        match d.d_tag {
            dynamic::DT_STRTAB => strtab_addr = Some(d.d_val),
            dynamic::DT_STRSZ => strsz = Some(d.d_val),
            dynamic::DT_FLAGS_1 => info.nodeflib = d.d_val & dynamic::DF_1_NODEFLIB != 0,
            dynamic::DT_NEEDED | dynamic::DT_RPATH | dynamic::DT_RUNPATH | dynamic::DT_SONAME => {
                needs_strings = true
            }
            _ => {}
        }
    }
    if !needs_strings {
        return Ok(());
    }
    let addr = strtab_addr.ok_or_else(|| reader.malformed("DT_NEEDED without DT_STRTAB"))?;
    // The string table address is a virtual address: map it through PT_LOAD.
    let (offset, in_segment) = phdrs
        .iter()
        .filter(|ph| ph.p_type == program_header::PT_LOAD)
        .find_map(|ph| {
            let delta = addr.checked_sub(ph.p_vaddr)?;
            (delta < ph.p_filesz).then(|| (ph.p_offset.checked_add(delta), ph.p_filesz - delta))
        })
        .and_then(|(off, avail)| Some((off?, avail)))
        .ok_or_else(|| {
            reader.malformed(format!("DT_STRTAB {addr:#x} is not in a PT_LOAD segment"))
        })?;
    let size = strsz.unwrap_or(in_segment).min(in_segment);
    let size = size.min(reader.len.saturating_sub(offset));
    let strtab = reader.read_at(offset, size, "dynamic string table")?;

    let string = |reader: &Reader, at: u64, what: &str| -> Result<String, ClosureError> {
        let rest = usize::try_from(at)
            .ok()
            .and_then(|at| strtab.get(at..))
            .ok_or_else(|| reader.malformed(format!("{what} string offset {at} out of range")))?;
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| reader.malformed(format!("{what} string is not terminated")))?;
        String::from_utf8(rest[..end].to_vec())
            .map_err(|_| reader.malformed(format!("{what} string is not UTF-8")))
    };
    for d in dyns {
        match d.d_tag {
            dynamic::DT_NEEDED => info.needed.push(string(reader, d.d_val, "DT_NEEDED")?),
            dynamic::DT_SONAME => info.soname = Some(string(reader, d.d_val, "DT_SONAME")?),
            dynamic::DT_RPATH => {
                split_path_list(&string(reader, d.d_val, "DT_RPATH")?, &mut info.rpath)
            }
            dynamic::DT_RUNPATH => {
                split_path_list(&string(reader, d.d_val, "DT_RUNPATH")?, &mut info.runpath)
            }
            _ => {}
        }
    }
    Ok(())
}

pub(super) fn split_path_list(list: &str, out: &mut Vec<String>) {
    out.extend(list.split(':').filter(|s| !s.is_empty()).map(str::to_owned));
}

/// Bounds-checked reads from a file, with errors naming the file.
pub(super) struct Reader {
    file: File,
    len: u64,
    path: PathBuf,
}

impl Reader {
    fn open(path: &Path) -> Result<Reader, ClosureError> {
        let io_err = |source| ClosureError::Io {
            path: path.to_path_buf(),
            source,
        };
        // Checked before opening: opening a FIFO would block.
        let meta = std::fs::metadata(path).map_err(io_err)?;
        if !meta.is_file() {
            return Err(io_err(io::Error::other("not a regular file")));
        }
        let file = File::open(path).map_err(io_err)?;
        Ok(Reader {
            file,
            len: meta.len(),
            path: path.to_path_buf(),
        })
    }

    fn malformed(&self, reason: impl fmt::Display) -> ClosureError {
        ClosureError::Malformed {
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    /// Up to `max` bytes from the start (fewer if the file is shorter).
    fn read_prefix(&mut self, max: u64) -> Result<Vec<u8>, ClosureError> {
        let mut buf = Vec::new();
        (&mut self.file)
            .take(max)
            .read_to_end(&mut buf)
            .map_err(|source| ClosureError::Io {
                path: self.path.clone(),
                source,
            })?;
        Ok(buf)
    }

    /// Exactly `len` bytes at `offset`; a range past the end is malformed.
    fn read_at(&mut self, offset: u64, len: u64, what: &str) -> Result<Vec<u8>, ClosureError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => {}
            _ => {
                return Err(self.malformed(format!(
                    "{what} at offset {offset:#x} (+{len:#x}) is past the end of the {}-byte file",
                    self.len
                )))
            }
        }
        let mut buf = vec![0; len as usize];
        self.file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.file.read_exact(&mut buf))
            .map_err(|source| ClosureError::Io {
                path: self.path.clone(),
                source,
            })?;
        Ok(buf)
    }
}

/// Class, machine and byte order of the ELF file at `path`, or `None` if it
/// is not a readable ELF file. Used to skip unusable search candidates.
pub(super) fn probe(path: &Path) -> Option<(bool, u16, bool)> {
    let mut reader = Reader::open(path).ok()?;
    let ident = reader.read_prefix(64).ok()?;
    if ident.len() < 4 || &ident[..4] != header::ELFMAG {
        return None;
    }
    let (class64, little) = ident_class(&ident).ok()?;
    if ident.len() < if class64 { 64 } else { 52 } {
        return None;
    }
    let hdr = Elf::parse_header(&ident).ok()?;
    Some((class64, hdr.e_machine, little))
}
