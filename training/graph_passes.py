"""Rewrites of an exported ONNX graph that leave what it computes unchanged (up to float rounding) and give
ONNX Runtime less to do per call. ``to_onnx`` applies them before the parity check, so an export's recorded
Keras parity is the rewritten graph's own.

``python -m training.graph_passes NAME`` applies them to a version already in the model repository and
publishes the result as the next version, refused unless it reproduces the original graph within the export
tolerance (the original was checked against Keras when it was exported).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np


def fold_embedding_projections(model, max_growth: float = 2.0) -> list[dict]:
    """``MatMul(Gather(E, ids), W)`` with constant E and W becomes ``Gather(E @ W, ids)``; returns what was folded.

    Why: a recurrent step graph multiplies the embedding of each row's token by the cell's input weights on
    every step (for the text generator: 64 x 1536 of its 448 x 1536 multiply-adds per row). The product for every
    vocabulary entry is a table computed once. Skipped where the table would take more than ``max_growth`` times
    the bytes of E and W (a large vocabulary: the translation decoder's 6,000 x 1,024 table would be 25 MB)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    folded = []
    for gather in list(graph.node):
        if gather.op_type != "Gather" or gather.input[0] not in inits or gather.output[0] in outputs:
            continue
        users = consumers.get(gather.output[0], [])
        axis = next((a.i for a in gather.attribute if a.name == "axis"), 0)
        if axis != 0 or len(users) != 1:
            continue
        matmul = users[0]
        if matmul.op_type != "MatMul" or matmul.input[0] != gather.output[0] or matmul.input[1] not in inits:
            continue
        emb, weight = (numpy_helper.to_array(inits[n]) for n in (gather.input[0], matmul.input[1]))
        if emb.ndim != 2 or weight.ndim != 2 or emb.dtype != weight.dtype or emb.shape[1] != weight.shape[0]:
            continue
        if emb.shape[0] * weight.shape[1] > max_growth * (emb.size + weight.size):
            continue
        table = (emb.astype(np.float64) @ weight.astype(np.float64)).astype(emb.dtype)
        name = f"{matmul.output[0]}/folded_embedding"
        graph.initializer.append(numpy_helper.from_array(table, name))
        at = list(graph.node).index(matmul)
        graph.node.insert(at, helper.make_node("Gather", [name, gather.input[1]], [matmul.output[0]], axis=0,
                                               name=f"{matmul.name or matmul.output[0]}/folded"))
        graph.node.remove(matmul)
        graph.node.remove(gather)
        for const in (gather.input[0], matmul.input[1]):
            if all(n in (gather, matmul) for n in consumers[const]):
                graph.initializer.remove(inits[const])
        folded.append({"pass": "fold_embedding_projection", "embedding": list(emb.shape),
                       "weights": list(weight.shape), "table": list(table.shape)})
    return folded


def share_transposed_constants(model) -> list[dict]:
    """A constant that is another constant transposed becomes a ``Transpose`` of it; returns what was shared.

    Why: a model with one embedding matrix for input and output (the translation Transformer) exports it twice,
    as the embedding and as the output layer's transposed weights (4 MB each at 8,000 x 128). ONNX Runtime folds
    a Transpose of a constant once, when it loads the graph, so the file holds the matrix once and a call does
    the same work."""
    from onnx import helper, numpy_helper

    graph = model.graph
    two_d = {i.name: i for i in graph.initializer if len(i.dims) == 2 and i.dims[0] != i.dims[1]}
    graph_inputs = {i.name for i in graph.input}
    by_shape: dict[tuple, list[str]] = {}
    for name, init in two_d.items():
        by_shape.setdefault(tuple(init.dims), []).append(name)
    shared, gone = [], set()
    for name, init in two_d.items():
        if name in gone or name in graph_inputs:
            continue
        for other in by_shape.get((init.dims[1], init.dims[0]), []):
            if other in gone or other in graph_inputs or other == name:
                continue
            a, b = numpy_helper.to_array(init), numpy_helper.to_array(two_d[other])
            if a.dtype == b.dtype and np.array_equal(a.T, b):
                graph.initializer.remove(two_d[other])
                graph.node.insert(0, helper.make_node("Transpose", [name], [other], perm=[1, 0],
                                                      name=f"{other}/shared_transpose"))
                gone.add(other)
                shared.append({"pass": "share_transposed_constant", "embedding": list(a.shape),
                               "weights": list(b.shape)})
    return shared


def apply_all(model) -> list[dict]:
    return fold_embedding_projections(model) + share_transposed_constants(model)


def _feeds(sess, index_rows: int, seed: int = 0) -> list[dict]:
    """Random feeds at batch sizes 1, 4 and 33: integer inputs drawn as valid indices into the folded tables,
    float inputs as N(0, 0.5), other dynamic dimensions 7."""
    rng = np.random.default_rng(seed)
    feeds = []
    for batch in (1, 4, 33):
        feed = {}
        for x in sess.get_inputs():
            shape = [batch] + [d if isinstance(d, int) else 7 for d in x.shape[1:]]
            if "int" in x.type:
                feed[x.name] = rng.integers(0, index_rows, shape).astype(np.int64 if "64" in x.type else np.int32)
            else:
                feed[x.name] = (rng.normal(0, 0.5, shape)).astype(np.float32)
        feeds.append(feed)
    return feeds


def optimise_version(repo: Path, name: str, version: int | None = None) -> Path | None:
    """Apply the passes to every graph of ``repo/name/version`` (default: the latest) and publish the result as
    the next version; None when no pass changes anything."""
    import onnx

    from modelcore.manifest import load_and_verify
    from training.export import (PARITY_TOLERANCE, ExportRefused, next_version, ort_session, staging_dir,
                                 write_version)

    root = Path(repo) / name
    version = version or max(int(p.name) for p in root.iterdir() if p.name.isdigit())
    src = root / str(version)
    manifest = load_and_verify(src)
    staged = staging_dir()
    for f in src.iterdir():
        if f.is_file() and f.name != "manifest.json":
            shutil.copy2(f, staged / f.name)
    done = {}
    for gname, spec in manifest["graphs"].items():
        model = onnx.load(str(src / spec["file"]))
        passes = apply_all(model)
        if not passes:
            continue
        onnx.checker.check_model(model)
        onnx.save(model, str(staged / spec["file"]))
        before, after = ort_session(src / spec["file"]), ort_session(staged / spec["file"])
        names = [o.name for o in before.get_outputs()]
        worst = 0.0
        for feed in _feeds(before, min(p["table"][0] for p in passes)):
            for a, b in zip(before.run(names, feed), after.run(names, feed)):
                worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b))))
        print(f"[passes] {name}/{version} {spec['file']}: {len(passes)} folded, max abs diff {worst:.3g} against "
              f"the exported graph (tolerance {PARITY_TOLERANCE})", flush=True)
        if not worst <= PARITY_TOLERANCE:
            raise ExportRefused(f"{spec['file']}: rewritten graph differs by {worst:.3g} > {PARITY_TOLERANCE}")
        done[spec["file"]] = {"passes": passes, "max_abs_diff_vs_source": worst}
    if not done:
        shutil.rmtree(staged)
        print(f"[passes] {name}/{version}: nothing to rewrite", flush=True)
        return None
    keras = manifest.get("parity", {}).get("max_abs_diff")
    record = {
        "source_version": version,
        "source_sha256": {f: manifest["files"][f]["sha256"] for f in done},
        "command": " ".join(["python", "-m", "training.graph_passes", *sys.argv[1:]]),
        "onnx": onnx.__version__,
        "files": done,
        # the source matched Keras within its parity record; this graph matches the source
        "max_abs_diff_vs_keras_bound": None if keras is None else
        keras + max(d["max_abs_diff_vs_source"] for d in done.values())}
    identity = ("schema_version", "name", "version", "libraries", "files", "created")  # write_version's own
    manifest = {k: v for k, v in manifest.items() if k not in identity}
    manifest["description"] += f" (version {version} with its graphs rewritten: graph_passes)"
    manifest["graph_passes"] = record
    try:
        return write_version(repo, name, staged, manifest, next_version(root))
    finally:
        shutil.rmtree(staged)


def main(argv: list[str] | None = None) -> int:
    from training.data import REPO_ROOT
    p = argparse.ArgumentParser(prog="python -m training.graph_passes", description=__doc__)
    p.add_argument("name", help="model name in the repository (e.g. textgen)")
    p.add_argument("--version", type=int, help="source version (default: the latest)")
    p.add_argument("--repo", type=Path, default=REPO_ROOT / "exported_models")
    args = p.parse_args(argv)
    optimise_version(args.repo, args.name, args.version)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
