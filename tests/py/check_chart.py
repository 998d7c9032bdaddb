"""Checks the Helm chart with Helm's own Go SDK (helm-python-sdk) and Kubernetes' schemas.

check_chart.py CHART_DIR [--emit FILE]

1. `helm lint --strict` finds no error.
2. The chart renders (a client-side dry-run install) with the default values and with a few
   realistic overrides; every rendered document validates strictly against the Kubernetes
   API schemas of 1.29 to 1.33.
3. Every pod spec meets Pod Security "restricted": non-root, no privilege escalation, every
   capability dropped, RuntimeDefault seccomp, and a read-only root filesystem.
4. Values that break the schema (values.schema.json) are refused.
With --emit, the default render's documents are written to FILE as JSON, for the test that
runs what the chart says. Prints one line per check; exits 1 on the first failure.
"""
import json
import sys

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
}


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


def main(chart, emit):
    lint = helm_python.lint(chart, strict=True)
    if lint["errors"]:
        print(f"lint failed: {lint}")
        sys.exit(1)
    print(f"lint ok: {len(lint['messages'])} informational messages")
    for name, values in OVERRIDES.items():
        docs = render(chart, values)
        for d in docs:
            for v in VERSIONS:
                kubernetes_validate.validate(d, v, strict=True)
            if d["kind"] in ("Deployment", "DaemonSet", "StatefulSet"):
                restricted(d)
        kinds = sorted(d["kind"] for d in docs)
        print(f"render ok: {name}: {', '.join(kinds)} valid for Kubernetes {VERSIONS[0]} to {VERSIONS[-1]}, restricted")
        if emit and not values:
            with open(emit, "w") as f:
                json.dump(docs, f)
    try:
        render(chart, {"controlPlane": {"replicas": "two"}})
    except helm_python.HelmError as e:
        print(f"bad values refused: {str(e).splitlines()[0][:160]}")
    else:
        print("values against the schema were accepted")
        sys.exit(1)


if __name__ == "__main__":
    args = sys.argv[1:]
    emit = None
    if "--emit" in args:
        i = args.index("--emit")
        emit = args[i + 1]
        del args[i : i + 2]
    main(args[0], emit)
