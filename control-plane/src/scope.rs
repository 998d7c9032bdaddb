//! Which policy a proxy receives: the documents of its own namespace, the mesh-wide
//! MeshConfig, and (from the Kubernetes source) its namespace's Services with their
//! endpoints. A proxy never holds policy it does not need.

use bulwark_api::policy::Document;
use bulwark_api::wire;

/// The documents in scope for a proxy in `namespace`, in policy order.
pub fn scope<'a>(documents: &'a [Document], namespace: &str) -> Vec<&'a Document> {
    documents
        .iter()
        .filter(|d| matches!(d, Document::MeshConfig(_)) || d.metadata().namespace() == namespace)
        .collect()
}

/// The scoped documents as the JSON array a snapshot carries.
pub fn scoped_json(documents: &[Document], namespace: &str) -> String {
    serde_json::to_string(&scope(documents, namespace)).unwrap_or_else(|_| "[]".into())
}

/// The Services in scope for a proxy in `namespace`.
pub fn scoped_services(services: &[wire::Service], namespace: &str) -> Vec<wire::Service> {
    services
        .iter()
        .filter(|s| s.namespace == namespace)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_api::load::{Loaded, load_str};
    use std::path::Path;

    fn docs() -> Vec<Document> {
        let text = "\
apiVersion: bulwark.dev/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec: {trustDomain: cluster.local}
---
apiVersion: bulwark.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: web, namespace: shop}
spec: {targetRef: {kind: Service, name: web}}
---
apiVersion: bulwark.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: api, namespace: billing}
spec: {targetRef: {kind: Service, name: api}}
";
        let mut loaded = Loaded::default();
        load_str(Path::new("p.yaml"), text, &mut loaded);
        assert!(loaded.is_valid(), "{:?}", loaded.diagnostics);
        loaded.documents.into_iter().map(|s| s.document).collect()
    }

    #[test]
    fn a_proxy_gets_its_namespace_and_the_mesh_config_only() {
        let d = docs();
        let names: Vec<&str> = scope(&d, "shop")
            .iter()
            .map(|d| d.metadata().name.as_str())
            .collect();
        assert_eq!(names, ["mesh", "web"]);
        let names: Vec<&str> = scope(&d, "other")
            .iter()
            .map(|d| d.metadata().name.as_str())
            .collect();
        assert_eq!(names, ["mesh"]);
        assert!(scoped_json(&d, "billing").contains("\"api\""));
        assert!(!scoped_json(&d, "billing").contains("\"web\""));
    }
}
