"""The families and the services that serve them, each declared once: its name, port, models, routes, the task
its manifests record, what its pods ask of Kubernetes, and the defaults its processes start with. The stack, the
gateway's backend map, the OpenAPI document, ``python -m services``, the settings' documentation, the training
command (``training/jobs/NAME.py`` for every family), ``k8s/generate.py`` and the tests all read this table.
Each service's own routes are declared beside it (``services/NAME/routes.py``) and only gathered here;
``docs/adding-a-family.md`` says what a new family needs."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from services.gan.routes import ROUTES as GAN
from services.mnist.routes import ROUTES as MNIST
from services.models.routes import ROUTES as IMPORTED
from services.routes import Route
from services.sentiment.routes import ROUTES as SENTIMENT
from services.textgen.routes import ROUTES as TEXTGEN
from services.translation.routes import ROUTES as TRANSLATION


@dataclass(frozen=True)
class Resources:
    """What one pod asks of Kubernetes (``k8s/generate.py``), and how far its HorizontalPodAutoscaler may go."""
    cpu: str
    memory: str
    memory_limit: str
    max_replicas: int


@dataclass(frozen=True)
class Service:
    name: str
    port: int
    models: tuple[str, ...]
    routes: tuple[Route, ...]  # the service's own routes (native, OpenAI), which the gateway sends here
    task: str  # what its models' manifests record as their task (one of modelcore/manifest.py's)
    resources: Resources
    defaults: Mapping[str, str] = field(default_factory=dict)  # environment defaults of `python -m services NAME`
    imported: bool = False  # serves every model in the repository no other service names (found at run time)

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(r.path for r in self.routes)

    @property
    def app(self) -> str:
        """The service's Flask app, as gunicorn names it."""
        return f"services.{self.name}.app:create_app()"

    @property
    def training_job(self) -> str | None:
        """The module ``python -m training NAME`` runs (its ``run(options)``); imported models have none."""
        return None if self.imported else f"training.jobs.{self.name}"


SMALL = Resources("500m", "512Mi", "1Gi", 8)
SERVICES = (
    Service("mnist", 9001, ("mnist",), MNIST, "image-classification", SMALL),
    Service("sentiment", 9002, ("sentiment",), SENTIMENT, "text-classification", SMALL),
    Service("translation", 9003, ("translation_transformer", "translation_seq2seq"), TRANSLATION, "translation",
            Resources("1", "768Mi", "1536Mi", 8)),
    # a stream holds its request thread for its whole life, so 16 threads per worker are too few; and a step is
    # a [streams, 384] LSTM cell, too small to split well across ONNX Runtime threads (FINDINGS)
    Service("textgen", 9004, ("textgen",), TEXTGEN, "text-generation", Resources("1", "512Mi", "1Gi", 8),
            defaults={"GUNICORN_THREADS": "64", "ORT_INTRA_OP_THREADS": "1"}),
    Service("gan", 9005, ("gan",), GAN, "image-generation", Resources("500m", "512Mi", "1Gi", 4)),
    # python -m training import NAME SOURCE; size its pods for your models (docs/deployment.md). Models load
    # between requests, and glibc's threshold for giving a large block its own mapping rises with each such block
    # freed, so later blocks land in heaps that then cannot shrink: 40 models kept 0.4-0.65x their weights more.
    # A fixed threshold (glibc's starting one) returns them (FINDINGS).
    Service("models", 9006, (), IMPORTED, "generic", SMALL, defaults={"MALLOC_MMAP_THRESHOLD_": "131072"},
            imported=True),
)
GATEWAY_PORT = 8080
GRPC_PORTS = {"grpc-tfs": 8500, "grpc-v2": 8001}  # on the gateway: TF Serving's and the v2 protocol's gRPC APIs
MODELS = tuple(m for s in SERVICES for m in s.models)  # the families' models; imported ones are found at run time
ROUTES = {r.path: r for s in SERVICES for r in s.routes}  # every service's own route, by path
FAMILIES = tuple(s.name for s in SERVICES if s.training_job)  # the families `python -m training` trains
BY_NAME = {s.name: s for s in SERVICES}
