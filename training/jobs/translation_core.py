"""What training an English->German model needs with Keras and NumPy alone (no TensorFlow, no export tools):
sizes, batches, the learning-rate schedule, the model and the loss. The CPU job (``translation``) and the GPU
route (``training.translation_gpu``, Keras on JAX) share them, so both train the same thing.
"""
from __future__ import annotations

import numpy as np

MAX_TOKENS = 64  # subword pieces a side; longer training pairs are dropped, longer inputs cut
POSITIONS = 2 * MAX_TOKENS + 2  # the Transformer's learned position table (source cut to 64, target up to 128)
CONFIGS = {
    "transformer": dict(d=128, heads=4, d_ff=512, layers_n=3),
    "seq2seq": dict(emb=128, units=256),
}
PEAK_LR = {"transformer": 1e-3, "seq2seq": 2e-3}
WARMUP_STEPS = 800
TOKENS_PER_BATCH = 2500  # target tokens a batch (padding included)
LABEL_SMOOTHING = 0.1


def epoch_batches(lengths: np.ndarray, epoch: int, seed: int, budget: int) -> list[np.ndarray]:
    """One pass as batches of about ``budget`` target tokens: shuffled, bucketed by length within pools."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    batches = []
    for p in range(0, len(order), 20_000):
        pool = order[p:p + 20_000]
        pool = pool[np.argsort(lengths[pool], kind="stable")]
        start = 0
        while start < len(pool):
            longest = lengths[pool[start]]
            end = start + 1
            while end < len(pool) and (end - start + 1) * max(longest, lengths[pool[end]]) <= budget:
                longest = max(longest, lengths[pool[end]])
                end += 1
            batches.append(pool[start:end])
            start = end
    return [batches[i] for i in rng.permutation(len(batches))]


def make_arrays(src: list[list[int]], tgt: list[list[int]], idx, bos: int, eos: int):
    s = max(len(src[j]) for j in idx)
    t = max(len(tgt[j]) for j in idx) + 1
    xs = np.zeros((len(idx), s), np.int64)
    xt = np.zeros((len(idx), t), np.int64)
    yt = np.zeros((len(idx), t), np.int64)
    for r, j in enumerate(idx):
        xs[r, :len(src[j])] = src[j]
        xt[r, :len(tgt[j]) + 1] = [bos] + tgt[j]
        yt[r, :len(tgt[j]) + 1] = tgt[j] + [eos]
    return xs, xt, yt


def warmup_inverse_sqrt(peak: float, warmup: int):
    import keras

    class Schedule(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            step = keras.ops.maximum(keras.ops.cast(step, "float32"), 1.0)
            return peak * keras.ops.minimum(step / warmup, keras.ops.sqrt(warmup / step))

        def get_config(self):
            return {"peak": peak, "warmup": warmup}
    return Schedule()


def build_model(kind: str, vocab: int, cfg: dict, dropout: float):
    """The model, built (its weights made, so a checkpoint can load into it)."""
    from training.jobs.translation_models import Seq2Seq, Transformer
    if kind == "transformer":
        model = Transformer(vocab, max_len=POSITIONS, dropout=dropout, **cfg)
    else:
        model = Seq2Seq(vocab, dropout=dropout, **cfg)
    model((np.zeros((1, 4), np.int64), np.zeros((1, 4), np.int64)))
    return model


def make_optimizer(model, peak: float, warmup: int):
    """Adam as every backend trains with it, built for ``model`` (its state then has one fixed order, which
    checkpoints keep and ``restore_optimizer`` reads back on any backend)."""
    import keras
    optimizer = keras.optimizers.Adam(warmup_inverse_sqrt(peak, warmup), beta_2=0.98, epsilon=1e-9, clipnorm=1.0)
    optimizer.build(model.trainable_variables)
    return optimizer


def restore_optimizer(optimizer, files: list) -> bool:
    """Adam's state from ``files`` (one ``np.savez`` of every optimizer variable in order, or its parts in
    order), when it matches this optimizer's variables one for one."""
    values = [part[k] for f in files for part in [np.load(f)] for k in sorted(part.files, key=lambda k: int(k[4:]))]
    if not values or len(values) != len(optimizer.variables) or any(
            tuple(v.shape) != tuple(x.shape) for v, x in zip(optimizer.variables, values, strict=False)):
        return False
    for var, value in zip(optimizer.variables, values, strict=False):
        var.assign(value)
    return True


def smoothed_loss(logits, labels):
    """Label-smoothed cross-entropy per real target token (padding, id 0, excluded) -> (that loss, the plain
    cross-entropy per token, the number of real tokens)."""
    from keras import ops
    labels = ops.cast(labels, "int32")  # Keras's fit hands a loss its labels as floats
    logp = ops.log_softmax(logits, axis=-1)
    nll = -ops.squeeze(ops.take_along_axis(logp, ops.expand_dims(labels, -1), axis=-1), -1)
    uniform = -ops.mean(logp, axis=-1)
    mask = ops.cast(ops.not_equal(labels, 0), logp.dtype)
    per_token = (1 - LABEL_SMOOTHING) * nll + LABEL_SMOOTHING * uniform
    n = ops.sum(mask)
    return ops.sum(per_token * mask) / n, ops.sum(nll * mask) / n, n
