"""The serving side: a shared runtime, one Flask app per model family, and the gateway."""
from importlib.metadata import PackageNotFoundError, version

try:  # the one version of the server, from pyproject.toml (what /v2 and the OpenAPI document report)
    __version__ = version("keras-onnx-serving")
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0+unknown"
# the Open Inference Protocol extensions every service and the gateway speak (``GET /v2``)
V2_EXTENSIONS = ["binary_tensor_data", "classification", "generate", "model_repository", "statistics"]
