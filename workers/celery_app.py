"""The one Celery app. JSON only; messages carry a run id and nothing else; the database holds the state.

Queues name devices: a spec with `device: cuda` goes to `cuda`, `cpu` to `cpu`, `auto` to `auto`. A worker
with a GPU consumes `cuda,auto`; a worker without one consumes `cpu,auto` (see workers/__main__.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery

from db.store import Store
from workers.settings import get_settings
from workers.spec import RunSpec

TRAIN_TASK = "optlab.train"
QUEUES = ("auto", "cpu", "cuda")

app = Celery("optlab", include=["workers.tasks"])
app.conf.update(
    broker_url=get_settings().redis_url,
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    event_serializer="json",
    task_ignore_result=True,
    task_acks_late=True,  # a message is acknowledged after the run ends, so a lost worker's run is redelivered
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,  # a worker holds one run at a time; the rest wait in Redis for any worker
    task_default_queue="auto",
    broker_connection_retry_on_startup=True,
    broker_connection_timeout=3,
    task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1},
    worker_hijack_root_logger=False,
)


class QueueUnavailable(RuntimeError):
    pass


def submit(store: Store, spec: RunSpec, sweep_id: int | None = None) -> int:
    """Record the run as queued, then send its id to the queue for its device.

    If the broker cannot be reached the run is marked failed with the reason (never left queued forever).
    """
    run_id = store.create_run(spec.name, spec.model_dump(mode="json"), sweep_id)
    enqueue(store, run_id, spec.device)
    return run_id


def enqueue(store: Store, run_id: int, device: str) -> None:
    """Send a queued run's id to the queue for its device (a new run, or one `Store.requeue` reset)."""
    try:
        app.send_task(TRAIN_TASK, args=[run_id], queue=device)
    except Exception as exc:  # kombu raises several connection error types
        message = f"could not reach the queue at {app.conf.broker_url}: {exc}"
        store.finish(run_id, "failed", message)
        raise QueueUnavailable(message) from exc


def submit_sweep(store: Store, name: str, spec: dict[str, Any], runs: Sequence[RunSpec]) -> int:
    """Record the sweep and queue its runs (already expanded and validated). Returns the sweep id."""
    sweep_id = store.create_sweep(name, spec)
    for run in runs:
        submit(store, run, sweep_id)
    return sweep_id


def rerun(store: Store, run_ids: Sequence[int]) -> list[int]:
    """Reset the runs that did not complete and queue them again. Returns the ids queued."""
    reset = store.requeue(run_ids)
    for run in store.list_runs(ids=reset):
        enqueue(store, run.id, run.spec.get("device", "auto"))
    return reset
