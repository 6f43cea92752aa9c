"""Every setting of the services and the gateway, typed, with its environment variable, default and meaning.

A process reads its settings once when it starts (``ServiceSettings.load()``, ``GatewaySettings.from_env()``
when the gateway app is made). Two others read it by design: ``healthcheck.py`` (a probe run on its own, which
needs only the port) and ``tracing.py`` (OpenTelemetry's standard ``OTEL_*`` variables, the SDK's own).
``python -m services.settings`` writes docs/configuration.md from these classes, and a test fails when the two differ.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

from services import catalog

REPO_ROOT = Path(__file__).resolve().parent.parent


class SettingError(ValueError):
    """An environment variable that does not parse as its setting's type (the process refuses to start)."""


def setting(env: str, default, doc: str, choices: tuple | None = None, shown: str | None = None):
    """A dataclass field read from ``env``; ``shown`` is the default as the documentation states it."""
    return field(default=default, metadata={"env": env, "doc": doc, "choices": choices, "shown": shown})


def _parse(env: str, raw: str, typ, choices):
    base = [t for t in typing.get_args(typ) if t is not type(None)][0] if typing.get_args(typ) else typ
    try:
        if base is bool:
            if raw.lower() not in ("0", "1", "true", "false"):
                raise ValueError(raw)
            value = raw.lower() in ("1", "true")
        else:
            value = base(raw)
    except ValueError:
        raise SettingError(f"{env}={raw!r} is not a valid {base.__name__}") from None
    if choices and isinstance(value, str):
        value = value.lower()  # LOG_LEVEL=WARNING, MODEL_DEVICE=CPU
    if choices and value not in choices:
        raise SettingError(f"{env} must be one of {', '.join(map(str, choices))}, not {raw!r}")
    return value


class _FromEnv:
    @classmethod
    def from_env(cls, env: typing.Mapping[str, str] | None = None):
        env = os.environ if env is None else env
        hints = typing.get_type_hints(cls)
        values = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if "env" not in f.metadata:
                continue
            raw = env.get(f.metadata["env"], "")
            if raw != "":
                values[f.name] = _parse(f.metadata["env"], raw, hints[f.name], f.metadata["choices"])
        return cls(**values)


def _with_service_defaults(variable: str, general: str) -> str:
    """A setting's default as the documentation shows it: the general one, then the services' own."""
    own = [f"{s.name} {s.defaults[variable]}" for s in catalog.SERVICES if variable in s.defaults]
    return ", ".join([general, *own])


@dataclass(frozen=True)
class ProcessSettings(_FromEnv):
    """Every process: the services and the gateway under gunicorn."""
    host: str | None = setting("HOST", None, "bind address", shown="0.0.0.0 (`make serve`: 127.0.0.1)")
    port: int | None = setting("PORT", None, "service port (`GATEWAY_PORT` for the gateway; `make serve` numbers the "
                               "services from `SERVICE_BASE_PORT`, 9001)",
                               shown=", ".join(f"{s.name} {s.port}" for s in catalog.SERVICES))
    gateway_port: int = setting("GATEWAY_PORT", catalog.GATEWAY_PORT, "gateway port")
    base_port: int = setting("SERVICE_BASE_PORT", catalog.SERVICES[0].port, "`make serve`: the first service's "
                             f"port ({catalog.SERVICES[0].name}); the others follow")
    workers: int | None = setting("WEB_CONCURRENCY", None, "gunicorn workers; each has its own batchers and "
                                  "ONNX Runtime sessions", shown="services: one per usable CPU, at most 4; gateway: 1")
    threads: int = setting("GUNICORN_THREADS", 16, "request threads per worker (a stream holds one for its "
                           "whole life)", shown=_with_service_defaults("GUNICORN_THREADS", "16"))
    graceful_timeout: int = setting("GUNICORN_GRACEFUL_TIMEOUT", 30, "seconds in-flight requests get to finish "
                                    "after SIGTERM")
    log_level: str = setting("LOG_LEVEL", "info", "JSON logs on stderr, with `request_id`",
                             choices=("debug", "info", "warning", "error"))
    metrics_dir: Path | None = setting("PROMETHEUS_MULTIPROC_DIR", None, "where a service's workers share their "
                                       "metrics (prometheus_client's own variable)",
                                       shown="a new temporary folder at each start, with several workers")

    @property
    def bind_host(self) -> str:
        """Where a lone service or gateway listens (``make serve`` gives its own, 127.0.0.1, unless HOST is set)."""
        return self.host or "0.0.0.0"


