//! Protocol detection: read the client's first bytes (keeping them for replay), decide
//! HTTP/1, HTTP/2, TLS or opaque, and learn which ports never speak first.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use crate::lock::lock;
use bytes::{Buf, Bytes, BytesMut};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// Most bytes read while deciding. An HTTP/1 request line longer than this is forwarded as
/// opaque bytes rather than buffered without end.
pub const MAX_DETECT_BYTES: usize = 8 * 1024;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The request methods of RFC 9110 §9.3 and PATCH (RFC 5789). A connection that begins with
/// one of them and a space is HTTP/1, whatever follows: its head is then hyper's to accept
/// or refuse (400, 431), so a malformed request meets the proxy's checks instead of being
/// forwarded as opaque bytes past them.
const METHODS: [&[u8]; 9] = [
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH",
];

/// How `buf` relates to "a known method and a space": `Some(true)` it begins so,
/// `Some(false)` it could still (it is a proper prefix of one), `None` it cannot.
fn http1_method_start(buf: &[u8]) -> Option<bool> {
    let mut could = false;
    for m in METHODS {
        if buf.len() > m.len() {
            if buf.starts_with(m) && buf[m.len()] == b' ' {
                return Some(true);
            }
        } else if m.starts_with(buf) {
            could = true;
        }
    }
    could.then_some(false)
}

/// Whether bytes that stopped arriving before the detection timeout are the start of an
/// HTTP/1 request (a known method, or a prefix of one): such a connection is served as
/// HTTP, so a client that trickles its head meets the header-read timeout from its first
/// byte instead of being switched to raw TCP.
pub fn begins_like_http1(buf: &[u8]) -> bool {
    !buf.is_empty() && http1_method_start(buf).is_some()
}

/// What a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// An HTTP/1.x request line.
    Http1,
    /// The HTTP/2 connection preface (h2c with prior knowledge, gRPC without TLS).
    Http2,
    /// A TLS ClientHello: forwarded untouched.
    Tls,
    /// Anything else.
    Opaque,
}

impl Protocol {
    /// Label used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
            Protocol::Tls => "tls",
            Protocol::Opaque => "opaque",
        }
    }
}

/// The verdict on the bytes seen so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Enough bytes to decide.
    Known(Protocol),
    /// Every byte so far is a prefix of some protocol: read more.
    NeedMore,
}

/// Decides the protocol of a connection from its first bytes. Pure: no I/O.
pub fn classify(buf: &[u8]) -> Verdict {
    if buf.is_empty() {
        return Verdict::NeedMore;
    }
    // TLS record: handshake (0x16), major version 3.
    if buf[0] == 0x16 {
        return match buf.get(1) {
            None => Verdict::NeedMore,
            Some(3) => Verdict::Known(Protocol::Tls),
            Some(_) => Verdict::Known(Protocol::Opaque),
        };
    }
    if buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(buf) {
        return Verdict::NeedMore;
    }
    if buf.starts_with(H2_PREFACE) {
        return Verdict::Known(Protocol::Http2);
    }
    match http1_method_start(buf) {
        Some(true) => return Verdict::Known(Protocol::Http1),
        Some(false) => return Verdict::NeedMore,
        None => {}
    }
    // Other methods: HTTP/1 when the whole request line parses (the fields after it are
    // hyper's to judge), opaque when it does not. Only a whole line decides, so the verdict
    // is the same however the bytes were split into reads.
    // A byte no request line can hold decides at once: binary protocols are not kept
    // waiting for a line end.
    let end = buf.iter().position(|&b| b == b'\n');
    let line = end.map_or(buf, |e| &buf[..=e]);
    let mut headers = [httparse::EMPTY_HEADER; 1];
    let mut req = httparse::Request::new(&mut headers);
    match (req.parse(line), end) {
        (Ok(httparse::Status::Partial), Some(_)) if req.version.is_some() => {
            Verdict::Known(Protocol::Http1)
        }
        (Ok(httparse::Status::Partial), None) if buf.len() < MAX_DETECT_BYTES => Verdict::NeedMore,
        _ => Verdict::Known(Protocol::Opaque),
    }
}

/// How detection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detection {
    /// The first bytes decided the protocol.
    Detected(Protocol),
    /// The client sent nothing decisive within the timeout (server-speaks-first, or slow).
    TimedOut,
    /// The client closed before the bytes were decisive.
    Closed,
}

impl Detection {
    /// The protocol the connection is forwarded as.
    pub fn protocol(self) -> Protocol {
        match self {
            Detection::Detected(p) => p,
            Detection::TimedOut | Detection::Closed => Protocol::Opaque,
        }
    }
}

