//! The admission webhooks, served over TLS (rustls) to the Kubernetes API server:
//! `POST /inject` (pods) and `POST /validate` (Bulwark's policy kinds). The decisions are in
//! [`review`]; this module is the HTTPS server around them:
//! - the certificate and key are files (the chart's Secret, or cert-manager's), re-read when
//!   they change, so a renewed certificate needs no restart;
//! - a handshake gets 10 s, a request's headers 10 s (the API server's own default timeout
//!   for a webhook call is 10 s), a body at most 4 MiB (an object in etcd is at most
//!   1.5 MiB), all in the connection's own task;
//! - `bulwark_cp_webhook_reviews_total{webhook,outcome}` counts the answers.

pub mod review;

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::inject::Settings;
use review::Outcome;

/// The largest AdmissionReview read.
pub const MAX_BODY: usize = 4 << 20;
/// How long a client gets for its handshake, and for a request's headers.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the certificate files are looked at.
const RELOAD_CHECK: Duration = Duration::from_secs(5);

/// The webhook's certificate, from files, re-read when their modification time or size
/// changes (looked at no more than every 5 s, on a handshake).
#[derive(Debug)]
pub struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
    /// When the files were last looked at, and their stamps then.
    seen: Mutex<(SystemTime, [Stamp; 2])>,
}

/// A file's modification time and size, if it can be read.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(p: &Path) -> Stamp {
    std::fs::metadata(p)
        .ok()
        .and_then(|m| Some((m.modified().ok()?, m.len())))
}

fn load(cert: &Path, key: &Path) -> anyhow::Result<Arc<CertifiedKey>> {
    use anyhow::Context;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: not PEM certificates", cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "{}: no certificate in it",
        cert.display()
    );
    let der = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "{}: no PEM private key (PKCS#1, PKCS#8 or SEC1) in it",
            key.display()
        )
    })?;
    let signing = bulwark_identity::provider()
        .key_provider
        .load_private_key(der)
        .with_context(|| format!("{}: not a usable private key", key.display()))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match()
        .with_context(|| format!("{} is not the key of {}", key.display(), cert.display()))?;
    Ok(Arc::new(ck))
}

impl CertFiles {
    /// Loads the certificate chain and its key (an error names the file and why).
    pub fn new(cert: PathBuf, key: PathBuf) -> anyhow::Result<Self> {
        let current = ArcSwap::new(load(&cert, &key)?);
        let stamps = [stamp(&cert), stamp(&key)];
        Ok(Self {
            cert,
            key,
            current,
            seen: Mutex::new((SystemTime::now(), stamps)),
        })
    }

    fn refresh(&self) {
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        let now = SystemTime::now();
        if now.duration_since(seen.0).unwrap_or_default() < RELOAD_CHECK {
            return;
        }
        seen.0 = now;
        let stamps = [stamp(&self.cert), stamp(&self.key)];
        if stamps == seen.1 {
            return;
        }
        match load(&self.cert, &self.key) {
            Ok(ck) => {
                self.current.store(ck);
                seen.1 = stamps;
                tracing::info!(cert = %self.cert.display(), "webhook certificate reloaded");
            }
            // Half-written (a Secret update swaps both files, not at once): the old one
            // stays until both read well.
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "webhook certificate not reloaded; the previous one stays")
            }
        }
    }
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.refresh();
        Some(self.current.load_full())
    }
}

/// The webhook: injection settings and the answer counts.
#[derive(Debug)]
pub struct Webhook {
    settings: Settings,
    namespace: String,
    counts: [[AtomicU64; 4]; 2],
}

const OUTCOMES: [Outcome; 4] = [
    Outcome::Injected,
    Outcome::Skipped,
    Outcome::Valid,
    Outcome::Denied,
];
const HOOKS: [&str; 2] = ["inject", "validate"];

impl Webhook {
    /// A webhook injecting with `settings`; `namespace` is the control plane's own (never
    /// injected).
    pub fn new(settings: Settings, namespace: String) -> Self {
        Self {
            settings,
            namespace,
            counts: Default::default(),
        }
    }

    fn count(&self, hook: usize, o: Outcome) {
        if let Some(i) = OUTCOMES.iter().position(|x| *x == o) {
            self.counts[hook][i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Prometheus text of the answer counts.
    pub fn render_metrics(&self) -> String {
        let mut o = String::from(
            "# HELP bulwark_cp_webhook_reviews_total Admission reviews answered, by webhook and outcome.\n# TYPE bulwark_cp_webhook_reviews_total counter\n",
        );
        for (h, hook) in HOOKS.iter().enumerate() {
            for (i, out) in OUTCOMES.iter().enumerate() {
                let n = self.counts[h][i].load(Ordering::Relaxed);
                o.push_str(&format!(
                    "bulwark_cp_webhook_reviews_total{{webhook=\"{hook}\",outcome=\"{}\"}} {n}\n",
                    out.label()
                ));
            }
        }
        o
    }

    /// Answers one HTTP request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let hook = match (req.method(), req.uri().path()) {
            (&Method::POST, "/inject") => 0,
            (&Method::POST, "/validate") => 1,
            (_, "/inject" | "/validate") => {
                return text(StatusCode::METHOD_NOT_ALLOWED, "POST an AdmissionReview\n");
            }
            _ => {
                return text(
                    StatusCode::NOT_FOUND,
                    "webhooks: POST /inject, POST /validate\n",
                );
            }
        };
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !json {
            return text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "an AdmissionReview is application/json\n",
            );
        }
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "an AdmissionReview is at most 4 MiB\n",
                );
            }
            Err(_) => return text(StatusCode::BAD_REQUEST, "the body could not be read\n"),
        };
        let answer = if hook == 0 {
            review::inject(&body, &self.settings, &self.namespace)
        } else {
            review::validate(&body)
        };
        match answer {
            Ok((out, outcome)) => {
                self.count(hook, outcome);
                Response::builder()
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(out)))
                    .expect("a response built from valid static parts")
            }
            Err(e) => text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
        }
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a response built from valid static parts")
}

/// The TLS acceptor for the webhook (TLS 1.2 or 1.3, HTTP/1.1).
pub fn acceptor(certs: Arc<CertFiles>) -> anyhow::Result<TlsAcceptor> {
    let mut c = rustls::ServerConfig::builder_with_provider(bulwark_identity::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(c)))
}

/// Serves the webhooks until the process exits.
pub async fn serve(listener: TcpListener, tls: TlsAcceptor, hook: Arc<Webhook>) {
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            continue;
        };
        let (tls, hook) = (tls.clone(), hook.clone());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(CLIENT_TIMEOUT, tls.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "webhook handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let svc = service_fn(move |req| {
                let hook = hook.clone();
                async move { Ok::<_, Infallible>(hook.handle(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(CLIENT_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
