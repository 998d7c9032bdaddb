use super::*;

fn known(p: Protocol) -> Verdict {
    Verdict::Known(p)
}

#[test]
fn classifies_http1_request_lines() {
    assert_eq!(
        classify(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        known(Protocol::Http1)
    );
    assert_eq!(
        classify(b"POST /upload HTTP/1.1\r\n"),
        known(Protocol::Http1)
    );
    // The request line alone is enough; headers may still be in flight.
    assert_eq!(classify(b"GET /x HTTP/1.0\r\nHost"), known(Protocol::Http1));
    assert_eq!(classify(b"G"), Verdict::NeedMore);
    assert_eq!(classify(b"GET"), Verdict::NeedMore);
    assert_eq!(
        classify(b"PROPFIND /x HTTP/1.1\r\n"),
        known(Protocol::Http1)
    );
}

#[test]
fn a_known_method_and_a_space_is_http1_however_malformed_the_rest() {
    // Each of these once fell back to opaque TCP and reached the app untouched.
    for head in [
        &b"GET / HTTP/1.1\r\nX-Nul: a\0b\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nX-Fold: a\r\n b\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length : 5\r\n\r\nhello",
        b"GET /x HT",
        b"GET ",
        b"DELETE \x01",
    ] {
        assert_eq!(classify(head), known(Protocol::Http1), "{head:?}");
    }
    // Text protocols that merely start with a word are not taken for HTTP.
    assert_eq!(classify(b"SET key value\r\n"), known(Protocol::Opaque));
    assert!(begins_like_http1(b"PO"));
    assert!(begins_like_http1(b"GET"));
    assert!(!begins_like_http1(b""), "silence is not a request");
    assert!(!begins_like_http1(b"HELO"));
}

#[tokio::test(start_paused = true)]
async fn a_head_that_trickles_from_its_first_byte_is_still_http1() {
    use tokio::io::AsyncWriteExt;

    let (mut client, mut server) = tokio::io::duplex(64);
    client.write_all(b"PU").await.unwrap();
    let (outcome, bytes) = detect(&mut server, Duration::from_secs(1)).await.unwrap();
    assert_eq!(outcome, Detection::Detected(Protocol::Http1));
    assert_eq!(&bytes[..], b"PU");
}

/// Found by the `detect` fuzz target: an unlisted method's head was HTTP/1 when its
/// request line arrived in one read and opaque when more of it did. Only a whole request
/// line decides now.
#[test]
fn the_verdict_does_not_depend_on_how_the_head_was_split() {
    for head in [
        &b"PRI * HTTP/1.0\r\n\xff\xff\xff\xff\r\n\r\nI * HT\n"[..],
        b"PROPFIND /x HTTP/1.1\r\nBad Header: x\r\n\r\n",
    ] {
        assert_eq!(classify(head), known(Protocol::Http1));
        for cut in 1..head.iter().position(|&b| b == b'\n').unwrap() {
            assert_eq!(classify(&head[..cut]), Verdict::NeedMore, "cut at {cut}");
        }
    }
    for line in [
        &b"$RI * HTTP/1.0\rccc(\n"[..],
        b"PRI * HTTP/1.0~\n",
        b"HELLO there\r\n",
    ] {
        assert_eq!(classify(line), known(Protocol::Opaque));
        for cut in 1..line.len() {
            assert_ne!(
                classify(&line[..cut]),
                known(Protocol::Http1),
                "cut at {cut}"
            );
        }
    }
}

#[test]
fn classifies_h2_preface_byte_by_byte() {
    for n in 1..H2_PREFACE.len() {
        assert_eq!(
            classify(&H2_PREFACE[..n]),
            Verdict::NeedMore,
            "prefix of {n} bytes"
        );
    }
    assert_eq!(classify(H2_PREFACE), known(Protocol::Http2));
    let mut with_settings = H2_PREFACE.to_vec();
    with_settings.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    assert_eq!(classify(&with_settings), known(Protocol::Http2));
}

#[test]
fn classifies_tls_and_opaque() {
    assert_eq!(classify(&[0x16]), Verdict::NeedMore);
    assert_eq!(
        classify(&[0x16, 0x03, 0x01, 0x02, 0x00]),
        known(Protocol::Tls)
    );
    assert_eq!(classify(&[0x16, 0x07]), known(Protocol::Opaque));
    assert_eq!(
        classify(b"\x00\x00\x00\x08\x04\xd2\x16\x2f"),
        known(Protocol::Opaque)
    ); // Postgres SSLRequest
    assert_eq!(classify(b"*1\r\n$4\r\nPING\r\n"), known(Protocol::Opaque)); // Redis
    assert_eq!(classify(b"SSH-2.0-OpenSSH\r\n"), known(Protocol::Opaque));
}

#[test]
fn an_endless_request_line_is_bounded() {
    // A known method is HTTP/1 at once: hyper's head limit (431) bounds the rest.
    let mut line = b"GET /".to_vec();
    line.resize(MAX_DETECT_BYTES, b'a');
    assert_eq!(classify(&line), known(Protocol::Http1));
    // Another method is HTTP/1 only once its request line parses, within the bound.
    let mut line = b"PROPFIND /".to_vec();
    line.resize(MAX_DETECT_BYTES, b'a');
    assert_eq!(classify(&line), known(Protocol::Opaque));
}

#[tokio::test]
async fn detect_keeps_the_bytes_for_replay() {
    use tokio::io::AsyncWriteExt;
    let (mut client, mut server) = tokio::io::duplex(64);
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (outcome, bytes) = detect(&mut server, Duration::from_secs(1)).await.unwrap();
    assert_eq!(outcome, Detection::Detected(Protocol::Http1));
    let mut replay = Prefixed::new(bytes, server);
    let mut all = vec![0u8; 27];
    replay.read_exact(&mut all).await.unwrap();
    assert_eq!(&all, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
}

#[tokio::test(start_paused = true)]
async fn silence_times_out_and_close_ends_early() {
    let (_client, mut server) = tokio::io::duplex(64);
    let (outcome, bytes) = detect(&mut server, Duration::from_secs(1)).await.unwrap();
    assert_eq!(outcome, Detection::TimedOut);
    assert!(bytes.is_empty());

    let (client, mut server) = tokio::io::duplex(64);
    drop(client);
    let (outcome, _) = detect(&mut server, Duration::from_secs(1)).await.unwrap();
    assert_eq!(outcome, Detection::Closed);
}

#[test]
fn learner_marks_a_port_after_consecutive_timeouts_and_forgets_after_ttl() {
    let l = OpaqueLearner::new(2, Duration::from_secs(60));
    let t0 = Instant::now();
    assert!(!l.record_timeout(7000, t0));
    assert!(!l.is_opaque(7000, t0));
    assert!(l.record_timeout(7000, t0));
    assert!(l.is_opaque(7000, t0 + Duration::from_secs(59)));
    assert_eq!(
        l.learned(t0 + Duration::from_secs(10))[0].expires_in_secs,
        50
    );
    assert!(!l.is_opaque(7000, t0 + Duration::from_secs(60)));
    assert!(l.learned(t0 + Duration::from_secs(60)).is_empty());
    // After expiry the count starts over.
    assert!(!l.record_timeout(7000, t0 + Duration::from_secs(61)));
}

#[test]
fn a_successful_detection_resets_the_count() {
    let l = OpaqueLearner::new(2, Duration::from_secs(60));
    let t0 = Instant::now();
    l.record_timeout(8080, t0);
    l.record_detected(8080);
    assert!(!l.record_timeout(8080, t0));
    assert!(!l.is_opaque(8080, t0));
}

#[test]
fn threshold_zero_disables_learning() {
    let l = OpaqueLearner::new(0, Duration::from_secs(60));
    let t0 = Instant::now();
    for _ in 0..10 {
        assert!(!l.record_timeout(1, t0));
    }
    assert!(!l.is_opaque(1, t0));
}
