"""Celery tasks: thin. Load the run, call the training loop, map its outcome to the run's status."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from celery import signals

from db.store import Store, worker_name
from workers.celery_app import TRAIN_TASK, app
from workers.settings import get_settings
from workers.spec import parse_spec

log = logging.getLogger(__name__)
shutting_down = threading.Event()


class StoreSink:
    """Each flush is one transaction; the answer tells the loop whether someone pressed cancel."""

    def __init__(self, store: Store, run_id: int) -> None:
        self.store, self.run_id = store, run_id
        self.cancel_requested = False

    def write(self, rows: Sequence[tuple[int, str, float]]) -> None:
        self.cancel_requested = self.store.record(self.run_id, rows)

    def should_stop(self) -> bool:
        return self.cancel_requested or shutting_down.is_set()


def get_store() -> Store:
    return Store.from_url(get_settings().database_url)


@app.task(name=TRAIN_TASK)
def train(run_id: int) -> str:
    from workers import training

    settings, store = get_settings(), get_store()
    spec_row = store.get_run(run_id)
    if spec_row is None:
        return "missing"
    try:
        spec = parse_spec(spec_row.spec)
        device = training.resolve_device(spec.device)
    except Exception as exc:
        store.finish(run_id, "failed", f"{type(exc).__name__}: {exc}")
        return "failed"
    if store.claim(run_id, worker_name(), str(device), settings.heartbeat_timeout_s) is None:
        return "skipped"  # cancelled while queued, finished, or running on a live worker
    sink = StoreSink(store, run_id)
    try:
        outcome = training.run(spec, sink, device)
    except Exception as exc:
        log.exception("run %s failed", run_id)
        store.finish(run_id, "failed", f"{type(exc).__name__}: {exc}")
        return "failed"
    if outcome.status == "cancelled" and not sink.cancel_requested:
        store.finish(run_id, "failed", f"the worker shut down at step {outcome.steps} of {spec.steps}")
        return "failed"
    store.finish(run_id, outcome.status, outcome.message or None)
    return outcome.status


@signals.worker_shutting_down.connect
def _on_shutdown(**_: Any) -> None:
    shutting_down.set()


@signals.worker_init.connect
def _warm_up(**_: Any) -> None:
    """The first optimizer step imports torch._dynamo (~1 s); pay for it before the first run, not during."""
    import torch

    param = torch.nn.Parameter(torch.zeros(2))
    param.grad = torch.ones(2)
    for cls in (torch.optim.SGD, torch.optim.AdamW):
        cls([param], lr=0.1).step()
    lost = get_store().mark_lost_runs(get_settings().heartbeat_timeout_s)
    if lost:
        log.warning("marked runs %s failed: their worker stopped sending heartbeats", lost)
