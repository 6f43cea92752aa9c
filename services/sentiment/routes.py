"""The sentiment service's native route (services/routes.py)."""
from __future__ import annotations

from services.routes import Route, body, texts

PREDICT = Route("/api/sentiment/predict", "Sentiment of review text", lambda limits: body(texts(limits)),
                {"text": "A wonderful, moving film."}, hints={"review": "text", "sentence": "text"})
ROUTES = (PREDICT,)
