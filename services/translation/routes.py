"""The translation service's native route and decoding parameters (services/routes.py): the same knobs on
``/api/translate`` and as v1/v2 request parameters."""
from __future__ import annotations

from services.routes import Route, body, texts

MODELS = {"transformer": "translation_transformer", "seq2seq": "translation_seq2seq"}
# the default is the model with the best held-out BLEU and chrF (reports/translation_*/report.md)
DEFAULT_MODEL = "transformer"
# beam 4 beats greedy on the held-out test for both models; beam 8 adds little at twice the cost (FINDINGS)
DEFAULT_BEAM = 4


def parameters(limits) -> dict:
    return {"beam_size": {"type": "integer", "minimum": 1, "maximum": limits["max_beam_size"],
                          "default": DEFAULT_BEAM, "description": "1 is greedy decoding"},
            "max_length": {"type": "integer", "minimum": 1, "maximum": limits["max_translation_tokens"],
                           "description": "target tokens at most (default: the model's own limit)"}}


def _translate(limits) -> dict:
    return body({**texts(limits), "model": {"type": "string", "enum": list(MODELS), "default": DEFAULT_MODEL},
                 **parameters(limits),
                 "return_scores": {"type": "boolean", "default": False,
                                   "description": "the n-best hypotheses with their scores"}})


TRANSLATE = Route("/api/translate", "Translate English to German", _translate,
                  {"text": "The file could not be saved.", "beam_size": 4},
                  hints={"beam": "beam_size", "num_beams": "beam_size", "max_tokens": "max_length",
                         "source": "text", "sentence": "text"})
ROUTES = (TRANSLATE,)
