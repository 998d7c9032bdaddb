//! A request body that can be sent again. The first attempt streams the client's body as it
//! arrives (nothing waits for the whole body, so client-streaming and bidirectional gRPC
//! work) while a copy of up to `max` bytes is kept; a later attempt replays the copy and
//! then goes on reading the client's body where the earlier one stopped. Past `max` bytes
//! the copy is abandoned and the request can no longer be retried.
//!
//! Only the newest attempt may read on from the client: an earlier one whose connection is
//! still sending (an upstream that answered before the body was in) gets an error once a
//! later attempt has taken over, instead of taking bytes the later one needs.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::lock::lock;

#[derive(Debug)]
struct Shared<B> {
    inner: B,
    chunks: Vec<Bytes>,
    recorded: u64,
    max: u64,
    trailers: Option<HeaderMap>,
    /// The client's body has ended (every frame is in `chunks`, unless `overflow`).
    ended: bool,
    /// More than `max` bytes: the copy is incomplete, no replay.
    overflow: bool,
    /// The client's body failed: no replay.
    failed: bool,
    /// The newest attempt's number: only it reads on from the client.
    epoch: u32,
}

/// Why a replayable body could not go on.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError<E> {
    /// The client's body failed.
    #[error(transparent)]
    Body(E),
    /// A later attempt took over the client's body; this one was abandoned.
    #[error("a later attempt took over the request body")]
    Superseded,
}

/// One attempt's view of the shared body.
#[derive(Debug)]
pub struct ReplayBody<B = Incoming> {
    shared: Arc<Mutex<Shared<B>>>,
    /// Chunks of the copy this attempt has sent.
    next: usize,
    trailers_sent: bool,
    /// This attempt's number (see `Shared::epoch`).
    epoch: u32,
}

