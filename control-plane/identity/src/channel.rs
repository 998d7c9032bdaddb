//! A gRPC channel to the control plane over TLS: tonic speaks HTTP/2 over a connection this
//! module dials and secures, so the server is verified by SPIFFE ID against the trust
//! bundle (tonic's own TLS would check a DNS name).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Dials the URI's host and port and runs the TLS handshake with `config`.
#[derive(Debug, Clone)]
pub struct TlsDialer {
    config: Arc<ClientConfig>,
}

impl TlsDialer {
    /// A dialer handshaking with `config` (ALPN h2, the control plane's identity expected).
    pub fn new(config: Arc<ClientConfig>) -> Self {
        Self { config }
    }
}

type Dialed = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<TlsStream<TcpStream>>>> + Send>>;

impl tower_service::Service<http::Uri> for TlsDialer {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Dialed;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = self.config.clone();
        Box::pin(async move {
            let invalid = |what: &str| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_string())
            };
            let host = uri.host().ok_or_else(|| invalid("no host"))?;
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().ok_or_else(|| invalid("no port"))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            // The name is only sent as SNI; the verifier checks the SPIFFE ID instead.
            let name = ServerName::try_from(host)
                .map_err(|_| invalid("host is neither a DNS name nor an IP address"))?;
            let tls = TlsConnector::from(config).connect(name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// What a channel to the control plane takes.
#[derive(Debug, Clone)]
pub struct ChannelOptions {
    /// Bound on connect plus handshake.
    pub connect_timeout: Duration,
    /// HTTP/2 PING period (none: no pings).
    pub keepalive: Option<(Duration, Duration)>,
}

/// A connected channel to `uri` (`http://host:port`, the form `--control-plane` is
/// normalised to): through TLS with `tls`, or plaintext without.
pub async fn connect(
    uri: &str,
    tls: Option<Arc<ClientConfig>>,
    options: &ChannelOptions,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(uri.to_string())?
        .connect_timeout(options.connect_timeout);
    if let Some((interval, timeout)) = options.keepalive {
        endpoint = endpoint
            .http2_keep_alive_interval(interval)
            .keep_alive_timeout(timeout)
            .keep_alive_while_idle(true);
    }
    match tls {
        // tonic bounds the custom dialer by the connect timeout too.
        Some(config) => {
            endpoint
                .connect_with_connector(TlsDialer::new(config))
                .await
        }
        None => endpoint.connect().await,
    }
}
