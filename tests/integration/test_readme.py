"""The README's "Try it" calls, run as written against the real stack (only the address changed): each one
answers, and with the right answer."""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

from tests.conftest import ROOT


def try_it_calls() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("## Try it", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line.split("  #")[0].strip() for line in block.strip().splitlines()]


def test_readme_calls_give_right_answers(stack, tmp_path):
    calls = try_it_calls()
    assert len(calls) == 5 and all(c.startswith("curl ") for c in calls)
    out = {}
    for call in calls:
        argv = [a.replace("http://127.0.0.1:8080", stack.url) for a in shlex.split(call)]
        if "-o" in argv:
            argv[argv.index("-o") + 1] = str(tmp_path / argv[argv.index("-o") + 1])
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=60)
        assert proc.returncode == 0, (call, proc.stderr)
        route = re.search(r"/api/[a-z/]+", call).group(0)
        out[route] = proc.stdout
    assert json.loads(out["/api/mnist/predict"])["predictions"][0]["digit"] == 7
    assert json.loads(out["/api/sentiment/predict"])["predictions"][0]["label"] == "positive"
    assert json.loads(out["/api/translate"])["translation"] == "Die Datei konnte nicht gespeichert werden."
    assert len(json.loads(out["/api/generate"])["text"]) > 50
    assert (tmp_path / "digits.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_readme_python_examples_run(stack):
    """Every Python block of the README (tritonclient over HTTP and gRPC, TF Serving's stubs, openai) runs as
    written, against this stack (only the ports changed)."""
    text = (ROOT / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    assert len(blocks) >= 4
    for code in blocks:
        code = code.replace("http://127.0.0.1:8080", stack.url).replace('"127.0.0.1:8080"',
                                                                       repr(stack.url.replace("http://", "")))
        code = code.replace("127.0.0.1:8001", f"127.0.0.1:{stack.grpc_v2_port}").replace(
            "127.0.0.1:8500", f"127.0.0.1:{stack.grpc_tfs_port}")
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and proc.stdout.strip(), (code, proc.stderr[-2000:])
