"""``python -m training import NAME SOURCE [--samples FILE.npz] [--max-batch-size N]``: a user's model (a .keras
or .h5 file, a TensorFlow SavedModel folder, or an .onnx file) checked by running it, then written as the next
version under ``exported_models/NAME/`` with a manifest (its tensors read from the graph, the batching proved,
the parity with the source, the samples, sha256 of every file and of the source, and the tools' versions). The
``models`` service serves it on every protocol with no code. A refusal names the cause and the fix, writes
nothing and exits non-zero.

The checks: a Keras or SavedModel source converts (``training/tf_source.py``) and the graph answers like the
source on the samples within ``--tolerance``; ``onnx.checker``; ONNX Runtime loads the graph (an opset too new
for it is named); no float64 input unless ``--allow-fp64``; two runs give the same answer; batching only when the
first dimension is dynamic on every input and output and the rows of a batch of N answer as N batches of one
(the largest N that does becomes ``max_batch_size``; 0: no batching). Without ``--samples``, inputs are drawn
from the signature, and it says so.
"""
from __future__ import annotations

import argparse
import hashlib
import re
import shutil
from pathlib import Path

import numpy as np

from modelcore import custom_ops
from modelcore.manifest import SCHEMA, sha256_file
from training.export import ExportRefused, next_version, save_mapped, staging_dir, tensor_meta, write_version

