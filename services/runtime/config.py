"""Runtime settings from environment variables (defaults documented in the README's configuration table)."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def usable_cpus() -> int:
    """CPUs this process may run on: the affinity mask, or the cgroup (container) CPU quota when lower."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            n = min(n, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, n)


def web_workers() -> int:
    """gunicorn workers: WEB_CONCURRENCY, else one per usable CPU (at most 4), on a GPU as well.

    Request parsing and JSON are Python and hold the GIL, so one process tops out near one core; each
    worker has its own batcher and ONNX Runtime session, so batches stay full enough at 2-4 workers. On an
    H100 one worker capped MNIST at 780 req/s whatever the concurrency, four made 2,400-2,800 (each holds
    its own CUDA context, a few hundred MiB of GPU memory), and a killed worker no longer takes the service
    down while its replacement loads."""
    if os.environ.get("WEB_CONCURRENCY"):
        return int(os.environ["WEB_CONCURRENCY"])
    return min(4, usable_cpus())


def model_repository() -> Path:
    return Path(os.environ.get("MODEL_REPOSITORY", REPO_ROOT / "exported_models"))


def model_device() -> str:
    dev = os.environ.get("MODEL_DEVICE", "auto").lower()
    if dev not in ("auto", "cpu", "cuda"):
        raise ValueError(f"MODEL_DEVICE must be auto, cpu or cuda, not {dev!r}")
    return dev


def batching_override(manifest_batching: dict) -> dict:
    """Manifest batching settings, overridden by MAX_BATCH_SIZE / MAX_QUEUE_DELAY_MS / MAX_QUEUE_SIZE."""
    out = dict(manifest_batching)
    if "MAX_BATCH_SIZE" in os.environ:
        out["max_batch_size"] = env_int("MAX_BATCH_SIZE", 64)
    if "MAX_QUEUE_DELAY_MS" in os.environ:
        out["max_queue_delay_ms"] = env_float("MAX_QUEUE_DELAY_MS", 2.0)
    out["max_queue_size"] = env_int("MAX_QUEUE_SIZE", int(out.get("max_queue_size", 1024)))
    return out


# Limits on everything a client can make the server compute (README: "Limits").
LIMITS = {
    "max_batch_items": env_int("LIMIT_BATCH_ITEMS", 64),       # images / texts per request
    "max_text_chars": env_int("LIMIT_TEXT_CHARS", 20000),      # per text (sentiment, translation)
    "max_prompt_chars": env_int("LIMIT_PROMPT_CHARS", 2000),   # text generation prompt
    "max_beam_size": env_int("LIMIT_BEAM_SIZE", 8),
    "max_translation_tokens": env_int("LIMIT_TRANSLATION_TOKENS", 128),
    "max_new_tokens": env_int("LIMIT_MAX_TOKENS", 1000),       # text generation
    "max_samples": env_int("LIMIT_GAN_SAMPLES", 64),           # GAN images per request
    "max_image_bytes": env_int("LIMIT_IMAGE_BYTES", 5 * 1024 * 1024),
    "max_image_pixels": env_int("LIMIT_IMAGE_PIXELS", 4096 * 4096),
    "max_body_bytes": env_int("MAX_BODY_BYTES", 16 * 1024 * 1024),
}
