"""Character generator over the exported step graph: one adapter whose ``step`` runs many streams' rows
at once (continuous batching); used by the service and by the training job's sample text."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from services.runtime.decoding import SamplingJob
from services.runtime.text import Vocabulary


class CharModel:
    # step() returns raw logits: streams are only sampled, and sampling is the same for logits and for
    # log-probabilities (they differ by one constant per row), so the log-softmax of every step is skipped
    normalized = False

    def __init__(self, manifest: dict, version_dir: Path, step_sess):
        pre = manifest["preprocessing"]
        self.vocab = Vocabulary.load(Path(version_dir) / pre["vocabulary"])
        self.units = int(pre["state"]["h"])
        self.banned = tuple(pre.get("banned_ids", [self.vocab.pad_id, self.vocab.unk_id]))
        self.sess = step_sess
        self.model_name = manifest["name"]

    def prompt_ids(self, prompt: str) -> list[int]:
        # an empty prompt starts from a newline, like the start of a speech
        return self.vocab.encode(list(prompt or "\n"))

    def first_state(self):
        z = np.zeros(self.units, np.float32)
        return (z, z)

    def step(self, rows):
        feeds = {"token": np.array([r.token for r in rows], dtype=np.int64),
                 "h": np.stack([r.state[0] for r in rows]), "c": np.stack([r.state[1] for r in rows])}
        logits, h, c = self.sess.run(["logits", "h_out", "c_out"], feeds)
        return logits, [(h[i], c[i]) for i in range(len(rows))]

    def job(self, prompt: str, max_tokens: int, temperature: float, top_k: int, top_p: float, seed: int,
            on_token=None) -> SamplingJob:
        return SamplingJob(self, self.first_state(), self.prompt_ids(prompt), max_tokens, temperature, top_k,
                           top_p, seed, banned=self.banned, on_token=on_token)

    def text(self, ids) -> str:
        return "".join(self.vocab.decode(ids))
