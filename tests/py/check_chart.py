"""Checks the Helm chart with Helm's own Go SDK (helm-python-sdk) and Kubernetes' schemas.

check_chart.py CHART_DIR [--emit FILE]

1. `helm lint --strict` finds no error.
2. The chart renders (a client-side dry-run install) with the default values and with a few
   realistic overrides; every rendered document validates strictly against the Kubernetes
   API schemas of 1.29 to 1.33.
3. Every pod spec meets Pod Security "restricted": non-root, no privilege escalation, every
   capability dropped, RuntimeDefault seccomp, and a read-only root filesystem.
4. The webhooks: the generated certificate is signed by the CA in their caBundle and names
   the control plane's Service; the injection and validation rules and selectors are there;
   cert-manager and a given Secret are wired as they say.
5. Values that break the schema (values.schema.json) are refused.
With --emit, the default render's documents are written to FILE as JSON, for the test that
runs what the chart says. Prints one line per check; exits 1 on the first failure.
"""
import base64
import json
import os
import subprocess
import sys
import tempfile

import helm_python
import kubernetes_validate
import yaml

VERSIONS = ["1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0"]

OVERRIDES = {
    "default values": {},
    "one replica, a token key": {
        "controlPlane": {"replicas": 1},
        "identity": {"tokenKey": "token.key"},
    },
    "pinned image, spread and tolerated": {
        "controlPlane": {
            "image": {"tag": "0.1.0-rc1", "pullPolicy": "Always"},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "mesh", "effect": "NoSchedule"}],
        },
        "mesh": {"trustDomain": "prod.example.com"},
    },
    "classic sidecars, a given webhook certificate": {
        "proxy": {"sidecar": "classic", "image": {"repository": "registry.example/bulwark-proxy", "tag": "0.1.0"}},
        "webhook": {"certificate": {"source": "secret", "secretName": "my-webhook-tls", "caBundle": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"},
                    "injection": {"failurePolicy": "Ignore", "excludedNamespaces": ["kube-system", "monitoring"]}},
    },
    "cert-manager": {
        "webhook": {"certificate": {"source": "certManager", "certManager": {"issuerKind": "ClusterIssuer", "issuerName": "internal-ca"}}},
    },
    "webhooks off": {"webhook": {"enabled": False}},
    "kubernetes source": {"controlPlane": {"source": "kubernetes"}},
}

SERVICE = "bulwark-control-plane.bulwark.svc"


def render(chart, values):
    cfg = helm_python.Config(storage_driver="memory")
    release = cfg.install(chart, "bulwark", values, namespace="bulwark", dry_run="client")
    return [d for d in yaml.safe_load_all(release["manifest"]) if d]


