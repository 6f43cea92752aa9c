"""``python -m training import NAME SOURCE.onnx [--samples FILE.npz] [--max-batch-size N]``: a user's ONNX model
checked by running it, then written as the next version under ``exported_models/NAME/`` with a manifest (its
tensors read from the graph, the batching proved, the samples, sha256 of every file and of the source, and the
tools' versions). A refusal names the cause and the fix, writes nothing and exits non-zero.

The checks: ``onnx.checker``; ONNX Runtime loads the graph (an opset too new for it is named); no float64 input
unless ``--allow-fp64``; two runs give the same answer; batching only when the first dimension is dynamic on
every input and output and the rows of a batch of N answer as N batches of one (the largest N that does becomes
``max_batch_size``; 0: no batching). Without ``--samples``, inputs are drawn from the signature, and it says so.
(Keras and SavedModel sources, and serving the result, come next: issue 33.)
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from modelcore.manifest import sha256_file
from training.export import ExportRefused, next_version, staging_dir, write_version

# ONNX tensor element types -> (manifest dtype, v2 datatype)
ELEM_TYPES = {1: ("float32", "FP32"), 10: ("float16", "FP16"), 11: ("float64", "FP64"), 2: ("uint8", "UINT8"),
              3: ("int8", "INT8"), 5: ("int16", "INT16"), 6: ("int32", "INT32"), 7: ("int64", "INT64"),
              9: ("bool", "BOOL"), 8: ("string", "BYTES")}
TOLERANCE = 1e-4


def tensors(value_infos) -> list[dict]:
    """The graph's inputs or outputs as the manifest records them: names, dtypes, shapes with -1."""
    out = []
    for v in value_infos:
        t = v.type.tensor_type
        if t.elem_type not in ELEM_TYPES:
            raise ExportRefused(f"tensor '{v.name}' has ONNX element type {t.elem_type}, which is not served; "
                                f"use one of {sorted(d for d, _ in ELEM_TYPES.values())}")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        out.append({"name": v.name, "dtype": ELEM_TYPES[t.elem_type][0], "shape": dims})
    return out


