//! The environment variables the configuration reads, read in one place. (`cargo metadata` is
//! run through the `CARGO` the cargo-metadata crate picks; the build stages read their own.)

/// The default timestamp: 1970-01-01T00:00:01Z (some tools treat 0 as "unset").
pub const DEFAULT_EPOCH: u64 = 1;

/// What the configuration takes from the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigEnv {
    /// `SOURCE_DATE_EPOCH`, as set.
    pub source_date_epoch: Option<String>,
    /// `CARGO_OCI_REPOSITORY`: the registry and path every image name is put under.
    pub repository: Option<String>,
}

impl ConfigEnv {
    /// Reads the process environment.
    pub fn from_process() -> Self {
        ConfigEnv {
            source_date_epoch: std::env::var("SOURCE_DATE_EPOCH").ok(),
            repository: std::env::var("CARGO_OCI_REPOSITORY").ok(),
        }
    }

    /// `SOURCE_DATE_EPOCH` if set, else [`DEFAULT_EPOCH`].
    pub fn epoch(&self) -> Result<u64, String> {
        match self.source_date_epoch.as_deref().map(str::trim) {
            Some(v) if !v.is_empty() => v
                .parse()
                .map_err(|_| format!("SOURCE_DATE_EPOCH=`{v}` is not a whole number of seconds")),
            _ => Ok(DEFAULT_EPOCH),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_defaults_and_parses() {
        let env = |v: Option<&str>| ConfigEnv {
            source_date_epoch: v.map(str::to_string),
            repository: None,
        };
        assert_eq!(env(None).epoch(), Ok(DEFAULT_EPOCH));
        assert_eq!(env(Some(" ")).epoch(), Ok(DEFAULT_EPOCH));
        assert_eq!(env(Some("1700000000")).epoch(), Ok(1_700_000_000));
        assert!(env(Some("yesterday")).epoch().is_err());
    }
}
