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

/// Every diagnostic of `text`, as printed.
fn errors(text: &str) -> Vec<String> {
    load(text)
        .diagnostics
        .iter()
        .map(|d| d.to_string())
        .collect()
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
            "spec.retries.attempts: expected a whole number from 1 to 10; got the text \"three\"",
        ),
        (
            "    attempts: 3",
            "    attempts: -1",
            "spec.retries.attempts: expected a whole number from 1 to 10; got `-1`",
        ),
        (
            "    attempts: 3",
            "    attempts: [3]",
            "spec.retries.attempts: expected a whole number from 1 to 10; got a list",
        ),
        (
            "      ratio: 0.2",
            "      ratio: [0.2]",
            "spec.retries.budget.ratio: expected a number; got a list",
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

#[test]
fn every_schema_error_of_a_document_is_reported_in_document_order_with_its_own_words() {
    // Each mistake alone, in document order; together they must read exactly as alone.
    let mistakes = [
        ("    kind: Service", "    kind: Servce"),
        ("    attempts: 3", "    attempts: three"),
        (
            "[5xx, connect-failure]",
            "[5xx, sometimes, connect-failure]",
        ),
        ("      ratio: 0.2", "      ration: 0.2"),
        ("        delay: 50ms", "        delay: 50"),
    ];
    let alone: Vec<String> = mistakes
        .iter()
        .map(|(from, to)| only_error(&POLICY.replace(from, to)))
        .collect();
    let all = mistakes
        .iter()
        .fold(POLICY.to_string(), |text, (from, to)| {
            text.replace(from, to)
        });
    assert_eq!(errors(&all), alone);
    assert_eq!(
        alone,
        [
            "policy.yaml:7:5: spec.targetRef.kind: unknown variant `Servce`, expected `Service` or `Backend`",
            "policy.yaml:10:5: spec.retries.attempts: expected a whole number from 1 to 10; got the text \"three\"",
            "policy.yaml:11:23: spec.retries.conditions[1]: unknown variant `sometimes`, expected one of `5xx`, `gateway-error`, `reset`, `connect-failure`, `refused-stream`",
            "policy.yaml:13:7: spec.retries.budget.ration: unknown field `ration` (did you mean `ratio`?), expected one of `ratio`, `minPerSecond`, `window`",
            "policy.yaml:19:9: spec.routes[0].hedging.delay: expected a string; got the number `50`",
        ]
    );
    // What the webhook and the proxies ask for: the first error serde meets.
    let value: serde_json::Value = serde_saphyr::from_str(&all).unwrap();
    assert!(document(&value).is_err());
}

#[test]
fn list_items_after_a_bad_one_keep_their_index() {
    let text = "\
apiVersion: bulwark.dev/v1alpha1
kind: Backend
metadata:
  name: db
spec:
  endpoints:
    - [10.0.0.1:80]
    - 10.0.0.2:80
    - {host: db}
    - 10.0.0.4:80
    - 5432
";
    assert_eq!(
        errors(text),
        [
            "policy.yaml:7:7: spec.endpoints[0]: expected a string; got a list",
            "policy.yaml:9:7: spec.endpoints[2]: expected a string; got a mapping",
            "policy.yaml:11:7: spec.endpoints[4]: expected a string; got the number `5432`",
        ]
    );
}

#[test]
fn a_wrong_required_field_is_one_error_and_a_missing_one_is_still_reported() {
    // Taking out the wrong `name` must not add "missing field `name`".
    let text = POLICY
        .replace("    name: web", "    name: [web]")
        .replace("  name: web", "  name: {web: 1}")
        .replace("    attempts: 3", "    attempts: three");
    assert_eq!(
        errors(&text),
        [
            "policy.yaml:4:3: metadata.name: expected a string; got a mapping",
            "policy.yaml:8:5: spec.targetRef.name: expected a string; got a list",
            "policy.yaml:10:5: spec.retries.attempts: expected a whole number from 1 to 10; got the text \"three\"",
        ]
    );
    let text = POLICY
        .replace("    name: web\n  retries", "  retries")
        .replace("    attempts: 3", "    attempts: three");
    assert_eq!(
        errors(&text),
        [
            "policy.yaml:6:3: spec.targetRef: missing field `name`",
            "policy.yaml:9:5: spec.retries.attempts: expected a whole number from 1 to 10; got the text \"three\"",
        ]
    );
}

#[test]
fn at_most_fifty_errors_are_shown_per_document_then_a_count() {
    let codes = vec!["x"; 60].join(", ");
    let text = POLICY.replace(
        "    attempts: 3",
        &format!("    attempts: 3\n    statusCodes: [{codes}]"),
    );
    let shown = errors(&text);
    assert_eq!(shown.len(), MAX_ERRORS_PER_DOCUMENT + 1, "{shown:#?}");
    assert_eq!(
        shown[0],
        "policy.yaml:11:19: spec.retries.statusCodes[0]: expected a whole number from 100 to 599; got the text \"x\""
    );
    assert!(
        shown[49].starts_with("policy.yaml:11:166: spec.retries.statusCodes[49]: "),
        "{}",
        shown[49]
    );
    assert_eq!(
        shown[50],
        "policy.yaml:1:1: … and 10 more errors in this document"
    );
}

#[test]
fn whole_number_type_errors_say_the_fields_range() {
    let text = "\
apiVersion: bulwark.dev/v1alpha1
kind: TrafficPolicy
metadata:
  name: web
spec:
  targetRef:
    kind: Service
    name: web
    port: http
  retries:
    statusCodes: [503, five-oh-three]
  outlierDetection:
    consecutive5xx: many
    maxEjectionPercent: half
    latency:
      requestVolume: -1
  limits:
    maxConcurrentRequests: 1.5
";
    let reasons: Vec<String> = load(text)
        .diagnostics
        .into_iter()
        .map(|d| format!("{}: {}", d.path, d.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            "spec.targetRef.port: expected a whole number from 1 to 65535; got the text \"http\"",
            "spec.retries.statusCodes[1]: expected a whole number from 100 to 599; got the text \"five-oh-three\"",
            "spec.outlierDetection.consecutive5xx: expected a whole number, 0 or more; got the text \"many\"",
            "spec.outlierDetection.maxEjectionPercent: expected a whole number from 0 to 100; got the text \"half\"",
            "spec.outlierDetection.latency.requestVolume: expected a whole number from 1 to 256; got `-1`",
            "spec.limits.maxConcurrentRequests: expected a whole number from 1 to 1000000; got the number `1.5`",
        ]
    );
    let mesh = "\
apiVersion: bulwark.dev/v1alpha1
kind: MeshConfig
metadata:
  name: mesh
spec:
  trustDomain: cluster.local
  mtls:
    ports:
      - port: eighty
        mode: strict
";
    assert_eq!(
        only_error(mesh),
        "policy.yaml:9:9: spec.mtls.ports[0].port: expected a whole number from 1 to 65535; got the text \"eighty\""
    );
}

const AUTHZ: &str = "\
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: web
spec:
  target:
    workload: web
  ports: [80, 443]
  action: deny
";

#[test]
fn an_unclosed_bracket_is_shown_where_it_was_opened() {
    let e = errors(&AUTHZ.replace("[80, 443]", "[80, 443"));
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(e[0].starts_with("policy.yaml:9:"), "{e:#?}");
    assert!(e[0].contains(": invalid YAML: "), "{e:#?}");
    assert_eq!(e[1], "policy.yaml:8:10: the [ opened here is never closed");

    let e = errors(&AUTHZ.replace("  target:\n    workload: web", "  target: {workload: web"));
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_eq!(e[1], "policy.yaml:6:11: the { opened here is never closed");

    let e = errors(&AUTHZ.replace("  action: deny", "  action: 'deny\n"));
    assert_eq!(
        e.last().map(String::as_str),
        Some("policy.yaml:9:11: the ' opened here is never closed"),
        "{e:#?}"
    );

    // Where the parser points at the bracket itself, it is said once.
    let e = only_error(&AUTHZ.replace("[80, 443]\n  action: deny\n", "[80, 443\n"));
    assert_eq!(e, "policy.yaml:8:10: invalid YAML: unclosed bracket '['");
}

#[test]
fn the_bracket_tracker_knows_quotes_comments_and_block_scalars() {
    let open = |text: &str| -> Vec<String> {
        syntax::unclosed(text)
            .into_iter()
            .map(|(c, p)| format!("{c} {}:{}", p.line, p.column))
            .collect()
    };
    let none: [&str; 0] = [];
    assert_eq!(open("a: [1, 2]\nb: {c: [d, e]}\n- [x]\n"), none);
    assert_eq!(
        open("pattern: a[0\nnote: it's [fine\n"),
        none,
        "plain scalars"
    );
    assert_eq!(open("a: '[it''s' # [\nb: \"{\\\"\" # {\n"), none, "quotes");
    assert_eq!(
        open("a: |\n  [ text\n  'more\nb: >-\n  {\n"),
        none,
        "block scalars"
    );
    assert_eq!(open("a: [1,\n  2] # ]\n"), none, "across lines");
    assert_eq!(open("a: [1\nb: 2\n"), ["[ 1:4"]);
    assert_eq!(
        open("a: {b: [1, 2}\n"),
        ["[ 1:8"],
        "closed by the wrong one"
    );
    assert_eq!(open("a: [1\n---\nb: ]\n"), ["[ 1:4"], "documents end");
    assert_eq!(open("a: &x [1\n- !!seq [2\n"), ["[ 1:7", "[ 2:9"]);
    assert_eq!(
        open("a: \"x\n  y\"\nb: 'z\n"),
        ["' 3:4"],
        "a quote across lines"
    );
    assert_eq!(
        open("a: 1\rb: 2\r\nc: [3\r"),
        ["[ 3:4"],
        "CR and CRLF end lines"
    );
}

#[test]
fn a_message_never_repeats_itself() {
    let inputs = [
        AUTHZ.replace("  action: deny", "  action: 'deny\n"),
        AUTHZ.replace("  action: deny", "\taction: deny"),
        AUTHZ.replace("  action: deny", "  action: deny\n  action: allow"),
        AUTHZ.replace("[80, 443]", "[80, 443"),
        AUTHZ.replace("  action: deny", "  action: denied"),
        AUTHZ.replace("[80, 443]", "[80, http]"),
        POLICY.replace("delay: 50ms", "delay: 50 ms"),
        POLICY.replace("    attempts: 3", "    atempts: 3"),
        POLICY.replace("  targetRef:", "  targetRef: web\n  x:"),
        POLICY.replace("v1alpha1", "v2"),
    ];
    for text in &inputs {
        let shown = errors(text);
        assert!(!shown.is_empty(), "{text}");
        for line in shown {
            // `file:line:col`, the path, the reason and the parts a reason has: no two
            // start with the same word ("invalid YAML: invalid indentation").
            let parts: Vec<&str> = line.split(": ").collect();
            let firsts: Vec<&str> = parts
                .iter()
                .filter_map(|p| p.split_whitespace().next())
                .collect();
            for (i, w) in firsts.iter().enumerate() {
                assert!(!firsts[..i].contains(w), "{w:?} twice in {line}");
            }
        }
    }
    assert_eq!(
        errors(&inputs[2]),
        ["policy.yaml:10:3: invalid YAML: duplicate mapping key: action"],
        "the parser's advice to its caller is left out"
    );
}

#[test]
fn empty_input_has_no_documents_and_nothing_to_report() {
    // The caller decides that nothing is not a pass (bulwarkctl validate fails on it).
    for text in [
        "",
        "\n",
        "# only a comment\n",
        "---\n",
        "---\n# c\n---\n...\n",
    ] {
        let l = load(text);
        assert!(l.documents.is_empty(), "{text:?}");
        assert!(l.diagnostics.is_empty(), "{text:?}: {:#?}", l.diagnostics);
    }
}

/// Paths of every node under `v` but the root, as steps.
fn node_paths(v: &serde_json::Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let children: Vec<(String, &serde_json::Value)> = match v {
        serde_json::Value::Object(m) => m.iter().map(|(k, c)| (k.clone(), c)).collect(),
        serde_json::Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, c)| (i.to_string(), c))
            .collect(),
        _ => Vec::new(),
    };
    for (step, child) in children {
        at.push(step);
        out.push(at.clone());
        node_paths(child, at, out);
        at.pop();
    }
}

