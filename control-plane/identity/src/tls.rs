//! rustls configurations for the mesh: TLS 1.3 only, ring's primitives, a certificate that
//! can change under live connections ([`CertStore`]), and verifiers that know peers by SPIFFE
//! ID instead of DNS name.

use std::fmt;
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, Error, ServerConfig, SignatureScheme,
};

use crate::spiffe::SpiffeId;
use crate::verify::TrustBundle;

/// Where the current trust bundle lives; swapped whole when the roots change.
pub type SharedBundle = Arc<ArcSwap<TrustBundle>>;

/// The certificate this side presents, swapped whole on renewal: a handshake takes whatever
/// is current, a connection already up keeps the one it started with.
#[derive(Default)]
pub struct CertStore {
    current: ArcSwapOption<CertifiedKey>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("loaded", &self.current.load().is_some())
            .finish()
    }
}

impl CertStore {
    /// Puts `key` in force for new handshakes.
    pub fn store(&self, key: Arc<CertifiedKey>) {
        self.current.store(Some(key));
    }

    /// The certificate in force, if any.
    pub fn load(&self) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.load()
    }
}

impl ResolvesClientCert for CertStore {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.load()
    }

    fn has_certs(&self) -> bool {
        self.current.load().is_some()
    }
}

fn tls13_only() -> Result<HandshakeSignatureValid, Error> {
    Err(Error::PeerIncompatible(
        rustls::PeerIncompatible::Tls12NotOffered,
    ))
}

fn verify13(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, Error> {
    rustls::crypto::verify_tls13_signature(
        message,
        cert,
        dss,
        &crate::provider().signature_verification_algorithms,
    )
}

fn schemes() -> Vec<SignatureScheme> {
    crate::provider()
        .signature_verification_algorithms
        .supported_schemes()
}

fn bad_cert(e: impl fmt::Display) -> Error {
    Error::General(e.to_string())
}

/// The handshake-signature methods both verifiers share: TLS 1.3 only, ring's algorithms.
macro_rules! handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            tls13_only()
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            verify13(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            schemes()
        }
    };
}

/// Accepts a server whose chain leads to the bundle and whose SPIFFE ID is `expected`.
#[derive(Debug)]
pub struct ExpectIdentity {
    /// The roots.
    pub bundle: SharedBundle,
    /// Who the server must be.
    pub expected: SpiffeId,
}

impl ServerCertVerifier for ExpectIdentity {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let found = self
            .bundle
            .load()
            .verify(end_entity, intermediates, now)
            .map_err(bad_cert)?;
        if found != self.expected {
            return Err(bad_cert(crate::verify::VerifyError::WrongIdentity {
                found: found.to_string(),
                expected: self.expected.to_string(),
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures!();
}

/// Accepts any client whose chain leads to the bundle and names a workload identity; which
/// identities may do what is authorization's business, after the handshake. `required`
/// false lets a client without a certificate through (the control plane's certify call,
/// made before the proxy has one).
#[derive(Debug)]
pub struct MeshClients {
    /// The roots.
    pub bundle: SharedBundle,
    /// Whether a client certificate is required.
    pub required: bool,
}

impl ClientCertVerifier for MeshClients {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.bundle
            .load()
            .verify(end_entity, intermediates, now)
            .map_err(bad_cert)?;
        Ok(ClientCertVerified::assertion())
    }

    handshake_signatures!();
}

/// A client configuration that presents `certs` (when it holds one), expects the server to
/// be `expected`, and offers `alpn`.
pub fn client_config(
    bundle: SharedBundle,
    expected: SpiffeId,
    certs: Arc<CertStore>,
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut c = ClientConfig::builder_with_provider(crate::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ExpectIdentity { bundle, expected }))
        .with_client_cert_resolver(certs);
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(c)
}

/// A server configuration that presents `certs`, verifies clients against the bundle
/// (requiring a certificate when `required`), and accepts `alpn`. Sessions resume only
/// when `required`: a resumed session keeps the certificates of the one it resumes, so
/// where a certificate is optional, a client that first came without one (a proxy asking
/// for its first certificate) would stay anonymous on every later connection.
pub fn server_config(
    bundle: SharedBundle,
    certs: Arc<CertStore>,
    required: bool,
    alpn: &[&[u8]],
) -> Arc<ServerConfig> {
    let mut c = ServerConfig::builder_with_provider(crate::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .with_client_cert_verifier(Arc::new(MeshClients { bundle, required }))
        .with_cert_resolver(certs);
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    if !required {
        c.send_tls13_tickets = 0;
        c.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    }
    Arc::new(c)
}

/// The identity of the peer on an established connection (its first certificate), if it
/// presented one. The chain was verified during the handshake.
pub fn peer_identity(certs: Option<&[CertificateDer<'_>]>) -> Option<SpiffeId> {
    let first = certs?.first()?;
    crate::verify::identity_of(first).ok()
}
