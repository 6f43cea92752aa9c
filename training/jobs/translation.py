"""English->German translation: an LSTM seq2seq with attention and a small Transformer, sharing one word-level
tokenization, trained on the Ding dictionary's sentence pairs (plus its short phrase pairs as extra data).

Each model is exported as an encoder graph and a decoder *step* graph (explicit LSTM state / key-value
cache), evaluated with sacrebleu on the held-out sentence pairs using the same decoding code as the
service (``services.translation.engine``), and written with ``test.tsv`` so BLEU can be recomputed through
the API. Bars: BLEU >= 15 (transformer), >= 10 (seq2seq).
"""
from __future__ import annotations

import numpy as np

from services.runtime.text import BOS, EOS, PAD, UNK, Vocabulary, word_tokens
from services.translation.engine import TranslationModel, translate_batch
from training import data
from training.common import (JobOptions, Timer, log, plot_curves, read_history, resumable_callbacks,
                             seed_everything, write_json)
from training.export import parity, staging_dir, tensor_meta, to_onnx, ort_session, write_version

MAX_TOKENS = 40
BARS = {"translation_transformer": 15.0, "translation_seq2seq": 10.0}


def make_batches(src, tgt, batch_size, seed):
    """Length-bucketed batches (little padding), shuffled per epoch by the dataset."""
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            order = np.argsort([len(s) + 0.01 * len(t) for s, t in zip(src, tgt)], kind="stable")
            self.batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
            self.perm = np.random.default_rng(seed).permutation(len(self.batches))
            self.epoch = 0

        def __len__(self):
            return len(self.batches)

        def on_epoch_end(self):
            self.epoch += 1
            self.perm = np.random.default_rng(seed + self.epoch).permutation(len(self.batches))

        def __getitem__(self, i):
            idx = self.batches[self.perm[i]]
            s = max(len(src[j]) for j in idx)
            t = max(len(tgt[j]) for j in idx) + 1
            xs = np.zeros((len(idx), s), np.int64)
            xt = np.zeros((len(idx), t), np.int64)
            yt = np.zeros((len(idx), t), np.int64)
            for r, j in enumerate(idx):
                xs[r, : len(src[j])] = src[j]
                seq = tgt[j]
                xt[r, : len(seq) + 1] = [BOS_ID] + seq
                yt[r, : len(seq) + 1] = seq + [EOS_ID]
            return (xs, xt), yt

    return Batches()


BOS_ID, EOS_ID = 2, 3


def run(opts: JobOptions) -> dict:
    import keras

    seed_everything(opts.seed)
    ds = data.load_de_en(opts.seed)
    rng = np.random.default_rng(opts.seed)
    train = list(ds["train"])
    n_phr = 2000 if opts.quick else 40000
    phrases = [ds["phrases"][i] for i in rng.choice(len(ds["phrases"]), n_phr, replace=False)]
    if opts.quick:
        train = train[:1500]
    pairs = train * (1 if opts.quick else 2) + phrases  # sentences count twice: they are what is evaluated
    src_tok = [word_tokens(e)[:MAX_TOKENS] for e, _ in pairs]
    tgt_tok = [word_tokens(d)[:MAX_TOKENS] for _, d in pairs]
    # 6k words a side keeps both models (embeddings + output layer dominate) inside the repository's size budget
    vsize = (3000, 3000) if opts.quick else (6000, 6000)
    src_vocab = Vocabulary.build(src_tok, vsize[0], min_count=1 if opts.quick else 3, specials=(PAD, UNK, BOS, EOS))
    tgt_vocab = Vocabulary.build(tgt_tok, vsize[1], min_count=1 if opts.quick else 3, specials=(PAD, UNK, BOS, EOS))
    assert (tgt_vocab.bos_id, tgt_vocab.eos_id) == (BOS_ID, EOS_ID)
    src_ids = [src_vocab.encode(t) for t in src_tok]
    tgt_ids = [tgt_vocab.encode(t) for t in tgt_tok]
    test = ds["test"][:200] if opts.quick else ds["test"]
    val = ds["validation"][:100] if opts.quick else ds["validation"]
    log(f"translation: {len(pairs)} training pairs ({len(train)} sentences x2, {len(phrases)} phrases), "
        f"vocab en {len(src_vocab)} / de {len(tgt_vocab)}, test {len(test)}")
    results = {}
    for name in ("translation_transformer", "translation_seq2seq"):
        if opts.models and name.split("_", 1)[1] not in opts.models:
            continue
        results[name] = _train_one(name, opts, src_vocab, tgt_vocab, src_ids, tgt_ids, val, test, ds, keras)
    return results


