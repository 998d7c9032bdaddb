//! Reading policy: files and directories of YAML into validated documents, and every
//! problem as a [`Diagnostic`] naming the file, line, column, field path and reason.
//! Nothing is dropped silently: a document that cannot be used is an error.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

mod errors;
mod files;
mod schema;
mod syntax;

pub use files::expand;

use errors::closest;
use schema::{SchemaErrors, typed};

use crate::locate::{self, DocIndex, Position};
use crate::policy::validate::validate;
use crate::policy::{
    API_VERSION, AuthorizationPolicy, Backend, Document, KINDS, MeshConfig, TargetKind,
    TrafficPolicy,
};

/// One problem in the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file.
    pub file: PathBuf,
    /// Where in it, when known.
    pub position: Option<Position>,
    /// Field path (`spec.retries.budget.ratio`); empty for file-level problems.
    pub path: String,
    /// Why.
    pub reason: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(p) = self.position {
            write!(f, ":{}:{}", p.line, p.column)?;
        }
        if self.path.is_empty() {
            write!(f, ": {}", self.reason)
        } else {
            write!(f, ": {}: {}", self.path, self.reason)
        }
    }
}

/// A document and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Sourced {
    /// The file.
    pub file: PathBuf,
    /// Where the document's root is.
    pub position: Position,
    /// The document.
    pub document: Document,
    /// Where its fields are.
    pub index: DocIndex,
}

impl Sourced {
    /// The position of a field (or of its nearest ancestor).
    pub fn at(&self, path: &str) -> Position {
        self.index.find(path).unwrap_or(self.position)
    }
}

/// What a load produced. Documents with problems are not in `documents`.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Valid documents, in file order.
    pub documents: Vec<Sourced>,
    /// Every problem found.
    pub diagnostics: Vec<Diagnostic>,
    /// Files read.
    pub files: usize,
}

impl Loaded {
    /// Whether the policy can be used as it is.
    pub fn is_valid(&self) -> bool {
        self.diagnostics.is_empty()
    }
}

/// Loads and validates every document under `paths` (`-` is standard input), then checks
/// the documents against each other.
pub fn load_paths(paths: &[PathBuf]) -> Loaded {
    let mut loaded = Loaded::default();
    let files = match expand(paths) {
        Ok(f) => f,
        Err(d) => {
            loaded.diagnostics.push(d);
            return loaded;
        }
    };
    for file in files {
        loaded.files += 1;
        let text = if file == Path::new("-") {
            std::io::read_to_string(std::io::stdin())
        } else {
            std::fs::read_to_string(&file)
        };
        match text {
            Ok(text) if file == Path::new("-") => {
                load_str(Path::new("<stdin>"), &text, &mut loaded)
            }
            Ok(text) => load_str(&file, &text, &mut loaded),
            Err(e) => loaded.diagnostics.push(Diagnostic {
                file,
                position: None,
                path: String::new(),
                reason: format!("cannot read: {e}"),
            }),
        }
    }
    cross_check(&mut loaded);
    loaded
}

/// Schema errors reported per document, in document order; the rest are counted.
pub const MAX_ERRORS_PER_DOCUMENT: usize = 50;

/// Turns one parsed document into its typed kind. The error is the first schema error
/// found, as (field path, reason): what the admission webhook, the Kubernetes source and
/// proxies receiving documents from the control plane use. The loader reports every one.
pub fn document(value: &serde_json::Value) -> Result<Document, (String, String)> {
    parse(value, 1).map_err(|e| e.errors.into_iter().next().unwrap_or_default())
}

/// [`document`] with every schema error as `field: reason` lines (at most
/// [`MAX_ERRORS_PER_DOCUMENT`], then a count of the rest): what the admission webhook and
/// an object's status report, as `bulwarkctl validate` does.
pub fn document_problems(value: &serde_json::Value) -> Result<Document, Vec<String>> {
    parse(value, MAX_ERRORS_PER_DOCUMENT).map_err(|e| {
        let mut lines: Vec<String> = e
            .errors
            .into_iter()
            .map(|(path, reason)| format!("{path}: {reason}"))
            .collect();
        if e.cut_short || lines.len() >= MAX_ERRORS_PER_DOCUMENT {
            lines.push("… and more errors in this document".to_string());
        }
        lines
    })
}

/// One document as its kind, or its schema errors (at most `limit` of them). A wrong
/// apiVersion or kind is the one error: the schema to check the rest against is unknown.
fn parse(value: &serde_json::Value, limit: usize) -> Result<Document, SchemaErrors> {
    let api_version = value
        .get("apiVersion")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let kind = value.get("kind").and_then(|v| v.as_str()).unwrap_or("");
    if api_version != API_VERSION {
        return Err(SchemaErrors::one(
            "apiVersion",
            format!("must be {API_VERSION}, got {api_version:?}"),
        ));
    }
    match kind {
        "Backend" => typed::<Backend>(value, limit).map(Document::Backend),
        "TrafficPolicy" => typed::<TrafficPolicy>(value, limit).map(Document::TrafficPolicy),
        "MeshConfig" => typed::<MeshConfig>(value, limit).map(Document::MeshConfig),
        "AuthorizationPolicy" => {
            typed::<AuthorizationPolicy>(value, limit).map(Document::AuthorizationPolicy)
        }
        other => Err(SchemaErrors::one(
            "kind",
            match closest(other, &KINDS) {
                Some(near) => format!(
                    "must be one of {}, got {other:?}; did you mean {near}?",
                    KINDS.join(", ")
                ),
                None => format!("must be one of {}, got {other:?}", KINDS.join(", ")),
            },
        )),
    }
}

