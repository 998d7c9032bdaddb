"""Checks what the chart's dashboards and alerts values render, with Helm's own Go SDK.

check_monitoring.py CHART_DIR

1. `helm lint --strict` finds no error with dashboards.enabled and alerts.enabled.
2. The default values render neither a dashboard ConfigMap nor a PrometheusRule.
3. With both on: one ConfigMap per dashboards/*.json, labelled grafana_dashboard "1" (what
   Grafana's sidecar loads) and with the extra labels asked for, whose one key holds that
   file's JSON unchanged: a Grafana dashboard with a uid, a title, panels and a datasource
   variable. Every rendered document of a built-in kind validates strictly against the
   Kubernetes schemas (check_chart's versions).
4. The PrometheusRule, a CRD kind those schemas do not know, checked field by field against
   the Prometheus Operator's API: its groups are alerts/bulwark.rules.yaml's, and every
   rule has alert, expr, for, labels.severity and annotations.summary and description.
5. Values of the wrong type for the new keys are refused by the schema.
Prints one line per check; exits 1 on the first failure.
"""
import glob
import json
import os
import re
import sys

import helm_python
import yaml

from check_chart import VERSIONS, by_kind, refuse_bad_values, render, validate

ON = {
    "dashboards": {"enabled": True, "labels": {"team": "platform"}},
    "alerts": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
}

# The Prometheus Operator's Duration (monitoring.coreos.com/v1).
DURATION = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$")
GROUP_KEYS = {"name", "interval", "rules", "limit", "partial_response_strategy", "query_offset", "labels"}
RULE_KEYS = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def string_map(m, what):
    assert isinstance(m, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in m.items()), f"{what}: {m!r}"


def check_dashboards(chart, docs):
    files = sorted(glob.glob(os.path.join(chart, "dashboards", "*.json")))
    assert files, "no dashboards in the chart"
    maps = {d["metadata"]["name"]: d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("bulwark-dashboard-")}
    assert len(maps) == len(files), sorted(maps)
    uids = set()
    for path in files:
        name = os.path.basename(path)[: -len(".json")]
        cm = maps[f"bulwark-dashboard-{name}"]
        labels = cm["metadata"]["labels"]
        assert labels.get("grafana_dashboard") == "1", labels
        assert labels.get("team") == "platform", labels
        assert cm["metadata"]["namespace"] == "bulwark"
        [(key, text)] = cm["data"].items()
        assert key == f"bulwark-{name}.json", key
        with open(path) as f:
            want = json.load(f)
        got = json.loads(text)
        assert got == want, f"{key}: the ConfigMap's JSON is not {path}'s"
        assert got["uid"] not in uids and got["title"] and got["panels"], name
        uids.add(got["uid"])
        variables = {v["name"]: v for v in got["templating"]["list"]}
        ds = variables.get("datasource", {})
        assert ds.get("type") == "datasource" and ds.get("query") == "prometheus", ds
        print(f"dashboard ok: {key} in ConfigMap {cm['metadata']['name']}: {got['title']!r}, {len(got['panels'])} top-level panels")


def check_rule(rule, where):
    assert set(rule) <= RULE_KEYS, f"{where}: unknown keys {set(rule) - RULE_KEYS}"
    assert isinstance(rule.get("alert"), str) and rule["alert"], where
    assert isinstance(rule.get("expr"), str) and rule["expr"].strip(), where
    assert DURATION.match(rule.get("for", "")), f"{where}: for {rule.get('for')!r}"
    string_map(rule.get("labels"), f"{where} labels")
    assert rule["labels"].get("severity") in ("warning", "critical"), f"{where}: severity"
    string_map(rule.get("annotations"), f"{where} annotations")
    assert rule["annotations"].get("summary") and rule["annotations"].get("description"), f"{where}: annotations"


def check_rules(chart, docs):
    [rule] = by_kind(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1", rule["apiVersion"]
    assert set(rule) == {"apiVersion", "kind", "metadata", "spec"}, set(rule)
    meta = rule["metadata"]
    assert DNS_SUBDOMAIN.match(meta["name"]) and meta["namespace"] == "bulwark", meta
    string_map(meta["labels"], "metadata.labels")
    assert meta["labels"].get("release") == "kube-prometheus-stack", meta["labels"]
    assert set(rule["spec"]) == {"groups"}, set(rule["spec"])
    with open(os.path.join(chart, "alerts", "bulwark.rules.yaml")) as f:
        want = yaml.safe_load(f)
    assert rule["spec"]["groups"] == want["groups"], "the PrometheusRule's groups are not the rules file's"
    names = set()
    alerts = 0
    for g in rule["spec"]["groups"]:
        assert set(g) <= GROUP_KEYS and isinstance(g.get("name"), str) and g["name"] not in names, g.get("name")
        names.add(g["name"])
        assert g["rules"], g["name"]
        for r in g["rules"]:
            check_rule(r, f"{g['name']}/{r.get('alert')}")
            alerts += 1
    print(f"rules ok: PrometheusRule {meta['name']}: {alerts} alerts in {len(names)} groups, as in alerts/bulwark.rules.yaml")


def main(chart):
    lint = helm_python.lint(chart, ON, strict=True)
    if lint["errors"]:
        print(f"lint failed: {lint}")
        sys.exit(1)
    print(f"lint ok with dashboards and alerts: {len(lint['messages'])} informational messages")

    default = render(chart, {})
    assert not by_kind(default, "PrometheusRule"), "a PrometheusRule in the default render"
    assert not [d for d in by_kind(default, "ConfigMap") if "grafana_dashboard" in d["metadata"].get("labels", {})]
    print("default render ok: no dashboards, no PrometheusRule")

    docs = render(chart, ON)
    builtin = [d for d in docs if d["kind"] != "PrometheusRule"]
    for d in builtin:
        validate(d)
    print(f"render ok: {len(builtin)} built-in documents valid for Kubernetes {VERSIONS[0]} to {VERSIONS[-1]}")
    check_dashboards(chart, docs)
    check_rules(chart, docs)

    refuse_bad_values(chart, ({"dashboards": {"enabled": "yes"}},
                              {"alerts": {"labels": {"release": 1}}}))


if __name__ == "__main__":
    main(sys.argv[1])
