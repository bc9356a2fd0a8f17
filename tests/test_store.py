"""The store contract, run against every backend (SQLite file; PostgreSQL when TEST_DATABASE_URL is set)."""

from __future__ import annotations

import math
import time

import pytest

from db.store import Store

SPEC = {"steps": 10, "task": {"name": "digits-mlp"}, "optimizer": {"name": "sgd", "lr": 0.1}}


def test_lifecycle_queued_running_completed(store: Store) -> None:
    run_id = store.create_run("r", SPEC)
    run = store.get_run(run_id)
    assert run is not None and run.status == "queued" and run.progress == 0 and run.started_at is None
    claimed = store.claim(run_id, "w1", "cpu", stale_after=30)
    assert claimed is not None and claimed.status == "running" and claimed.worker == "w1" and claimed.device == "cpu"
    store.finish(run_id, "completed")
    done = store.get_run(run_id)
    assert done is not None and done.status == "completed" and done.finished_at is not None
    store.finish(run_id, "failed", "late")  # a finished run keeps its first ending
    assert store.get_run(run_id).status == "completed"  # type: ignore[union-attr]


def went_silent(store: Store, run_id: int, seconds: float) -> None:
    """Move a run's last heartbeat `seconds` into the past: staleness without sleeping, so a slow machine cannot
    make a live run look stale or a stale one look live."""
    from sqlalchemy import update

    from db.tables import Run

    with store.session() as s:
        s.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=time.time() - seconds))


def test_claim_is_exclusive_until_the_heartbeat_goes_stale(store: Store) -> None:
    run_id = store.create_run("r", SPEC)
    assert store.claim(run_id, "w1", "cpu", stale_after=30) is not None
    assert store.claim(run_id, "w2", "cpu", stale_after=30) is None  # a live worker holds it
    went_silent(store, run_id, seconds=60)
    again = store.claim(run_id, "w2", "cpu", stale_after=30)  # a redelivered message after w1 went silent
    assert again is not None and again.worker == "w2"


def test_cancel_queued_is_immediate_and_it_is_never_claimed(store: Store) -> None:
    run_id = store.create_run("r", SPEC)
    assert store.request_cancel(run_id) == "cancelled"
    assert store.claim(run_id, "w", "cpu", stale_after=30) is None
    assert store.request_cancel(999_999) is None


def test_cancel_running_is_seen_by_the_next_record(store: Store) -> None:
    run_id = store.create_run("r", SPEC)
    store.claim(run_id, "w", "cpu", stale_after=30)
    assert store.record(run_id, [(1, "loss", 1.0)]) is False
    assert store.request_cancel(run_id) == "running"
    assert store.record(run_id, [(2, "loss", 0.9)]) is True


def test_metrics_are_idempotent_and_keep_nan_and_inf(store: Store) -> None:
    run_id = store.create_run("r", SPEC)
    rows = [(1, "loss", 2.5), (1, "lr", 0.1), (2, "loss", math.nan), (2, "lr", math.inf), (3, "loss", -math.inf)]
    store.record(run_id, rows)
    store.record(run_id, rows)  # a task delivered twice
    store.record(run_id, [(1, "loss", 2.25)])  # a re-run overwrites
    frame = store.metrics([run_id])
    assert len(frame) == 5
    got = {(int(r.step), r.metric): r.value for r in frame.itertuples()}
    assert got[(1, "loss")] == 2.25 and got[(1, "lr")] == 0.1
    assert math.isnan(got[(2, "loss")])
    assert got[(2, "lr")] == math.inf and got[(3, "loss")] == -math.inf
    assert store.get_run(run_id).progress == 3  # type: ignore[union-attr]


def test_metrics_after_cursor_returns_only_newer_rows(store: Store) -> None:
    a, b = store.create_run("a", SPEC), store.create_run("b", SPEC)
    store.record(a, [(s, m, float(s)) for s in range(1, 11) for m in ("loss", "lr")])
    store.record(b, [(s, "loss", float(s)) for s in range(1, 6)])
    newer = store.metrics([a, b], names=["loss"], after={a: 7, b: 5})
    assert list(zip(newer.run_id, newer.step, strict=True)) == [(a, 8), (a, 9), (a, 10)]
    assert set(store.metrics([a], names=["lr"])["metric"]) == {"lr"}
    assert store.metrics([]).empty


