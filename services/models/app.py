"""The models service (port 9006): every imported model in the repository (``python -m training import``), on
/v1 and /v2, found at start and at every poll, with no code or configuration of its own."""
from __future__ import annotations

from pathlib import Path

from services import catalog
from services.models.model import GenericServable
from services.models.routes import ROUTES
from services.runtime.app import create_app as runtime_app


def imported(root: Path) -> dict:
    """Every model folder with a version folder that no family's service serves -> the generic servable (a
    version that is not an imported model is refused, and says so)."""
    if not root.is_dir():
        return {}
    return {p.name: GenericServable for p in sorted(root.iterdir())
            if p.is_dir() and not p.name.startswith(".") and p.name not in catalog.MODELS
            and any(v.is_dir() and v.name.isdigit() for v in p.iterdir())}


def create_app(**kw):
    return runtime_app("models", {}, None, ROUTES, discover=imported, **kw)
