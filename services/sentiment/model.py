"""Sentiment servable: review text -> tokens (the training tokenizer) -> batched BiLSTM -> P(positive)."""
from __future__ import annotations

import numpy as np

from modelcore.text import Vocabulary, review_tokens
from services.runtime.config import LIMITS
from services.runtime.native import texts_from_bytes
from services.runtime.servable import Servable, TensorSpec
from services.v2_tensors import bytes_tensor


class SentimentServable(Servable):
    inputs = [TensorSpec("text", "BYTES", (-1,), "review text (UTF-8)")]
    outputs = [TensorSpec("score", "FP32", (-1,), "P(positive)"), TensorSpec("label", "BYTES", (-1,))]

    def __init__(self, manifest, version_dir):
        super().__init__(manifest, version_dir)
        pre = manifest["preprocessing"]
        self.vocab = Vocabulary.load(self.dir / pre["vocabulary"])
        self.max_len = int(pre["max_length"])
        self.labels = pre["labels"]
        self.threshold = float(pre.get("threshold", 0.5))
        self.run = self.batcher("model", ["score"], pad={"tokens": (1, 0, "pre")})

    def encode(self, texts: list[str]) -> np.ndarray:
        ids = [self.vocab.encode(review_tokens(t))[-self.max_len:] or [self.vocab.unk_id] for t in texts]
        width = max(len(i) for i in ids)
        out = np.zeros((len(ids), width), np.int64)
        for r, i in enumerate(ids):
            out[r, width - len(i):] = i
        return out

    def predict(self, texts: list[str]) -> np.ndarray:
        return self.run({"tokens": self.encode(texts)})["score"][:, 0]

    def warm_up(self):
        self.predict(["a fine film"])

    def infer(self, inputs, parameters):
        scores = self.predict(texts_from_bytes(inputs["text"], "text", LIMITS["max_text_chars"]))
        labels = bytes_tensor([self.labels[int(s >= self.threshold)].encode() for s in scores])
        return {"score": scores.astype(np.float32), "label": labels}
