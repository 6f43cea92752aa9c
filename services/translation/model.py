"""Translation servables: batched encoders, beam search / greedy on the shared continuous-batching scheduler."""
from __future__ import annotations

import numpy as np

from modelcore.translation import TranslationModel
from services.runtime.config import LIMITS, settings
from services.runtime.generation import submit_all, wait_all
from services.runtime.native import texts_from_bytes
from services.runtime.servable import Servable, TensorSpec
from services.translation import routes
from services.translation.routes import DEFAULT_BEAM
from services.v2_tensors import bytes_tensor


class TranslationServable(Servable):
    inputs = [TensorSpec("text", "BYTES", (-1,), "English sentences")]
    outputs = [TensorSpec("translation", "BYTES", (-1,), "German translations"),
               TensorSpec("score", "FP32", (-1,), "length-normalised log-probability of the translation")]

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

    def parameters(self) -> dict[str, dict]:
        return routes.parameters(LIMITS)

    def infer(self, inputs, parameters):
        nbest = self.translate(texts_from_bytes(inputs["text"], "text", LIMITS["max_text_chars"]),
                               parameters["beam_size"], parameters.get("max_length"))
        return {"translation": bytes_tensor([n[0][0].encode("utf-8") for n in nbest]),
                "score": np.array([n[0][1] for n in nbest], np.float32)}

