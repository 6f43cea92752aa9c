"""``make loadtest``: start the local stack (unless LOADTEST_HOST names one), run Locust headless for a
bounded time, write Locust's CSV and HTML report under bench/results/loadtest/, stop the stack."""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=int, default=60)
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--tags", default="")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "loadtest")
    args = p.parse_args(argv)
    host = os.environ.get("LOADTEST_HOST")
    stack = None
    if not host:
        port = os.environ.get("GATEWAY_PORT", "8080")
        host = f"http://127.0.0.1:{port}"
        stack = subprocess.Popen([sys.executable, "-m", "services.stack", "--gateway-port", port], cwd=ROOT,
                                 start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(300):
            try:
                if requests.get(host + "/v2/health/ready", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        else:
            os.killpg(stack.pid, signal.SIGTERM)
            raise SystemExit("stack did not become ready")
    args.out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest" / "locustfile.py"), "--headless",
           "--host", host, "-u", str(args.users), "-r", str(max(1, args.users // 4)), "-t", f"{args.seconds}s",
           "--csv", str(args.out / "locust"), "--html", str(args.out / "locust.html"), "--only-summary"]
    if args.tags:
        cmd += ["--tags", *args.tags.split(",")]
    try:
        rc = subprocess.run(cmd, cwd=ROOT).returncode
    finally:
        if stack is not None:
            os.killpg(stack.pid, signal.SIGTERM)
            stack.wait(60)
    print(f"reports: {args.out}/locust_stats.csv, {args.out}/locust.html")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
