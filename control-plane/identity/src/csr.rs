//! The proxy's side of issuance: a private key made in memory, and the CSR that asks for
//! one identity with it.

use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};

use crate::SpiffeId;

/// A new ECDSA P-256 key. It lives in memory only: nothing writes it anywhere.
pub fn new_key() -> Result<KeyPair, rcgen::Error> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
}

/// A DER CSR for `id` (its one URI SAN), signed with `key`.
pub fn request(id: &SpiffeId, key: &KeyPair) -> Result<Vec<u8>, rcgen::Error> {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.subject_alt_names = vec![SanType::URI(rcgen::string::Ia5String::try_from(
        id.to_string(),
    )?)];
    Ok(p.serialize_request(key)?.der().to_vec())
}
