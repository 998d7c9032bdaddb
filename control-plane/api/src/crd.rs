//! The CustomResourceDefinitions of the policy kinds, generated from the Rust types so the
//! chart's CRDs and the loader can never disagree. `cargo xtask codegen` writes them to
//! `charts/bulwark/crds/`; a test fails when the files drift from the types.

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

use crate::policy::{
    AuthorizationPolicySpec, BackendSpec, GROUP, MeshConfigSpec, TrafficPolicySpec,
};

/// The kinds with a CRD: kind, plural, whether namespaced, and the spec schema.
pub fn all() -> Vec<(String, Value)> {
    vec![
        crd::<BackendSpec>(Kind {
            kind: "Backend",
            plural: "backends",
            namespaced: true,
            description: "A destination outside Kubernetes service discovery: a fixed list of endpoints.",
            short_names: &["bkd"],
            columns: &[("Endpoints", "string", ".spec.endpoints")],
        }),
        crd::<TrafficPolicySpec>(Kind {
            kind: "TrafficPolicy",
            plural: "trafficpolicies",
            namespaced: true,
            description: "Client-side behaviour toward a Service or Backend: timeouts, retries, outlier detection, load balancing and limits, with per-route overrides.",
            short_names: &["tp"],
            columns: &[
                ("Target Kind", "string", ".spec.targetRef.kind"),
                ("Target", "string", ".spec.targetRef.name"),
                ("Port", "integer", ".spec.targetRef.port"),
                ("Timeout", "string", ".spec.timeouts.request"),
                ("Attempts", "integer", ".spec.retries.attempts"),
            ],
        }),
        crd::<MeshConfigSpec>(Kind {
            kind: "MeshConfig",
            plural: "meshconfigs",
            namespaced: false,
            description: "Mesh-wide settings: the trust domain and defaults for every TrafficPolicy.",
            short_names: &["meshcfg"],
            columns: &[
                ("Trust Domain", "string", ".spec.trustDomain"),
                ("mTLS", "string", ".spec.mtls.mode"),
            ],
        }),
        crd::<AuthorizationPolicySpec>(Kind {
            kind: "AuthorizationPolicy",
            plural: "authorizationpolicies",
            namespaced: true,
            description: "Which callers may reach a workload's ports and HTTP routes.",
            short_names: &["bauthz"],
            columns: &[
                ("Workload", "string", ".spec.target.workload"),
                ("Action", "string", ".spec.action"),
                ("Ports", "string", ".spec.ports"),
            ],
        }),
    ]
}

/// What a CRD needs beyond the spec schema.
struct Kind {
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    description: &'static str,
    /// What `kubectl get` accepts besides the plural (none clashes with Kubernetes' own).
    short_names: &'static [&'static str],
    /// `kubectl get` columns: name, type and JSONPath (an Age column follows).
    columns: &'static [(&'static str, &'static str, &'static str)],
}

/// The spec schema of `T` as a Kubernetes structural schema: inlined, OpenAPI 3 (nullable,
/// no `const`), without the keywords the API server does not accept.
pub fn spec_schema<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .into_generator();
    let mut v = generator.into_root_schema_for::<T>().to_value();
    structural(&mut v);
    v
}

