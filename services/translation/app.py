"""Translation service (port 9003): ``POST /api/translate`` plus /v1 and /v2 for ``translation_transformer``
and ``translation_seq2seq``."""
from __future__ import annotations

from flask import Blueprint

from services.runtime import native
from services.runtime.app import create_app as runtime_app
from services.runtime.config import LIMITS
from services.translation.model import TranslationServable
from services.translation.routes import MODELS, ROUTES, TRANSLATE

api = Blueprint("translation_api", __name__)


@native.endpoint(api, TRANSLATE, lambda body: MODELS[body["model"]])
def translate(s, body):
    texts, single = native.texts(body, LIMITS["max_text_chars"])
    beam, max_len, scores = body["beam_size"], body.get("max_length"), body["return_scores"]
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
    return runtime_app("translation", {name: TranslationServable for name in MODELS.values()}, api, ROUTES, **kw)
