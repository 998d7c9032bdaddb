//! Which files a list of paths names: files as given, directories searched for YAML.

use std::path::{Path, PathBuf};

use super::Diagnostic;

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