TOLERANCE = 1e-4
NAME = SCHEMA["properties"]["name"]["pattern"]


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
        try:
            together = sess.run(None, batch)
            alone = [sess.run(None, {k: v[i:i + 1] for k, v in batch.items()}) for i in range(n)]
        except Exception:  # noqa: BLE001 - a graph that fails on a batch of n is batchable up to the last that ran
            return best
        for j, out in enumerate(together):
            if not same(out, np.concatenate([a[j] for a in alone])):
                return best
        best, n = n, n * 2
    return best


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Numbers within the tolerance, anything else (strings, booleans) equal."""
    if a.dtype.kind in "fc" and a.shape == b.shape:
        return bool(np.allclose(a, b, atol=TOLERANCE))
    return bool(np.array_equal(a, b))


def import_model(repo: Path, name: str, source: Path, samples_file: Path | None, limit: int,
                 allow_fp64: bool, tolerance: float = TOLERANCE, custom_module: str | None = None,
                 unsafe_deserialization: bool = False, labels: Path | None = None,
                 labels_output: str | None = None, image_input: str | None = None,
                 image_scale: str = "unit") -> Path:
    """Convert (a Keras or SavedModel source), check by running, and publish; raises ExportRefused."""
    kind = source_kind(source)
    custom_ops.preload()  # before TensorFlow, which a Keras or SavedModel source loads
    stage = staging_dir()
    try:
        reference = None
        graph = stage / "model.onnx"  # every check runs on the file that is published, with its weights
        if kind == "onnx":
            _stage_onnx(source, graph)
        else:
            from training import tf_source
            graph, reference = tf_source.convert(source, kind, graph, custom_module, unsafe_deserialization)
        sess, inputs, outputs, opset, library = _checked_graph(graph, allow_fp64)
        samples = _samples(samples_file, inputs)
        try:
            first, second = sess.run(None, samples), sess.run(None, samples)
            parity = {"max_abs_diff": 0.0, "tolerance": tolerance, "reference": "the source itself (ONNX)"}
            if reference is not None:
                parity = _parity(reference, sess, samples, [t["name"] for t in outputs], tolerance, kind)
        except ExportRefused:
            raise
        except Exception as exc:  # noqa: BLE001 - the model or its source failed on these inputs
            signature = ", ".join(f"{t['name']} {t['dtype']} {t['shape']}" for t in inputs)
            raise ExportRefused(f"the model failed on the samples ({str(exc).strip().splitlines()[0][:300]}): give "
                                f"--samples with arrays the model takes (inputs: {signature})") from None
        if not all(np.array_equal(a, b) for a, b in zip(first, second, strict=True)):
            raise ExportRefused("two runs on the same samples answered differently: remove the model's randomness")
        classified = _stage_labels(labels, labels_output, outputs, first, stage) if labels else {}
        image = _image_input(image_input, image_scale, inputs) if image_input else None
        inputs = dynamic_dims_proved(sess, inputs, samples)
        batch = max_batch(sess, inputs, outputs, samples, limit)
        pad = padding_proved(sess, inputs, outputs, samples) if batch else {}
        print(f"[import] {name}: max_batch_size {batch}" + (" (a fixed first dimension, or rows that depend on "
                                                             "each other: served unbatched)" if batch == 0 else ""),
              flush=True)
        final = _publish(repo, name, source, stage, samples, inputs, outputs, batch, opset, parity, classified,
                         image, pad, library)
        _check_served(final, sess, samples, [t["name"] for t in outputs])
        return final
    finally:
        shutil.rmtree(stage, ignore_errors=True)  # now, not at exit: a caller may import several in one process


def source_kind(source: Path) -> str:
    if source.is_dir():
        if (source / "saved_model.pb").is_file():
            return "savedmodel"
        raise ExportRefused(f"{source} is a folder without saved_model.pb: give a TensorFlow SavedModel folder, "
                            "or a .keras, .h5 or .onnx file")
    kinds = {".onnx": "onnx", ".keras": "keras", ".h5": "keras", ".hdf5": "keras"}
    if source.suffix not in kinds:
        raise ExportRefused(f"{source}: unknown kind of model; give a .keras, .h5 or .onnx file, or a "
                            "TensorFlow SavedModel folder")
    if not source.is_file():
        raise ExportRefused(f"{source}: no such file")
    return kinds[source.suffix]


def _stage_onnx(source: Path, target: Path) -> None:
    """The source graph with its weights, wherever the exporter put them (``torch.onnx.export`` writes
    ``model.onnx`` plus ``model.onnx.data``), staged as ``save_mapped`` writes it."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data
    try:
        model = onnx.load(str(source), load_external_data=False)
        files = {ExternalDataInfo(t).location for t in _tensors(model.graph) if uses_external_data(t)}
        missing = sorted(f for f in files if not (source.parent / f).is_file())
        if missing:
            raise ExportRefused(f"{source} keeps its weights in {missing}, which are not beside it: put the .onnx "
                                "file and its data file(s) in one folder, as the exporter wrote them")
        onnx.load_external_data_for_model(model, str(source.parent))
    except ExportRefused:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure refuses the import
        raise ExportRefused(f"{source} is not a readable ONNX file ({exc}): export it again") from None
    save_mapped(model, target)


