"""The sentiment service's native route (services/routes.py)."""
from __future__ import annotations

from services.routes import Route, body


def texts(limits) -> dict:
    """``text`` or ``texts``: one English text or a batch of them (the translation route takes the same)."""
    one = {"type": "string", "minLength": 1, "maxLength": limits["max_text_chars"]}
    return {"text": one, "texts": {"type": "array", "items": one, "minItems": 1, "maxItems": limits["max_batch_items"]}}


ROUTES = (Route("/api/sentiment/predict", "Sentiment of review text", lambda limits: body(texts(limits)),
                {"text": "A wonderful, moving film."}, hints={"review": "text", "sentence": "text"}),)