/// `doc` with the node at `path` replaced by `with`, or taken out when `with` is null.
fn mistake(
    doc: &serde_json::Value,
    path: &[String],
    with: &serde_json::Value,
) -> serde_json::Value {
    let mut doc = doc.clone();
    let (last, parent) = path.split_last().expect("not the root");
    let node = parent.iter().fold(&mut doc, |n, s| match n {
        serde_json::Value::Array(a) => &mut a[s.parse::<usize>().expect("an index")],
        n => &mut n[s.as_str()],
    });
    match (node, with.is_null()) {
        (serde_json::Value::Object(m), true) => {
            m.remove(last);
        }
        (serde_json::Value::Array(a), false) => {
            a[last.parse::<usize>().expect("an index")] = with.clone()
        }
        (n, false) => n[last.as_str()] = with.clone(),
        (_, true) => {}
    }
    doc
}

/// Every schema error of a document is found: two mistakes in different places report
/// exactly what each reports alone, over every pair of nodes of the shipped examples, for
/// a wrong type, a number, an unknown field and a missing field.
#[test]
fn two_mistakes_report_exactly_what_each_reports_alone() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policy");
    let errors = |doc: &serde_json::Value| {
        let mut e = parse(doc, usize::MAX)
            .err()
            .map(|e| e.errors)
            .unwrap_or_default();
        e.sort();
        e
    };
    let mut pairs = 0;
    for file in ["web.yaml", "authz.yaml", "mesh.yaml", "legacy-db.yaml"] {
        let text = std::fs::read_to_string(examples.join(file)).expect("an example");
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).expect("YAML");
        for doc in docs.iter().filter(|d| d.is_object()) {
            let mut paths = Vec::new();
            node_paths(doc, &mut Vec::new(), &mut paths);
            paths.retain(|p| p[0] != "apiVersion" && p[0] != "kind");
            for with in [
                serde_json::json!([["x"]]),
                serde_json::json!(3.5),
                serde_json::json!({"unknown": 1}),
                serde_json::Value::Null,
            ] {
                let alone: Vec<_> = paths
                    .iter()
                    .map(|p| (p, errors(&mistake(doc, p, &with))))
                    .filter(|(_, e)| !e.is_empty())
                    .collect();
                for (i, (a, a_errors)) in alone.iter().enumerate() {
                    for (b, b_errors) in &alone[i + 1..] {
                        if a.starts_with(b) || b.starts_with(a) {
                            continue;
                        }
                        let both = errors(&mistake(&mistake(doc, a, &with), b, &with));
                        let mut want = [a_errors.clone(), b_errors.clone()].concat();
                        want.sort();
                        assert_eq!(both, want, "{file}: {with} at {a:?} and {b:?}");
                        pairs += 1;
                    }
                }
            }
        }
    }
    assert!(pairs > 1000, "{pairs}");
}

