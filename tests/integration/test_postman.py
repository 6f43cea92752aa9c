"""The Postman collection against the real stack, run by newman: every request answers and passes its own
assertions on status and answer shape."""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import ROOT

NEWMAN = ROOT / "tests" / ".node" / "node_modules" / ".bin" / "newman"


def test_postman_collection_passes_with_newman(stack, tmp_path):
    if not NEWMAN.exists():
        pytest.fail("newman is not installed: `make test` installs it with npm into tests/.node")
    report = tmp_path / "newman.json"
    proc = subprocess.run([str(NEWMAN), "run", str(ROOT / "postman" / "collection.json"), "--env-var",
                           f"base_url={stack.url}", "--reporters", "cli,json", "--reporter-json-export", str(report),
                           "--timeout-request", "60000"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    stats = json.loads(report.read_text())["run"]["stats"]
    assert stats["requests"]["failed"] == 0 and stats["assertions"]["failed"] == 0
    assert stats["assertions"]["total"] >= 2 * stats["requests"]["total"] >= 48  # status and shape, each request
