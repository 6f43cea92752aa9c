"""English->German translation: a Transformer and a bidirectional-LSTM seq2seq with attention, over one shared
SentencePiece vocabulary, trained on the Debian corpus (``training.mt_corpus``).

Training runs for hours on CPU, in stretches: weights, optimizer state, the data position and the step
count are checkpointed every ``--checkpoint-minutes`` to ``$MT_CACHE/runs/<model>`` (outside the work tree),
and a new run resumes from there. ``--stretch-minutes M`` ends a stretch after M minutes; then (or when
the planned passes are done, or with ``--export-now``) the model is exported, decoded on the held-out test
with the service's own decoding code, and published as a new version only when it beats the newest shipped
version of the same model on the held-out test (BLEU and chrF).

``--quick`` (tests): Ding's pairs only, a small vocabulary and model, a few steps, always published.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from modelcore.manifest import load_and_verify
from modelcore.text import SubwordTokenizer
from modelcore.translation import TranslationModel, translate_batch
from services import catalog
from training import mt_corpus
from training.common import JobOptions, Timer, log, seed_everything, write_json
from training.export import ort_session, parity, staging_dir, tensor_meta, to_onnx, write_version
from training.jobs.translation_core import (
    CONFIGS,
    LABEL_SMOOTHING,
    MAX_TOKENS,
    PEAK_LR,
    POSITIONS,
    TOKENS_PER_BATCH,
    WARMUP_STEPS,
    build_model,
    epoch_batches,
    make_arrays,
    make_optimizer,
    restore_optimizer,
    smoothed_loss,
)

EVERYDAY_REPEATS = 3  # a new run's mix, and the one of checkpoints and stretches that record none
BARS = {"translation_transformer": 20.0, "translation_seq2seq": 12.0}
QUICK_CONFIGS = {"transformer": dict(d=32, heads=2, d_ff=64, layers_n=1), "seq2seq": dict(emb=16, units=32)}
PAUSED_AFTER = 60.0  # a step takes about half a second: a longer gap is a pause, not training
# the weights exported are the mean of the last checkpoints' when that lowers validation loss (Vaswani et al.
# averaged the last 5 checkpoints, written every 10 minutes); training itself resumes from the last one
AVERAGE_LAST = 5
# what a new user types first: translated in every report (no references; the held-out test has those)
EVERYDAY = ["Where is the station?", "I would like a cup of coffee.", "The weather is nice today.",
            "How much does this cost?", "Thank you very much for your help.", "Good morning, how are you?",
            "Can you help me, please?", "I don't understand.", "What time is it?", "My name is Anna.",
            "The train is late again.", "We are going to the cinema tonight.", "I have lost my keys.",
            "Please close the window.", "The children are playing in the garden.", "Do you speak English?",
            "I am very tired.", "This book is very interesting.", "Where can I buy a ticket?",
            "The shop opens at nine o'clock.", "She works in a hospital.", "I will call you tomorrow.",
            "The file could not be saved.", "Please restart the computer.", "This program is free software.",
            "Open the settings and choose a language.", "The meeting has been cancelled.",
            "It is raining outside.", "I would like to book a room for two nights.", "Have a nice weekend!"]


# ------------------------------------------------------------------------------------------ data
def load_corpus(quick: bool) -> dict:
    """{'train'|'validation'|'test': [(en, de, domain)], 'provenance': {...}}."""
    if quick:  # the Ding package alone: what CI can fetch in seconds
        from training import data
        pairs = [(e, d, "everyday") for e, d, _ in mt_corpus.ding_pairs(data.fetch("de_en"))
                 if mt_corpus.keep_pair(e, d) and mt_corpus.sentence_like(e, d)]
        pairs = sorted(set(pairs))
        np.random.default_rng(0).shuffle(pairs)
        return {"test": pairs[:100], "validation": pairs[100:200], "train": pairs[200:3200],
                "provenance": {**data.provenance("de_en"), "quick": True}}
    root = mt_corpus.corpus_dir()
    if not (root / "train.tsv").exists():
        mt_corpus.build()
    out = {}
    for split in ("train", "validation", "test"):
        with open(root / f"{split}.tsv", encoding="utf-8") as f:
            out[split] = [tuple(line.rstrip("\n").split("\t")[:3]) for line in f]
    out["provenance"] = json.loads((root / "provenance.json").read_text("utf-8"))
    return out


def tokenizer_for(run_dir: Path, train: list, quick: bool) -> SubwordTokenizer:
    """The run's SentencePiece model, trained once on the training split and kept with the checkpoints."""
    path = run_dir.parent / "spm.model"
    if not path.exists():
        lines = [s for e, d, _ in train for s in (e, d)]
        SubwordTokenizer.train(lines, run_dir.parent / "spm", 500 if quick else 8000)
    return SubwordTokenizer(path)


