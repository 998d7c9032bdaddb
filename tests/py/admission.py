"""Golden admission reviews against a running control plane's webhooks.

admission.py GOLDEN_DIR HOST PORT CA_FILE [--bless]

Each GOLDEN_DIR/<hook>-<case>.request.json (an AdmissionReview as the API server sends it)
is POSTed with curl to https://HOST:PORT/<hook>, HOST resolved to 127.0.0.1 so the
certificate is checked for the Service's name as the API server checks it. The response,
with its base64 patch decoded, must equal <hook>-<case>.response.json (--bless writes it).
For a pod that was patched, the patch is applied with the jsonpatch package (an RFC 6902
implementation independent of ours), the patched pod must validate strictly against the
Kubernetes 1.29-1.33 schemas, the injected containers must be what Pod Security expects of
them, and the patched pod sent again must come back unchanged. One line per case.
"""
import base64
import copy
import glob
import json
import os
import subprocess
import sys

import jsonpatch
import kubernetes_validate

VERSIONS = ["1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0"]


def post(host, port, ca, hook, review):
    out = subprocess.run(
        ["curl", "-sS", "--fail-with-body", "--max-time", "10", "--cacert", ca,
         "--resolve", f"{host}:{port}:127.0.0.1", "-H", "Content-Type: application/json",
         "--data-binary", "@-", f"https://{host}:{port}/{hook}"],
        input=json.dumps(review).encode(), capture_output=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{hook}: curl exit {out.returncode}: {out.stderr.decode()} {out.stdout.decode()}")
    return json.loads(out.stdout)


def decoded(resp):
    r = copy.deepcopy(resp)
    if "patch" in r.get("response", {}):
        r["response"]["patch"] = json.loads(base64.b64decode(r["response"]["patch"]))
    return r


def check_injected(pod):
    for v in VERSIONS:
        kubernetes_validate.validate(pod, v, strict=True)
    inits = {c["name"]: c for c in pod["spec"].get("initContainers", [])}
    init, proxy = inits["bulwark-init"], inits["bulwark-proxy"]
    assert list(inits)[:2] == ["bulwark-init", "bulwark-proxy"], list(inits)
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]}
    sc = proxy["securityContext"]
    assert sc["runAsUser"] == 5102 and sc["runAsNonRoot"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert proxy["restartPolicy"] == "Always"


def main(golden, host, port, ca, bless):
    cases = sorted(glob.glob(os.path.join(golden, "*.request.json")))
    assert cases, f"no cases in {golden}"
    for path in cases:
        name = os.path.basename(path)[: -len(".request.json")]
        hook = name.split("-", 1)[0]
        review = json.load(open(path))
        resp = post(host, port, ca, hook, review)
        got = decoded(resp)
        expected_path = path.replace(".request.json", ".response.json")
        if bless:
            with open(expected_path, "w") as f:
                json.dump(got, f, indent=2, sort_keys=True)
                f.write("\n")
        expected = json.load(open(expected_path))
        if got != expected:
            print(f"{name}: response differs from {os.path.basename(expected_path)}:\n{json.dumps(got, indent=2, sort_keys=True)}")
            sys.exit(1)
        r = got["response"]
        assert r["uid"] == review["request"]["uid"], "uid not copied"
        what = "allowed" if r["allowed"] else f"denied: {r['status']['message']}"
        if "patch" in r:
            pod = jsonpatch.apply_patch(review["request"]["object"], r["patch"])
            check_injected(pod)
            again = copy.deepcopy(review)
            again["request"]["object"] = pod
            again["request"]["uid"] += "-again"
            second = post(host, port, ca, hook, again)["response"]
            assert second["allowed"] and "patch" not in second, f"re-injection patched: {second}"
            what = f"injected ({len(r['patch'])} operations), valid for Kubernetes {VERSIONS[0]} to {VERSIONS[-1]}, re-injection a no-op"
        print(f"golden ok: {name}: {what}")


if __name__ == "__main__":
    a = sys.argv[1:]
    bless = "--bless" in a
    a = [x for x in a if x != "--bless"]
    main(a[0], a[1], a[2], a[3], bless)
