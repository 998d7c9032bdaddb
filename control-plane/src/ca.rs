//! The mesh's certificate authority: an issuer (an intermediate) under one of the trust
//! anchors signs short-lived workload certificates from the proxies' CSRs.
//!
//! The issuer and anchors come from files in production (`--trust-anchors`, `--issuer-cert`,
//! `--issuer-key`, e.g. from cert-manager). For a local mesh, [`Ca::generate_into`] makes a
//! root and an issuer once in a state directory and reuses them after.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bulwark_identity::verify::TrustBundle;
use bulwark_identity::{SpiffeId, csr};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer, UnixTime};
use time::OffsetDateTime;

/// Default lifetime of a workload certificate: Linkerd's and Istio's 24 h.
pub const DEFAULT_CERT_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// How far back a certificate's not-before is set, so a peer whose clock is behind ours
/// accepts it at once (Linkerd allows 20 s).
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(20);
/// Lifetime of the generated local root and issuer (Linkerd's CLI-made CA: one year).
pub const GENERATED_CA_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// Why the CA could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file could not be read or written, or does not hold what it should.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The issuer does not chain to the trust anchors, or cannot sign.
    #[error(
        "the issuer certificate cannot issue workload certificates the trust anchors accept: {0}"
    )]
    Chain(String),
}

/// Why a CSR was refused. Told to the proxy as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertifyError {
    /// Not a DER CSR with a valid self-signature.
    #[error("the CSR is invalid: {0}")]
    Csr(String),
    /// The key is not ECDSA P-256.
    #[error("the CSR's key must be ECDSA P-256")]
    KeyAlgorithm,
    /// The CSR names other identities than the one granted, or none.
    #[error(
        "the CSR must ask for exactly {granted} as its one URI SAN and no other name; it asks for {asked}"
    )]
    WrongIdentity {
        /// What the token grants.
        granted: String,
        /// What the CSR asks for.
        asked: String,
    },
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(String),
}

/// A certificate issued to a workload.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The leaf.
    pub leaf: CertificateDer<'static>,
    /// The issuer's certificate (the leaf's chain up to, not including, the root).
    pub intermediates: Vec<CertificateDer<'static>>,
    /// When the leaf expires.
    pub not_after: SystemTime,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    issuer_der: CertificateDer<'static>,
    bundle: TrustBundle,
    trust_domain: String,
    lifetime: Duration,
}

fn file_err(path: &Path, reason: impl std::fmt::Display) -> CaError {
    CaError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|e| file_err(path, e))
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    // Positive, as DER integers for serials must be.
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

fn ca_params(common_name: &str, path_len: Option<u8>, now: SystemTime) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, common_name);
    p.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = OffsetDateTime::from(now - CLOCK_SKEW_ALLOWANCE);
    p.not_after = OffsetDateTime::from(now + GENERATED_CA_LIFETIME);
    p.serial_number = Some(random_serial());
    p
}

/// Writes `contents` to `path`, readable by its owner only when `secret`.
fn write(path: &Path, contents: &str, secret: bool) -> Result<(), CaError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .map_err(|e| file_err(path, e))?;
    f.write_all(contents.as_bytes())
        .map_err(|e| file_err(path, e))
}

/// The bootstrap token key kept in the local state directory `dir`, made there (mode 0600)
/// if it is not yet; returns its path and whether it was made now.
pub fn token_key_in(dir: &Path) -> Result<(PathBuf, bool), CaError> {
    let path = dir.join(TOKEN_KEY);
    if path.exists() {
        return Ok((path, false));
    }
    let pem = bulwark_identity::token::generate_pem().map_err(|e| file_err(&path, e))?;
    write(&path, &pem, true)?;
    Ok((path, true))
}

/// The token key's file in a state directory.
pub const TOKEN_KEY: &str = "token.key";

/// The names of the files [`Ca::generate_into`] keeps in its directory.
pub const ROOT_CERT: &str = "trust-anchors.pem";
/// The root's key (kept so the local issuer can be re-made).
pub const ROOT_KEY: &str = "root.key";
/// The issuer's certificate.
pub const ISSUER_CERT: &str = "issuer.pem";
/// The issuer's key.
pub const ISSUER_KEY: &str = "issuer.key";

