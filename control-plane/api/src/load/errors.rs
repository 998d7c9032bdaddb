//! serde's and the loader's errors in the words a person writing YAML reads: the field
//! meant for a misspelt one, what to write for a wrong type (with the field's range when
//! the schema states one).

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

/// The bounds the schema gives a whole-number field (`minimum`, `maximum`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Bounds {
    pub(super) min: Option<i64>,
    pub(super) max: Option<i64>,
}

/// One serde error at `path` as (field path, reason). `bounds` is asked only when the
/// error is about a whole number.
pub(super) fn explain(
    path: &str,
    message: &str,
    bounds: impl FnOnce() -> Option<Bounds>,
) -> (String, String) {
    let mut path = if path == "." {
        String::new()
    } else {
        path.to_string()
    };
    let mut reason = for_people(message, bounds);
    // serde names an unknown field in the message; point at the field itself.
    if let Some(name) = unknown_field(&reason).map(str::to_string) {
        // "unknown field `x`, expected one of `a`, `b`": the candidates are quoted.
        let expected = reason.split_once(", expected").map_or("", |(_, e)| e);
        let fields: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        if let Some(near) = closest(&name, &fields) {
            reason = format!("unknown field `{name}` (did you mean `{near}`?), expected{expected}");
        }
        if !path.ends_with(name.as_str()) {
            path = if path.is_empty() {
                name
            } else {
                format!("{path}.{name}")
            };
        }
    }
    (path, reason)
}

/// The field an "unknown field `x`, …" message names.
pub(super) fn unknown_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("unknown field `")
        .and_then(|r| r.split('`').next())
}

/// The field a "missing field `x`" message names.
pub(super) fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next())
}

/// A whole number between `bounds`, in words.
fn whole_number(bounds: Bounds) -> String {
    match bounds {
        Bounds {
            min: Some(lo),
            max: Some(hi),
        } => format!("a whole number from {lo} to {hi}"),
        Bounds {
            min: Some(lo),
            max: None,
        } => format!("a whole number, {lo} or more"),
        Bounds {
            min: None,
            max: Some(hi),
        } => format!("a whole number, at most {hi}"),
        Bounds {
            min: None,
            max: None,
        } => "a whole number".to_string(),
    }
}

/// serde's type words as a person writing YAML reads them: `expected u32` says the range
/// (the field's own when the schema states it), `a sequence` is a list, a struct is a
/// mapping.
fn for_people(reason: &str, bounds: impl FnOnce() -> Option<Bounds>) -> String {
    if !reason.starts_with("invalid type: ") && !reason.starts_with("invalid value: ") {
        return reason.to_string();
    }
    let Some((head, expected)) = reason.split_once(", expected ") else {
        return reason.to_string();
    };
    // What the Rust type alone allows, when the schema says nothing more.
    let by_type = |min, max| Some(Bounds { min, max });
    let whole = match expected {
        "u8" => by_type(Some(0), Some(255)),
        "u16" => by_type(Some(0), Some(65535)),
        "u32" | "u64" | "usize" => by_type(Some(0), None),
        "i32" | "i64" => by_type(None, None),
        _ => None,
    };
    let expected = match (whole, expected) {
        (Some(by_type), _) => whole_number(bounds().unwrap_or(by_type)),
        (None, "f32" | "f64") => "a number".to_string(),
        (None, "a boolean") => "true or false".to_string(),
        (None, "a sequence") => "a list".to_string(),
        (None, "a map") => "a mapping (key: value lines)".to_string(),
        (None, e) if e.starts_with("struct ") => "a mapping (key: value lines)".to_string(),
        (None, e) => e.to_string(),
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
