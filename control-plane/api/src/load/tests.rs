use super::*;

fn load(text: &str) -> Loaded {
    let mut loaded = Loaded::default();
    load_str(Path::new("policy.yaml"), text, &mut loaded);
    cross_check(&mut loaded);
    loaded
}

fn only_error(text: &str) -> String {
    let l = load(text);
    assert_eq!(l.diagnostics.len(), 1, "{:#?}", l.diagnostics);
    l.diagnostics[0].to_string()
}

const POLICY: &str = "\
apiVersion: bulwark.dev/v1alpha1
kind: TrafficPolicy
metadata:
  name: web
spec:
  targetRef:
    kind: Service
    name: web
  retries:
    attempts: 3
    conditions: [5xx, connect-failure]
    budget:
      ratio: 0.2
  routes:
    - name: api
      match:
        pathPrefix: /api
      hedging:
        delay: 50ms
";

#[test]
fn a_valid_policy_loads() {
    let l = load(POLICY);
    assert!(l.is_valid(), "{:#?}", l.diagnostics);
    assert_eq!(l.documents.len(), 1);
    let Document::TrafficPolicy(t) = &l.documents[0].document else {
        panic!("a TrafficPolicy")
    };
    assert_eq!(t.spec.retries.as_ref().and_then(|r| r.attempts), Some(3));
}

#[test]
fn a_range_error_names_file_line_column_field_and_value() {
    let text = POLICY.replace("ratio: 0.2", "ratio: 1.5");
    assert_eq!(
        only_error(&text),
        "policy.yaml:13:7: spec.retries.budget.ratio: must be between 0 and 1, got 1.5"
    );
}

#[test]
fn an_unknown_field_is_an_error_at_that_field() {
    let text = POLICY.replace("    attempts: 3", "    attempts: 3\n    atempts: 4");
    let e = only_error(&text);
    assert!(
        e.starts_with(
            "policy.yaml:11:5: spec.retries.atempts: unknown field `atempts` (did you mean `attempts`?), expected one of `attempts`"
        ),
        "{e}"
    );
}

#[test]
fn a_wrong_type_names_the_field() {
    let text = POLICY.replace("delay: 50ms", "delay: 50");
    let e = only_error(&text);
    assert!(
        e.starts_with("policy.yaml:19:9: spec.routes[0].hedging.delay: expected "),
        "{e}"
    );
}

#[test]
fn type_errors_say_what_to_write_in_words_not_rust_types() {
    for (from, to, want) in [
        (
            "    attempts: 3",
            "    attempts: three",
            "spec.retries.attempts: expected a whole number, 0 or more; got the text \"three\"",
        ),
        (
            "    attempts: 3",
            "    attempts: -1",
            "spec.retries.attempts: expected a whole number, 0 or more; got `-1`",
        ),
        (
            "    attempts: 3",
            "    attempts: [3]",
            "spec.retries.attempts: expected a whole number, 0 or more; got a list",
        ),
    ] {
        let e = only_error(&POLICY.replace(from, to));
        assert!(e.contains(want), "{to}: {e}");
        assert!(!e.contains(" u32") && !e.contains("invalid type"), "{e}");
    }
}

#[test]
fn a_bad_duration_says_how_to_write_one() {
    let text = POLICY.replace("delay: 50ms", "delay: 50 ms");
    let e = only_error(&text);
    assert!(
        e.contains("spec.routes[0].hedging.delay") && e.contains("unit"),
        "{e}"
    );
}

#[test]
fn a_missing_field_is_reported_at_its_parent() {
    let text = POLICY.replace("    name: web\n  retries", "  retries");
    let e = only_error(&text);
    assert!(
        e.starts_with("policy.yaml:6:3: spec.targetRef: missing field `name`"),
        "{e}"
    );
}

