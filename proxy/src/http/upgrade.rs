//! HTTP/1.1 Upgrade (WebSocket and the like): once the upstream answers 101, the two
//! upgraded halves are joined and copied as bytes, with the opaque idle timeout.

use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::transport::copy::{self, ByteCounters};

/// Joins the downstream and upstream halves and copies bytes until either side ends.
pub async fn tunnel(down: OnUpgrade, up: OnUpgrade, idle: Duration, bytes: &ByteCounters) {
    let (down, up) = match tokio::try_join!(down, up) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    if let Err(e) = copy::bidirectional(TokioIo::new(down), TokioIo::new(up), idle, bytes).await {
        tracing::debug!(error = %e, "upgraded connection ended with an error");
    }
}
