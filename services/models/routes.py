"""The models service has no native route: an imported model speaks the protocols every model speaks (TF Serving
REST and gRPC, v2 over HTTP and gRPC), and the gateway finds it by name."""
from __future__ import annotations

from services.routes import Route

ROUTES: tuple[Route, ...] = ()
