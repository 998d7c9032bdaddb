//! `Identity.Certify`: a proxy proves who it is — with a bootstrap token, with its pod's
//! projected service-account token (checked with a TokenReview, [`crate::token_review`]),
//! or with the certificate it already holds — and gets a short-lived certificate for
//! exactly that identity.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bulwark_api::identity_wire::identity_server::Identity;
use bulwark_api::identity_wire::{CertifyRequest, CertifyResponse};
use bulwark_identity::SpiffeId;
use bulwark_identity::token::TokenKey;
use tonic::{Request, Response, Status};

use crate::ca::{Ca, CertifyError};
use crate::tls::Peer;
use crate::token_review::TokenReviewer;

/// Turns what a proxy presents into the identity it is granted.
#[derive(Debug)]
pub struct Authenticator {
    /// Checks bootstrap tokens.
    pub tokens: Option<TokenKey>,
    /// Checks Kubernetes service-account tokens.
    pub reviewer: Option<TokenReviewer>,
}

/// Why a proxy was not given a certificate, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No token and no certificate.
    Unauthenticated,
    /// The token does not verify, or expired.
    BadToken,
    /// The CSR asks for another identity than the one proven.
    WrongIdentity,
    /// The CSR is malformed or uses another key type.
    BadCsr,
}

impl Refusal {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::BadToken => "bad_token",
            Refusal::WrongIdentity => "wrong_identity",
            Refusal::BadCsr => "bad_csr",
        }
    }

    const ALL: [Refusal; 4] = [
        Refusal::Unauthenticated,
        Refusal::BadToken,
        Refusal::WrongIdentity,
        Refusal::BadCsr,
    ];
}

impl Authenticator {
    /// The identity `token` (or else the connection's certificate, `peer`) proves: a
    /// bootstrap token says it is one (`bwt1.`); any other token is a service account's.
    pub async fn grant(
        &self,
        trust_domain: &str,
        token: &str,
        peer: Option<&SpiffeId>,
        now: SystemTime,
    ) -> Result<SpiffeId, (Refusal, Status)> {
        let bootstrap = token
            .trim()
            .strip_prefix(bulwark_identity::token::PREFIX)
            .is_some_and(|rest| rest.starts_with('.'));
        if !token.is_empty() && !bootstrap {
            let Some(reviewer) = &self.reviewer else {
                return Err((
                    Refusal::BadToken,
                    Status::unauthenticated(
                        "not a bootstrap token, and this control plane checks no Kubernetes tokens (--token-review)",
                    ),
                ));
            };
            let (ns, sa) = reviewer
                .review(token)
                .await
                .map_err(|e| (Refusal::BadToken, Status::unauthenticated(e.to_string())))?;
            return SpiffeId::new(trust_domain, &ns, &sa)
                .map_err(|e| (Refusal::BadToken, Status::unauthenticated(e.to_string())));
        }
        if !token.is_empty() {
            let Some(key) = &self.tokens else {
                return Err((
                    Refusal::BadToken,
                    Status::unauthenticated("this control plane takes no bootstrap tokens"),
                ));
            };
            let claims = key
                .verify(token, now)
                .map_err(|e| (Refusal::BadToken, Status::unauthenticated(e.to_string())))?;
            return SpiffeId::new(trust_domain, &claims.ns, &claims.sa)
                .map_err(|e| (Refusal::BadToken, Status::unauthenticated(e.to_string())));
        }
        match peer {
            // Renewal: the certificate in force proves the identity it names.
            Some(id) if id.trust_domain() == trust_domain => Ok(id.clone()),
            _ => Err((
                Refusal::Unauthenticated,
                Status::unauthenticated(
                    "no token, and the connection presents no certificate of this mesh",
                ),
            )),
        }
    }
}

/// The Identity service.
#[derive(Debug)]
pub struct IdentityService {
    ca: Arc<Ca>,
    auth: Authenticator,
    counters: Arc<IssueCounters>,
}

/// Certificates issued and refused, for `/metrics`.
#[derive(Debug, Default)]
pub struct IssueCounters {
    issued: AtomicU64,
    refused: [AtomicU64; 4],
}

impl IssueCounters {
    fn refused(&self, r: Refusal) {
        let i = Refusal::ALL.iter().position(|x| *x == r).unwrap_or(0);
        self.refused[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the counters in Prometheus text form.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP bulwark_cp_certificates_issued_total Workload certificates signed.\n\
             # TYPE bulwark_cp_certificates_issued_total counter\n\
             bulwark_cp_certificates_issued_total {}",
            self.issued.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP bulwark_cp_certificates_refused_total Certify calls refused, by reason.\n\
             # TYPE bulwark_cp_certificates_refused_total counter"
        );
        for (r, n) in Refusal::ALL.iter().zip(&self.refused) {
            let _ = writeln!(
                out,
                "bulwark_cp_certificates_refused_total{{reason=\"{}\"}} {}",
                r.label(),
                n.load(Ordering::Relaxed)
            );
        }
    }
}

impl IdentityService {
    /// The service signing with `ca`.
    pub fn new(ca: Arc<Ca>, auth: Authenticator, counters: Arc<IssueCounters>) -> Self {
        Self { ca, auth, counters }
    }

    async fn certify_now(
        &self,
        req: &CertifyRequest,
        peer: Option<&Peer>,
        now: SystemTime,
    ) -> Result<CertifyResponse, (Refusal, Status)> {
        let presented = peer.and_then(|p| p.identity.as_ref());
        let granted = self
            .auth
            .grant(self.ca.trust_domain(), &req.token, presented, now)
            .await?;
        let issued = self
            .ca
            .certify(&req.csr_der, &granted, now)
            .map_err(|e| match e {
                CertifyError::WrongIdentity { .. } => (
                    Refusal::WrongIdentity,
                    Status::permission_denied(e.to_string()),
                ),
                CertifyError::Sign(_) => (Refusal::BadCsr, Status::internal(e.to_string())),
                _ => (Refusal::BadCsr, Status::invalid_argument(e.to_string())),
            })?;
        let until = issued
            .not_after
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        tracing::info!(identity = %granted, valid_until = until, peer = ?peer.map(|p| p.addr), "certificate issued");
        Ok(CertifyResponse {
            leaf_der: issued.leaf.to_vec(),
            intermediates_der: issued.intermediates.iter().map(|c| c.to_vec()).collect(),
            valid_until_unix: until,
            trust_anchors_der: self.ca.bundle().ders().iter().map(|c| c.to_vec()).collect(),
        })
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn certify(
        &self,
        request: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        let peer = request.extensions().get::<Peer>().cloned();
        match self
            .certify_now(request.get_ref(), peer.as_ref(), SystemTime::now())
            .await
        {
            Ok(r) => {
                self.counters.issued.fetch_add(1, Ordering::Relaxed);
                Ok(Response::new(r))
            }
            Err((refusal, status)) => {
                self.counters.refused(refusal);
                tracing::warn!(reason = refusal.label(), error = %status.message(), peer = ?peer.map(|p| p.addr), "certificate refused");
                Err(status)
            }
        }
    }
}
