use super::*;

fn authz(yaml: &str) -> Authz {
    let mut loaded = bulwark_api::load::Loaded::default();
    bulwark_api::load::load_str(std::path::Path::new("authz.yaml"), yaml, &mut loaded);
    assert!(loaded.is_valid(), "{:#?}", loaded.diagnostics);
    let docs: Vec<Document> = loaded.documents.into_iter().map(|d| d.document).collect();
    Authz::from_documents(&docs)
}

const WEB: (&str, &str) = ("shop", "web");
const CHECKOUT: &str = "spiffe://cluster.local/ns/shop/sa/checkout";
const OPS: &str = "spiffe://cluster.local/ns/ops/sa/admin";

fn req<'a>(port: u16, client: Option<&'a str>, http: Option<(&'a str, &'a str)>) -> Request<'a> {
    Request {
        port,
        peer: "10.77.0.9".parse().unwrap(),
        client,
        http,
    }
}

const POLICIES: &str = "\
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-callers, namespace: shop}
spec:
  target: {workload: web}
  ports: [8080]
  from:
    - identity: spiffe://cluster.local/ns/shop/*
    - cidr: 10.78.0.0/16
---
apiVersion: bulwark.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-admin, namespace: shop}
spec:
  target: {workload: web}
  action: deny
  ports: [8080]
  http:
    - pathPrefix: /admin
      methods: [POST, DELETE]
  from:
    - identity: spiffe://cluster.local/ns/shop/sa/checkout
";

#[test]
fn deny_wins_then_allow_must_match_on_its_ports() {
    let a = authz(POLICIES);
    // Allowed by the namespace wildcard.
    let d = a.decide(WEB, &req(8080, Some(CHECKOUT), Some(("GET", "/admin"))));
    assert!(d.allowed, "{d:?}");
    assert_eq!(
        (d.policy.as_str(), d.reason),
        ("shop/web-callers", Reason::AllowRule)
    );
    assert_eq!(d.rule, "from[0] identity spiffe://cluster.local/ns/shop/*");
    // The deny policy's route and caller: denied, whatever allows it.
    let d = a.decide(
        WEB,
        &req(8080, Some(CHECKOUT), Some(("POST", "/admin/users"))),
    );
    assert!(!d.allowed);
    assert_eq!(
        (d.policy.as_str(), d.reason),
        ("shop/web-admin", Reason::DenyRule)
    );
    // Segment-wise: /administrator is not under /admin.
    assert!(
        a.decide(
            WEB,
            &req(8080, Some(CHECKOUT), Some(("POST", "/administrator")))
        )
        .allowed
    );
    // Another namespace's identity matches no allow policy on 8080.
    let d = a.decide(WEB, &req(8080, Some(OPS), Some(("GET", "/"))));
    assert_eq!((d.allowed, d.reason), (false, Reason::NoAllowMatched));
    // Unauthenticated from inside the CIDR is allowed; from outside it is not.
    let mut r = req(8080, None, Some(("GET", "/")));
    assert!(!a.decide(WEB, &r).allowed);
    r.peer = "10.78.3.4".parse().unwrap();
    assert!(a.decide(WEB, &r).allowed);
    // Port 9090 is covered by no allow policy: the mesh default (allow) decides.
    let d = a.decide(WEB, &req(9090, Some(OPS), None));
    assert_eq!((d.allowed, d.reason), (true, Reason::MeshDefault));
    // Another workload is not touched by web's policies.
    assert!(
        a.decide(("shop", "cart"), &req(8080, Some(OPS), None))
            .allowed
    );
    assert!(!a.applies(("shop", "cart")));
    assert!(a.applies(WEB));
}

#[test]
fn a_port_with_http_routes_denies_what_is_not_http() {
    let a = authz(POLICIES);
    let d = a.decide(WEB, &req(8080, Some(CHECKOUT), None));
    assert_eq!((d.allowed, d.reason), (false, Reason::NotHttp));
    assert_eq!(d.policy, "shop/web-admin");
}

#[test]
fn a_deny_default_closes_every_port_no_policy_opens() {
    let a = authz(&format!(
        "{POLICIES}---\napiVersion: bulwark.dev/v1alpha1\nkind: MeshConfig\nmetadata: {{name: mesh}}\nspec:\n  trustDomain: cluster.local\n  authorization: {{default: deny}}\n"
    ));
    let d = a.decide(WEB, &req(9090, Some(CHECKOUT), None));
    assert_eq!((d.allowed, d.reason), (false, Reason::MeshDefault));
    assert_eq!(d.rule, "mesh default deny");
    assert!(a.applies(("shop", "cart")));
    assert!(
        a.decide(WEB, &req(8080, Some(CHECKOUT), Some(("GET", "/"))))
            .allowed
    );
}

#[test]
fn the_journal_keeps_the_newest_decisions_and_counts_denials() {
    let a = authz(POLICIES);
    let j = Journal::default();
    let peer: SocketAddr = "10.77.0.9:40000".parse().unwrap();
    for _ in 0..JOURNAL_LEN + 5 {
        let r = req(8080, Some(OPS), Some(("GET", "/")));
        j.record(peer, &r, &a.decide(WEB, &r));
    }
    let r = req(8080, Some(CHECKOUT), Some(("GET", "/")));
    j.record(peer, &r, &a.decide(WEB, &r));
    let recent = j.recent();
    assert_eq!(recent.len(), JOURNAL_LEN);
    assert_eq!(recent[0].client.as_deref(), Some(CHECKOUT));
    assert_eq!(recent[0].route.as_deref(), Some("GET /"));
    let mut text = String::new();
    j.render(&mut text);
    assert!(
        text.contains(&format!(
            "bulwark_authz_denied_total{{policy=\"default\",reason=\"no_allow_matched\"}} {}",
            JOURNAL_LEN + 5
        )),
        "{text}"
    );
    assert!(
        text.contains("bulwark_authz_allowed_total{policy=\"shop/web-callers\"} 1"),
        "{text}"
    );
}
