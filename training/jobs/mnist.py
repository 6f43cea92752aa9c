"""MNIST CNN digit classifier: conv 32 5x5 -> pool -> conv 64 5x5 -> pool -> dense 1024 -> dropout 0.4 -> 10.

Exported graph: ``image`` float32 [N,28,28,1] in 0..1 (white digit on black) -> ``probabilities`` (softmax)
and ``logits``. Bar: >= 99.0% accuracy on the official 10k test set.
"""
from __future__ import annotations

import numpy as np

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

NAME = "mnist"
BAR = 0.99


def build(widths=(32, 64, 1024)):
    import keras
    from keras import layers
    inp = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(widths[0], 5, padding="same", activation="relu")(inp)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(widths[1], 5, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(widths[2], activation="relu")(x)
    x = layers.Dropout(0.4)(x)
    logits = layers.Dense(10, name="logits_dense")(x)
    return keras.Model(inp, logits, name="mnist_cnn")


def serving_model(trained):
    """The exported graph: same weights, softmax added, outputs named."""
    import keras
    from keras import layers
    inp = keras.Input((28, 28, 1), name="image")
    logits = trained(inp)
    return keras.Model(inp, [layers.Identity(name="probabilities")(layers.Softmax()(logits)),
                             layers.Identity(name="logits")(logits)])


def run(opts: JobOptions) -> dict:
    import keras
    import tensorflow as tf

    seed_everything(opts.seed)
    ds = data.load_mnist_5k() if opts.quick else data.load_mnist(opts.source)
    (xtr, ytr), (xva, yva), (xte, yte) = ds["train"], ds["validation"], ds["test"]
    if opts.quick:
        xtr, ytr = xtr[:1000], ytr[:1000]
    prep = lambda x: (x.astype("float32") / 255.0)[..., None]  # noqa: E731
    epochs = opts.epochs or (1 if opts.quick else 8)
    run_dir, rep = opts.family_run_dir(), opts.family_report_dir(NAME if not opts.quick else f"{NAME}-quick")

    model = build((8, 16, 64) if opts.quick else (32, 64, 1024))
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.summary()
    log(f"mnist: train {len(xtr)} / validation {len(xva)} / test {len(xte)}, {epochs} epochs")
    with Timer() as t:
        model.fit(prep(xtr), ytr, validation_data=(prep(xva), yva), epochs=epochs, batch_size=128,
                  callbacks=resumable_callbacks(run_dir) + [
                      keras.callbacks.ReduceLROnPlateau(patience=1, factor=0.3)], verbose=2 if opts.quick else 1)
    test_loss, test_acc = model.evaluate(prep(xte), yte, verbose=0)
    log(f"mnist: test accuracy {test_acc:.4f} (bar {BAR}), {t.seconds:.0f}s")

    smodel = serving_model(model)
    stage = staging_dir()
    onnx_path = to_onnx(smodel, [tf.TensorSpec((None, 28, 28, 1), tf.float32, name="image")],
                        stage / "model.onnx")
    feeds = [{"image": prep(xte[:n])} for n in (1, 7, 64)]

    def keras_fn(feed):
        p, lg = smodel(tf.constant(feed["image"]), training=False)
        return {"probabilities": p.numpy(), "logits": lg.numpy()}
    par = parity(keras_fn, onnx_path, feeds, ["probabilities", "logits"])
    # Accuracy of the exported graph itself, on the full test set.
    sess = ort_session(onnx_path)
    probs = np.concatenate([sess.run(["probabilities"], {"image": prep(xte[i:i + 1000])})[0]
                            for i in range(0, len(xte), 1000)])
    onnx_acc = float((probs.argmax(1) == yte).mean())
    inputs, outputs = tensor_meta(sess)
    hist = read_history(run_dir)
    plot_curves(hist, rep / "curves.png", "MNIST CNN")
    metrics = {"test_accuracy": onnx_acc, "keras_test_accuracy": float(test_acc), "test_loss": float(test_loss),
               "test_samples": int(len(xte)), "bar": {"test_accuracy": BAR}, "meets_bar": onnx_acc >= BAR,
               "train_seconds": round(t.seconds, 1), "epochs": len(hist.get("loss", [])) or epochs}
    write_json(rep / "metrics.json", metrics)
    _sample_grid(xte[:32], probs[:32].argmax(1), yte[:32], rep / "samples.png")
    # a dark-on-white test digit, larger than 28x28: what the README's curl example sends
    from PIL import Image
    Image.fromarray(255 - xte[0]).resize((140, 140)).save(rep / "digit.png")
    manifest = {
        "task": catalog.BY_NAME[opts.family].task,
        "description": "MNIST CNN (conv32-5x5, pool, conv64-5x5, pool, dense1024, dropout .4, softmax)",
        "graphs": {"model": {"file": "model.onnx", "inputs": inputs, "outputs": outputs}},
        "preprocessing": {"input": "image", "layout": "NHWC", "height": 28, "width": 28, "channels": 1,
                          "scale": 1 / 255.0, "foreground": "white on black",
                          "labels": [str(i) for i in range(10)]},
        "batching": {"max_batch_size": 64, "max_queue_delay_ms": 2},
        "metrics": metrics,
        "data": ds["provenance"],
        "training": {"command": opts.command, "seed": opts.seed, "epochs": metrics["epochs"], "batch_size": 128,
                     "optimizer": "adam 1e-3", "quick": opts.quick},
        "parity": par,
    }
    final = write_version(opts.out, NAME, stage, manifest, opts.version)
    return {"path": final, "metrics": metrics}


def _sample_grid(x, pred, y, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(4, 8, figsize=(8, 4.6))
    for ax, img, p, t in zip(axes.flat, x, pred, y, strict=False):
        ax.imshow(img, cmap="gray")
        ax.set_title(f"{p}" + ("" if p == t else f" ({t})"), color="black" if p == t else "red", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
