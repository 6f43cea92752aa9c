"""Training a translation model (the Transformer, or the seq2seq with ``--model seq2seq``) on a GPU machine, in
one prepared device call, from its CPU run's checkpoint when there is one; the weights come back here, where
they are exported through the usual parity gate and published only if they beat the shipped version.

    here:    .venv/bin/python -m training.translation_gpu pack     # with the CPU run stopped: its checkpoint
                                                                   # goes into .gpu/; prints the call to make
    device:  the printed call: python3 -m training.translation_gpu train --minutes 6 --out $OUT
    here:    .venv/bin/python -m training.translation_gpu unpack DIR   # DIR: the call's files
             .venv/bin/python -m training translation --model transformer --export-now

The device machine has JAX and PyTorch but neither Keras nor TensorFlow: Keras travels as wheels, the corpus as
piece ids (``pairs.npz``), the checkpoint's weights and optimizer state as they are. Training is Keras's own
``fit`` with the CPU job's model, loss and schedule (``jobs/translation_core``), on JAX when it sees a GPU, else
PyTorch. Batches are padded to a few fixed shapes, so the step is compiled a handful of times, not per batch.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PACK = ROOT / ".gpu"  # ignored by git; named in the device call's ``carry``
LENGTHS = (16, 24, 32, 48, 65)  # padded lengths: one compiled step each (65: 64 pieces and the end marker)
GPU_TOKENS_PER_BATCH = 16384
PART_BYTES = 12 << 20  # a device call brings back files of at most 16 MiB
# Keras for the device's Python (3.12), and what it needs that the device lacks
WHEELS = ("keras==3.15.1", "namex==0.1.0", "optree==0.20.0")


def log(msg: str) -> None:
    print(f"[gpu] {msg}", flush=True)


# ------------------------------------------------------------------------------------------ here: pack
def pack(kind: str, run_dir: Path, out: Path, wheels: bool, quick: bool) -> None:
    from training.jobs import translation as job
    from training.jobs.translation_core import CONFIGS, PEAK_LR, WARMUP_STEPS

    ds = job.load_corpus(quick)
    tok = job.tokenizer_for(run_dir, ds["train"], quick)
    ckpt = job.Checkpoint(run_dir)
    state = ckpt.state()
    # the device trains on the mix the checkpoint was trained on
    repeats = state.get("everyday_repeats", job.EVERYDAY_REPEATS)
    src, tgt, val_src, val_tgt = job.encode_splits(ds, tok, repeats)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    flat = {}
    for name, seqs in (("src", src), ("tgt", tgt), ("val_src", val_src), ("val_tgt", val_tgt)):
        flat[name] = np.concatenate([np.asarray(s, np.uint16) for s in seqs])
        flat[name + "_len"] = np.array([len(s) for s in seqs], np.int32)
    np.savez_compressed(out / "pairs.npz", **flat)
    if ckpt.exists():
        shutil.copy(ckpt.dir / "model.weights.h5", out / "start.weights.h5")
        shutil.copy(ckpt.dir / "optimizer.npz", out / "start.optimizer.npz")
    cfg = job.QUICK_CONFIGS[kind] if quick else CONFIGS[kind]
    (out / "job.json").write_text(json.dumps({
        "kind": kind, "cfg": cfg, "vocab": len(tok), "bos": tok.bos_id, "eos": tok.eos_id,
        "peak_lr": PEAK_LR[kind], "warmup": 50 if quick else WARMUP_STEPS, "start_step": state["step"],
        "tokens_per_batch": 600 if quick else GPU_TOKENS_PER_BATCH}, indent=1))
    if wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
                        "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
                        "-d", str(out / "wheels"), *WHEELS], check=True)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    log(f"packed {len(src):,} training pairs from step {state['step']:,} into {out} ({size / 2**20:.1f} MiB)")
    print(DEVICE_CALL.replace("MODEL", kind))


DEVICE_CALL = """
The device call copies the working tree; the shipped models are too large to travel and are not needed there,
so hide them from it first (and restore them after):

    git rm -r -q --cached exported_models && echo /exported_models/ >> .git/info/exclude

