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


def test_readme_serve_your_own_model_as_written(stack, tmp_path):
    """"Serve your own model": the import and the call run as written (a Keras model with input 'x' of two
    numbers, made here), into the running stack's repository; the answer is the model's."""
    import keras
    import numpy as np

    from tests.imported import wait_for
    text = (ROOT / "README.md").read_text()
    block = text.split("## Serve your own model", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [line.split("  #")[0].strip() for line in block.strip().splitlines()]
    imports = [c for c in lines if " -m training import " in c]
    calls = [c for c in lines if c.startswith("curl ")]
    assert len(imports) == 1 and len(calls) == 1 and any(c.startswith("make serve") for c in lines)
    x = keras.Input((2,), name="x")
    model = keras.Model(x, keras.layers.Dense(3, name="y")(x))
    model.save(tmp_path / "my.keras")
    np.savez(tmp_path / "s.npz", x=np.random.default_rng(0).random((4, 2)).astype(np.float32))
    argv = [sys.executable if a == ".venv/bin/python" else a for a in shlex.split(imports[0])]
    proc = subprocess.run(argv + ["--out", str(stack.repository)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    try:
        wait_for(stack.service_url["models"], "mymodel", timeout=stack.POLL_SECONDS + 60)
        argv = [a.replace("http://127.0.0.1:8080", stack.url) for a in shlex.split(calls[0])]
        answer = json.loads(subprocess.run(argv, capture_output=True, timeout=60, check=True).stdout)
        sent = np.array(json.loads(argv[argv.index("-d") + 1])["instances"][0]["x"], np.float32)
        expected = model.predict(sent[None], verbose=0)[0]
        np.testing.assert_allclose(answer["predictions"][0], expected, atol=1e-4)
    finally:
        import shutil
        shutil.rmtree(stack.repository / "mymodel")
