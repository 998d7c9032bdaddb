use base64::Engine as _;
use serde_json::{Value, json};

use super::*;

fn review(kind: (&str, &str, &str), namespace: &str, operation: &str, object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": kind.0, "version": kind.1, "kind": kind.2},
            "resource": {"group": kind.0, "version": kind.1, "resource": "pods"},
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": object,
            "dryRun": false
        }
    }))
    .unwrap()
}

fn pod(annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "web-7c9f6d-", "namespace": "shop",
            "labels": {"app": "web", "pod-template-hash": "7c9f6d"}, "annotations": annotations,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7c9f6d", "uid": "1", "controller": true}]},
        "spec": {"containers": [{"name": "web", "image": "web:1"}], "serviceAccountName": "web"}})
}

fn response(out: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(out).unwrap();
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");
    assert_eq!(v["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    v["response"].clone()
}

#[test]
fn a_pod_gets_the_patch_and_the_patched_pod_is_what_offline_injection_makes() {
    let p = pod(json!({}));
    let (out, outcome) = inject(
        &review(("", "v1", "Pod"), "shop", "CREATE", p.clone()),
        &Settings::default(),
        "bulwark",
    )
    .unwrap();
    assert_eq!(outcome, Outcome::Injected);
    let r = response(&out);
    assert_eq!(
        (r["allowed"].clone(), r["patchType"].clone()),
        (json!(true), json!("JSONPatch"))
    );
    let patch = base64::engine::general_purpose::STANDARD
        .decode(r["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut patched = p.clone();
    json_patch::patch(&mut patched, &patch).unwrap();
    let mut offline = p;
    crate::inject::manifest(&mut offline, &Settings::default()).unwrap();
    assert_eq!(patched, offline);
    // The workload is the app label, not the generated name.
    assert!(
        patched
            .to_string()
            .contains("$(BULWARK_POD_NAMESPACE)/web\"")
    );
}

#[test]
fn excluded_namespaces_opt_outs_and_other_operations_pass_unchanged() {
    let s = Settings::default();
    for (ns, op, obj) in [
        ("kube-system", "CREATE", pod(json!({}))),
        ("bulwark", "CREATE", pod(json!({}))),
        ("shop", "UPDATE", pod(json!({}))),
        (
            "shop",
            "CREATE",
            pod(json!({"bulwark.dev/inject": "disabled"})),
        ),
    ] {
        let (out, outcome) =
            inject(&review(("", "v1", "Pod"), ns, op, obj), &s, "bulwark").unwrap();
        assert_eq!(outcome, Outcome::Skipped, "{ns} {op}");
        let r = response(&out);
        assert_eq!(r["allowed"], true);
        assert!(r.get("patch").is_none_or(Value::is_null), "{r}");
    }
}

#[test]
fn a_bad_annotation_denies_the_pod_with_its_name() {
    let p = pod(json!({"config.bulwark.dev/opaque-ports": "postgres"}));
    let (out, outcome) = inject(
        &review(("", "v1", "Pod"), "shop", "CREATE", p),
        &Settings::default(),
        "bulwark",
    )
    .unwrap();
    assert_eq!(outcome, Outcome::Denied);
    let r = response(&out);
    assert_eq!(r["allowed"], false);
    let msg = r["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("config.bulwark.dev/opaque-ports") && msg.contains("postgres"),
        "{msg}"
    );
}

#[test]
fn a_body_that_is_not_a_review_is_malformed() {
    for body in [
        &b"{}"[..],
        b"not json",
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
    ] {
        assert!(inject(body, &Settings::default(), "bulwark").is_err());
        assert!(validate(body).is_err());
    }
}

fn traffic_policy(attempts: u32) -> Value {
    json!({"apiVersion": "bulwark.dev/v1alpha1", "kind": "TrafficPolicy",
        "metadata": {"name": "web", "namespace": "shop", "uid": "6c1f", "resourceVersion": "4711",
            "generation": 1, "creationTimestamp": "2026-12-02T10:00:00Z",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
            "managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Update"}]},
        "spec": {"targetRef": {"kind": "Service", "name": "web", "port": 8080},
            "retries": {"attempts": attempts}}})
}

#[test]
fn policy_is_validated_as_bulwarkctl_validate_does() {
    let kind = ("bulwark.dev", "v1alpha1", "TrafficPolicy");
    let (out, outcome) = validate(&review(kind, "shop", "CREATE", traffic_policy(3))).unwrap();
    assert_eq!(outcome, Outcome::Valid);
    assert_eq!(response(&out)["allowed"], true);
    let (out, outcome) = validate(&review(kind, "shop", "UPDATE", traffic_policy(20))).unwrap();
    assert_eq!(outcome, Outcome::Denied);
    let r = response(&out);
    assert_eq!(r["allowed"], false);
    let msg = r["status"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("TrafficPolicy shop/web is not valid: spec.retries.attempts:"),
        "{msg}"
    );
    let mut typo = traffic_policy(3);
    typo["spec"]["retires"] = json!({});
    let (out, _) = validate(&review(kind, "shop", "CREATE", typo)).unwrap();
    let msg = response(&out)["status"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("retires") && msg.contains("did you mean `retries`"),
        "{msg}"
    );
}

#[test]
fn every_schema_error_of_a_policy_is_in_the_denial() {
    let kind = ("bulwark.dev", "v1alpha1", "TrafficPolicy");
    let mut bad = traffic_policy(3);
    bad["spec"]["retires"] = json!({});
    bad["spec"]["timeouts"] = json!({"request": "soon"});
    bad["spec"]["targetRef"]["kind"] = json!("Servce");
    let (out, outcome) = validate(&review(kind, "shop", "CREATE", bad)).unwrap();
    assert_eq!(outcome, Outcome::Denied);
    let msg = response(&out)["status"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    for part in [
        "spec.retires: unknown field `retires` (did you mean `retries`?)",
        "spec.timeouts.request:",
        "spec.targetRef.kind: unknown variant `Servce`",
    ] {
        assert!(msg.contains(part), "{part} in {msg}");
    }
    assert_eq!(msg.matches("; ").count(), 2, "three problems: {msg}");
}
