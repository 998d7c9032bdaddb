//! Builders for the outbound unit tests: targets from policy YAML, and their state.

use std::sync::Arc;
use std::time::Duration;

use bulwark_api::load;
use bulwark_api::policy::Document;

use super::build;
use super::policy::{RequestPolicy, RetryPolicy, Timeouts};
use super::target::TargetState;
use crate::metrics::Metrics;

/// The documents of `yaml`, which must be valid.
pub fn docs(yaml: &str) -> Vec<Document> {
    let mut loaded = load::Loaded::default();
    load::load_str(std::path::Path::new("test.yaml"), yaml, &mut loaded);
    assert!(loaded.is_valid(), "{:?}", loaded.diagnostics);
    loaded.documents.into_iter().map(|s| s.document).collect()
}

/// Fresh state of Backend `shop/api` with `endpoints` endpoints (10.1.0.1:80, 10.1.0.2:80,
/// …) under a TrafficPolicy whose spec holds `spec` (YAML lines at the spec's indent, or a
/// flow mapping entry).
pub fn backend_state(endpoints: usize, spec: &str) -> Arc<TargetState> {
    backend_state_with(endpoints, spec, Arc::new(Metrics::new(8)))
}

/// [`backend_state`] counting into `metrics`.
pub fn backend_state_with(endpoints: usize, spec: &str, metrics: Arc<Metrics>) -> Arc<TargetState> {
    let eps: Vec<String> = (1..=endpoints)
        .map(|i| format!("\"10.1.0.{i}:80\""))
        .collect();
    let spec: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    let yaml = format!(
        "apiVersion: bulwark.dev/v1alpha1\nkind: Backend\nmetadata: {{name: api, namespace: shop}}\nspec:\n  endpoints: [{}]\n---\napiVersion: bulwark.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: api, namespace: shop}}\nspec:\n  targetRef: {{kind: Backend, name: api}}\n{spec}",
        eps.join(", ")
    );
    let table = build::table(&docs(&yaml), &[]);
    Arc::new(TargetState::new(table.targets[0].clone(), metrics))
}

/// A request policy with `attempts` and extra retried `status_codes`, defaults otherwise.
pub fn policy_with_retries(attempts: u32, status_codes: &[u16]) -> RequestPolicy {
    RequestPolicy {
        route: "r".into(),
        label: Arc::new(crate::metrics::requests::RouteLabel {
            target: "Backend/test/t".into(),
            route: "r".into(),
        }),
        timeouts: Timeouts {
            connect: Duration::from_secs(1),
            request: None,
            per_try: None,
            response_headers: None,
            idle: None,
        },
        retry: RetryPolicy {
            attempts,
            conditions: vec![],
            status_codes: status_codes.to_vec(),
            grpc_codes: vec![14],
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
            max_buffered_body: 65536,
        },
        hedge: None,
    }
}
