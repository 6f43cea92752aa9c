"""Refuse to start on a port something already listens on, naming the port and, where Linux lets us read it,
the process: a second stack beside a running one must fail at once, not share its traffic."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path


class PortBusy(SystemExit):
    pass


def listener(port: int) -> str | None:
    """'pid NAME' of the process listening on ``port``, read from /proc (None where it cannot be read)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{f[9]}]")
    for pid in filter(str.isdigit, os.listdir("/proc") if inodes else []):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in fds):
                name = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                return f"pid {pid}: {' '.join(name.split())[:120]}"
        except OSError:
            continue
    return None


def bind_error(host: str, port: int) -> OSError | None:
    """Why ``host:port`` cannot be bound now, or None when it can (SO_REUSEADDR, as gunicorn binds: a port in
    TIME_WAIT is no conflict)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc
    return None


def ensure_free(host: str, port: int) -> None:
    """Raise PortBusy (exit status 1, with a message) when ``host:port`` cannot be bound."""
    exc = bind_error(host, port)
    if exc is not None:
        who = listener(port)
        raise PortBusy(f"port {port} on {host} is in use ({who or exc.strerror}): stop what listens there, or "
                       f"choose other ports (GATEWAY_PORT, SERVICE_BASE_PORT)")


def free_port_block(n: int, host: str = "127.0.0.1") -> int:
    """The first of ``n`` consecutive free ports (a stack of its own for tests and load tests)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind((host, 0))
            base = s.getsockname()[1]
        if base + n < 65000 and all(bind_error(host, base + i) is None for i in range(n)):
            return base
    raise RuntimeError(f"no {n} consecutive free ports found")


@dataclass(frozen=True)
class StackPorts:
    """A whole stack on one block of free ports: the services from ``base`` in the catalog's order, then the
    gateway and its two gRPC ports (tests, benchmarks and load tests start stacks beside one that runs)."""
    base: int
    gateway: int
    grpc_tfs: int
    grpc_v2: int

    @classmethod
    def free(cls) -> StackPorts:
        from services import catalog
        services = len(catalog.SERVICES)
        base = free_port_block(services + 3)
        return cls(base, base + services, base + services + 1, base + services + 2)

    def args(self, grpc: bool = True) -> list[str]:
        """``python -m services.stack``'s port options (``grpc=False``: no gRPC ports)."""
        return ["--base-port", str(self.base), "--gateway-port", str(self.gateway), "--grpc-tfs-port",
                str(self.grpc_tfs if grpc else 0), "--grpc-v2-port", str(self.grpc_v2 if grpc else 0)]
