use super::*;
use bulwark_identity::verify::{VerifyError, identity_of};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bulwark-ca-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn ca(name: &str) -> (Ca, PathBuf) {
    let dir = temp_dir(name);
    let (ca, made) = Ca::generate_into(&dir, "cluster.local", DEFAULT_CERT_LIFETIME).unwrap();
    assert!(made);
    (ca, dir)
}

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", ns, sa).unwrap()
}

#[test]
fn a_leaf_carries_the_granted_identity_and_chains_to_the_anchors() {
    let (ca, dir) = ca("leaf");
    let key = csr::new_key().unwrap();
    let web = id("shop", "web");
    let now = SystemTime::now();
    let issued = ca
        .certify(&csr::request(&web, &key).unwrap(), &web, now)
        .unwrap();
    assert_eq!(identity_of(&issued.leaf).unwrap(), web);
    let proven = ca
        .bundle()
        .verify(&issued.leaf, &issued.intermediates, UnixTime::now())
        .unwrap();
    assert_eq!(proven, web);
    let (nb, na) = bulwark_identity::verify::validity_of(&issued.leaf).unwrap();
    let unix = |t: SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert_eq!(na - unix(now), DEFAULT_CERT_LIFETIME.as_secs() as i64);
    assert_eq!(unix(now) - nb, CLOCK_SKEW_ALLOWANCE.as_secs() as i64);
    // Made once, then reused.
    let (again, made) = Ca::generate_into(&dir, "cluster.local", DEFAULT_CERT_LIFETIME).unwrap();
    assert!(!made);
    assert_eq!(again.bundle().fingerprints(), ca.bundle().fingerprints());
    let mode = |f: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777
    };
    assert_eq!((mode(ISSUER_KEY), mode(ROOT_KEY)), (0o600, 0o600));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_csr_for_another_identity_or_with_extra_names_is_refused() {
    let (ca, dir) = ca("refuse");
    let key = csr::new_key().unwrap();
    let (web, admin) = (id("shop", "web"), id("shop", "admin"));
    let other = csr::request(&admin, &key).unwrap();
    let e = ca.certify(&other, &web, SystemTime::now()).unwrap_err();
    assert!(
        matches!(&e, CertifyError::WrongIdentity { asked, .. } if asked.contains("sa/admin")),
        "{e}"
    );
    // The granted URI plus a DNS name.
    let mut p = CertificateParams::new(vec!["db.shop.svc".to_string()]).unwrap();
    p.subject_alt_names.push(SanType::URI(
        rcgen::string::Ia5String::try_from(web.to_string()).unwrap(),
    ));
    let extra = p.serialize_request(&key).unwrap().der().to_vec();
    assert!(matches!(
        ca.certify(&extra, &web, SystemTime::now()),
        Err(CertifyError::WrongIdentity { .. })
    ));
    // A key of another kind.
    let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let ed_csr = csr::request(&web, &ed).unwrap();
    assert_eq!(
        ca.certify(&ed_csr, &web, SystemTime::now()).unwrap_err(),
        CertifyError::KeyAlgorithm
    );
    // Garbage, and a CSR whose signature was tampered with.
    assert!(matches!(
        ca.certify(b"not a csr", &web, SystemTime::now()),
        Err(CertifyError::Csr(_))
    ));
    let mut tampered = csr::request(&web, &key).unwrap();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    assert!(matches!(
        ca.certify(&tampered, &web, SystemTime::now()),
        Err(CertifyError::Csr(_))
    ));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_issuer_from_another_root_fails_at_start_naming_why() {
    let (_, a) = ca("root-a");
    let (_, b) = ca("root-b");
    let e = Ca::from_files(
        &a.join(ROOT_CERT),
        &b.join(ISSUER_CERT),
        &b.join(ISSUER_KEY),
        "cluster.local",
        DEFAULT_CERT_LIFETIME,
    )
    .unwrap_err();
    assert!(matches!(e, CaError::Chain(_)), "{e}");
    let missing = Ca::from_files(
        &a.join("nope.pem"),
        &a.join(ISSUER_CERT),
        &a.join(ISSUER_KEY),
        "cluster.local",
        DEFAULT_CERT_LIFETIME,
    )
    .unwrap_err();
    assert!(missing.to_string().contains("nope.pem"), "{missing}");
    let _ = (std::fs::remove_dir_all(a), std::fs::remove_dir_all(b));
}

#[test]
fn a_leaf_from_another_mesh_is_untrusted() {
    let (a, da) = ca("mesh-a");
    let (b, db) = ca("mesh-b");
    let (issued, _) = b.issue_self(&id("shop", "web")).unwrap();
    let e = a
        .bundle()
        .verify(&issued.leaf, &issued.intermediates, UnixTime::now())
        .unwrap_err();
    assert!(matches!(e, VerifyError::Untrusted(_)), "{e}");
    let _ = (std::fs::remove_dir_all(da), std::fs::remove_dir_all(db));
}
