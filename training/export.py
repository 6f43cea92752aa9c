"""Keras -> ONNX export shared by every job, with the parity gate and the model-repository writer.

Route (pinned with tensorflow-cpu 2.21 / keras 3.15 / tf2onnx 1.17): ``tf2onnx.convert.from_keras`` with a
named ``tf.TensorSpec`` input signature (None for dynamic batch / sequence dims), opset 17. The file is then
rewritten by ``graph_passes`` (less work per call, same function), checked with ``onnx.checker``, loaded in
ONNX Runtime and compared with Keras on held-out inputs: an export whose max abs difference exceeds the
tolerance is refused and nothing is written to the repository.
"""
from __future__ import annotations

import atexit
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from modelcore.datatypes import BY_ORT, MANIFEST_NAMES
from modelcore.manifest import SCHEMA_VERSION, file_entries, load_and_verify, validate
from training.graph_passes import apply_all

OPSET = 17
PARITY_TOLERANCE = 1e-4


class ExportRefused(RuntimeError):
    """The ONNX graph does not reproduce Keras within tolerance (or does not load)."""


# an imported model's weights are published beside its graph, each tensor at a page boundary: ONNX Runtime then
# maps the file instead of copying it, and a pod's workers share one copy through the page cache (FINDINGS)
EXTERNAL_DATA = "model.onnx.data"
PAGE_BYTES = 4096


def save_mapped(model, target: Path) -> None:
    """``target`` (``model.onnx``) with every initializer of a page or more in ``model.onnx.data`` beside it, each
    at a page boundary, which is what ONNX Runtime needs to map them rather than read them into memory."""
    import onnx
    from onnx.external_data_helper import set_external_data
    with open(target.parent / EXTERNAL_DATA, "wb") as data:
        for tensor in model.graph.initializer:
            if not tensor.HasField("raw_data") or len(tensor.raw_data) < PAGE_BYTES:
                continue  # small ones (and typed fields: strings) stay in the graph
            data.write(b"\0" * (-data.tell() % PAGE_BYTES))
            offset = data.tell()
            data.write(tensor.raw_data)
            set_external_data(tensor, EXTERNAL_DATA, offset, len(tensor.raw_data))
            tensor.ClearField("raw_data")
            tensor.data_location = onnx.TensorProto.EXTERNAL
    if (target.parent / EXTERNAL_DATA).stat().st_size == 0:
        (target.parent / EXTERNAL_DATA).unlink()
    onnx.save_model(model, str(target))


def to_onnx(model, input_specs: list, path: Path) -> Path:
    """Convert a Keras model (or a Keras-callable wrapped as a model) to ONNX at ``path``."""
    import onnx
    import tf2onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model_proto, _ = tf2onnx.convert.from_keras(model, input_signature=input_specs, opset=OPSET,
                                                output_path=None)
    for done in apply_all(model_proto):  # checked against Keras by the parity gate like the rest of the graph
        print(f"[export] {path.name}: {done['pass']} {done['embedding']} x {done['weights']}", flush=True)
    onnx.checker.check_model(model_proto)
    onnx.save(model_proto, str(path))
    return path


def ort_session(path: Path):
    import onnxruntime as ort
    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - any load failure refuses the export
        raise ExportRefused(f"{path}: ONNX Runtime cannot load the exported graph: {exc}") from None


def parity(keras_fn, onnx_path: Path, feeds: list[dict], output_names: list[str],
           tolerance: float = PARITY_TOLERANCE) -> dict:
    """Run each feed through Keras and ONNX Runtime; refuse when any output differs by more than tolerance.

    ``keras_fn(feed) -> dict name->array`` computes the reference; feeds cover several batch sizes
    (and sequence lengths where the graph has one).
    """
    sess = ort_session(onnx_path)
    worst = 0.0
    for feed in feeds:
        ref = keras_fn(feed)
        got = sess.run(output_names, feed)
        for name, g in zip(output_names, got, strict=False):
            r = np.asarray(ref[name], dtype=np.float64)
            if r.shape != g.shape:
                raise ExportRefused(f"{onnx_path.name}: output {name} shape {g.shape} != Keras {r.shape}")
            worst = max(worst, float(np.max(np.abs(r - g))) if r.size else 0.0)
    result = {"max_abs_diff": worst, "tolerance": tolerance, "feeds": len(feeds),
              "batch_sizes": sorted({int(next(iter(f.values())).shape[0]) for f in feeds})}
    print(f"[export] parity {onnx_path.name}: max abs diff {worst:.3g} (tolerance {tolerance})", flush=True)
    if not worst <= tolerance:
        raise ExportRefused(f"{onnx_path.name}: Keras vs ONNX Runtime max abs diff {worst:.3g} > {tolerance}")
    return result




def tensor_meta(sess) -> tuple[list, list]:
    """Input/output descriptions (name, dtype, shape with -1 for dynamic dims) read from an ORT session; a type
    the services do not serve is refused."""
    def desc(x):
        if x.type.startswith("seq(map("):  # skl2onnx's default classifier output
            raise ExportRefused(f"output '{x.name}' is a ZipMap ({x.type}), a list of dicts no protocol serves: "
                                "convert with skl2onnx's options={id(model): {'zipmap': False}} (the "
                                "probabilities become one float tensor), or options={'zipmap': False} in to_onnx")
        if x.type not in BY_ORT:
            raise ExportRefused(f"tensor '{x.name}' has type {x.type}, which is not served; use one of "
                                f"{MANIFEST_NAMES}")
        return {"name": x.name, "dtype": BY_ORT[x.type].manifest,
                "shape": [d if isinstance(d, int) else -1 for d in x.shape]}
    return [desc(x) for x in sess.get_inputs()], [desc(x) for x in sess.get_outputs()]


def library_versions() -> dict:
    import importlib.metadata as md
    out = {"python": platform.python_version()}
    for pkg in ("tensorflow-cpu", "tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def next_version(model_root: Path) -> int:
    existing = [int(p.name) for p in model_root.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(existing, default=0) + 1


def write_version(out_root: Path, name: str, staged: Path, manifest: dict, version: int | None = None) -> Path:
    """Move a staged directory of files into ``out_root/name/VERSION/`` with a validated, checksummed manifest.

    The move is the last step and atomic (rename), so a serving process that polls the repository never sees
    a half-written version.
    """
    model_root = Path(out_root) / name
    model_root.mkdir(parents=True, exist_ok=True)
    version = version or next_version(model_root)
    files = sorted(p.name for p in staged.iterdir() if p.is_file() and p.name != "manifest.json")
    manifest = {"schema_version": SCHEMA_VERSION, "name": name, "version": version, **manifest,
                "libraries": library_versions(), "files": file_entries(staged, files)}
    manifest["training"] = {**manifest["training"], "command": manifest["training"].get(
        "command", " ".join(["python", "-m", "training", *sys.argv[1:]]))}
    manifest["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    validate(manifest)
    (staged / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", "utf-8")
    final = model_root / str(version)
    if final.exists():
        shutil.rmtree(final)
    tmp = model_root / f".{version}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(staged, tmp)
    tmp.chmod(0o755)  # copytree keeps the staging directory's 0700: a non-root server could not read it
    os.replace(tmp, final)
    load_and_verify(final)
    print(f"[export] wrote {final} ({sum(f['bytes'] for f in manifest['files'].values()) / 1e6:.1f} MB)",
          flush=True)
    return final


def staging_dir() -> Path:
    """A fresh folder to stage an export in; removed when the process exits, whether the job published or
    failed (``write_version`` copies what it publishes)."""
    path = tempfile.mkdtemp(prefix="export-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return Path(path)
