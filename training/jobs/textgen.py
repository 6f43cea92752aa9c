"""Character-level LSTM on 38 Shakespeare plays; exports a one-step graph with explicit state.

Step graph: ``token`` int64 [N], ``h`` / ``c`` float32 [N, U] -> ``logits`` [N, V], ``h_out``, ``c_out``.
The server feeds the prompt one character at a time and samples (temperature / top-k / top-p) with all
active streams batched together. Metric: bits per character on two held-out plays; the share of real words
(found in the training text) in text sampled at temperature 0.7.
"""
from __future__ import annotations

import re

import numpy as np

from modelcore.text import PAD, UNK, Vocabulary
from services import catalog
from training import data
from training.common import (
    JobOptions,
    Timer,
    log,
    plot_curves,
    read_history,
    resumable_callbacks,
    seed_everything,
    write_json,
)
from training.export import ort_session, parity, staging_dir, tensor_meta, to_onnx, write_version

NAME = "textgen"
SEQ = 100


def build(vocab_size: int, dim: int, units: int):
    import keras
    from keras import layers
    tok = keras.Input((None,), dtype="int64", name="tokens")
    emb = layers.Embedding(vocab_size, dim, name="embedding")
    lstm = layers.LSTM(units, return_sequences=True, name="lstm")
    head = layers.Dense(vocab_size, name="head")
    return keras.Model(tok, head(lstm(emb(tok))), name="char_lstm")


def step_model(model, units: int):
    """One decoding step from the trained layers: explicit (h, c) in and out, no ONNX Loop."""
    import keras
    from keras import layers
    emb, lstm, head = model.get_layer("embedding"), model.get_layer("lstm"), model.get_layer("head")
    tok = keras.Input((), dtype="int64", name="token")
    h = keras.Input((units,), name="h")
    c = keras.Input((units,), name="c")
    out, (h2, c2) = lstm.cell(emb(tok), [h, c])
    return keras.Model([tok, h, c], [layers.Identity(name="logits")(head(out)),
                                     layers.Identity(name="h_out")(h2), layers.Identity(name="c_out")(c2)])


def windows(ids: np.ndarray, seq: int, stride: int):
    n = (len(ids) - 1 - seq) // stride
    starts = np.arange(n) * stride
    x = np.stack([ids[s:s + seq] for s in starts])
    y = np.stack([ids[s + 1:s + seq + 1] for s in starts])
    return x, y


def sample(char_model, prompts: list[str], n: int, temperature: float, seed: int) -> list[str]:
    """Sample with the serving code itself (scheduler + sampling jobs over the exported step graph)."""
    from modelcore.scheduler import Scheduler
    jobs = [char_model.job(p, n, temperature, 0, 1.0, seed + i) for i, p in enumerate(prompts)]
    Scheduler().run_until_done(jobs)
    return [p + char_model.text(j.tokens) for p, j in zip(prompts, jobs, strict=False)]


