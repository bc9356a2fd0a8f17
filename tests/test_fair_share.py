"""Fair share, decided in the database: the next run goes to the owner with the least recent usage (weighted by
their share), within an owner by priority then first come; owners at their limit of runs at once wait. On SQLite
and PostgreSQL, and with two users and one real worker."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import update

from db.store import Store
from db.tables import Run
from tests.conftest import Stack, wait_for

SPEC = {"steps": 10, "device": "auto"}


def queue(store: Store, owner: int | None, n: int, priority: int = 0, device: str = "auto") -> list[int]:
    return [store.create_run(f"r{i}", {**SPEC, "device": device}, owner_id=owner, priority=priority) for i in range(n)]


def test_owners_take_turns_instead_of_first_come_first_served(store: Store) -> None:
    alice, bob = store.create_user("alice", "member"), store.create_user("bob", "member")
    a = queue(store, alice, 5)  # alice queued first, and more
    b = queue(store, bob, 2)
    order, blocked = store.dispatch_order("auto")
    assert order == [a[0], b[0], a[1], b[1], a[2], a[3], a[4]] and blocked == set()


def test_recent_usage_and_shares_decide_who_goes_next(store: Store) -> None:
    alice, bob = store.create_user("alice", "member"), store.create_user("bob", "member")
    for owner, seconds in ((alice, 3600), (bob, 600)):  # this week alice used an hour, bob ten minutes
        done = queue(store, owner, 1)[0]
        store.claim(done, "w", "cpu", stale_after=30)
        with store.session() as s:
            s.execute(update(Run).where(Run.id == done).values(started_at=time.time() - seconds))
        store.finish(done, "completed")
    a, b = queue(store, alice, 2), queue(store, bob, 2)
    assert store.dispatch_order("auto")[0][0] == b[0]  # bob used less: he goes first, though alice queued first
    store.update_user(alice, share=10.0)  # ten shares: her hour weighs as 6 minutes, less than bob's 10
    assert store.dispatch_order("auto")[0][0] == a[0]


def test_priority_orders_an_owners_own_runs_and_queues_are_separate(store: Store) -> None:
    alice = store.create_user("alice", "member")
    low = queue(store, alice, 2)
    high = queue(store, alice, 1, priority=5)
    gpu = queue(store, alice, 1, device="cuda")
    assert store.dispatch_order("auto")[0] == [high[0], *low]
    assert store.dispatch_order("cuda")[0] == gpu and store.dispatch_order("cpu")[0] == []


def test_claim_next_takes_turns_and_respects_the_limit_of_runs_at_once(store: Store) -> None:
    alice, bob = store.create_user("alice", "member"), store.create_user("bob", "member")
    store.update_user(alice, max_running=1)
    a, b = queue(store, alice, 3), queue(store, bob, 1)
    first, _ = store.claim_next("auto", "w1", "cpu")
    assert first is not None and first.id == a[0] and first.status == "running"
    second, _ = store.claim_next("auto", "w2", "cpu")
    assert second is not None and second.id == b[0]
    third, blocked = store.claim_next("auto", "w3", "cpu")  # alice is at her limit of one run at once
    assert third is None and blocked
    store.finish(a[0], "completed")
    fourth, _ = store.claim_next("auto", "w3", "cpu")
    assert fourth is not None and fourth.id == a[1]
    store.update_user(alice, max_running=None)
    assert store.claim_next("cuda", "w", "cuda")[0] is None  # nothing waits there
    assert store.claim_next("cuda", "w", "cuda")[1] is False


@pytest.mark.live_worker
def test_two_users_and_one_worker_interleave(stack: Stack, start_worker) -> None:  # type: ignore[no-untyped-def]
    """alice queues 6 runs, then bob 6, before the worker starts: first come first served would run all of
    alice's first. Fair share gives bob the second run and a fair part of the first half. (Which of two nearly
    equal users goes at a tie depends on run lengths, so only what fairness guarantees is checked.)"""
    from workers.celery_app import submit
    from workers.spec import parse_spec

    store = stack.store
    alice, bob = store.create_user("alice", "member"), store.create_user("bob", "member")
    spec = parse_spec({"task": "digits-mlp", "optimizer": "adamw", "steps": 150, "eval_every": 150})
    mine = [submit(store, spec, owner_id=alice) for _ in range(6)]
    theirs = [submit(store, spec, owner_id=bob) for _ in range(6)]
    start_worker()

    def settled() -> bool:
        return all(r.status == "completed" for r in store.list_runs())

    wait_for(settled, 600, "12 runs to finish")
    runs = sorted(store.list_runs(), key=lambda r: r.started_at or 0)
    owners = ["alice" if r.id in mine else "bob" for r in runs]
    assert owners[:2] == ["alice", "bob"], owners  # bob did not wait for alice's six
    assert 2 <= owners[:6].count("bob") <= 4, owners
    assert {r.id for r in runs} == set(mine) | set(theirs)
