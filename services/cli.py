"""``keras-onnx-serving``: the installed command, for your own repository of models, outside this checkout.

    keras-onnx-serving import NAME SOURCE [import options]   # into the repository (python -m training import)
    keras-onnx-serving serve [stack options]                 # the gateway and the services it needs

The repository is ``--repository DIR``, else ``$MODEL_REPOSITORY``, else ``./models``. ``serve`` starts the
family services whose models are in it (none, for a repository of your own models), the ``models`` service that
serves every other model there (and what you import while it runs), and the gateway in front of them.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def repository(given: Path | None) -> Path:
    return (given or Path(os.environ.get("MODEL_REPOSITORY") or "models")).resolve()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("import", "serve"):
        print(__doc__, file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    command, rest = argv[0], argv[1:]
    p = argparse.ArgumentParser(add_help=False)  # --repository here; every other option is the command's own
    p.add_argument("--repository", type=Path)
    known, rest = p.parse_known_args(rest)
    repo = repository(known.repository)
    if command == "import":
        from training import importer
        repo.mkdir(parents=True, exist_ok=True)
        return importer.main([*rest, "--out", str(repo)])
    from services import stack
    return stack.main([*rest, "--repository", str(repo)])


if __name__ == "__main__":
    raise SystemExit(main())
