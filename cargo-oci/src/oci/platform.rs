//! The one table of the CPU architectures cargo-oci knows, keyed by what an ELF header says
//! (machine, class, byte order): the OCI platform words (Go's GOARCH and variant), the human
//! name, the Debian multiarch triplet, the Rust target's architecture, and the loader's
//! `$PLATFORM` and `$LIB` expansions.
//! Every stage that maps an ELF file to an architecture asks here.

use anyhow::Result;
use goblin::elf::header::{
    EM_386, EM_AARCH64, EM_ARM, EM_LOONGARCH, EM_PPC64, EM_RISCV, EM_S390, EM_X86_64,
};

/// An ELF file's architecture: `e_machine`, ELFCLASS64, ELFDATA2LSB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElfArch {
    pub machine: u16,
    pub class64: bool,
    pub little_endian: bool,
}

/// What is known of one architecture.
struct Row {
    machine: u16,
    class64: bool,
    /// `None`: either byte order.
    little_endian: Option<bool>,
    goarch: Option<&'static str>,
    variant: Option<&'static str>,
    name: &'static str,
    triplet: Option<&'static str>,
    /// The loader's `$PLATFORM`, simplified to the base platform.
    dst_platform: Option<&'static str>,
    /// The loader's `$LIB`.
    dst_lib: &'static str,
    /// The first part of the Rust target triple, and the rest for glibc (`unknown-linux-gnu`).
    rust: Option<(&'static str, &'static str)>,
}

#[allow(clippy::too_many_arguments)] // one argument per column of the table
const fn row(
    machine: u16,
    class64: bool,
    little_endian: Option<bool>,
    goarch: Option<&'static str>,
    variant: Option<&'static str>,
    name: &'static str,
    triplet: Option<&'static str>,
    dst_platform: Option<&'static str>,
    dst_lib: &'static str,
    rust: Option<(&'static str, &'static str)>,
) -> Row {
    Row {
        machine,
        class64,
        little_endian,
        goarch,
        variant,
        name,
        triplet,
        dst_platform,
        dst_lib,
        rust,
    }
}

const GNU: &str = "unknown-linux-gnu";

#[rustfmt::skip]
const TABLE: &[Row] = &[
    row(EM_X86_64, true, None, Some("amd64"), None, "x86-64", Some("x86_64-linux-gnu"), Some("x86_64"), "lib64", Some(("x86_64", GNU))),
    row(EM_X86_64, false, None, None, None, "x86-64", Some("x86_64-linux-gnux32"), Some("x86_64"), "lib", None),
    row(EM_386, false, None, Some("386"), None, "i386", Some("i386-linux-gnu"), Some("i686"), "lib", Some(("i686", GNU))),
    row(EM_AARCH64, true, Some(true), Some("arm64"), Some("v8"), "AArch64", Some("aarch64-linux-gnu"), Some("aarch64"), "lib64", Some(("aarch64", GNU))),
    row(EM_AARCH64, true, Some(false), None, None, "AArch64", None, Some("aarch64"), "lib64", None),
    row(EM_ARM, false, Some(true), Some("arm"), Some("v7"), "ARM", Some("arm-linux-gnueabihf"), None, "lib", Some(("armv7", "unknown-linux-gnueabihf"))),
    row(EM_ARM, false, Some(false), None, None, "ARM", None, None, "lib", None),
    row(EM_RISCV, true, None, Some("riscv64"), None, "RISC-V", Some("riscv64-linux-gnu"), Some("riscv64"), "lib", Some(("riscv64gc", GNU))),
    row(EM_PPC64, true, Some(true), Some("ppc64le"), None, "PowerPC64", Some("powerpc64le-linux-gnu"), Some("ppc64le"), "lib", Some(("powerpc64le", GNU))),
    row(EM_PPC64, true, Some(false), Some("ppc64"), None, "PowerPC64", Some("powerpc64-linux-gnu"), Some("ppc64"), "lib", Some(("powerpc64", GNU))),
    row(EM_S390, true, None, Some("s390x"), None, "S/390", Some("s390x-linux-gnu"), Some("s390x"), "lib", Some(("s390x", GNU))),
    row(EM_LOONGARCH, true, None, Some("loong64"), None, "LoongArch", None, None, "lib", Some(("loongarch64", GNU))),
];

/// The OCI platforms cargo-oci can build for, as `--platform` spells them (`linux/arm64`).
pub fn known_platforms() -> Vec<String> {
    TABLE
        .iter()
        .filter(|r| r.rust.is_some())
        .filter_map(|r| r.goarch)
        .map(|a| format!("linux/{a}"))
        .collect()
}

/// The Rust target for an OCI platform (`linux/arm64`, `linux/arm64/v8`, `linux/amd64`): glibc
/// unless `musl`. `None` for a platform cargo-oci does not know.
pub fn rust_target(platform: &str, musl: bool) -> Option<String> {
    let mut parts = platform.split('/');
    let (os, arch, variant) = (parts.next()?, parts.next()?, parts.next());
    if os != "linux" || parts.next().is_some() {
        return None;
    }
    let row = TABLE.iter().find(|r| {
        r.goarch == Some(arch) && r.rust.is_some() && variant.is_none_or(|v| r.variant == Some(v))
    })?;
    let (cpu, rest) = row.rust?;
    let rest = if musl {
        rest.replace("gnu", "musl")
    } else {
        rest.to_string()
    };
    Some(format!("{cpu}-{rest}"))
}