def run(opts: JobOptions) -> dict:
    import keras
    import tensorflow as tf

    seed_everything(opts.seed)
    ds = data.load_shakespeare()
    train_text, val_text, test_text = ds["train"], ds["validation"], ds["test"]
    dim, units = (16, 32) if opts.quick else (64, 384)
    if opts.quick:
        train_text, val_text, test_text = train_text[:60000], val_text[:10000], test_text[:10000]
    chars = sorted({ch for ch in train_text})
    vocab = Vocabulary([PAD, UNK] + chars, kind="char")
    enc = lambda s: np.array(vocab.encode(list(s)), dtype=np.int64)  # noqa: E731
    xtr, ytr = windows(enc(train_text), SEQ, SEQ)
    xva, yva = windows(enc(val_text), SEQ, SEQ)
    xte, yte = windows(enc(test_text), SEQ, SEQ)
    epochs = opts.epochs or (1 if opts.quick else 4)
    run_dir, rep = opts.family_run_dir(), opts.family_report_dir(NAME if not opts.quick else f"{NAME}-quick")
    model = build(len(vocab), dim, units)
    model.compile(optimizer=keras.optimizers.Adam(2e-3, clipnorm=1.0),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    log(f"textgen: {len(train_text)} train chars ({len(xtr)} windows of {SEQ}), vocab {len(vocab)}, "
        f"LSTM {units}, {epochs} epochs")
    with Timer() as t:
        model.fit(xtr, ytr, validation_data=(xva, yva), epochs=epochs, batch_size=64, shuffle=True,
                  callbacks=resumable_callbacks(run_dir) + [keras.callbacks.ReduceLROnPlateau(patience=1, factor=0.5)],
                  verbose=2 if opts.quick else 1)
    test_loss = float(model.evaluate(xte, yte, batch_size=128, verbose=0))
    bpc = test_loss / np.log(2)
    log(f"textgen: held-out bits per char {bpc:.3f}, trained in {t.seconds:.0f}s")

    smodel = step_model(model, units)
    stage = staging_dir()
    vocab.save(stage / "vocab.json")
    onnx_path = to_onnx(smodel, [tf.TensorSpec((None,), tf.int64, name="token"),
                                 tf.TensorSpec((None, units), tf.float32, name="h"),
                                 tf.TensorSpec((None, units), tf.float32, name="c")], stage / "step.onnx")
    rng = np.random.default_rng(opts.seed)
    feeds = [{"token": rng.integers(2, len(vocab), n).astype(np.int64),
              "h": rng.normal(0, 0.5, (n, units)).astype(np.float32),
              "c": rng.normal(0, 0.5, (n, units)).astype(np.float32)} for n in (1, 4, 33)]

    def keras_fn(f):
        lg, h, c = smodel([tf.constant(f["token"]), tf.constant(f["h"]), tf.constant(f["c"])], training=False)
        return {"logits": lg.numpy(), "h_out": h.numpy(), "c_out": c.numpy()}
    par = parity(keras_fn, onnx_path, feeds, ["logits", "h_out", "c_out"])
    sess = ort_session(onnx_path)
    inputs, outputs = tensor_meta(sess)
    from modelcore.textgen import CharModel
    char_model = CharModel({"name": NAME, "preprocessing": {"vocabulary": "vocab.json", "state": {"h": units},
                                                            "banned_ids": [vocab.pad_id, vocab.unk_id]}}, stage, sess)
    prompts = ["ROMEO:\n", "To be, or not to be", "KING HENRY:\nMy lords, "]
    samples = sample(char_model, prompts, 80 if opts.quick else 400, 0.7, opts.seed)
    known = set(re.findall(r"[a-z]+", train_text.lower()))
    words = [w for s in samples for w in re.findall(r"[a-z]+", s.lower())]
    real_share = float(np.mean([w in known for w in words])) if words else 0.0
    (rep / "samples.txt").write_text("\n\n-----\n\n".join(samples) + "\n", "utf-8")
    log(f"textgen: real-word share at T=0.7: {real_share:.3f}\n{samples[0]}")
    hist = read_history(run_dir)
    plot_curves(hist, rep / "curves.png", "Char LSTM (Shakespeare)")
    metrics = {"test_bits_per_char": round(bpc, 4), "test_chars": int(xte.size), "real_word_share_t07": real_share,
               "train_seconds": round(t.seconds, 1), "epochs": len(hist.get("loss", [])) or epochs}
    write_json(rep / "metrics.json", metrics)
    manifest = {
        "task": catalog.BY_NAME[opts.family].task,
        "description": f"character-level LSTM({units}) on 38 Shakespeare plays; step graph with explicit state",
        "graphs": {"step": {"file": "step.onnx", "inputs": inputs, "outputs": outputs}},
        "preprocessing": {"tokenizer": "characters", "vocabulary": "vocab.json", "state": {"h": units, "c": units},
                          "pad_id": vocab.pad_id, "unk_id": vocab.unk_id, "banned_ids": [vocab.pad_id, vocab.unk_id]},
        "batching": {"max_batch_size": 64, "max_queue_delay_ms": 1},
        "metrics": metrics,
        "data": ds["provenance"],
        "training": {"command": opts.command, "seed": opts.seed, "epochs": metrics["epochs"], "batch_size": 64,
                     "sequence_length": SEQ, "optimizer": "adam 2e-3 clipnorm 1", "quick": opts.quick},
        "parity": par,
    }
    final = write_version(opts.out, NAME, stage, manifest, opts.version)
    return {"path": final, "metrics": metrics}