def _tensors(graph):
    """Every tensor a graph holds: initializers and node attributes, in subgraphs (If, Loop) too."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _tensors(sub)


# other sizes tried for a dynamic dimension, from the size the samples have
_OTHER_SIZES = (lambda n: n + 1, lambda n: 2 * n, lambda n: n - 1, lambda n: n // 2)


def dynamic_dims_proved(sess, inputs: list[dict], samples: dict) -> list[dict]:
    """Each dynamic input dimension past the first, run at other sizes (alone, then with every other dynamic
    dimension of the same size, as an id and its mask go together): one that answers at fewer than two is
    recorded as the size the samples have, as a graph traced at one length (a Reshape with it built in) takes
    only that."""
    dims = [(t["name"], axis) for t in inputs for axis, d in enumerate(t["shape"]) if axis > 0 and d == -1]
    fixed: dict[tuple[str, int], int] = {}
    for name, axis in dims:
        size = samples[name].shape[axis]
        alike = [(n, a) for n, a in dims if samples[n].shape[a] == size]
        if not any(_answers(sess, samples, group, size) for group in ([(name, axis)], alike)):
            fixed[(name, axis)] = size
            print(f"[import] input '{name}' dimension {axis} is marked dynamic but the graph answers only at size "
                  f"{size}: recorded as fixed", flush=True)
    return [{**t, "shape": [fixed.get((t["name"], i), d) for i, d in enumerate(t["shape"])]} for t in inputs]


PAD_STEPS = 3  # zeros added to each sample row to prove padding


def padding_proved(sess, inputs: list[dict], outputs: list[dict], samples: dict) -> dict:
    """Whether requests of different lengths may share a batch: each input's one dynamic dimension past the
    first is padded with zeros (after the values, else before), and every answer on the samples must stay the
    same (a masked RNN, a sum over an embedding whose id 0 is zero). -> the batcher's ``pad`` ({input: [axis,
    0, side]}); {} when it is not proved, or when an output has a dynamic dimension (it could not be cut back)."""
    dyn = [(t["name"], axis) for t in inputs for axis, d in enumerate(t["shape"]) if axis > 0 and d == -1]
    if not dyn or len({n for n, _ in dyn}) < len(dyn) or any(samples[n].dtype == object for n, _ in dyn):
        return {}
    if any(d == -1 for t in outputs for d in t["shape"][1:]):
        return {}
    plain = sess.run(None, samples)
    for side in ("post", "pre"):
        feeds = dict(samples)
        for name, axis in dyn:
            widths = [(0, 0)] * samples[name].ndim
            widths[axis] = (0, PAD_STEPS) if side == "post" else (PAD_STEPS, 0)
            feeds[name] = np.pad(samples[name], widths)
        try:
            padded = sess.run(None, feeds)
        except Exception:  # noqa: BLE001,S112 - the graph does not take the longer inputs
            continue
        if all(np.allclose(a, b, rtol=1e-5, atol=1e-5) for a, b in zip(plain, padded, strict=True)):
            print(f"[import] zero padding {'after' if side == 'post' else 'before'} {[n for n, _ in dyn]} answers "
                  "the same: requests of different lengths share batches", flush=True)
            return {name: [axis, 0, side] for name, axis in dyn}
    return {}


def _answers(sess, samples: dict, group: list[tuple[str, int]], size: int) -> bool:
    """Whether the graph answers, with one row per row, at two or more other sizes of these dimensions."""
    rows = len(next(iter(samples.values())))
    answered = 0
    for other in {f(size) for f in _OTHER_SIZES} - {size, 0}:
        feeds = dict(samples)
        for name, axis in group:
            feeds[name] = np.take(feeds[name], np.arange(other) % size, axis=axis)  # cut, or repeat to grow
        try:
            answered += all(len(o) == rows for o in sess.run(None, feeds) if np.ndim(o))
        except Exception:  # noqa: BLE001,S112 - the graph does not take this size
            continue
    return answered >= 2


def _check_served(final: Path, sess, samples: dict, names: list[str]) -> None:
    """Load the written version as the models service does and answer the first sample; remove it and refuse
    if that fails or answers differently from the graph the import checked."""
    from modelcore.manifest import load_and_verify
    from services.models.model import GenericServable
    try:
        servable = GenericServable(load_and_verify(final), final)
        try:  # the stored sample the service warms up on, as it reads it back
            got = servable.infer(servable.sample, {})
        finally:
            servable.close()
        rows = len(next(iter(servable.sample.values())))
        want = dict(zip(names, sess.run(names, {k: v[:rows] for k, v in samples.items()}), strict=True))
        differs = [n for n in names if not same(np.asarray(got[n]), want[n])]
        if differs:
            raise ExportRefused(f"the served version answers differently from the checked graph on {differs}")
    except Exception as exc:
        shutil.rmtree(final, ignore_errors=True)
        if isinstance(exc, ExportRefused):
            raise
        raise ExportRefused(f"the written version does not load as the models service loads it ({exc}); "
                            "nothing was published: report this with the model") from exc


def _checked_graph(path: Path, allow_fp64: bool):
    """The ONNX checks: readable, opset supported, onnx.checker, ONNX Runtime loads it, float64 inputs; -> the
    session, the tensors, the opset and the library of operators beyond ONNX's it needs (None: none)."""
    import onnx
    import onnxruntime as ort
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - any failure refuses the import
        raise ExportRefused(f"{path} is not a readable ONNX file ({exc}): export it again") from None
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset > onnx.defs.onnx_opset_version():
        raise ExportRefused(f"opset {opset} is newer than this ONNX ({onnx.__version__}) and ONNX Runtime "
                            f"({ort.__version__}) support (up to {onnx.defs.onnx_opset_version()}): export with "
                            "an older opset")
    try:
        onnx.checker.check_model(str(path))  # by path: a graph with its weights beside it, too
    except Exception as exc:  # noqa: BLE001
        raise ExportRefused(f"onnx.checker refuses {path}: {exc}") from None
    options, library = ort.SessionOptions(), custom_ops.used_by(model)
    try:
        if library:  # string operators (TextVectorization, StringLookup): onnxruntime-extensions runs them
            custom_ops.register(options, library)
        sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        raise ExportRefused(f"ONNX Runtime {ort.__version__} cannot load {path} (opset {opset}): {exc}; export "
                            "with an opset it supports") from None
    inputs, outputs = tensor_meta(sess)
    for t in inputs:
        if t["dtype"] == "float64" and not allow_fp64:
            raise ExportRefused(f"float64 input '{t['name']}': cast it to float32 in the model, or keep it with "
                                "--allow-fp64 and clients must send FP64")
    return sess, inputs, outputs, opset, library


