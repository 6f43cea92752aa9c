"""Character generator over the exported step graph: one adapter whose ``step`` runs many streams' rows
at once (continuous batching); used by the service and by the training job's sample text."""
from __future__ import annotations

from itertools import repeat
from pathlib import Path

import numpy as np

from services.runtime.decoding import SamplingJob, batched_inputs
from services.runtime.text import Vocabulary


class CharModel:
    # step() returns raw logits: streams are only sampled, and sampling is the same for logits and for
    # log-probabilities (they differ by one constant per row), so the log-softmax of every step is skipped
    normalized = False

    def __init__(self, manifest: dict, version_dir: Path, step_sess):
        pre = manifest["preprocessing"]
        self.vocab = Vocabulary.load(Path(version_dir) / pre["vocabulary"])
        self.units = int(pre["state"]["h"])
        self._zeros = np.zeros((1, self.units), np.float32)
        self.banned = tuple(pre.get("banned_ids", [self.vocab.pad_id, self.vocab.unk_id]))
        self.sess = step_sess
        self.model_name = manifest["name"]

    def prompt_ids(self, prompt: str) -> list[int]:
        # an empty prompt starts from a newline, like the start of a speech
        return self.vocab.encode(list(prompt or "\n"))

    def first_state(self):
        return (self._zeros, self._zeros, 0)

    def step(self, rows):
        """One step of every row. A row's state is (h, c, i): row i of the [N, units] arrays a step made, so
        the usual tick, the same streams in the same order as the last one, feeds those arrays back as they
        are, with no per-row copies (``batched_inputs``)."""
        token = np.array([r.token for r in rows], dtype=np.int64)
        h, c = batched_inputs(rows)
        logits, h, c = self.sess.run(["logits", "h_out", "c_out"], {"token": token, "h": h, "c": c})
        return logits, list(zip(repeat(h), repeat(c), range(len(rows))))

    def job(self, prompt: str, max_tokens: int, temperature: float, top_k: int, top_p: float, seed: int,
            on_token=None) -> SamplingJob:
        return SamplingJob(self, self.first_state(), self.prompt_ids(prompt), max_tokens, temperature, top_k,
                           top_p, seed, banned=self.banned, on_token=on_token)

    def text(self, ids) -> str:
        return "".join(self.vocab.decode(ids))
