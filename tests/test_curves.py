"""Curves for the Compare page: packed when a run finishes, extended by cursor while it runs, on SQLite and
PostgreSQL."""

from __future__ import annotations

import math

import numpy as np

from app.curves import CurveCache
from db.store import Store


def test_a_finished_run_is_packed_with_nan_and_inf_and_unpacked_exactly(store: Store) -> None:
    rid = store.create_run("r", {"steps": 4})
    store.claim(rid, "w", "cpu", 30)
    store.record(rid, [(1, "loss", 2.0), (2, "loss", math.nan), (3, "loss", math.inf), (4, "loss", 0.5)])
    store.record(rid, [(2, "val_loss", 1.5)])
    assert store.packed_curves([rid], "loss") == {}  # nothing packed while it runs
    store.finish(rid, "completed")
    steps, values = store.packed_curves([rid], "loss")[rid]
    assert list(steps) == [1, 2, 3, 4] and values[0] == 2.0 and math.isnan(values[1]) and values[2] == math.inf
    assert list(store.packed_curves([rid], "val_loss")[rid][1]) == [1.5]
    store.finish(rid, "failed")  # a second ending changes nothing
    assert store.get_run(rid).status == "completed"  # type: ignore[union-attr]
    store.requeue([rid])  # completed runs are not re-run ...
    assert rid in store.packed_curves([rid], "loss")
    store.delete_runs([rid])  # ... deleting drops the packed curves with the metrics
    assert store.packed_curves([rid], "loss") == {}


def test_requeue_drops_packed_curves_and_lost_runs_are_packed(store: Store) -> None:
    rid = store.create_run("r", {"steps": 2})
    store.claim(rid, "w", "cpu", 30)
    store.record(rid, [(1, "loss", 1.0)])
    store.finish(rid, "failed", "boom")
    assert store.requeue([rid]) == [rid] and store.packed_curves([rid], "loss") == {}
    store.claim(rid, "w", "cpu", 30)
    store.record(rid, [(1, "loss", 3.0)])
    assert store.mark_lost_runs(stale_after=-1, max_attempts=1) == [rid]  # its last attempt: failed
    assert list(store.packed_curves([rid], "loss")[rid][1]) == [3.0]


def test_the_cache_reads_finished_runs_once_and_running_ones_by_cursor(store: Store) -> None:
    done = store.create_run("done", {"steps": 3})
    live = store.create_run("live", {"steps": 100})
    for rid in (done, live):
        store.claim(rid, "w", "cpu", 30)
        store.record(rid, [(s, "loss", 1.0 / s) for s in (1, 2, 3)] + [(s, "samples_seen", 8.0 * s) for s in (1, 2, 3)])
    store.finish(done, "completed")
    cache = CurveCache()
    runs = store.list_runs()
    got = cache.get(store, runs, "loss")
    assert list(got[done][0]) == [1, 2, 3] and list(got[live][1]) == [1.0, 0.5, 1.0 / 3]
    store.record(live, [(4, "loss", 0.25)])
    queries = cache.queries
    got = cache.get(store, store.list_runs(), "loss")
    assert cache.queries == queries + 1  # only the running run was asked for, and only for rows after step 3
    assert list(got[live][0]) == [1, 2, 3, 4] and list(got[done][0]) == [1, 2, 3]
    xy = cache.xy(store, store.list_runs(), "loss", "samples seen")
    assert list(xy[done][0]) == [8.0, 16.0, 24.0]
    assert list(xy[live][0]) == [8.0, 16.0, 24.0]  # step 4 has no samples_seen yet, so it is not drawn
    assert np.allclose(xy[live][1], [1.0, 0.5, 1.0 / 3])