def restricted(doc):
    spec = doc["spec"]["template"]["spec"]
    pod = spec.get("securityContext", {})
    assert pod.get("runAsNonRoot") is True, "runAsNonRoot"
    assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault", "seccomp"
    for c in spec.get("initContainers", []) + spec["containers"]:
        sc = c.get("securityContext", {})
        assert sc.get("allowPrivilegeEscalation") is False, f"{c['name']}: allowPrivilegeEscalation"
        assert sc.get("readOnlyRootFilesystem") is True, f"{c['name']}: readOnlyRootFilesystem"
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{c['name']}: drop ALL"
        assert not sc.get("capabilities", {}).get("add"), f"{c['name']}: adds capabilities"
        assert not sc.get("privileged"), f"{c['name']}: privileged"


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def check_webhooks(name, values, docs):
    hook = values.get("webhook", {})
    if hook.get("enabled") is False:
        assert not by_kind(docs, "MutatingWebhookConfiguration") and not by_kind(docs, "ValidatingWebhookConfiguration")
        args = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
        assert not any(a.startswith("--webhook") for a in args), args
        return "no webhooks"
    [mutating] = by_kind(docs, "MutatingWebhookConfiguration")
    [validating] = by_kind(docs, "ValidatingWebhookConfiguration")
    hooks = mutating["webhooks"] + validating["webhooks"]
    assert [h["name"] for h in hooks] == ["namespace.inject.bulwark.dev", "pod.inject.bulwark.dev", "validate.bulwark.dev"]
    for h in hooks:
        svc = h["clientConfig"]["service"]
        assert (svc["name"], svc["namespace"], svc["port"]) == ("bulwark-control-plane", "bulwark", 443), svc
        assert h["sideEffects"] == "None" and h["admissionReviewVersions"] == ["v1"]
    for h in mutating["webhooks"]:
        excluded = [e for e in h["namespaceSelector"]["matchExpressions"] if e["key"] == "kubernetes.io/metadata.name"][0]
        assert excluded["operator"] == "NotIn" and "bulwark" in excluded["values"], excluded
        assert set(hook.get("injection", {}).get("excludedNamespaces", ["kube-system"])) <= set(excluded["values"])
        assert h["failurePolicy"] == hook.get("injection", {}).get("failurePolicy", "Fail")
    assert validating["webhooks"][0]["rules"][0]["resources"] == ["trafficpolicies", "backends", "meshconfigs", "authorizationpolicies"]
    source = hook.get("certificate", {}).get("source", "generate")
    if source == "certManager":
        [cert] = by_kind(docs, "Certificate")
        assert cert["spec"]["secretName"] == "bulwark-webhook-tls" and SERVICE in cert["spec"]["dnsNames"]
        assert cert["spec"]["issuerRef"] == {"kind": "ClusterIssuer", "name": "internal-ca"}
        for c in (mutating, validating):
            assert c["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == "bulwark/bulwark-webhook"
            assert all("caBundle" not in h["clientConfig"] for h in c["webhooks"])
        return "cert-manager Certificate, CA injected by cert-manager"
    bundles = {h["clientConfig"]["caBundle"] for h in hooks}
    assert len(bundles) == 1, "the webhooks disagree on the caBundle"
    if source == "secret":
        volumes = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["volumes"]
        assert {"name": "webhook-tls", "secret": {"secretName": "my-webhook-tls", "defaultMode": 0o440}} in volumes, volumes
        assert base64.b64decode(bundles.pop()).startswith(b"-----BEGIN CERTIFICATE-----")
        return "the given Secret mounted, its CA as caBundle"
    [secret] = [d for d in by_kind(docs, "Secret") if d["metadata"]["name"] == "bulwark-webhook-tls"]
    with tempfile.TemporaryDirectory() as tmp:
        for key in ("tls.crt", "ca.crt"):
            with open(os.path.join(tmp, key), "wb") as f:
                f.write(base64.b64decode(secret["data"][key]))
        with open(os.path.join(tmp, "bundle.pem"), "wb") as f:
            f.write(base64.b64decode(bundles.pop()))
        out = subprocess.run(["openssl", "verify", "-CAfile", os.path.join(tmp, "bundle.pem"),
                              "-verify_hostname", SERVICE, os.path.join(tmp, "tls.crt")],
                             capture_output=True, text=True, check=False)
        assert out.returncode == 0, f"the webhook certificate does not verify: {out.stdout}{out.stderr}"
    return f"generated certificate for {SERVICE} verifies against the caBundle"


def check_source(values, docs):
    """The control plane reads its source, and may read nothing else from the API."""
    kube = values.get("controlPlane", {}).get("source") == "kubernetes"
    cp = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "bulwark-control-plane")
    pod = cp["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    roles = {d["metadata"]["name"]: d for d in by_kind(docs, "ClusterRole")}
    assert ("--kubernetes=true" in args) == kube, args
    assert any(a.startswith("--policy-dir=") for a in args) != kube, args
    assert bool(by_kind(docs, "ConfigMap") and any(
        d["metadata"]["name"] == "bulwark-policy" for d in by_kind(docs, "ConfigMap"))) != kube
    assert ("bulwark-control-plane-source" in roles) == kube, sorted(roles)
    if kube:
        assert pod["automountServiceAccountToken"] is True, pod
        for r in roles["bulwark-control-plane-source"]["rules"]:
            status = all(res.endswith("/status") for res in r["resources"])
            assert set(r["verbs"]) == ({"patch"} if status else {"list", "watch"}), r
        lease = next(d for d in by_kind(docs, "Role") if d["metadata"]["name"] == "bulwark-control-plane-lease")
        assert lease["rules"] == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                                   "verbs": ["get", "create", "update"]}], lease
        bound = [d for d in by_kind(docs, "ClusterRoleBinding") if d["roleRef"]["name"] == "bulwark-control-plane-source"]
        assert bound and bound[0]["subjects"][0]["name"] == pod["serviceAccountName"], bound


def validate(d):
    if d["apiVersion"].startswith("cert-manager.io/"):
        return  # not a Kubernetes kind: checked field by field in check_webhooks
    for v in VERSIONS:
        kubernetes_validate.validate(d, v, strict=True)


def main(chart, emit):
    lint = helm_python.lint(chart, strict=True)
    if lint["errors"]:
        print(f"lint failed: {lint}")
        sys.exit(1)
    print(f"lint ok: {len(lint['messages'])} informational messages")
    for name, values in OVERRIDES.items():
        docs = render(chart, values)
        for d in docs:
            validate(d)
            if d["kind"] in ("Deployment", "DaemonSet", "StatefulSet"):
                restricted(d)
        webhooks = check_webhooks(name, values, docs)
        check_source(values, docs)
        kinds = sorted(d["kind"] for d in docs)
        print(f"render ok: {name}: {', '.join(kinds)} valid for Kubernetes {VERSIONS[0]} to {VERSIONS[-1]}, restricted; {webhooks}")
        if emit and not values:
            with open(emit, "w") as f:
                json.dump(docs, f)
    refuse_bad_values(chart, ({"controlPlane": {"replicas": "two"}},
                              {"webhook": {"certificate": {"source": "secret"}}},
                              {"proxy": {"sidecar": "sometimes"}},
                              {"proxy": {"meshHttp1": "h2"}},
                              {"webhook": {"injection": {"failurePolicy": "Maybe"}}}))


def refuse_bad_values(chart, cases):
    """Each set of values must be refused by the chart's schema; exits 1 on one accepted."""
    for bad in cases:
        try:
            render(chart, bad)
        except helm_python.HelmError as e:
            print(f"bad values refused: {json.dumps(bad)}: {' '.join(str(e).split()[-12:])}")
        else:
            print(f"values against the schema were accepted: {bad}")
            sys.exit(1)


if __name__ == "__main__":
    args = sys.argv[1:]
    emit = None
    if "--emit" in args:
        i = args.index("--emit")
        emit = args[i + 1]
        del args[i : i + 2]
    main(args[0], emit)
