# syntax=docker/dockerfile:1.7
# Targets: serve-cpu (default), serve-gpu, train.  One serving image runs any service or the gateway:
#   docker run -p 8080:8080 IMAGE gateway      docker run IMAGE mnist      (see `python -m services`)

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---------------------------------------------------------------- wheels (build stage: pip only)
FROM ${PYTHON_IMAGE} AS build-cpu
WORKDIR /src
COPY pyproject.toml README.md ./
COPY modelcore ./modelcore
COPY services ./services
COPY training ./training
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check ".[serve]"

# ---------------------------------------------------------------- serve-cpu
FROM ${PYTHON_IMAGE} AS serve-cpu
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    MODEL_REPOSITORY=/models HOST=0.0.0.0
RUN groupadd --gid 10001 app && useradd --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app
COPY --from=build-cpu /opt/venv /opt/venv
WORKDIR /app
COPY --chown=root:root modelcore ./modelcore
COPY --chown=root:root services ./services
# the shipped models; mount a volume on /models to serve others
COPY --chown=root:root exported_models /models
USER 10001:10001
EXPOSE 8080 8500 8001 9001 9002 9003 9004 9005 9006
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-m", "services.healthcheck"]
ENTRYPOINT ["python", "-m", "services"]
CMD ["gateway"]

# ---------------------------------------------------------------- serve-gpu (onnxruntime-gpu 1.31 for CUDA 13)
# CUDA and cuDNN come from the gpu extra's pip packages (services/runtime/sessions.py preloads them), so the
# base needs no CUDA of its own; the NVIDIA container runtime mounts the driver (580 or newer for CUDA 13).
FROM ubuntu:24.04 AS serve-gpu
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    MODEL_REPOSITORY=/models HOST=0.0.0.0 MODEL_DEVICE=cuda DEBIAN_FRONTEND=noninteractive \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 app && useradd --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app
WORKDIR /app
COPY pyproject.toml README.md ./
COPY modelcore ./modelcore
COPY services ./services
COPY training ./training
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check ".[gpu]" \
 && rm -rf training pyproject.toml README.md
COPY --chown=root:root exported_models /models
USER 10001:10001
EXPOSE 8080 8500 8001 9001 9002 9003 9004 9005 9006
HEALTHCHECK --interval=15s --timeout=3s --start-period=90s --retries=3 \
  CMD ["python", "-m", "services.healthcheck"]
ENTRYPOINT ["python", "-m", "services"]
CMD ["mnist"]

# ---------------------------------------------------------------- train (TensorFlow CPU + tf2onnx)
FROM ${PYTHON_IMAGE} AS train
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 DATA_CACHE=/work/data
RUN groupadd --gid 10001 app && useradd --uid 10001 --gid app --create-home --shell /usr/sbin/nologin app
WORKDIR /app
COPY pyproject.toml README.md ./
COPY modelcore ./modelcore
COPY services ./services
COPY training ./training
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check ".[train]"
USER 10001:10001
ENTRYPOINT ["python", "-m", "training"]
CMD ["mnist"]

# the default target
FROM serve-cpu