def _samples(samples_file: Path | None, inputs: list[dict]) -> dict[str, np.ndarray]:
    if samples_file is None:
        samples = drawn_samples(inputs, 4)
        print(f"[import] no --samples: inputs drawn from the signature ({', '.join(samples)})", flush=True)
        return samples
    with np.load(samples_file, allow_pickle=False) as f:
        samples = {k: f[k] for k in f.files}
    missing = sorted({t["name"] for t in inputs} - set(samples))
    if missing:
        raise ExportRefused(f"{samples_file} holds {sorted(samples)}; the model's inputs are "
                            f"{[t['name'] for t in inputs]} (no array for {missing}): save one per input name")
    extra = sorted(set(samples) - {t["name"] for t in inputs})
    if extra:
        raise ExportRefused(f"{samples_file} has arrays {extra} that are no input of the model (inputs: "
                            f"{[t['name'] for t in inputs]}): save one per input name")
    return {t["name"]: samples[t["name"]].astype(t["dtype"] if t["dtype"] != "string" else object)
            for t in inputs}


def _parity(reference, sess, samples: dict, names: list[str], tolerance: float, kind: str) -> dict:
    """The converted graph against the source on the samples, all rows at once and each row alone (the first
    eight): a row may take a path of the graph the batch hides (an empty text alone leaves no tokens at all)."""
    worst = 0.0
    rows = len(next(iter(samples.values())))
    feeds = [samples] + [{k: v[i:i + 1] for k, v in samples.items()} for i in range(min(rows, 8))]
    for feed in feeds:
        want = reference(feed)
        for n, got in zip(names, sess.run(names, feed), strict=True):
            ref = np.asarray(want[n])
            if ref.shape != got.shape:
                raise ExportRefused(f"output '{n}' has shape {list(got.shape)} in ONNX but {list(ref.shape)} in "
                                    f"the {kind} source")
            if got.dtype.kind in "fiub":
                worst = max(worst, float(np.max(np.abs(ref.astype(np.float64) - got.astype(np.float64))))
                            if got.size else 0.0)
            elif not np.array_equal(ref.astype(str), got.astype(str)):
                raise ExportRefused(f"output '{n}' differs between ONNX and the {kind} source")
    print(f"[import] parity with the {kind} source: max abs diff {worst:.3g} (tolerance {tolerance})", flush=True)
    if not worst <= tolerance:
        raise ExportRefused(f"the ONNX graph differs from the {kind} source by up to {worst:.3g} on the samples, "
                            f"over the tolerance {tolerance}: check the samples, or accept it with --tolerance")
    return {"max_abs_diff": worst, "tolerance": tolerance, "reference": f"the {kind} source",
            "feeds": len(feeds), "batch_sizes": sorted({len(next(iter(f.values()))) for f in feeds})}