impl Ca {
    /// The CA of an issuer certificate and key under the roots in `anchors` (PEM files).
    pub fn from_files(
        anchors: &Path,
        issuer_cert: &Path,
        issuer_key: &Path,
        trust_domain: &str,
        lifetime: Duration,
    ) -> Result<Self, CaError> {
        let bundle = TrustBundle::from_file(anchors).map_err(|e| CaError::File {
            path: anchors.to_path_buf(),
            reason: e.to_string(),
        })?;
        let key = KeyPair::from_pem(&read(issuer_key)?).map_err(|e| file_err(issuer_key, e))?;
        let cert_pem = read(issuer_cert)?;
        let issuer_der = rustls::pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| file_err(issuer_cert, format!("no PEM CERTIFICATE: {e}")))?;
        let issuer =
            Issuer::from_ca_cert_der(&issuer_der, key).map_err(|e| file_err(issuer_cert, e))?;
        let ca = Self {
            issuer,
            issuer_der,
            bundle,
            trust_domain: trust_domain.into(),
            lifetime,
        };
        ca.self_check()?;
        Ok(ca)
    }

    /// The CA kept in `dir`, made there first if the directory holds none. Returns whether
    /// it was made now.
    pub fn generate_into(
        dir: &Path,
        trust_domain: &str,
        lifetime: Duration,
    ) -> Result<(Self, bool), CaError> {
        let path = |name: &str| dir.join(name);
        let made = !path(ISSUER_KEY).exists();
        if made {
            std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
            let now = SystemTime::now();
            let sign = |e: rcgen::Error| CaError::Chain(e.to_string());
            let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(sign)?;
            let root_params = ca_params(&format!("{trust_domain} root"), None, now);
            let root = root_params.self_signed(&root_key).map_err(sign)?;
            let root_issuer = Issuer::new(root_params, &root_key);
            let issuer_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(sign)?;
            let issuer = ca_params(&format!("{trust_domain} issuer"), Some(0), now)
                .signed_by(&issuer_key, &root_issuer)
                .map_err(sign)?;
            write(&path(ROOT_CERT), &root.pem(), false)?;
            write(&path(ROOT_KEY), &root_key.serialize_pem(), true)?;
            write(&path(ISSUER_CERT), &issuer.pem(), false)?;
            write(&path(ISSUER_KEY), &issuer_key.serialize_pem(), true)?;
        }
        let ca = Self::from_files(
            &path(ROOT_CERT),
            &path(ISSUER_CERT),
            &path(ISSUER_KEY),
            trust_domain,
            lifetime,
        )?;
        Ok((ca, made))
    }

    /// Issues a throwaway certificate and verifies it against the anchors, so a mismatched
    /// issuer fails at start, naming the problem, instead of at every proxy's handshake.
    fn self_check(&self) -> Result<(), CaError> {
        let id = SpiffeId::new(&self.trust_domain, "bulwark", "self-check")
            .map_err(|e| CaError::Chain(e.to_string()))?;
        let (issued, _) = self
            .issue_self(&id)
            .map_err(|e| CaError::Chain(e.to_string()))?;
        self.bundle
            .verify(&issued.leaf, &issued.intermediates, UnixTime::now())
            .map_err(|e| CaError::Chain(e.to_string()))?;
        Ok(())
    }

    /// A certificate for the control plane itself (or a test), its key made here.
    pub fn issue_self(&self, id: &SpiffeId) -> Result<(Issued, KeyPair), CertifyError> {
        let key = csr::new_key().map_err(|e| CertifyError::Sign(e.to_string()))?;
        let csr = csr::request(id, &key).map_err(|e| CertifyError::Sign(e.to_string()))?;
        Ok((self.certify(&csr, id, SystemTime::now())?, key))
    }

    /// The roots.
    pub fn bundle(&self) -> &TrustBundle {
        &self.bundle
    }

    /// The issuer's certificate.
    pub fn issuer_cert(&self) -> &CertificateDer<'static> {
        &self.issuer_der
    }

    /// The trust domain identities are issued in.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Signs the certificate `csr` asks for, if it asks for exactly `granted`. Nothing but
    /// the public key and the requested identity is taken from the CSR: lifetime, usages and
    /// every other field are ours.
    pub fn certify(
        &self,
        csr: &[u8],
        granted: &SpiffeId,
        now: SystemTime,
    ) -> Result<Issued, CertifyError> {
        let der = CertificateSigningRequestDer::from(csr.to_vec());
        let mut req = CertificateSigningRequestParams::from_der(&der)
            .map_err(|e| CertifyError::Csr(e.to_string()))?;
        if req.public_key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(CertifyError::KeyAlgorithm);
        }
        let want = granted.to_string();
        let asked: Vec<String> = req
            .params
            .subject_alt_names
            .iter()
            .map(|san| match san {
                SanType::URI(u) => u.as_str().to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        if asked != [want.clone()] {
            return Err(CertifyError::WrongIdentity {
                granted: want,
                asked: if asked.is_empty() {
                    "nothing".into()
                } else {
                    asked.join(", ")
                },
            });
        }
        req.params = leaf_params(&want, now, self.lifetime)?;
        let cert = req
            .signed_by(&self.issuer)
            .map_err(|e| CertifyError::Sign(e.to_string()))?;
        Ok(Issued {
            leaf: cert.der().clone(),
            intermediates: vec![self.issuer_der.clone()],
            not_after: now + self.lifetime,
        })
    }
}

fn leaf_params(
    identity: &str,
    now: SystemTime,
    lifetime: Duration,
) -> Result<CertificateParams, CertifyError> {
    let mut p = CertificateParams::default();
    // The identity is the URI SAN; the subject stays empty, as SPIFFE allows.
    p.distinguished_name = rcgen::DistinguishedName::new();
    let uri = rcgen::string::Ia5String::try_from(identity.to_string())
        .map_err(|e| CertifyError::Sign(e.to_string()))?;
    p.subject_alt_names = vec![SanType::URI(uri)];
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.use_authority_key_identifier_extension = true;
    p.not_before = OffsetDateTime::from(now - CLOCK_SKEW_ALLOWANCE);
    p.not_after = OffsetDateTime::from(now + lifetime);
    p.serial_number = Some(random_serial());
    Ok(p)
}

#[cfg(test)]
mod tests;