def test_summaries_final_and_best(store: Store) -> None:
    a = store.create_run("a", SPEC)
    store.record(a, [(1, "loss", 3.0), (2, "loss", 1.0), (3, "loss", 2.0), (3, "lr", 0.0)])
    assert store.summaries([a]) == {a: {"final": 2.0, "best": 1.0}}
    assert store.metric_names([a]) == ["loss", "lr"]


def test_progress_never_goes_back(store: Store) -> None:
    a = store.create_run("a", SPEC)
    store.record(a, [(5, "loss", 1.0)])
    store.record(a, [(3, "loss", 1.0)])
    assert store.get_run(a).progress == 5  # type: ignore[union-attr]


def test_lost_runs_go_back_to_the_queue_until_they_have_lost_too_many_workers(store: Store) -> None:
    a, b = store.create_run("a", SPEC), store.create_run("b", SPEC)
    store.claim(a, "w", "cpu", stale_after=30)
    store.claim(b, "w", "cpu", stale_after=30)
    store.record(a, [(1, "loss", 1.0), (2, "loss", 0.5)])
    went_silent(store, a, seconds=60)
    store.record(b, [])  # b's worker is alive
    assert store.mark_lost_runs(stale_after=30, max_attempts=2) == [a]
    lost = store.get_run(a)
    assert lost is not None and lost.status == "queued" and lost.attempts == 1 and lost.worker is None
    assert store.get_run(b).status == "running"  # type: ignore[union-attr]
    assert store.mark_lost_runs(stale_after=30, max_attempts=2) == []  # a queued run is not lost again
    events = store.run_events(a)
    assert [e.status for e in events] == ["queued", "queued"]
    assert "lost at step 2" in (events[-1].reason or "") and events[-1].worker == "w" and events[-1].step == 2

    # The second worker resumes it from a checkpoint at step 1: what was logged after it is dropped.
    claimed, _ = store.claim_next("auto", "w2", "cpu")
    assert claimed is not None and claimed.id == a
    store.begin_attempt(a, 1, "w2")
    assert store.metrics([a])["step"].tolist() == [1] and store.get_run(a).resumed_from == 1  # type: ignore[union-attr]
    went_silent(store, a, seconds=60)
    assert store.mark_lost_runs(stale_after=30, max_attempts=2) == [a]
    failed = store.get_run(a)
    assert failed is not None and failed.status == "failed" and "lost 2 workers" in (failed.error or "")
    assert [e.status for e in store.run_events(a)] == ["queued", "queued", "running", "running", "failed"]


def test_only_the_worker_holding_a_run_writes_it_ends_it_or_hands_it_back(store: Store) -> None:
    a = store.create_run("a", SPEC)
    claimed, _ = store.claim_next("auto", "w1", "cpu")
    assert claimed is not None
    assert store.record(a, [(1, "loss", 1.0)], worker="w1") is False
    went_silent(store, a, seconds=60)
    store.mark_lost_runs(stale_after=30)
    store.claim_next("auto", "w2", "cpu")
    # w1 was only slow, not dead: its late flush is refused (and tells it to stop); it cannot end or hand back
    assert store.record(a, [(2, "loss", 9.0)], worker="w1") is True
    assert store.metrics([a])["step"].tolist() == [1]
    assert store.finish(a, "completed", worker="w1") is False and not store.hand_back(a, "w1", "bye")
    assert store.get_run(a).worker == "w2"  # type: ignore[union-attr]
    assert store.hand_back(a, "w2", "worker w2 shut down at step 1")
    back = store.get_run(a)
    assert back is not None and back.status == "queued" and back.attempts == 1  # a hand-back is not a loss
    assert store.run_events(a)[-1].reason == "worker w2 shut down at step 1"


def test_list_and_delete(store: Store) -> None:
    ids = [store.create_run(f"r{i}", SPEC) for i in range(3)]
    store.record(ids[0], [(1, "loss", 1.0)])
    assert [r.id for r in store.list_runs()] == ids[::-1]
    assert [r.id for r in store.list_runs(statuses=["queued"], ids=ids[:2])] == ids[:2][::-1]
    assert store.delete_runs(ids[:1]) == 1
    assert store.get_run(ids[0]) is None and store.metrics([ids[0]]).empty


