use std::time::Duration;

use tokio::time::Instant;

use bulwark_api::policy::RetryCondition;
use http::{HeaderMap, HeaderValue, Method};

use super::*;
use crate::outbound::route::RetryPolicy;

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

#[test]
fn budget_allows_ratio_of_requests_plus_the_floor() {
    let t0 = Instant::now();
    let mut b = Budget::new(0.2, 1, Duration::from_secs(10));
    // Floor: 1/s over a 10 s window = 10 retries with no traffic at all.
    let floor = (0..100).filter(|_| b.withdraw(t0)).count();
    assert_eq!(floor, 10);
    for _ in 0..100 {
        b.deposit(t0);
    }
    let more = (0..100).filter(|_| b.withdraw(t0)).count();
    assert_eq!(more, 20, "20 % of 100 requests");
    // The window slides: 11 s later the old counts are gone and the floor is back.
    let later = t0 + Duration::from_secs(11);
    let again = (0..100).filter(|_| b.withdraw(later)).count();
    assert_eq!(again, 10);
}

#[test]
fn bound_holds_over_a_long_run_with_every_request_failing() {
    // Every request is retried if the budget allows: retries ≤ ratio × requests + floor × time.
    let t0 = Instant::now();
    let mut b = Budget::new(0.2, 10, Duration::from_secs(10));
    let (mut requests, mut retries) = (0u64, 0u64);
    for ms in 0..30_000u64 {
        let now = t0 + Duration::from_millis(ms);
        b.deposit(now);
        requests += 1;
        if b.withdraw(now) {
            retries += 1;
        }
    }
    let bound = 0.2 * requests as f64 + 10.0 * 30.0 + 100.0;
    assert!(
        (retries as f64) <= bound,
        "{retries} retries for {requests} requests"
    );
    assert!(
        retries as f64 >= 0.2 * requests as f64,
        "the budget is not stingier than its ratio"
    );
}