# ------------------------------------------------------------------------------------------ training
class Checkpoint:
    """Weights, optimizer variables and loop state in one folder, replaced atomically; the weights of the last
    ``AVERAGE_LAST`` checkpoints are kept as well (``snapshots/``), for averaging."""

    def __init__(self, run_dir: Path):
        self.dir = run_dir / "checkpoint"
        self.snapshots = run_dir / "snapshots"

    def exists(self) -> bool:
        return (self.dir / "state.json").exists()

    def save(self, model, optimizer, state: dict) -> None:
        tmp = self.dir.with_name("checkpoint.tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        model.save_weights(str(tmp / "model.weights.h5"))
        np.savez(tmp / "optimizer.npz", *[v.numpy() for v in optimizer.variables])
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
        old = self.dir.with_name("checkpoint.old")
        if self.dir.exists():
            self.dir.rename(old)
        tmp.rename(self.dir)
        if old.exists():
            shutil.rmtree(old)
        self.snapshots.mkdir(exist_ok=True)
        shutil.copy(self.dir / "model.weights.h5", self.snapshots / f"step-{state['step']:08d}.weights.h5")
        for stale in self.snapshot_files()[:-AVERAGE_LAST]:
            stale.unlink()

    def snapshot_files(self) -> list[Path]:
        return sorted(self.snapshots.glob("step-*.weights.h5")) if self.snapshots.exists() else []

    def average_into(self, model) -> int:
        """Set ``model``'s weights to the mean of the kept snapshots; -> how many were averaged."""
        files = self.snapshot_files()
        total = None
        for f in files:
            model.load_weights(str(f))
            weights = model.get_weights()
            total = weights if total is None else [t + w for t, w in zip(total, weights, strict=False)]
        if total:
            model.set_weights([t / len(files) for t in total])
        return len(files)

    def load(self, model, optimizer) -> None:
        """The saved weights and optimizer state into ``model`` and ``optimizer`` (the loop state: ``state``)."""
        model.load_weights(str(self.dir / "model.weights.h5"))
        if not restore_optimizer(optimizer, [self.dir / "optimizer.npz"]):
            raise RuntimeError(f"the optimizer state in {self.dir} does not match the model")

    def state(self) -> dict:
        """The loop state saved last, or a new run's."""
        if not self.exists():
            return {"epoch": 0, "batch": 0, "step": 0, "target_tokens": 0, "train_seconds": 0.0, "stretches": []}
        return json.loads((self.dir / "state.json").read_text())


def encode_splits(ds: dict, tok: SubwordTokenizer, everyday_repeats: int) -> tuple[list, list, list, list]:
    """-> training sources and targets as piece ids (everyday pairs repeated, since Ding's everyday sentences
    are the scarcest and the ones users type first; pairs over ``MAX_TOKENS`` pieces dropped), and the
    validation split's (cut to ``MAX_TOKENS``)."""
    rows = [r for r in ds["train"] for _ in range(everyday_repeats if r[2] == "everyday" else 1)]
    src, tgt = tok.encode_many([r[0] for r in rows]), tok.encode_many([r[1] for r in rows])
    keep = [i for i in range(len(src)) if 0 < len(src[i]) <= MAX_TOKENS and 0 < len(tgt[i]) <= MAX_TOKENS]
    val_src = [s[:MAX_TOKENS] for s in tok.encode_many([r[0] for r in ds["validation"]])]
    val_tgt = [t[:MAX_TOKENS] for t in tok.encode_many([r[1] for r in ds["validation"]])]
    return [src[i] for i in keep], [tgt[i] for i in keep], val_src, val_tgt


def train(kind: str, opts: JobOptions, run_dir: Path, ds: dict, tok: SubwordTokenizer, stretch_minutes: float | None,
          checkpoint_minutes: float, passes: int):
    """Train (resuming from the checkpoint if there is one); return the model and its history rows."""
    import keras
    import tensorflow as tf

    cfg = (QUICK_CONFIGS if opts.quick else CONFIGS)[kind]
    ckpt = Checkpoint(run_dir)
    state = ckpt.state()
    trained_on = state.setdefault("everyday_repeats", EVERYDAY_REPEATS)
    repeats = trained_on if opts.everyday_repeats is None else opts.everyday_repeats  # default: keep the mix
    src, tgt, val_src, val_tgt = encode_splits(ds, tok, repeats)
    lengths = np.array([max(len(s), len(t) + 1) for s, t in zip(src, tgt, strict=False)])
    val_batches = [np.arange(i, min(i + 64, len(val_src))) for i in range(0, len(val_src), 64)]
    budget = 600 if opts.quick else TOKENS_PER_BATCH
    log(f"{kind}: {len(src):,} training pairs, vocabulary {len(tok)}, {cfg}")

    seed_everything(opts.seed)
    model = build_model(kind, len(tok), cfg, dropout=0.1)
    optimizer = make_optimizer(model, PEAK_LR[kind], 50 if opts.quick else WARMUP_STEPS)
    if ckpt.exists():
        ckpt.load(model, optimizer)
        log(f"{kind}: resumed at pass {state['epoch']} batch {state['batch']}, step {state['step']}, "
            f"{state['train_seconds'] / 3600:.2f} h trained so far")
    if trained_on != repeats:  # another mix: the data position means nothing
        log(f"{kind}: everyday pairs {trained_on} -> {repeats} times a pass; "
            f"pass {state['epoch']} starts again")
        state.update(everyday_repeats=repeats, batch=0)
    keras.utils.set_random_seed(opts.seed + state["step"])  # dropout continues on a fresh, recorded stream
    log(f"{kind}: {model.count_params():,} parameters")

    spec = [tf.TensorSpec((None, None), tf.int64)] * 3

    @tf.function(input_signature=spec)
    def train_step(s, ti, to):
        with tf.GradientTape() as tape:
            loss, nll, _ = smoothed_loss(model((s, ti), training=True), to)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return nll

    @tf.function(input_signature=spec)
    def eval_step(s, ti, to):
        _, nll, n = smoothed_loss(model((s, ti), training=False), to)
        return nll * n, n

    def validation_loss() -> float:
        total = count = 0.0
        for idx in val_batches:
            a, b = eval_step(*make_arrays(val_src, val_tgt, idx, tok.bos_id, tok.eos_id))
            total, count = total + float(a), count + float(b)
        return total / count

    history_path = run_dir / "history.csv"
    stretch = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "from_step": state["step"],
               "everyday_repeats": repeats}
    t_start = time.monotonic()
    t_last = t_start
    active = 0.0  # seconds spent training since the last checkpoint: a paused process (kill -STOP) is not counted
    recent, recent_tokens, t_recent = [], 0, time.monotonic()
    max_steps = state["step"] + 40 if opts.quick else None  # quick: 40 steps a stretch
    done = False

    def checkpoint(now: float) -> None:
        nonlocal recent, recent_tokens, t_recent, active
        state["train_seconds"] += active
        active = 0.0
        val = validation_loss()
        append_history(history_path, {
            "step": state["step"], "pass": round(state["epoch"] + state["batch"] / max(len(batches), 1), 3),
            "target_tokens": state["target_tokens"], "hours": round(state["train_seconds"] / 3600, 3),
            "train_nll": round(float(np.mean(recent)), 4), "val_nll": round(val, 4),
            "tokens_per_second": round(recent_tokens / (now - t_recent), 1)})
        stretch.update(to_step=state["step"], val_nll=round(val, 4))
        state["stretches"] = [x for x in state["stretches"] if x["started"] != stretch["started"]] + [stretch]
        ckpt.save(model, optimizer, state)
        log(f"{kind}: checkpoint at step {state['step']}, validation nll {val:.3f}")
        recent, recent_tokens, t_recent = [], 0, time.monotonic()

    batches: list = []
    while state["epoch"] < passes and not done:
        batches = epoch_batches(lengths, state["epoch"], opts.seed, budget)
        while state["batch"] < len(batches):
            idx = batches[state["batch"]]
            s, ti, to = make_arrays(src, tgt, idx, tok.bos_id, tok.eos_id)
            recent.append(float(train_step(s, ti, to)))
            ntok = int((to != 0).sum())
            recent_tokens += ntok
            state["target_tokens"] += ntok
            state["batch"] += 1
            state["step"] += 1
            now = time.monotonic()
            if now - t_last < PAUSED_AFTER:
                active += now - t_last
            t_last = now
            if state["step"] % 200 == 0:
                log(f"{kind}: step {state['step']} pass {state['epoch']} ({state['batch']}/{len(batches)}) "
                    f"train nll {np.mean(recent):.3f}, {recent_tokens / (now - t_recent):.0f} target tokens/s")
            elapsed = now - t_start
            stretch_over = stretch_minutes is not None and elapsed >= stretch_minutes * 60
            if (active >= checkpoint_minutes * 60 or stretch_over
                    or (max_steps and state["step"] >= max_steps)):
                checkpoint(now)
                if stretch_over or (max_steps and state["step"] >= max_steps):
                    done = True
                    break
        else:
            state["epoch"] += 1
            state["batch"] = 0
    if recent:  # the planned passes ended between checkpoints
        checkpoint(time.monotonic())
    state["averaged_checkpoints"] = average_if_better(kind, model, ckpt, validation_loss)
    return model, cfg, state


