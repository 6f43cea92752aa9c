"""Translation service (port 9003): ``POST /api/translate`` plus /v1 and /v2 for ``translation_transformer``
and ``translation_seq2seq``."""
from __future__ import annotations

from flask import Blueprint

from services.runtime import native
from services.runtime.app import create_app as runtime_app
from services.runtime.config import LIMITS
from services.translation.model import DEFAULT_BEAM, TranslationServable

api = Blueprint("translation_api", __name__)


def _model(body: dict) -> str:
    # the default is the model with the best held-out BLEU and chrF (the reports under reports/translation_*)
    return "translation_" + native.choice(body, "model", "transformer", ["transformer", "seq2seq"])


@native.endpoint(api, "/api/translate", _model)
def translate(s, body):
    texts, single = native.texts(body, LIMITS["max_batch_items"], LIMITS["max_text_chars"])
    beam = native.integer(body, "beam_size", DEFAULT_BEAM, 1, LIMITS["max_beam_size"])
    max_len = native.integer(body, "max_length", LIMITS["max_translation_tokens"], 1, LIMITS["max_translation_tokens"])
    scores = native.boolean(body, "return_scores", False)
    nbest = s.translate(texts, beam, max_len)
    out: dict = {"beam_size": beam}
    if single:
        out["translation"] = nbest[0][0][0]
    else:
        out["translations"] = [n[0][0] for n in nbest]
    if scores:
        hyps = [[{"text": t, "score": round(sc, 5)} for t, sc in n] for n in nbest]
        out["hypotheses"] = hyps[0] if single else hyps
        out["score" if single else "scores"] = hyps[0][0]["score"] if single else [h[0]["score"] for h in hyps]
    return out


def create_app(**kw):
    return runtime_app("translation", {"translation_transformer": TranslationServable,
                                       "translation_seq2seq": TranslationServable}, api, **kw)
