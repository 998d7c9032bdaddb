//! The stream idle timeout of one downstream connection: while any request on it is open
//! (from its head until its response body ends), something must move, or the connection
//! is closed when `--stream-idle-timeout` passes. What counts as moving: request or
//! response bytes (HTTP/1, counted at the socket: [`Counted`]), HEADERS and DATA frames
//! either way (HTTP/2, counted by the frame guard); PINGs and other control frames do not,
//! so a client that grants no flow-control window cannot keep its buffers held by pinging.
//!
//! One clock per connection, not per stream: an HTTP/2 stream that is stuck while others
//! on its connection move lives until they stop too. Per-stream timers would cost a timer
//! per request; what they would add is bounded anyway by the stream's flow-control window.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::transport::watched::{Observer, Refusal, Watched};

/// What is open and what has moved on one connection.
#[derive(Debug, Default)]
pub struct Activity {
    open: AtomicUsize,
    moved: AtomicU64,
}

impl Activity {
    /// Marks a request open until the returned guard drops.
    pub fn open(self: &Arc<Self>) -> Open {
        self.open.fetch_add(1, Ordering::Relaxed);
        Open(self.clone())
    }

    /// Notes that bytes of some stream moved.
    pub fn moved(&self) {
        self.moved.fetch_add(1, Ordering::Relaxed);
    }

    /// Resolves once requests have been open with nothing moving for `timeout`; never
    /// while none is open (an idle keep-alive connection is not a stalled stream).
    pub async fn stalled(&self, timeout: Duration) {
        let tick = (timeout / 4).max(Duration::from_millis(20));
        let mut seen = self.moved.load(Ordering::Relaxed);
        let mut since = Instant::now();
        loop {
            tokio::time::sleep(tick).await;
            let moved = self.moved.load(Ordering::Relaxed);
            if moved != seen || self.open.load(Ordering::Relaxed) == 0 {
                (seen, since) = (moved, Instant::now());
            } else if since.elapsed() >= timeout {
                return;
            }
        }
    }
}

/// A request that is open: held from its head until its response body ends or drops.
#[derive(Debug)]
pub struct Open(Arc<Activity>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A downstream HTTP/1 connection's I/O, every byte of which belongs to a request or a
/// response: any read or write that moves bytes is activity.
pub type Counted<I> = Watched<I, ByteMoves>;

/// Counts what moves through `io` into `activity`.
pub fn counted<I>(io: I, activity: Arc<Activity>) -> Counted<I> {
    Watched::new(io, ByteMoves(activity))
}

/// The HTTP/1 observer: bytes either way are movement.
#[derive(Debug)]
pub struct ByteMoves(Arc<Activity>);

impl Observer for ByteMoves {
    fn read(&mut self, bytes: &[u8]) -> Result<(), Refusal> {
        if !bytes.is_empty() {
            self.0.moved();
        }
        Ok(())
    }

    fn wrote(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.0.moved();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_open_request_with_nothing_moving_stalls_at_the_timeout() {
        let a = Arc::new(Activity::default());
        let open = a.open();
        let t0 = Instant::now();
        a.stalled(Duration::from_secs(8)).await;
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_secs(8) && waited <= Duration::from_secs(10),
            "{waited:?}"
        );
        drop(open);
    }

    #[tokio::test(start_paused = true)]
    async fn movement_and_idle_keep_alive_never_stall() {
        let a = Arc::new(Activity::default());
        let stalled = a.stalled(Duration::from_secs(2));
        tokio::pin!(stalled);
        // Nothing open for a long while: not a stall.
        assert!(
            tokio::time::timeout(Duration::from_secs(30), stalled.as_mut())
                .await
                .is_err()
        );
        // Open, and moving every second: not a stall either.
        let _open = a.open();
        for _ in 0..30 {
            tokio::select! {
                _ = stalled.as_mut() => panic!("stalled while moving"),
                _ = tokio::time::sleep(Duration::from_secs(1)) => a.moved(),
            }
        }
        // Then it stops moving.
        let t0 = Instant::now();
        stalled.await;
        assert!(t0.elapsed() <= Duration::from_secs(3), "{:?}", t0.elapsed());
    }
}