# Per process, where the general defaults fit it badly (``python -m services NAME`` sets them unless given): each
# service's own in the catalog (why, beside each); the gateway's here, since one event loop proxies for every
# service and a second worker would only take CPU from them.
SERVICE_DEFAULTS = {**{s.name: dict(s.defaults) for s in catalog.SERVICES if s.defaults},
                    "gateway": {"WEB_CONCURRENCY": "1"}}


@dataclass(frozen=True)
class ServiceSettings(_FromEnv):
    """The model services."""
    model_repository: Path = setting("MODEL_REPOSITORY", REPO_ROOT / "exported_models",
                                     "model repository root (`NAME/VERSION/`)", shown="./exported_models")
    model_device: str = setting("MODEL_DEVICE", "auto", "`auto` (CUDA when onnxruntime-gpu sees a GPU, else CPU), "
                                "`cpu`, or `cuda` (refuses to start without one)", choices=("auto", "cpu", "cuda"))
    model_poll_seconds: float = setting("MODEL_POLL_SECONDS", 5.0, "how often a service looks for new or removed "
                                        "versions (0: never)")
    model_control_file: Path | None = setting("MODEL_CONTROL_FILE", None, "where a service's workers share "
                                              "explicit model loads and unloads (`/v2/repository/models/NAME/load`)",
                                              shown="a new temporary file at each start")
    model_memory_budget: int | None = setting("MODEL_MEMORY_BUDGET", None, "models service: bytes a pod's loaded "
                                              "models may hold, shared out over its workers; a load past it first "
                                              "unloads the least recently used",
                                              shown="60% of the container's memory limit (else of RAM), shared "
                                              "out over the workers")
    model_shared_weights: bool = setting("MODEL_SHARED_WEIGHTS", True, "models service: weights stay in the "
                                         "mapping of their file, one copy per pod whatever the workers (`0`: "
                                         "ONNX Runtime prepacks a faster private copy in each worker)",
                                         shown="`1`")
    cuda_tf32: bool = setting("CUDA_TF32", False, "`1` lets CUDA use TF32 (faster; answers then differ from the "
                              "CPU's by more than the 1e-4 every export is checked to)", shown="`0`")
    ort_threads: int | None = setting("ORT_INTRA_OP_THREADS", None, "ONNX Runtime threads per session",
                                      shown=_with_service_defaults("ORT_INTRA_OP_THREADS", "min(2, CPUs)"))
    max_batch_size: int | None = setting("MAX_BATCH_SIZE", None, "dynamic batcher: rows per batch",
                                         shown="the manifest's (e.g. 64)")
    max_queue_delay_ms: float | None = setting("MAX_QUEUE_DELAY_MS", None, "dynamic batcher: longest wait for a "
                                               "batch to fill", shown="the manifest's (e.g. 2)")
    max_queue_size: int | None = setting("MAX_QUEUE_SIZE", None, "rows waiting per batcher before 429",
                                         shown="the manifest's, else 1024")
    batches_in_flight: int | None = setting("BATCHES_IN_FLIGHT", None, "dynamic batcher: batches one graph may "
                                            "run at once (on a GPU the next one forms and starts while one runs)",
                                            shown="2 on CUDA, 1 on CPU")
    decoder_max_rows: int = setting("DECODER_MAX_ROWS", 256, "rows per decoder step (continuous batching)")
    max_active_sequences: int = setting("MAX_ACTIVE_SEQUENCES", 1024, "sequences in flight per process before 429")
    decode_timeout_seconds: float = setting("DECODE_TIMEOUT_SECONDS", 60.0, "longest a translation or generation "
                                            "may take")
    prefill_min_tokens: int = setting("PREFILL_MIN_TOKENS", 16, "textgen: a prompt this long or longer is read "
                                      "in one call before it joins the batch (0: always by the batched steps)")
    sse_flush_ms: float = setting("SSE_FLUSH_MS", 10.0, "textgen streams: tokens made in this interval leave in "
                                  "one write (the first token and the end at once; 0: a write per token)")
    limit_batch_items: int = setting("LIMIT_BATCH_ITEMS", 64, "images, texts or instances per request")
    limit_text_chars: int = setting("LIMIT_TEXT_CHARS", 20000, "characters per text (sentiment, translation)")
    limit_prompt_chars: int = setting("LIMIT_PROMPT_CHARS", 2000, "characters per prompt (text generation)")
    limit_beam_size: int = setting("LIMIT_BEAM_SIZE", 8, "largest translation beam")
    limit_translation_tokens: int = setting("LIMIT_TRANSLATION_TOKENS", 128, "longest translation, in tokens")
    limit_max_tokens: int = setting("LIMIT_MAX_TOKENS", 1000, "generated characters per request")
    limit_gan_samples: int = setting("LIMIT_GAN_SAMPLES", 64, "GAN images per request")
    limit_image_bytes: int = setting("LIMIT_IMAGE_BYTES", 5 * 1024 * 1024, "bytes per uploaded image",
                                     shown="5 MiB")
    limit_image_pixels: int = setting("LIMIT_IMAGE_PIXELS", 4096 * 4096, "pixels per uploaded image",
                                      shown="4096²")
    max_body_bytes: int = setting("MAX_BODY_BYTES", 16 * 1024 * 1024, "request body (413), on the services and "
                                  "the gateway", shown="16 MiB")

    @functools.cached_property
    def limits(self) -> dict[str, int]:
        """Everything a client can make the server compute, by the names the services use (made once)."""
        return {"max_batch_items": self.limit_batch_items, "max_text_chars": self.limit_text_chars,
                "max_prompt_chars": self.limit_prompt_chars, "max_beam_size": self.limit_beam_size,
                "max_translation_tokens": self.limit_translation_tokens, "max_new_tokens": self.limit_max_tokens,
                "max_samples": self.limit_gan_samples, "max_image_bytes": self.limit_image_bytes,
                "max_image_pixels": self.limit_image_pixels, "max_body_bytes": self.max_body_bytes}

    @staticmethod
    @functools.cache
    def load() -> "ServiceSettings":
        """This process's settings, read from the environment once, when it starts."""
        return ServiceSettings.from_env()


