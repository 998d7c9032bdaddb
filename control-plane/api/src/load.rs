//! Reading policy: files and directories of YAML into validated documents, and every
//! problem as a [`Diagnostic`] naming the file, line, column, field path and reason.
//! Nothing is dropped silently: a document that cannot be used is an error.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

mod errors;

use errors::{closest, typed};

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

fn is_yaml(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

/// The YAML files a list of paths names: files as given, directories searched recursively
/// for `*.yaml` and `*.yml` (hidden entries skipped), in sorted order.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Diagnostic> {
    let mut out = Vec::new();
    for p in paths {
        if p == Path::new("-") {
            out.push(p.clone());
            continue;
        }
        let meta = std::fs::metadata(p).map_err(|e| Diagnostic {
            file: p.clone(),
            position: None,
            path: String::new(),
            reason: format!("cannot read: {e}"),
        })?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found).map_err(|e| Diagnostic {
                file: p.clone(),
                position: None,
                path: String::new(),
                reason: format!("cannot list: {e}"),
            })?;
            found.sort();
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if entry.file_type()?.is_dir() {
            walk(&path, out)?;
        } else if is_yaml(&path) {
            out.push(path);
        }
    }
    Ok(())
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

/// Turns one parsed document into its typed kind. Errors are (field path, reason). Used by
/// the loader and by proxies receiving documents from the control plane.
pub fn document(value: &serde_json::Value) -> Result<Document, (String, String)> {
    let api_version = value
        .get("apiVersion")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let kind = value.get("kind").and_then(|v| v.as_str()).unwrap_or("");
    if api_version != API_VERSION {
        return Err((
            "apiVersion".into(),
            format!("must be {API_VERSION}, got {api_version:?}"),
        ));
    }
    match kind {
        "Backend" => typed::<Backend>(value).map(Document::Backend),
        "TrafficPolicy" => typed::<TrafficPolicy>(value).map(Document::TrafficPolicy),
        "MeshConfig" => typed::<MeshConfig>(value).map(Document::MeshConfig),
        "AuthorizationPolicy" => {
            typed::<AuthorizationPolicy>(value).map(Document::AuthorizationPolicy)
        }
        other => Err((
            "kind".to_string(),
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

/// Parses one file's text (possibly several `---` documents) into `loaded`.
pub fn load_str(file: &Path, text: &str, loaded: &mut Loaded) {
    let diag = |position, path: &str, reason: String| Diagnostic {
        file: file.to_path_buf(),
        position,
        path: path.to_string(),
        reason,
    };
    let values: Vec<serde_json::Value> = match serde_saphyr::from_multiple(text) {
        Ok(v) => v
            .into_iter()
            .filter(|v: &serde_json::Value| !v.is_null())
            .collect(),
        Err(e) => {
            let position = e.location().map(|l| Position {
                line: l.line() as usize,
                column: l.column() as usize,
            });
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid YAML");
            // The parser repeats the position in its message; we print it once, up front.
            let first = first.strip_prefix("error: ").unwrap_or(first);
            let reason = match first.split_once(": ") {
                Some((pos, rest)) if pos.starts_with("line ") => rest,
                _ => first,
            }
            .to_string();
            loaded
                .diagnostics
                .push(diag(position, "", format!("invalid YAML: {reason}")));
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
        let parsed = document(value);
        let document = match parsed {
            Ok(d) => d,
            Err((path, reason)) => {
                loaded.diagnostics.push(diag(at(&path), &path, reason));
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
