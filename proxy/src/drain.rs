//! Graceful shutdown: one signal every task watches, and a tracker that knows when the
//! in-flight work is done.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Cloneable handle: listeners stop accepting when it is signalled; connections finish their
/// in-flight requests and close.
#[derive(Debug, Clone, Default)]
pub struct Drain {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Drain {
    /// A fresh, unsignalled drain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts draining. Idempotent.
    pub fn signal(&self) {
        self.token.cancel();
    }

    /// Whether draining has begun.
    pub fn is_draining(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves when draining begins.
    pub async fn signaled(&self) {
        self.token.cancelled().await
    }

    /// Spawns a task that shutdown waits for.
    pub fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(fut);
    }

    /// Waits for every tracked task, at most `grace`. Returns the number of tasks still
    /// running when the grace period ended.
    pub async fn wait(&self, grace: Duration) -> usize {
        self.tracker.close();
        match tokio::time::timeout(grace, self.tracker.wait()).await {
            Ok(()) => 0,
            Err(_) => self.tracker.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn wait_returns_when_tasks_finish_or_grace_ends() {
        let drain = Drain::new();
        let d = drain.clone();
        drain.spawn(async move {
            d.signaled().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        });
        drain.signal();
        assert_eq!(drain.wait(Duration::from_secs(5)).await, 0);

        let stuck = Drain::new();
        stuck.spawn(std::future::pending());
        stuck.signal();
        assert_eq!(stuck.wait(Duration::from_secs(5)).await, 1);
    }
}
