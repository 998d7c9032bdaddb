//! Every schema error of a document, not only the first. serde stops at the first error, so
//! the node at fault is taken out of a copy of the document and the copy is read again,
//! until it reads or nothing is left to take out. Each error keeps serde's words, made
//! readable by [`super::errors`].
//!
//! Taking a node out hides no error the document has. serde looks for missing fields only
//! once every field present beside them has been read without error, so the mapping that
//! misses one can go whole. serde names the first missing field only; the kind's schema
//! (the one the CRDs are generated from) names them all, less those an earlier pass took
//! out, which the document does have. `load/tests.rs` checks this over every pair of
//! mistakes in the shipped examples.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_path_to_error::Segment;

use super::errors::{Bounds, explain, missing_field, unknown_field};

/// Reads of one document at most. Each takes a node out, so this bounds the work a
/// document made of mistakes costs.
const MAX_PASSES: usize = 1000;

/// One step of a field path, in the document as written.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// What reading a document as its kind found wrong.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct SchemaErrors {
    /// (field path, reason), in the order found (not document order).
    pub(super) errors: Vec<(String, String)>,
    /// Whether [`MAX_PASSES`] stopped the search with errors perhaps left.
    pub(super) cut_short: bool,
}

impl SchemaErrors {
    pub(super) fn one(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            errors: vec![(path.into(), reason.into())],
            cut_short: false,
        }
    }
}

/// `value` as a `T`, or its schema errors: at most `limit` (1 when only the first matters).
pub(super) fn typed<T: DeserializeOwned + JsonSchema>(
    value: &Value,
    limit: usize,
) -> Result<T, SchemaErrors> {
    let mut error = match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(t) => return Ok(t),
        Err(e) => e,
    };
    let schema = schema_of::<T>();
    let mut rest = value.clone();
    // Nodes taken out, as paths in the document as written.
    let mut taken: Vec<Vec<Step>> = Vec::new();
    let mut found = SchemaErrors::default();
    for pass in 1.. {
        let mut message = error.inner().to_string();
        let Some(mut at) = steps(error.path()) else {
            // A path serde could not follow: nothing to take out.
            found
                .errors
                .push(explain(&error.path().to_string(), &message, || None));
            break;
        };
        let mut written = as_written(&at, &taken);
        if let Some(n) = list_for_mapping(&schema, &rest, &at, &written) {
            at.truncate(n);
            written.truncate(n);
            message = "invalid type: sequence, expected a map".to_string();
        }
        if let Some(first) = missing_field(&message) {
            for name in missing(&schema, &rest, &at, &written, &taken, first) {
                let message = format!("missing field `{name}`");
                found
                    .errors
                    .push(explain(&display(&written), &message, || None));
            }
        } else {
            let range = || bounds(&schema, &written);
            let (path, mut reason) = explain(&display(&written), &message, range);
            if let Some(field) = unknown_field(&message)
                && !reason.contains("did you mean")
            {
                reason.push_str(&belongs(&schema, field, &written));
            }
            found.errors.push((path, reason));
        }
        if let Some(field) = unknown_field(&message)
            && at.last() != Some(&Step::Key(field.to_string()))
        {
            at.push(Step::Key(field.to_string()));
            written.push(Step::Key(field.to_string()));
        }
        if found.errors.len() >= limit || !take_out(&mut rest, &at) {
            break;
        }
        if pass == MAX_PASSES {
            found.cut_short = true;
            break;
        }
        taken.push(written);
        match serde_path_to_error::deserialize::<_, T>(&rest) {
            Ok(_) => break,
            Err(e) => error = e,
        }
    }
    Err(found)
}

/// The kind's schema, made once per kind: the search asks it for ranges, required fields
/// and where a mapping belongs.
fn schema_of<T: JsonSchema>() -> Arc<Value> {
    static SCHEMAS: Mutex<BTreeMap<String, Arc<Value>>> = Mutex::new(BTreeMap::new());
    let mut schemas = SCHEMAS.lock().unwrap_or_else(PoisonError::into_inner);
    let schema = schemas
        .entry(T::schema_name().into_owned())
        .or_insert_with(|| Arc::new(crate::crd::spec_schema::<T>()));
    Arc::clone(schema)
}

