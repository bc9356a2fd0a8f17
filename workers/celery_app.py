"""The one Celery app. JSON only; messages carry a run id and nothing else; the database holds the state.

Queues name devices: a spec with `device: cuda` goes to `cuda`, `cpu` to `cpu`, `auto` to `auto`. A worker
with a GPU consumes `cuda,auto`; a worker without one consumes `cpu,auto` (see workers/__main__.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from celery import Celery
from kombu.utils.url import maybe_sanitize_url

from db.store import Store
from workers.settings import get_settings
from workers.spec import RunSpec

TRAIN_TASK = "optlab.train"
QUEUES = ("auto", "cpu", "cuda")

# A publish gives up after about this long: connecting (2 s per try, retried within broker_connection_timeout)
# plus at most one more try of the publish itself. A broker that accepts connections and never answers used to
# hang `app.cli submit` for 90 s and more; now the run stays queued and a worker's reconciler sends it later.
BROKER_SOCKET_TIMEOUT_S = 2.0
BROKER_CONNECT_BUDGET_S = 3.0
# Unacknowledged messages (acks_late) go back to their queue after this long. Any value is safe: a message is
# only a ticket, and a worker trains a run only if its atomic claim in the database succeeds, so a redelivered
# message for a run that is still training (or already done) finds nothing to claim. Lost workers are noticed
# by their heartbeats (workers/reconciler.py), not by this timeout.
VISIBILITY_TIMEOUT_S = 3600

log = logging.getLogger(__name__)

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
    broker_connection_timeout=BROKER_CONNECT_BUDGET_S,  # all tries at connecting, together
    broker_transport_options={
        "socket_connect_timeout": BROKER_SOCKET_TIMEOUT_S,
        "socket_timeout": BROKER_SOCKET_TIMEOUT_S,  # without it a silent broker blocks a publish forever
        "visibility_timeout": VISIBILITY_TIMEOUT_S,
    },
    task_publish_retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5},
    worker_hijack_root_logger=False,
)


def public_url(url: str) -> str:
    """A broker URL fit to print: its password, if any, replaced by `**`."""
    return str(maybe_sanitize_url(url))


class QueueUnavailable(RuntimeError):
    """The broker did not take the messages of runs that are nevertheless recorded as `queued` (the database is
    the source of truth): a worker's reconciler sends them once the queue is back. `run_ids` (and `sweep_id`)
    name what was recorded."""

    def __init__(self, message: str, run_ids: Sequence[int] = (), sweep_id: int | None = None) -> None:
        super().__init__(message)
        self.run_ids = list(run_ids)
        self.sweep_id = sweep_id


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
    """Record the run as queued (owned by `owner_id`), then send its message to the queue for its device.

    Over its owner's quota it raises QuotaExceeded and records nothing. If the broker does not take the message
    within its timeouts, the run stays queued (a worker's reconciler sends it later) and QueueUnavailable says so.
    """
    if sweep_id is None:
        check_quota(store, owner_id, [spec])
    run_id = store.create_run(spec.name, spec.model_dump(mode="json"), sweep_id, owner_id=owner_id)
    enqueue(store, run_id, spec.device)
    return run_id


def _send(queue: str, run_id: int) -> str | None:
    """Publish the train message for `run_id` to `queue`, within the broker timeouts above. None when the broker
    took it, else why not (the exception and how long it tried)."""
    started = time.monotonic()
    try:
        app.send_task(TRAIN_TASK, args=[run_id], queue=queue)
    except Exception as exc:  # kombu and redis-py raise several connection and timeout error types
        return f"{str(exc).rstrip('.') or type(exc).__name__}; gave up after {time.monotonic() - started:.1f} s"
    return None


def send_ticket(queue: str, run_id: int) -> bool:
    """Send the train message (a ticket: a worker that takes it claims a run in the database) to `queue`.
    False, logged and without an exception, when the broker did not take it within its timeouts."""
    reason = _send(queue, run_id)
    if reason is not None:
        log.warning(
            "the queue at %s did not take a message for run #%d on %r: %s",
            public_url(app.conf.broker_url), run_id, queue, reason,
        )  # fmt: skip
    return reason is None


def _unsent_message(what: str, reason: str, many: bool = False) -> str:
    it, them = ("their messages", "them") if many else ("it", "it")
    return (
        f"{what}, but the queue at {public_url(app.conf.broker_url)} did not take {it} ({reason}): "
        f"a worker will send {them} once the queue is back"
    )


def enqueue(store: Store, run_id: int, device: str) -> None:
    """Send a queued run's message to the queue for its device (a new run, or one `Store.requeue` reset), as
    `send_ticket` does. If the broker does not take it, the run stays queued and QueueUnavailable says so (nothing
    is marked failed)."""
    reason = _send(device, run_id)
    if reason is not None:
        raise QueueUnavailable(_unsent_message(f"run #{run_id} is queued", reason), [run_id])


def _enqueue_all(
    runs: Sequence[tuple[int, str]], what: str, sweep_id: int | None = None, all_ids: Sequence[int] | None = None
) -> None:
    """Send each (run id, device) in turn, as `send_ticket` does; after the first the broker does not take, send
    no more (each would wait out the timeouts again) and raise QueueUnavailable: all of them (or `all_ids`) stay
    queued."""
    for run_id, device in runs:
        reason = _send(device, run_id)
        if reason is not None:
            ids = list(all_ids) if all_ids is not None else [r for r, _ in runs]
            raise QueueUnavailable(_unsent_message(what, reason, many=len(runs) > 1), ids, sweep_id)


def submit_sweep(
    store: Store, name: str, spec: dict[str, Any], runs: Sequence[RunSpec], owner_id: int | None = None
) -> int:
    """Record the sweep and its runs (already expanded and validated; all or none by quota) as queued, then send
    their messages. Unless the sweep says `packing: off`, runs that can train together are recorded as packs of
    at most `OPTLAB_PACK_SIZE` (workers/packed.py: `plan_packs`); a worker claims a pack as a whole. Returns the
    sweep id; QueueUnavailable (all runs still queued) if the broker does not take them."""
    from workers.settings import get_settings

    check_quota(store, owner_id, runs)
    sweep_id = store.create_sweep(name, spec, owner_id=owner_id)
    pack_of: dict[int, tuple[int | None, int | None]] = {}  # run index -> (pack id, pack size)
    if str(spec.get("packing", "auto")).lower() not in ("off", "false", "no") and spec.get("packing") is not False:
        from workers.packed import plan_packs

        for members in plan_packs(runs, get_settings().pack_size):
            new = store.create_pack(sweep_id, len(members))
            pack_of.update({i: (new, len(members)) for i in members})
    recorded: list[tuple[int, str]] = []
    tickets: list[tuple[int, str]] = []  # one message per pack (its first member) and per run alone
    ticketed: set[int] = set()
    for i, run in enumerate(runs):
        pack_id, size = pack_of.get(i, (None, None))
        run_id = store.create_run(
            run.name, run.model_dump(mode="json"), sweep_id, owner_id=owner_id, pack_id=pack_id, pack_size=size
        )
        recorded.append((run_id, run.device))
        if pack_id is None or pack_id not in ticketed:
            tickets.append((run_id, run.device))
            ticketed.add(pack_id or 0)
    _enqueue_all(tickets, f"sweep #{sweep_id} is queued ({len(recorded)} runs)", sweep_id, [r for r, _ in recorded])
    return sweep_id


def rerun(store: Store, run_ids: Sequence[int]) -> list[int]:
    """Reset the runs that did not complete and queue them again. Returns the ids queued (QueueUnavailable, with
    them still queued, if the broker does not take their messages)."""
    reset = store.requeue(run_ids)
    runs = [(run.id, str(run.spec.get("device", "auto"))) for run in store.list_runs(ids=reset)]
    what = f"run #{runs[0][0]} is" if len(runs) == 1 else "runs " + ", ".join(f"#{r}" for r, _ in runs) + " are"
    _enqueue_all(runs, f"{what} queued again")
    return reset
