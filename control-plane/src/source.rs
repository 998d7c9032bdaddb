//! The policy directory. Loaded whole at start and whenever its files change (polled: it
//! works the same on every filesystem, including Kubernetes ConfigMap mounts whose files are
//! swapped through symlinks). A change is applied only when every document is valid.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bulwark_api::load;

use crate::state::State;

/// What identifies the directory's contents: each policy file's path, size and mtime.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let files = load::expand(&[dir.to_path_buf()]).unwrap_or_default();
    files
        .into_iter()
        .map(|f| {
            let meta = std::fs::metadata(&f).ok();
            let len = meta.as_ref().map(|m| m.len()).unwrap_or(0);
            let mtime = meta.and_then(|m| m.modified().ok());
            (f, len, mtime)
        })
        .collect()
}

/// Loads `dir`; serves it as the next version if valid, else records why not.
/// Returns the new version, or the problems.
pub fn reload(state: &State, dir: &Path) -> Result<u64, Vec<String>> {
    let loaded = load::load_paths(&[dir.to_path_buf()]);
    if loaded.is_valid() {
        let docs = loaded.documents.len();
        let version = state.publish(loaded.documents.into_iter().map(|s| s.document).collect());
        tracing::info!(version, documents = docs, files = loaded.files, dir = %dir.display(), "policy loaded");
        Ok(version)
    } else {
        let problems: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
        for p in &problems {
            tracing::error!(problem = %p, "policy change rejected; the previous policy stays in force");
        }
        state.reject(problems.join("\n"));
        Err(problems)
    }
}

/// Polls `dir` every `interval` and reloads once a change has been stable for one interval
/// (so an editor's or a ConfigMap's multi-file write is read as one change).
pub async fn watch(state: Arc<State>, dir: PathBuf, interval: Duration) {
    let mut applied = fingerprint(&dir);
    loop {
        tokio::time::sleep(interval).await;
        let seen = fingerprint(&dir);
        if seen == applied {
            continue;
        }
        tokio::time::sleep(interval).await;
        if fingerprint(&dir) != seen {
            continue; // still being written; look again next round
        }
        applied = seen;
        let _ = reload(&state, &dir);
    }
}
