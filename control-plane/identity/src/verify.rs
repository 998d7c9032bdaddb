//! Checking a peer's certificate: it chains to the trust bundle and names exactly one mesh
//! identity. Names in the DNS sense are never checked — a mesh peer is known by its SPIFFE
//! ID, carried as the certificate's one URI SAN.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::ParsedCertificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::spiffe::{SpiffeError, SpiffeId};

/// The roots a mesh trusts, with their fingerprints. More than one while a root rotates.
#[derive(Debug, Clone)]
pub struct TrustBundle {
    roots: Arc<RootCertStore>,
    ders: Vec<CertificateDer<'static>>,
    fingerprints: Vec<String>,
}

/// Why a trust bundle could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The file could not be read or holds no PEM certificate.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A certificate is not usable as a trust anchor.
    #[error("certificate {index} is not a usable trust anchor: {reason}")]
    Anchor {
        /// Its position in the bundle, from 0.
        index: usize,
        /// What webpki said.
        reason: String,
    },
}

/// Why a peer's certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No certificate was presented.
    #[error("the peer presented no certificate")]
    NoCertificate,
    /// The chain does not lead to a trusted root, or a certificate is expired or malformed.
    #[error("the certificate chain is not trusted: {0}")]
    Untrusted(String),
    /// The certificate does not carry exactly one URI SAN.
    #[error("the certificate must carry exactly one URI SAN, it has {0}")]
    UriSans(usize),
    /// The URI SAN is not a workload identity.
    #[error(transparent)]
    NotAnIdentity(#[from] SpiffeError),
    /// A valid identity, but not the one expected.
    #[error("the peer is {found}, not the expected {expected}")]
    WrongIdentity {
        /// Who it is.
        found: String,
        /// Who it should be.
        expected: String,
    },
}

/// SHA-256 of `der`, hex.
pub fn fingerprint(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl TrustBundle {
    /// The bundle of every certificate in `pem`.
    pub fn from_pem(pem: &[u8]) -> Result<Self, BundleError> {
        let ders: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<_, _>>()
            .map_err(|e| BundleError::File {
                path: "<bundle>".into(),
                reason: e.to_string(),
            })?;
        Self::from_ders(ders)
    }

    /// The bundle of these roots.
    pub fn from_ders(ders: Vec<CertificateDer<'static>>) -> Result<Self, BundleError> {
        if ders.is_empty() {
            return Err(BundleError::File {
                path: "<bundle>".into(),
                reason: "no PEM CERTIFICATE in it".into(),
            });
        }
        let mut roots = RootCertStore::empty();
        for (index, der) in ders.iter().enumerate() {
            roots.add(der.clone()).map_err(|e| BundleError::Anchor {
                index,
                reason: e.to_string(),
            })?;
        }
        let fingerprints = ders.iter().map(|d| fingerprint(d)).collect();
        Ok(Self {
            roots: Arc::new(roots),
            ders,
            fingerprints,
        })
    }

    /// The bundle in the PEM file at `path`; errors name the file.
    pub fn from_file(path: &Path) -> Result<Self, BundleError> {
        let named = |reason: String| BundleError::File {
            path: path.display().to_string(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| named(e.to_string()))?;
        Self::from_pem(&pem).map_err(|e| match e {
            BundleError::File { reason, .. } => named(reason),
            BundleError::Anchor { index, reason } => {
                named(format!("certificate {index}: {reason}"))
            }
        })
    }

    /// The roots, for rustls.
    pub fn roots(&self) -> &Arc<RootCertStore> {
        &self.roots
    }

    /// The roots, DER.
    pub fn ders(&self) -> &[CertificateDer<'static>] {
        &self.ders
    }

    /// SHA-256 fingerprints of the roots, hex, in bundle order.
    pub fn fingerprints(&self) -> &[String] {
        &self.fingerprints
    }

    /// The identity `end_entity` proves, if it chains through `intermediates` to one of the
    /// roots at `now`.
    pub fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<SpiffeId, VerifyError> {
        let parsed = ParsedCertificate::try_from(end_entity)
            .map_err(|e| VerifyError::Untrusted(e.to_string()))?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            crate::provider().signature_verification_algorithms.all,
        )
        .map_err(|e| VerifyError::Untrusted(e.to_string()))?;
        identity_of(end_entity)
    }
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, VerifyError> {
    X509Certificate::from_der(der)
        .map(|(_, cert)| cert)
        .map_err(|e| VerifyError::Untrusted(e.to_string()))
}

/// The SPIFFE ID in a certificate's one URI SAN. Does not check the chain.
pub fn identity_of(der: &[u8]) -> Result<SpiffeId, VerifyError> {
    let cert = parse(der)?;
    let uris: Vec<&str> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(VerifyError::Untrusted(e.to_string())),
    };
    match uris.as_slice() {
        [one] => Ok(one.parse()?),
        _ => Err(VerifyError::UriSans(uris.len())),
    }
}

/// Not-before and not-after of a certificate, seconds since the Unix epoch.
pub fn validity_of(der: &[u8]) -> Result<(i64, i64), VerifyError> {
    let cert = parse(der)?;
    let v = cert.validity();
    Ok((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// The issuer's distinguished name of a certificate, as text.
pub fn issuer_of(der: &[u8]) -> Result<String, VerifyError> {
    let cert = parse(der)?;
    Ok(cert.issuer().to_string())
}
