"""The model-repository manifest: one JSON schema for every model, shared by the training export and the runtime.

A version directory ``exported_models/NAME/VERSION/`` holds ``manifest.json`` plus the files it lists, each
with its sha256. The runtime refuses a version whose manifest does not validate or whose files do not match.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jsonschema

from modelcore import custom_ops
from modelcore.datatypes import MANIFEST_NAMES

SCHEMA_VERSION = 1

_TENSOR = {
    "type": "object",
    "required": ["name", "dtype", "shape"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "dtype": {"enum": MANIFEST_NAMES},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": -1}},
        "description": {"type": "string"},
    },
}

# What a model does, as its manifest records it; each family's service names its own (services/catalog.py)
TASKS = ("image-classification", "text-classification", "translation", "text-generation", "image-generation",
         "generic")  # generic: an imported model (training/importer.py)

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["schema_version", "name", "version", "task", "graphs", "preprocessing", "batching",
                 "metrics", "data", "training", "libraries", "parity", "files"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "name": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$"},
        "version": {"type": "integer", "minimum": 1},
        "task": {"enum": list(TASKS)},
        "description": {"type": "string"},
        "graphs": {
            "type": "object", "minProperties": 1,
            "additionalProperties": {
                "type": "object", "required": ["file", "inputs", "outputs"],
                "properties": {"file": {"type": "string"},
                               "custom_ops": {"enum": [custom_ops.LIBRARY]},  # operators beyond ONNX's
                               "inputs": {"type": "array", "items": _TENSOR, "minItems": 1},
                               "outputs": {"type": "array", "items": _TENSOR, "minItems": 1}},
            },
        },
        "preprocessing": {"type": "object"},
        "batching": {
            "type": "object", "required": ["max_batch_size", "max_queue_delay_ms"],
            "properties": {"max_batch_size": {"type": "integer", "minimum": 0},  # 0: no batching
                           "max_queue_delay_ms": {"type": "number", "minimum": 0}},
        },
        "metrics": {"type": "object"},
        "data": {"type": "object"},
        "training": {"type": "object", "required": ["command", "seed"]},
        "libraries": {"type": "object"},
        "parity": {
            "type": "object", "required": ["max_abs_diff", "tolerance"],
            "properties": {"max_abs_diff": {"type": "number", "minimum": 0},
                           "tolerance": {"type": "number", "exclusiveMinimum": 0}},
        },
        # a classifier output's class names: output -> a file of the version, one label a line
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "files": {
            "type": "object", "minProperties": 1,
            "additionalProperties": {
                "type": "object", "required": ["sha256", "bytes"],
                "properties": {"sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                               "bytes": {"type": "integer", "minimum": 0}},
            },
        },
    },
}


class ManifestError(ValueError):
    """A model version is not loadable: invalid manifest, missing file or checksum mismatch."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def validate(manifest: dict) -> None:
    try:
        jsonschema.validate(manifest, SCHEMA)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise ManifestError(f"manifest invalid at {where}: {exc.message}") from None
    for gname, graph in manifest["graphs"].items():
        if graph["file"] not in manifest["files"]:
            raise ManifestError(f"graph '{gname}' file {graph['file']} is not listed in files")


def load_and_verify(version_dir: Path) -> dict:
    """Read, validate and checksum a version directory; raise ManifestError naming what is wrong."""
    version_dir = Path(version_dir)
    mpath = version_dir / "manifest.json"
    if not mpath.is_file():
        raise ManifestError(f"{version_dir}: no manifest.json")
    try:
        manifest = json.loads(mpath.read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{mpath}: unreadable manifest: {exc}") from None
    validate(manifest)
    if str(manifest["version"]) != version_dir.name:
        raise ManifestError(f"{mpath}: version {manifest['version']} does not match directory {version_dir.name}")
    for fname, meta in manifest["files"].items():
        fpath = version_dir / fname
        if Path(fname).is_absolute() or ".." in Path(fname).parts:
            raise ManifestError(f"{mpath}: file name {fname!r} leaves the version directory")
        if not fpath.is_file():
            raise ManifestError(f"{version_dir}: listed file {fname} is missing")
        digest = sha256_file(fpath)
        if digest != meta["sha256"]:
            raise ManifestError(f"{fpath}: sha256 {digest} does not match manifest {meta['sha256']}")
    return manifest


def file_entries(version_dir: Path, names: list[str]) -> dict:
    return {n: {"sha256": sha256_file(version_dir / n), "bytes": (version_dir / n).stat().st_size} for n in names}