@dataclass(frozen=True)
class GatewaySettings(_FromEnv):
    """The gateway (read when its app is made)."""
    backends_file: Path | None = setting("GATEWAY_BACKENDS_FILE", None, "YAML backend map (`url`, `models`, "
                                         "`routes`, and `imported: true` on the backend that gets every model no "
                                         "other names); `BACKEND_<NAME>_URL` overrides one backend's URL",
                                         shown="built in: 127.0.0.1:9001-9006")
    api_keys: str = setting("GATEWAY_API_KEYS", "", "Bearer keys, comma-separated (none: open)", shown="none")
    api_keys_file: Path | None = setting("GATEWAY_API_KEYS_FILE", None, "Bearer keys, one per line", shown="none")
    rate_limit: str = setting("GATEWAY_RATE_LIMIT", "", "e.g. `100/second`, per API key (else client address)",
                              shown="off")
    rate_limit_storage: str = setting("GATEWAY_RATE_LIMIT_STORAGE", "memory://", "where the counts live "
                                      "(`redis://host:6379` to share them across gateway replicas)")
    trusted_proxies: str = setting("GATEWAY_TRUSTED_PROXIES", "", "proxies in front of the gateway (addresses or "
                                   "networks, comma-separated): from them, the client is the last "
                                   "`X-Forwarded-For` address that is not a trusted proxy", shown="none")
    upstream_timeout: float = setting("GATEWAY_UPSTREAM_TIMEOUT", 60.0, "seconds a backend may stay silent (504)")
    connect_timeout: float = setting("GATEWAY_CONNECT_TIMEOUT", 0.5, "seconds to connect to a backend (503)")
    models_replicas: str = setting("GATEWAY_MODELS_REPLICAS", "", "the models service's replicas, each imported "
                                   "model placed on one (two when hot): `dns:HOST:PORT` (a headless Service, looked "
                                   "up again and again) or URLs, comma-separated", shown="none: its one URL")
    replicas_refresh_seconds: float = setting("GATEWAY_REPLICAS_REFRESH_SECONDS", 5.0, "how often `dns:` replicas "
                                              "are looked up")
    hot_model_rps: float = setting("GATEWAY_HOT_MODEL_RPS", 100.0, "an imported model asked more often (requests a "
                                   "second, over 10 s) is served by two replicas")
    breaker_failures: int = setting("GATEWAY_BREAKER_FAILURES", 3, "failed calls that open a backend's circuit")
    breaker_reset_seconds: float = setting("GATEWAY_BREAKER_RESET_SECONDS", 5.0, "seconds before an open circuit "
                                           "lets a trial call through")
    grpc_tfs_port: int = setting("GRPC_TFS_PORT", catalog.GRPC_PORTS["grpc-tfs"], "TF Serving's gRPC API "
                                 "(PredictionService, ModelService) on the gateway's host (0: off)")
    grpc_v2_port: int = setting("GRPC_V2_PORT", catalog.GRPC_PORTS["grpc-v2"], "Open Inference Protocol v2 over gRPC "
                                "(Triton's GRPCInferenceService) on the gateway's host (0: off)")
    cors_origins: str = setting("GATEWAY_CORS_ORIGINS", "", "allowed browser origins, comma-separated",
                                shown="off")
    max_body_bytes: int = setting("MAX_BODY_BYTES", 16 * 1024 * 1024, "request body (413), checked before it is "
                                  "read", shown="16 MiB")
    backend_urls: tuple[tuple[str, str], ...] = ()  # (backend, url) from BACKEND_<NAME>_URL

    @classmethod
    def from_env(cls, env: typing.Mapping[str, str] | None = None) -> "GatewaySettings":
        env = os.environ if env is None else env
        urls = tuple((k[len("BACKEND_"):-len("_URL")].lower(), v) for k, v in sorted(env.items())
                     if k.startswith("BACKEND_") and k.endswith("_URL") and v)
        return dataclasses.replace(super().from_env(env), backend_urls=urls)


def markdown() -> str:
    """docs/configuration.md."""
    out = ["# Configuration", "",
           "Every setting is an environment variable, read once when a process starts. This page is written by",
           "`python -m services.settings` from `services/settings.py`.", ""]
    for cls in (ProcessSettings, ServiceSettings, GatewaySettings):
        title = (cls.__doc__ or cls.__name__).splitlines()[0].rstrip(".")
        out += [f"## {title}", "", "| variable | default | what |", "|---|---|---|"]
        for f in dataclasses.fields(cls):
            m = f.metadata
            if "env" not in m:
                continue
            default = m["shown"] or ("none" if f.default is None else f"`{f.default}`")
            listed = m["choices"] and not any(f"`{c}`" in m["doc"] for c in m["choices"])
            doc = m["doc"] + (f" ({', '.join(f'`{c}`' for c in m['choices'])})" if listed else "")
            out.append(f"| `{m['env']}` | {default} | {doc} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    path = REPO_ROOT / "docs" / "configuration.md"
    path.write_text(markdown(), "utf-8")
    print(f"wrote {path}", file=sys.stderr)
