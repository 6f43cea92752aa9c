"""The services and the models each one serves, written once: the stack, the gateway's built-in backend map,
the OpenAPI document, k8s/generate.py and the tests all read this table. Each service's own routes are declared
beside it (``services/NAME/routes.py``) and only gathered here."""
from __future__ import annotations

from dataclasses import dataclass

from services.gan.routes import ROUTES as GAN
from services.mnist.routes import ROUTES as MNIST
from services.models.routes import ROUTES as IMPORTED
from services.routes import Route
from services.sentiment.routes import ROUTES as SENTIMENT
from services.textgen.routes import ROUTES as TEXTGEN
from services.translation.routes import ROUTES as TRANSLATION


@dataclass(frozen=True)
class Service:
    name: str
    port: int
    models: tuple[str, ...]
    routes: tuple[Route, ...]  # the service's own routes (native, OpenAI), which the gateway sends here
    imported: bool = False  # serves every model in the repository no other service names (found at run time)

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(r.path for r in self.routes)


SERVICES = (
    Service("mnist", 9001, ("mnist",), MNIST),
    Service("sentiment", 9002, ("sentiment",), SENTIMENT),
    Service("translation", 9003, ("translation_transformer", "translation_seq2seq"), TRANSLATION),
    Service("textgen", 9004, ("textgen",), TEXTGEN),
    Service("gan", 9005, ("gan",), GAN),
    Service("models", 9006, (), IMPORTED, imported=True),  # python -m training import NAME SOURCE
)
GATEWAY_PORT = 8080
GRPC_PORTS = {"grpc-tfs": 8500, "grpc-v2": 8001}  # on the gateway: TF Serving's and the v2 protocol's gRPC APIs
MODELS = tuple(m for s in SERVICES for m in s.models)  # the families' models; imported ones are found at run time
ROUTES = {r.path: r for s in SERVICES for r in s.routes}  # every service's own route, by path
