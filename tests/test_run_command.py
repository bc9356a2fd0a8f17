"""The README's run command itself: `make run` starts Redis (none answers at REDIS_URL), the database, a worker
and the UI; a run trains; Ctrl-C stops everything it started."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from app.serve import redis_answers
from tests.conftest import ROOT, free_port, http_ok, wait_for

pytestmark = pytest.mark.live_worker


def test_make_run_brings_everything_up_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    port, redis_port = free_port(), free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    env = {
        **os.environ, "OPTLAB_PORT": str(port), "REDIS_URL": redis_url,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'lab.db'}", "PYTHONUNBUFFERED": "1",
        "OPTLAB_STATE_DIR": str(tmp_path / "state"),  # its Redis's data and pid files, not the checkout's data/
    }  # fmt: skip
    assert not redis_answers(redis_url)
    log_path = tmp_path / "run.log"
    with open(log_path, "w") as log:
        make = subprocess.Popen(
            ["make", "run"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_for(lambda: "Optimizer Lab is up" in log_path.read_text() or make.poll() is not None, 120, "make run")
        assert make.poll() is None, log_path.read_text()
        assert f"http://127.0.0.1:{port}" in log_path.read_text()
        assert redis_answers(redis_url)  # it started its own Redis
        wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/_stcore/health"), 60, "the UI")
        wait_for(lambda: " ready." in log_path.read_text(), 60, "the worker")

        spec = "task: moons-mlp\noptimizer: adam\nsteps: 100\n"
        cli = [str(ROOT / ".venv" / "bin" / "python"), "-m", "app.cli", "submit", "-", "--wait", "--timeout", "60"]
        done = subprocess.run(cli, cwd=ROOT, env=env, input=spec, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr + log_path.read_text()[-3000:]
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        make.wait(60)
    wait_for(lambda: not redis_answers(redis_url), 60, "redis to stop")
    assert not http_ok(f"http://127.0.0.1:{port}/_stcore/health")
    leftover = subprocess.run(["pgrep", "-f", f"--server.port {port}"], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", "the UI outlived Ctrl-C"
    assert (tmp_path / "state" / "redis" / "appendonly.aof").exists()  # the private Redis is append-only
    assert list((tmp_path / "state" / "run").glob("serve-*.json")) == []  # a clean stop leaves no pid file
