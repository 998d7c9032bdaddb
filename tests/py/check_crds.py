"""Checks the generated CRDs with real Kubernetes tooling, and the example policy against them.

check_crds.py CRD_DIR POLICY_DIR

1. Every CRD validates (strictly) against the Kubernetes API schema for
   CustomResourceDefinition, with the kubernetes-validate package.
2. Every example policy document validates against its CRD's openAPIV3Schema.
3. A broken copy of an example (a string where a number goes) is rejected, so the check
   can fail, and so are values out of the ranges validate enforces (attempts 20, a ratio
   of 1.5).
4. The CRDs' CEL rules (x-kubernetes-validations, the cross-field checks validate makes)
   compile, hold for every example document, and each refuses the broken copy made for it,
   with its message. They are evaluated with cel-python, an implementation of the CEL
   spec, at the nodes the API server would evaluate them at.
Prints one line per check; exits 1 on the first failure.
"""
import copy
import glob
import os
import sys

import celpy
import jsonschema
import kubernetes_validate
import yaml

CEL = celpy.Environment()
PROGRAMS = {}


def program(rule):
    if rule not in PROGRAMS:
        PROGRAMS[rule] = CEL.program(CEL.compile(rule))
    return PROGRAMS[rule]


def cel_failures(schema, value, path="self"):
    """The (path, message) of every CEL rule in `schema` that `value` breaks, walking the
    value alongside the schema as the API server does (objects, lists and maps)."""
    out = []
    if value is None:
        return out
    for v in schema.get("x-kubernetes-validations", []):
        result = program(v["rule"]).evaluate({"self": celpy.json_to_cel(value)})
        if isinstance(result, Exception) or not bool(result):
            out.append((path, v.get("message", v["rule"])))
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                out += cel_failures(sub, value[key], f"{path}.{key}")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, item in value.items():
                out += cel_failures(extra, item, f"{path}[{key!r}]")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            out += cel_failures(schema["items"], item, f"{path}[{i}]")
    return out


def count_rules(schema):
    if isinstance(schema, dict):
        n = len(schema.get("x-kubernetes-validations", []))
        return n + sum(count_rules(v) for v in schema.values())
    if isinstance(schema, list):
        return sum(count_rules(v) for v in schema)
    return 0


# Broken copies of web.yaml's spec, one per rule, and the message each must draw.
CEL_CASES = [
    ("timeouts.perTry 3s over request 2s", lambda s: s["timeouts"].update(perTry="3s"),
     "perTry is longer than the request timeout"),
    ("backoff.base 1s over max 250ms", lambda s: s["retries"]["backoff"].update(base="1s"),
     "base is longer than max"),
    ("baseEjectionTime 10m over maxEjectionTime 5m",
     lambda s: s["outlierDetection"].update(baseEjectionTime="10m"),
     "baseEjectionTime is longer than maxEjectionTime"),
    ("defaultRtt with roundRobin", lambda s: s["loadBalancer"].update(algorithm="roundRobin"),
     "apply to the peakEwma algorithm only"),
    ("maxPending without maxConcurrentRequests",
     lambda s: s["limits"].pop("maxConcurrentRequests"),
     "no effect without maxConcurrentRequests"),
    ("a route with its own budget",
     lambda s: s["routes"][0].update(retries={"budget": {"ratio": 0.1}}),
     "the retry budget belongs to the target"),
    ("a route matching nothing", lambda s: s["routes"][0].update(match={}),
     "needs at least one of pathPrefix, method, headers, grpc"),
]


def main(crd_dir, policy_dir):
    schemas = {}
    for path in sorted(glob.glob(os.path.join(crd_dir, "*.yaml"))):
        with open(path) as f:
            crd = yaml.safe_load(f)
        kubernetes_validate.validate(crd, "1.37", strict=True)
        kind = crd["spec"]["names"]["kind"]
        schemas[kind] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        print(f"crd ok: {os.path.basename(path)} ({kind})")
    docs = 0
    for path in sorted(glob.glob(os.path.join(policy_dir, "*.yaml"))):
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc is None:
                    continue
                jsonschema.validate(doc, schemas[doc["kind"]])
                docs += 1
    print(f"examples ok: {docs} documents conform to their CRD schemas")
    with open(os.path.join(policy_dir, "mesh.yaml")) as f:
        broken = copy.deepcopy(yaml.safe_load(f))
    broken["spec"]["defaults"]["retries"]["budget"]["ratio"] = "high"
    try:
        jsonschema.validate(broken, schemas["MeshConfig"])
    except jsonschema.ValidationError as e:
        print(f"broken example rejected: {e.message}")
    else:
        print("a broken example passed the schema")
        sys.exit(1)
    # The ranges bulwarkctl validate enforces are in the schemas too, so kubectl apply
    # refuses them before the control plane sees them.
    with open(os.path.join(policy_dir, "web.yaml")) as f:
        web = yaml.safe_load(f)
    for path, value in [(("retries", "attempts"), 20), (("retries", "budget", "ratio"), 1.5)]:
        bad = copy.deepcopy(web)
        node = bad["spec"]
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
        try:
            jsonschema.validate(bad, schemas["TrafficPolicy"])
        except jsonschema.ValidationError as e:
            print(f"out of range rejected: spec.{'.'.join(path)}={value}: {e.message}")
        else:
            print(f"spec.{'.'.join(path)}={value} passed the schema")
            sys.exit(1)

    rules = sum(count_rules(schema) for schema in schemas.values())
    for schema in schemas.values():
        stack = [schema]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                for v in node.get("x-kubernetes-validations", []):
                    program(v["rule"])
                stack += list(node.values())
            elif isinstance(node, list):
                stack += node
    print(f"cel rules compile: {rules}")
    for path in sorted(glob.glob(os.path.join(policy_dir, "*.yaml"))):
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc is None:
                    continue
                failed = cel_failures(schemas[doc["kind"]], doc)
                if failed:
                    print(f"{os.path.basename(path)}: an example breaks a CEL rule: {failed}")
                    sys.exit(1)
    print("cel rules hold for the examples")
    edge = copy.deepcopy(web)
    edge["spec"]["timeouts"]["perTry"] = edge["spec"]["timeouts"]["request"]
    if cel_failures(schemas["TrafficPolicy"], edge):
        print("perTry equal to the request timeout was refused; validate allows it")
        sys.exit(1)
    for name, breaks, message in CEL_CASES:
        bad = copy.deepcopy(web)
        breaks(bad["spec"])
        jsonschema.validate(bad, schemas["TrafficPolicy"])  # only the CEL rule may object
        failed = cel_failures(schemas["TrafficPolicy"], bad)
        if not any(message in m for _, m in failed):
            print(f"{name}: not refused by a CEL rule saying {message!r}: {failed}")
            sys.exit(1)
        print(f"cel rule refused: {name}: {failed[0][0]}: {failed[0][1]}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
