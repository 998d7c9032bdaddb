//! The HTTP/2 limits of a downstream connection: concurrency, the reset bounds and the
//! flood bounds the proxy's frame guard keeps (`http/h2_guard.rs`).

use serde::Serialize;

/// Concurrent HTTP/2 streams per downstream connection (Envoy and h2 default to 100 or more).
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Streams a peer may reset before they are accepted: the HTTP/2 rapid-reset bound
/// (CVE-2023-44487). Beyond it the connection is closed with GOAWAY.
pub const DEFAULT_H2_MAX_PENDING_RESETS: usize = 20;
/// Stream resets the proxy itself may send because of peer errors before it closes the
/// connection (the 2024 h2 "local error reset" flood bound).
pub const DEFAULT_H2_MAX_LOCAL_ERROR_RESETS: usize = 1024;
/// Streams an HTTP/2 client may reset before their answer, once they are at least half of
/// its recent streams, before the connection is closed: as Envoy bounds rapid reset since
/// 1.27.1 (half of 500), but counted from the concurrency limit, so an attacker's resets
/// cost upstreams about one connection's worth of streams before it is closed.
pub const DEFAULT_H2_MAX_PREMATURE_RESETS: u64 = 100;
/// HTTP/2 DATA, HEADERS or CONTINUATION frames in a row with no payload and no END_STREAM
/// (Envoy's `max_consecutive_inbound_frames_with_empty_payload`, 1).
pub const H2_MAX_EMPTY_FRAMES: u32 = 1;
/// HTTP/2 PRIORITY frames per stream the client opened (Envoy's
/// `max_inbound_priority_frames_per_stream`, 100).
pub const H2_MAX_PRIORITY_PER_STREAM: u64 = 100;
/// HTTP/2 WINDOW_UPDATE frames per DATA frame the proxy sent (Envoy's
/// `max_inbound_window_update_frames_per_data_frame_sent`, 10).
pub const H2_MAX_WINDOW_UPDATES_PER_DATA_FRAME: u64 = 10;
/// The HTTP/2 flood limits of one downstream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct H2Limits {
    /// Streams the client may reset before the proxy answers them, once they are at least
    /// half of its recent streams; then the connection is closed.
    pub max_premature_resets: u64,
    /// DATA, HEADERS or CONTINUATION frames in a row with no payload and no END_STREAM.
    pub max_empty_frames: u32,
    /// PRIORITY frames allowed per stream the client opened (plus one stream's worth).
    pub max_priority_per_stream: u64,
    /// WINDOW_UPDATE frames allowed per DATA frame the proxy sent.
    pub max_window_updates_per_data_frame: u64,
}

impl Default for H2Limits {
    fn default() -> Self {
        Self {
            max_premature_resets: DEFAULT_H2_MAX_PREMATURE_RESETS,
            max_empty_frames: H2_MAX_EMPTY_FRAMES,
            max_priority_per_stream: H2_MAX_PRIORITY_PER_STREAM,
            max_window_updates_per_data_frame: H2_MAX_WINDOW_UPDATES_PER_DATA_FRAME,
        }
    }
}
