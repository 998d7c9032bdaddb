//! The reviewer against kube-rs's client over a mock service, answered with TokenReview
//! responses as an API server writes them.

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

use super::*;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn reviewer() -> (TokenReviewer, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    (TokenReviewer::new(client, AUDIENCE), handle)
}

/// Answers the next request with `status` (the TokenReview's), after checking it is the
/// review the API server expects; returns the request body it saw.
async fn answer(handle: &mut Handle, status: Value) -> Value {
    let (req, send) = handle.next_request().await.expect("a request");
    assert_eq!(req.method(), http::Method::POST);
    assert_eq!(
        req.uri().path(),
        "/apis/authentication.k8s.io/v1/tokenreviews"
    );
    let body = req.into_body().collect_bytes().await.expect("a body");
    let sent: Value = serde_json::from_slice(&body).expect("JSON");
    let mut reply = sent.clone();
    reply["metadata"] = json!({"creationTimestamp": null});
    reply["status"] = status;
    send.send_response(
        Response::builder()
            .status(201)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&reply).expect("JSON")))
            .expect("a response"),
    );
    sent
}

#[tokio::test]
async fn a_service_accounts_token_for_bulwark_is_its_identity() {
    let (r, mut handle) = reviewer();
    let call = tokio::spawn(async move { r.review("eyJhbGciOi.token.sig\n").await });
    let sent = answer(
        &mut handle,
        json!({
            "authenticated": true,
            "user": {
                "username": "system:serviceaccount:shop:checkout",
                "uid": "7c3b1b2e-0d2f-4d8e-9d7e-2b1c1f0e9a11",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:shop", "system:authenticated"],
                "extra": {"authentication.kubernetes.io/pod-name": ["checkout-7d9f8c6b5d-x2x9k"]}
            },
            "audiences": [AUDIENCE]
        }),
    )
    .await;
    assert_eq!(sent["kind"], "TokenReview");
    assert_eq!(sent["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(sent["spec"]["token"], "eyJhbGciOi.token.sig", "trimmed");
    assert_eq!(sent["spec"]["audiences"], json!([AUDIENCE]));
    assert_eq!(
        call.await.unwrap(),
        Ok(("shop".to_string(), "checkout".to_string()))
    );
}

#[tokio::test]
async fn anything_else_is_refused_with_the_reason() {
    let cases = [
        (
            json!({"authenticated": false, "error": "[invalid bearer token, token has been invalidated]", "user": {}}),
            "invalid bearer token",
        ),
        (
            // A server that ignores spec.audiences, or a token for another audience.
            json!({"authenticated": true, "user": {"username": "system:serviceaccount:shop:checkout"}, "audiences": ["https://kubernetes.default.svc"]}),
            "not for the audience",
        ),
        (
            json!({"authenticated": true, "user": {"username": "system:serviceaccount:shop:checkout"}}),
            "not for the audience",
        ),
        (
            json!({"authenticated": true, "user": {"username": "alice@example.com"}, "audiences": [AUDIENCE]}),
            "not a service account",
        ),
        (
            json!({"authenticated": true, "user": {"username": "system:serviceaccount:shop"}, "audiences": [AUDIENCE]}),
            "not a service account",
        ),
    ];
    for (status, reason) in cases {
        let (r, mut handle) = reviewer();
        let call = tokio::spawn(async move { r.review("t").await });
        answer(&mut handle, status.clone()).await;
        let err = call.await.unwrap().unwrap_err();
        assert!(err.to_string().contains(reason), "{status}: {err}");
    }
}

#[tokio::test]
async fn an_api_server_that_refuses_the_review_is_an_error_not_a_grant() {
    let (r, mut handle) = reviewer();
    let call = tokio::spawn(async move { r.review("t").await });
    let (_, send) = handle.next_request().await.expect("a request");
    let status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "tokenreviews.authentication.k8s.io is forbidden: User \"system:serviceaccount:bulwark:bulwark-control-plane\" cannot create resource \"tokenreviews\"",
        "reason": "Forbidden", "details": {"group": "authentication.k8s.io", "kind": "tokenreviews"}, "code": 403
    });
    send.send_response(
        Response::builder()
            .status(403)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&status).unwrap()))
            .unwrap(),
    );
    let err = call.await.unwrap().unwrap_err();
    assert!(matches!(err, ReviewError::Api(_)), "{err}");
    assert!(err.to_string().contains("forbidden"), "{err}");
}
