"""Translation servables: batched encoders, beam search / greedy on the shared continuous-batching scheduler."""
from __future__ import annotations

import numpy as np

from services.runtime.config import LIMITS, settings
from services.runtime.generation import submit_all, wait_all
from services.runtime import native
from services.runtime.native import texts_from_bytes
from services.v2_tensors import bytes_tensor
from services.runtime.servable import Servable, TensorSpec
from modelcore.translation import TranslationModel


# beam 4 beats greedy on the held-out test for both models (reports/translation_*/report.md); beam 8 adds
# little at twice the cost (bench/results/vm/FINDINGS.md)
DEFAULT_BEAM = 4

class TranslationServable(Servable):
    inputs = [TensorSpec("text", "BYTES", (-1,), "English sentences")]
    outputs = [TensorSpec("translation", "BYTES", (-1,), "German translations"),
               TensorSpec("score", "FP32", (-1,), "length-normalised log-probability of the translation")]
    parameters = {"beam_size": f"1 (greedy) .. {LIMITS['max_beam_size']}, default {DEFAULT_BEAM}",
                  "max_length": f"1 .. {LIMITS['max_translation_tokens']} target tokens"}

    def __init__(self, manifest, version_dir):
        super().__init__(manifest, version_dir)
        self.model = TranslationModel(manifest, self.dir, self.sessions["encoder"], self.sessions["decoder"])
        self.model.model_name, self.model.model_version = self.name, str(self.version)
        enc_out = [o.name for o in self.sessions["encoder"].get_outputs()]
        self.model.encoder_run = self.batcher("encoder", enc_out, pad={"src": (1, 0, "post")})
        self.timeout = settings().decode_timeout_seconds

    def warm_up(self):
        self.translate(["Good morning."], beam_size=2, max_length=5)

    def translate(self, texts: list[str], beam_size: int = DEFAULT_BEAM, max_length: int | None = None):
        """-> list of n-best lists [(text, score)], best first."""
        max_length = max_length or self.model.max_target
        contexts = self.model.encode([self.model.source_ids(t) for t in texts])
        jobs = [self.model.job(c, beam_size, max_length) for c in contexts]
        submit_all(jobs)
        wait_all(jobs, self.timeout)
        return [[(self.model.target_text(h.tokens), float(h.score(j.alpha))) for h in j.results()] or [("", 0.0)]
                for j in jobs]

    def infer(self, inputs, parameters):
        beam = native.integer(parameters, "beam_size", DEFAULT_BEAM, 1, LIMITS["max_beam_size"], text_ok=True)
        max_len = native.integer(parameters, "max_length", self.model.max_target, 1,
                                 LIMITS["max_translation_tokens"], text_ok=True)
        nbest = self.translate(texts_from_bytes(inputs["text"], "text", LIMITS["max_text_chars"]), beam, max_len)
        return {"translation": bytes_tensor([n[0][0].encode("utf-8") for n in nbest]),
                "score": np.array([n[0][1] for n in nbest], np.float32)}

