"""The queue, for real: a private redis-server and real `python -m workers` processes (no eager mode)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time

import pytest
import redis

from tests.conftest import ROOT, Stack, wait_for
from workers.celery_app import TRAIN_TASK, app, submit
from workers.metrics import EVERY_STEP
from workers.spec import parse_spec

pytestmark = pytest.mark.live_worker


def spec(steps: int = 200, **changes: object):  # type: ignore[no-untyped-def]
    data = {"task": "digits-mlp", "optimizer": {"name": "adamw", "lr": 3e-3}, "steps": steps, "eval_every": 50}
    data.update(changes)
    return parse_spec(data)


def finished(stack: Stack, run_id: int, timeout: float = 60) -> str:
    return wait_for(
        lambda: (r := stack.store.get_run(run_id)) and r.status not in ("queued", "running") and r.status,
        timeout, f"run {run_id} to finish",
    )  # fmt: skip


def running_with_progress(stack: Stack, run_id: int) -> None:
    wait_for(lambda: (r := stack.store.get_run(run_id)) and r.status == "running" and r.progress > 0, 60, "progress")


def test_message_is_json_and_carries_only_the_run_id(stack: Stack) -> None:
    run_id = submit(stack.store, spec())  # no worker yet: the message waits in Redis
    raw = redis.Redis.from_url(stack.redis_url).lrange("auto", 0, -1)
    assert len(raw) == 1
    envelope = json.loads(raw[0])
    assert envelope["content-type"] == "application/json"
    args, kwargs, _ = json.loads(base64.b64decode(envelope["body"]))
    assert args == [run_id] and kwargs == {}
    assert app.conf.accept_content == ["json"] and app.conf.task_serializer == "json"


def test_a_run_trains_on_the_worker_and_every_metric_lands(stack: Stack, worker) -> None:  # type: ignore[no-untyped-def]
    run_id = submit(stack.store, spec(steps=200))
    assert finished(stack, run_id) == "completed"
    run = stack.store.get_run(run_id)
    assert run is not None and run.progress == 200 and run.device == "cpu" and run.worker and run.error is None
    frame = stack.store.metrics([run_id])
    per_step = len(EVERY_STEP)
    assert len(frame) == 200 * per_step + 4 * 2  # every per-step metric, and val loss/accuracy at 50, 100, 150, 200
    assert frame[frame.metric == "loss"].value.iloc[-1] < frame[frame.metric == "loss"].value.iloc[0]


def test_a_message_delivered_twice_trains_once(stack: Stack, worker) -> None:  # type: ignore[no-untyped-def]
    run_id = submit(stack.store, spec(steps=100))
    app.send_task(TRAIN_TASK, args=[run_id], queue="auto")  # a duplicate delivery
    assert finished(stack, run_id) == "completed"
    wait_for(lambda: "skipped" in worker.log_path.read_text(), 60, "the duplicate to be consumed and skipped")
    per_step = len(EVERY_STEP)
    assert len(stack.store.metrics([run_id])) == 100 * per_step + 2 * 2
    assert "skipped" in worker.log_path.read_text()


def test_cancel_stops_a_running_run(stack: Stack, worker) -> None:  # type: ignore[no-untyped-def]
    """How fast a cancel lands is a speed (the worker sees it at its next flush, ≤ OPTLAB_FLUSH_SECONDS); this
    checks that it lands, and that every metric up to the step it stopped at is kept."""
    run_id = submit(stack.store, spec(steps=100_000))
    running_with_progress(stack, run_id)
    assert stack.store.request_cancel(run_id) == "running"
    assert finished(stack, run_id) == "cancelled"
    progress = stack.store.get_run(run_id).progress  # type: ignore[union-attr]
    assert 0 < progress < 100_000 and stack.store.metrics([run_id]).step.max() == progress


def test_cancel_a_queued_run_before_it_starts(stack: Stack, worker) -> None:  # type: ignore[no-untyped-def]
    busy = submit(stack.store, spec(steps=100_000))
    running_with_progress(stack, busy)
    waiting = submit(stack.store, spec(steps=100))
    assert stack.store.request_cancel(waiting) == "cancelled"
    stack.store.request_cancel(busy)
    assert finished(stack, busy) == "cancelled"
    # the worker takes the cancelled run's message next, and must skip it
    wait_for(lambda: "skipped" in worker.log_path.read_text(), 60, "the cancelled run's message to be skipped")
    run = stack.store.get_run(waiting)
    assert run is not None and run.status == "cancelled" and run.started_at is None
    assert stack.store.metrics([waiting]).empty


def test_device_routing_cuda_waits_for_a_gpu_worker(stack: Stack, worker) -> None:  # type: ignore[no-untyped-def]
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the worker would take the cuda run")
    gpu_run = submit(stack.store, spec(steps=50, device="cuda"))
    cpu_run = submit(stack.store, spec(steps=50, device="cpu"))
    assert finished(stack, cpu_run) == "completed"
    time.sleep(1.0)
    assert stack.store.get_run(gpu_run).status == "queued"  # type: ignore[union-attr]
    assert redis.Redis.from_url(stack.redis_url).llen("cuda") == 1


def test_submit_with_the_broker_down_leaves_the_run_queued_and_says_so(stack: Stack) -> None:
    """The database is the source of truth: the run stays queued (a worker's reconciler sends its message once the
    queue is back), the id is printed, and exit 1 says the queue did not take it."""
    spec_file = stack.tmp / "spec.yaml"
    spec_file.write_text("task: digits-mlp\noptimizer: adamw\n")
    result = stack.cli("submit", str(spec_file), REDIS_URL="redis://:hush@127.0.0.1:1/0")
    assert result.returncode == 1, result.stderr
    (run,) = stack.store.list_runs()
    assert result.stdout.split() == [str(run.id)]
    assert f"run #{run.id} is queued, but the queue at redis://:**@127.0.0.1:1/0 did not take it" in result.stderr
    assert "hush" not in result.stderr  # the password is never printed
    assert run.status == "queued" and run.error is None


def test_worker_warms_up_before_taking_runs(stack: Stack) -> None:
    """The first run's first steps are not delayed by lazy imports (torch._dynamo at the first optimizer step,
    scikit-learn at the first task: ~1 s each): after the worker's warm-up, a user's first run imports nothing
    new. Checked by the modules imported, not by a time, so a busy machine cannot fail it."""
    code = (
        "import sys, torch\n"
        "from workers import tasks, training\n"
        "from workers.spec import parse_spec\n"
        "tasks._warm_up()\n"
        "before = set(sys.modules)\n"
        "spec = parse_spec({'task': 'digits-mlp', 'optimizer': 'adamw', 'steps': 3, 'eval_every': 2})\n"
        "training.run(spec, training.ListSink(), torch.device('cpu'))\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=stack.env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"the first run imported {done.stdout.strip()}"


def test_a_200_run_sweep_loses_no_run_with_two_workers_consuming(stack: Stack, start_worker) -> None:  # type: ignore[no-untyped-def]
    from workers.celery_app import submit_sweep
    from workers.sweep import build, load_sweep

    sweep = load_sweep(
        "base: {task: quadratic, optimizer: {name: sgd, lr: 0.1}, steps: 3, eval_every: 3, batch: {size: 8}}\n"
        "grid: {seed: [" + ", ".join(map(str, range(200))) + "]}\n"
    )
    sweep_id = submit_sweep(stack.store, "big", sweep.model_dump(mode="json"), build(sweep))
    start_worker("w1"), start_worker("w2")

    def settled() -> bool:
        return all(r.status not in ("queued", "running") for r in stack.store.list_runs(sweep_id=sweep_id))

    wait_for(settled, 240, "200 runs to finish")
    runs = stack.store.list_runs(sweep_id=sweep_id)
    assert len(runs) == 200 and {r.status for r in runs} == {"completed"}
    assert {r.spec["seed"] for r in runs} == set(range(200))
    losses = stack.store.packed_curves([r.id for r in runs], "loss")
    assert len(losses) == 200 and all(len(steps) == 3 for steps, _ in losses.values())  # each trained once
