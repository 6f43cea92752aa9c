"""The gateway's generated gRPC modules are what `make protos` writes from the .proto files next to them."""
from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

PROTOS = ROOT / "services" / "gateway" / "protos"


def test_generated_modules_match_the_protos(tmp_path):
    protos = sorted(p.relative_to(ROOT) for p in PROTOS.glob("*.proto"))
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I.", f"--python_out={tmp_path}",
                    f"--grpc_python_out={tmp_path}", *map(str, protos)], cwd=ROOT, check=True)
    made = sorted(tmp_path.rglob("*_pb2*.py"))
    assert len(made) == 2 * len(protos)
    for path in made:
        committed = ROOT / path.relative_to(tmp_path)
        assert committed.read_text() == path.read_text(), f"{committed.name}: run make protos"
