use std::path::PathBuf;

use super::*;

fn chart_crds() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../charts/bulwark/crds")
}

/// Keywords a structural schema may not use, found anywhere in `v`.
fn forbidden(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let bad = matches!(
                    k.as_str(),
                    "$ref" | "$schema" | "const" | "anyOf" | "oneOf" | "allOf" | "$defs" | "title"
                ) || (k == "additionalProperties" && child == &Value::Bool(false))
                    || (k == "enum" && child.as_array().is_some_and(|e| e.contains(&Value::Null)));
                if bad && !path.ends_with(".properties") {
                    out.push(format!("{path}.{k}"));
                }
                forbidden(child, &format!("{path}.{k}"), out);
            }
        }
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, c)| forbidden(c, &format!("{path}[{i}]"), out)),
        _ => {}
    }
}

#[test]
fn the_schemas_are_structural() {
    for (file, manifest) in all() {
        let mut bad = Vec::new();
        forbidden(&manifest, "", &mut bad);
        assert!(bad.is_empty(), "{file}: {bad:?}");
        // Every object with properties has a type, as a structural schema requires.
        let spec =
            &manifest["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["type"], "object", "{file}");
    }
}

#[test]
fn the_schema_knows_every_field_the_examples_use() {
    let tp = &all()[1].1["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"];
    assert_eq!(
        tp["retries"]["properties"]["budget"]["properties"]["ratio"]["type"],
        "number"
    );
    assert_eq!(
        tp["retries"]["properties"]["conditions"]["items"]["enum"],
        json!([
            "5xx",
            "gateway-error",
            "reset",
            "connect-failure",
            "refused-stream"
        ])
    );
    assert_eq!(
        tp["loadBalancer"]["properties"]["algorithm"]["enum"],
        json!(["peakEwma", "roundRobin", "leastRequest"])
    );
    assert_eq!(
        tp["loadBalancer"]["properties"]["algorithm"]["nullable"],
        true
    );
    assert_eq!(
        tp["outlierDetection"]["properties"]["consecutive5xx"]["type"],
        "integer"
    );
    assert_eq!(
        tp["routes"]["items"]["properties"]["match"]["properties"]["pathPrefix"]["type"],
        "string"
    );
    assert_eq!(
        tp["timeouts"]["properties"]["request"]["pattern"],
        "^[0-9]+(ms|s|m|h)$"
    );
}

#[test]
fn the_chart_crds_match_the_types() {
    for (file, manifest) in all() {
        let path = chart_crds().join(&file);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == to_yaml(&manifest),
            "{} is out of date with the Rust types: run `cargo xtask codegen`",
            path.display()
        );
    }
}

#[test]
fn every_printer_column_names_a_field_of_its_type() {
    for (file, crd) in all() {
        let version = &crd["spec"]["versions"][0];
        let columns = version["additionalPrinterColumns"]
            .as_array()
            .expect("printer columns");
        assert!(
            columns.len() >= 2,
            "{file}: an Age column and at least one more"
        );
        for c in columns {
            let path = c["jsonPath"].as_str().expect("a jsonPath");
            if path == ".metadata.creationTimestamp" {
                continue;
            }
            let mut schema = &version["schema"]["openAPIV3Schema"];
            for part in path.trim_start_matches('.').split('.') {
                schema = &schema["properties"][part];
                assert!(!schema.is_null(), "{file}: column {path}: no field {part}");
            }
            let ty = schema["type"].as_str().unwrap_or("string");
            let want = c["type"].as_str().expect("a type");
            // Lists are shown as text; scalars keep their type.
            let shown = if ty == "array" { "string" } else { ty };
            assert_eq!(shown, want, "{file}: column {path} is a {ty}");
        }
        assert!(
            !crd["spec"]["names"]["shortNames"]
                .as_array()
                .expect("short names")
                .is_empty(),
            "{file}"
        );
    }
}
