//! Bootstrap tokens: what a proxy outside Kubernetes shows to be given an identity, the way
//! Kuma's dataplane tokens serve VMs. `bulwarkctl token create` signs one with the control
//! plane's token key; the control plane checks the signature and the expiry, and the token
//! grants exactly one namespace and service account.
//!
//! The form is `bwt1.<claims>.<signature>`: the claims are JSON, both parts base64url
//! without padding, the signature ECDSA P-256 with SHA-256 over `bwt1.<claims>`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use serde::{Deserialize, Serialize};

use crate::spiffe::valid_name;

/// The prefix that names the format (and its version).
pub const PREFIX: &str = "bwt1";

/// What a token grants, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// Namespace of the identity granted.
    pub ns: String,
    /// Service account of the identity granted.
    pub sa: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: u64,
}

/// Why a token was refused. The reasons are told to the caller: none reveals the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not of the `bwt1.<claims>.<signature>` form.
    #[error("the token is not a Bulwark bootstrap token (bwt1.<claims>.<signature>)")]
    Malformed,
    /// The signature does not verify with this control plane's key.
    #[error("the token's signature does not verify: it was not made with this mesh's token key")]
    Signature,
    /// Past its expiry.
    #[error("the token expired {0} s ago")]
    Expired(u64),
    /// The claims do not name a valid identity.
    #[error("the token's claims are invalid: {0}")]
    Claims(String),
}

/// Why a token key could not be used.
#[derive(Debug, thiserror::Error)]
#[error("the token key is not a usable PKCS#8 ECDSA P-256 private key: {0}")]
pub struct KeyError(String);

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Signs and checks tokens with one ECDSA P-256 key.
#[derive(Debug)]
pub struct TokenKey {
    pair: EcdsaKeyPair,
}

impl TokenKey {
    /// The key in PKCS#8 DER form.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, KeyError> {
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der, &SystemRandom::new())
            .map(|pair| Self { pair })
            .map_err(|e| KeyError(e.to_string()))
    }

    /// A token granting `namespace`/`service_account` for `ttl` from `now`.
    pub fn create(
        &self,
        namespace: &str,
        service_account: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<String, TokenError> {
        for (what, v) in [
            ("namespace", namespace),
            ("service account", service_account),
        ] {
            if !valid_name(v) {
                return Err(TokenError::Claims(format!(
                    "{what} `{v}` is not a Kubernetes name"
                )));
            }
        }
        let iat = unix(now);
        let claims = Claims {
            ns: namespace.into(),
            sa: service_account.into(),
            iat,
            exp: iat.saturating_add(ttl.as_secs().max(1)),
        };
        let json = serde_json::to_vec(&claims).map_err(|e| TokenError::Claims(e.to_string()))?;
        let signed = format!("{PREFIX}.{}", URL_SAFE_NO_PAD.encode(json));
        let sig = self
            .pair
            .sign(&SystemRandom::new(), signed.as_bytes())
            .map_err(|_| TokenError::Signature)?;
        Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
    }

    /// The claims of `token` if it was signed with this key and has not expired at `now`.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Claims, TokenError> {
        let token = token.trim();
        let (signed, sig) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let payload = signed
            .strip_prefix(PREFIX)
            .and_then(|p| p.strip_prefix('.'))
            .ok_or(TokenError::Malformed)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| TokenError::Malformed)?;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, self.pair.public_key().as_ref())
            .verify(signed.as_bytes(), &sig)
            .map_err(|_| TokenError::Signature)?;
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        let claims: Claims =
            serde_json::from_slice(&json).map_err(|e| TokenError::Claims(e.to_string()))?;
        let now = unix(now);
        if now >= claims.exp {
            return Err(TokenError::Expired(now - claims.exp));
        }
        if !valid_name(&claims.ns) || !valid_name(&claims.sa) {
            return Err(TokenError::Claims("namespace or service account".into()));
        }
        Ok(claims)
    }
}

/// A new token key, PKCS#8 DER.
pub fn generate_key() -> Result<Vec<u8>, KeyError> {
    EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
        .map(|d| d.as_ref().to_vec())
        .map_err(|e| KeyError(e.to_string()))
}

/// A new token key, PKCS#8 PEM (`PRIVATE KEY`), as `--token-key` files hold it.
pub fn generate_pem() -> Result<String, KeyError> {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map(|k| k.serialize_pem())
        .map_err(|e| KeyError(e.to_string()))
}

/// The token key in the PEM file at `path`; errors name the file.
pub fn read_key(path: &std::path::Path) -> Result<TokenKey, KeyError> {
    use rustls::pki_types::PrivatePkcs8KeyDer;
    use rustls::pki_types::pem::PemObject;
    let named = |e: &dyn std::fmt::Display| KeyError(format!("{}: {e}", path.display()));
    let der = PrivatePkcs8KeyDer::from_pem_file(path).map_err(|e| named(&e))?;
    TokenKey::from_pkcs8(der.secret_pkcs8_der()).map_err(|e| named(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TokenKey {
        TokenKey::from_pkcs8(&generate_key().unwrap()).unwrap()
    }

    #[test]
    fn a_token_grants_what_it_was_made_for_until_it_expires() {
        let k = key();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let tok = k
            .create("shop", "web", Duration::from_secs(60), t0)
            .unwrap();
        let c = k.verify(&tok, t0 + Duration::from_secs(59)).unwrap();
        assert_eq!((c.ns.as_str(), c.sa.as_str()), ("shop", "web"));
        assert_eq!(
            k.verify(&tok, t0 + Duration::from_secs(61)),
            Err(TokenError::Expired(1))
        );
    }

    #[test]
    fn another_key_or_an_edited_claim_does_not_verify() {
        let (a, b) = (key(), key());
        let now = SystemTime::now();
        let tok = a
            .create("shop", "web", Duration::from_secs(60), now)
            .unwrap();
        assert_eq!(b.verify(&tok, now), Err(TokenError::Signature));
        // Swap the claims for another service account's, keeping the signature.
        let forged_claims = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Claims {
                ns: "shop".into(),
                sa: "admin".into(),
                iat: 0,
                exp: u64::MAX,
            })
            .unwrap(),
        );
        let sig = tok.rsplit_once('.').unwrap().1;
        let forged = format!("{PREFIX}.{forged_claims}.{sig}");
        assert_eq!(a.verify(&forged, now), Err(TokenError::Signature));
        for junk in ["", "bwt1", "bwt1..", "jwt.abc.def", "bwt1.!!.??"] {
            assert!(a.verify(junk, now).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn a_pem_key_from_generate_pem_signs_and_verifies() {
        let pem = generate_pem().unwrap();
        let dir = std::env::temp_dir().join(format!("bulwark-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token.key");
        std::fs::write(&path, pem).unwrap();
        let k = read_key(&path).unwrap();
        let now = SystemTime::now();
        let tok = k
            .create("shop", "web", Duration::from_secs(5), now)
            .unwrap();
        assert!(k.verify(&tok, now).is_ok());
        let e = read_key(&dir.join("missing.key")).unwrap_err();
        assert!(e.to_string().contains("missing.key"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn names_are_checked_when_made() {
        let e = key()
            .create("Shop", "web", Duration::from_secs(1), SystemTime::now())
            .unwrap_err();
        assert!(e.to_string().contains("`Shop`"), "{e}");
    }
}