def test_a_pack_is_claimed_together_and_lost_together(store: Store) -> None:
    """A worker that claims a run of a pack claims every queued member with it, in one statement, so a second
    worker asking next gets none of them; when one member's heartbeat stops, its pack-mates on that worker are lost
    with it (one worker trains them all), so they go back to resume together."""
    pack = store.create_pack(None, 3)
    members = [store.create_run(f"m{i}", SPEC, pack_id=pack, pack_size=3) for i in range(3)]
    other = store.create_run("alone", SPEC)
    first, _ = store.claim_next("auto", "w", "cpu")
    assert first is not None and first.id == members[0] and first.pack_id == pack and first.pack_size == 3
    held = store.pack_held(pack, "w")
    assert [r.id for r in held] == members and all(r.status == "running" and r.worker == "w" for r in held)
    second, _ = store.claim_next("auto", "w2", "cpu")  # the next worker gets the run that was not in the pack
    assert second is not None and second.id == other and store.pack_held(pack, "w2") == []
    went_silent(store, members[0], seconds=60)  # only one member's heartbeat is old
    for m in members[1:]:
        store.record(m, [])
    assert sorted(store.mark_lost_runs(stale_after=30, max_attempts=3)) == members  # all of w's pack
    assert store.get_run(other).status == "running"  # type: ignore[union-attr]


def test_a_pack_claim_stays_within_its_owner_s_limit_of_runs_at_once(store: Store) -> None:
    owner = store.create_user("ann", "member")
    store.update_user(owner, max_running=2)
    pack = store.create_pack(None, 3)
    members = [store.create_run(f"m{i}", SPEC, pack_id=pack, pack_size=3, owner_id=owner) for i in range(3)]
    first, _ = store.claim_next("auto", "w", "cpu")
    assert first is not None and [r.id for r in store.pack_held(pack, "w")] == members[:2]
    assert store.claim_next("auto", "w2", "cpu") == (None, True)  # the third waits for one of hers to end
    assert store.finish(members[0], "completed", worker="w")
    rest, _ = store.claim_next("auto", "w2", "cpu")
    assert rest is not None and rest.id == members[2] and [r.id for r in store.pack_held(pack, "w2")] == [members[2]]


def test_a_flush_is_one_chunk_per_metric_and_readers_see_the_newest_value_of_each_step(store: Store) -> None:
    from sqlalchemy import func, select

    from db.tables import MetricChunk

    def chunks() -> int:
        with store.engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(MetricChunk)) or 0)

    sweep = store.create_sweep("s", {"name": "s"})
    run = store.create_run("r", SPEC, sweep_id=sweep)
    store.claim(run, "w", "cpu", stale_after=30)
    store.record(run, [(s, m, float(s)) for s in range(1, 201) for m in ("loss", "lr")], "w")
    assert chunks() == 2  # 400 values, two rows
    store.record(run, [(150, "loss", -1.0), (201, "loss", math.nan), (201, "lr", 201.0)], "w")  # 150 rewritten
    loss = store.metrics([run], names=["loss"])
    assert loss.step.tolist() == list(range(1, 202))  # each step once
    assert loss.set_index("step").value[150] == -1.0 and math.isnan(loss.set_index("step").value[201])
    assert store.summaries([run])[run]["best"] == -1.0 and math.isnan(store.summaries([run])[run]["final"])
    assert store.first_reaching([run], "loss", -0.5) == {run: 150}
    assert store.window_means(sweep, "loss", 140, 160)[run] == pytest.approx((sum(range(141, 161)) - 150 - 1) / 20)
    assert store.values_at({run: 150}, ["loss", "lr"]) == {run: {"loss": -1.0, "lr": 150.0}}
    newer = store.metrics([run], after={run: 199})
    assert sorted(zip(newer.step, newer.metric, strict=True)) == [
        (200, "loss"), (200, "lr"), (201, "loss"), (201, "lr")
    ]  # fmt: skip
    store.begin_attempt(run, 120, "w")  # a resumed attempt drops what came after its checkpoint (chunks trimmed)
    assert store.metrics([run]).step.max() == 120 and len(store.metrics([run])) == 240
    store.record(run, [(121, "loss", 7.0)], "w")
    assert store.finish(run, "completed", worker="w")
    assert chunks() == 2  # compacted: one chunk per metric
    steps, values = store.packed_curves([run], "loss")[run]
    assert steps.tolist() == list(range(1, 122)) and values[99] == 100.0 and values[-1] == 7.0


