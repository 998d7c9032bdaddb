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
