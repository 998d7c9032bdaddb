//! A throwaway certificate authority for tests: a root and leaves with one SPIFFE URI SAN,
//! made in memory. Not for anything but tests (no issuer, no lifetime policy).

use std::sync::Arc;

use arc_swap::ArcSwap;
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;

use crate::SpiffeId;
use crate::tls::{CertStore, SharedBundle};
use crate::verify::TrustBundle;

/// A root that signs test leaves.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    root: CertificateDer<'static>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// A new root named `name`.
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("P-256 key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let root = params.self_signed(&key).expect("self-signed root");
        Self {
            root: root.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The root's certificate.
    pub fn root(&self) -> CertificateDer<'static> {
        self.root.clone()
    }

    /// A trust bundle of this root alone.
    pub fn bundle(&self) -> SharedBundle {
        let bundle = TrustBundle::from_ders(vec![self.root()]).expect("bundle of the test root");
        Arc::new(ArcSwap::from_pointee(bundle))
    }

    /// A leaf for `id` with its key, valid for a day.
    pub fn leaf(&self, id: &SpiffeId) -> Arc<CertifiedKey> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("P-256 key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        let uri = id.to_string().try_into().expect("SPIFFE ID as a URI");
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(1);
        params.not_after = now + time::Duration::days(1);
        let cert = params.signed_by(&key, &self.issuer).expect("signed leaf");
        crate::certified_key(vec![cert.der().clone()], key.serialize_der()).expect("leaf key")
    }

    /// A certificate store holding a leaf for `id`.
    pub fn store(&self, id: &SpiffeId) -> Arc<CertStore> {
        let store = Arc::new(CertStore::default());
        store.store(self.leaf(id));
        store
    }
}