#[test]
fn unknown_kinds_and_versions_are_rejected() {
    let e = only_error(&POLICY.replace("kind: TrafficPolicy", "kind: TrafficPolcy"));
    assert!(
        e.contains("kind: must be one of Backend, TrafficPolicy, MeshConfig, AuthorizationPolicy, got \"TrafficPolcy\""),
        "{e}"
    );
    let e = only_error(&POLICY.replace("v1alpha1", "v1"));
    assert_eq!(
        e,
        "policy.yaml:1:1: apiVersion: must be bulwark.dev/v1alpha1, got \"bulwark.dev/v1\""
    );
}

#[test]
fn invalid_yaml_is_located() {
    let e = only_error("apiVersion: bulwark.dev/v1alpha1\nkind: [unclosed\n");
    assert!(e.starts_with("policy.yaml:"), "{e}");
    assert!(e.contains("invalid YAML"), "{e}");
}

#[test]
fn several_documents_are_each_checked_and_located() {
    let text = format!(
        "{POLICY}---\napiVersion: bulwark.dev/v1alpha1\nkind: Backend\nmetadata:\n  name: legacy\nspec:\n  endpoints:\n    - 10.0.0.1:8080\n    - db.internal:0\n"
    );
    let e = only_error(&text);
    assert_eq!(
        e,
        "policy.yaml:28:7: spec.endpoints[1]: \"db.internal:0\" has port \"0\": must be 1-65535"
    );
}

#[test]
fn duplicates_missing_backends_and_second_mesh_configs_are_caught() {
    let backend_target = POLICY.replace("kind: Service", "kind: Backend");
    let l = load(&format!("{backend_target}---\n{POLICY}"));
    let text: Vec<String> = l.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        text.iter().any(|d| d
            .contains("spec.targetRef.name: no Backend named \"web\" in namespace \"default\"")),
        "{text:#?}"
    );
    assert!(
        text.iter().any(|d| d.contains(
            "metadata.name: TrafficPolicy default/web is already defined at policy.yaml:4"
        )),
        "{text:#?}"
    );
    let mesh = "apiVersion: bulwark.dev/v1alpha1\nkind: MeshConfig\nmetadata:\n  name: mesh\nspec:\n  trustDomain: cluster.local\n";
    let other = mesh.replace("name: mesh", "name: mesh2");
    let l = load(&format!("{mesh}---\n{other}"));
    assert_eq!(l.diagnostics.len(), 1, "{:#?}", l.diagnostics);
    assert!(l.diagnostics[0].reason.contains("only one MeshConfig"));
}

#[test]
fn authorization_policy_errors_name_file_line_and_field() {
    let text = "\
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: web
  namespace: shop
spec:
  target:
    workload: web
  action: deny
  http:
    - pathPrefix: admin
      methods: [get]
  from:
    - identity: spiffe://cluster.local/ns/shop/*
    - identity: spiffe://cluster.local/ns/shop
      cidr: 10.0.0.0/8
    - cidr: 10.0.0.0/33
";
    let l = load(text);
    let shown: Vec<String> = l.diagnostics.iter().map(|d| d.to_string()).collect();
    let expect = [
        "policy.yaml:11:7: spec.http[0].pathPrefix: must start with /",
        "policy.yaml:12:17: spec.http[0].methods[0]: must be an upper-case method",
        "policy.yaml:15:7: spec.from[1]: must set exactly one of identity, unauthenticated, cidr",
        "policy.yaml:17:7: spec.from[2].cidr: must be a CIDR",
    ];
    assert_eq!(shown.len(), expect.len(), "{shown:#?}");
    for (got, want) in shown.iter().zip(expect) {
        assert!(
            got.starts_with(want),
            "{got}\n  does not start with\n{want}"
        );
    }
    let ok = text
        .replace("pathPrefix: admin", "pathPrefix: /admin")
        .replace("[get]", "[GET]")
        .replace("      cidr: 10.0.0.0/8\n", "")
        .replace("ns/shop\n", "ns/shop/sa/web\n")
        .replace("/33", "/8");
    let l = load(&ok);
    assert!(l.is_valid(), "{:#?}", l.diagnostics);
    assert_eq!(l.documents[0].document.kind(), "AuthorizationPolicy");
}
