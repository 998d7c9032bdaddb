"""Parses Prometheus text from stdin with the reference Python parser and prints a JSON
summary: every family's type and sample count, and the histogram's bucket bounds."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

text = sys.stdin.read()
families = {}
buckets = set()
for fam in text_string_to_metric_families(text):
    families[fam.name] = {"type": fam.type, "samples": len(fam.samples)}
    for s in fam.samples:
        if s.name == "bulwark_request_duration_seconds_bucket":
            buckets.add(s.labels["le"])
print(json.dumps({"families": families, "buckets": sorted(buckets, key=lambda b: float(b))}))
