//! Commands on files that need no control plane: `validate` (policy) and `inject`
//! (Kubernetes manifests).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bulwark_api::load;

use super::print_doc;

/// `validate -o json|yaml`: the files read, the valid documents, and every problem with its
/// file, line, column, field and reason.
fn validate_doc(loaded: &load::Loaded, paths: &[PathBuf]) -> serde_json::Value {
    let mut diagnostics: Vec<serde_json::Value> = loaded
        .diagnostics
        .iter()
        .map(|d| {
            serde_json::json!({
                "file": d.file.display().to_string(),
                "line": d.position.map(|p| p.line),
                "column": d.position.map(|p| p.column),
                "path": d.path,
                "reason": d.reason,
            })
        })
        .collect();
    if diagnostics.is_empty() && loaded.documents.is_empty() {
        let named: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        diagnostics.push(serde_json::json!({
            "file": named.join(", "),
            "line": null,
            "column": null,
            "path": "",
            "reason": "no policy documents",
        }));
    }
    serde_json::json!({
        "files": loaded.files,
        "documents": loaded.documents.len(),
        "valid": diagnostics.is_empty(),
        "diagnostics": diagnostics,
    })
}

pub(crate) fn validate(paths: &[PathBuf], output: &str) -> ExitCode {
    let loaded = load::load_paths(paths);
    if output != "text" {
        let doc = validate_doc(&loaded, paths);
        let valid = doc["valid"] == true;
        if let Err(e) = print_doc(&doc, output) {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
        return if valid {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    for d in &loaded.diagnostics {
        eprintln!("error: {d}");
    }
    let docs = loaded.documents.len();
    let errors = loaded.diagnostics.len();
    if errors == 0 && docs == 0 {
        // Nothing to check is not a pass: a wrong path or an empty pipe would go unnoticed.
        eprintln!(
            "error: no policy documents in {} ({} files read)",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            loaded.files
        );
        return ExitCode::FAILURE;
    }
    if errors == 0 {
        println!("{} files, {docs} documents: valid", loaded.files);
        ExitCode::SUCCESS
    } else {
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        eprintln!(
            "{}, {}, {}",
            plural(loaded.files, "file"),
            plural(docs, "valid document"),
            plural(errors, "error")
        );
        ExitCode::FAILURE
    }
}

/// Every document of every file (`-` is standard input), nulls dropped.
fn read_manifests(paths: &[PathBuf]) -> anyhow::Result<Vec<serde_json::Value>> {
    use anyhow::Context;
    let mut docs = Vec::new();
    for path in paths {
        let text = if path.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).context("reading standard input")?
        } else {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        };
        let name = if path.as_os_str() == "-" {
            Path::new("<stdin>")
        } else {
            path.as_path()
        };
        // FILE:LINE:COLUMN: invalid YAML: …, as validate says it (and said once).
        let values = load::yaml_documents(name, &text).map_err(|problems| {
            let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
            anyhow::anyhow!("{}", shown.join("; "))
        })?;
        docs.extend(values);
    }
    anyhow::ensure!(!docs.is_empty(), "no manifests in the input");
    Ok(docs)
}

/// The documents as one YAML stream.
fn write_manifests(docs: &[serde_json::Value]) -> anyhow::Result<String> {
    let mut out = String::new();
    for (i, doc) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_saphyr::to_string(doc)?);
    }
    Ok(out)
}

/// `bulwarkctl inject`: every document of every file, injected, as YAML on standard output;
/// a count of what was done on standard error.
pub(crate) fn inject(
    paths: &[PathBuf],
    settings: &bulwark_control_plane::inject::Settings,
) -> anyhow::Result<()> {
    use anyhow::Context;
    use bulwark_control_plane::inject::{Change, manifest};
    let mut docs = read_manifests(paths)?;
    let mut counts = [0usize; 3];
    for (i, doc) in docs.iter_mut().enumerate() {
        let changes = manifest(doc, settings).with_context(|| format!("document {}", i + 1))?;
        for c in changes {
            counts[match c {
                Change::Injected => 0,
                Change::AlreadyInjected => 1,
                Change::OptedOut => 2,
            }] += 1;
        }
    }
    print!("{}", write_manifests(&docs)?);
    eprintln!(
        "injected {} pod templates ({} already injected, {} opted out)",
        counts[0], counts[1], counts[2]
    );
    Ok(())
}

/// `bulwarkctl uninject`: the documents with the sidecar taken out, on standard output.
pub(crate) fn uninject(paths: &[PathBuf]) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut docs = read_manifests(paths)?;
    let (mut removed, mut templates) = (0, 0);
    for (i, doc) in docs.iter_mut().enumerate() {
        let changes = bulwark_control_plane::inject::uninject(doc)
            .with_context(|| format!("document {}", i + 1))?;
        templates += changes.len();
        removed += changes.iter().filter(|c| **c).count();
    }
    print!("{}", write_manifests(&docs)?);
    eprintln!("uninjected {removed} of {templates} pod templates");
    Ok(())
}
