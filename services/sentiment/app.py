"""Sentiment service (port 9002): ``POST /api/sentiment/predict`` plus /v1 and /v2 for model ``sentiment``."""
from __future__ import annotations

from flask import Blueprint

from services.runtime import native
from services.runtime.app import create_app as runtime_app
from services.runtime.config import LIMITS
from services.sentiment.model import SentimentServable
from services.sentiment.routes import PREDICT, ROUTES
from services.v2_tensors import bytes_tensor

api = Blueprint("sentiment_api", __name__)


@native.endpoint(api, PREDICT, "sentiment")
def predict(s, body):
    texts, _ = native.texts(body, LIMITS["max_text_chars"])
    out = native.infer(s, {"text": bytes_tensor(texts)})  # checked str: the servable takes them as they are
    return {"predictions": [{"label": label.decode(), "score": round(float(p), 6)}
                            for p, label in zip(out["score"], out["label"], strict=True)]}


def create_app(**kw):
    return runtime_app("sentiment", {"sentiment": SentimentServable}, api, ROUTES, **kw)
