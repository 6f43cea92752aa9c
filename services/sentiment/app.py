"""Sentiment service (port 9002): ``POST /api/sentiment/predict`` plus /v1 and /v2 for model ``sentiment``."""
from __future__ import annotations

from flask import Blueprint, current_app, g

from services.runtime import native
from services.runtime.app import create_app as runtime_app
from services.runtime.config import LIMITS
from services.runtime.http import json_body, json_response
from services.sentiment.model import SentimentServable

api = Blueprint("sentiment_api", __name__)


@api.post("/api/sentiment/predict")
def predict():
    body = json_body()
    native.known_fields(body, "/api/sentiment/predict")
    texts, single = native.texts(body, LIMITS["max_batch_items"], LIMITS["max_text_chars"])
    s = current_app.extensions["repository"].get("sentiment", body.get("version"))
    g.model, g.model_version = s.name, str(s.version)
    scores = s.predict(texts)
    preds = [{"label": s.labels[int(p >= s.threshold)], "score": round(float(p), 6)} for p in scores]
    return json_response({"predictions": preds, "model": s.name, "version": str(s.version), "device": s.device})


def create_app(**kw):
    return runtime_app("sentiment", {"sentiment": SentimentServable}, api, **kw)
