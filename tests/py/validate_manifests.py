"""Validates Kubernetes manifests strictly against the API schemas of 1.29 to 1.33.

validate_manifests.py FILE
Prints "manifests ok: N documents" or the first error; exits 1 on failure.
"""
import sys

import kubernetes_validate
import yaml

VERSIONS = ["1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0"]


def main(path):
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    for d in docs:
        for v in VERSIONS:
            kubernetes_validate.validate(d, v, strict=True)
    print(f"manifests ok: {len(docs)} documents valid for Kubernetes {VERSIONS[0]} to {VERSIONS[-1]}")


if __name__ == "__main__":
    main(sys.argv[1])