def average_if_better(kind: str, model, ckpt: Checkpoint, validation_loss) -> int:
    """Leave ``model`` with the mean of the kept checkpoints' weights when its validation loss is lower than the
    last checkpoint's; -> how many checkpoints the exported weights average (1: the last one alone)."""
    if len(ckpt.snapshot_files()) < 2:
        return 1
    last_weights, last_val = model.get_weights(), validation_loss()
    n = ckpt.average_into(model)
    val = validation_loss()
    log(f"{kind}: the mean of the last {n} checkpoints: validation nll {val:.4f} against {last_val:.4f} for the last")
    if val < last_val:
        return n
    model.set_weights(last_weights)
    return 1


def append_history(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def read_history(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(open(path))]


# ------------------------------------------------------------------------------------------ export
def export(kind: str, model, cfg: dict, tok: SubwordTokenizer, stage: Path, seed: int) -> dict:
    """Encoder + decoder step graphs through the parity gate; returns the parity records."""
    import tensorflow as tf

    from training.jobs.translation_models import seq2seq_graphs, transformer_graphs

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
    rng = np.random.default_rng(seed)
    enc_out = [o.name for o in ort_session(stage / "encoder.onnx").get_outputs()]
    enc_feeds = []
    for n, s in ((1, 5), (3, 9), (8, 17)):
        x = rng.integers(4, len(tok), (n, s)).astype(np.int64)
        x[0, s - 2:] = 0  # a padded row
        enc_feeds.append({"src": x})
    def enc_fn(f):
        return dict(zip(enc_out, [o.numpy() for o in enc(tf.constant(f["src"]), training=False)], strict=True))
    enc_par = parity(enc_fn, stage / "encoder.onnx", enc_feeds, enc_out)
    dec_in = [s.name for s in dec_specs]
    dec_out = [o.name for o in ort_session(stage / "decoder.onnx").get_outputs()]
    dec_feeds = []
    for n, s, tc in ((1, 4, 0), (5, 7, 3), (16, 11, 6)):
        f = {}
        for spec in dec_specs:
            shape = [n if i == 0 else (s if spec.name.startswith("memory") else tc) if dim is None else dim
                     for i, dim in enumerate(spec.shape)]
            if spec.name == "token":
                f[spec.name] = rng.integers(4, len(tok), n).astype(np.int64)
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
        return dict(zip(dec_out, [o.numpy() for o in outs], strict=False))
    dec_par = parity(dec_keras, stage / "decoder.onnx", dec_feeds, dec_out)
    return {"max_abs_diff": max(enc_par["max_abs_diff"], dec_par["max_abs_diff"]),
            "tolerance": enc_par["tolerance"], "encoder": enc_par, "decoder": dec_par}


def preprocessing(kind: str, cfg: dict) -> dict:
    pre = {"architecture": kind, "tokenizer": "sentencepiece", "sentencepiece_model": "spm.model",
           "source_language": "en", "target_language": "de",
           "max_source_tokens": MAX_TOKENS, "max_target_tokens": 2 * MAX_TOKENS,
           "special_tokens": {"pad": 0, "unk": 1, "bos": 2, "eos": 3}, "config": cfg}
    if kind == "transformer":  # learned positions: the decoder cannot step past its table
        pre["max_positions"] = POSITIONS
    return pre


def loops(text: str) -> bool:
    """Whether a translation repeats a word, or a pair of words, three times in a row."""
    w = text.split()
    return (any(w[i] == w[i + 1] == w[i + 2] for i in range(len(w) - 2))
            or any(w[i:i + 2] == w[i + 2:i + 4] == w[i + 4:i + 6] for i in range(len(w) - 5)))


def evaluate(model: TranslationModel, test: list, beam_sizes=(1, 4)) -> dict:
    """Corpus BLEU and chrF (sacrebleu) overall and per domain, and the outputs that loop (``loops``), for each
    beam width."""
    import sacrebleu
    srcs, refs, domains = [r[0] for r in test], [r[1] for r in test], [r[2] for r in test]
    out = {"bleu_tool": f"sacrebleu {sacrebleu.__version__} corpus_bleu 13a, corpus_chrf"}
    hyps_by_beam = {}
    for beam in beam_sizes:
        with Timer() as t:
            hyps = translate_batch(model, srcs, beam_size=beam)
        hyps_by_beam[beam] = hyps
        res = {"bleu": round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2),
               "chrf": round(sacrebleu.corpus_chrf(hyps, [refs]).score, 2), "decode_seconds": round(t.seconds, 1),
               "looping_outputs": sum(loops(h) for h in hyps), "domains": {}}
        for dom in sorted(set(domains)):
            h = [x for x, d in zip(hyps, domains, strict=False) if d == dom]
            r = [x for x, d in zip(refs, domains, strict=False) if d == dom]
            res["domains"][dom] = {"pairs": len(h), "bleu": round(sacrebleu.corpus_bleu(h, [r]).score, 2),
                                   "chrf": round(sacrebleu.corpus_chrf(h, [r]).score, 2)}
        out[f"beam{beam}"] = res
    return out, hyps_by_beam


