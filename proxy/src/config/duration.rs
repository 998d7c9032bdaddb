//! Durations in flags (`Dur`) and in `/config_dump` (`duration_str`), written as in policy
//! YAML: `250ms`, `10s`, `5m`.

use std::time::Duration;

/// Durations are read and written the same way in flags and in policy YAML.
pub use bulwark_api::duration::{format as format_duration, parse as parse_duration};

/// A duration as flags and environment variables write it (`250ms`, `10s`, `5m`), so clap
/// can show and parse the `DEFAULT_*` constants themselves rather than a copy as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl std::fmt::Display for Dur {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

impl std::str::FromStr for Dur {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        parse_duration(s).map(Dur).map_err(|e| e.to_string())
    }
}

pub(super) mod duration_str {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }
}