def _train_one(name, opts, src_vocab, tgt_vocab, src_ids, tgt_ids, val, test, ds, keras):
    import sacrebleu
    import tensorflow as tf

    from training.jobs.translation_models import Seq2Seq, Transformer, seq2seq_graphs, transformer_graphs

    seed_everything(opts.seed)
    kind = name.split("_", 1)[1]
    run_dir = opts.family_run_dir(name)
    rep = opts.family_report_dir(name if not opts.quick else f"{name}-quick")
    if kind == "transformer":
        cfg = dict(d=32, heads=2, d_ff=64, layers_n=1) if opts.quick else dict(d=128, heads=4, d_ff=512, layers_n=3)
        # 15k sentence pairs overfit quickly (v1 with dropout 0.1: train loss 1.8, validation 4.7)
        model = Transformer(len(src_vocab), len(tgt_vocab), max_len=MAX_TOKENS + 2, dropout=0.3, **cfg)
        lr = 5e-4
    else:
        cfg = dict(emb=16, units=32) if opts.quick else dict(emb=128, units=256)
        model = Seq2Seq(len(src_vocab), len(tgt_vocab), dropout=0.3, **cfg)
        lr = 2e-3
    epochs = opts.epochs or (1 if opts.quick else (10 if kind == "transformer" else 10))
    batches = make_batches(src_ids, tgt_ids, 64 if opts.quick else 128, opts.seed)
    val_src = [src_vocab.encode(word_tokens(e)[:MAX_TOKENS]) for e, _ in val]
    val_tgt = [tgt_vocab.encode(word_tokens(d)[:MAX_TOKENS]) for _, d in val]
    val_batches = make_batches(val_src, val_tgt, 128, opts.seed)
    model.compile(optimizer=keras.optimizers.Adam(lr, clipnorm=1.0),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0))
    model(batches[0][0])
    log(f"{name}: {model.count_params():,} parameters, {epochs} epochs of {len(batches)} batches")
    with Timer() as t:
        model.fit(batches, validation_data=val_batches, epochs=epochs, verbose=2 if opts.quick else 1,
                  callbacks=resumable_callbacks(run_dir) + [
                      keras.callbacks.ReduceLROnPlateau(patience=1, factor=0.5),
                      keras.callbacks.EarlyStopping(patience=2, restore_best_weights=True)])
    log(f"{name}: trained in {t.seconds:.0f}s")

    stage = staging_dir()
    src_vocab.save(stage / "vocab.src.json")
    tgt_vocab.save(stage / "vocab.tgt.json")
    enc, dec = (transformer_graphs if kind == "transformer" else seq2seq_graphs)(model)
    enc_specs = [tf.TensorSpec((None, None), tf.int64, name="src")]
    to_onnx(enc, enc_specs, stage / "encoder.onnx")
    if kind == "transformer":
        d = cfg["d"]
        dec_specs = ([tf.TensorSpec((None,), tf.int64, name="token"), tf.TensorSpec((None,), tf.int64, name="position"),
                      tf.TensorSpec((None, None, d), tf.float32, name="memory"),
                      tf.TensorSpec((None, None), tf.float32, name="memory_mask"),
                      tf.TensorSpec((None, None), tf.float32, name="cache_mask")]
                     + [tf.TensorSpec((None, None, d), tf.float32, name=f"cache_{k}{i}")
                        for i in range(cfg["layers_n"]) for k in "kv"])
    else:
        u = cfg["units"]
        dec_specs = [tf.TensorSpec((None,), tf.int64, name="token"), tf.TensorSpec((None, u), tf.float32, name="h"),
                     tf.TensorSpec((None, u), tf.float32, name="c"),
                     tf.TensorSpec((None, None, u), tf.float32, name="memory"),
                     tf.TensorSpec((None, None), tf.float32, name="memory_mask")]
    to_onnx(dec, dec_specs, stage / "decoder.onnx")

    # parity: encoder on padded batches; decoder on random states of several batch sizes and cache lengths
    rng = np.random.default_rng(opts.seed)
    enc_out = [o.name for o in ort_session(stage / "encoder.onnx").get_outputs()]
    enc_feeds = []
    for n, s in ((1, 5), (3, 9), (8, 17)):
        x = rng.integers(4, len(src_vocab), (n, s)).astype(np.int64)
        x[0, s - 2:] = 0  # a padded row
        enc_feeds.append({"src": x})
    enc_par = parity(lambda f: dict(zip(enc_out, [o.numpy() for o in enc(tf.constant(f["src"]), training=False)])),
                     stage / "encoder.onnx", enc_feeds, enc_out)
    dec_in = [s.name for s in dec_specs]
    dec_out = [o.name for o in ort_session(stage / "decoder.onnx").get_outputs()]
    dec_feeds = []
    for n, s, tc in ((1, 4, 0), (5, 7, 3), (16, 11, 6)):
        f = {}
        for spec in dec_specs:
            shape = [n if i == 0 else (s if spec.name.startswith("memory") else tc) if dim is None else dim
                     for i, dim in enumerate(spec.shape)]
            if spec.name == "token":
                f[spec.name] = rng.integers(4, len(tgt_vocab), n).astype(np.int64)
            elif spec.name == "position":
                f[spec.name] = np.full(n, tc, np.int64)
            elif spec.name.endswith("mask"):
                f[spec.name] = np.ones(shape, np.float32)
                if shape[1] > 1:
                    f[spec.name][0, -1] = 0.0
            else:
                f[spec.name] = rng.normal(0, 0.5, shape).astype(np.float32)
        dec_feeds.append(f)

    def dec_keras(f):
        outs = dec([tf.constant(f[k]) for k in dec_in], training=False)
        return dict(zip(dec_out, [o.numpy() for o in outs]))
    dec_par = parity(dec_keras, stage / "decoder.onnx", dec_feeds, dec_out)

    pre = {"architecture": kind, "tokenizer": "word_tokens (cased words and punctuation)",
           "source_vocabulary": "vocab.src.json", "target_vocabulary": "vocab.tgt.json",
           "source_language": "en", "target_language": "de",
           "max_source_tokens": MAX_TOKENS, "max_target_tokens": MAX_TOKENS + 10,
           "special_tokens": {"pad": 0, "unk": 1, "bos": BOS_ID, "eos": EOS_ID}, "config": cfg}
    if kind == "transformer":  # learned positions: the decoder cannot step past its table
        pre["max_positions"] = MAX_TOKENS + 2
    manifest_stub = {"preprocessing": pre}
    tm = TranslationModel(manifest_stub, stage, ort_session(stage / "encoder.onnx"), ort_session(stage / "decoder.onnx"))
    srcs = [e for e, _ in test]
    refs = [d for _, d in test]
    with Timer() as tg:
        greedy = translate_batch(tm, srcs, beam_size=1)
    with Timer() as tb:
        beam = translate_batch(tm, srcs, beam_size=4)
    bleu_g = sacrebleu.corpus_bleu(greedy, [refs]).score
    bleu_b = sacrebleu.corpus_bleu(beam, [refs]).score
    chrf = sacrebleu.corpus_chrf(beam, [refs]).score
    log(f"{name}: BLEU greedy {bleu_g:.2f}, beam4 {bleu_b:.2f}, chrF {chrf:.1f} (bar {BARS[name]}); "
        f"decode {tg.seconds:.1f}s / {tb.seconds:.1f}s for {len(srcs)} sentences")
    with open(stage / "test.tsv", "w", encoding="utf-8") as f:
        for e, dd in test:
            f.write(f"{e}\t{dd}\n")
    samples = [{"en": s, "de_reference": r, "greedy": g, "beam4": b}
               for s, r, g, b in list(zip(srcs, refs, greedy, beam))[:25]]
    write_json(rep / "samples.json", samples)
    hist = read_history(run_dir)
    plot_curves(hist, rep / "curves.png", f"{name} (cross-entropy per target token)")
    metrics = {"bleu_beam4": round(bleu_b, 2), "bleu_greedy": round(bleu_g, 2), "chrf_beam4": round(chrf, 2),
               "test_pairs": len(test), "bleu_tool": f"sacrebleu {sacrebleu.__version__} corpus_bleu default (13a)",
               "bar": {"bleu": BARS[name]}, "meets_bar": max(bleu_b, bleu_g) >= BARS[name],
               "parameters": int(model.count_params()), "train_seconds": round(t.seconds, 1),
               "epochs": len(hist.get("loss", [])) or epochs,
               "decode_seconds": {"greedy": round(tg.seconds, 2), "beam4": round(tb.seconds, 2)}}
    write_json(rep / "metrics.json", metrics)
    eo = ort_session(stage / "encoder.onnx")
    do = ort_session(stage / "decoder.onnx")
    ei, eout = tensor_meta(eo)
    di, dout = tensor_meta(do)
    manifest = {
        "task": "translation",
        "description": f"English->German {kind} ({', '.join(f'{k}={v}' for k, v in cfg.items())}); "
                       "encoder + decoder step graph",
        "graphs": {"encoder": {"file": "encoder.onnx", "inputs": ei, "outputs": eout},
                   "decoder": {"file": "decoder.onnx", "inputs": di, "outputs": dout}},
        "preprocessing": pre,
        "batching": {"max_batch_size": 64, "max_queue_delay_ms": 2, "max_decoder_rows": 256},
        "metrics": metrics,
        "data": {**ds["provenance"], "test_file": "test.tsv"},
        "training": {"command": opts.command, "seed": opts.seed, "epochs": metrics["epochs"], "batch_size": 128,
                     "optimizer": f"adam {lr} clipnorm 1", "quick": opts.quick},
        "parity": {"max_abs_diff": max(enc_par["max_abs_diff"], dec_par["max_abs_diff"]),
                   "tolerance": enc_par["tolerance"], "encoder": enc_par, "decoder": dec_par},
    }
    final = write_version(opts.out, name, stage, manifest, opts.version)
    return {"path": final, "metrics": metrics}
