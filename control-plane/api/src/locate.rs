//! Where each field of a YAML document stands, so that a problem found after parsing (a
//! ratio above 1, a missing Backend) can point at the line and column of its field.

use std::collections::HashMap;

use serde_saphyr::granit_parser::{Event, Parser, Span};

/// A 1-based line and column; ordered as in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

/// Field positions of one document, keyed by path (`spec.routes[0].match.pathPrefix`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocIndex {
    /// Line where the document starts.
    pub start_line: usize,
    positions: HashMap<String, Position>,
}

impl DocIndex {
    /// The position of `path`, or of its nearest ancestor that exists (a missing field is
    /// reported where its parent is).
    pub fn find(&self, path: &str) -> Option<Position> {
        let mut p = path;
        loop {
            if let Some(pos) = self.positions.get(p) {
                return Some(*pos);
            }
            if p.is_empty() {
                return None;
            }
            p = p.rfind(['.', '[']).map_or("", |cut| &p[..cut]);
        }
    }
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, next: usize },
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

fn position(span: &Span) -> Position {
    Position {
        line: span.start.line(),
        column: span.start.col() + 1,
    }
}

/// Indexes every document of a YAML stream that has content (empty documents, such as the
/// one after a trailing `---`, are skipped, as the deserializer skips them).
pub fn index(text: &str) -> Result<Vec<DocIndex>, String> {
    let mut docs: Vec<DocIndex> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut current: Option<DocIndex> = None;
    // A document whose root is a null scalar is empty, like the one after a trailing `---`.
    let mut null_root = false;
    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| e.to_string())?;
        match event {
            Event::DocumentStart(..) => {
                stack.clear();
                current = Some(DocIndex {
                    start_line: span.start.line(),
                    positions: HashMap::new(),
                });
                null_root = false;
            }
            Event::DocumentEnd => {
                if let Some(d) = current
                    .take()
                    .filter(|d| !d.positions.is_empty() && !null_root)
                {
                    docs.push(d);
                }
            }
            Event::MappingStart(..)
            | Event::SequenceStart(..)
            | Event::Scalar(..)
            | Event::Alias(..) => {
                let Some(doc) = current.as_mut() else {
                    continue;
                };
                let path = match stack.last_mut() {
                    None => {
                        null_root = matches!(&event, Event::Scalar(v, ..) if matches!(v.as_ref(), "" | "~" | "null"));
                        String::new()
                    }
                    Some(Frame::Map { path, key }) => match key.take() {
                        Some(k) => join(path, &k),
                        None => {
                            // This node is a key. Only scalar keys name fields.
                            let name = match &event {
                                Event::Scalar(v, ..) => v.to_string(),
                                _ => "?".to_string(),
                            };
                            let p = join(path, &name);
                            doc.positions.entry(p).or_insert_with(|| position(&span));
                            *key = Some(name);
                            if !matches!(event, Event::MappingStart(..) | Event::SequenceStart(..))
                            {
                                continue;
                            }
                            // A complex key: track its structure so the stack stays balanced.
                            String::from("?")
                        }
                    },
                    Some(Frame::Seq { path, next }) => {
                        let p = format!("{path}[{next}]");
                        *next += 1;
                        p
                    }
                };
                doc.positions
                    .entry(path.clone())
                    .or_insert_with(|| position(&span));
                match event {
                    Event::MappingStart(..) => stack.push(Frame::Map { path, key: None }),
                    Event::SequenceStart(..) => stack.push(Frame::Seq { path, next: 0 }),
                    _ => {}
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
            }
            _ => {}
        }
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
apiVersion: bulwark.dev/v1alpha1
kind: TrafficPolicy
spec:
  retries:
    budget:
      ratio: 1.5
  routes:
    - match:
        pathPrefix: api
    - match: {method: get}
---
# second document
kind: Backend
spec:
  endpoints: [10.0.0.1:80, \"bad\"]
---
";

    #[test]
    fn fields_sequences_and_flow_style_are_located() {
        let docs = index(TEXT).unwrap();
        assert_eq!(
            docs.len(),
            2,
            "the empty document after the last --- is skipped"
        );
        let d = &docs[0];
        assert_eq!(
            d.find("spec.retries.budget.ratio"),
            Some(Position { line: 6, column: 7 })
        );
        assert_eq!(
            d.find("spec.routes[0].match.pathPrefix"),
            Some(Position { line: 9, column: 9 })
        );
        assert_eq!(
            d.find("spec.routes[1].match.method"),
            Some(Position {
                line: 10,
                column: 15
            })
        );
        assert_eq!(
            d.find("spec.routes[1]"),
            Some(Position {
                line: 10,
                column: 7
            })
        );
        let b = &docs[1];
        assert_eq!(
            b.find("spec.endpoints[1]"),
            Some(Position {
                line: 15,
                column: 28
            })
        );
    }

    #[test]
    fn a_missing_field_is_reported_at_its_parent() {
        let docs = index(TEXT).unwrap();
        assert_eq!(
            docs[0].find("spec.retries.attempts"),
            Some(Position { line: 4, column: 3 })
        );
        assert_eq!(
            docs[0].find("metadata.name"),
            Some(Position { line: 1, column: 1 }),
            "the document itself"
        );
    }
}
