"""The model repository as a service sees it: ``MODEL_REPOSITORY/NAME/VERSION/``.

Every valid version of the service's models is loaded side by side (the newest two), the
latest answering requests that name no version. A poll thread (``MODEL_POLL_SECONDS``) picks up new versions
without a restart: the new one is loaded and warmed up before it becomes visible, so requests never wait on
a load. A version whose manifest or checksums are wrong is refused with a log line and reported in the
readiness/status endpoints, and the version already serving keeps serving. Versions removed from disk are
unloaded after their in-flight requests finish (their batchers drain on close).

Where the versions are read from is ``version_store.py`` (a local folder). Version labels and canary traffic,
``NAME/serving.json``, are read at every refresh (``routing.py`` says what they mean); a file that names an
unknown label or a version that is not loaded is refused with a log line, and the previous routing stays.

A service whose models are not known in advance (the ``models`` service of imported models) passes ``discover``:
at every refresh it names the models now in the repository, and a model folder added or removed is loaded or
unloaded like a version. There, a model none of whose versions loads is reported, and does not hold the
service's readiness: one user's broken model must not take the others out of their Service.

With a memory budget (``budget``: the models service, ``MODEL_MEMORY_BUDGET``), a model loads on its first
request instead, unless its ``serving.json`` says ``"pinned": true`` (then at start, and it is never evicted).
Concurrent first requests for one version cause one load, and wait for it within their deadline. Loads run one
at a time: each is charged the memory it added (``budget.py``), and first retires the least recently used
unpinned versions (older versions first) until it fits; a retired version closes once its in-flight requests
finish. Only the newest version loads by default; an older one loads when a request names it.

Every lookup for inference takes a lease (``get(..., lease=True)``, returned with ``release``): a version that is
retired (evicted, removed from disk, superseded) closes when its last lease is returned, so no request in flight
is lost.

Triton's model control: ``unload(name)`` unloads every version of a model until ``load(name)``, in every worker
of the service (they share the set of unloaded models through ``MODEL_CONTROL_FILE``, ``model_control.py``),
and polling leaves an unloaded model alone.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import Callable

from services import tracing
from services.runtime import deadlines, metrics, routing
from services.runtime.budget import MemoryBudget, files_bytes, resident_bytes
from services.runtime.config import settings
from services.runtime.errors import ApiError, DeadlineExceeded, NotFound, Unavailable
from services.runtime.model_control import ControlFile
from services.runtime.servable import Servable
from services.runtime.version_store import VersionStore

log = logging.getLogger("runtime.repository")


MAX_VERSIONS = 2  # newest versions loaded side by side: the default and the one before it


class ModelRepository:
    def __init__(self, root: Path, factories: dict[str, Callable[[dict, Path], Servable]],
                 control_file: Path | None = None,
                 discover: Callable[[Path], dict[str, Callable[[dict, Path], Servable]]] | None = None,
                 budget: MemoryBudget | None = None):
        """``discover(root)``: the models in the repository now, name -> factory (``factories`` then start
        empty and follow it). ``budget``: models load on demand under it (None: every version at refresh)."""
        self.root = Path(root)
        self.store = VersionStore(self.root)
        self.discover = discover
        self.control = ControlFile(control_file) if control_file else None  # None: this process alone
        self.unloaded: set[str] = set()  # explicitly unloaded models, as last read from the control file
        self._control_stamp: tuple = ()
        self._sync_lock = threading.RLock()
        self._refresh_lock = threading.RLock()
        self.factories = factories          # model name -> Servable class
        self.loaded: dict[str, dict[int, Servable]] = {n: {} for n in factories}
        self.failed: dict[tuple[str, int], str] = {}     # (name, version) -> why it was refused
        self.serving: dict[str, dict] = {n: {} for n in factories}  # name -> its serving.json, once accepted
        self._serving_refused: dict[str, str] = {}  # name -> the last refusal logged
        self._failed_stamp: dict[tuple[str, int], tuple] = {}
        self.lock = threading.RLock()
        self.max_versions = MAX_VERSIONS if budget is None else 1
        self.budget = budget
        self.room = threading.Condition(self.lock)  # a retired version closed: its bytes came back
        self.on_disk: dict[str, list[int]] = {}   # newest first, as the last refresh found them
        self.loading: dict[tuple[str, int], threading.Event] = {}
        self._load_lock = threading.Lock()  # loads under a budget run one at a time: each one's growth is its own
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------ loading
    def refresh(self, only: str | None = None, read_control: bool = True) -> None:
        """Load new versions, unload removed ones (and every version of an explicitly unloaded model). Safe to
        call from any thread."""
        if read_control:
            self.sync()  # before the refresh lock: sync takes its own lock first, then refreshes (same order)
        with self._refresh_lock:  # one at a time (the poll, a load request): a version is loaded once, never twice
            self._refresh(only)

    def _refresh(self, only: str | None) -> None:
        departed = self._rediscover() if self.discover is not None and only is None else []
        for name, factory in self.factories.items():
            held = self.loaded.get(name)
            if held is None or only is not None and name != only:  # None: it left the repository meanwhile
                continue
            wanted: list[int] = []
            superseded = False  # under a budget: a newer version loaded now, and the older ones go
            on_disk = self.store.versions(name)
            self.on_disk[name] = on_disk
            for key in [k for k in self.failed if k[0] == name and k[1] not in on_disk]:
                self.failed.pop(key, None)  # a refused version that was removed is no longer reported
            if self.budget is not None:
                self._read_serving(name)  # before loading: it says whether the model is pinned
            for v in on_disk:
                if len(wanted) >= self.max_versions or name in self.unloaded:
                    break
                if v in held:
                    wanted.append(v)
                    continue
                if self.budget is not None:
                    # on demand, unless pinned or already serving (then a new version loads before it is seen)
                    if (name in self.pinned() or held) and self._admit_logged(name, v, factory):
                        wanted.append(v)
                        superseded = True
                    break
                servable = self._load(name, v, factory)
                if servable is not None:
                    with self.lock:
                        held[v] = servable
                    wanted.append(v)
            with self.lock:
                # under a budget, an older version a request named stays until evicted, unless a newer one just
                # loaded (only the newest stays by default); without one, only the newest two are kept
                keep_older = self.budget is not None and not superseded and name not in self.unloaded
                stale = [v for v in held if v not in wanted and not (keep_older and v in on_disk)]
                for v in stale:
                    self._retire(name, v, "removed from the repository" if v not in on_disk else "superseded")
            self._read_serving(name)
        if departed:
            with self.lock:  # their versions were unloaded above: the names go
                self.factories = {n: f for n, f in self.factories.items() if n not in departed}
                for n in departed:
                    self.loaded.pop(n, None), self.serving.pop(n, None), self.on_disk.pop(n, None)
                    for key in [k for k in self._failed_stamp if k[0] == n]:
                        self._failed_stamp.pop(key)

    def _rediscover(self) -> list[str]:
        """Take up the models ``discover`` finds; -> the names that left the repository (unloaded, then
        dropped, by ``refresh``)."""
        found = self.discover(self.root)  # type: ignore[misc]
        gone = [n for n in self.factories if n not in found]
        with self.lock:
            for n in found:
                self.loaded.setdefault(n, {})
                self.serving.setdefault(n, {})
            self.factories = {**found, **{n: self.factories[n] for n in gone}}  # replaced whole: readers iterate
        return gone

    def _read_serving(self, name: str) -> None:
        """``NAME/serving.json``: accepted when its labels name loaded versions and its traffic names labels;
        else logged once, and the previous routing stays."""
        path = self.store.serving_file(name)
        # under a budget a version loads when a request names it: a label may name any version on disk
        known, where = ((sorted(self.on_disk.get(name, [])), "on disk") if self.budget is not None else
                        (sorted(self.loaded.get(name, {})), "loaded"))
        try:
            accepted = routing.accepted(self.store.serving(name), known, where)
        except (OSError, ValueError, ApiError) as exc:
            why = str(exc.message if isinstance(exc, ApiError) else exc)
            if self._serving_refused.get(name) != why:
                log.error("refused %s: %s; the previous routing stays", path, why, extra={"model": name})
                self._serving_refused[name] = why
            return
        self._serving_refused.pop(name, None)
        self.serving[name] = accepted

    def pinned(self) -> set[str]:
        """The models whose ``serving.json`` pins them: loaded at start, never evicted."""
        return {n for n, cfg in self.serving.items() if cfg.get("pinned")}

    def _load(self, name: str, version: int, factory) -> Servable | None:
        vdir = self.store.folder(name, version)
        key = (name, version)
        stamp = self.store.stamp(name, version)
        if key in self.failed and self._failed_stamp.get(key) == stamp:
            return None  # already refused these very files; do not retry every poll
        t0 = time.perf_counter()
        try:
            servable = factory(self.store.manifest(name, version), vdir)
            servable.warm_up()
        except Exception as exc:  # noqa: BLE001 - any failure refuses this version only
            self.failed[key] = str(exc)
            self._failed_stamp[key] = stamp
            metrics.LOAD_FAILURES.labels(name, str(version)).inc()
            log.error("refused model version: %s", exc, extra={"model": name, "version": version})
            return None
        self.failed.pop(key, None)
        metrics.LOADED.labels(name, str(version), servable.device).set(1)
        log.info("loaded model version in %.2fs on %s", time.perf_counter() - t0, servable.device,
                 extra={"model": name, "version": version})
        return servable

    # ------------------------------------------------------------------------------ the budget, and leases
    def _admit(self, name: str, version: int, factory, deadline: float | None) -> bool:
        """Load a version under the budget: make room for its estimate, load it, charge what it added. False
        when it was refused (``failed`` says why); raises when no room can be made in time."""
        assert self.budget is not None
        key, vdir = (name, version), self.store.folder(name, version)
        with self._load_lock:
            if version in self.loaded.get(name, {}):
                return True
            if key in self.failed and self._failed_stamp.get(key) == self.store.stamp(name, version):
                return False
            estimate, files = self.budget.estimate(key, vdir), files_bytes(vdir)
            if files > self.budget.limit:
                self.failed[key] = (f"its files hold {files} bytes, more than the whole memory budget of "
                                    f"{self.budget.limit} bytes (MODEL_MEMORY_BUDGET): raise the budget")
                self._failed_stamp[key] = self.store.stamp(name, version)
                log.error("refused model version: %s", self.failed[key], extra={"model": name, "version": version})
                return False
            estimate = min(estimate, self.budget.limit)  # it may fit alone: all the others go
            with self.lock:
                self._make_room(estimate, deadline, key)
                self.budget.charge(key, estimate)  # held while it loads: a concurrent refresh counts it
            before = resident_bytes()
            servable = self._load(name, version, factory)
            with self.lock:
                if servable is None:
                    self.budget.release(key)
                    return False
                self.budget.measured(key, resident_bytes() - before, estimate, vdir)
                self.loaded.setdefault(name, {})[version] = servable
                metrics.LOADS.labels(name).inc()
            return True

    def _admit_logged(self, name: str, version: int, factory) -> bool:
        """``_admit`` for a refresh: no room (pinned models fill the budget) is logged, and the refresh goes on."""
        try:
            return self._admit(name, version, factory, None)
        except ApiError as exc:
            log.error("cannot load model version: %s", exc.message, extra={"model": name, "version": version})
            return False

    def _make_room(self, more: int, deadline: float | None, loading: tuple[str, int]) -> None:
        """Retire versions until ``more`` bytes fit, waiting for retired ones to close (under ``self.lock``)."""
        assert self.budget is not None
        while not self.budget.fits(more):
            loaded = [(n, v) for n, versions in self.loaded.items() for v in versions if (n, v) != loading]
            newest = {n: on[0] for n, on in self.on_disk.items() if on}
            victims = self.budget.victims(loaded, newest, self.pinned())
            if victims and not self.budget.fits(more - self.budget.closing_bytes):  # else: wait for those closing
                self._retire(*victims[0], "evicted to make room under the memory budget")
                metrics.EVICTIONS.labels(victims[0][0]).inc()
                continue
            if not self.budget.closing:
                raise Unavailable(f"the memory budget ({self.budget.limit} bytes) is held by pinned models and "
                                  f"loads: {more} more bytes do not fit; raise MODEL_MEMORY_BUDGET or unpin one",
                                  field="model", limit=self.budget.limit)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise DeadlineExceeded("the request's deadline passed while models closed to make room for its "
                                       "model", field="timeout")
            self.room.wait(left)

    def _retire(self, name: str, version: int, why: str) -> None:
        """Take a version out of service (under ``self.lock``); it closes once its last lease is returned."""
        s = self.loaded[name].pop(version)
        s.retired = True
        if self.budget is not None:
            self.budget.closing.add((name, version))
        log.info("unloading model version: %s", why, extra={"model": name, "version": version})
        if s.leases == 0:
            threading.Thread(target=self._close, args=(s,), daemon=True).start()

    def _close(self, s: Servable) -> None:
        s.close()
        if self.budget is not None:
            with self.lock:
                self.budget.release((s.name, s.version))
                self.room.notify_all()

    def release(self, s: Servable) -> None:
        """A request is done with ``s`` (``get(..., lease=True)``); the last one closes a retired version."""
        with self.lock:
            s.leases -= 1
            last = s.leases == 0 and s.retired
        if last:
            threading.Thread(target=self._close, args=(s,), daemon=True).start()

    def start_polling(self) -> None:
        interval = settings().model_poll_seconds
        if interval <= 0 or self._thread:
            return

        def loop():
            while not self._stop.wait(interval):
                try:
                    self.refresh()
                except Exception:  # noqa: BLE001
                    log.exception("repository poll failed")
        self._thread = threading.Thread(target=loop, name="repository-poll", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        with self.lock:
            servables = [s for versions in self.loaded.values() for s in versions.values()]
        for s in servables:
            s.close()

    # ------------------------------------------------------------------------------ lookup
    def names(self) -> list[str]:
        return list(self.factories)

    def check_name(self, name: str) -> None:
        if name not in self.factories:
            if self.discover is not None:  # the imported models' service: the gateway sends it every other name
                raise NotFound(f"model '{name}' is neither a shipped nor an imported model (imported: "
                               f"{sorted(self.factories) or 'none'}; every model: GET /api/models)", field="model")
            raise NotFound(f"model '{name}' is not served here (models: {sorted(self.factories)})", field="model")

    def get(self, name: str, version: str | int | None = None, lease: bool = False) -> Servable:
        """The servable of ``version`` (a number or a label; none: the canary's draw, else the newest), loaded
        now under a budget if it is not. ``lease``: the caller returns it with ``release`` when done."""
        self.check_name(name)
        self.sync()
        if name in self.unloaded:
            raise Unavailable(f"model '{name}' is unloaded; load it with POST /v2/repository/models/{name}/load",
                              field="model")
        while True:
            with self.lock:
                versions = self.loaded.get(name, {})  # a discovered model may have just left
                v = self._wanted_version(name, version, versions)
                if v in versions:
                    s = versions[v]
                    if lease:
                        s.leases += 1
                    if self.budget is not None:
                        self.budget.touch((name, v))
                    return s
                if self.budget is None or v not in self.on_disk.get(name, []):
                    loaded = sorted(versions) or "none"
                    raise NotFound(f"version {v} of model '{name}' is not loaded (loaded: {loaded})", field="version")
            self._load_on_request(name, v)

    def _wanted_version(self, name: str, version: str | int | None, versions: dict[int, Servable]) -> int:
        """The version number a request means (under ``self.lock``)."""
        if version is not None and version != "":
            return self.version_number(name, version)
        chosen = routing.canary(self.serving.get(name, {}))
        if self.budget is not None:  # the newest on disk, unless it was refused and an older one serves
            on_disk = [v for v in self.on_disk.get(name, []) if (name, v) not in self.failed or v in versions]
            if chosen in on_disk:
                return chosen
            if on_disk:
                return on_disk[0]
        if not versions:
            refused = "; ".join(f"version {v} was refused: {why}" for (n, v), why in self.failed.items() if n == name)
            raise Unavailable(f"model '{name}' has no loaded version" + (f" ({refused})" if refused else ""),
                              field="model")
        return chosen if chosen in versions else max(versions)

    def _load_on_request(self, name: str, version: int) -> None:
        """Load a version a request needs, once however many ask at the same time; each waits within its deadline."""
        key = (name, version)
        with self.lock:
            if key in self.failed and version not in self.loaded.get(name, {}) and \
                    self._failed_stamp.get(key) == self.store.stamp(name, version):
                raise Unavailable(f"version {version} of model '{name}' was refused: {self.failed[key]}", field="model")
            leader = key not in self.loading
            done = self.loading.setdefault(key, threading.Event())
        budget = deadlines.current.get()
        deadline = budget.deadline if budget is not None else None
        t0 = time.perf_counter()
        if leader:
            try:
                with tracing.span("cold load", attributes={"model": name, "version": version}):
                    self._admit(name, version, self.factories[name], deadline)
            finally:
                with self.lock:
                    self.loading.pop(key, None)
                done.set()
        elif not done.wait(None if deadline is None else max(0.0, deadline - time.monotonic())):
            raise DeadlineExceeded(f"the request's deadline passed while model '{name}' version {version} loaded",
                                   field="timeout")
        metrics.COLD_START.observe(time.perf_counter() - t0)
        with self.lock:
            if key in self.failed and version not in self.loaded.get(name, {}):
                raise Unavailable(f"version {version} of model '{name}' was refused: {self.failed[key]}", field="model")

    def version_number(self, name: str, version: str | int) -> int:
        """A version as a request names it, a number or a label of ``serving.json``, as its number."""
        return routing.version_number(self.serving.get(name, {}), name, version)

    def is_ready(self, name: str | None = None) -> bool:
        """A model: a version is loaded, or under a budget loads on its next request. The service: every model
        not explicitly unloaded has one."""
        self.sync()
        with self.lock:
            if name:
                return bool(self.loaded.get(name)) or self.budget is not None and name not in self.unloaded and \
                    any((name, v) not in self.failed for v in self.on_disk.get(name, [])[:1])
            refused = {n for n, _ in self.failed} if self.discover is not None else set()
            return self.budget is not None or \
                all(self.loaded.get(n) or n in refused for n in self.factories if n not in self.unloaded)

    def status(self, name: str) -> list[dict]:
        """Version states: AVAILABLE, LOADING, ON_DEMAND (under a budget: loads on its next request), UNLOADED
        (by request) or FAILED with the reason."""
        self.sync()
        if name in self.unloaded:
            return [{"version": str(v), "state": "UNLOADED", "error": "unloaded by request"}
                    for v in self.store.versions(name)[:self.max_versions]]
        with self.lock:
            out = [{"version": str(v), "state": "AVAILABLE", "device": s.device}
                   for v, s in sorted(self.loaded.get(name, {}).items(), reverse=True)]
            out += [{"version": str(v), "state": "LOADING"} for n, v in self.loading if n == name]
            listed = {int(st["version"]) for st in out} | {v for n, v in self.failed if n == name}
            if self.budget is not None:
                out += [{"version": str(v), "state": "ON_DEMAND", "error": "loads on its next request"}
                        for v in self.on_disk.get(name, [])[:1] if v not in listed]
        for key, err in self.failed.items():
            if key[0] == name:
                out.append({"version": str(key[1]), "state": "FAILED", "error": err})
        return out

    # ------------------------------------------------------------------------------ explicit load / unload
    def load(self, name: str) -> None:
        """Triton's load: the model serves again (a new version on disk is picked up now); raises Unavailable
        when no version of it loads."""
        self.check_name(name)
        self._change_control(name, unload=False)
        self.refresh(only=name)
        if self.budget is not None and not self.loaded.get(name):
            with contextlib.suppress(ApiError):  # refused: the reasons below
                self.get(name)
        if not self.loaded.get(name):
            reasons = "; ".join(f"version {v}: {err}" for (n, v), err in self.failed.items() if n == name)
            raise Unavailable(f"model '{name}' did not load: {reasons or 'no version on disk'}", field="model")

    def unload(self, name: str) -> None:
        """Triton's unload: every version goes once its in-flight requests finish, until ``load``."""
        self.check_name(name)
        self._change_control(name, unload=True)
        self.refresh(only=name)

    def sync(self) -> None:
        """Apply a load or unload that another worker of this service made (one stat call when none did)."""
        if self.control is None or self._control_stamp == self.control.stamp():
            return
        with self._sync_lock:  # requests arriving meanwhile wait for the load rather than answer 503
            stamp = self.control.stamp()
            if stamp == self._control_stamp:
                return
            before, self.unloaded = self.unloaded, self.control.read()
            for name in before ^ self.unloaded:
                self.refresh(only=name, read_control=False)
            self._control_stamp = stamp

    def _change_control(self, name: str, unload: bool) -> None:
        if self.control is None:
            (self.unloaded.add if unload else self.unloaded.discard)(name)
            return
        self.sync()  # what other workers changed first, so that only ``name`` is left to apply
        with self._sync_lock:
            self.unloaded, self._control_stamp = self.control.change(name, unload)
