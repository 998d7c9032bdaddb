//! The webhook's decisions, pure over AdmissionReview documents (bytes in, bytes out):
//! [`inject`] for Pods and [`validate`] for Bulwark's policy kinds.

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::Value;

use crate::inject::{self, Change, Settings};

/// What a review decided, for the metrics and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The sidecar was added (a patch was returned).
    Injected,
    /// Allowed unchanged: not a pod, an excluded namespace, opted out or injected already.
    Skipped,
    /// Allowed: a valid policy document, or an operation not checked.
    Valid,
    /// Refused, with the reason in the response.
    Denied,
}

impl Outcome {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Injected => "injected",
            Outcome::Skipped => "skipped",
            Outcome::Valid => "allowed",
            Outcome::Denied => "denied",
        }
    }
}

/// A request body that is not an AdmissionReview: answered with HTTP 400.
#[derive(Debug, thiserror::Error)]
#[error("not an AdmissionReview: {0}")]
pub struct Malformed(String);

fn parse(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, Malformed> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(|e| Malformed(e.to_string()))?;
    review
        .try_into()
        .map_err(|_| Malformed("it has no request".into()))
}

/// The response document. kube-core writes the patch's bytes as a JSON array of numbers;
/// the API server reads that too, but the documented form (Go's for `[]byte`) is a base64
/// string, a quarter of the size, so that is what is sent.
fn answer(resp: AdmissionResponse) -> Vec<u8> {
    use base64::Engine as _;
    let mut v = serde_json::to_value(resp.into_review()).unwrap_or_default();
    if let Some(bytes) = v["response"]["patch"].as_array() {
        let bytes: Vec<u8> = bytes
            .iter()
            .filter_map(|b| b.as_u64())
            .filter_map(|b| u8::try_from(b).ok())
            .collect();
        v["response"]["patch"] =
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

/// Why a pod in `namespace` is never injected, if it is not.
fn excluded(namespace: &str, own: &str, s: &Settings) -> bool {
    namespace == own || s.excluded_namespaces.iter().any(|n| n == namespace)
}

/// Answers an injection review: a JSON patch for a pod to inject, the pod unchanged
/// otherwise, a denial naming the annotation when a per-pod setting is wrong. `own` is the
/// control plane's namespace, never injected.
pub fn inject(body: &[u8], s: &Settings, own: &str) -> Result<(Vec<u8>, Outcome), Malformed> {
    let req = parse(body)?;
    let resp = AdmissionResponse::from(&req);
    let namespace = req.namespace.clone().unwrap_or_default();
    let pod = match (&req.operation, &req.object) {
        (Operation::Create, Some(obj)) if req.kind.kind == "Pod" && req.kind.group.is_empty() => {
            obj
        }
        _ => return Ok((answer(resp), Outcome::Skipped)),
    };
    if excluded(&namespace, own, s) {
        tracing::debug!(namespace, "not injected: the namespace is excluded");
        return Ok((answer(resp), Outcome::Skipped));
    }
    let pod = serde_json::to_value(pod).map_err(|e| Malformed(e.to_string()))?;
    let meta = &pod["metadata"];
    let workload = inject::workload_name(meta, meta);
    match inject::plan(meta, &pod["spec"], s, &workload) {
        Ok(plan) if plan.change == Change::Injected => {
            tracing::info!(
                namespace,
                workload,
                dry_run = req.dry_run,
                "sidecar injected"
            );
            let resp = resp
                .with_patch(plan.patch)
                .map_err(|e| Malformed(e.to_string()))?;
            Ok((answer(resp), Outcome::Injected))
        }
        Ok(plan) => {
            tracing::debug!(namespace, workload, change = ?plan.change, "not injected");
            Ok((answer(resp), Outcome::Skipped))
        }
        Err(e) => {
            tracing::warn!(namespace, workload, error = %e, "pod refused");
            Ok((answer(resp.deny(format!("bulwark: {e}"))), Outcome::Denied))
        }
    }
}

/// Answers a validation review with the checks `bulwarkctl validate` runs on one document:
/// a denial lists every problem as `field: reason`.
pub fn validate(body: &[u8]) -> Result<(Vec<u8>, Outcome), Malformed> {
    let req = parse(body)?;
    let resp = AdmissionResponse::from(&req);
    let obj = match (&req.operation, &req.object) {
        (Operation::Create | Operation::Update, Some(obj)) => obj,
        _ => return Ok((answer(resp), Outcome::Valid)),
    };
    let value = crate::kubernetes::view::policy_value(obj);
    let what = format!(
        "{} {}/{}",
        req.kind.kind,
        req.namespace.as_deref().unwrap_or("-"),
        obj.metadata.name.as_deref().unwrap_or(&req.name)
    );
    let problems: Vec<String> = match bulwark_api::load::document_problems(&value) {
        Err(problems) => problems,
        Ok(doc) => bulwark_api::policy::validate::validate(&doc)
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.reason))
            .collect(),
    };
    if problems.is_empty() {
        return Ok((answer(resp), Outcome::Valid));
    }
    tracing::info!(object = what, problems = problems.len(), "policy refused");
    let reason = format!("{what} is not valid: {}", problems.join("; "));
    Ok((answer(resp.deny(reason)), Outcome::Denied))
}

#[cfg(test)]
mod tests;
