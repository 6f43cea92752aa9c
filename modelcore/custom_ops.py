"""Operators beyond ONNX's standard set that an imported graph may hold, and the library that runs them:
onnxruntime-extensions' string operators (domain ``ai.onnx.contrib``), which tf2onnx emits for TensorFlow's string
ops (a Keras TextVectorization, StringLookup). A graph that uses them says so in its manifest (``custom_ops``),
and every session of it, in the import's checks and in the service, registers the library."""
from __future__ import annotations

DOMAIN = "ai.onnx.contrib"
LIBRARY = "onnxruntime-extensions"


def used_by(model) -> str | None:
    """The library an ONNX model's operators need (``LIBRARY``), or None for standard ONNX alone."""
    return LIBRARY if any(o.domain == DOMAIN for o in model.opset_import) else None


_PRELOADED: list = []  # the options that hold the library loaded for the process's life


def preload() -> None:
    """Load the library before TensorFlow is: loaded after it, the extensions' regular expressions bind to
    TensorFlow's own RE2 and answer otherwise (StringRegexReplace stripped nothing), so an import's parity check
    would compare the source with a wrong graph. A no-op where the library is not installed."""
    try:
        import onnxruntime as ort
        from onnxruntime_extensions import get_library_path
    except ImportError:
        return
    if not _PRELOADED:
        options = ort.SessionOptions()
        options.register_custom_ops_library(get_library_path())
        _PRELOADED.append(options)


def register(options, library: str) -> None:
    """Make ``library``'s operators known to sessions made with these ``onnxruntime.SessionOptions``."""
    if library != LIBRARY:
        raise RuntimeError(f"custom operators from {library!r} are not known here (only {LIBRARY})")
    try:
        from onnxruntime_extensions import get_library_path
    except ImportError:
        raise RuntimeError(f"the graph uses {LIBRARY}'s operators ({DOMAIN}), which are not installed: "
                           f"pip install {LIBRARY} (the serve, gpu and train extras have it)") from None
    options.register_custom_ops_library(get_library_path())