def run(opts: JobOptions) -> dict:
    ds = load_corpus(opts.quick)
    results = {}
    for kind in ("transformer", "seq2seq"):
        if opts.models and kind not in opts.models:
            continue
        results[f"translation_{kind}"] = run_one(kind, opts, ds)
    return results


def runs_root(opts: JobOptions) -> Path:
    if opts.quick:
        return Path(opts.run_dir) / "translation-quick"
    return Path(os.environ.get("MT_RUNS", mt_corpus.cache_root() / "runs"))


def run_one(kind: str, opts: JobOptions, ds: dict) -> dict:
    name = f"translation_{kind}"
    root = runs_root(opts)
    run_dir = root / kind
    if opts.fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tok = tokenizer_for(run_dir, ds["train"], opts.quick)
    passes = opts.epochs or (1 if opts.quick else 200)  # in effect, until stretches stop it
    model, cfg, state = train(kind, opts, run_dir, ds, tok, opts.stretch_minutes, opts.checkpoint_minutes,
                              0 if opts.export_now else passes)
    stage = staging_dir()
    shutil.copy(tok.path, stage / "spm.model")
    par = export(kind, model, cfg, tok, stage, opts.seed)
    pre = preprocessing(kind, cfg)
    tm = TranslationModel({"preprocessing": pre}, stage, ort_session(stage / "encoder.onnx"),
                          ort_session(stage / "decoder.onnx"))
    test = ds["test"]
    scores, hyps = evaluate(tm, test)
    b4 = scores["beam4"]
    log(f"{name}: held-out BLEU greedy {scores['beam1']['bleu']}, beam4 {b4['bleu']}, chrF {b4['chrf']}; "
        f"per domain {json.dumps(b4['domains'])}")
    rep = opts.family_report_dir(name if not opts.quick else f"{name}-quick")
    history = read_history(run_dir / "history.csv")
    _plot(history, rep / "curves.png", name)
    baseline = None if opts.quick else baseline_scores(opts.out, name, test)
    better = baseline is None or (b4["bleu"] > baseline["bleu"] and b4["chrf"] > baseline["chrf"])
    metrics = {"bleu_beam4": b4["bleu"], "chrf_beam4": b4["chrf"], "bleu_greedy": scores["beam1"]["bleu"],
               "chrf_greedy": scores["beam1"]["chrf"], "domains_beam4": b4["domains"],
               "looping_outputs_beam4": b4["looping_outputs"],
               "domains_greedy": scores["beam1"]["domains"], "test_pairs": len(test),
               "bleu_tool": scores["bleu_tool"], "bar": {"bleu": BARS[name]},
               "meets_bar": b4["bleu"] >= BARS[name], "parameters": int(model.count_params()),
               "train_hours": round(state["train_seconds"] / 3600, 2), "steps": state["step"],
               "averaged_checkpoints": state.get("averaged_checkpoints", 1),
               "passes": round(state["epoch"] + (history[-1]["pass"] % 1 if history else 0), 2),
               "target_tokens": state["target_tokens"],
               "decode_seconds": {"greedy": scores["beam1"]["decode_seconds"],
                                  "beam4": b4["decode_seconds"]},
               "baseline": baseline}
    write_json(rep / "metrics.json", metrics)
    write_json(rep / "stretches.json", state["stretches"])
    write_report(rep / "report.md", name, metrics, state["stretches"], history,
                 list(zip(EVERYDAY, translate_batch(tm, EVERYDAY, beam_size=4), strict=False)))
    write_json(rep / "samples.json", [{"en": r[0], "de_reference": r[1], "domain": r[2], "greedy": g, "beam4": b}
                                      for r, g, b in list(zip(test, hyps[1], hyps[4], strict=False))[:40]])
    if not better:
        log(f"{name}: not published: beam-4 BLEU {b4['bleu']} / chrF {b4['chrf']} do not beat the shipped "
            f"{baseline['bleu']} / {baseline['chrf']}")
        return {"published": False, "metrics": metrics}
    with open(stage / "test.tsv", "w", encoding="utf-8") as f:
        for e, d, dom in test:
            f.write(f"{e}\t{d}\t{dom}\n")
    eo, do = ort_session(stage / "encoder.onnx"), ort_session(stage / "decoder.onnx")
    ei, eout = tensor_meta(eo)
    di, dout = tensor_meta(do)
    manifest = {
        "task": catalog.BY_NAME[opts.family].task,
        "description": f"English->German {kind} ({', '.join(f'{k}={v}' for k, v in cfg.items())}) over a "
                       f"{len(tok)}-piece SentencePiece vocabulary; encoder + decoder step graph",
        "graphs": {"encoder": {"file": "encoder.onnx", "inputs": ei, "outputs": eout},
                   "decoder": {"file": "decoder.onnx", "inputs": di, "outputs": dout}},
        "preprocessing": pre,
        "batching": {"max_batch_size": 64, "max_queue_delay_ms": 2},
        "metrics": metrics,
        "data": {"corpus": ds["provenance"], "test_file": "test.tsv",
                 "training_pairs": len(ds["train"]), "everyday_repeats": state["everyday_repeats"]},
        "training": {"command": opts.command, "seed": opts.seed, "steps": state["step"],
                     "hours": metrics["train_hours"], "stretches": state["stretches"],
                     "optimizer": f"adam beta2 0.98, peak lr {PEAK_LR[kind]}, {WARMUP_STEPS} warm-up steps then "
                                  f"inverse square root, clipnorm 1",
                     "label_smoothing": LABEL_SMOOTHING, "tokens_per_batch": TOKENS_PER_BATCH,
                     "quick": opts.quick},
        "parity": par,
    }
    final = write_version(opts.out, name, stage, manifest, opts.version)
    log(f"{name}: published {final}")
    return {"published": True, "path": final, "metrics": metrics}


