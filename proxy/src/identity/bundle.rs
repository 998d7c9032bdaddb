//! The trust bundle follows its file: the mounted anchors are checked for a change every
//! [`BUNDLE_POLL`] and, when they parse, swapped in whole for the next handshake. A root can
//! then be added or retired without restarting a proxy. A file that does not parse leaves
//! the bundle in force, loudly.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use bulwark_identity::tls::SharedBundle;
use bulwark_identity::verify::TrustBundle;

use crate::drain::Drain;

/// How often the anchors file is checked.
pub const BUNDLE_POLL: Duration = Duration::from_secs(5);

/// What identifies a version of the file: its modification time and length. A Kubernetes
/// ConfigMap or Secret volume swaps a symlink, which changes both.
fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Re-reads `path` into `bundle` whenever it changes, until drain.
pub async fn follow(path: PathBuf, bundle: SharedBundle, drain: Drain) {
    let mut seen = stamp(&path);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(BUNDLE_POLL) => {}
            _ = drain.signaled() => return,
        }
        let now = stamp(&path);
        if now == seen {
            continue;
        }
        seen = now;
        match TrustBundle::from_file(&path) {
            Ok(next) => {
                tracing::info!(
                    path = %path.display(),
                    trust_anchors = ?next.fingerprints(),
                    "trust bundle changed: new handshakes verify against it"
                );
                bundle.store(std::sync::Arc::new(next));
            }
            Err(e) => tracing::warn!(
                path = %path.display(),
                error = %e,
                "trust bundle file changed but does not parse: keeping the bundle in force"
            ),
        }
    }
}
