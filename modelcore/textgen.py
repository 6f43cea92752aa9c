"""Character generator over the exported step graph: one adapter whose ``step`` runs many streams' rows
at once (continuous batching); used by the service and by the training job's sample text."""
from __future__ import annotations

from itertools import repeat
from pathlib import Path

import numpy as np

from modelcore.decoding_jobs import SamplingJob
from modelcore.steps import ArrayStepAdapter, batched_inputs
from modelcore.text import Vocabulary


class CharModel(ArrayStepAdapter):
    # step() returns raw logits: streams are only sampled, and sampling is the same for logits and for
    # log-probabilities (they differ by one constant per row), so the log-softmax of every step is skipped
    normalized = False

    # the step graph's names: what prefill.scan_graph needs to read a prompt in one call
    TOKEN, STATES = "token", [("h", "h_out"), ("c", "c_out")]
    OUTPUTS = ["logits"] + [out for _, out in STATES]

    def __init__(self, manifest: dict, version_dir: Path, step_sess, prefill_sess=None, prefill_min_tokens: int = 0):
        pre = manifest["preprocessing"]
        self.vocab = Vocabulary.load(Path(version_dir) / pre["vocabulary"])
        self.units = int(pre["state"]["h"])
        self._zeros = np.zeros((1, self.units), np.float32)
        self.banned = tuple(pre.get("banned_ids", [self.vocab.pad_id, self.vocab.unk_id]))
        self.sess = step_sess
        # prompts of at least this many tokens are read by one prefill call in the caller's thread; shorter
        # ones ride the scheduler's batched steps, where a token costs a row of a shared call
        self.prefill, self.prefill_min_tokens = prefill_sess, prefill_min_tokens
        self.model_name, self.model_version = manifest["name"], str(manifest.get("version", ""))  # metrics labels

    def prompt_ids(self, prompt: str) -> list[int]:
        # an empty prompt starts from a newline, like the start of a speech
        return self.vocab.encode(list(prompt or "\n"))

    def first_state(self):
        return (self._zeros, self._zeros, 0)

    def read_prompt(self, ids: list[int]) -> tuple[tuple, list[int]]:
        """-> (the state and the ids a job starts from). With a prefill graph and a long enough prompt, every
        id but the last is read here in one ONNX Runtime call (the GIL is released meanwhile, so the scheduler
        thread keeps stepping the other streams), and the job's first tick reads the last id and samples."""
        if self.prefill is None or self.prefill_min_tokens <= 0 or len(ids) < max(2, self.prefill_min_tokens):
            return self.first_state(), ids
        tokens = np.array(ids[:-1], dtype=np.int64).reshape(-1, 1)
        h, c = self.prefill.run(["h_out", "c_out"], {"tokens": tokens, "h": self._zeros, "c": self._zeros})
        return (h, c, 0), ids[-1:]

    def step_arrays(self, token: np.ndarray, states: tuple) -> tuple[np.ndarray, tuple]:
        """One step of N streams from arrays: token [N], (h, c) [N, units] -> logits [N, V], (h, c). The
        scheduler feeds the outputs back as the next step's inputs while the same streams step together
        (``scheduler.SampledBatch``)."""
        logits, h, c = self.sess.run(self.OUTPUTS, {"token": token, "h": states[0], "c": states[1]})
        return logits, (h, c)

    def step(self, rows):
        """One step of every row. A row's state is (h, c, i): row i of the [N, units] arrays a step made, so
        the usual tick, the same streams in the same order as the last one, feeds those arrays back as they
        are, with no per-row copies (``batched_inputs``)."""
        logits, (h, c) = self.step_arrays(np.array([r.token for r in rows], dtype=np.int64), batched_inputs(rows))
        return logits, list(zip(repeat(h), repeat(c), range(len(rows))))

    def job(self, prompt: str, max_tokens: int, temperature: float, top_k: int, top_p: float, seed: int,
            **callbacks) -> SamplingJob:
        """``callbacks``: SamplingJob's on_token, or on_first and on_end."""
        state, ids = self.read_prompt(self.prompt_ids(prompt))
        return SamplingJob(self, state, ids, max_tokens, temperature, top_k, top_p, seed, banned=self.banned,
                           **callbacks)

    def text(self, ids) -> str:
        return "".join(self.vocab.decode(ids))