impl ElfArch {
    fn row(&self) -> Option<&'static Row> {
        TABLE.iter().find(|r| {
            r.machine == self.machine
                && r.class64 == self.class64
                && r.little_endian.is_none_or(|l| l == self.little_endian)
        })
    }

    /// `64-bit little-endian x86-64`, for messages.
    pub fn describe(&self) -> String {
        let name = self.row().map_or_else(
            || {
                TABLE
                    .iter()
                    .find(|r| r.machine == self.machine)
                    .map_or_else(|| format!("machine {}", self.machine), |r| r.name.into())
            },
            |r| r.name.into(),
        );
        format!(
            "{}-bit {}-endian {name}",
            if self.class64 { 64 } else { 32 },
            if self.little_endian { "little" } else { "big" }
        )
    }

    /// The Debian multiarch triplet (`x86_64-linux-gnu`).
    pub fn triplet(&self) -> Option<&'static str> {
        self.row().and_then(|r| r.triplet)
    }

    /// The loader's `$PLATFORM`.
    pub fn dst_platform(&self) -> Option<&'static str> {
        self.row().and_then(|r| r.dst_platform)
    }

    /// The loader's `$LIB` (`lib64` on 64-bit x86 and AArch64, else `lib`).
    pub fn dst_lib(&self) -> &'static str {
        self.row().map_or("lib", |r| r.dst_lib)
    }

    /// The architecture a Rust target triple builds for (`aarch64-unknown-linux-gnu`).
    pub fn of_rust_target(triple: &str) -> Option<ElfArch> {
        let cpu = triple.split('-').next()?;
        let row = TABLE.iter().find(|r| {
            r.rust
                .is_some_and(|(c, _)| c == cpu || (c == "armv7" && cpu.starts_with("arm")))
        })?;
        Some(ElfArch {
            machine: row.machine,
            class64: row.class64,
            little_endian: row.little_endian.unwrap_or(true),
        })
    }

    /// The Debian architecture name (`amd64`, `arm64`), as `apt-get install PKG:ARCH` takes it.
    pub fn debian_arch(&self) -> Option<&'static str> {
        match self.row()?.goarch? {
            "arm" => Some("armhf"),
            "386" => Some("i386"),
            "ppc64le" => Some("ppc64el"),
            a => Some(a),
        }
    }

    /// The OCI platform of a Linux binary of this architecture.
    pub fn platform(&self) -> Result<Platform> {
        match self.row() {
            Some(Row {
                goarch: Some(arch),
                variant,
                ..
            }) => Ok(Platform {
                architecture: (*arch).into(),
                variant: variant.map(str::to_string),
            }),
            _ => anyhow::bail!(
                "ELF machine {} ({}) has no OCI architecture name cargo-oci knows",
                self.machine,
                self.describe()
            ),
        }
    }
}

/// Platform of the binaries, in Go's GOARCH words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// From an ELF header's machine, class and byte order.
    pub fn from_elf(machine: u16, class64: bool, little_endian: bool) -> Result<Platform> {
        ElfArch {
            machine,
            class64,
            little_endian,
        }
        .platform()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_answers_for_the_common_machines() {
        let x86 = ElfArch {
            machine: EM_X86_64,
            class64: true,
            little_endian: true,
        };
        assert_eq!(x86.platform().unwrap().architecture, "amd64");
        assert_eq!(x86.triplet(), Some("x86_64-linux-gnu"));
        assert_eq!(x86.describe(), "64-bit little-endian x86-64");
        assert_eq!(x86.dst_lib(), "lib64");
        let arm64 = ElfArch {
            machine: EM_AARCH64,
            ..x86
        };
        let p = arm64.platform().unwrap();
        assert_eq!(
            (p.architecture.as_str(), p.variant.as_deref()),
            ("arm64", Some("v8"))
        );
        assert_eq!(arm64.triplet(), Some("aarch64-linux-gnu"));
        let big = ElfArch {
            little_endian: false,
            ..arm64
        };
        assert!(big.platform().is_err());
        assert_eq!(big.describe(), "64-bit big-endian AArch64");
        let unknown = ElfArch {
            machine: 9999,
            ..x86
        };
        assert_eq!(unknown.describe(), "64-bit little-endian machine 9999");
        assert!(unknown.platform().is_err());
    }

    #[test]
    fn platforms_map_to_rust_targets_and_back() {
        assert_eq!(
            rust_target("linux/arm64", false).as_deref(),
            Some("aarch64-unknown-linux-gnu")
        );
        assert_eq!(
            rust_target("linux/arm64/v8", true).as_deref(),
            Some("aarch64-unknown-linux-musl")
        );
        assert_eq!(
            rust_target("linux/amd64", false).as_deref(),
            Some("x86_64-unknown-linux-gnu")
        );
        assert_eq!(
            rust_target("linux/arm/v7", false).as_deref(),
            Some("armv7-unknown-linux-gnueabihf")
        );
        assert_eq!(rust_target("linux/arm64/v9", false), None);
        assert_eq!(rust_target("windows/amd64", false), None);
        assert_eq!(rust_target("linux/sparc", false), None);
        let a = ElfArch::of_rust_target("aarch64-unknown-linux-musl").unwrap();
        assert_eq!(a.machine, EM_AARCH64);
        assert_eq!(a.debian_arch(), Some("arm64"));
        assert_eq!(a.triplet(), Some("aarch64-linux-gnu"));
        assert!(known_platforms().contains(&"linux/arm64".to_string()));
    }
}
