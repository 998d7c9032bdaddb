//! The proxy's workload identity: a private key made in memory, a certificate for
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>` from the control plane,
//! renewed before it expires, and the trust bundle peers are checked against.
//!
//! Renewal follows Linkerd's rule, at 70 % of the lifetime, less up to 5 % of jitter so
//! replicas do not renew in step. A failed renewal is retried with backoff while the
//! current certificate keeps serving; connections already up are never touched by a
//! change, as rustls reads the certificate only at a handshake. The first request shows the
//! bootstrap token; a renewal shows the certificate in force instead, so a token can expire
//! once the proxy is running.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bulwark_identity::SpiffeId;
use bulwark_identity::tls::{CertStore, SharedBundle};
use bulwark_identity::verify::TrustBundle;
use serde::Serialize;
use tokio::sync::watch;

use crate::drain::Drain;
use crate::lock::lock;

/// Fraction of a certificate's lifetime after which it is renewed (Linkerd's; Istio 50 %).
pub const RENEW_AT: f64 = 0.7;
/// Up to this fraction of the lifetime is taken off the renewal time at random.
pub const RENEW_JITTER: f64 = 0.05;
/// Shortest wait before a renewal.
pub const MIN_RENEW_WAIT: Duration = Duration::from_secs(1);
/// Longest wait before a renewal (Linkerd clamps to 24 h too).
pub const MAX_RENEW_WAIT: Duration = Duration::from_secs(24 * 3600);
/// First retry delay after a failed request; doubled per failure up to [`RETRY_MAX`].
pub const RETRY_BASE: Duration = Duration::from_millis(500);
/// Longest retry delay.
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// Bound on one certify call, connect included.
pub const CERTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long after `received` to renew a certificate that expires at `not_after`; `unit`
/// in [0, 1) picks the jitter. The lifetime counts from receipt, not from not-before, which
/// the issuer backdates for clock skew.
pub fn renew_in(received: SystemTime, not_after: SystemTime, unit: f64) -> Duration {
    let life = not_after.duration_since(received).unwrap_or_default();
    life.mul_f64(RENEW_AT - RENEW_JITTER * unit.clamp(0.0, 1.0))
        .clamp(MIN_RENEW_WAIT, MAX_RENEW_WAIT)
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn from_unix(s: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(s.max(0) as u64)
}

/// The proxy's identity (with a token) and the TLS configuration of its control-plane
/// channel (with trust anchors), as the flags ask.
pub type Parts = (Option<Arc<Identity>>, Option<Arc<rustls::ClientConfig>>);

/// Builds them from the flags; the error names the flag or file at fault.
pub fn from_config(cfg: &crate::config::Config) -> Result<Parts, String> {
    let ic = &cfg.identity;
    let Some(anchors) = &ic.trust_anchors else {
        return Ok((None, None));
    };
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let bundle = TrustBundle::from_file(anchors).map_err(|e| err(&e))?;
    let w = &cfg.workload;
    let cp = SpiffeId::new(
        &ic.trust_domain,
        &ic.control_plane_namespace,
        crate::config::CONTROL_PLANE_SERVICE_ACCOUNT,
    )
    .map_err(|e| err(&e))?;
    let identity = if ic.enabled() {
        let id = SpiffeId::new(&ic.trust_domain, &w.namespace, &w.service_account)
            .map_err(|e| err(&format!("--workload and --service-account: {e}")))?;
        Some(Arc::new(Identity::new(id, bundle.clone())))
    } else {
        None
    };
    let (shared, certs) = match &identity {
        Some(i) => (i.bundle.clone(), i.certs.clone()),
        None => (
            Arc::new(arc_swap::ArcSwap::from_pointee(bundle)),
            Arc::default(),
        ),
    };
    let tls =
        bulwark_identity::tls::client_config(shared, cp, certs, &[bulwark_identity::ALPN_GRPC]);
    Ok((identity, Some(tls)))
}

/// Where the identity stands, as `/identity` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// No certificate yet.
    Pending,
    /// A certificate in force; the last request succeeded.
    Valid,
    /// A certificate in force, but renewing it fails.
    RenewalFailing,
    /// The certificate expired: peers refuse this proxy until a renewal succeeds.
    Expired,
}

/// The certificate in force.
#[derive(Debug, Clone, Serialize)]
pub struct Current {
    /// Its issuer's distinguished name.
    pub issuer: String,
    /// Not valid before, Unix seconds.
    pub not_before: i64,
    /// Not valid after, Unix seconds.
    pub not_after: i64,
}

#[derive(Debug, Default)]
struct Book {
    current: Option<Current>,
    next_attempt: Option<i64>,
    last_error: Option<String>,
}

/// The proxy's identity, shared by the renewal task, the TLS configurations and the admin
/// port.
#[derive(Debug)]
pub struct Identity {
    /// Who this proxy is.
    pub id: SpiffeId,
    /// The roots peers are checked against.
    pub bundle: SharedBundle,
    /// The certificate presented (empty until the first is issued).
    pub certs: Arc<CertStore>,
    book: Mutex<Book>,
    /// Not-after of the certificate in force, Unix seconds; 0 before the first.
    issued: watch::Sender<i64>,
    renewed: AtomicU64,
    failed: AtomicU64,
    expiry: AtomicI64,
}

/// What `/identity` returns.
#[derive(Debug, Serialize)]
pub struct Report {
    spiffe_id: String,
    state: State,
    certificate: Option<Current>,
    expires_in_seconds: Option<i64>,
    next_renewal: Option<i64>,
    last_error: Option<String>,
    renewals: u64,
    failures: u64,
    trust_anchor_fingerprints: Vec<String>,
}

impl Identity {
    /// `id`, trusting `bundle`, with no certificate yet.
    pub fn new(id: SpiffeId, bundle: TrustBundle) -> Self {
        Self {
            id,
            bundle: Arc::new(arc_swap::ArcSwap::from_pointee(bundle)),
            certs: Arc::default(),
            book: Mutex::default(),
            issued: watch::channel(0).0,
            renewed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            expiry: AtomicI64::new(0),
        }
    }

    /// Whether a certificate was ever issued.
    pub fn is_ready(&self) -> bool {
        *self.issued.borrow() > 0
    }

    /// Waits until the first certificate is in force.
    pub async fn wait_ready(&self) {
        let mut rx = self.issued.subscribe();
        let _ = rx.wait_for(|t| *t > 0).await;
    }

    /// Each certificate's not-after, as it comes into force.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.issued.subscribe()
    }

    fn state(&self, book: &Book, now: i64) -> State {
        match &book.current {
            None => State::Pending,
            Some(c) if c.not_after <= now => State::Expired,
            Some(_) if book.last_error.is_some() => State::RenewalFailing,
            Some(_) => State::Valid,
        }
    }

    /// The `/identity` report at `now`.
    pub fn report(&self, now: SystemTime) -> Report {
        let book = lock(&self.book);
        let now = unix(now);
        Report {
            spiffe_id: self.id.to_string(),
            state: self.state(&book, now),
            certificate: book.current.clone(),
            expires_in_seconds: book.current.as_ref().map(|c| c.not_after - now),
            next_renewal: book.next_attempt,
            last_error: book.last_error.clone(),
            renewals: self.renewed.load(Ordering::Relaxed),
            failures: self.failed.load(Ordering::Relaxed),
            trust_anchor_fingerprints: self.bundle.load().fingerprints().to_vec(),
        }
    }

    /// Appends the identity metrics in Prometheus text form.
    pub fn render(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "# HELP bulwark_identity_cert_expiration_timestamp_seconds When the certificate in force expires (0: none yet).\n\
             # TYPE bulwark_identity_cert_expiration_timestamp_seconds gauge\n\
             bulwark_identity_cert_expiration_timestamp_seconds {}",
            self.expiry.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP bulwark_identity_certify_total Requests for a certificate, by result.\n\
             # TYPE bulwark_identity_certify_total counter\n\
             bulwark_identity_certify_total{{result=\"ok\"}} {}\n\
             bulwark_identity_certify_total{{result=\"failed\"}} {}",
            self.renewed.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed)
        );
    }

    fn installed(&self, issued: Issued, next: SystemTime) {
        self.certs.store(issued.key);
        self.expiry
            .store(issued.current.not_after, Ordering::Relaxed);
        self.renewed.fetch_add(1, Ordering::Relaxed);
        let mut book = lock(&self.book);
        tracing::info!(
            identity = %self.id,
            not_after = issued.current.not_after,
            renew_in_s = next.duration_since(SystemTime::now()).unwrap_or_default().as_secs(),
            "certificate in force"
        );
        let not_after = issued.current.not_after;
        book.current = Some(issued.current);
        book.next_attempt = Some(unix(next));
        book.last_error = None;
        drop(book);
        self.issued.send_replace(not_after);
    }

    fn failed(&self, error: String, next: SystemTime) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut book = lock(&self.book);
        let now = unix(SystemTime::now());
        match &book.current {
            None => tracing::warn!(identity = %self.id, %error, "cannot obtain a certificate yet"),
            Some(c) if c.not_after <= now => tracing::error!(
                identity = %self.id, %error, expired_s_ago = now - c.not_after,
                "CERTIFICATE EXPIRED and renewal fails: meshed peers refuse this proxy"
            ),
            Some(c) => tracing::error!(
                identity = %self.id, %error, expires_in_s = c.not_after - now,
                "certificate renewal failed; serving on the current certificate until it expires"
            ),
        }
        book.last_error = Some(error);
        book.next_attempt = Some(unix(next));
    }

    /// Whether the certificate in force is still valid at `now`.
    fn holds_valid(&self, now: SystemTime) -> bool {
        self.valid_for(now).is_some()
    }

    /// How long the certificate in force stays valid after `now`, if it still is.
    fn valid_for(&self, now: SystemTime) -> Option<Duration> {
        let book = lock(&self.book);
        let not_after = from_unix(book.current.as_ref()?.not_after);
        not_after.duration_since(now).ok().filter(|d| !d.is_zero())
    }
}

/// Obtains the first certificate and renews it until drain.
pub async fn run(identity: Arc<Identity>, certifier: Certifier, drain: Drain) {
    let mut backoff = RETRY_BASE;
    loop {
        let result = tokio::select! {
            r = tokio::time::timeout(CERTIFY_TIMEOUT, certify(&identity, &certifier)) => {
                r.unwrap_or_else(|_| Err(format!("no answer within {CERTIFY_TIMEOUT:?}")))
            }
            _ = drain.signaled() => return,
        };
        let now = SystemTime::now();
        let wait = match result {
            Ok(issued) => {
                backoff = RETRY_BASE;
                let wait = renew_in(
                    now,
                    from_unix(issued.current.not_after),
                    crate::random::unit(),
                );
                identity.installed(issued, now + wait);
                wait
            }
            Err(e) => {
                let mut wait = backoff.mul_f64(0.5 + crate::random::unit() / 2.0);
                backoff = (backoff * 2).min(RETRY_MAX);
                // Try once more as the certificate expires, so its expiry is told then.
                if let Some(left) = identity.valid_for(now).filter(|l| *l < wait) {
                    wait = left + Duration::from_millis(100);
                }
                identity.failed(e, now + wait);
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = drain.signaled() => return,
        }
    }
}

pub mod bundle;
mod certify;

pub use self::certify::Certifier;
use self::certify::{Issued, certify};

#[cfg(test)]
mod tests;