def write_report(path: Path, name: str, metrics: dict, stretches: list, history: list, everyday: list) -> None:
    """The run's report: scores per domain, what each stretch of training added, and everyday sentences."""
    lines = [f"# {name}", "", f"{metrics['parameters']:,} parameters; {metrics['steps']:,} steps, "
             f"{metrics['train_hours']} h of training over {len(stretches)} stretch(es) "
             f"({metrics['target_tokens']:,} target tokens). Curves: `curves.png`. Exported weights: "
             + (f"the mean of the last {metrics['averaged_checkpoints']} checkpoints (lower validation loss than "
                f"the last alone)." if metrics.get("averaged_checkpoints", 1) > 1 else "the last checkpoint's."), "",
             f"Held-out test ({metrics['test_pairs']} pairs, {metrics['bleu_tool']}):", "",
             "| domain | pairs | BLEU greedy | chrF greedy | BLEU beam 4 | chrF beam 4 |", "|---|---|---|---|---|---|"]
    for dom, b4 in metrics["domains_beam4"].items():
        g = metrics["domains_greedy"][dom]
        lines.append(f"| {dom} | {b4['pairs']} | {g['bleu']} | {g['chrf']} | {b4['bleu']} | {b4['chrf']} |")
    lines.append(f"| all | {metrics['test_pairs']} | {metrics['bleu_greedy']} | {metrics['chrf_greedy']} | "
                 f"{metrics['bleu_beam4']} | {metrics['chrf_beam4']} |")
    if "looping_outputs_beam4" in metrics:
        lines += ["", f"Outputs that repeat a word or a word pair three times in a row (beam 4): "
                      f"{metrics['looping_outputs_beam4']} of {metrics['test_pairs']}."]
    if metrics.get("baseline"):
        b = metrics["baseline"]
        lines += ["", f"The newest shipped version before this run (v{b['version']}) on the same test, beam 4: "
                      f"BLEU {b['bleu']}, chrF {b['chrf']}."]
    lines += ["", "## Stretches of training", "",
              "| started (UTC) | steps | validation loss at the end | everyday pairs a pass | where |",
              "|---|---|---|---|---|"]
    lines += [f"| {s['started']} | {s['from_step']:,} -> {s.get('to_step', s['from_step']):,} | "
              f"{s.get('val_nll', '')} | x{s.get('everyday_repeats', EVERYDAY_REPEATS)} | "
              f"{s.get('device', 'CPU')} |"
              for s in stretches]
    lines += ["", "## Everyday sentences (beam 4)", "", "| English | German |", "|---|---|"]
    lines += [f"| {e} | {d} |" for e, d in everyday]
    Path(path).write_text("\n".join(lines) + "\n", "utf-8")


def baseline_scores(out_root: Path, name: str, test: list) -> dict | None:
    """Beam-4 BLEU and chrF of the newest shipped version of ``name`` on this held-out test."""
    import sacrebleu
    versions = sorted((int(p.name) for p in (Path(out_root) / name).glob("[0-9]*")), reverse=True)
    if not versions:
        return None
    vdir = Path(out_root) / name / str(versions[0])
    manifest = load_and_verify(vdir)
    tm = TranslationModel(manifest, vdir, ort_session(vdir / "encoder.onnx"), ort_session(vdir / "decoder.onnx"))
    hyps = translate_batch(tm, [r[0] for r in test], beam_size=4)
    refs = [r[1] for r in test]
    return {"version": versions[0], "bleu": round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2),
            "chrf": round(sacrebleu.corpus_chrf(hyps, [refs]).score, 2)}


def _plot(history: list[dict], path: Path, name: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if not history:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = [h["hours"] for h in history]
    ax.plot(x, [h["train_nll"] for h in history], label="train")
    ax.plot(x, [h["val_nll"] for h in history], label="validation")
    ax.set_xlabel("hours of training (all stretches)")
    ax.set_ylabel("cross-entropy per target piece")
    ax.set_title(name)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
