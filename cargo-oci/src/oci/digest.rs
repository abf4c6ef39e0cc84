//! Content digests (`sha256:<64 lowercase hex>`), parsed and checked once where they enter the
//! program (a manifest, a registry answer, a file name) and typed from then on, so no caller
//! strips or glues the `sha256:` prefix by hand. A refused value is never quoted back.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// A SHA-256 content digest.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest {
    /// `sha256:` and the hex, kept whole so that `as_str` borrows.
    text: String,
}

impl Digest {
    const PREFIX: &'static str = "sha256:";

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_hash(Sha256::digest(bytes).as_slice())
    }

    /// From a finished SHA-256 hash.
    pub fn from_hash(hash: &[u8]) -> Digest {
        Digest {
            text: format!("{}{}", Self::PREFIX, hex::encode(hash)),
        }
    }

    /// From 64 hex digits (a blob's file name).
    pub fn from_hex(hex: &str) -> Result<Digest, String> {
        format!("{}{hex}", Self::PREFIX).parse()
    }

    /// `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.text[Self::PREFIX.len()..]
    }

    /// The same digest as `oci-spec` types it, for its descriptors.
    pub fn to_oci(&self) -> oci_spec::image::Digest {
        // A checked `sha256:<64 hex>` is always a valid OCI digest.
        oci_spec::image::Digest::from_str(&self.text)
            .unwrap_or_else(|_| unreachable!("a checked sha256 digest"))
    }

    /// `sha256:` and the first 12 hex digits, for messages.
    pub fn short(&self) -> &str {
        &self.text[..Self::PREFIX.len() + 12]
    }
}

impl FromStr for Digest {
    type Err = String;

    /// The error never quotes the value: it may come from a file that is not an image at all.
    fn from_str(s: &str) -> Result<Digest, String> {
        let ok = s.strip_prefix(Self::PREFIX).is_some_and(|hex| {
            hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        });
        if !ok {
            return Err(format!(
                "a value of {} characters is not a sha256 digest (`sha256:` and 64 lowercase hex digits)",
                s.chars().count()
            ));
        }
        Ok(Digest {
            text: s.to_string(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, so that widths and alignments in format strings apply as to a string.
        f.pad(&self.text)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.text)
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl PartialEq<str> for Digest {
    fn eq(&self, other: &str) -> bool {
        self.text == other
    }
}

impl PartialEq<&str> for Digest {
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digests_of_bytes_and_their_parts() {
        let d = Digest::of(b"");
        assert_eq!(d.as_str(), EMPTY);
        assert_eq!(d.hex(), &EMPTY[7..]);
        assert_eq!(d.short(), "sha256:e3b0c44298fc");
        assert_eq!(Digest::from_hex(d.hex()).unwrap(), d);
        assert_eq!(EMPTY.parse::<Digest>().unwrap(), d);
        assert_eq!(d, EMPTY);
        assert_eq!(format!("{d:<72}|"), format!("{EMPTY:<72}|"));
        assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{EMPTY}\""));
        let back: Digest = serde_json::from_str(&format!("\"{EMPTY}\"")).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn malformed_digests_are_refused_without_echoing_much() {
        for bad in [
            "",
            "sha256:",
            "sha512:e3b0",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:../../etc/passwd",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
        let long = format!("sha256:{}", "secret".repeat(2_000));
        let err = long.parse::<Digest>().unwrap_err();
        assert!(err.len() < 200 && !err.contains("secret"), "{err}");
        assert!(serde_json::from_str::<Digest>("\"sha256:12\"").is_err());
    }
}
