"""``make loadtest``: start the local stack on free ports of its own (unless LOADTEST_HOST names one, such as a
running ``make serve``), run Locust headless for a bounded time, stop the stack. Locust's CSV and HTML report
and the stack's log go to loadtest/results/ (ignored by git); ``--save`` writes them to bench/results/loadtest/
instead, for committing."""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from services.ports import StackPorts

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=int, default=60)
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--tags", default="")
    p.add_argument("--save", action="store_true", help="write the report to bench/results/loadtest/ (committed)")
    args = p.parse_args(argv)
    out = ROOT / "bench" / "results" / "loadtest" if args.save else ROOT / "loadtest" / "results"
    out.mkdir(parents=True, exist_ok=True)
    host = os.environ.get("LOADTEST_HOST")
    stack = None
    if not host:
        stack_ports = StackPorts.free()  # never the ports of a stack already running
        host = f"http://127.0.0.1:{stack_ports.gateway}"
        os.environ["GRPC_V2_TARGET"] = f"127.0.0.1:{stack_ports.grpc_v2}"  # for the locust process's GrpcUser
        print(f"starting a stack of its own: services from port {stack_ports.base}, gateway {host} "
              f"(log: {out / 'stack.log'})", flush=True)
        stack = subprocess.Popen([sys.executable, "-m", "services.stack", *stack_ports.args()],
                                 cwd=ROOT, start_new_session=True,
                                 stdout=open(out / "stack.log", "wb"), stderr=subprocess.STDOUT)
        for _ in range(300):
            if stack.poll() is not None:
                raise SystemExit(f"the stack exited: {(out / 'stack.log').read_text()[-2000:]}")
            try:
                if requests.get(host + "/v2/health/ready", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        else:
            os.killpg(stack.pid, signal.SIGTERM)
            raise SystemExit("stack did not become ready")
    cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest" / "locustfile.py"), "--headless",
           "--host", host, "-u", str(args.users), "-r", str(max(1, args.users // 4)), "-t", f"{args.seconds}s",
           "--csv", str(out / "locust"), "--html", str(out / "locust.html"), "--only-summary"]
    if args.tags:
        cmd += ["--tags", *args.tags.split(",")]
    try:
        rc = subprocess.run(cmd, cwd=ROOT).returncode
    finally:
        if stack is not None:
            os.killpg(stack.pid, signal.SIGTERM)
            stack.wait(60)
    print(f"reports: {out}/locust_stats.csv, {out}/locust.html")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