/// The YAML documents of one file's text, empty ones (such as after a trailing `---`)
/// left out; or why it is not YAML: the parser's error, then where a bracket or quote it
/// leaves open was opened. Also what `bulwarkctl inject` reads manifests with.
pub fn yaml_documents(file: &Path, text: &str) -> Result<Vec<serde_json::Value>, Vec<Diagnostic>> {
    match serde_saphyr::from_multiple(text) {
        Ok(v) => Ok(v
            .into_iter()
            .filter(|v: &serde_json::Value| !v.is_null())
            .collect()),
        Err(e) => Err(syntax::problems(text, &e)
            .into_iter()
            .map(|(position, reason)| Diagnostic {
                file: file.to_path_buf(),
                position,
                path: String::new(),
                reason,
            })
            .collect()),
    }
}

/// Parses one file's text (possibly several `---` documents) into `loaded`.
pub fn load_str(file: &Path, text: &str, loaded: &mut Loaded) {
    let diag = |position, path: &str, reason: String| Diagnostic {
        file: file.to_path_buf(),
        position,
        path: path.to_string(),
        reason,
    };
    let values = match yaml_documents(file, text) {
        Ok(v) => v,
        Err(problems) => {
            loaded.diagnostics.extend(problems);
            return;
        }
    };
    let mut indexes = locate::index(text).unwrap_or_default().into_iter();
    for value in &values {
        let idx = indexes.next().unwrap_or_default();
        let at = |path: &str| idx.find(path);
        let root = at("").unwrap_or(Position {
            line: idx.start_line.max(1),
            column: 1,
        });
        if !value.is_object() {
            loaded.diagnostics.push(diag(
                Some(root),
                "",
                "a policy document must be a mapping with apiVersion, kind, metadata and spec"
                    .into(),
            ));
            continue;
        }
        let document = match parse(value, usize::MAX) {
            Ok(d) => d,
            Err(found) => {
                for (position, path, reason) in in_document_order(found, &idx, root) {
                    loaded.diagnostics.push(diag(position, &path, reason));
                }
                continue;
            }
        };
        let problems = validate(&document);
        if problems.is_empty() {
            loaded.documents.push(Sourced {
                file: file.to_path_buf(),
                position: root,
                document,
                index: idx,
            });
        } else {
            for p in problems {
                loaded
                    .diagnostics
                    .push(diag(at(&p.path), &p.path, p.reason));
            }
        }
    }
}

/// A document's schema errors as (position, path, reason): in document order, at most
/// [`MAX_ERRORS_PER_DOCUMENT`], then how many more there are, at the document's root.
fn in_document_order(
    found: SchemaErrors,
    idx: &DocIndex,
    root: Position,
) -> Vec<(Option<Position>, String, String)> {
    let mut located: Vec<(Option<Position>, String, String)> = found
        .errors
        .into_iter()
        .map(|(path, reason)| (idx.find(&path), path, reason))
        .collect();
    // Found in serde's order (keys sorted); read in the document's.
    located.sort_by_key(|(position, ..)| *position);
    let more = located.len().saturating_sub(MAX_ERRORS_PER_DOCUMENT);
    located.truncate(MAX_ERRORS_PER_DOCUMENT);
    let count = if found.cut_short {
        format!("at least {more}")
    } else {
        more.to_string()
    };
    if more > 0 || found.cut_short {
        located.push((
            Some(root),
            String::new(),
            format!("… and {count} more errors in this document"),
        ));
    }
    located
}

/// Rules across documents: one object per kind, namespace and name; one MeshConfig; a
/// TrafficPolicy that targets a Backend needs that Backend.
fn cross_check(loaded: &mut Loaded) {
    let mut seen: BTreeMap<(&str, String, String), &Sourced> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut mesh_configs = Vec::new();
    for s in &loaded.documents {
        let m = s.document.metadata();
        let key = (s.document.kind(), m.namespace().to_string(), m.name.clone());
        if let Some(first) = seen.get(&key) {
            problems.push(Diagnostic {
                file: s.file.clone(),
                position: Some(s.at("metadata.name")),
                path: "metadata.name".into(),
                reason: format!(
                    "{} {}/{} is already defined at {}:{}",
                    key.0,
                    key.1,
                    key.2,
                    first.file.display(),
                    first.at("metadata.name").line
                ),
            });
        } else {
            seen.insert(key, s);
        }
        if let Document::MeshConfig(_) = s.document {
            mesh_configs.push(s);
        }
    }
    if let Some(extra) = mesh_configs.get(1) {
        problems.push(Diagnostic {
            file: extra.file.clone(),
            position: Some(extra.at("kind")),
            path: "kind".into(),
            reason: format!(
                "only one MeshConfig may exist; the first is at {}:{}",
                mesh_configs[0].file.display(),
                mesh_configs[0].position.line
            ),
        });
    }
    let backends: HashSet<(String, String)> = loaded
        .documents
        .iter()
        .filter(|s| matches!(s.document, Document::Backend(_)))
        .map(|s| {
            (
                s.document.metadata().namespace().to_string(),
                s.document.metadata().name.clone(),
            )
        })
        .collect();
    for s in &loaded.documents {
        if let Document::TrafficPolicy(t) = &s.document {
            let target = &t.spec.target_ref;
            let key = (t.metadata.namespace().to_string(), target.name.clone());
            if target.kind == TargetKind::Backend && !backends.contains(&key) {
                problems.push(Diagnostic {
                    file: s.file.clone(),
                    position: Some(s.at("spec.targetRef.name")),
                    path: "spec.targetRef.name".into(),
                    reason: format!("no Backend named {:?} in namespace {:?}", key.1, key.0),
                });
            }
        }
    }
    loaded.diagnostics.extend(problems);
}

#[cfg(test)]
mod tests;
