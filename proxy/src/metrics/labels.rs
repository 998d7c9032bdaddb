//! Values kept per authority label, bounded in number, that requests update without a
//! lock of the whole table: a lookup takes the table's read lock, and only an authority
//! seen for the first time takes the write lock. A scrape copies the table's handles and
//! reads each value on its own, so it never holds up requests for the whole render.

use std::sync::{Arc, RwLock};

use crate::lock::{read, write};
use crate::map::FastMap;

/// The label of every authority past the bound.
pub const OTHER: &str = "other";

/// Values by authority; past `max` authorities (or for one longer than 255 bytes) the
/// value is the one labelled [`OTHER`].
#[derive(Debug)]
pub(super) struct ByAuthority<V> {
    max: usize,
    map: RwLock<FastMap<Box<str>, Arc<V>>>,
}

impl<V: Default> ByAuthority<V> {
    pub(super) fn new(max: usize) -> Self {
        Self {
            max,
            map: RwLock::new(FastMap::default()),
        }
    }

    /// Runs `f` on the value of `authority`, created on first use.
    pub(super) fn with<R>(&self, authority: &str, f: impl FnOnce(&V) -> R) -> R {
        if let Some(v) = read(&self.map).get(authority) {
            return f(v);
        }
        f(&self.get(authority))
    }

    /// The value of `authority`, created on first use, to keep.
    pub(super) fn get(&self, authority: &str) -> Arc<V> {
        if let Some(v) = read(&self.map).get(authority) {
            return v.clone();
        }
        let mut map = write(&self.map);
        let label = if map.len() < self.max && authority.len() <= 255 {
            authority
        } else {
            OTHER
        };
        map.entry(label.into()).or_default().clone()
    }

    /// Every (authority, value), sorted by authority.
    pub(super) fn sorted(&self) -> Vec<(Box<str>, Arc<V>)> {
        let mut rows: Vec<_> = read(&self.map)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows
    }
}
