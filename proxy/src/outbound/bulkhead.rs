//! The bulkhead: a bound on one target's concurrent requests, with a bounded queue whose
//! wait ends at the queue timeout or the request's own deadline, whichever comes first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::policy::LimitPolicy;
use crate::lock::lock;

/// Why the bulkhead turned a request away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// Every slot busy and the queue full.
    QueueFull,
    /// Waited `queueTimeout` without a slot.
    QueueTimeout,
    /// The request's own deadline came first while it waited.
    Deadline,
}

/// Bounds concurrent and queued requests to one target.
#[derive(Debug)]
pub struct Bulkhead {
    limits: Mutex<LimitPolicy>,
    slots: Arc<Semaphore>,
    pending: AtomicU64,
    /// Slots held by requests (not by a shrink taking slots back).
    active: Arc<AtomicU64>,
}

/// A request's place in a bulkhead, given back when dropped (with the response body).
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    active: Arc<AtomicU64>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Bulkhead {
    /// A bulkhead with `limits`, every slot free.
    pub fn new(limits: LimitPolicy) -> Self {
        Self {
            limits: Mutex::new(limits),
            slots: Arc::new(Semaphore::new(limits.max_concurrent as usize)),
            pending: AtomicU64::new(0),
            active: Arc::new(AtomicU64::new(0)),
        }
    }

    fn slot(&self, permit: OwnedSemaphorePermit) -> Slot {
        self.active.fetch_add(1, Ordering::Relaxed);
        Slot {
            _permit: permit,
            active: self.active.clone(),
        }
    }

    /// A slot, at once, after queueing, or the reason there is none. The wait ends at
    /// `queueTimeout` or at `until` (the request's deadline), whichever comes first: time in
    /// the queue is part of the request's time.
    pub async fn acquire(&self, until: Option<Instant>) -> Result<Slot, Shed> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(self.slot(p));
        }
        let limits = *lock(&self.limits);
        if self.pending.fetch_add(1, Ordering::AcqRel) >= limits.max_pending as u64 {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(Shed::QueueFull);
        }
        let queue_end = Instant::now() + limits.queue_timeout;
        let (end, shed) = match until {
            Some(u) if u < queue_end => (u, Shed::Deadline),
            _ => (queue_end, Shed::QueueTimeout),
        };
        let r = tokio::time::timeout_at(end, self.slots.clone().acquire_owned()).await;
        self.pending.fetch_sub(1, Ordering::AcqRel);
        match r {
            Ok(Ok(p)) => Ok(self.slot(p)),
            _ => Err(shed),
        }
    }

    /// Requests holding a slot (during a shrink, possibly more than the new limit).
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed) as usize
    }

    /// Takes new limits in place, so the requests in flight keep counting. More slots are
    /// free at once; fewer are taken back as requests finish (until then new requests wait,
    /// as the smaller limit says).
    pub fn resize(&self, next: LimitPolicy) {
        let old = std::mem::replace(&mut *lock(&self.limits), next).max_concurrent;
        let new = next.max_concurrent;
        if new > old {
            self.slots.add_permits((new - old) as usize);
        } else if new < old {
            let (slots, n) = (self.slots.clone(), old - new);
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(async move {
                        if let Ok(p) = slots.acquire_many_owned(n).await {
                            p.forget();
                        }
                    });
                }
                // No runtime (a test building state by hand): take back what is free.
                Err(_) => {
                    slots.forget_permits(n as usize);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_bulkhead_queues_within_its_bounds_and_the_requests_deadline() {
        let b = Bulkhead::new(LimitPolicy {
            max_concurrent: 1,
            max_pending: 1,
            queue_timeout: Duration::from_secs(1),
        });
        let held = b.acquire(None).await.expect("a free slot");
        assert_eq!(b.active(), 1);
        // One waits (the queue holds one); the next is turned away at once.
        let waiter = b.acquire(None);
        tokio::pin!(waiter);
        assert!(futures_poll_once(waiter.as_mut()).await.is_none());
        assert_eq!(b.acquire(None).await.err(), Some(Shed::QueueFull));
        drop(held);
        let _held = waiter.await.expect("a released slot goes to the waiter");
        // A waiter whose own deadline comes before the queue timeout leaves at its deadline.
        let t0 = Instant::now();
        let until = t0 + Duration::from_millis(300);
        assert_eq!(b.acquire(Some(until)).await.err(), Some(Shed::Deadline));
        let waited = t0.elapsed();
        assert!(waited == Duration::from_millis(300), "{waited:?}");
        let far = Instant::now() + Duration::from_secs(60);
        assert_eq!(b.acquire(Some(far)).await.err(), Some(Shed::QueueTimeout));
    }

    #[tokio::test(start_paused = true)]
    async fn new_limits_keep_counting_the_requests_in_flight() {
        let limits = |n| LimitPolicy {
            max_concurrent: n,
            max_pending: 10,
            queue_timeout: Duration::from_millis(100),
        };
        let b = Bulkhead::new(limits(2));
        let first = b.acquire(None).await.expect("a slot");
        let second = b.acquire(None).await.expect("a slot");
        b.resize(limits(1));
        assert_eq!(b.active(), 2, "both still in flight, over the new limit");
        drop(first);
        tokio::task::yield_now().await;
        assert_eq!(
            b.acquire(None).await.err(),
            Some(Shed::QueueTimeout),
            "one still in flight fills the new limit of one"
        );
        drop(second);
        let third = b.acquire(None).await.expect("free again");
        b.resize(limits(3));
        let _more = (b.acquire(None).await, b.acquire(None).await);
        assert_eq!(b.active(), 3, "a larger limit frees slots at once");
        drop(third);
    }

    /// Polls a future once; `None` while it is pending.
    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        let mut f = f;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