#[test]
fn a_list_where_a_mapping_belongs_is_said_so() {
    // serde would read the mapping's fields from the list by position and blame the first.
    let text = POLICY.replace(
        "    attempts: 3\n    conditions: [5xx, connect-failure]\n    budget:\n      ratio: 0.2\n",
        "    - attempts: 3\n      conditions: [5xx, connect-failure]\n",
    );
    assert_eq!(
        errors(&text),
        ["policy.yaml:9:3: spec.retries: expected a mapping (key: value lines); got a list"]
    );
}

#[test]
fn a_misplaced_field_is_told_where_it_belongs() {
    // `attempts` one level too high: under spec, not spec.retries.
    let text = POLICY.replace("  retries:\n", "  attempts: 2\n  retries:\n");
    let e = only_error(&text);
    assert!(
        e.contains("spec.attempts: unknown field `attempts`")
            && e.ends_with("; it belongs under `spec.retries` or `spec.routes[].retries`"),
        "{e}"
    );
    // A typo is a typo: the near name is said, not a far place.
    let text = POLICY.replace("    attempts: 3", "    attempts: 3\n    atempts: 4");
    assert!(!only_error(&text).contains("belongs"));
    // A name the kind has nowhere gets neither.
    let text = POLICY.replace("    attempts: 3", "    attempts: 3\n    colour: blue");
    assert!(!only_error(&text).contains("belongs"));
}