def test_a_pack_flush_records_every_member_it_holds_in_one_call(store: Store) -> None:
    a, b, gone = (store.create_run(n, SPEC) for n in ("a", "b", "gone"))
    for rid in (a, b, gone):
        store.claim(rid, "w", "cpu", stale_after=30)
    store.request_cancel(b)
    store.hand_back(gone, "w", "test")  # no longer this worker's: nothing of it is written
    evals = [(s, "val_loss", 1.0 / s) for s in (50, 100, 150)]  # a sparse metric: its steps are stored
    answers = store.record_many(
        {a: [(s, "loss", float(s)) for s in range(1, 151)] + evals, b: [(s, "loss", 2.0) for s in (1, 2, 4)],
         gone: [(1, "loss", 9.0)]}, "w",
    )  # fmt: skip
    assert answers == {a: False, b: True, gone: True}  # b: cancel asked; gone: not held
    assert {r.id: r.progress for r in store.list_runs()} == {a: 150, b: 4, gone: 0}
    assert store.metrics([gone]).empty
    assert store.metrics([b]).step.tolist() == [1, 2, 4]  # a gap in a per-step metric is kept
    store.begin_attempt(a, 120, "w")  # trims the contiguous and the sparse chunk alike
    rows = store.metrics([a])
    assert rows[rows.metric == "val_loss"].step.tolist() == [50, 100]
    assert rows[rows.metric == "loss"].step.tolist() == list(range(1, 121))


def test_a_flush_handed_over_as_columns_reads_back_like_rows(store: Store) -> None:
    import numpy as np

    from db.store import merge_flushes
    from workers.training import as_rows

    by_rows, by_columns = store.create_run("rows", SPEC), store.create_run("columns", SPEC)
    first = [(s, "loss", 1.0 / s) for s in range(1, 6)] + [(3, "val_loss", 0.5)]
    second = {"loss": (np.array([5, 6]), np.array([-5.0, math.nan])), "lr": (np.array([6]), np.array([0.1]))}
    merged = merge_flushes([first, second])  # what a writer that fell behind hands the store: step 5 given twice
    store.record(by_columns, merged)
    store.record(by_rows, first)
    store.record(by_rows, as_rows(second))
    got, want = (store.metrics([r]).drop(columns="run_id").reset_index(drop=True) for r in (by_columns, by_rows))
    assert got.equals(want)
    assert want.set_index(["metric", "step"]).value[("loss", 5)] == -5.0  # the later flush's value


def test_many_runs_flushes_of_every_shape_read_back_value_for_value(store: Store) -> None:
    """One call carrying several runs' flushes of different metrics and lengths, per-step and sparse, with steps
    given twice and out of order, NaN and ±inf: each run reads back exactly what a plain dict of the same rows holds
    (later value wins), and nothing lands in another run (PostgreSQL cuts every chunk out of one byte string)."""
    import random

    rng = random.Random(7)
    runs = [store.create_run(f"r{i}", SPEC) for i in range(5)]
    want: dict[tuple[int, str, int], float] = {}
    for round_ in range(4):
        flushes = {}
        for rid in runs:
            rows = []
            for metric in rng.sample(["loss", "lr", "val_loss", "grad_l2", "x" * 64], k=rng.randint(0, 5)):
                if rng.random() < 0.5:  # per step
                    steps = list(range(round_ * 100 + 1, round_ * 100 + rng.randint(1, 100)))
                else:  # sparse, some given twice, out of order
                    steps = [rng.randint(1, 500) for _ in range(rng.randint(1, 30))]
                for step in steps:
                    value = rng.choice([rng.uniform(-1e6, 1e6), math.nan, math.inf, -math.inf, 0.0])
                    rows.append((step, metric, value))
                    want[(rid, metric, step)] = value
            flushes[rid] = rows
        assert store.record_many(flushes) == {rid: False for rid in runs}
    rows = store.metrics(runs)
    got = {(int(r), m, int(s)): float(v) for r, s, m, v in rows.itertuples(index=False)}
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == value or (math.isnan(got[key]) and math.isnan(value)), key


def test_a_flush_after_the_server_closed_the_flush_connection_lands(store: Store) -> None:
    """PostgreSQL's flushes use connections not pinged before each use; when the server has closed one (a restart,
    an administrator), the flush goes again on a new connection instead of failing the run."""
    from sqlalchemy import text

    if store.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's flush connections")

    run = store.create_run("r", SPEC)
    store.claim(run, "w", "cpu", stale_after=30)
    assert store.record(run, [(1, "loss", 1.0)], worker="w") is False
    with store.engine.connect() as conn:  # ends every flush connection's server process
        ended = conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE application_name = 'optlab-flush' AND datname = current_database()")).all()  # fmt: skip
    assert ended and all(ok for (ok,) in ended)
    assert store.record(run, [(2, "loss", 0.5)], worker="w") is False
    assert store.metrics([run]).value.tolist() == [1.0, 0.5]
    assert store.get_run(run).progress == 2  # type: ignore[union-attr]
