"""Writes monitoring/dashboard.json, a Grafana dashboard whose panels are the recording rules of
monitoring/rules.yml (one time series panel each) and an alert list, so the dashboard and the alerts read the
same queries. Run: python monitoring/dashboard.py (a test checks that the committed file matches)."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
# a recording rule -> (panel title, unit, legend)
PANELS = {
    "job:model_requests:rate1m": ("Requests per second, by service", "reqps", "{{job}}"),
    "model:requests:rate1m": ("Requests per second, by model and protocol", "reqps", "{{model}} {{protocol}}"),
    "model:request_errors:ratio_rate5m": ("5xx ratio, by model", "percentunit", "{{model}}"),
    "model:request_seconds:p50_5m": ("p50 latency, by model", "s", "{{model}}"),
    "model:request_seconds:p99_5m": ("p99 latency, by model", "s", "{{model}}"),
    "model:queue_fill:ratio": ("Batcher queue fill (429 at 1), by model", "percentunit", "{{model}}"),
    "model:batch_size:mean_5m": ("Mean rows per ONNX Runtime call, by model", "short", "{{model}}"),
    "gateway:requests:rate1m": ("Gateway requests per second, by route and model", "reqps", "{{route}} {{model}}"),
}


def recording_rules() -> list[str]:
    groups = yaml.safe_load((HERE / "rules.yml").read_text())["groups"]
    return [r["record"] for g in groups for r in g["rules"] if "record" in r]


def dashboard() -> dict:
    records = recording_rules()
    missing = sorted(set(records) ^ set(PANELS))
    if missing:
        raise SystemExit(f"recording rules and panels differ: {missing}")
    panels = [{"type": "alertlist", "title": "Alerts (monitoring/rules.yml)", "id": 1,
               "gridPos": {"x": 0, "y": 0, "w": 24, "h": 6},
               "options": {"stateFilter": {"firing": True, "pending": True}, "maxItems": 20}}]
    for i, record in enumerate(records):
        title, unit, legend = PANELS[record]
        panels.append({"type": "timeseries", "title": title, "id": i + 2,
                       "gridPos": {"x": 12 * (i % 2), "y": 6 + 8 * (i // 2), "w": 12, "h": 8},
                       "datasource": {"type": "prometheus", "uid": "${datasource}"},
                       "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                       "targets": [{"expr": record, "legendFormat": legend, "refId": "A"}]})
    return {"title": "Keras ONNX model serving", "uid": "keras-onnx-serving", "schemaVersion": 39, "version": 1,
            "time": {"from": "now-1h", "to": "now"}, "refresh": "30s", "tags": ["keras-onnx-serving"],
            "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]},
            "panels": panels}


def render() -> str:
    return json.dumps(dashboard(), indent=1) + "\n"


if __name__ == "__main__":
    (HERE / "dashboard.json").write_text(render())
