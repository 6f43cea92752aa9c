"""The Prometheus rules (monitoring/rules.yml), checked by Debian's promtool: they parse, each alert's unit test
fires and clears it (monitoring/rules.test.yml), and every metric they read is one the services or the gateway
export."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import ROOT

RULES = ROOT / "monitoring" / "rules.yml"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: `make test` installs it (apt-get install prometheus)")
    return path


def test_rules_parse_and_every_alert_fires_and_clears_in_its_unit_test():
    for args in (["check", "rules", str(RULES)], ["test", "rules", str(RULES.with_name("rules.test.yml"))]):
        proc = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    tests = yaml.safe_load(RULES.with_name("rules.test.yml").read_text())["tests"]
    tested = {case["alertname"] for t in tests for case in t.get("alert_rule_test", []) if case["exp_alerts"]}
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}
    assert tested == alerts, f"alerts without a test that fires them: {sorted(alerts - tested)}"


def test_the_rules_read_only_metrics_the_code_exports():
    from prometheus_client import REGISTRY

    import services.gateway.metrics  # noqa: F401 - registers the gateway's metrics
    import services.runtime.metrics  # noqa: F401 - and the services'
    exported = {m.name for m in REGISTRY.collect()}
    used = set(re.findall(r"\b((?:model|gateway)_[a-z_]+)\b", RULES.read_text()))
    families = {re.sub(r"_(bucket|sum|count|total)$", "", m) for m in used}
    missing = sorted(f for f in families if f not in exported)
    assert not missing, f"metrics the rules read that nothing exports: {missing}"


def test_the_dashboard_is_the_recording_rules_and_is_up_to_date():
    import importlib.util
    spec = importlib.util.spec_from_file_location("dashboard", ROOT / "monitoring" / "dashboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (ROOT / "monitoring" / "dashboard.json").read_text() == module.render(), "run python monitoring/dashboard.py"
    exprs = {t["expr"] for p in module.dashboard()["panels"] for t in p.get("targets", [])}
    assert exprs == set(module.recording_rules())
