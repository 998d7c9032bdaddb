//! serde's and the loader's errors in the words a person writing YAML reads: the field
//! meant for a misspelt one, what to write for a wrong type.

use serde::de::DeserializeOwned;

/// The candidate `word` was most likely meant as, if one is close (a typo, a wrong case):
/// at most a third of its letters apart.
pub(super) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| {
            (
                strsim::levenshtein(&word.to_ascii_lowercase(), &c.to_ascii_lowercase()),
                *c,
            )
        })
        .filter(|(d, c)| *d <= (c.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

pub(super) fn typed<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut path = e.path().to_string();
        if path == "." {
            path.clear();
        }
        let mut reason = for_people(&e.inner().to_string());
        // serde names an unknown field in the message; point at the field itself.
        if let Some(name) = reason
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
            .map(str::to_string)
        {
            // "unknown field `x`, expected one of `a`, `b`": the candidates are quoted.
            let expected = reason.split_once(", expected").map_or("", |(_, e)| e);
            let fields: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            if let Some(near) = closest(&name, &fields) {
                reason =
                    format!("unknown field `{name}` (did you mean `{near}`?), expected{expected}");
            }
            let name = name.as_str();
            if !path.ends_with(name) {
                path = if path.is_empty() {
                    name.to_string()
                } else {
                    format!("{path}.{name}")
                };
            }
        }
        (path, reason)
    })
}

/// serde's type words as a person writing YAML reads them: `expected u32` says the range,
/// `a sequence` is a list, a struct is a mapping.
fn for_people(reason: &str) -> String {
    if !reason.starts_with("invalid type: ") && !reason.starts_with("invalid value: ") {
        return reason.to_string();
    }
    let Some((head, expected)) = reason.split_once(", expected ") else {
        return reason.to_string();
    };
    let expected = match expected {
        "u8" => "a whole number from 0 to 255".to_string(),
        "u16" => "a whole number from 0 to 65535".to_string(),
        "u32" | "u64" | "usize" => "a whole number, 0 or more".to_string(),
        "i32" | "i64" => "a whole number".to_string(),
        "f32" | "f64" => "a number".to_string(),
        "a boolean" => "true or false".to_string(),
        "a sequence" => "a list".to_string(),
        "a map" => "a mapping (key: value lines)".to_string(),
        e if e.starts_with("struct ") => "a mapping (key: value lines)".to_string(),
        e => e.to_string(),
    };
    // `invalid type: string "3"` reads better as what was written.
    let head = head
        .replace("invalid type: string ", "got the text ")
        .replace("invalid type: integer ", "got the number ")
        .replace("invalid type: floating point ", "got the number ")
        .replace("invalid type: boolean ", "got ")
        .replace("invalid type: sequence", "got a list")
        .replace("invalid type: map", "got a mapping")
        .replace("invalid value: integer ", "got ");
    format!("expected {expected}; {head}")
}
