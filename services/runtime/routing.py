"""Which version answers a request: ``NAME/serving.json``'s labels and canary traffic, e.g.
``{"labels": {"stable": 8, "canary": 9}, "traffic": {"canary": 10}}``.

A request may name a label where it names a version; ``traffic`` sends that percentage of the requests that name
no version to the labelled version, and the rest go to the version labelled ``stable`` when there is one, else
to the newest. ``pinned`` (with a memory budget) keeps a model loaded from the start."""
from __future__ import annotations

import random

from services.runtime.errors import NotFound
from services.runtime.validation import Checked

SERVING = Checked({"type": "object", "additionalProperties": False, "properties": {
    "pinned": {"type": "boolean"},
    "labels": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1}},
    "traffic": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0, "maximum": 100}}}})


def accepted(raw: dict | None, known: list[int], where: str) -> dict:
    """A ``serving.json`` as the repository keeps it, once its labels name ``known`` versions (``where`` they
    are, for the message) and its traffic names its labels; raises ValueError or ApiError naming what is wrong."""
    cfg = SERVING(raw) if raw is not None else {}
    labels, traffic = cfg.get("labels", {}), cfg.get("traffic", {})
    for label, version in labels.items():
        if version not in known:
            raise ValueError(f"label '{label}' names version {version}, which is not {where} ({where}: "
                             f"{known or 'none'})")
    for label in traffic:
        if label not in labels:
            raise ValueError(f"traffic names label '{label}', which 'labels' does not define")
    if sum(traffic.values()) > 100:
        raise ValueError(f"traffic adds up to {sum(traffic.values())}%, over 100%")
    return {"labels": labels, "traffic": traffic, "pinned": cfg.get("pinned", False)}


def version_number(serving: dict, name: str, version: str | int) -> int:
    """A version as a request names it, a number or a label, as its number."""
    try:
        return int(version)
    except (TypeError, ValueError):
        labels = serving.get("labels", {})
        if version in labels:
            return labels[version]
        raise NotFound(f"version '{version}' of model '{name}' is neither a number nor a label (labels: "
                       f"{sorted(labels) or 'none'})", field="version") from None


def canary(serving: dict) -> int | None:
    """The version a request without a version goes to: a labelled one by ``traffic``, else ``stable``'s; None:
    the newest."""
    draw, total = random.uniform(0, 100), 0.0
    for label, percent in serving.get("traffic", {}).items():
        total += percent
        if draw < total:
            return serving["labels"][label]
    return serving.get("labels", {}).get("stable")
