"""Parses a metrics exposition from stdin with the reference Python parsers and prints a
JSON summary: every family's type and sample count, the histogram's bucket bounds, and
the exemplars found. `--openmetrics` parses it as OpenMetrics 1.0 (the strict parser:
it refuses a family named twice, a counter sample without `_total`, a missing `# EOF`)."""
import json
import sys

if "--openmetrics" in sys.argv:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
else:
    from prometheus_client.parser import text_string_to_metric_families

text = sys.stdin.read()
families = {}
buckets = set()
exemplars = []
for fam in text_string_to_metric_families(text):
    families[fam.name] = {"type": fam.type, "samples": len(fam.samples)}
    for s in fam.samples:
        if s.name == "bulwark_request_duration_seconds_bucket":
            buckets.add(s.labels["le"])
        if getattr(s, "exemplar", None) is not None:
            exemplars.append(
                {"sample": s.name, "labels": s.exemplar.labels, "value": s.exemplar.value}
            )
print(
    json.dumps(
        {
            "families": families,
            "buckets": sorted(buckets, key=lambda b: float(b)),
            "exemplars": exemplars,
        }
    )
)
