"""Workers report themselves: a live worker shows its device, state and run; a killed one shows as lost; a drained
one finishes its run and takes no more. Real worker processes and Redis."""

from __future__ import annotations

import os
import signal

import pytest

from tests.conftest import HEARTBEAT_TIMEOUT_S, Stack, wait_for
from workers.celery_app import submit
from workers.spec import parse_spec

pytestmark = pytest.mark.live_worker


def spec(steps: int):  # type: ignore[no-untyped-def]
    return parse_spec({"task": "digits-mlp", "optimizer": "adamw", "steps": steps, "eval_every": steps})


def status_of(stack: Stack, name: str) -> str:
    (worker,) = [w for w in stack.store.list_workers() if w.name == name]
    return worker.status(HEARTBEAT_TIMEOUT_S)


def test_a_live_worker_reports_its_device_state_and_run_and_a_killed_one_is_lost(stack: Stack, start_worker) -> None:  # type: ignore[no-untyped-def]
    victim = start_worker("victim")
    name = wait_for(lambda: [w.name for w in stack.store.list_workers()], 60, "the worker's first report")[0]
    info = stack.store.list_workers()[0]
    assert info.kind == "cpu" and info.device.startswith("CPU, ") and info.state == "idle"
    assert 0 <= info.stats["cpu_percent"] <= 100 and 0 < info.stats["memory_percent"] <= 100
    assert name.endswith(f":{victim.process.pid}")

    run_id = submit(stack.store, spec(100_000))
    wait_for(lambda: status_of(stack, name) == f"training run {run_id}", 60, "the report of the run it trains")
    os.kill(victim.process.pid, signal.SIGKILL)
    victim.process.wait(10)
    wait_for(lambda: status_of(stack, name) == "lost", 60, "the killed worker to show as lost")


def test_a_drained_worker_finishes_its_run_and_takes_no_more(stack: Stack, worker) -> None:  # type: ignore[no-untyped-def]
    name = wait_for(lambda: [w.name for w in stack.store.list_workers()], 60, "the worker's first report")[0]
    first = submit(stack.store, spec(100_000))
    wait_for(lambda: (r := stack.store.get_run(first)) and r.status == "running", 60, "the first run to start")
    second = submit(stack.store, spec(20))
    assert stack.store.request_drain(name)
    wait_for(lambda: status_of(stack, name).startswith("draining"), 60, "the worker to say it drains")
    wait_for(lambda: "draining: this worker finishes" in worker.log_path.read_text(), 60, "the drain to take effect")
    stack.store.request_cancel(first)  # its run ends (as if finished) ...
    wait_for(lambda: (r := stack.store.get_run(first)) and r.status == "cancelled", 60, "the first run to end")
    wait_for(lambda: status_of(stack, name) == "draining (idle)", 60, "the worker to report itself idle")
    assert stack.store.get_run(second).status == "queued"  # type: ignore[union-attr]  # ... and takes no more
    assert stack.store.request_drain(name, drain=False)
    wait_for(lambda: (r := stack.store.get_run(second)) and r.status == "completed", 120, "the worker to resume")