/// serde's path as steps; `None` when a step is not a field or an index.
fn steps(path: &serde_path_to_error::Path) -> Option<Vec<Step>> {
    path.iter()
        .map(|s| match s {
            Segment::Map { key } => Some(Step::Key(key.clone())),
            Segment::Seq { index } => Some(Step::Index(*index)),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect()
}

/// A path in the copy (with nodes taken out) as a path in the document as written: an
/// index counts the list items taken out before it.
fn as_written(at: &[Step], taken: &[Vec<Step>]) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::with_capacity(at.len());
    for step in at {
        let step = match step {
            Step::Key(k) => Step::Key(k.clone()),
            Step::Index(i) => {
                let mut gone: Vec<usize> = taken
                    .iter()
                    .filter_map(|t| match t.split_last() {
                        Some((Step::Index(g), parent)) if parent == out.as_slice() => Some(*g),
                        _ => None,
                    })
                    .collect();
                gone.sort_unstable();
                let mut i = *i;
                for g in gone {
                    if g <= i {
                        i += 1;
                    }
                }
                Step::Index(i)
            }
        };
        out.push(step);
    }
    out
}

/// The path as the loader writes paths: `spec.routes[0].match`, the root empty.
fn display(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(k) if out.is_empty() => out.push_str(k),
            Step::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Removes the node at `at`; false when there is none (or it is the root).
fn take_out(value: &mut Value, at: &[Step]) -> bool {
    let Some((last, parent)) = at.split_last() else {
        return false;
    };
    let mut node = value;
    for step in parent {
        let next = match (step, node) {
            (Step::Key(k), Value::Object(m)) => m.get_mut(k),
            (Step::Index(i), Value::Array(a)) => a.get_mut(*i),
            _ => None,
        };
        let Some(next) = next else {
            return false;
        };
        node = next;
    }
    match (last, node) {
        (Step::Key(k), Value::Object(m)) => m.remove(k).is_some(),
        (Step::Index(i), Value::Array(a)) if *i < a.len() => {
            a.remove(*i);
            true
        }
        _ => false,
    }
}

/// Every required field missing from the mapping at `at` (`written` in the document as
/// written): serde names the first only, the schema names them all. A field an earlier
/// pass took out is not missing from the document, and neither is one still there (it
/// was read without error before serde looked for missing fields).
fn missing(
    schema: &Value,
    rest: &Value,
    at: &[Step],
    written: &[Step],
    taken: &[Vec<Step>],
    first: &str,
) -> Vec<String> {
    let mut names: Vec<&str> = schema_at(schema, written)
        .and_then(|s| s.get("required"))
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !names.contains(&first) {
        names.insert(0, first);
    }
    let present = value_at(rest, at);
    names
        .into_iter()
        .filter(|name| present.is_none_or(|p| p.get(name).is_none()))
        .filter(|name| {
            let mut child = written.to_vec();
            child.push(Step::Key(name.to_string()));
            !taken.contains(&child)
        })
        .map(str::to_string)
        .collect()
}

/// How far along `at` the document has a list where the schema wants a mapping. serde
/// reads a mapping's fields from a list too, by position, and so reports the first field's
/// error (`metadata[0]: expected a string`) instead of the list's.
fn list_for_mapping(schema: &Value, rest: &Value, at: &[Step], written: &[Step]) -> Option<usize> {
    (0..=at.len()).find(|&n| {
        value_at(rest, &at[..n]).is_some_and(Value::is_array)
            && schema_at(schema, &written[..n])
                .and_then(|s| s.get("type"))
                .and_then(Value::as_str)
                == Some("object")
    })
}

/// The node at `at` of a document.
fn value_at<'a>(value: &'a Value, at: &[Step]) -> Option<&'a Value> {
    at.iter().try_fold(value, |node, step| match step {
        Step::Key(k) => node.get(k),
        Step::Index(i) => node.get(i),
    })
}

/// The schema of the node at `path`.
fn schema_at<'a>(schema: &'a Value, path: &[Step]) -> Option<&'a Value> {
    path.iter().try_fold(schema, |node, step| match step {
        Step::Key(k) => node
            .get("properties")
            .and_then(|p| p.get(k))
            .or_else(|| node.get("additionalProperties").filter(|a| a.is_object())),
        Step::Index(_) => node.get("items"),
    })
}

/// Where an unknown field `name` found under `under` belongs, if the kind has a field of
/// that name elsewhere: `; it belongs under spec.retries` (at most three places).
fn belongs(schema: &Value, name: &str, under: &[Step]) -> String {
    let mut homes = Vec::new();
    homes_of(schema, name, &mut String::new(), &mut homes, 0);
    let here = display(under);
    homes.retain(|h| *h != here);
    match homes.as_slice() {
        [] => String::new(),
        [one] => format!("; it belongs under `{one}`"),
        many => {
            let many: Vec<String> = many.iter().take(3).map(|h| format!("`{h}`")).collect();
            format!("; it belongs under {}", many.join(" or "))
        }
    }
}

/// Collects the paths (as `display` writes them, lists as `[]`) whose mapping has a field
/// `name`.
fn homes_of(node: &Value, name: &str, path: &mut String, homes: &mut Vec<String>, depth: usize) {
    if depth > 12 {
        return;
    }
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        if props.contains_key(name) {
            homes.push(path.clone());
        }
        for (key, child) in props {
            let len = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(key);
            homes_of(child, name, path, homes, depth + 1);
            path.truncate(len);
        }
    }
    if let Some(items) = node.get("items") {
        let len = path.len();
        path.push_str("[]");
        homes_of(items, name, path, homes, depth + 1);
        path.truncate(len);
    }
}

/// The bounds the kind's schema gives the whole number at `path`, if it is one.
fn bounds(schema: &Value, path: &[Step]) -> Option<Bounds> {
    let node = schema_at(schema, path)?;
    if node.get("type").and_then(Value::as_str) != Some("integer") {
        return None;
    }
    let number = |key: &str| {
        let n = node.get(key)?;
        n.as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
    };
    Some(Bounds {
        min: number("minimum"),
        max: number("maximum"),
    })
}
