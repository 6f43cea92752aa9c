"""Triton's model control across a service's workers: the set of models unloaded by request, in one JSON file
(``MODEL_CONTROL_FILE``) that every worker reads when it changes and writes under a lock."""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path


class ControlFile:
    def __init__(self, path: Path):
        self.path = Path(path)

    def stamp(self) -> tuple:
        """Changes whenever the set does (every write replaces the file: a new inode); one stat call."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return ()
        return st.st_ino, st.st_mtime_ns, st.st_size

    def read(self) -> set[str]:
        try:
            return set(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return set()

    def change(self, name: str, unload: bool) -> tuple[set[str], tuple]:
        """Add ``name`` to the set (``unload``) or take it out, one writer at a time across the workers; -> the
        set and its stamp as written."""
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            names = self.read()
            names = (names | {name}) if unload else (names - {name})
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(sorted(names)))
            os.replace(tmp, self.path)
            return names, self.stamp()
