"""``python -m services.stack``: the whole stack on one machine under supervisord (what ``make serve`` runs).

Six services (the five families and the imported models) and the gateway, each a gunicorn process that
supervisord restarts if it dies. Ctrl-C or SIGTERM stops everything cleanly: supervisord sends SIGTERM to each
program and gunicorn drains in-flight requests first. The stack is ready when
``GET http://127.0.0.1:$GATEWAY_PORT/v2/health/ready`` is 200; a one-shot ``ready`` program prints that line.
"""
from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml  # type: ignore[import-untyped]  # no stubs without types-PyYAML

from services import catalog
from services.gateway.backends import backend_map
from services.settings import GatewaySettings, ProcessSettings

ROOT = Path(__file__).resolve().parent.parent


def services_for(repository: Path | None) -> list[str]:
    """The services to start: all of them on the shipped repository; on a repository of one's own, the families
    whose models it holds and the ``models`` service (its other models, and those imported while it runs)."""
    if repository is None:
        return [s.name for s in catalog.SERVICES]
    held = {p.parent.parent.name for p in repository.glob("*/*/manifest.json") if p.parent.name.isdigit()}
    return [s.name for s in catalog.SERVICES if s.imported or held & set(s.models)]


def service_ports(base_port: int, chosen: list[str]) -> dict[str, int]:
    """The chosen services' ports: each keeps its place in the catalog's numbering from ``base_port``."""
    return {s.name: base_port + i for i, s in enumerate(catalog.SERVICES) if s.name in chosen}


def config(workdir: Path, gateway_port: int, ports: dict[str, int], host: str, grpc_ports: tuple[int, int],
           repository: Path | None = None) -> str:
    """``ports``: the services to start (``service_ports``), by name."""
    py = sys.executable
    # the gateway's backends: exactly the services started, so that its readiness waits for no other
    backends = backend_map(lambda s: f"127.0.0.1:{ports.get(s.name, 0)}")
    backends["backends"] = {n: b for n, b in backends["backends"].items() if n in ports}
    (workdir / "backends.yaml").write_text(yaml.safe_dump(backends, sort_keys=False))
    repository_env = f',MODEL_REPOSITORY="{repository}"' if repository is not None else ""
    grace = ProcessSettings.from_env().graceful_timeout + 5
    out = [f"""[supervisord]
nodaemon=true
logfile={workdir}/supervisord.log
pidfile={workdir}/supervisord.pid
childlogdir={workdir}
loglevel=warn

[unix_http_server]
file={workdir}/supervisor.sock

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{workdir}/supervisor.sock
"""]

    def program(name: str, cmd: str, env: str, restart: bool = True, priority: int = 100) -> str:
        return f"""
[program:{name}]
priority={priority}
command={cmd}
directory={ROOT}
environment={env}
autostart=true
autorestart={'true' if restart else 'false'}
startsecs={1 if restart else 0}
startretries=100
stopsignal=TERM
stopwaitsecs={grace}
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile=/dev/stdout
stdout_logfile_maxbytes=0
"""
    for n, p in ports.items():
        # the workers' shared metrics and model control, in the stack's folder: removed with it even when a
        # service was killed (a restarted one keeps the models that were unloaded)
        metrics_dir = workdir / f"prometheus-{n}"
        metrics_dir.mkdir(exist_ok=True)
        out.append(program(n, f"{py} -m services {n}", f'PORT="{p}",HOST="{host}",PYTHONUNBUFFERED="1",'
                                                      f'PROMETHEUS_MULTIPROC_DIR="{metrics_dir}",'
                                                      f'MODEL_CONTROL_FILE="{workdir}/unloaded-{n}.json"'
                                                      f'{repository_env}'))
    # Stopping drains from the outside in: supervisord stops one group at a time, the highest priority first.
    # The gateway goes first (it refuses new connections and finishes what it proxies, on services still up),
    # then the services together, as one group.
    out.append(program("gateway", f"{py} -m services gateway",
                       f'GATEWAY_PORT="{gateway_port}",HOST="{host}",PYTHONUNBUFFERED="1",'
                       f'GATEWAY_BACKENDS_FILE="{workdir}/backends.yaml",'
                       f'GRPC_TFS_PORT="{grpc_ports[0]}",GRPC_V2_PORT="{grpc_ports[1]}"', priority=200))
    out.append(f"\n[group:services]\nprograms={','.join(ports)}\npriority=100\n")
    out.append(program("ready", f"{py} -m services.stack --wait-ready http://127.0.0.1:{gateway_port}", 'X="1"',
                       restart=False))
    return "".join(out)


def wait_ready(url: str, timeout: float = 600) -> int:
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            with urllib.request.urlopen(url + "/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    print(f"\n==> stack ready in {time.time() - t0:.1f}s: demo page {url}/ · API docs {url}/docs · "
                          f"models {url}/api/models\n", flush=True)
                    return 0
        except OSError:
            pass
        time.sleep(0.5)
    print(f"==> stack not ready after {timeout:.0f}s", flush=True)
    return 1


def main(argv=None) -> int:
    process, gateway = ProcessSettings.from_env(), GatewaySettings.from_env()
    p = argparse.ArgumentParser(prog="python -m services.stack", description=__doc__)
    p.add_argument("--gateway-port", type=int, default=process.gateway_port)
    p.add_argument("--base-port", type=int, default=process.base_port,
                   help="first service port (mnist); the others follow")
    p.add_argument("--grpc-tfs-port", type=int, default=gateway.grpc_tfs_port,
                   help="TF Serving's gRPC API on the gateway (0: off)")
    p.add_argument("--grpc-v2-port", type=int, default=gateway.grpc_v2_port,
                   help="the v2 protocol's gRPC API on the gateway (0: off)")
    p.add_argument("--host", default=process.host or "127.0.0.1")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--repository", type=Path, default=None,
                   help="a model repository of your own: only the services its models need (default: the shipped "
                        "one, every service)")
    p.add_argument("--wait-ready", metavar="URL", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.wait_ready:
        return wait_ready(args.wait_ready)
    from services.ports import ensure_free
    grpc_ports = (args.grpc_tfs_port, args.grpc_v2_port)
    repository = args.repository.resolve() if args.repository else None
    if repository is not None and not repository.is_dir():
        print(f"==> no model repository at {repository}: import a model into it first "
              f"(keras-onnx-serving import NAME SOURCE --repository {repository})", flush=True)
        return 2
    chosen = services_for(repository)
    ports = service_ports(args.base_port, chosen)
    for port in [args.gateway_port, *grpc_ports, *ports.values()]:
        if port:
            ensure_free(args.host, port)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="model-stack-"))
    workdir.mkdir(parents=True, exist_ok=True)
    made_workdir = args.workdir is None
    conf = workdir / "supervisord.conf"
    conf.write_text(config(workdir, args.gateway_port, ports, args.host, grpc_ports, repository))
    print(f"==> starting {len(chosen)} services ({', '.join(chosen)}; ports from {args.base_port}) and the gateway "
          f"(port {args.gateway_port}; gRPC: TF Serving {args.grpc_tfs_port or 'off'}, v2 {args.grpc_v2_port or 'off'})"
          f" under supervisord; config {conf}", flush=True)
    sup = subprocess.Popen([sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(conf)])
    for sig in (signal.SIGINT, signal.SIGTERM):  # supervisord stops every program, then this cleans up
        signal.signal(sig, lambda signum, _frame: sup.send_signal(signum))
    rc = sup.wait()
    if made_workdir:  # its logs and sockets: nothing is left behind in the temporary folder
        shutil.rmtree(workdir, ignore_errors=True)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