run(carry=[".gpu"], timeout_s=600, command=
    "python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/wheels/*.whl &&
     export PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 &&
     (python3 -m training.translation_gpu train --minutes 6 --out $OUT ||
      KERAS_BACKEND=torch python3 -m training.translation_gpu train --minutes 4 --out $OUT)")

    git reset -q exported_models && sed -i '\\#^/exported_models/$#d' .git/info/exclude
    .venv/bin/python -m training.translation_gpu unpack FILES_AT --model MODEL
    .venv/bin/python -m training translation --model MODEL --export-now
"""


# ------------------------------------------------------------------------------------------ device: train
def pick_backend() -> str:
    """JAX when it sees a GPU (the step compiled by XLA), else PyTorch, else whatever Keras is set to."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    try:
        import jax
        if any(d.platform == "gpu" for d in jax.devices()):
            return "jax"
    except Exception:  # noqa: BLE001 - no JAX, or no GPU plugin: try the next
        pass
    try:
        import torch  # noqa: F401
        return "torch"
    except ImportError:
        return "tensorflow"


def split(flat: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    return np.split(flat.astype(np.int64), np.cumsum(lengths)[:-1])


def plan(src: list, tgt: list, budget: int, seed: int) -> list[tuple[int, np.ndarray, int]]:
    """One shuffled pass as (padded length, pair indices, rows): each pair in the shortest of ``LENGTHS`` that
    holds it, ``budget // length`` rows a batch (a bucket's last batch filled with empty rows)."""
    need = np.array([max(len(s), len(t) + 1) for s, t in zip(src, tgt, strict=False)])
    bucket_of = np.searchsorted(LENGTHS, need)
    rng = np.random.default_rng(seed)
    batches = []
    for b, length in enumerate(LENGTHS):
        members = rng.permutation(np.flatnonzero(bucket_of == b))
        rows = max(1, budget // length)
        batches += [(length, members[i:i + rows], rows) for i in range(0, len(members), rows)]
    return [batches[k] for k in rng.permutation(len(batches))]


def batches(src: list, tgt: list, budget: int, bos: int, eos: int, seed: int):
    """Endless ((source, target in), target out) batches, a new shuffle every pass; padding is id 0, which the
    loss ignores."""
    epoch = 0
    while True:
        for length, idx, rows in plan(src, tgt, budget, seed + epoch):
            xs = np.zeros((rows, length), np.int32)
            xt = np.zeros((rows, length), np.int32)
            yt = np.zeros((rows, length), np.int32)
            for r, j in enumerate(idx):
                s, t = src[j], tgt[j]
                xs[r, :len(s)] = s
                xt[r, 0], xt[r, 1:len(t) + 1] = bos, t
                yt[r, :len(t)], yt[r, len(t)] = t, eos
            yield (xs, xt), yt
        epoch += 1


def train(pack_dir: Path, out: Path, minutes: float, epoch_steps: int) -> None:
    os.environ["KERAS_BACKEND"] = pick_backend()
    import keras
    from keras import ops

    from training.jobs.translation_core import build_model, make_optimizer, restore_optimizer, smoothed_loss

    job = json.loads((pack_dir / "job.json").read_text())
    data = np.load(pack_dir / "pairs.npz")
    src, tgt = split(data["src"], data["src_len"]), split(data["tgt"], data["tgt_len"])
    val_src, val_tgt = split(data["val_src"], data["val_src_len"]), split(data["val_tgt"], data["val_tgt_len"])
    log(f"backend {keras.backend.backend()} on {device_name()}, {len(src):,} training pairs, {job['cfg']}")

    model = build_model(job["kind"], job["vocab"], job["cfg"], dropout=0.1)
    if (pack_dir / "start.weights.h5").exists():
        model.load_weights(pack_dir / "start.weights.h5")
    optimizer = make_optimizer(model, job["peak_lr"], job["warmup"])
    restored = restore_optimizer(optimizer, list(pack_dir.glob("start.optimizer.npz")))
    if not restored:
        optimizer.iterations.assign(job["start_step"])  # the schedule continues where the CPU left it
    log(f"from step {job['start_step']:,}, optimizer state {'restored' if restored else 'new'}")

    def loss(y_true, y_pred):
        return smoothed_loss(y_pred, y_true)[0]

    def nll(y_true, y_pred):
        return smoothed_loss(y_pred, y_true)[1]

    model.compile(optimizer=optimizer, loss=loss, metrics=[nll])
    out.mkdir(parents=True, exist_ok=True)
    history: list[dict] = []
    t0 = time.monotonic()

    class Stretch(keras.callbacks.Callback):
        """After every ``epoch_steps`` steps (and fit's validation pass): the weights and optimizer state to
        ``out``, so a call cut short still brings something back; the stop once the minutes are spent."""

        def on_epoch_end(self, epoch, logs=None):
            step = int(ops.convert_to_numpy(optimizer.iterations))
            row = {"step": step, "minutes": round((time.monotonic() - t0) / 60, 2),
                   "train_nll": round(float(logs["nll"]), 4), "val_nll": round(float(logs["val_nll"]), 4)}
            history.append(row)
            log(json.dumps(row))
            save(model, optimizer, out, {**job, "steps": step - job["start_step"],
                                         "seconds": round(time.monotonic() - t0, 1), "history": history,
                                         "backend": keras.backend.backend(), "device": device_name()})
            if time.monotonic() - t0 > minutes * 60:
                self.model.stop_training = True

    model.fit(batches(src, tgt, job["tokens_per_batch"], job["bos"], job["eos"], job["start_step"]),
              steps_per_epoch=epoch_steps, epochs=10**6, verbose=0, callbacks=[Stretch()], shuffle=False,
              validation_data=batches(val_src, val_tgt, 8192, job["bos"], job["eos"], 0),
              validation_steps=len(plan(val_src, val_tgt, 8192, 0)))
    log(f"done: {history[-1] if history else 'no epoch finished'}")


def save(model, optimizer, out: Path, result: dict) -> None:
    """The weights, Adam's state in parts of at most ``PART_BYTES`` (what a device call brings back is limited
    per file), and the result."""
    from keras import ops
    model.save_weights(out / "model.weights.h5")
    for old in out.glob("optimizer-*.npz"):
        old.unlink()
    parts: list[list[np.ndarray]] = [[]]
    for v in optimizer.variables:
        value = ops.convert_to_numpy(v)
        if parts[-1] and sum(x.nbytes for x in parts[-1]) + value.nbytes > PART_BYTES:
            parts.append([])
        parts[-1].append(value)
    for i, part in enumerate(parts):
        np.savez(out / f"optimizer-{i}.npz", *part)
    (out / "result.json").write_text(json.dumps(result, indent=1))


def optimizer_parts(folder: Path) -> list[Path]:
    return sorted(folder.glob("optimizer-*.npz"), key=lambda f: int(f.stem.split("-")[1]))


def device_name() -> str:
    try:
        import torch
        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return "cpu"


# ------------------------------------------------------------------------------------------ here: unpack
def unpack(files: Path, run_dir: Path) -> None:
    """The device's weights and optimizer state become the run's checkpoint (the next stretch or
    ``--export-now`` starts from them); the older snapshots go, since averaging across the jump would mix
    two different models."""
    from training.jobs import translation as job
    from training.jobs.translation_core import build_model, make_optimizer, restore_optimizer

    result = json.loads((files / "result.json").read_text())
    ckpt = job.Checkpoint(run_dir)
    state = ckpt.state()
    if state["step"] != result["start_step"]:
        raise SystemExit(f"the device started from step {result['start_step']}, the checkpoint is at {state['step']}")
    model = build_model(result["kind"], result["vocab"], result["cfg"], dropout=0.1)
    model.load_weights(files / "model.weights.h5")
    optimizer = make_optimizer(model, result["peak_lr"], result["warmup"])
    restored = restore_optimizer(optimizer, optimizer_parts(files))
    if not restored:
        optimizer.iterations.assign(result["start_step"] + result["steps"])
    last = result["history"][-1]
    stretch = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "from_step": state["step"],
               "to_step": state["step"] + result["steps"], "val_nll": last["val_nll"],
               "device": f"{result['device']} ({result['backend']})"}
    state.update(step=stretch["to_step"], train_seconds=state["train_seconds"] + result["seconds"],
                 target_tokens=state["target_tokens"] + result["steps"] * result["tokens_per_batch"])
    state["stretches"] = state["stretches"] + [stretch]
    if ckpt.snapshots.exists():
        shutil.rmtree(ckpt.snapshots)
    ckpt.save(model, optimizer, state)
    before = job.read_history(run_dir / "history.csv")
    job.append_history(run_dir / "history.csv", {
        "step": state["step"], "pass": before[-1]["pass"] if before else 0.0,  # the CPU's data position: unchanged
        "target_tokens": state["target_tokens"], "hours": round(state["train_seconds"] / 3600, 3),
        "train_nll": last["train_nll"], "val_nll": last["val_nll"],
        "tokens_per_second": round(result["steps"] * result["tokens_per_batch"] / max(result["seconds"], 1e-9), 1)})
    log(f"checkpoint at step {state['step']:,} from {stretch['device']} (optimizer state "
        f"{'restored' if restored else 'new'}); now: python -m training translation "
        f"--model {result['kind']} --export-now")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.translation_gpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack")
    a.add_argument("--model", choices=("transformer", "seq2seq"), default="transformer")
    a.add_argument("--out", type=Path, default=PACK)
    a.add_argument("--no-wheels", action="store_true", help="skip downloading Keras for the device")
    a.add_argument("--quick", action="store_true", help="tests: the quick run's corpus and model")
    a.add_argument("--run-dir", type=Path, help="the model's run folder (default: the translation run's)")
    t = sub.add_parser("train")
    t.add_argument("--pack", type=Path, default=PACK)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--minutes", type=float, default=6.0, help="of training, after which the epoch in progress ends")
    t.add_argument("--epoch-steps", type=int, default=500, help="steps between validations and saves")
    u = sub.add_parser("unpack")
    u.add_argument("files", type=Path)
    u.add_argument("--model", choices=("transformer", "seq2seq"), default="transformer")
    u.add_argument("--run-dir", type=Path, help="the model's run folder (default: the translation run's)")
    args = p.parse_args(argv)
    if args.cmd == "train":
        train(args.pack, args.out, args.minutes, args.epoch_steps)
        return 0
    from training.common import JobOptions
    from training.jobs import translation as job
    run_dir = args.run_dir or job.runs_root(JobOptions(family="translation")) / args.model
    if args.cmd == "pack":
        pack(args.model, run_dir, args.out, not args.no_wheels, args.quick)
    else:
        unpack(args.files, run_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
