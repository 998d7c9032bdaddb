"""Checks the generated CRDs with real Kubernetes tooling, and the example policy against them.

check_crds.py CRD_DIR POLICY_DIR

1. Every CRD validates (strictly) against the Kubernetes API schema for
   CustomResourceDefinition, with the kubernetes-validate package.
2. Every example policy document validates against its CRD's openAPIV3Schema.
3. A broken copy of an example (a string where a number goes) is rejected, so the check
   can fail, and so are values out of the ranges validate enforces (attempts 20, a ratio
   of 1.5).
Prints one line per check; exits 1 on the first failure.
"""
import copy
import glob
import os
import sys

import jsonschema
import kubernetes_validate
import yaml


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


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
