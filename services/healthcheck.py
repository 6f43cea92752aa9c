"""``python -m services.healthcheck``: exit 0 when this container's server answers /v2/health/live (the
Dockerfile HEALTHCHECK; the port is GATEWAY_PORT or PORT, as ``python -m services`` uses them)."""
import os
import sys
import urllib.request

port = os.environ.get("GATEWAY_PORT") or os.environ.get("PORT") or "8080"
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/live", timeout=2) as r:
        sys.exit(0 if r.status == 200 else 1)
except OSError:
    sys.exit(1)
