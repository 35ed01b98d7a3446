"""Parses takgate's /metrics (OpenMetrics text on stdin) with the official Prometheus
Python client's strict OpenMetrics parser and prints every family as JSON:
{"name", "type", "samples": [[sample name, labels, value], ...]}. A parse error exits 1
with the parser's message."""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main():
    text = sys.stdin.read()
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as e:  # the parser's own error, for the test's message
        print(f"parse error: {e}", file=sys.stderr)
        sys.exit(1)
    for f in families:
        print(json.dumps({"name": f.name, "type": f.type, "samples": [[s.name, s.labels, s.value] for s in f.samples]}))


if __name__ == "__main__":
    main()