/// Rewrites a schemars schema into the subset Kubernetes accepts in `openAPIV3Schema`.
fn structural(v: &mut Value) {
    let Value::Object(map) = v else {
        if let Value::Array(items) = v {
            items.iter_mut().for_each(structural);
        }
        return;
    };
    for key in ["$schema", "title", "components", "$defs", "definitions"] {
        map.remove(key);
    }
    // Kubernetes forbids `additionalProperties: false`; it prunes unknown fields itself.
    if map.get("additionalProperties") == Some(&Value::Bool(false)) {
        map.remove("additionalProperties");
    }
    // An optional enum comes as anyOf [the enum, null]: keep the enum, mark it nullable.
    if let Some(Value::Array(any)) = map.get("anyOf") {
        let is_null = |o: &Value| o.get("enum").is_some_and(|e| e == &json!([null]));
        if let [a, b] = any.as_slice() {
            let other = if is_null(b) {
                Some(a)
            } else if is_null(a) {
                Some(b)
            } else {
                None
            };
            if let Some(Value::Object(inner)) = other.cloned() {
                map.remove("anyOf");
                for (k, val) in inner {
                    if k == "description" && map.contains_key("description") {
                        continue;
                    }
                    map.insert(k, val);
                }
                map.insert("nullable".into(), json!(true));
            }
        }
    }
    // Unit enums with documented variants come as oneOf [{enum: [x], description}]: fold
    // them into one enum, keeping the variant descriptions in the description.
    if let Some(Value::Array(variants)) = map.get("oneOf") {
        let single = |o: &Value| {
            o.get("enum")
                .and_then(Value::as_array)
                .filter(|e| e.len() == 1)
                .map(|e| e[0].clone())
        };
        if let Some(values) = variants.iter().map(single).collect::<Option<Vec<Value>>>() {
            let notes: Vec<String> = variants
                .iter()
                .zip(&values)
                .filter_map(|(o, val)| {
                    Some(format!(
                        "`{}`: {}",
                        val.as_str()?,
                        o.get("description")?.as_str()?
                    ))
                })
                .collect();
            map.remove("oneOf");
            map.insert("type".into(), json!("string"));
            map.insert("enum".into(), Value::Array(values));
            if !notes.is_empty() {
                let base = map
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let text = if base.is_empty() {
                    notes.join(" ")
                } else {
                    format!("{base} {}", notes.join(" "))
                };
                map.insert("description".into(), json!(text));
            }
        }
    }
    // A single allOf (an inlined reference with siblings) merges into its parent.
    if let Some(Value::Array(all)) = map.get("allOf")
        && let [Value::Object(inner)] = all.as_slice()
    {
        let inner = inner.clone();
        map.remove("allOf");
        for (k, val) in inner {
            map.entry(k).or_insert(val);
        }
    }
    // Formats Kubernetes does not know (uint8, uint32 …) are dropped; minimum stays.
    if let Some(f) = map.get("format").and_then(Value::as_str)
        && !matches!(f, "int32" | "int64" | "float" | "double")
    {
        map.remove("format");
    }
    for (_, child) in map.iter_mut() {
        structural(child);
    }
}

fn crd<T: JsonSchema>(k: Kind) -> (String, Value) {
    let Kind {
        kind,
        plural,
        namespaced,
        description,
        short_names,
        columns,
    } = k;
    let mut printer: Vec<Value> = columns
        .iter()
        .map(|(name, ty, path)| json!({"name": name, "type": ty, "jsonPath": path}))
        .collect();
    printer.push(json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}));
    let singular = kind.to_lowercase();
    let mut spec = spec_schema::<T>();
    if let Some(m) = spec.as_object_mut() {
        m.remove("description");
    }
    let schema = json!({
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": {
                "type": "object",
                "description": "Written by the control plane: whether the policy was accepted, and why not.",
                "x-kubernetes-preserve-unknown-fields": true
            }
        }
    });
    let name = format!("{plural}.{GROUP}");
    let manifest = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": format!("{kind}List"),
                "plural": plural,
                "singular": singular,
                "shortNames": short_names,
                "categories": ["bulwark"]
            },
            "scope": if namespaced { "Namespaced" } else { "Cluster" },
            "versions": [{
                "name": "v1alpha1",
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": schema},
                "subresources": {"status": {}},
                "additionalPrinterColumns": printer
            }]
        }
    });
    (format!("{singular}.yaml"), manifest)
}

/// A CRD manifest as the YAML file the chart ships.
pub fn to_yaml(manifest: &Value) -> String {
    let body = serde_saphyr::to_string(manifest).unwrap_or_default();
    format!(
        "# Generated from the Rust types in control-plane/api by `cargo xtask codegen`; do not edit.\n{body}"
    )
}

#[cfg(test)]
mod tests;