LABELS_FILE = "labels.txt"


def _stage_labels(labels: Path, output: str | None, outputs: list[dict], answers: list, stage: Path) -> dict:
    """The class names of a classifier's output, one a line (Triton's label file): their count must be the
    output's, as its answer on the samples shows. -> the manifest's ``labels`` ({output: file})."""
    names = [t["name"] for t in outputs]
    if output is None:
        if len(names) > 1:
            raise ExportRefused(f"the model has outputs {names}: say which one --labels names with --labels-output")
        output = names[0]
    if output not in names:
        raise ExportRefused(f"--labels-output {output!r} is not an output of the model (outputs: {names})")
    try:
        lines = labels.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportRefused(f"--labels {labels} cannot be read as UTF-8 text ({exc}): give one label a line") from None
    answer = answers[names.index(output)]
    if answer.ndim != 2 or answer.dtype.kind != "f":
        raise ExportRefused(f"output {output!r} is {answer.dtype} of shape {list(answer.shape)} on the samples; "
                            "labels need scores of shape [batch, classes]")
    if len(lines) != answer.shape[1]:
        raise ExportRefused(f"--labels {labels} has {len(lines)} lines, but output {output!r} scores "
                            f"{answer.shape[1]} classes: give one label a class, in the output's order")
    (stage / LABELS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {output: LABELS_FILE}


def _image_input(name: str, scale: str, inputs: list[dict]) -> dict:
    """How an image file becomes input ``name`` (runtime/images.to_tensor): its layout, size and channels read
    from the graph: [N, H, W, C] or [N, C, H, W], C 1 (grey) or 3 (RGB), H and W fixed."""
    by_name = {t["name"]: t for t in inputs}
    if name not in by_name:
        raise ExportRefused(f"--image-input {name!r} is not an input of the model (inputs: {sorted(by_name)})")
    t = by_name[name]
    shape = t["shape"]
    if t["dtype"] not in ("float32", "float16", "uint8") or len(shape) != 4:
        raise ExportRefused(f"--image-input {name!r} is {t['dtype']} {shape}: an image input is float or uint8 of "
                            "shape [batch, height, width, channels] or [batch, channels, height, width]")
    layout = "NHWC" if shape[3] in (1, 3) else "NCHW" if shape[1] in (1, 3) else None
    if layout is None:
        raise ExportRefused(f"--image-input {name!r} has shape {shape}: neither its last nor its second dimension "
                            "is 1 or 3 channels")
    size = shape[1:3] if layout == "NHWC" else shape[2:4]
    if -1 in size:
        raise ExportRefused(f"--image-input {name!r} has shape {shape}: its height and width must be fixed in the "
                            "graph, so that an image can be resized to them (export it with a fixed size)")
    return {"input": name, "layout": layout, "size": size, "channels": shape[3 if layout == "NHWC" else 1],
            "scale": scale}


def _publish(repo: Path, name: str, source: Path, stage: Path, samples: dict, inputs: list, outputs: list,
             batch: int, opset: int, parity: dict, labels: dict, image: dict | None, pad: dict,
             library: str | None) -> Path:
    # strings as fixed-width unicode: an object array would need pickle to load
    np.savez(stage / "samples.npz", **{k: v.astype(str) if v.dtype == object else v for k, v in samples.items()})
    graph = {"file": "model.onnx", "inputs": inputs, "outputs": outputs}
    if library:  # the operators beyond ONNX's its sessions must register (_checked_graph found them)
        graph["custom_ops"] = library
    manifest = {
        "task": "generic", "description": f"imported from {source.name}",
        "graphs": {"model": graph},
        "preprocessing": {"served_by": "generic", "samples": "samples.npz",
                          "dynamic": {t["name"]: [i for i, d in enumerate(t["shape"]) if d == -1 and i > 0]
                                      for t in inputs + outputs}},
        "batching": {"max_batch_size": batch, "max_queue_delay_ms": 2},
        "metrics": {}, "data": {"source": source.name, "source_sha256": source_sha256(source), "opset": opset},
        "training": {"seed": 0, "imported": True},  # write_version records the command and the libraries
        "parity": parity,
    }
    if pad:
        manifest["preprocessing"]["pad"] = pad  # proved by running (padding_proved): the batcher pads
    if image:
        manifest["preprocessing"]["image"] = image  # the input also takes image files (services/runtime/images)
    if labels:
        manifest["labels"] = labels  # output -> its label file: Triton's classification, TF Serving's classify
    return write_version(repo, name, stage, manifest, next_version(repo / name))


def source_sha256(source: Path) -> str:
    """A file's sha256; for a folder (a SavedModel), the sha256 of its files' relative paths and sha256s."""
    if source.is_file():
        return sha256_file(source)
    lines = [f"{p.relative_to(source).as_posix()} {sha256_file(p)}\n" for p in sorted(source.rglob("*"))
             if p.is_file()]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def main(argv: list[str]) -> int:
    from training.data import REPO_ROOT
    p = argparse.ArgumentParser(prog="python -m training import", description=__doc__)
    p.add_argument("name", help="the model's name in the repository (a-z, 0-9, _; a letter first)")
    p.add_argument("source", type=Path, help="a .keras or .h5 file, a TensorFlow SavedModel folder, or an .onnx file")
    p.add_argument("--samples", type=Path, help=".npz with one array per input (default: drawn from the signature)")
    p.add_argument("--max-batch-size", type=int, default=64, help="the largest batch to prove (default 64)")
    p.add_argument("--tolerance", type=float, default=TOLERANCE,
                   help=f"largest difference from a Keras or SavedModel source allowed (default {TOLERANCE})")
    p.add_argument("--custom-module", help="a Python module to import first: it registers the model's custom "
                                           "Keras layers (keras.saving.register_keras_serializable)")
    p.add_argument("--unsafe-deserialization", action="store_true",
                   help="load a .keras file's Lambda layers (Keras's safe_mode=False): this runs the Python code "
                        "stored in the file, so only for a file you trust")
    p.add_argument("--allow-fp64", action="store_true", help="keep float64 inputs (clients must send FP64)")
    p.add_argument("--labels", type=Path, help="a classifier's class names, one a line in its output's order: "
                                               "clients may then ask for the top k labels (v2 classification)")
    p.add_argument("--labels-output", help="the output --labels names (needed when the model has several)")
    p.add_argument("--image-input", help="an input of images ([N,H,W,C] or [N,C,H,W]) that then also takes image "
                                         "files (PNG, JPEG, WebP): v2 BYTES, TF Serving {\"b64\": ...}")
    p.add_argument("--image-scale", choices=("unit", "byte", "signed"), default="unit",
                   help="the pixel values the graph takes: unit 0..1 (default), byte 0..255, signed -1..1")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "exported_models", help="model repository root")
    args = p.parse_args(argv)
    try:
        check_name(args.name)
        final = import_model(args.out, args.name, args.source, args.samples, args.max_batch_size, args.allow_fp64,
                             args.tolerance, args.custom_module, args.unsafe_deserialization, args.labels,
                             args.labels_output, args.image_input, args.image_scale)
    except ExportRefused as exc:
        print(f"[import] refused: {exc}", flush=True)
        return 1
    print(f"[import] wrote {final}; a running stack serves it within MODEL_POLL_SECONDS", flush=True)
    return 0


def check_name(name: str) -> None:
    from services.catalog import MODELS
    if not re.fullmatch(NAME, name):
        raise ExportRefused(f"name {name!r} is not a model name: use lower-case letters, digits and _, a letter "
                            "first, at most 64 characters")
    if name in MODELS:
        raise ExportRefused(f"{name!r} is one of the shipped families' models ({', '.join(MODELS)}): choose "
                            "another name")
