//! The hash map of the request path. Every request looks up its route, its endpoint's
//! pool and its metrics series by key; std's SipHash made those lookups a tenth of plain
//! forwarding's instructions. foldhash is seeded per map from a random per-process seed,
//! so keys a client picks (an authority) cannot be aimed at one bucket ahead of time.

use std::collections::HashMap;

/// A `HashMap` with foldhash's seeded hasher.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
