"""The database keeps the queue honest. Every worker runs `reconcile` every few seconds (from its reporter thread,
workers/reporter.py), and once as it starts:

1. runs whose worker stopped sending heartbeats are lost: back to `queued`, to resume from their last checkpoint
   (after `max_attempts` lost workers: `failed`, with the reason) — `Store.mark_lost_runs`;
2. every queue that has queued runs but no message waiting in Redis gets one (a ticket: any worker that takes it
   claims the next run in fair-share order). Runs whose message was lost (a Redis restart, a crashed submit, a
   broker that did not answer) are so trained all the same. Each worker adds at most one message per queue per
   round, and only where none waits, so tickets never pile up;
3. checkpoints of runs that have finished (or were deleted) are removed.

Any number of workers may do this at once: moving a run is a compare-and-set in the database, a spare ticket finds
nothing to claim, and a run is only ever trained by the worker that claimed it.
"""

from __future__ import annotations

import logging
import re

from db.store import FINISHED, Store

log = logging.getLogger(__name__)


def waiting_messages(queue: str) -> int | None:
    """Messages waiting in the broker's list for `queue` (None when the broker does not answer)."""
    import redis

    from workers.settings import get_settings

    try:
        client = redis.Redis.from_url(get_settings().redis_url, socket_timeout=3, socket_connect_timeout=3)
        return int(client.llen(queue))
    except (redis.RedisError, OSError):
        return None


def reconcile(store: Store) -> dict[str, list[int] | list[str]]:
    """One round (see the module's doc). Returns what it did, for logs and tests."""
    from workers.celery_app import send_ticket
    from workers.settings import get_settings

    settings = get_settings()
    lost = store.mark_lost_runs(settings.heartbeat_timeout_s, settings.max_attempts)
    if lost:
        log.warning("runs %s lost their worker: queued again to resume (or failed, after too many)", lost)
    sent: list[str] = []
    for queue, count in store.queued_per_queue().items():
        if count and waiting_messages(queue) == 0 and send_ticket(queue, 0):
            sent.append(queue)
    removed = _collect_checkpoints(store)
    return {"lost": lost, "tickets": sent, "checkpoints_removed": removed}


def _collect_checkpoints(store: Store) -> list[int]:
    """Delete the checkpoints of runs that finished or no longer exist (a local directory only)."""
    from workers.checkpoints import get_checkpoints

    checkpoints = get_checkpoints()
    if checkpoints.remote or not checkpoints.dir.is_dir():
        return []
    ids = [int(m.group(1)) for p in checkpoints.dir.iterdir() if (m := re.fullmatch(r"run-(\d+)\.pt", p.name))]
    if not ids:
        return []
    alive = {r.id for r in store.list_runs(ids=ids) if r.status not in FINISHED}
    gone = [i for i in ids if i not in alive]
    for run_id in gone:
        checkpoints.delete(run_id)
    return gone
