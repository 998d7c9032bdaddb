//! Durations as operators write them: a whole number and a unit, `250ms`, `10s`, `5m`, `1h`.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration as StdDuration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Parses `250ms`, `10s`, `5m`, `1h`.
pub fn parse(s: &str) -> Result<StdDuration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?} has no unit: write it like 250ms, 10s or 5m"))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} does not start with a whole number"))?;
    let secs = |mult: u64| {
        n.checked_mul(mult)
            .map(StdDuration::from_secs)
            .ok_or_else(|| format!("{s:?} is too long"))
    };
    match unit {
        "ms" => Ok(StdDuration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        _ => Err(format!("{s:?} has unit {unit:?}: use ms, s, m or h")),
    }
}

/// Formats a duration the way [`parse`] reads it, in the largest exact unit.
pub fn format(d: StdDuration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) || ms == 0 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}s", ms / 1000)
    }
}

/// A duration field in policy: serialised as its text form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub StdDuration);

impl Duration {
    /// From milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Self(StdDuration::from_millis(ms))
    }

    /// From seconds.
    pub const fn from_secs(s: u64) -> Self {
        Self(StdDuration::from_secs(s))
    }

    /// Whether it is zero.
    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format(self.0))
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(self.0))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map(Duration).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[0-9]+(ms|s|m|h)$",
            "maxLength": 24,
            "description": "A whole number and a unit: ms, s, m or h (250ms, 10s, 5m)."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip() {
        for text in ["250ms", "10s", "5m", "1h", "0ms", "1500ms"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
        assert!(parse("10").unwrap_err().contains("no unit"));
        assert!(parse("10d").unwrap_err().contains("unit \"d\""));
        assert!(parse("ms").is_err());
        assert!(parse("99999999999999999999h").is_err());
    }

    #[test]
    fn serde_uses_the_text_form() {
        let d: Duration = serde_json::from_str("\"250ms\"").unwrap();
        assert_eq!(d, Duration::from_millis(250));
        assert_eq!(
            serde_json::to_string(&Duration::from_secs(300)).unwrap(),
            "\"5m\""
        );
        let err = serde_json::from_str::<Duration>("\"5 minutes\"").unwrap_err();
        assert!(err.to_string().contains("unit"), "{err}");
    }
}
