"""Where a service's model versions live: the storage seam of the repository (``repository.py``).

``VersionStore`` is a local folder, ``MODEL_REPOSITORY/NAME/VERSION/`` with an optional ``NAME/serving.json``.
The repository asks it only what is below, so another store (object storage, later) is one more class with
these methods, which hands the servables a local folder of the version's files."""
from __future__ import annotations

import json
from pathlib import Path

from modelcore.manifest import ManifestError, load_and_verify


class VersionStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def versions(self, name: str) -> list[int]:
        """The model's versions, newest first (none when it has no folder)."""
        d = self.root / name
        if not d.is_dir():
            return []
        return sorted((int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit()), reverse=True)

    def folder(self, name: str, version: int) -> Path:
        """The version's files, where its servable reads them."""
        return self.root / name / str(version)

    def stamp(self, name: str, version: int) -> tuple:
        """Each file's name, size and modification time: a refused version is tried again once any file of it
        changes (a repaired graph, not only a new manifest)."""
        try:
            return tuple(sorted((f.name, st.st_size, st.st_mtime_ns) for f in self.folder(name, version).iterdir()
                                if f.is_file() and (st := f.stat())))
        except FileNotFoundError:
            return ()

    def manifest(self, name: str, version: int) -> dict:
        """The version's manifest, its schema and every file's sha256 checked; raises ManifestError."""
        vdir = self.folder(name, version)
        manifest = load_and_verify(vdir)
        if manifest["name"] != name:
            raise ManifestError(f"{vdir}: manifest name {manifest['name']!r} != directory {name!r}")
        return manifest

    def serving_file(self, name: str) -> Path:
        return self.root / name / "serving.json"

    def serving(self, name: str) -> dict | None:
        """``NAME/serving.json`` parsed (None: there is none); raises OSError or ValueError on a bad file."""
        path = self.serving_file(name)
        return json.loads(path.read_text()) if path.exists() else None
