"""``python -m training import``: ONNX models made here with onnx.helper (no Keras at all), checked by running
them; what the manifest records, the batching it proves, and refusals that name the cause and write nothing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelcore.manifest import load_and_verify
from tests.conftest import ROOT
from training import importer


def two_in_two_out(batch=None, opset=17, image_type=TensorProto.FLOAT):
    """image [batch, 4, 4, 1] and token ids [batch, 3] -> doubled image, ids + 1."""
    image = helper.make_tensor_value_info("image", image_type, [batch, 4, 4, 1])
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [batch, 3])
    doubled = helper.make_tensor_value_info("doubled", image_type, [batch, 4, 4, 1])
    shifted = helper.make_tensor_value_info("shifted", TensorProto.INT64, [batch, 3])
    one = numpy_helper.from_array(np.array(1, np.int64), "one")
    graph = helper.make_graph([helper.make_node("Add", ["image", "image"], ["doubled"]),
                               helper.make_node("Add", ["ids", "one"], ["shifted"])],
                              "g", [image, ids], [doubled, shifted], [one])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def centred():
    """x - mean over the batch: each row's answer depends on the others, so batching would change answers."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])
    graph = helper.make_graph([helper.make_node("ReduceMean", ["x"], ["m"], axes=[0], keepdims=1),
                               helper.make_node("Sub", ["x", "m"], ["y"])], "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def run(tmp_path, model, *extra):
    src = tmp_path / "src.onnx"
    if isinstance(model, bytes):
        src.write_bytes(model)
    else:
        onnx.save(model, src)
    code = importer.main(["mine", str(src), "--out", str(tmp_path / "repo"), *extra])
    return code, tmp_path / "repo" / "mine"


def test_an_onnx_model_is_imported_with_its_tensors_batching_samples_and_checksums(tmp_path, capsys):
    code, root = run(tmp_path, two_in_two_out(), "--max-batch-size", "16")
    assert code == 0 and "inputs drawn from the signature" in capsys.readouterr().out
    m = load_and_verify(root / "1")  # every file's sha256 checked
    graph = m["graphs"]["model"]
    assert [(t["name"], t["dtype"], t["shape"]) for t in graph["inputs"]] == [
        ("image", "float32", [-1, 4, 4, 1]), ("ids", "int64", [-1, 3])]
    assert [t["name"] for t in graph["outputs"]] == ["doubled", "shifted"]
    assert m["batching"]["max_batch_size"] == 16 and m["task"] == "generic"
    assert len(m["data"]["source_sha256"]) == 64 and m["data"]["opset"] == 17
    assert "onnxruntime" in m["libraries"] and "model.onnx" in m["files"] and "samples.npz" in m["files"]
    with np.load(root / "1" / "samples.npz") as s:
        assert s["image"].shape == (4, 4, 4, 1) and s["ids"].dtype == np.int64


def test_given_samples_are_used_and_a_second_import_is_the_next_version(tmp_path, capsys):
    np.savez(tmp_path / "s.npz", image=np.ones((2, 4, 4, 1), np.float32), ids=np.arange(6).reshape(2, 3))
    assert run(tmp_path, two_in_two_out(), "--samples", str(tmp_path / "s.npz"))[0] == 0
    code, root = run(tmp_path, two_in_two_out(), "--samples", str(tmp_path / "s.npz"))
    assert code == 0 and "drawn" not in capsys.readouterr().out
    with np.load(root / "2" / "samples.npz") as s:
        assert s["ids"].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_a_fixed_batch_dimension_is_served_unbatched_and_the_import_says_so(tmp_path, capsys):
    code, root = run(tmp_path, two_in_two_out(batch=1))
    assert code == 0 and "served unbatched" in capsys.readouterr().out
    assert load_and_verify(root / "1")["batching"]["max_batch_size"] == 0


def test_rows_that_change_each_others_answers_are_not_batched(tmp_path):
    code, root = run(tmp_path, centred())
    assert code == 0 and load_and_verify(root / "1")["batching"]["max_batch_size"] == 1


@pytest.mark.parametrize("model, extra, why", [
    (two_in_two_out(opset=99), (), "opset 99 is newer than this ONNX"),
    (b"\x08\x07garbage, not a model", (), "is not a readable ONNX file"),
    (two_in_two_out(image_type=TensorProto.DOUBLE), (),
     "float64 input 'image': cast it to float32 in the model, or keep it with --allow-fp64"),
])
def test_refusals_name_the_cause_and_the_fix_and_write_nothing(tmp_path, capsys, model, extra, why):
    code, root = run(tmp_path, model, *extra)
    assert code == 1 and why in capsys.readouterr().out
    assert not root.exists() or not any(p.name.isdigit() for p in root.iterdir())


def test_float64_is_kept_when_asked_and_the_command_line_runs(tmp_path):
    src = tmp_path / "f64.onnx"
    onnx.save(two_in_two_out(image_type=TensorProto.DOUBLE), src)
    # an ONNX source needs the serving dependencies only: TensorFlow, Keras and tf2onnx cannot even be imported here
    code = ("import sys; sys.modules.update(tensorflow=None, keras=None, tf2onnx=None); "
            "from training.__main__ import main; raise SystemExit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "import", "f64", str(src), "--allow-fp64",
                           "--out", str(tmp_path / "repo")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    m = json.loads((tmp_path / "repo" / "f64" / "1" / "manifest.json").read_text())
    assert m["graphs"]["model"]["inputs"][0]["dtype"] == "float64"


# ------------------------------------------------------------------------------ Keras and SavedModel sources
@pytest.fixture(scope="module")
def keras_sources(tmp_path_factory):
    """A small fitted Keras model saved as .keras, and one with a custom layer whose op has no ONNX form."""
    import keras
    import tensorflow as tf

    @keras.saving.register_keras_serializable(package="import_tests")
    class NumpyDouble(keras.layers.Layer):
        def call(self, x):
            return tf.ensure_shape(tf.numpy_function(lambda v: v * 2, [x], tf.float32), x.shape)

    d = tmp_path_factory.mktemp("keras_sources")
    x = keras.Input((3,), name="x")
    model = keras.Model(x, keras.layers.Dense(2, name="y")(keras.layers.Dense(4, activation="relu")(x)))
    model.save(d / "plain.keras")
    model.save(d / "plain.h5")  # the legacy HDF5 format, which Keras 3 still reads
    custom = keras.Model(x, NumpyDouble(name="doubler")(x))
    custom.save(d / "custom.keras")
    image = keras.Input((8, 8, 1), name="image")  # enough arithmetic that ONNX Runtime rounds unlike TensorFlow
    conv = keras.layers.Flatten()(keras.layers.Conv2D(8, 3)(image))
    keras.Model(image, keras.layers.Dense(10, activation="softmax")(conv)).save(d / "conv.keras")

    @keras.saving.register_keras_serializable(package="import_tests")
    class KerasArgmax(keras.layers.Layer):
        def call(self, x):
            return keras.ops.argmax(x, axis=-1)
    keras.Model(x, KerasArgmax(name="pick")(x)).save(d / "argmax.keras")
    keras.Model(x, keras.layers.Lambda(lambda v: v * 3.0, name="triple")(x)).save(d / "lambda.keras")
    # a dict of named inputs, as in Keras's structured-data tutorial
    age, rate = keras.Input((1,), name="age"), keras.Input((2,), name="rate")
    joined = keras.layers.Concatenate()([age, rate])
    keras.Model({"age": age, "rate": rate}, keras.layers.Dense(1, name="risk")(joined)).save(d / "dict.keras")
    vectorize = keras.layers.TextVectorization(max_tokens=20, output_sequence_length=4, name="vectorize")
    vectorize.adapt(["a good film", "a bad film", "so good"])
    review = keras.Input((1,), dtype="string", name="review")
    keras.Model(review, keras.layers.Embedding(20, 2)(vectorize(review))).save(d / "text.keras")
    for name, options in (("bigrams", {"ngrams": 2, "output_sequence_length": 4}), ("bag", {"output_mode": "count"})):
        variant = keras.layers.TextVectorization(max_tokens=20, name=name, **options)
        variant.adapt(["a good film", "a bad film"])
        keras.Model(review, keras.layers.Dense(1)(keras.layers.Flatten()(variant(review)))).save(d / f"{name}.keras")
    # a string feature looked up in a vocabulary beside a number, as in Keras's structured-data tutorial
    lookup = keras.layers.StringLookup(name="lookup")
    lookup.adapt(["paris", "berlin", "rome", "paris"])
    city, years = keras.Input((1,), dtype="string", name="city"), keras.Input((1,), name="years")
    embedded = keras.layers.Flatten()(keras.layers.Embedding(8, 2)(lookup(city)))
    keras.Model({"city": city, "years": years}, keras.layers.Dense(1, name="price")(
        keras.layers.Concatenate()([embedded, years]))).save(d / "lookup.keras")
    # statistics adapted to data, as keras.applications' EfficientNet ships them
    normalize = keras.layers.Normalization(name="normalize")
    normalize.adapt(np.random.default_rng(0).normal(5.0, 3.0, (256, 3)).astype(np.float32))
    keras.Model(x, keras.layers.Dense(2, name="y")(normalize(x))).save(d / "normalized.keras")
    return d


@pytest.mark.parametrize("source", ["plain.keras", "plain.h5"])
def test_a_keras_model_is_converted_and_checked_against_keras(tmp_path, capsys, keras_sources, source):
    code = importer.main(["plain", str(keras_sources / source), "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "parity with the keras source" in out, out
    m = load_and_verify(tmp_path / "plain" / "1")
    assert m["parity"]["reference"] == "the keras source" and m["parity"]["max_abs_diff"] <= 1e-4
    assert m["parity"]["batch_sizes"] == [1, 4] and m["graphs"]["model"]["outputs"][0]["name"] == "y"
    assert m["libraries"]["tf2onnx"] and m["data"]["source"] == source


@pytest.mark.parametrize("source, extra, why", [
    ("custom.keras", (), "custom layer 'NumpyDouble' (layer 'doubler') cannot be converted to ONNX: its "
                         "TensorFlow op PyFunc has no ONNX form"),
    ("conv.keras", ("--tolerance", "1e-12"), "the ONNX graph differs from the keras source by up to"),
    ("argmax.keras", (), "custom layer 'KerasArgmax' (layer 'pick') cannot be converted to ONNX: its TensorFlow op "
                         "Bitcast has no ONNX form in tf2onnx 1.17.0; keras.ops.argmax lowers to Bitcast, which "
                         "ONNX lacks: use tf.argmax in the layer"),
    ("bigrams.keras", (), "layer 'bigrams' (keras.layers.TextVectorization) cannot be converted to ONNX: its "
                          "TensorFlow op StringNGrams has no ONNX form in tf2onnx 1.17.0; n-grams (TextVectorization's "
                          "ngrams) have no ONNX form: vectorize with ngrams=None"),
    ("bag.keras", (), "its TensorFlow op RaggedBincount has no ONNX form in tf2onnx 1.17.0; output_mode "
                      "'multi_hot', 'count' and 'tf_idf' (TextVectorization, StringLookup) have no ONNX form: use "
                      "output_mode='int'"),
    ("lambda.keras", (), "has a Lambda layer, which Keras loads only with safe_mode=False because it runs Python "
                         "code stored in the file: pass --unsafe-deserialization if you trust the file"),
    ("broken.keras", (), "cannot be loaded"),
    ("not_a_savedmodel", (), "a folder without saved_model.pb"),
    ("plain.pt", (), "unknown kind of model; give a .keras, .h5 or .onnx file, or a TensorFlow SavedModel"),
])
def test_keras_refusals_name_the_cause_and_write_nothing(tmp_path, capsys, keras_sources, source, extra, why):
    (keras_sources / "broken.keras").write_bytes(b"PK\x03\x04 not really a zip")
    (keras_sources / "not_a_savedmodel").mkdir(exist_ok=True)
    (keras_sources / "plain.pt").write_bytes(b"torch")
    code = importer.main(["mine", str(keras_sources / source), "--out", str(tmp_path), *extra])
    assert code == 1 and why in capsys.readouterr().out
    assert not (tmp_path / "mine").exists() or not any((tmp_path / "mine").iterdir())


def test_dict_inputs_and_lambda_layers_import_and_answer_as_keras(tmp_path, capsys, keras_sources):
    """A model of a dict of inputs is called with that dict, its inputs named by its keys; a Lambda layer loads
    with --unsafe-deserialization, which warns."""
    assert importer.main(["structured", str(keras_sources / "dict.keras"), "--out", str(tmp_path)]) == 0
    m = load_and_verify(tmp_path / "structured" / "1")
    assert [t["name"] for t in m["graphs"]["model"]["inputs"]] == ["age", "rate"]
    assert m["parity"]["max_abs_diff"] <= 1e-4
    code = importer.main(["tripled", str(keras_sources / "lambda.keras"), "--unsafe-deserialization", "--out",
                          str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "Lambda layers run the Python code stored in the file" in out, out
    assert load_and_verify(tmp_path / "tripled" / "1")["parity"]["max_abs_diff"] <= 1e-4


def test_an_adapted_normalization_is_frozen_into_the_graph(tmp_path, keras_sources):
    """Its mean and variance are constants of the graph, not inputs a client would have to send."""
    import keras
    x = np.random.default_rng(3).normal(5.0, 3.0, (5, 3)).astype(np.float32)
    np.savez(tmp_path / "samples.npz", x=x)
    assert importer.main(["normalized", str(keras_sources / "normalized.keras"), "--samples",
                          str(tmp_path / "samples.npz"), "--out", str(tmp_path / "repo")]) == 0
    version = tmp_path / "repo" / "normalized" / "1"
    m = load_and_verify(version)
    assert [t["name"] for t in m["graphs"]["model"]["inputs"]] == ["x"]
    from services.models.model import GenericServable
    servable = GenericServable(m, version)
    try:
        got = servable.infer({"x": x}, {})["y"]
    finally:
        servable.close()
    want = keras.models.load_model(keras_sources / "normalized.keras").predict(x, verbose=0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


SERVE_IN_A_FRESH_PROCESS = """
import json, sys
import numpy as np
from modelcore.manifest import load_and_verify
from services.models.model import GenericServable
version, feeds = sys.argv[1], np.load(sys.argv[2])
servable = GenericServable(load_and_verify(version), version)
# strings as the protocols hand them to the servable: BYTES; all rows at once, then each alone
feeds = {k: v.astype(object) if v.dtype.kind == "U" else v for k, v in feeds.items()}
out = servable.infer(feeds, {})
rows = len(next(iter(feeds.values())))
alone = [servable.infer({k: v[i:i + 1] for k, v in feeds.items()}, {}) for i in range(rows)]
print(json.dumps({k: v.tolist() for k, v in out.items()}))
print(json.dumps({k: np.concatenate([a[k] for a in alone]).tolist() for k in out}))
servable.close()
"""


def test_string_preprocessing_in_the_model_imports_and_answers_strings_as_keras(tmp_path, keras_sources):
    """TextVectorization (Keras's text tutorial) and StringLookup (its structured-data one) convert through
    onnxruntime-extensions' string operators: the service takes the strings themselves and answers as Keras,
    punctuation, capitals, tabs, unknown words and an empty text included. The import and the service run in
    fresh processes, as users run them: this one loaded TensorFlow before the extensions, whose regular
    expressions then bind to TensorFlow's (``custom_ops.preload``). Each text alone answers too, the empty one
    included (the extensions' StringEqual failed on no tokens at all), so the rows batch to the limit."""
    import keras
    import tensorflow as tf
    texts = np.array([["a good film"], ["A BAD, bad film!!"], ["so\tgood\n"], ["unknown words here"], [""],
                      ["Été, très good"]])
    cities = np.array([["paris"], ["rome"], ["tokyo"], ["berlin"]])
    years = np.array([[1.0], [2.5], [0.0], [7.0]], np.float32)
    cases = [("text", "text.keras", {"review": texts}, lambda m: m(tf.constant(texts))),
             ("lookup", "lookup.keras", {"city": cities, "years": years},
              lambda m: m({"city": tf.constant(cities), "years": tf.constant(years)}))]
    for name, source, feeds, keras_answer in cases:
        np.savez(tmp_path / f"{name}.npz", **feeds)
        proc = subprocess.run([sys.executable, "-m", "training", "import", name, str(keras_sources / source),
                               "--samples", str(tmp_path / f"{name}.npz"), "--out", str(tmp_path / "repo")],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
        version = tmp_path / "repo" / name / "1"
        m = load_and_verify(version)
        assert m["graphs"]["model"]["custom_ops"] == "onnxruntime-extensions" and m["parity"]["max_abs_diff"] <= 1e-4
        served = subprocess.run([sys.executable, "-c", SERVE_IN_A_FRESH_PROCESS, str(version),
                                 str(tmp_path / f"{name}.npz")], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert served.returncode == 0, served.stderr[-2000:]
        want = np.asarray(keras_answer(keras.models.load_model(keras_sources / source)))
        for line in served.stdout.strip().splitlines()[-2:]:  # the batch, then each row alone (an empty text too)
            got = json.loads(line)
            np.testing.assert_allclose(np.array(next(iter(got.values()))), want, rtol=1e-5, atol=1e-5)
        assert m["batching"]["max_batch_size"] == 64


TUTORIAL_STANDARDIZATION = '''
import re
import string

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable()
def custom_standardization(input_data):
    lowercase = tf.strings.lower(input_data)
    stripped_html = tf.strings.regex_replace(lowercase, "<br />", " ")
    return tf.strings.regex_replace(stripped_html, f"[{re.escape(string.punctuation)}]", "")
'''


def test_keras_text_tutorial_standardization_imports_with_its_module(tmp_path):
    """Keras's "Text classification from scratch": TextVectorization with the tutorial's own standardize
    function, loaded with --custom-module, converted and answering as Keras, alone and in a batch."""
    import importlib

    import keras
    import tensorflow as tf
    (tmp_path / "user_text.py").write_text(TUTORIAL_STANDARDIZATION)
    sys.path.insert(0, str(tmp_path))
    try:
        user_text = importlib.import_module("user_text")
        vectorize = keras.layers.TextVectorization(standardize=user_text.custom_standardization, max_tokens=50,
                                                   output_sequence_length=12)
        vectorize.adapt(["A great movie!<br />Loved it.", "Terrible acting, <br /> bad plot", "what a film"])
        text = keras.Input((1,), dtype="string", name="text")
        pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(50, 4)(vectorize(text)))
        model = keras.Model(text, keras.layers.Dense(1, activation="sigmoid", name="positive")(pooled))
        model.save(tmp_path / "tutorial.keras")
        reviews = np.array([["A GREAT movie!<br />Loved it, really."], ["bad<br />plot"], [""], ["unknown"]])
        want = model(tf.constant(reviews)).numpy()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("user_text", None)
    np.savez(tmp_path / "s.npz", text=reviews)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "training", "import", "tutorial", str(tmp_path / "tutorial.keras"),
                           "--samples", str(tmp_path / "s.npz"), "--custom-module", "user_text", "--out",
                           str(tmp_path / "repo")], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    served = subprocess.run([sys.executable, "-c", SERVE_IN_A_FRESH_PROCESS, str(tmp_path / "repo" / "tutorial" / "1"),
                             str(tmp_path / "s.npz")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert served.returncode == 0, served.stderr[-2000:]
    for line in served.stdout.strip().splitlines()[-2:]:
        np.testing.assert_allclose(np.array(json.loads(line)["positive"]), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name, why", [("mnist", "one of the shipped families' models"),
                                       ("My-Model", "is not a model name")])
def test_names_that_cannot_be_served_are_refused(tmp_path, capsys, name, why):
    src = tmp_path / "m.onnx"
    onnx.save(two_in_two_out(), src)
    assert importer.main([name, str(src), "--out", str(tmp_path / "repo")]) == 1
    assert why in capsys.readouterr().out and not (tmp_path / "repo").exists()


def test_an_unregistered_custom_layer_is_named_with_the_fix(keras_sources, tmp_path):
    """In a fresh process (no class registered), as a user runs it: the fix is --custom-module."""
    proc = subprocess.run([sys.executable, "-m", "training", "import", "mine", str(keras_sources / "custom.keras"),
                           "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "custom layer 'NumpyDouble' cannot be loaded" in proc.stdout, proc.stdout
    assert "--custom-module" in proc.stdout and not (tmp_path / "mine").exists()


def test_samples_the_model_cannot_take_are_refused_naming_the_inputs(tmp_path, capsys):
    samples = tmp_path / "s.npz"
    np.savez(samples, image=np.zeros((2, 4, 4, 1), np.float32), ids=np.zeros((2, 5), np.int64))  # ids: 3 wide
    code, root = run(tmp_path, two_in_two_out(), "--samples", str(samples))
    out = capsys.readouterr().out
    assert code == 1 and "the model failed on the samples" in out and "ids int64 [-1, 3]" in out, out
    assert not root.exists() or not any(root.iterdir())


def weighted(rows=None, width=8):
    """x [rows, 64] @ w [64, width]: 2 KB of weights at 8 wide, enough for onnx to move them to a .data file."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((64, width)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, width])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def save_with_external_data(model, folder):
    """The file pair torch.onnx.export (dynamo, its default) writes: model.onnx and model.onnx.data."""
    folder.mkdir()
    onnx.save_model(model, str(folder / "model.onnx"), save_as_external_data=True, location="model.onnx.data",
                    size_threshold=0)
    assert (folder / "model.onnx.data").stat().st_size == 64 * model.graph.output[0].type.tensor_type.shape.dim[
        1].dim_value * 4
    return folder / "model.onnx"


@pytest.mark.parametrize("width", [8, 1000])
def test_an_onnx_file_with_external_data_is_published_with_its_weights(tmp_path, width):
    """The weights come along, each file hashed, and the written version answers as the models service loads it,
    from another folder than the source's. A tensor of a page or more goes to model.onnx.data at a page boundary
    (ONNX Runtime maps it, shared by the workers); a smaller one stays in the graph."""
    src = save_with_external_data(weighted(width=width), tmp_path / "export")
    assert importer.main(["mine", str(src), "--out", str(tmp_path / "repo")]) == 0
    version = tmp_path / "repo" / "mine" / "1"
    m = load_and_verify(version)
    graph = onnx.load(str(version / "model.onnx"), load_external_data=False)
    if width == 8:
        assert "model.onnx.data" not in m["files"]
        assert graph.graph.initializer[0].HasField("raw_data")
    else:
        info = {e.key: e.value for e in graph.graph.initializer[0].external_data}
        assert info["location"] == "model.onnx.data" and int(info["offset"]) % 4096 == 0, info
        assert m["files"]["model.onnx.data"]["bytes"] == 64 * width * 4
    (tmp_path / "export" / "model.onnx.data").unlink()  # the source's weights are not what the service reads
    from services.models.model import GenericServable
    servable = GenericServable(m, version)
    x = np.ones((2, 64), np.float32)
    want = x @ numpy_helper.to_array(weighted(width=width).graph.initializer[0])
    np.testing.assert_allclose(servable.infer({"x": x}, {})["y"], want, rtol=1e-5)
    servable.close()


def test_external_data_that_is_missing_is_refused_naming_the_file(tmp_path, capsys):
    src = save_with_external_data(weighted(), tmp_path / "export")
    (tmp_path / "export" / "model.onnx.data").rename(tmp_path / "elsewhere.data")
    assert importer.main(["mine", str(src), "--out", str(tmp_path / "repo")]) == 1
    out = capsys.readouterr().out
    assert "keeps its weights in ['model.onnx.data'], which are not beside it: put the .onnx" in out, out
    assert not (tmp_path / "repo" / "mine").exists()


def traced_at_16():
    """x [N, L] -> Reshape to [-1, 16]: what a graph traced at length 16 does (a TorchScript TransformerEncoder
    exported with the length in dynamic_axes keeps 16 in its Reshape). It answers only at L = 16."""
    shape = numpy_helper.from_array(np.array([-1, 16], np.int64), "shape")
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, "length"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 16])], [shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_a_length_the_graph_only_takes_at_its_traced_size_is_recorded_fixed(tmp_path, capsys):
    samples = tmp_path / "s.npz"
    np.savez(samples, x=np.ones((2, 16), np.float32))
    code, root = run(tmp_path, traced_at_16(), "--samples", str(samples))
    out = capsys.readouterr().out
    assert code == 0 and "input 'x' dimension 1 is marked dynamic but the graph answers only at size 16" in out
    assert load_and_verify(root / "1")["graphs"]["model"]["inputs"][0]["shape"] == [-1, 16]
    # a graph that does take other lengths keeps its dynamic dimension
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, "length"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, "length"])])
    any_length = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    code, root = run(tmp_path, any_length, "--samples", str(samples))
    assert code == 0 and load_and_verify(root / "2")["graphs"]["model"]["inputs"][0]["shape"] == [-1, -1]


def test_a_version_the_service_cannot_serve_is_removed_and_refused(tmp_path, monkeypatch, capsys):
    """The last check loads the written version as the models service does; when that fails (here the servable
    is made to fail), the import says no and leaves no version behind."""
    from services.models import model as generic

    def broken(self, inputs, parameters):
        raise RuntimeError("External data path validation failed")
    monkeypatch.setattr(generic.GenericServable, "infer", broken)
    code, root = run(tmp_path, weighted())
    assert code == 1 and not (root / "1").exists()
    assert "does not load as the models service loads it (External data path validation failed)" in \
        capsys.readouterr().out


def test_scikit_learn_zipmap_is_refused_with_the_fix_that_then_imports(tmp_path, capsys):
    """skl2onnx's default classifier output is a ZipMap (a list of dicts); the refusal gives the option that
    makes it one probability tensor, and that export imports and answers as predict_proba."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 4)).astype(np.float32)
    clf = LogisticRegression().fit(x, (x[:, 0] + x[:, 1] > 0).astype(int) + (x[:, 2] > 1))
    code, _ = run(tmp_path, to_onnx(clf, x[:1]))
    out = capsys.readouterr().out
    assert code == 1 and "output 'output_probability' is a ZipMap (seq(map(int64,tensor(float))))" in out, out
    assert "options={id(model): {'zipmap': False}}" in out
    samples = tmp_path / "s.npz"
    np.savez(samples, X=x[:5])
    code, root = run(tmp_path, to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}}), "--samples", str(samples))
    assert code == 0
    from services.models.model import GenericServable
    servable = GenericServable(load_and_verify(root / "1"), root / "1")
    got = servable.infer({"X": x[:7]}, {})
    servable.close()
    np.testing.assert_allclose(got["probabilities"], clf.predict_proba(x[:7]), atol=1e-5)
    assert got["label"].tolist() == clf.predict(x[:7]).tolist()


@pytest.mark.parametrize("lines, model, extra, why", [
    (2, centred, (), "has 2 lines, but output 'y' scores 3 classes: give one label a class"),
    (3, two_in_two_out, (), "the model has outputs ['doubled', 'shifted']: say which one --labels names with "
                            "--labels-output"),
    (3, two_in_two_out, ("--labels-output", "scores"), "--labels-output 'scores' is not an output of the model"),
    (3, two_in_two_out, ("--labels-output", "shifted"), "output 'shifted' is int64 of shape [4, 3] on the samples; "
                                                        "labels need scores of shape [batch, classes]"),
])
def test_labels_that_do_not_fit_the_output_are_refused(tmp_path, capsys, lines, model, extra, why):
    (tmp_path / "labels.txt").write_text("".join(f"class {i}\n" for i in range(lines)))
    code, folder = run(tmp_path, model(), "--labels", str(tmp_path / "labels.txt"), *extra)
    assert code == 1 and why in capsys.readouterr().out
    assert not folder.exists()


def test_labels_are_published_hashed_beside_the_graph(tmp_path):
    (tmp_path / "labels.txt").write_text("low\nmid\nhigh\n")
    code, folder = run(tmp_path, centred(), "--labels", str(tmp_path / "labels.txt"))
    m = load_and_verify(folder / "1")
    assert code == 0 and m["labels"] == {"y": "labels.txt"} and "labels.txt" in m["files"]
    assert (folder / "1" / "labels.txt").read_text().splitlines() == ["low", "mid", "high"]


def image_model(shape):
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["y"])], "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("shape, extra, why", [
    ([None, 4, 4, 1], ("--image-input", "picture"), "--image-input 'picture' is not an input of the model "
                                                     "(inputs: ['image'])"),
    ([None, 16], ("--image-input", "image"), "is float32 [-1, 16]: an image input is float or uint8 of shape"),
    ([None, 4, 4, 5], ("--image-input", "image"), "neither its last nor its second dimension is 1 or 3 channels"),
    ([None, 3, None, None], ("--image-input", "image"), "its height and width must be fixed in the graph"),
])
def test_image_inputs_that_are_not_images_are_refused(tmp_path, capsys, shape, extra, why):
    code, folder = run(tmp_path, image_model(shape), *extra)
    assert code == 1 and why in capsys.readouterr().out
    assert not folder.exists()


def test_an_image_input_records_its_layout_size_and_scale(tmp_path):
    code, folder = run(tmp_path, image_model([None, 3, 6, 5]), "--image-input", "image", "--image-scale", "signed")
    assert code == 0
    assert load_and_verify(folder / "1")["preprocessing"]["image"] == {
        "input": "image", "layout": "NCHW", "size": [6, 5], "channels": 3, "scale": "signed"}


# ------------------------------------------------------------------------------ padding proved by running
@pytest.fixture(scope="module")
def masked_lstm(tmp_path_factory):
    """A Keras LSTM over token ids with mask_zero (as Keras's text tutorials build it), fitted one epoch."""
    import keras
    d = tmp_path_factory.mktemp("masked_lstm")
    ids = keras.Input((None,), dtype="int64", name="ids")
    h = keras.layers.LSTM(6)(keras.layers.Embedding(50, 8, mask_zero=True)(ids))
    model = keras.Model(ids, keras.layers.Dense(2, activation="softmax", name="p")(h))
    rng = np.random.default_rng(0)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(rng.integers(1, 50, (16, 7)), rng.integers(0, 2, 16), epochs=1, verbose=0)
    model.save(d / "lstm.keras")
    np.savez(d / "samples.npz", ids=rng.integers(1, 50, (4, 7)))
    return d, model


def test_a_masked_lstm_is_padded_and_mixed_lengths_share_batches(tmp_path, masked_lstm):
    """Zero padding after the ids answers the same, so the import records it; the servable's batcher then joins
    requests of different lengths, and each answers as Keras does on its own ids."""
    from prometheus_client import REGISTRY

    from services.models.model import GenericServable
    d, model = masked_lstm
    assert importer.main(["lstm", str(d / "lstm.keras"), "--samples", str(d / "samples.npz"), "--out",
                          str(tmp_path / "repo")]) == 0
    version = tmp_path / "repo" / "lstm" / "1"
    manifest = load_and_verify(version)
    assert manifest["preprocessing"]["pad"] == {"ids": [1, 0, "post"]}
    requests = [np.random.default_rng(i).integers(1, 50, (1, 2 + i)) for i in range(24)]  # 24 lengths
    servable = GenericServable(manifest, version)
    try:
        def joined(size):
            return REGISTRY.get_sample_value("model_batches_total", {
                "model": "lstm", "version": "1", "graph": "model", "size": str(size)}) or 0.0
        before = sum(joined(n) for n in range(2, 25))
        for _ in range(3):  # 24 threads at once: while one batch runs, the others queue and go as one
            with ThreadPoolExecutor(24) as pool:
                answers = list(pool.map(lambda ids: servable.infer({"ids": ids}, {})["p"], requests))
            if sum(joined(n) for n in range(2, 25)) > before:
                break
        assert sum(joined(n) for n in range(2, 25)) > before  # a batch held several lengths
    finally:
        servable.close()
    for ids, got in zip(requests, answers, strict=True):
        np.testing.assert_allclose(got, model.predict(ids, verbose=0), atol=1e-4)


def test_a_mean_over_time_is_never_padded(tmp_path):
    """Zeros change a mean, so its requests of different lengths keep to batches of their own length."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])
    graph = helper.make_graph([helper.make_node("ReduceMean", ["x"], ["y"], axes=[1], keepdims=1)], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    code, folder = run(tmp_path, model)
    assert code == 0 and "pad" not in load_and_verify(folder / "1")["preprocessing"]
