"""DCGAN on MNIST; the generator (latent -> 28x28x1 tanh image) is exported.

Quality is measured with the repository's own MNIST classifier (ONNX): on 1,000 samples the inception score
(exp E[KL(p(y|x) || p(y))]), the mean top-class confidence and the share of each digit.
Bars: IS >= 8.0, mean confidence >= 0.9, every digit >= 5%.
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
from training.data import REPO_ROOT
from training.export import ort_session, parity, staging_dir, tensor_meta, to_onnx, write_version

NAME = "gan"
LATENT = 100
BARS = {"inception_score": 8.0, "mean_confidence": 0.9, "min_digit_share": 0.05}


def build_generator(width=192):
    import keras
    from keras import layers
    z = keras.Input((LATENT,), name="latent")
    x = layers.Dense(7 * 7 * width, use_bias=False)(z)
    x = layers.BatchNormalization()(x)
    x = layers.LeakyReLU(0.2)(x)
    x = layers.Reshape((7, 7, width))(x)
    x = layers.Conv2DTranspose(width // 2, 5, strides=2, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.LeakyReLU(0.2)(x)
    x = layers.Conv2DTranspose(1, 5, strides=2, padding="same", activation="tanh")(x)
    return keras.Model(z, layers.Identity(name="image")(x), name="generator")


def build_discriminator(width=64):
    import keras
    from keras import layers
    img = keras.Input((28, 28, 1))
    x = layers.Conv2D(width, 5, strides=2, padding="same")(img)
    x = layers.LeakyReLU(0.2)(x)
    x = layers.Dropout(0.3)(x)
    x = layers.Conv2D(width * 2, 5, strides=2, padding="same")(x)
    x = layers.LeakyReLU(0.2)(x)
    x = layers.Dropout(0.3)(x)
    x = layers.Flatten()(x)
    return keras.Model(img, layers.Dense(1)(x), name="discriminator")


def make_gan_class():
    import keras
    import tensorflow as tf

    class DCGAN(keras.Model):
        """Generator and discriminator trained together by ``fit`` (so checkpoints and logs work as usual)."""

        def __init__(self, generator, discriminator, **kw):
            super().__init__(**kw)
            self.generator, self.discriminator = generator, discriminator
            self.g_opt = keras.optimizers.Adam(2e-4, beta_1=0.5)
            self.d_opt = keras.optimizers.Adam(2e-4, beta_1=0.5)
            self.bce = keras.losses.BinaryCrossentropy(from_logits=True)
            self.g_loss = keras.metrics.Mean(name="g_loss")
            self.d_loss = keras.metrics.Mean(name="d_loss")

        @property
        def metrics(self):
            return [self.g_loss, self.d_loss]

        def call(self, z, training=False):
            return self.generator(z, training=training)

        def train_step(self, real):
            n = tf.shape(real)[0]
            z = tf.random.normal((n, LATENT))
            with tf.GradientTape() as gt, tf.GradientTape() as dt:
                fake = self.generator(z, training=True)
                r = self.discriminator(real, training=True)
                f = self.discriminator(fake, training=True)
                g_loss = self.bce(tf.ones_like(f), f)
                # one-sided label smoothing keeps the discriminator from saturating
                d_loss = self.bce(tf.ones_like(r) * 0.9, r) + self.bce(tf.zeros_like(f), f)
            self.g_opt.apply_gradients(zip(gt.gradient(g_loss, self.generator.trainable_variables),
                                           self.generator.trainable_variables, strict=False))
            self.d_opt.apply_gradients(zip(dt.gradient(d_loss, self.discriminator.trainable_variables),
                                           self.discriminator.trainable_variables, strict=False))
            self.g_loss.update_state(g_loss)
            self.d_loss.update_state(d_loss)
            return {"g_loss": self.g_loss.result(), "d_loss": self.d_loss.result()}

    return DCGAN


def mnist_classifier_path():
    root = REPO_ROOT / "exported_models" / "mnist"
    versions = sorted((int(p.name) for p in root.glob("*") if p.name.isdigit()), reverse=True)
    return root / str(versions[0]) / "model.onnx" if versions else None


def score_samples(images01: np.ndarray, classifier_path) -> dict:
    """Inception score, mean confidence and digit shares of images in 0..1, scored by the MNIST ONNX model."""
    sess = ort_session(classifier_path)
    p = sess.run(["probabilities"], {"image": images01.astype(np.float32).reshape(-1, 28, 28, 1)})[0]
    p = np.clip(p.astype(np.float64), 1e-12, 1)
    py = p.mean(0)
    is_score = float(np.exp(np.mean(np.sum(p * (np.log(p) - np.log(py)), axis=1))))
    shares = np.bincount(p.argmax(1), minlength=10) / len(p)
    return {"inception_score": is_score, "mean_confidence": float(p.max(1).mean()),
            "digit_shares": [round(float(s), 4) for s in shares], "min_digit_share": float(shares.min()),
            "samples": int(len(p)), "classifier": str(classifier_path.relative_to(REPO_ROOT))
            if str(classifier_path).startswith(str(REPO_ROOT)) else str(classifier_path)}


def run(opts: JobOptions) -> dict:
    import keras
    import tensorflow as tf

    seed_everything(opts.seed)
    ds = data.load_mnist_5k() if opts.quick else data.load_mnist(opts.source)
    x = np.concatenate([ds["train"][0], ds["validation"][0]])
    if opts.quick:
        x = x[:512]
    x = (x.astype("float32") / 127.5 - 1.0)[..., None]
    epochs = opts.epochs or (1 if opts.quick else 15)
    run_dir, rep = opts.family_run_dir(), opts.family_report_dir(NAME if not opts.quick else f"{NAME}-quick")
    gen = build_generator(32 if opts.quick else 192)
    disc = build_discriminator(16 if opts.quick else 64)
    gan = make_gan_class()(gen, disc)
    gan.compile()
    gan(tf.zeros((1, LATENT)))
    log(f"gan: {len(x)} images, {epochs} epochs")
    fixed_z = np.random.default_rng(opts.seed).standard_normal((64, LATENT)).astype("float32")

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch % 5 == 4 or epoch == epochs - 1:
                _grid(gen(fixed_z, training=False).numpy(), rep / f"samples_epoch{epoch + 1:03d}.png")

    with Timer() as t:
        gan.fit(tf.data.Dataset.from_tensor_slices(x).shuffle(len(x), seed=opts.seed).batch(128, drop_remainder=True),
                epochs=epochs, callbacks=resumable_callbacks(run_dir) + [Snapshot()],
                verbose=2 if opts.quick else 1)
    log(f"gan: trained in {t.seconds:.0f}s")

    stage = staging_dir()
    onnx_path = to_onnx(gen, [tf.TensorSpec((None, LATENT), tf.float32, name="latent")], stage / "generator.onnx")
    rng = np.random.default_rng(opts.seed + 1)
    feeds = [{"latent": rng.standard_normal((n, LATENT)).astype("float32")} for n in (1, 5, 64)]
    par = parity(lambda f: {"image": gen(tf.constant(f["latent"]), training=False).numpy()}, onnx_path, feeds,
                 ["image"])
    sess = ort_session(onnx_path)
    inputs, outputs = tensor_meta(sess)
    z = np.random.default_rng(2024).standard_normal((1000, LATENT)).astype("float32")
    imgs = (sess.run(["image"], {"latent": z})[0] + 1.0) / 2.0
    clf = mnist_classifier_path()
    quality = score_samples(imgs, clf) if clf else {"note": "no MNIST classifier in the repository to score with"}
    quality["meets_bar"] = bool(clf) and (quality["inception_score"] >= BARS["inception_score"]
                                          and quality["mean_confidence"] >= BARS["mean_confidence"]
                                          and quality["min_digit_share"] >= BARS["min_digit_share"])
    log(f"gan: quality {quality}")
    hist = read_history(run_dir)
    plot_curves(hist, rep / "curves.png", "DCGAN losses")
    _grid(imgs[:64] * 2 - 1, rep / "samples.png")
    metrics = {**quality, "bar": BARS, "latent_seed": 2024, "train_seconds": round(t.seconds, 1),
               "epochs": len(hist.get("g_loss", [])) or epochs, "train_images": int(len(x))}
    write_json(rep / "metrics.json", metrics)
    manifest = {
        "task": catalog.BY_NAME[opts.family].task,
        "description": "DCGAN generator: latent N(0,1)^100 -> 28x28x1 image in [-1, 1] (tanh)",
        "graphs": {"generator": {"file": "generator.onnx", "inputs": inputs, "outputs": outputs}},
        "preprocessing": {"latent_dim": LATENT, "latent_distribution": "standard normal",
                          "output_range": [-1.0, 1.0], "to_uint8": "round((x + 1) * 127.5)"},
        "batching": {"max_batch_size": 64, "max_queue_delay_ms": 2},
        "metrics": metrics,
        "data": {**ds["provenance"], "used": "train + validation images"},
        "training": {"command": opts.command, "seed": opts.seed, "epochs": metrics["epochs"], "batch_size": 128,
                     "optimizer": "adam 2e-4 beta1 0.5 (both)", "quick": opts.quick},
        "parity": par,
    }
    final = write_version(opts.out, NAME, stage, manifest, opts.version)
    return {"path": final, "metrics": metrics}


def _grid(imgs, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    imgs = np.asarray(imgs).reshape(-1, 28, 28)[:64]
    n = int(np.ceil(np.sqrt(len(imgs))))
    canvas = np.zeros((n * 28, n * 28))
    for i, im in enumerate(imgs):
        r, c = divmod(i, n)
        canvas[r * 28:(r + 1) * 28, c * 28:(c + 1) * 28] = (im + 1) / 2
    plt.imsave(path, canvas, cmap="gray", vmin=0, vmax=1)
