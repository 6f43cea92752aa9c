"""Recompute BLEU through the API from the held-out pairs shipped next to the manifest.

    python -m bench.bleu --url http://127.0.0.1:8080 --model transformer --beam 4
Reads exported_models/translation_MODEL/VERSION/test.tsv (English TAB German [TAB domain]), translates every English
sentence with POST /api/translate (64 per request), and scores BLEU and chrF with sacrebleu, per domain too."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    import sacrebleu
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--model", choices=["transformer", "seq2seq"], default="transformer")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--version", type=int, default=None)
    args = p.parse_args(argv)
    root = ROOT / "exported_models" / f"translation_{args.model}"
    version = args.version or max(int(d.name) for d in root.iterdir() if d.name.isdigit())
    rows = [line.rstrip("\n").split("\t") for line in open(root / str(version) / "test.tsv", encoding="utf-8")]
    pairs = [(r[0], r[1]) for r in rows]
    domains = [r[2] if len(r) > 2 else "all" for r in rows]  # version 1's file has no domain column
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
        h = [x for x, d in zip(hyps, domains) if d == dom]
        r = [x for x, d in zip(refs, domains) if d == dom]
        print(f"  {dom}: {len(h)} pairs, BLEU {sacrebleu.corpus_bleu(h, [r]).score:.2f}, "
              f"chrF {sacrebleu.corpus_chrf(h, [r]).score:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
