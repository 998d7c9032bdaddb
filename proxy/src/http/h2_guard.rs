//! Bounds what an HTTP/2 client can make the proxy do without asking for anything: streams
//! opened and reset before their answer (rapid reset, CVE-2023-44487), and floods of frames
//! that cost work but carry nothing (empty DATA, PRIORITY, WINDOW_UPDATE). h2 bounds the
//! rest itself: resets of streams not yet accepted, header lists and CONTINUATION, and the
//! answers to PING and SETTINGS (one is queued at a time; h2 reads nothing more until it is
//! written).
//!
//! [`FrameGuard`] reads the 9-byte frame headers as the bytes pass between the socket and
//! h2, in both directions ([`H2Frames`] watching the socket), and feeds them to a
//! [`Ledger`], which decides. When the ledger says a limit is broken the guard writes a
//! GOAWAY (ENHANCE_YOUR_CALM) if it can and fails the connection's reads and writes, so h2
//! ends it; the read that broke the limit is never handed to h2, so streams it would open
//! are never forwarded.

use std::sync::Arc;

use super::activity::Activity;
pub use crate::config::H2Limits;
use crate::metrics::{Direction, Metrics};
use crate::transport::watched::{Observer, Refusal, Watched};

/// The client connection preface, which precedes the client's first frame.
const PREFACE_LEN: usize = 24;
/// Once a connection has opened this many streams per allowed premature reset, both counts
/// are halved: the ratio is judged over recent streams, not the connection's whole life.
const WINDOW_PER_RESET: u64 = 10;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const GOAWAY: u8 = 0x7;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// GOAWAY naming the last stream the client opened, with ENHANCE_YOUR_CALM.
fn goaway(last_stream: u32) -> [u8; 17] {
    let mut f = [0u8; 17];
    f[2] = 8;
    f[3] = GOAWAY;
    f[9..13].copy_from_slice(&last_stream.to_be_bytes());
    f[13..17].copy_from_slice(&ENHANCE_YOUR_CALM.to_be_bytes());
    f
}

/// Why a connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    /// Most recent streams were reset by the client before their response completed.
    PrematureResets,
    /// Frames with nothing in them, in a row.
    EmptyFrames,
    /// More PRIORITY frames than streams justify.
    Priority,
    /// More WINDOW_UPDATE frames than the data sent justifies.
    WindowUpdates,
}

impl Flood {
    /// Metric label and log reason.
    pub fn reason(self) -> &'static str {
        match self {
            Flood::PrematureResets => "premature_resets",
            Flood::EmptyFrames => "empty_frames",
            Flood::Priority => "priority_flood",
            Flood::WindowUpdates => "window_update_flood",
        }
    }
}

/// A frame's header, all the ledger needs of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    /// Payload length.
    pub len: u32,
    /// Frame type.
    pub kind: u8,
    /// Flags.
    pub flags: u8,
    /// Stream identifier.
    pub stream: u32,
}

impl FrameHead {
    fn parse(b: &[u8; 9]) -> Self {
        Self {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5] & 0x7f, b[6], b[7], b[8]]),
        }
    }
}

/// One connection's counts, and the decision whether they break a limit. Pure: fed frame
/// headers, it does no I/O.
#[derive(Debug)]
pub struct Ledger {
    limits: H2Limits,
    streams: u64,
    resets: u64,
    last_stream: u32,
    empty_run: u32,
    priority: u64,
    window_updates: u64,
    data_sent: u64,
}

impl Ledger {
    /// An empty ledger.
    pub fn new(limits: H2Limits) -> Self {
        Self {
            limits,
            streams: 0,
            resets: 0,
            last_stream: 0,
            empty_run: 0,
            priority: 0,
            window_updates: 0,
            data_sent: 0,
        }
    }

