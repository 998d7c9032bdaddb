//! Opaque TCP forwarding: bytes both ways with half-close, an idle bound, and live byte
//! counters.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// How an opaque connection ended, when it did not end cleanly.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// Neither side sent a byte for the idle timeout.
    #[error("idle for {0:?}")]
    Idle(Duration),
    /// A socket error on either leg (reset, broken pipe).
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Which side of a connection sent the first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    /// The downstream client.
    Client = 1,
    /// The upstream server.
    Server = 2,
}

/// Told once, with the side that sent the first byte.
pub type OnFirstByte = Box<dyn FnOnce(Speaker) + Send>;

/// Last time either side of a connection moved a byte, shared by both legs, and who moved
/// the first one.
pub struct Activity {
    origin: Instant,
    last_ms: AtomicU64,
    first: AtomicU8,
    on_first: Mutex<Option<OnFirstByte>>,
}

impl std::fmt::Debug for Activity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activity")
            .field("last_ms", &self.last_ms)
            .field("first", &self.first)
            .finish_non_exhaustive()
    }
}

impl Activity {
    fn new(on_first: Option<OnFirstByte>) -> Self {
        Self {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
            first: AtomicU8::new(0),
            on_first: Mutex::new(on_first),
        }
    }

    fn touch(&self, from: Speaker) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
        if self.first.load(Ordering::Relaxed) == 0
            && self
                .first
                .compare_exchange(0, from as u8, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            && let Some(f) = crate::lock::lock(&self.on_first).take()
        {
            f(from);
        }
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }
}

/// Wraps one leg: counts bytes read from it into `counter` and records activity.
#[derive(Debug)]
pub struct Metered<'a, T> {
    inner: T,
    counter: &'a AtomicU64,
    activity: Arc<Activity>,
    side: Speaker,
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.counter.fetch_add(n as u64, Ordering::Relaxed);
            self.activity.touch(self.side);
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Metered<'_, T> {
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
}

/// Byte counters for one direction of the proxy.
#[derive(Debug, Default)]
pub struct ByteCounters {
    /// Bytes read from the downstream client.
    pub from_client: AtomicU64,
    /// Bytes read from the upstream server.
    pub from_server: AtomicU64,
}

/// Copies bytes both ways until both sides have closed. When one side closes its write half,
/// the other side's write half is shut down and the opposite direction keeps flowing
/// (half-close). Ends with [`CopyError::Idle`] when nothing moves for `idle`.
pub async fn bidirectional<C, S>(
    client: C,
    server: S,
    idle: Duration,
    counters: &ByteCounters,
) -> Result<(u64, u64), CopyError>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    bidirectional_noting(client, server, idle, counters, None).await
}

/// [`bidirectional`], telling `on_first` which side sent the first byte when it does.
pub async fn bidirectional_noting<C, S>(
    client: C,
    server: S,
    idle: Duration,
    counters: &ByteCounters,
    on_first: Option<OnFirstByte>,
) -> Result<(u64, u64), CopyError>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Arc::new(Activity::new(on_first));
    let mut client = Metered {
        inner: client,
        counter: &counters.from_client,
        activity: activity.clone(),
        side: Speaker::Client,
    };
    let mut server = Metered {
        inner: server,
        counter: &counters.from_server,
        activity: activity.clone(),
        side: Speaker::Server,
    };
    let copy = tokio::io::copy_bidirectional(&mut client, &mut server);
    tokio::pin!(copy);
    loop {
        let check = tokio::time::sleep(
            idle.saturating_sub(activity.idle_for())
                .max(Duration::from_millis(10)),
        );
        tokio::select! {
            done = &mut copy => return Ok(done?),
            _ = check => {
                if activity.idle_for() >= idle {
                    return Err(CopyError::Idle(idle));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn half_close_keeps_the_other_direction_open() {
        let (mut app, proxy_client) = tokio::io::duplex(1024);
        let (proxy_server, mut upstream) = tokio::io::duplex(1024);
        let counters = ByteCounters::default();
        let copy = bidirectional(
            proxy_client,
            proxy_server,
            Duration::from_secs(5),
            &counters,
        );
        let peers = async {
            app.write_all(b"request").await.unwrap();
            app.shutdown().await.unwrap();
            let mut got = Vec::new();
            upstream.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"request");
            // The client has finished sending; the server can still answer.
            upstream.write_all(b"late answer").await.unwrap();
            upstream.shutdown().await.unwrap();
            let mut answer = Vec::new();
            app.read_to_end(&mut answer).await.unwrap();
            assert_eq!(answer, b"late answer");
        };
        let (res, ()) = tokio::join!(copy, peers);
        assert_eq!(res.unwrap(), (7, 11));
        assert_eq!(counters.from_client.load(Ordering::Relaxed), 7);
        assert_eq!(counters.from_server.load(Ordering::Relaxed), 11);
    }

    #[tokio::test]
    async fn the_first_speaker_is_told_once() {
        let (_app, proxy_client) = tokio::io::duplex(1024);
        let (proxy_server, mut upstream) = tokio::io::duplex(1024);
        let counters = ByteCounters::default();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let note: OnFirstByte = Box::new(move |who| s.lock().unwrap().push(who));
        let copy = bidirectional_noting(
            proxy_client,
            proxy_server,
            Duration::from_secs(5),
            &counters,
            Some(note),
        );
        let peers = async {
            upstream.write_all(b"220 banner\r\n").await.unwrap();
            upstream.shutdown().await.unwrap();
        };
        let (_, ()) = tokio::join!(
            tokio::time::timeout(Duration::from_millis(300), copy),
            peers
        );
        assert_eq!(*seen.lock().unwrap(), [Speaker::Server]);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_are_closed() {
        let (_app, proxy_client) = tokio::io::duplex(1024);
        let (proxy_server, _upstream) = tokio::io::duplex(1024);
        let counters = ByteCounters::default();
        let err = bidirectional(
            proxy_client,
            proxy_server,
            Duration::from_secs(30),
            &counters,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, CopyError::Idle(d) if d == Duration::from_secs(30)));
    }
}
