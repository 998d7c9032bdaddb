//! A connection's I/O with an observer that sees every byte read and written, and may
//! refuse a read: then nothing of that read is handed on, the observer's last words (if
//! any) are written, and every later read and write fails, so the protocol above ends the
//! connection. The HTTP/2 frame guard and the HTTP/1 activity count are observers.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Why an observer refused a read, and what to tell the peer before the connection ends.
#[derive(Debug, Clone, Copy)]
pub struct Refusal {
    /// Said in the I/O error the protocol above sees.
    pub why: &'static str,
    /// Written to the peer, best effort (e.g. an HTTP/2 GOAWAY).
    pub farewell: Option<[u8; 17]>,
}

/// Sees a connection's bytes as they pass.
pub trait Observer {
    /// Bytes just read from the peer.
    fn read(&mut self, bytes: &[u8]) -> Result<(), Refusal>;
    /// Bytes just written to the peer.
    fn wrote(&mut self, bytes: &[u8]);
}

/// `io` with `observer` watching it.
#[derive(Debug)]
pub struct Watched<I, O> {
    io: I,
    observer: O,
    refused: Option<&'static str>,
}

impl<I, O> Watched<I, O> {
    /// Watches `io`.
    pub fn new(io: I, observer: O) -> Self {
        Self {
            io,
            observer,
            refused: None,
        }
    }

    fn failed(why: &'static str) -> io::Error {
        io::Error::new(io::ErrorKind::ConnectionAborted, why)
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin, O: Observer + Unpin> AsyncRead for Watched<I, O> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(why) = this.refused {
            return Poll::Ready(Err(Self::failed(why)));
        }
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        let Err(refusal) = this.observer.read(&buf.filled()[before..]) else {
            return Poll::Ready(Ok(()));
        };
        buf.set_filled(before);
        this.refused = Some(refusal.why);
        if let Some(words) = refusal.farewell {
            // Best effort: a peer that reads learns why; one that does not is closed anyway.
            let _ = Pin::new(&mut this.io).poll_write(cx, &words);
            let _ = Pin::new(&mut this.io).poll_flush(cx);
        }
        Poll::Ready(Err(Self::failed(refusal.why)))
    }
}

impl<I: AsyncWrite + Unpin, O: Observer + Unpin> AsyncWrite for Watched<I, O> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(why) = this.refused {
            return Poll::Ready(Err(Self::failed(why)));
        }
        let n = std::task::ready!(Pin::new(&mut this.io).poll_write(cx, buf))?;
        this.observer.wrote(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(why) = this.refused {
            return Poll::Ready(Err(Self::failed(why)));
        }
        let n = std::task::ready!(Pin::new(&mut this.io).poll_write_vectored(cx, bufs))?;
        let mut left = n;
        for b in bufs {
            if left == 0 {
                break;
            }
            let take = left.min(b.len());
            this.observer.wrote(&b[..take]);
            left -= take;
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Refuses any read holding an `X`; counts what it saw written.
    #[derive(Debug, Default)]
    struct NoX {
        written: usize,
    }

    impl Observer for NoX {
        fn read(&mut self, bytes: &[u8]) -> Result<(), Refusal> {
            match bytes.contains(&b'X') {
                true => Err(Refusal {
                    why: "an X",
                    farewell: Some(*b"goodbye, peer!..."),
                }),
                false => Ok(()),
            }
        }
        fn wrote(&mut self, bytes: &[u8]) {
            self.written += bytes.len();
        }
    }

    #[tokio::test]
    async fn a_refused_read_hands_on_nothing_says_farewell_and_ends_the_io() {
        let (ours, mut peer) = tokio::io::duplex(1024);
        let mut w = Watched::new(ours, NoX::default());
        w.write_all(b"hello").await.unwrap();
        assert_eq!(w.observer.written, 5);
        peer.write_all(b"fine").await.unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(w.read(&mut buf).await.unwrap(), 4);
        peer.write_all(b"no X here").await.unwrap();
        let mut storage = [0u8; 16];
        let mut rb = ReadBuf::new(&mut storage);
        let r = std::future::poll_fn(|cx| Pin::new(&mut w).poll_read(cx, &mut rb)).await;
        assert_eq!(r.unwrap_err().to_string(), "an X");
        // Nothing of the refused read was handed on, and later I/O fails too.
        assert_eq!(rb.filled().len(), 0);
        assert!(w.write_all(b"more").await.is_err());
        assert!(w.read(&mut buf).await.is_err());
        let mut said = vec![0u8; 5 + 17];
        peer.read_exact(&mut said).await.unwrap();
        assert_eq!(&said[..], b"hellogoodbye, peer!...");
    }
}
