"""The one Celery app. JSON only; messages carry a run id and nothing else; the database holds the state.

Queues name devices: a spec with `device: cuda` goes to `cuda`, `cpu` to `cpu`, `auto` to `auto`. A worker
with a GPU consumes `cuda,auto`; a worker without one consumes `cpu,auto` (see workers/__main__.py).
"""

from __future__ import annotations

import time
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


class QuotaExceeded(ValueError):
    """A submission over its owner's limits; nothing was queued. The message names the limit."""


WEEK_S = 7 * 24 * 3600.0


def check_quota(store: Store, owner_id: int | None, runs: Sequence[RunSpec]) -> None:
    """Refuse (QuotaExceeded) a submission of `runs` that would take their owner over a limit an admin set:
    runs queued at once, or GPU-hours in the last 7 days (for runs that need a GPU)."""
    user = store.get_user(user_id=owner_id) if owner_id is not None else None
    if user is None:
        return
    if user.max_queued is not None:
        queued = store.active_counts(user.id)["queued"]
        if queued + len(runs) > user.max_queued:
            raise QuotaExceeded(
                f"quota: {user.name} may have {user.max_queued} runs queued at once; {queued} are queued and this "
                f"adds {len(runs)} (nothing was queued; ask an admin to raise the limit)"
            )
    if user.gpu_hours_per_week is not None and any(r.device == "cuda" for r in runs):
        used = store.gpu_hours(user.id, since=time.time() - WEEK_S)
        if used >= user.gpu_hours_per_week:
            raise QuotaExceeded(
                f"quota: {user.name} has used {used:.1f} of {user.gpu_hours_per_week:g} GPU-hours in the last 7 "
                "days (nothing was queued; CPU runs are still allowed)"
            )


def submit(store: Store, spec: RunSpec, sweep_id: int | None = None, owner_id: int | None = None) -> int:
    """Record the run as queued (owned by `owner_id`), then send its id to the queue for its device.

    Over its owner's quota it raises QuotaExceeded and records nothing. If the broker cannot be reached the run
    is marked failed with the reason (never left queued forever).
    """
    if sweep_id is None:
        check_quota(store, owner_id, [spec])
    run_id = store.create_run(spec.name, spec.model_dump(mode="json"), sweep_id, owner_id=owner_id)
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


def submit_sweep(
    store: Store, name: str, spec: dict[str, Any], runs: Sequence[RunSpec], owner_id: int | None = None
) -> int:
    """Record the sweep and queue its runs (already expanded and validated), all or none by quota. Returns the
    sweep id."""
    check_quota(store, owner_id, runs)
    sweep_id = store.create_sweep(name, spec, owner_id=owner_id)
    for run in runs:
        submit(store, run, sweep_id, owner_id=owner_id)
    return sweep_id


def rerun(store: Store, run_ids: Sequence[int]) -> list[int]:
    """Reset the runs that did not complete and queue them again. Returns the ids queued."""
    reset = store.requeue(run_ids)
    for run in store.list_runs(ids=reset):
        enqueue(store, run.id, run.spec.get("device", "auto"))
    return reset