/// Reads from `io` until [`classify`] decides, the client closes, or `timeout` passes.
/// Returns the verdict and the bytes read, which the caller replays with [`Prefixed`].
pub async fn detect<T: AsyncRead + Unpin>(
    io: &mut T,
    timeout: Duration,
) -> io::Result<(Detection, Bytes)> {
    let mut buf = BytesMut::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Verdict::Known(p) = classify(&buf) {
            return Ok((Detection::Detected(p), buf.freeze()));
        }
        let room = MAX_DETECT_BYTES - buf.len();
        let mut limited = (&mut *io).take(room as u64);
        match tokio::time::timeout_at(deadline, limited.read_buf(&mut buf)).await {
            Ok(Ok(0)) => return Ok((Detection::Closed, buf.freeze())),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) if begins_like_http1(&buf) => {
                return Ok((Detection::Detected(Protocol::Http1), buf.freeze()));
            }
            Err(_) => return Ok((Detection::TimedOut, buf.freeze())),
        }
    }
}

/// An I/O object that first replays bytes already read from it.
#[derive(Debug)]
pub struct Prefixed<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Prefixed<T> {
    /// Wraps `inner`; reads return `prefix` first.
    pub fn new(prefix: Bytes, inner: T) -> Self {
        Self { prefix, inner }
    }

    /// The wrapped I/O object.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The bytes not replayed yet, and the wrapped I/O object.
    pub fn into_parts(self) -> (Bytes, T) {
        (self.prefix, self.inner)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Learns which destination ports never send first bytes, so that later connections to
/// them skip the detection wait. Bounded: one small entry per port (at most 65,536).
#[derive(Debug)]
pub struct OpaqueLearner {
    threshold: u32,
    ttl: Duration,
    ports: Mutex<HashMap<u16, PortState>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct PortState {
    consecutive_timeouts: u32,
    opaque_until: Option<Instant>,
    learned_at: Option<Instant>,
}

/// One learned port, as shown on the admin port.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LearnedPort {
    /// The destination port.
    pub port: u16,
    /// Seconds since it was learned.
    pub learned_secs_ago: u64,
    /// Seconds until detection is tried again.
    pub expires_in_secs: u64,
}

impl OpaqueLearner {
    /// A learner that marks a port opaque after `threshold` consecutive time-outs for `ttl`.
    /// A threshold of 0 disables learning.
    pub fn new(threshold: u32, ttl: Duration) -> Self {
        Self {
            threshold,
            ttl,
            ports: Mutex::new(HashMap::new()),
        }
    }

    /// Whether connections to `port` skip detection at `now`.
    pub fn is_opaque(&self, port: u16, now: Instant) -> bool {
        let ports = lock(&self.ports);
        ports
            .get(&port)
            .and_then(|s| s.opaque_until)
            .is_some_and(|until| now < until)
    }

    /// Records a connection to `port` whose detection timed out and whose server then
    /// spoke first; returns true when this one made the port opaque.
    pub fn record_timeout(&self, port: u16, now: Instant) -> bool {
        if self.threshold == 0 {
            return false;
        }
        let mut ports = lock(&self.ports);
        let state = ports.entry(port).or_default();
        if state.opaque_until.is_some_and(|until| now >= until) {
            *state = PortState::default();
        }
        state.consecutive_timeouts += 1;
        if state.opaque_until.is_none() && state.consecutive_timeouts >= self.threshold {
            state.opaque_until = Some(now + self.ttl);
            state.learned_at = Some(now);
            return true;
        }
        false
    }

    /// Records a successful detection: the port does speak first, so its count restarts.
    pub fn record_detected(&self, port: u16) {
        let mut ports = lock(&self.ports);
        if ports.get(&port).is_some_and(|s| s.opaque_until.is_none()) {
            ports.remove(&port);
        }
    }

    /// The ports learned as opaque and not yet expired, sorted by port.
    pub fn learned(&self, now: Instant) -> Vec<LearnedPort> {
        let ports = lock(&self.ports);
        let mut out: Vec<LearnedPort> = ports
            .iter()
            .filter_map(|(&port, s)| {
                let until = s.opaque_until.filter(|u| now < *u)?;
                let since = s.learned_at.unwrap_or(now);
                Some(LearnedPort {
                    port,
                    learned_secs_ago: now.saturating_duration_since(since).as_secs(),
                    expires_in_secs: until.saturating_duration_since(now).as_secs(),
                })
            })
            .collect();
        out.sort_by_key(|p| p.port);
        out
    }
}

#[cfg(test)]
mod tests;
