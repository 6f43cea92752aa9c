"""The contract between the decoding scheduler and a model: an adapter turns rows (one hypothesis each: a beam,
or a sampled stream) into one batched step-graph call, ``step(rows) -> (scores [N, V], new row states)``; and
the array helpers adapters build their steps with."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Row:
    """One hypothesis's place in the batch. Beam search shares rows between hypotheses, so it makes a new one
    per step; a sampled stream owns its row and updates it in place."""
    state: Any          # adapter-specific (e.g. per-row arrays, or a row of a step's batched outputs)
    token: int          # last token fed to the next step
    position: int       # position of ``token`` in the output sequence
    context: Any = None  # per-source data shared by all rows of one input (e.g. encoder memory)


class StepAdapter(ABC):
    """A model the scheduler steps. ``normalized``: ``step`` returns log-probabilities (beam search needs them);
    an adapter that is only sampled from may return raw logits, since sampling does not change when a row's
    scores shift by a constant. ``model_name`` and ``model_version`` label its steps in the metrics."""

    normalized: bool = True
    model_name: str = "decoder"
    model_version: str = ""

    @abstractmethod
    def step(self, rows: list[Row]) -> tuple[np.ndarray, list]:
        """One step of every row: (scores [N, V], each row's next state)."""


class ArrayStepAdapter(StepAdapter):
    """An adapter whose row state is ``(array_1, ..., array_k, i)``: row i of the arrays a step made. The
    scheduler then steps its sampled streams tick after tick as whole arrays (``scheduler.SampledBatch``)."""

    @abstractmethod
    def step_arrays(self, tokens: np.ndarray, states: tuple) -> tuple[np.ndarray, tuple]:
        """One step of every row from arrays: (logits [N, V], the next states as arrays)."""


def batched_inputs(rows: list[Row]) -> tuple[np.ndarray, ...]:
    """A step's state inputs from rows whose state is (array_1, ..., array_k, i): row i of arrays an earlier
    step made (k of them, one per state input). When all rows point into the same arrays, in order and all of
    them, those arrays are fed back as they are; from the same arrays otherwise, one gather each; else a
    stack of the rows (streams joined since the last step)."""
    first = rows[0].state
    src, n = first[0], len(rows)
    if all(r.state[0] is src for r in rows):
        idx = [r.state[-1] for r in rows]
        if len(src) == n and idx == list(range(n)):
            return first[:-1]
        return tuple(a[idx] for a in first[:-1])
    return tuple(np.stack([r.state[k][r.state[-1]] for r in rows]) for k in range(len(first) - 1))


def log_softmax(x: np.ndarray) -> np.ndarray:
    m = np.max(x, axis=-1, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))


def pad_stack(arrays: list[np.ndarray], length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stack [T_i, ...] arrays into [N, T, ...] padded on the right, with a float mask [N, T] (1 = real)."""
    length = max((a.shape[0] for a in arrays), default=0) if length is None else length
    out = np.zeros((len(arrays), length) + arrays[0].shape[1:], dtype=arrays[0].dtype)
    mask = np.zeros((len(arrays), length), dtype=np.float32)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]] = a
        mask[i, : a.shape[0]] = 1.0
    return out, mask
