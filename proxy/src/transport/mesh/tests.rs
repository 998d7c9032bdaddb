use super::*;
use bulwark_identity::testing::TestCa;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

fn id(sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", "shop", sa).unwrap()
}

fn mesh(ca: &TestCa, sa: &str) -> MeshTls {
    MeshTls::new(ca.bundle(), ca.store(&id(sa)))
}

const SECOND: Duration = Duration::from_secs(5);

/// A server proxy `web` that reads one ClientHello, says what it was, terminates it if it
/// is a mesh one, and echoes one line.
async fn server(
    ca: &TestCa,
) -> (
    SocketAddr,
    tokio::task::JoinHandle<(Hello, Option<Terminated<Prefixed>>)>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = mesh(ca, "web");
    let task = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let (hello, seen) = read_hello(Bytes::new(), &mut tcp).await.unwrap();
        let io = crate::transport::detect::Prefixed::new(seen, tcp);
        if hello != Hello::Mesh {
            return (hello, None);
        }
        match tls.accept(io, SECOND).await {
            Ok(mut t) => {
                let mut line = [0u8; 5];
                t.stream.read_exact(&mut line).await.unwrap();
                t.stream.write_all(&line).await.unwrap();
                t.stream.flush().await.unwrap();
                (hello, Some(t))
            }
            Err(_) => (hello, None),
        }
    });
    (addr, task)
}

type Prefixed = crate::transport::detect::Prefixed<TcpStream>;

#[tokio::test]
async fn a_mesh_connection_proves_both_identities_and_carries_its_alpn() {
    let ca = TestCa::new("test root");
    let (addr, task) = server(&ca).await;
    let client = mesh(&ca, "checkout");
    let mut s = dial(
        addr,
        Some(&id("web")),
        Some(&client),
        bulwark_identity::ALPN_HTTP1,
        (SECOND, SECOND),
    )
    .await
    .unwrap();
    assert!(s.is_tls());
    s.write_all(b"hello").await.unwrap();
    let mut back = [0u8; 5];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"hello");
    let (hello, t) = task.await.unwrap();
    assert_eq!(hello, Hello::Mesh);
    let t = t.expect("terminated");
    assert_eq!(t.peer, id("checkout"));
    assert_eq!(t.alpn, bulwark_identity::ALPN_HTTP1);
}

#[tokio::test]
async fn a_server_with_another_identity_is_refused() {
    let ca = TestCa::new("test root");
    let (addr, _task) = server(&ca).await;
    let client = mesh(&ca, "checkout");
    let err = dial(
        addr,
        Some(&id("payments")),
        Some(&client),
        bulwark_identity::ALPN_H2,
        (SECOND, SECOND),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ConnectError::Handshake { .. }), "{err}");
    assert!(err.to_string().contains("payments"), "{err}");
}

#[tokio::test]
async fn a_client_from_another_ca_is_refused_by_the_server() {
    let ca = TestCa::new("test root");
    let (addr, task) = server(&ca).await;
    let other = TestCa::new("another root");
    // It trusts the server's root but presents a certificate of another.
    let client = MeshTls::new(ca.bundle(), other.store(&id("checkout")));
    let dialed = dial(
        addr,
        Some(&id("web")),
        Some(&client),
        bulwark_identity::ALPN_OPAQUE,
        (SECOND, SECOND),
    )
    .await;
    // TLS 1.3: the client may finish before the server rejects its certificate.
    if let Ok(mut s) = dialed {
        let _ = s.write_all(b"hello").await;
        let mut back = [0u8; 5];
        assert!(s.read_exact(&mut back).await.is_err());
    }
    let (hello, t) = task.await.unwrap();
    assert_eq!(hello, Hello::Mesh);
    assert!(
        t.is_none(),
        "the server must refuse a foreign client certificate"
    );
}

#[tokio::test]
async fn only_a_bulwark_alpn_makes_a_mesh_hello() {
    let ca = TestCa::new("test root");
    // The application's own TLS (ALPN h2) is not a mesh connection.
    let (addr, task) = server(&ca).await;
    let mut cfg = rustls::ClientConfig::builder_with_provider(bulwark_identity::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("web.shop").unwrap();
    let _ =
        tokio::time::timeout(SECOND, TlsConnector::from(Arc::new(cfg)).connect(name, tcp)).await;
    let (hello, _) = task.await.unwrap();
    assert_eq!(hello, Hello::Other);
}

#[tokio::test]
async fn bytes_that_are_not_a_client_hello_are_other_and_kept_whole() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let writer = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        // A TLS record header followed by something that is no handshake.
        s.write_all(b"\x16\x03\x01\x00\x05hello").await.unwrap();
        s
    });
    let (mut tcp, _) = listener.accept().await.unwrap();
    let (hello, seen) = read_hello(Bytes::from_static(b"\x16"), &mut tcp)
        .await
        .unwrap();
    assert_eq!(hello, Hello::Other);
    assert!(seen.starts_with(b"\x16\x16\x03"), "{seen:?}");
    drop(writer.await);
}

#[tokio::test]
async fn without_a_certificate_a_meshed_peer_is_not_dialled_in_plaintext() {
    let ca = TestCa::new("test root");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let no_cert = MeshTls::new(ca.bundle(), Arc::new(CertStore::default()));
    let err = dial(
        addr,
        Some(&id("web")),
        Some(&no_cert),
        bulwark_identity::ALPN_HTTP1,
        (SECOND, SECOND),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("no certificate yet"), "{err}");
    // Nothing was even connected.
    let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
    assert!(accepted.is_err(), "a connection was made");
    // A peer that is not meshed is plaintext as before.
    let plain = dial(
        addr,
        None,
        Some(&no_cert),
        bulwark_identity::ALPN_HTTP1,
        (SECOND, SECOND),
    )
    .await
    .unwrap();
    assert!(!plain.is_tls());
}
