//! The one poison-tolerant lock helper. A panic while a lock was held leaves numbers that
//! are still usable (counters, estimates, tables); refusing them would turn one bug into
//! a proxy that can no longer serve.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking the data as it is if a holder panicked.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
