use std::pin::Pin;

use bulwark_api::wire::discovery_server::{Discovery, DiscoveryServer};
use tokio_stream::Stream;

use super::*;
use crate::outbound::policy::EndpointSpec;
use crate::snapshot;

const WEB: &str = r#"{"apiVersion":"bulwark.dev/v1alpha1","kind":"TrafficPolicy","metadata":{"name":"web","namespace":"shop"},"spec":{"targetRef":{"kind":"Service","name":"web"}}}"#;

/// A registry taking at most `max` endpoints.
fn registry(max: usize) -> Registry {
    let metrics = Arc::new(crate::metrics::Metrics::new(8));
    Registry::new(crate::config::Config::default().dns, max, metrics)
}

fn snap(version: u64, json: &str) -> wire::Snapshot {
    wire::Snapshot {
        version,
        documents_json: json.to_string(),
        meshed: Vec::new(),
        services: Vec::new(),
        discovers_services: false,
    }
}

#[test]
fn services_become_targets_and_a_malformed_endpoint_rejects_the_snapshot() {
    let current = Snapshot::from_flags([].into());
    let mut s = snap(4, &format!("[{WEB}]"));
    s.services = vec![wire::Service {
        namespace: "shop".into(),
        name: "web".into(),
        cluster_ips: vec!["10.96.0.10".into()],
        ports: vec![wire::ServicePort {
            port: 80,
            name: "http".into(),
            ready: vec!["10.1.0.1:8080".into(), "10.1.0.2:8080".into()],
            terminating: vec!["10.1.0.3:8080".into()],
            owners: Default::default(),
        }],
    }];
    let next = build(&s, &current, &registry(usize::MAX)).unwrap();
    let dst: std::net::SocketAddr = "10.96.0.10:80".parse().unwrap();
    let (target, _) = next
        .lookup(dst, None)
        .expect("the cluster IP reaches the Service");
    assert_eq!(target.key, "Service/shop/web:80");
    assert_eq!(target.endpoints.len(), 2, "terminating endpoints wait");
    let (by_name, _) = next
        .lookup("10.9.9.9:80".parse().unwrap(), Some("web.shop"))
        .unwrap();
    assert_eq!(
        by_name.key, target.key,
        "the name on the Service's port reaches it too"
    );
    assert!(
        next.lookup("10.96.0.10:81".parse().unwrap(), None)
            .is_none()
    );
    // Once nothing is ready, the terminating endpoints serve rather than nothing.
    let mut draining = s.clone();
    draining.services[0].ports[0].ready.clear();
    let next = build(&draining, &current, &registry(usize::MAX)).unwrap();
    let (target, _) = next.lookup(dst, None).unwrap();
    assert_eq!(
        target.endpoints,
        [EndpointSpec::Addr("10.1.0.3:8080".parse().unwrap())]
    );
    s.services[0].ports[0].ready.push("10.1.0.9".into());
    s.services[0].cluster_ips.push("nope".into());
    let e = build(&s, &current, &registry(usize::MAX)).unwrap_err();
    assert!(e.0.contains("services[0] (shop/web).cluster_ips[1]"), "{e}");
    assert!(
        e.0.contains("services[0] (shop/web).ports[0].ready[2] \"10.1.0.9\""),
        "{e}"
    );
}

#[test]
fn meshed_endpoints_are_parsed_and_a_bad_one_rejects_the_snapshot() {
    let current = Snapshot::from_flags([].into());
    let mut s = snap(3, "[]");
    s.meshed = vec![wire::MeshedEndpoint {
        ip: "10.0.0.7".into(),
        identity: "spiffe://cluster.local/ns/shop/sa/web".into(),
    }];
    let next = build(&s, &current, &registry(usize::MAX)).unwrap();
    let peer = next.mesh_peer("10.0.0.7:8080".parse().unwrap()).unwrap();
    assert_eq!(peer.to_string(), "spiffe://cluster.local/ns/shop/sa/web");
    assert!(next.mesh_peer("10.0.0.8:8080".parse().unwrap()).is_none());
    s.meshed.push(wire::MeshedEndpoint {
        ip: "10.0.0.9".into(),
        identity: "spiffe://cluster.local/web".into(),
    });
    let Rejected(why) = build(&s, &current, &registry(usize::MAX)).unwrap_err();
    assert!(why.contains("meshed[1].identity"), "{why}");
}

#[test]
fn a_valid_snapshot_is_built_whole() {
    let current = Snapshot::from_flags([3306].into());
    let next = build(
        &snap(7, &format!("[{WEB}]")),
        &current,
        &registry(usize::MAX),
    )
    .unwrap();
    assert_eq!(next.version, 7);
    assert_eq!(next.documents.len(), 1);
    assert!(
        next.opaque_ports.contains(&3306),
        "local settings carry over"
    );
}

