use std::time::Duration;

use bulwark_api::policy::RetryCondition;
use http::{HeaderMap, HeaderValue, Method};

use super::*;
use crate::outbound::policy::RetryPolicy;

fn policy(conditions: Vec<RetryCondition>) -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        conditions,
        status_codes: vec![429],
        grpc_codes: vec![14],
        backoff_base: Duration::from_millis(25),
        backoff_max: Duration::from_millis(250),
        max_buffered_body: 65536,
    }
}

#[test]
fn non_idempotent_requests_are_retried_only_when_the_app_never_saw_them() {
    let p = policy(vec![
        RetryCondition::ServerError,
        RetryCondition::Reset,
        RetryCondition::ConnectFailure,
        RetryCondition::RefusedStream,
    ]);
    let post = replay_safe(&Method::POST, &HeaderMap::new());
    assert!(!post);
    assert!(should_retry(Failure::ConnectFailure, &p, post));
    assert!(should_retry(Failure::RefusedStream, &p, post));
    assert!(!should_retry(Failure::Reset, &p, post));
    assert!(!should_retry(Failure::Status(503), &p, post));
    assert!(!should_retry(Failure::PerTryTimeout, &p, post));
    let get = replay_safe(&Method::GET, &HeaderMap::new());
    assert!(should_retry(Failure::Reset, &p, get));
    assert!(should_retry(Failure::Status(503), &p, get));
    let mut keyed = HeaderMap::new();
    keyed.insert("idempotency-key", HeaderValue::from_static("k-1"));
    assert!(replay_safe(&Method::POST, &keyed));
    assert!(replay_safe(&Method::PUT, &HeaderMap::new()));
    assert!(!replay_safe(&Method::PATCH, &HeaderMap::new()));
}

#[test]
fn conditions_select_what_is_retried() {
    let gw = policy(vec![RetryCondition::GatewayError]);
    assert!(should_retry(Failure::Status(502), &gw, true));
    assert!(should_retry(Failure::Status(504), &gw, true));
    assert!(!should_retry(Failure::Status(500), &gw, true));
    assert!(
        should_retry(Failure::Status(429), &gw, true),
        "listed status"
    );
    assert!(
        should_retry(Failure::ConnectFailure, &gw, false),
        "gateway-error covers connect failures"
    );
    assert!(!should_retry(Failure::Reset, &gw, true));
    assert!(
        should_retry(Failure::Grpc(14), &gw, false),
        "listed gRPC code"
    );
    assert!(!should_retry(Failure::Grpc(13), &gw, false));
    let none = policy(vec![]);
    assert!(!should_retry(Failure::ConnectFailure, &none, true));
}

#[test]
fn backoff_is_exponential_capped_and_jittered() {
    let p = policy(vec![]);
    assert_eq!(
        backoff(&p, 1, 0.999_999),
        Duration::from_millis(25).mul_f64(0.999_999)
    );
    assert_eq!(backoff(&p, 2, 0.5), Duration::from_millis(25));
    assert_eq!(backoff(&p, 3, 0.5), Duration::from_millis(50));
    assert_eq!(
        backoff(&p, 10, 0.5),
        Duration::from_millis(125),
        "capped at 250 ms"
    );
    assert_eq!(backoff(&p, 40, 0.0), Duration::ZERO);
}

#[test]
fn retry_after_is_honoured_only_when_short() {
    let mut h = HeaderMap::new();
    assert_eq!(retry_after(&h), None);
    h.insert("retry-after", HeaderValue::from_static("1"));
    assert_eq!(retry_after(&h), Some(Some(Duration::from_secs(1))));
    h.insert("retry-after", HeaderValue::from_static("120"));
    assert_eq!(retry_after(&h), Some(None));
}

/// A failed GET on attempt `n` of 3 with everything else allowing a retry.
fn attempted(n: u32, failure: Failure) -> Attempted {
    Attempted {
        n,
        max: 3,
        failure,
        safe: true,
        can_replay: true,
        retry_after: None,
        time_left: None,
        jitter: 0.5,
    }
}

#[test]
fn decide_weighs_attempts_policy_body_retry_after_and_time() {
    let p = policy(vec![RetryCondition::ServerError]);
    let a = attempted(1, Failure::Status(503));
    assert_eq!(
        decide(&p, &a),
        Decision::Retry(Duration::from_micros(12_500)),
        "half of the 25 ms first backoff"
    );
    let stop = |a: Attempted| match decide(&p, &a) {
        Decision::Stop(s) => s,
        d => panic!("expected a stop, got {d:?}"),
    };
    assert_eq!(stop(attempted(3, Failure::Status(503))), Stop::Attempts);
    assert_eq!(stop(attempted(1, Failure::Reset)), Stop::NotRetried);
    assert_eq!(stop(attempted(1, Failure::Downstream)), Stop::NotRetried);
    assert_eq!(
        stop(Attempted {
            safe: false,
            ..attempted(1, Failure::Status(503))
        }),
        Stop::NotRetried,
        "a POST's 503 may have run it"
    );
    assert_eq!(
        stop(Attempted {
            can_replay: false,
            ..a
        }),
        Stop::BodyNotReplayable
    );
    assert_eq!(
        stop(Attempted {
            retry_after: Some(None),
            ..a
        }),
        Stop::RetryAfterTooLong
    );
    assert_eq!(
        decide(
            &p,
            &Attempted {
                retry_after: Some(Some(Duration::from_secs(1))),
                ..a
            }
        ),
        Decision::Retry(Duration::from_secs(1)),
        "Retry-After lengthens the wait"
    );
    assert_eq!(
        stop(Attempted {
            time_left: Some(Duration::from_millis(10)),
            ..a
        }),
        Stop::Deadline,
        "12.5 ms of backoff does not fit in 10 ms"
    );
    let connect = Attempted {
        safe: false,
        ..attempted(1, Failure::ConnectFailure)
    };
    let p = policy(vec![RetryCondition::ConnectFailure]);
    assert!(
        matches!(decide(&p, &connect), Decision::Retry(_)),
        "a refused connect sent nothing, whatever the method"
    );
}