def drawn_samples(inputs: list[dict], batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs drawn from the signature: a batch of ``batch`` rows, 8 along any other dynamic dimension."""
    rng = np.random.default_rng(seed)
    out = {}
    for spec in inputs:
        shape = [batch if i == 0 and d == -1 else (8 if d == -1 else d) for i, d in enumerate(spec["shape"])]
        dtype = spec["dtype"]
        if dtype.startswith("float"):
            out[spec["name"]] = rng.standard_normal(shape).astype(dtype)
        elif dtype == "bool":
            out[spec["name"]] = rng.random(shape) < 0.5
        elif dtype == "string":
            out[spec["name"]] = np.array(rng.choice(["a", "bb", "ccc"], size=shape), dtype=object)
        else:
            out[spec["name"]] = rng.integers(0, 8, shape).astype(dtype)
    return out


def max_batch(sess, inputs: list[dict], outputs: list[dict], samples: dict, limit: int) -> int:
    """The largest batch (a power of two up to ``limit``) whose rows answer as each row alone does; 0 when a
    first dimension is fixed."""
    if any(t["shape"][:1] != [-1] for t in inputs + outputs):
        return 0
    rows = len(next(iter(samples.values())))
    best, n = 1, 2
    while n <= limit:
        batch = {k: np.concatenate([v] * -(-n // rows))[:n] for k, v in samples.items()}
        together = sess.run(None, batch)
        alone = [sess.run(None, {k: v[i:i + 1] for k, v in batch.items()}) for i in range(n)]
        for j, out in enumerate(together):
            if not np.allclose(out, np.concatenate([a[j] for a in alone]), atol=TOLERANCE):
                return best
        best, n = n, n * 2
    return best


def import_onnx(repo: Path, name: str, source: Path, samples_file: Path | None, limit: int,
                allow_fp64: bool) -> Path:
    import onnx
    import onnxruntime as ort
    try:
        model = onnx.load(str(source))
    except Exception as exc:  # noqa: BLE001 - any failure refuses the import
        raise ExportRefused(f"{source} is not a readable ONNX file ({exc}): export it again") from None
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset > onnx.defs.onnx_opset_version():
        raise ExportRefused(f"opset {opset} is newer than this ONNX ({onnx.__version__}) and ONNX Runtime "
                            f"({ort.__version__}) support (up to {onnx.defs.onnx_opset_version()}): export with "
                            "an older opset")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001
        raise ExportRefused(f"onnx.checker refuses {source}: {exc}") from None
    try:
        sess = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        raise ExportRefused(f"ONNX Runtime {ort.__version__} cannot load {source} (opset {opset}): {exc}; export "
                            "with an opset it supports") from None
    initializers = {i.name for i in model.graph.initializer}
    inputs = tensors([v for v in model.graph.input if v.name not in initializers])
    outputs = tensors(model.graph.output)
    for t in inputs:
        if t["dtype"] == "float64" and not allow_fp64:
            raise ExportRefused(f"float64 input '{t['name']}': cast it to float32 in the model, or keep it with "
                                "--allow-fp64 and clients must send FP64")
    if samples_file is not None:
        with np.load(samples_file, allow_pickle=False) as f:
            samples = {k: f[k] for k in f.files}
        missing = sorted({t["name"] for t in inputs} - set(samples))
        if missing:
            raise ExportRefused(f"{samples_file} has no array for input(s) {missing}: save one per input name")
    else:
        samples = drawn_samples(inputs, 4)
        print(f"[import] no --samples: inputs drawn from the signature ({', '.join(samples)})", flush=True)
    first, second = sess.run(None, samples), sess.run(None, samples)
    if not all(np.array_equal(a, b) for a, b in zip(first, second, strict=True)):
        raise ExportRefused("two runs on the same samples answered differently: remove the model's randomness")
    batch = max_batch(sess, inputs, outputs, samples, limit)
    print(f"[import] {name}: max_batch_size {batch}" + (" (a fixed first dimension: served unbatched)"
                                                         if batch == 0 else ""), flush=True)
    stage = staging_dir()
    try:
        return _publish(repo, name, source, stage, samples, inputs, outputs, batch, opset)
    finally:
        shutil.rmtree(stage, ignore_errors=True)  # now, not at exit: a caller may import several in one process


def _publish(repo: Path, name: str, source: Path, stage: Path, samples: dict, inputs: list, outputs: list,
             batch: int, opset: int) -> Path:
    shutil.copy(source, stage / "model.onnx")
    np.savez(stage / "samples.npz", **samples)
    manifest = {
        "task": "generic", "description": f"imported from {source.name}",
        "graphs": {"model": {"file": "model.onnx", "inputs": inputs, "outputs": outputs}},
        "preprocessing": {"served_by": "generic", "samples": "samples.npz",
                          "dynamic": {t["name"]: [i for i, d in enumerate(t["shape"]) if d == -1 and i > 0]
                                      for t in inputs + outputs}},
        "batching": {"max_batch_size": batch, "max_queue_delay_ms": 2},
        "metrics": {}, "data": {"source": source.name, "source_sha256": sha256_file(source), "opset": opset},
        "training": {"seed": 0, "imported": True},  # write_version records the command and the libraries
        "parity": {"max_abs_diff": 0.0, "tolerance": TOLERANCE, "reference": "the source itself (ONNX)"},
    }
    return write_version(repo, name, stage, manifest, next_version(repo / name))


def main(argv: list[str]) -> int:
    from training.data import REPO_ROOT
    p = argparse.ArgumentParser(prog="python -m training import", description=__doc__)
    p.add_argument("name", help="the model's name in the repository")
    p.add_argument("source", type=Path, help="an .onnx file")
    p.add_argument("--samples", type=Path, help=".npz with one array per input (default: drawn from the signature)")
    p.add_argument("--max-batch-size", type=int, default=64, help="the largest batch to prove (default 64)")
    p.add_argument("--allow-fp64", action="store_true", help="keep float64 inputs (clients must send FP64)")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "exported_models", help="model repository root")
    args = p.parse_args(argv)
    if args.source.suffix != ".onnx":
        p.error(f"{args.source}: only .onnx sources are imported so far (Keras and SavedModel come next)")
    try:
        final = import_onnx(args.out, args.name, args.source, args.samples, args.max_batch_size, args.allow_fp64)
    except ExportRefused as exc:
        print(f"[import] refused: {exc}", flush=True)
        return 1
    print(f"[import] wrote {final}", flush=True)
    return 0
