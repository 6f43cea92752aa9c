"""Sentiment: embedding (padding masked) -> bidirectional LSTM -> sigmoid, on 50k IMDB reviews.

Exported graph: ``tokens`` int64 [N, T] (pre-padded word ids, T dynamic) -> ``score`` float32 [N, 1] =
P(positive). The vocabulary (``vocab.json``) and the tokenizer rules live in ``modelcore.text``.
Bar: >= 87% accuracy on the held-out IMDB test split; also measured on Rotten Tomatoes snippets.
"""
from __future__ import annotations

import numpy as np

from modelcore.text import Vocabulary, pad_pre, review_tokens
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

NAME = "sentiment"
BAR = 0.87


def encode(vocab: Vocabulary, texts, max_len: int) -> np.ndarray:
    return np.array([pad_pre(vocab.encode(review_tokens(t)), max_len) for t in texts], dtype=np.int64)


def build(vocab_size: int, dim: int, units: int):
    import keras
    from keras import layers
    tok = keras.Input((None,), dtype="int64", name="tokens")
    x = layers.Embedding(vocab_size, dim, mask_zero=True)(tok)
    x = layers.Bidirectional(layers.LSTM(units))(x)
    x = layers.Dropout(0.4)(x)
    out = layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(tok, layers.Identity(name="score")(out), name="sentiment_bilstm")


def run(opts: JobOptions) -> dict:
    import keras
    import tensorflow as tf

    seed_everything(opts.seed)
    ds = data.load_imdb(opts.seed)
    (xtr, ytr), (xva, yva), (xte, yte) = ds["train"], ds["validation"], ds["test"]
    vocab_size, max_len, dim, units = (2000, 64, 16, 16) if opts.quick else (20000, 200, 64, 64)
    if opts.quick:
        xtr, ytr, xva, yva, xte, yte = xtr[:800], ytr[:800], xva[:200], yva[:200], xte[:200], yte[:200]
    vocab = Vocabulary.build((review_tokens(t) for t in xtr), vocab_size, min_count=2)
    etr, eva, ete = (encode(vocab, x, max_len) for x in (xtr, xva, xte))
    epochs = opts.epochs or (1 if opts.quick else 3)
    run_dir, rep = opts.family_run_dir(), opts.family_report_dir(NAME if not opts.quick else f"{NAME}-quick")
    model = build(len(vocab), dim, units)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="binary_crossentropy", metrics=["accuracy"])
    log(f"sentiment: train {len(etr)} / validation {len(eva)} / test {len(ete)}, vocab {len(vocab)}, "
        f"max_len {max_len}, {epochs} epochs")
    with Timer() as t:
        model.fit(etr, ytr, validation_data=(eva, yva), epochs=epochs, batch_size=64,
                  callbacks=resumable_callbacks(run_dir) + [
                      keras.callbacks.EarlyStopping(patience=1, restore_best_weights=True)],
                  verbose=2 if opts.quick else 1)
    log(f"sentiment: trained in {t.seconds:.0f}s")

    stage = staging_dir()
    vocab.save(stage / "vocab.json")
    onnx_path = to_onnx(model, [tf.TensorSpec((None, None), tf.int64, name="tokens")], stage / "model.onnx")
    feeds = [{"tokens": ete[:1]}, {"tokens": ete[:9, -40:]}, {"tokens": ete[:32]}]
    par = parity(lambda f: {"score": model(tf.constant(f["tokens"]), training=False).numpy()}, onnx_path, feeds,
                 ["score"])
    sess = ort_session(onnx_path)
    inputs, outputs = tensor_meta(sess)

    def accuracy(enc, y):
        s = np.concatenate([sess.run(["score"], {"tokens": enc[i:i + 256]})[0][:, 0] for i in range(0, len(enc), 256)])
        return float(((s >= 0.5) == (y == 1)).mean())
    test_acc = accuracy(ete, yte)
    rt_x, rt_y = data.load_rotten_tomatoes()
    if opts.quick:
        rt_x, rt_y = rt_x[:200], rt_y[:200]
    rt_acc = accuracy(encode(vocab, rt_x, max_len), rt_y)
    log(f"sentiment: IMDB test accuracy {test_acc:.4f} (bar {BAR}); Rotten Tomatoes {rt_acc:.4f}")
    hist = read_history(run_dir)
    plot_curves(hist, rep / "curves.png", "Sentiment BiLSTM (IMDB)")
    metrics = {"test_accuracy": test_acc, "test_samples": int(len(ete)), "bar": {"test_accuracy": BAR},
               "meets_bar": test_acc >= BAR, "rotten_tomatoes_accuracy": rt_acc,
               "rotten_tomatoes_samples": int(len(rt_y)), "train_seconds": round(t.seconds, 1),
               "epochs": len(hist.get("loss", [])) or epochs}
    write_json(rep / "metrics.json", metrics)
    manifest = {
        "task": catalog.BY_NAME[opts.family].task,
        "description": "IMDB sentiment: embedding (mask_zero) -> bidirectional LSTM -> sigmoid P(positive)",
        "graphs": {"model": {"file": "model.onnx", "inputs": inputs, "outputs": outputs}},
        "preprocessing": {"tokenizer": "review_tokens", "vocabulary": "vocab.json", "max_length": max_len,
                          "padding": "pre", "truncation": "keep last tokens", "pad_id": 0, "unk_id": 1,
                          "labels": ["negative", "positive"], "threshold": 0.5},
        "batching": {"max_batch_size": 32, "max_queue_delay_ms": 2},
        "metrics": metrics,
        "data": {**ds["provenance"], "out_of_domain": data.provenance("rotten_tomatoes")},
        "training": {"command": opts.command, "seed": opts.seed, "epochs": metrics["epochs"], "batch_size": 64,
                     "optimizer": "adam 2e-3", "quick": opts.quick},
        "parity": par,
    }
    final = write_version(opts.out, NAME, stage, manifest, opts.version)
    return {"path": final, "metrics": metrics}