    /// A frame from the client; an error when it breaks a limit.
    pub fn received(&mut self, f: FrameHead) -> Result<(), Flood> {
        let l = &self.limits;
        match f.kind {
            DATA | HEADERS | CONTINUATION => {
                if f.len == 0 && f.flags & END_STREAM == 0 {
                    self.empty_run += 1;
                    if self.empty_run > l.max_empty_frames {
                        return Err(Flood::EmptyFrames);
                    }
                } else {
                    self.empty_run = 0;
                }
                if f.kind == HEADERS && f.stream > self.last_stream && f.stream % 2 == 1 {
                    self.last_stream = f.stream;
                    self.streams += 1;
                    if self.streams >= WINDOW_PER_RESET * l.max_premature_resets.max(1) {
                        self.streams /= 2;
                        self.resets /= 2;
                    }
                }
            }
            PRIORITY => {
                self.priority += 1;
                if self.priority > l.max_priority_per_stream.saturating_mul(1 + self.streams) {
                    return Err(Flood::Priority);
                }
            }
            RST_STREAM => {
                // A client may only reset a stream that is still open: one whose answer it
                // has not had in full. Every reset it sends is premature.
                self.resets += 1;
                if self.resets >= l.max_premature_resets && self.resets * 2 >= self.streams {
                    return Err(Flood::PrematureResets);
                }
            }
            WINDOW_UPDATE => {
                self.window_updates += 1;
                let earned = l
                    .max_window_updates_per_data_frame
                    .saturating_mul(self.data_sent)
                    .saturating_add(self.streams);
                if self.window_updates > 1 + 2 * earned {
                    return Err(Flood::WindowUpdates);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A frame the proxy sent.
    pub fn sent(&mut self, f: FrameHead) {
        if f.kind == DATA {
            self.data_sent += 1;
        }
    }

    /// Resets the client has sent (recent ones, after halving).
    pub fn resets(&self) -> u64 {
        self.resets
    }
}

/// The first limit a client's byte stream (from its preface) breaks, judged as the guard
/// judges it, in pieces of `piece` bytes: the decision without the I/O.
pub fn first_flood(limits: H2Limits, client: &[u8], piece: usize) -> Option<Flood> {
    let (mut ledger, mut scanner) = (Ledger::new(limits), Scanner::new(PREFACE_LEN));
    client
        .chunks(piece.max(1))
        .find_map(|c| scanner.scan(c, |f| ledger.received(f)).err())
}

/// Finds frame headers in a byte stream handed over in pieces of any size.
#[derive(Debug)]
struct Scanner {
    /// Bytes still to pass before the first frame (the client preface).
    skip: usize,
    head: [u8; 9],
    have: usize,
}

impl Scanner {
    fn new(skip: usize) -> Self {
        Self {
            skip,
            head: [0; 9],
            have: 0,
        }
    }

    /// Calls `each` with every frame header completed within `bytes`, stopping at its first
    /// error.
    fn scan<E>(
        &mut self,
        mut bytes: &[u8],
        mut each: impl FnMut(FrameHead) -> Result<(), E>,
    ) -> Result<(), E> {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (9 - self.have).min(bytes.len());
            self.head[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == 9 {
                self.have = 0;
                let f = FrameHead::parse(&self.head);
                self.skip = f.len as usize;
                each(f)?;
            }
        }
        Ok(())
    }

    /// Whether the bytes so far end exactly at a frame boundary.
    fn at_boundary(&self) -> bool {
        self.skip == 0 && self.have == 0
    }
}

/// A downstream HTTP/2 connection's I/O, its frames counted against [`H2Limits`].
pub type FrameGuard<I> = Watched<I, H2Frames>;

/// Guards `io`, whose first bytes are the client preface; HEADERS and DATA frames either
/// way are counted into `activity` (the stream idle timeout's notion of movement: control
/// frames do not count).
pub fn guard<I>(
    io: I,
    limits: H2Limits,
    metrics: Arc<Metrics>,
    direction: Direction,
    activity: Arc<Activity>,
) -> FrameGuard<I> {
    Watched::new(
        io,
        H2Frames {
            ledger: Ledger::new(limits),
            read: Scanner::new(PREFACE_LEN),
            write: Scanner::new(0),
            metrics,
            direction,
            activity,
        },
    )
}

/// The frame guard's observer: the frames read and written, and the ledger that judges
/// them.
#[derive(Debug)]
pub struct H2Frames {
    ledger: Ledger,
    read: Scanner,
    write: Scanner,
    metrics: Arc<Metrics>,
    direction: Direction,
    activity: Arc<Activity>,
}

impl Observer for H2Frames {
    fn read(&mut self, bytes: &[u8]) -> Result<(), Refusal> {
        let (ledger, metrics, direction) = (&mut self.ledger, &self.metrics, self.direction);
        let activity = &self.activity;
        let scanned = self.read.scan(bytes, |f| {
            match f.kind {
                RST_STREAM => metrics.h2_client_reset(direction),
                DATA | HEADERS => activity.moved(),
                _ => {}
            }
            ledger.received(f)
        });
        let Err(flood) = scanned else {
            return Ok(());
        };
        // Nothing of this read reaches h2: streams the breaking frames would open are not
        // forwarded.
        self.metrics
            .http_connection_limited(direction, flood.reason());
        tracing::info!(
            ?direction,
            reason = flood.reason(),
            resets = self.ledger.resets(),
            "HTTP/2 client broke a flood limit; connection closed"
        );
        Err(Refusal {
            why: flood.reason(),
            // Only between frames: a GOAWAY inside one of h2's would be garbage.
            farewell: self
                .write
                .at_boundary()
                .then(|| goaway(self.ledger.last_stream)),
        })
    }

    fn wrote(&mut self, bytes: &[u8]) {
        let (ledger, activity) = (&mut self.ledger, &self.activity);
        let _ = self.write.scan::<()>(bytes, |f| {
            ledger.sent(f);
            if matches!(f.kind, DATA | HEADERS) {
                activity.moved();
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests;