impl<B: Body> ReplayBody<B> {
    /// Wraps the client's body, keeping a copy of up to `max` bytes.
    pub fn new(inner: B, max: u64) -> Self {
        let ended = inner.is_end_stream();
        Self {
            shared: Arc::new(Mutex::new(Shared {
                inner,
                chunks: Vec::new(),
                recorded: 0,
                max,
                trailers: None,
                ended,
                overflow: false,
                failed: false,
                epoch: 0,
            })),
            next: 0,
            trailers_sent: false,
            epoch: 0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared<B>> {
        lock(&self.shared)
    }

    /// A body for another attempt, from the start, if the copy allows it. From now on the
    /// earlier attempts may still send what is in the copy, but only this one reads on.
    pub fn replay(&self) -> Option<Self> {
        let mut s = self.lock();
        if s.overflow || s.failed {
            return None;
        }
        s.epoch += 1;
        Some(Self {
            shared: self.shared.clone(),
            next: 0,
            trailers_sent: false,
            epoch: s.epoch,
        })
    }

    /// Whether another attempt could have the body, asked without taking it (taking it, as
    /// [`ReplayBody::replay`] does, would stop the attempt in flight from reading on).
    pub fn can_replay(&self) -> bool {
        let s = self.lock();
        !s.overflow && !s.failed
    }

    /// Whether the whole body has arrived and is in the copy (needed to send two attempts
    /// at once, as a hedge does).
    pub fn is_complete(&self) -> bool {
        let s = self.lock();
        s.ended && !s.overflow && !s.failed
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for ReplayBody<B> {
    type Data = Bytes;
    type Error = ReplayError<B::Error>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let mut s = lock(&this.shared);
        if let Some(chunk) = s.chunks.get(this.next) {
            let chunk = chunk.clone();
            this.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if s.ended {
            if !this.trailers_sent {
                this.trailers_sent = true;
                if let Some(t) = s.trailers.clone() {
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
            }
            return Poll::Ready(None);
        }
        if this.epoch != s.epoch {
            return Poll::Ready(Some(Err(ReplayError::Superseded)));
        }
        match Pin::new(&mut s.inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                s.ended = true;
                this.trailers_sent = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                s.failed = true;
                Poll::Ready(Some(Err(ReplayError::Body(e))))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if s.inner.is_end_stream() {
                    s.ended = true;
                }
                if let Some(data) = frame.data_ref() {
                    if !s.overflow && s.recorded + data.len() as u64 <= s.max {
                        s.recorded += data.len() as u64;
                        s.chunks.push(data.clone());
                        this.next = s.chunks.len();
                    } else {
                        s.overflow = true;
                        s.chunks.clear();
                    }
                } else if let Some(t) = frame.trailers_ref() {
                    s.trailers = Some(t.clone());
                    s.ended = true;
                    this.trailers_sent = true;
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let s = self.lock();
        s.ended && self.next >= s.chunks.len() && (self.trailers_sent || s.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        let s = self.lock();
        if s.ended && !s.overflow {
            let sent: u64 = s.chunks[..self.next.min(s.chunks.len())]
                .iter()
                .map(|c| c.len() as u64)
                .sum();
            return SizeHint::with_exact(s.recorded - sent);
        }
        if self.next == s.chunks.len() {
            return s.inner.size_hint();
        }
        // Replaying: what is left of the copy plus what the client has yet to send.
        let sent: u64 = s.chunks[..self.next].iter().map(|c| c.len() as u64).sum();
        let inner = s.inner.size_hint();
        let mut h = SizeHint::new();
        h.set_lower(s.recorded - sent + inner.lower());
        if let Some(u) = inner.upper() {
            h.set_upper(s.recorded - sent + u);
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    type Frames =
        StreamBody<tokio_stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

    fn body(chunks: &[&'static str]) -> Frames {
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        StreamBody::new(tokio_stream::iter(frames))
    }

    async fn read(b: ReplayBody<Frames>) -> String {
        let bytes = b.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[tokio::test]
    async fn a_retry_replays_what_was_sent_and_reads_on() {
        let first = ReplayBody::new(body(&["ab", "cd", "ef"]), 64);
        let mut f = first.replay().unwrap();
        // The first attempt reads two chunks and is dropped (the upstream failed).
        let one = f.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(one, "ab");
        drop(f);
        let second = first.replay().unwrap();
        assert!(!first.is_complete());
        assert_eq!(read(second).await, "abcdef");
        assert!(first.is_complete(), "the whole body is now in the copy");
        assert_eq!(read(first.replay().unwrap()).await, "abcdef");
    }

    #[tokio::test]
    async fn past_the_limit_there_is_no_replay() {
        let b = ReplayBody::new(body(&["0123456789", "0123456789"]), 15);
        assert_eq!(
            read(b.replay().unwrap()).await,
            "01234567890123456789",
            "the first attempt gets it all"
        );
        assert!(b.replay().is_none());
        assert!(!b.is_complete());
    }

    #[tokio::test]
    async fn only_the_newest_attempt_reads_on_from_the_client() {
        let b = ReplayBody::new(body(&["ab", "cd", "ef"]), 64);
        let mut first = b.replay().unwrap();
        assert_eq!(
            first.frame().await.unwrap().unwrap().into_data().unwrap(),
            "ab"
        );
        // A retry takes over while the first attempt's connection is still sending.
        let second = b.replay().unwrap();
        let stale = first.frame().await.unwrap();
        assert!(
            matches!(stale, Err(ReplayError::Superseded)),
            "the first attempt may not take the bytes the second needs"
        );
        assert_eq!(
            read(second).await,
            "abcdef",
            "the retry gets the whole body"
        );
        // Once the whole body is in the copy, every attempt may send it (a hedge).
        let (x, y) = (b.replay().unwrap(), b.replay().unwrap());
        assert_eq!(read(x).await, "abcdef");
        assert_eq!(read(y).await, "abcdef");
    }

    #[tokio::test]
    async fn an_empty_body_is_complete_at_once() {
        let b = ReplayBody::new(http_body_util::Empty::<Bytes>::new(), 64);
        assert!(b.is_complete());
        assert!(b.replay().unwrap().is_end_stream());
    }
}
