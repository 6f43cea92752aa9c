"""What every training job shares: options, run/report folders, resumable fit, curves and metrics files."""
from __future__ import annotations

import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.data import REPO_ROOT


@dataclass
class JobOptions:
    family: str
    epochs: int | None = None
    quick: bool = False
    out: Path = REPO_ROOT / "exported_models"
    run_dir: Path = REPO_ROOT / "runs"
    report_dir: Path = REPO_ROOT / "reports"
    seed: int = 1234
    version: int | None = None
    source: str = "offline"
    fresh: bool = False
    models: list[str] | None = None
    stretch_minutes: float | None = None  # translation: end this stretch of training after so many minutes
    checkpoint_minutes: float = 10.0
    export_now: bool = False  # translation: export the last checkpoint without training further
    everyday_repeats: int | None = None  # translation: times an everyday pair is seen a pass (None: the checkpoint's)
    argv: list[str] = field(default_factory=list)

    @property
    def command(self) -> str:
        return "python -m training " + " ".join(shlex.quote(a) for a in self.argv)

    def family_run_dir(self, name: str | None = None) -> Path:
        d = Path(self.run_dir) / (name or self.family) / ("quick" if self.quick else "full")
        if self.fresh and d.exists():
            import shutil
            shutil.rmtree(d)
        d.mkdir(parents=True, exist_ok=True)
        return d

    def family_report_dir(self, name: str | None = None) -> Path:
        d = Path(self.report_dir) / (name or self.family)
        d.mkdir(parents=True, exist_ok=True)
        return d


def seed_everything(seed: int) -> None:
    import keras
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    keras.utils.set_random_seed(seed)


def resumable_callbacks(run_dir: Path) -> list:
    """Callbacks that make ``fit`` resumable (BackupAndRestore) and log per-epoch metrics to CSV."""
    import keras
    return [keras.callbacks.BackupAndRestore(str(run_dir / "backup")),
            keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True)]


def read_history(run_dir: Path) -> dict[str, list[float]]:
    path = run_dir / "history.csv"
    if not path.exists():
        return {}
    import csv
    rows = list(csv.DictReader(open(path)))
    # A resumed run appends; keep the last row logged for each epoch.
    by_epoch = {int(r["epoch"]): r for r in rows}
    hist: dict[str, list[float]] = {}
    for ep in sorted(by_epoch):
        for k, v in by_epoch[ep].items():
            try:
                value = float(v)
            except (TypeError, ValueError):
                continue  # CSVLogger writes NA for metrics missing in an epoch
            if k != "epoch":
                hist.setdefault(k, []).append(value)
    return hist


def plot_curves(hist: dict[str, list[float]], path: Path, title: str) -> None:
    """Training curves as PNG: one panel per metric, train and validation together."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = sorted({k.removeprefix("val_") for k in hist})
    if not names:
        return
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.5), squeeze=False)
    for ax, n in zip(axes[0], names, strict=False):
        for key, label in ((n, "train"), (f"val_{n}", "validation")):
            if key in hist:
                ax.plot(range(1, len(hist[key]) + 1), hist[key], marker="o", label=label)
        ax.set_title(n)
        ax.set_xlabel("epoch")
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_json(path: Path, obj) -> None:
    Path(path).write_text(json.dumps(obj, indent=2, default=_json_default) + "\n", "utf-8")


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0


def log(msg: str) -> None:
    print(f"[train] {msg}", flush=True, file=sys.stdout)
