"""``python -m training.republish NAME``: the graph rewrites (``graph_passes``) applied to a version already in
the model repository, published as the next version through the export's own publishing (``write_version``),
refused unless it reproduces the original graph within the export tolerance (the original was checked against
Keras when it was exported)."""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

from training.export import PARITY_TOLERANCE, ExportRefused, next_version, ort_session, staging_dir, write_version
from training.graph_passes import apply_all


def _feeds(sess, index_rows: int, seed: int = 0) -> list[dict]:
    """Random feeds at batch sizes 1, 4 and 33: integer inputs drawn as valid indices into the folded tables,
    float inputs as N(0, 0.5), other dynamic dimensions 7."""
    rng = np.random.default_rng(seed)
    feeds = []
    for batch in (1, 4, 33):
        feed = {}
        for x in sess.get_inputs():
            shape = [batch] + [d if isinstance(d, int) else 7 for d in x.shape[1:]]
            if "int" in x.type:
                feed[x.name] = rng.integers(0, index_rows, shape).astype(np.int64 if "64" in x.type else np.int32)
            else:
                feed[x.name] = (rng.normal(0, 0.5, shape)).astype(np.float32)
        feeds.append(feed)
    return feeds


def optimise_version(repo: Path, name: str, version: int | None = None) -> Path | None:
    """Apply the passes to every graph of ``repo/name/version`` (default: the latest) and publish the result as
    the next version; None when no pass changes anything."""
    import onnx

    from modelcore.manifest import load_and_verify

    root = Path(repo) / name
    version = version or max(int(p.name) for p in root.iterdir() if p.name.isdigit())
    src = root / str(version)
    manifest = load_and_verify(src)
    staged = staging_dir()
    for f in src.iterdir():
        if f.is_file() and f.name != "manifest.json":
            shutil.copy2(f, staged / f.name)
    done = {}
    for spec in manifest["graphs"].values():
        model = onnx.load(str(src / spec["file"]))
        passes = apply_all(model)
        if not passes:
            continue
        onnx.checker.check_model(model)
        onnx.save(model, str(staged / spec["file"]))
        before, after = ort_session(src / spec["file"]), ort_session(staged / spec["file"])
        names = [o.name for o in before.get_outputs()]
        worst = 0.0
        for feed in _feeds(before, min(p["table"][0] for p in passes)):
            for a, b in zip(before.run(names, feed), after.run(names, feed), strict=False):
                worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b))))
        print(f"[passes] {name}/{version} {spec['file']}: {len(passes)} folded, max abs diff {worst:.3g} against "
              f"the exported graph (tolerance {PARITY_TOLERANCE})", flush=True)
        if not worst <= PARITY_TOLERANCE:
            raise ExportRefused(f"{spec['file']}: rewritten graph differs by {worst:.3g} > {PARITY_TOLERANCE}")
        done[spec["file"]] = {"passes": passes, "max_abs_diff_vs_source": worst}
    if not done:
        shutil.rmtree(staged)
        print(f"[passes] {name}/{version}: nothing to rewrite", flush=True)
        return None
    keras = manifest.get("parity", {}).get("max_abs_diff")
    record = {
        "source_version": version,
        "source_sha256": {f: manifest["files"][f]["sha256"] for f in done},
        "command": " ".join(["python", "-m", "training.republish", *sys.argv[1:]]),
        "onnx": onnx.__version__,
        "files": done,
        # the source matched Keras within its parity record; this graph matches the source
        "max_abs_diff_vs_keras_bound": None if keras is None else
        keras + max(d["max_abs_diff_vs_source"] for d in done.values())}
    identity = ("schema_version", "name", "version", "libraries", "files", "created")  # write_version's own
    manifest = {k: v for k, v in manifest.items() if k not in identity}
    manifest["description"] += f" (version {version} with its graphs rewritten: graph_passes)"
    manifest["graph_passes"] = record
    try:
        return write_version(repo, name, staged, manifest, next_version(root))
    finally:
        shutil.rmtree(staged)


def main(argv: list[str] | None = None) -> int:
    from training.data import REPO_ROOT
    p = argparse.ArgumentParser(prog="python -m training.republish", description=__doc__)
    p.add_argument("name", help="model name in the repository (e.g. textgen)")
    p.add_argument("--version", type=int, help="source version (default: the latest)")
    p.add_argument("--repo", type=Path, default=REPO_ROOT / "exported_models")
    args = p.parse_args(argv)
    optimise_version(args.repo, args.name, args.version)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