/// A runtime, for the DNS refresh a hostname endpoint starts.
#[tokio::test]
async fn invalid_snapshots_are_rejected_with_the_field_and_reason() {
    let current = Snapshot::default();
    assert!(
        build(&snap(2, "{not json"), &current, &registry(usize::MAX))
            .unwrap_err()
            .0
            .contains("not a JSON array")
    );
    let bad = WEB.replace(r#""spec":{"#, r#""spec":{"retries":{"attempts":50},"#);
    let err = build(
        &snap(3, &format!("[{bad}]")),
        &current,
        &registry(usize::MAX),
    )
    .unwrap_err();
    assert_eq!(
        err.0,
        "document 0 (TrafficPolicy web): spec.retries.attempts: must be between 1 and 10, got 50"
    );
    let unknown = WEB.replace(r#""spec":{"#, r#""spec":{"retrys":{},"#);
    assert!(
        build(
            &snap(4, &format!("[{unknown}]")),
            &current,
            &registry(usize::MAX)
        )
        .unwrap_err()
        .0
        .contains("unknown field `retrys`")
    );
    let backend = r#"{"apiVersion":"bulwark.dev/v1alpha1","kind":"Backend","metadata":{"name":"api","namespace":"shop"},"spec":{"endpoints":["10.0.0.1:80","10.0.0.2:80","api.internal:80"]}}"#;
    assert!(build(&snap(5, &format!("[{backend}]")), &current, &registry(3)).is_ok());
    assert_eq!(
        build(&snap(5, &format!("[{backend}]")), &current, &registry(2))
            .unwrap_err()
            .0,
        "the policy names 3 endpoints, more than this proxy takes (--max-policy-endpoints 2)"
    );
}

/// A fake control plane: on each stream, sends the next scripted snapshots, reports what the
/// proxy answered, and ends the stream once every snapshot is answered.
#[derive(Clone)]
struct Fake {
    script: Arc<std::sync::Mutex<Vec<Vec<wire::Snapshot>>>>,
    answers: mpsc::UnboundedSender<proxy_message::Message>,
}

#[tonic::async_trait]
impl Discovery for Fake {
    type StreamStream =
        Pin<Box<dyn Stream<Item = Result<wire::ControlMessage, tonic::Status>> + Send>>;

    async fn stream(
        &self,
        request: tonic::Request<tonic::Streaming<wire::ProxyMessage>>,
    ) -> Result<tonic::Response<Self::StreamStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let snapshots = {
            let mut script = self.script.lock().unwrap();
            if script.is_empty() {
                Vec::new()
            } else {
                script.remove(0)
            }
        };
        let answers = self.answers.clone();
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            let mut answered = 0;
            while let Ok(Some(m)) = inbound.message().await {
                let m = m.message.unwrap();
                let is_hello = matches!(m, proxy_message::Message::Hello(_));
                let is_answer = matches!(
                    m,
                    proxy_message::Message::Ack(_) | proxy_message::Message::Nack(_)
                );
                let _ = answers.send(m);
                if is_hello {
                    for s in &snapshots {
                        let msg = wire::ControlMessage {
                            message: Some(control_message::Message::Snapshot(s.clone())),
                        };
                        let _ = tx.send(Ok(msg)).await;
                    }
                } else if is_answer {
                    answered += 1;
                }
                // Once every scripted snapshot is answered, this control plane "goes away":
                // the stream ends, as it does when the control plane restarts.
                if answered == snapshots.len() {
                    break;
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn serve(
    listener: tokio::net::TcpListener,
    fake: Fake,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(DiscoveryServer::new(fake))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stop_rx.await;
                },
            )
            .await;
    });
    (server, stop_tx)
}

async fn next(
    seen: &mut mpsc::UnboundedReceiver<proxy_message::Message>,
) -> proxy_message::Message {
    tokio::time::timeout(Duration::from_secs(15), seen.recv())
        .await
        .expect("an answer in time")
        .expect("open")
}

/// The next message opens a stream.
async fn expect_hello(seen: &mut mpsc::UnboundedReceiver<proxy_message::Message>) {
    let m = next(seen).await;
    assert!(matches!(m, proxy_message::Message::Hello(_)), "{m:?}");
}

/// A stream opens and the proxy ACKs snapshot `version`.
async fn hello_then_ack(seen: &mut mpsc::UnboundedReceiver<proxy_message::Message>, version: u64) {
    expect_hello(seen).await;
    let m = next(seen).await;
    assert!(
        matches!(&m, proxy_message::Message::Ack(a) if a.version == version),
        "{m:?}"
    );
}

#[tokio::test]
async fn acks_nacks_keeps_the_last_good_snapshot_and_reconnects() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (answers, mut seen) = mpsc::unbounded_channel();
    let bad = WEB.replace(r#""spec":{"#, r#""spec":{"retries":{"attempts":0},"#);
    let fake = Fake {
        script: Arc::new(std::sync::Mutex::new(vec![
            vec![snap(1, &format!("[{WEB}]")), snap(2, &format!("[{bad}]"))],
            vec![snap(3, "[]")],
        ])),
        answers,
    };
    let (server, stop) = serve(listener, fake);
    let shared = snapshot::shared(Snapshot::default());
    let applied = Arc::new(AtomicBool::new(false));
    let drain = Drain::new();
    let info = ProxyInfo {
        workload: "shop/web".into(),
        namespace: "shop".into(),
        ..Default::default()
    };
    let metrics = Arc::new(crate::metrics::Metrics::new(8));
    let client = tokio::spawn(run(
        Channel {
            endpoint: format!("http://{addr}"),
            tls: None,
            identity: None,
        },
        info,
        shared.clone(),
        Arc::new(Registry::new(
            crate::config::Config::default().dns,
            usize::MAX,
            metrics.clone(),
        )),
        applied.clone(),
        metrics.clone(),
        drain.clone(),
    ));

    assert!(
        matches!(next(&mut seen).await, proxy_message::Message::Hello(h) if h.namespace == "shop")
    );
    assert!(matches!(next(&mut seen).await, proxy_message::Message::Ack(a) if a.version == 1));
    match next(&mut seen).await {
        proxy_message::Message::Nack(n) => {
            assert_eq!(n.version, 2);
            assert!(
                n.reason
                    .contains("spec.retries.attempts: must be between 1 and 10, got 0"),
                "{}",
                n.reason
            );
        }
        other => panic!("expected a NACK, got {other:?}"),
    }
    assert_eq!(
        shared.load().version,
        1,
        "the rejected snapshot did not replace the good one"
    );
    assert!(applied.load(Ordering::Acquire));
    let d = &metrics.discovery;
    assert_eq!(
        (
            d.version.load(Ordering::Relaxed),
            d.applied.load(Ordering::Relaxed),
            d.rejected.load(Ordering::Relaxed)
        ),
        (1, 1, 1)
    );

    // The stream ends (the control plane went away): the proxy keeps its snapshot (static
    // stability), reconnects by itself, and applies what the next stream sends.
    assert_eq!(shared.load().version, 1);
    hello_then_ack(&mut seen, 3).await;
    assert_eq!(shared.load().version, 3);
    drain.signal();
    let _ = tokio::time::timeout(Duration::from_secs(5), client).await;
    drop(stop);
    server.abort();
}

#[tokio::test]
async fn destinations_without_a_target_are_reported_once_and_again_on_a_new_stream() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (answers, mut seen) = mpsc::unbounded_channel();
    let discovering = |v| wire::Snapshot {
        discovers_services: true,
        ..snap(v, "[]")
    };
    let fake = Fake {
        script: Arc::new(std::sync::Mutex::new(vec![
            vec![snap(1, "[]")],
            vec![discovering(2)],
            vec![discovering(3)],
        ])),
        answers,
    };
    let (server, stop) = serve(listener, fake);
    let shared = snapshot::shared(Snapshot::default());
    let drain = Drain::new();
    let metrics = Arc::new(crate::metrics::Metrics::new(8));
    let client = tokio::spawn(run(
        Channel {
            endpoint: format!("http://{addr}"),
            tls: None,
            identity: None,
        },
        ProxyInfo {
            workload: "shop/web".into(),
            namespace: "shop".into(),
            ..Default::default()
        },
        shared.clone(),
        Arc::new(registry(usize::MAX)),
        Arc::new(AtomicBool::new(false)),
        metrics,
        drain.clone(),
    ));
    let dst: std::net::SocketAddr = "10.96.0.20:80".parse().unwrap();
    // A file-mode control plane discovers nothing: a miss is not noted.
    hello_then_ack(&mut seen, 1).await;
    assert!(
        shared
            .load()
            .lookup(dst, Some("api.billing.svc:80"))
            .is_none()
    );
    assert_eq!(shared.load().interest.since(0).2, 0);
    // One that does: the miss is reported, by address and by host name.
    hello_then_ack(&mut seen, 2).await;
    assert!(
        shared
            .load()
            .lookup(dst, Some("api.billing.svc:80"))
            .is_none()
    );
    assert!(shared.load().lookup(dst, Some("api.billing.svc")).is_none());
    assert_eq!(shared.load().interest.since(0).2, 2, "noted once");
    // That stream ended after its ACK; the next one repeats every report at its start.
    expect_hello(&mut seen).await;
    match next(&mut seen).await {
        proxy_message::Message::Interest(i) => {
            assert_eq!(i.addresses, ["10.96.0.20:80"]);
            assert_eq!(i.hosts, ["api.billing.svc"]);
        }
        other => panic!("expected the report, got {other:?}"),
    }
    assert!(matches!(next(&mut seen).await, proxy_message::Message::Ack(a) if a.version == 3));
    drain.signal();
    let _ = tokio::time::timeout(Duration::from_secs(5), client).await;
    drop(stop);
    server.abort();
}
