"""Recompute BLEU through the API from the held-out pairs shipped next to the manifest.

    python -m bench.bleu --url http://127.0.0.1:8080 --model transformer --beam 4
Reads exported_models/translation_MODEL/VERSION/test.tsv (English TAB German TAB domain), translates every English
sentence with POST /api/translate (64 per request), and scores BLEU and chrF with sacrebleu, per domain too.

``--latency N`` then sends N held-out sentences of exactly ten words one at a time with the service's defaults
(no model, no beam) and prints the latency percentiles: the issue's bound is 200 ms at concurrency 1."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    import sacrebleu
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--model", choices=["transformer", "seq2seq"], default="transformer")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--version", type=int, default=None)
    p.add_argument("--latency", type=int, default=0, metavar="N", help="also time N ten-word sentences, one at a time")
    args = p.parse_args(argv)
    root = ROOT / "exported_models" / f"translation_{args.model}"
    version = args.version or max(int(d.name) for d in root.iterdir() if d.name.isdigit())
    rows = [line.rstrip("\n").split("\t") for line in open(root / str(version) / "test.tsv", encoding="utf-8")]
    pairs = [(r[0], r[1]) for r in rows]
    domains = [r[2] for r in rows]
    hyps, t0 = [], time.time()
    for i in range(0, len(pairs), 64):
        body = {"texts": [e for e, _ in pairs[i:i + 64]], "model": args.model, "beam_size": args.beam,
                "version": version}
        r = requests.post(args.url + "/api/translate", json=body, timeout=300)
        r.raise_for_status()
        hyps += r.json()["translations"]
    refs = [d for _, d in pairs]
    print(f"translation_{args.model} v{version} beam {args.beam}: {sacrebleu.corpus_bleu(hyps, [refs])}, "
          f"{sacrebleu.corpus_chrf(hyps, [refs])}  ({len(pairs)} pairs, {time.time() - t0:.1f}s through the API)")
    for dom in sorted(set(domains)):
        h = [x for x, d in zip(hyps, domains, strict=False) if d == dom]
        r = [x for x, d in zip(refs, domains, strict=False) if d == dom]
        print(f"  {dom}: {len(h)} pairs, BLEU {sacrebleu.corpus_bleu(h, [r]).score:.2f}, "
              f"chrF {sacrebleu.corpus_chrf(h, [r]).score:.2f}")
    if args.latency:
        latency(args.url, [e for e, _ in pairs if len(e.split()) == 10][:args.latency])
    return 0


def latency(url: str, sentences: list[str]) -> None:
    """One request at a time, defaults only, on a warm service."""
    session = requests.Session()
    session.post(url + "/api/translate", json={"text": sentences[0]}, timeout=60).raise_for_status()
    ms = []
    for text in sentences:
        t0 = time.perf_counter()
        r = session.post(url + "/api/translate", json={"text": text}, timeout=60)
        ms.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
    p50, p95 = np.percentile(ms, [50, 95])
    print(f"ten-word sentences with the defaults, one at a time ({len(ms)}): p50 {p50:.0f} ms, "
          f"p95 {p95:.0f} ms, max {max(ms):.0f} ms")


if __name__ == "__main__":
    raise SystemExit(main())
