"""Celery tasks: thin. Load the run, call the training loop, map its outcome to the run's status."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from typing import Any

from celery import signals

from db.store import Store, worker_name
from models.tasks import TASKS
from workers import reporter
from workers.celery_app import TRAIN_TASK, app
from workers.early_stopping import EarlyStopping, decide
from workers.settings import get_settings
from workers.spec import parse_spec

log = logging.getLogger(__name__)
shutting_down = threading.Event()


class SweepJudge:
    """Applies a sweep's early-stopping rule to one of its runs at each checkpoint the run has passed."""

    def __init__(self, store: Store, run_id: int, sweep_id: int, config: EarlyStopping, steps: int) -> None:
        self.store, self.run_id, self.sweep_id, self.config = store, run_id, sweep_id, config
        self._pending = list(config.checkpoints(steps))

    def __call__(self, progress: int) -> str | None:
        """The reason to stop, once `progress` has passed a checkpoint whose rule says so; else None."""
        while self._pending and self._pending[0] <= progress:
            step = self._pending.pop(0)
            lo, hi = self.config.window(step)
            means = self.store.window_means(self.sweep_id, self.config.metric, lo, hi)
            own = means.pop(self.run_id, None)
            if own is None:
                continue
            reason = decide(self.config, step, own, list(means.values()))
            if reason:
                return reason
        return None


class StoreSink:
    """Writes each flush in one transaction on a background thread, so training never waits on the database.

    The write's answer (did someone press cancel? did the sweep's early-stopping rule say stop?) is what
    `should_stop` reports at the next flush. A failed write is raised in the training thread at the next
    `write`, or by `close`, which waits for the last one.
    """

    def __init__(self, store: Store, run_id: int, judge: SweepJudge | None = None) -> None:
        self.store, self.run_id, self.judge = store, run_id, judge
        self.cancel_requested = False
        self.stop_reason: str | None = None
        self._pending: queue.Queue[Sequence[tuple[int, str, float]] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name=f"metrics-run-{run_id}", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while (rows := self._pending.get()) is not None:
            batch = list(rows)
            while not self._pending.empty():  # fold everything that queued up meanwhile into one transaction
                more = self._pending.get_nowait()
                if more is None:
                    self._pending.put(None)
                    break
                batch.extend(more)
            try:
                self.cancel_requested = self.store.record(self.run_id, batch)
                if self.judge is not None and batch and self.stop_reason is None:
                    self.stop_reason = self.judge(max(step for step, _, _ in batch))
            except BaseException as exc:  # surfaced in the training thread
                self._error = exc
                return

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def write(self, rows: Sequence[tuple[int, str, float]]) -> None:
        self._raise()
        self._pending.put(rows)

    def should_stop(self) -> bool:
        return self.cancel_requested or self.stop_reason is not None or shutting_down.is_set()

    def close(self) -> None:
        """Wait until every written row is in the database."""
        self._pending.put(None)
        self._thread.join()
        self._raise()


def get_store() -> Store:
    return Store.from_url(get_settings().database_url)


def _judge(store: Store, sweep_id: int | None, run_id: int, steps: int) -> SweepJudge | None:
    sweep = store.get_sweep(sweep_id) if sweep_id is not None else None
    if sweep is None:
        return None
    config = EarlyStopping.model_validate(sweep.spec.get("early_stopping") or {})
    return SweepJudge(store, run_id, sweep.id, config, steps) if config.rule != "none" else None


BLOCKED_RETRY_S = 3.0


@app.task(name=TRAIN_TASK, bind=True, max_retries=None)
def train(self: Any, run_id: int) -> str:
    """A message is a ticket for one run of its queue, not an order to train `run_id`: the worker takes over
    `run_id` if it is running on a worker that went silent (the message came back), and otherwise claims the
    run fair share says goes next in the queue (db.store.Store.dispatch_order). Every queued run has one
    message in its queue, so every run is trained once, in the order the database decides."""
    from workers import training

    settings, store = get_settings(), get_store()
    row = store.get_run(run_id)
    queue = row.queue if row is not None else (self.request.delivery_info or {}).get("routing_key") or "auto"
    if reporter.reporter is not None and reporter.reporter.draining:  # hand the ticket on to another worker
        app.send_task(TRAIN_TASK, args=[run_id], queue=queue)
        return "drained"
    device = str(training.resolve_device("cpu" if queue == "cpu" else "auto"))
    spec_row = store.claim_stale(run_id, worker_name(), device, settings.heartbeat_timeout_s)
    if spec_row is None:
        spec_row, blocked = store.claim_next(queue, worker_name(), device)
        if spec_row is None:
            if blocked:  # runs wait, but their owners are at their limit of runs at once: ask again soon
                raise self.retry(countdown=BLOCKED_RETRY_S, queue=queue)
            return "skipped"  # nothing waits in this queue (cancelled, finished, or taken by another worker)
    run_id = spec_row.id
    try:
        spec = parse_spec(spec_row.spec)
        torch_device = training.resolve_device(spec.device)
    except Exception as exc:
        store.finish(run_id, "failed", f"{type(exc).__name__}: {exc}")
        return "failed"
    sink = StoreSink(store, run_id, _judge(store, spec_row.sweep_id, run_id, spec.steps))
    if reporter.reporter is not None:
        reporter.reporter.run_id = run_id
    try:
        try:
            outcome = training.run(spec, sink, torch_device)
        finally:
            sink.close()  # every metric is in the database before the status changes
            if reporter.reporter is not None:
                reporter.reporter.run_id = None
    except Exception as exc:
        log.exception("run %s failed", run_id)
        store.finish(run_id, "failed", f"{type(exc).__name__}: {exc}")
        return "failed"
    if outcome.status == "cancelled" and sink.stop_reason and not sink.cancel_requested:
        store.finish(run_id, "stopped", f"stopped early at step {outcome.steps}: {sink.stop_reason}")
        return "stopped"
    if outcome.status == "cancelled" and not sink.cancel_requested:
        store.finish(run_id, "failed", f"the worker shut down at step {outcome.steps} of {spec.steps}")
        return "failed"
    store.finish(run_id, outcome.status, outcome.message or None)
    return outcome.status


@signals.worker_shutting_down.connect
def _on_shutdown(**_: Any) -> None:
    shutting_down.set()
    reporter.stop()


@signals.worker_ready.connect
def _start_reporting(sender: Any = None, **_: Any) -> None:
    """Report this worker every few seconds (device, state, run, CPU/GPU use) for the Workers page."""
    reporter.start(getattr(sender, "hostname", "") or "", get_settings().worker_report_s)


@signals.worker_init.connect
def _warm_up(**_: Any) -> None:
    """Pay for lazy imports before the first run, not during it: the first optimizer step imports torch._dynamo
    (~1 s), and the first task imports scikit-learn (~1 s). A two-step run on a tiny task warms every path the
    loop takes, so a user's first run shows its first points as fast as any later one."""
    import torch

    from workers import training

    warm = parse_spec({"task": {"name": "moons-mlp", "n_samples": 50}, "optimizer": "adamw", "steps": 2,
                       "eval_every": 1, "batch": {"size": 8}})  # fmt: skip
    training.run(warm, training.ListSink(), torch.device("cpu"))
    TASKS["digits-mlp"].build(seed=0, **TASKS["digits-mlp"].defaults)  # reads sklearn's digits once
    lost = get_store().mark_lost_runs(get_settings().heartbeat_timeout_s)
    if lost:
        log.warning("marked runs %s failed: their worker stopped sending heartbeats", lost)
