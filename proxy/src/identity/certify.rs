//! One request for a certificate: a new key, a CSR for the proxy's identity, the answer
//! checked against the proxy's own bundle before it is used.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use bulwark_api::identity_wire::CertifyRequest;
use bulwark_api::identity_wire::identity_client::IdentityClient;
use bulwark_identity::channel::{self, ChannelOptions};
use bulwark_identity::csr;
use bulwark_identity::verify::{issuer_of, validity_of};
use rustls::ClientConfig;
use rustls::pki_types::{CertificateDer, UnixTime};

use super::{Current, Identity};

/// A certificate as received and checked.
pub(super) struct Issued {
    pub(super) key: Arc<rustls::sign::CertifiedKey>,
    pub(super) current: Current,
}

/// How the renewal task reaches the control plane.
#[derive(Debug, Clone)]
pub struct Certifier {
    /// The control plane's URI.
    pub endpoint: String,
    /// TLS to it (presents the certificate in force, if any).
    pub tls: Arc<ClientConfig>,
    /// The bootstrap token's file.
    pub token_file: PathBuf,
}

/// One request: a new key, a CSR for our identity, the answer checked against our own
/// bundle before it is used.
pub(super) async fn certify(identity: &Identity, c: &Certifier) -> Result<Issued, String> {
    let key = csr::new_key().map_err(|e| format!("making a key: {e}"))?;
    let csr_der = csr::request(&identity.id, &key).map_err(|e| format!("making the CSR: {e}"))?;
    let token = if identity.holds_valid(SystemTime::now()) {
        String::new()
    } else {
        std::fs::read_to_string(&c.token_file)
            .map_err(|e| format!("reading the token {}: {e}", c.token_file.display()))?
            .trim()
            .to_string()
    };
    let options = ChannelOptions {
        connect_timeout: crate::discovery::CONNECT_TIMEOUT,
        keepalive: None,
    };
    let channel = channel::connect(&c.endpoint, Some(c.tls.clone()), &options)
        .await
        .map_err(|e| format!("connecting to {}: {}", c.endpoint, crate::error::chain(&e)))?;
    let resp = IdentityClient::new(channel)
        .certify(CertifyRequest { token, csr_der })
        .await
        .map_err(|s| format!("the control plane refused: {}", s.message()))?
        .into_inner();
    let leaf = CertificateDer::from(resp.leaf_der);
    let intermediates: Vec<CertificateDer<'static>> = resp
        .intermediates_der
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    let proven = identity
        .bundle
        .load()
        .verify(&leaf, &intermediates, UnixTime::now())
        .map_err(|e| format!("the issued certificate is unusable: {e}"))?;
    if proven != identity.id {
        return Err(format!(
            "the issued certificate names {proven}, not {}",
            identity.id
        ));
    }
    let (not_before, not_after) = validity_of(&leaf).map_err(|e| e.to_string())?;
    let issuer = issuer_of(&leaf).map_err(|e| e.to_string())?;
    let mut chain = vec![leaf];
    chain.extend(intermediates);
    let key = bulwark_identity::certified_key(chain, key.serialize_der())
        .map_err(|e| format!("loading the key: {e}"))?;
    Ok(Issued {
        key,
        current: Current {
            issuer,
            not_before,
            not_after,
        },
    })
}
