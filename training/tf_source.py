"""A user's Keras (.keras, .h5) or TensorFlow SavedModel model as ONNX, for ``python -m training import``.

Both become one ``tf.function`` with a named input signature (None where a dimension is dynamic, as the source
declares it) that returns a dict of named outputs: tf2onnx then names the graph's inputs and outputs after the
model's own, and the import compares the graph with this same function (``reference``). An explicit signature is
what Keras 3 models need (tf2onnx's ``from_keras`` fails on them without one)."""
from __future__ import annotations

import importlib
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from modelcore import custom_ops
from training.export import OPSET, ExportRefused, save_mapped


def convert(source: Path, kind: str, out: Path, custom_module: str | None = None, unsafe: bool = False):
    """-> (the ONNX file written at ``out``, ``reference(feeds) -> {output: array}``); raises ExportRefused."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    if custom_module:
        try:
            importlib.import_module(custom_module)
        except ImportError as exc:
            raise ExportRefused(f"--custom-module {custom_module} cannot be imported ({exc}): give a module on "
                                "PYTHONPATH that registers the model's custom layers") from None
    fn, specs, layers = _keras(source, unsafe) if kind == "keras" else _saved_model(source)
    traced = tf.function(fn, input_signature=specs, autograph=False)  # autograph leaves files in TMPDIR
    try:
        proto = _serving_string_ops(_to_onnx(traced, specs, fn.owner))
    except Exception as exc:  # noqa: BLE001 - tf2onnx raises many kinds; each refuses the import
        raise ExportRefused(f"the model cannot be converted to ONNX by tf2onnx {tf2onnx.__version__}: "
                            f"{str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}; export it "
                            "to ONNX yourself and import the .onnx file") from None
    # tf2onnx leaves a TensorFlow op it cannot convert in the graph, under its own name, and only logs it
    for node in proto.graph.node:
        if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type):
            raise ExportRefused(_unconvertible(node, layers, tf2onnx.__version__))
    save_mapped(proto, out)

    def reference(feeds: dict) -> dict:
        outputs = traced(*[tf.constant(feeds[s.name]) for s in specs])
        return {k: v.numpy() for k, v in outputs.items()}
    return out, reference


def _to_onnx(traced, specs, owner):
    """tf2onnx's ``from_function``, with the signature's tensors as the only graph inputs. ``from_function``
    makes every tensor the function captures an input too, so the statistics an adapted Normalization holds as
    tensors (not variables) became inputs the client had to send; frozen here, they are constants. String ops
    become onnxruntime-extensions' (``custom_ops``). A graph with lookup tables (TextVectorization, StringLookup)
    goes through a SavedModel instead: only tf2onnx's SavedModel path carries a table's keys and values."""
    import tensorflow as tf
    from tf2onnx import tf_loader
    from tf2onnx.convert import from_graph_def, tensor_names_from_structed
    concrete = traced.get_concrete_function(*specs)
    inputs = [t.name for t in concrete.inputs[:len(specs)]]  # the arguments come first, then the captures
    outputs = [t.name for t in concrete.outputs if t.dtype != tf.resource]
    renamed = tensor_names_from_structed(concrete, inputs, outputs)
    with tf.device("/cpu:0"):
        frozen = tf_loader.from_function(concrete, inputs, outputs)
        if any(n.op in TABLE_OPS for n in frozen.node):
            return _via_saved_model(concrete, owner)
        proto, _ = from_graph_def(frozen, name=concrete.name, input_names=inputs, output_names=outputs,
                                  opset=OPSET, tensors_to_rename=renamed, extra_opset=[_contrib_opset()])
    return proto


TABLE_OPS = {"LookupTableFindV2", "LookupTableSizeV2", "HashTableV2", "MutableHashTableV2"}


def _contrib_opset():
    from tf2onnx import utils
    return utils.make_opsetid(custom_ops.DOMAIN, 1)


def _via_saved_model(concrete, owner):
    """The function saved as a SavedModel (with ``owner``, the model whose tables and variables it uses), then
    converted by tf2onnx's command, which reads the tables' contents from it."""
    import onnx
    import tensorflow as tf
    with tempfile.TemporaryDirectory() as tmp:
        module = tf.Module()
        module.source = owner  # tracked: its tables and variables are saved with the function
        tf.saved_model.save(module, f"{tmp}/saved", signatures={"serving_default": concrete})
        done = subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", f"{tmp}/saved", "--output",
                               f"{tmp}/model.onnx", "--opset", str(OPSET), "--extra_opset",
                               f"{custom_ops.DOMAIN}:1"], capture_output=True, text=True)
        if done.returncode != 0:
            lines = [ln for ln in done.stderr.splitlines() if "Error" in ln or "error" in ln] or ["no message"]
            raise RuntimeError(lines[-1])
        return onnx.load(f"{tmp}/model.onnx")


def _serving_string_ops(proto):
    """Three of tf2onnx's string conversions, made to answer as TensorFlow does wherever the graph is served:
    ONNX's StringNormalizer needs the locale en_US.UTF-8, which slim images lack, so lower-casing runs as the
    extensions' StringLower; TensorFlow's split on an empty separator means on whitespace, where the extensions'
    StringSplit would split into characters; and the extensions' StringEqual fails when there is nothing to
    compare (a request of one empty text), so equality with one constant string is a lookup instead."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    consts = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    nodes = []
    for node in proto.graph.node:
        if node.op_type == "StringNormalizer" and not any(a.name == "stopwords" for a in node.attribute) and \
                {helper.get_attribute_value(a) for a in node.attribute if a.name == "case_change_action"} == {b"LOWER"}:
            node = helper.make_node("StringLower", list(node.input), list(node.output), name=node.name,
                                    domain=custom_ops.DOMAIN)
        elif node.op_type == "StringSplit" and node.domain == custom_ops.DOMAIN and \
                consts.get(node.input[1], np.array(["x"])).tolist() == [""]:
            name = f"{node.name}/whitespace"
            proto.graph.initializer.extend([
                numpy_helper.from_array(np.array([" \t\n\r\x0b\x0c"], dtype=object), f"{name}/delimiter"),
                numpy_helper.from_array(np.array([True]), f"{name}/skip_empty")])
            node.input[1], node.input[2] = f"{name}/delimiter", f"{name}/skip_empty"
        elif node.op_type == "StringEqual" and node.domain == custom_ops.DOMAIN and \
                consts.get(node.input[1], np.zeros(2)).size == 1:
            word = consts[node.input[1]].reshape(-1)[0]
            found = f"{node.name}/found"
            nodes.append(helper.make_node(  # ONNX-ML's LabelEncoder: 1 for the word, 0 for any other
                "LabelEncoder", [node.input[0]], [found], name=f"{node.name}/lookup", domain="ai.onnx.ml",
                keys_strings=[word.decode() if isinstance(word, bytes) else str(word)], values_int64s=[1],
                default_int64=0))
            node = helper.make_node("Cast", [found], list(node.output), name=node.name, to=TensorProto.BOOL)
        nodes.append(node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    for domain, version in ((custom_ops.DOMAIN, 1), ("ai.onnx.ml", 2)):
        if any(n.domain == domain for n in nodes) and not any(o.domain == domain for o in proto.opset_import):
            proto.opset_import.append(helper.make_opsetid(domain, version))
    return proto


def _keras(source: Path, unsafe: bool = False):
    import keras
    import tensorflow as tf
    if unsafe:
        print("[import] --unsafe-deserialization: Lambda layers run the Python code stored in the file; load "
              "only a file you trust (Keras's safe_mode=False)", flush=True)
    try:
        model = keras.models.load_model(source, compile=False, safe_mode=not unsafe)
    except Exception as exc:  # noqa: BLE001
        raise ExportRefused(_load_failure(source, exc)) from None
    # called with the structure it declares: a dict of named inputs (Keras's structured-data models), a list, or one
    declared = model.input
    keys = sorted(declared) if isinstance(declared, dict) else None
    tensors = [declared[k] for k in keys] if keys else list(model.inputs)
    specs = [tf.TensorSpec(t.shape, t.dtype, name=keys[i] if keys else t.name) for i, t in enumerate(tensors)]
    names = list(getattr(model, "output_names", None) or [f"output_{i}" for i in range(len(model.outputs))])

    def fn(*args):
        if keys:
            structured = dict(zip(keys, args, strict=True))
        else:
            structured = list(args) if len(args) > 1 else args[0]
        out = model(structured, training=False)
        if isinstance(out, dict):
            return out
        return dict(zip(names, out if isinstance(out, (list, tuple)) else [out], strict=True))
    fn.owner = model  # type: ignore[attr-defined]  # what a SavedModel of the function must hold
    return fn, specs, _layer_classes(model)


def _layer_classes(model) -> dict[str, str]:
    """Every layer's name -> its class name (Keras's own with their module: keras.layers.X), nested models too."""
    out = {}
    for layer in getattr(model, "layers", []):
        cls = type(layer)
        out[layer.name] = f"keras.layers.{cls.__name__}" if cls.__module__.startswith("keras.") else cls.__name__
        out.update(_layer_classes(layer))
    return out


def _saved_model(source: Path):
    import tensorflow as tf
    try:
        loaded = tf.saved_model.load(str(source))
    except Exception as exc:  # noqa: BLE001
        raise ExportRefused(_load_failure(source, exc)) from None
    if "serving_default" not in loaded.signatures:
        raise ExportRefused(f"{source} has no serving_default signature (it has {sorted(loaded.signatures)}): "
                            "save it with one (model.export(path) in Keras, or tf.saved_model.save with "
                            "signatures=)")
    signature = loaded.signatures["serving_default"]
    named = signature.structured_input_signature[1]  # keyword -> TensorSpec
    specs = [tf.TensorSpec(spec.shape, spec.dtype, name=key) for key, spec in sorted(named.items())]

    def fn(*args):
        return signature(**{s.name: a for s, a in zip(specs, args, strict=True)})
    fn.owner = loaded  # type: ignore[attr-defined]  # the variables live as long as the function
    return fn, specs, {}


def _load_failure(source: Path, exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "safe_mode" in str(exc) and "Lambda" in str(exc):
        return (f"{source} has a Lambda layer, which Keras loads only with safe_mode=False because it runs Python "
                "code stored in the file: pass --unsafe-deserialization if you trust the file")
    custom = re.search(r"[Cc]ould not (?:locate|deserialize) class '?([\w.]+)'?", str(exc))
    if custom:
        return (f"custom layer '{custom.group(1)}' cannot be loaded from {source}: its class is not registered "
                "here; pass --custom-module MODULE naming the module that defines it (decorated with "
                "@keras.saving.register_keras_serializable)")
    return f"{source} cannot be loaded ({text}): save it again with this Keras or TensorFlow"


# TensorFlow ops tf2onnx leaves unconverted, where what lowers to them is known: the fix for each
KNOWN_OPS = {
    "Bitcast": "keras.ops.argmax lowers to Bitcast, which ONNX lacks: use tf.argmax in the layer",
    "StringNGrams": "n-grams (TextVectorization's ngrams) have no ONNX form: vectorize with ngrams=None, or make "
                    "the n-grams outside the model and import the model from the vectorized input on",
    "RaggedBincount": "output_mode 'multi_hot', 'count' and 'tf_idf' (TextVectorization, StringLookup) have no ONNX "
                      "form: use output_mode='int' in the model, or vectorize outside it and import the model from "
                      "the vectorized input on",
}


def _unconvertible(node, layers: dict[str, str], version: str) -> str:
    """Name the Keras layer (by its class) whose TensorFlow op has no ONNX form, from the node's scope."""
    scopes = node.name.split("/")[:-1]
    found = [(name, cls) for scope in scopes for name, cls in layers.items() if re.fullmatch(rf"{name}(_\d+)?", scope)]
    if found:
        name, cls = found[-1]
        where = f"layer '{name}' ({cls})" if cls.startswith("keras.") else f"custom layer '{cls}' (layer '{name}')"
    else:
        where = f"node '{node.name}'"
    fix = KNOWN_OPS.get(node.op_type, "write the layer with standard TensorFlow ops, or export the model to ONNX "
                                      "yourself and import the .onnx file")
    return (f"{where} cannot be converted to ONNX: its TensorFlow op {node.op_type} has no ONNX form in tf2onnx "
            f"{version}; {fix}")
