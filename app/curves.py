"""Full-resolution curves for the Compare page, fetched once and then only what is new.

The page keeps one `CurveCache` per browser session. A finished run's curve is fetched once and never again; a
running run's curve is extended with the rows after the last step held. Everything after the fetch (smoothing,
grouping, choosing the x axis, zooming, downsampling) works on these numpy arrays, so moving a slider never
touches the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from db.store import FINISHED, RunInfo, Store

X_AXES = {"step": None, "samples seen": "samples_seen", "wall time (s)": "wall_time"}


@dataclass
class CurveCache:
    curves: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    complete: set[tuple[int, str]] = field(default_factory=set)  # finished runs, fetched after they finished
    queries: int = 0  # for tests: how many times the database was asked

    def get(self, store: Store, runs: Sequence[RunInfo], metric: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """(steps, values) of `metric` for each run that logged it."""
        stale = [run for run in runs if (run.id, metric) not in self.complete]
        finished = [run.id for run in stale if run.status in FINISHED]
        if finished:  # packed when they finished: one row per run
            for rid, curve in store.packed_curves(finished, metric).items():
                self.curves[rid, metric] = curve
                self.complete.add((rid, metric))
            self.queries += 1
            stale = [run for run in stale if (run.id, metric) not in self.complete]
        if stale:
            cursor = {r.id: int(self.curves[r.id, metric][0][-1]) for r in stale if (r.id, metric) in self.curves}
            frame = store.metrics([run.id for run in stale], [metric], after=cursor)
            self.queries += 1
            run_ids = frame["run_id"].to_numpy()
            steps, values = frame["step"].to_numpy(np.int64), frame["value"].to_numpy(np.float64)
            bounds = np.flatnonzero(np.diff(run_ids)) + 1 if len(run_ids) else np.array([], dtype=int)
            for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(run_ids)], strict=True):
                if hi <= lo:
                    continue
                key = (int(run_ids[lo]), metric)
                old = self.curves.get(key)
                new = (steps[lo:hi], values[lo:hi])
                self.curves[key] = new if old is None else (np.r_[old[0], new[0]], np.r_[old[1], new[1]])
            self.complete.update((run.id, metric) for run in stale if run.status in FINISHED)
        return {run.id: self.curves[run.id, metric] for run in runs if (run.id, metric) in self.curves}

    def xy(
        self, store: Store, runs: Sequence[RunInfo], metric: str, x_axis: str
    ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """(x, y) per run, x being the step, the samples seen or the wall time at each of the metric's steps."""
        ys = self.get(store, runs, metric)
        source = X_AXES[x_axis]
        if source is None:
            return {rid: (steps.astype(np.float64), values) for rid, (steps, values) in ys.items()}
        xs = self.get(store, runs, source)
        out = {}
        for rid, (steps, values) in ys.items():
            if rid not in xs:
                continue
            x_steps, x_values = xs[rid]
            at = np.searchsorted(x_steps, steps)
            ok = (at < len(x_steps)) & (x_steps[np.minimum(at, len(x_steps) - 1)] == steps)
            out[rid] = (x_values[at[ok]], values[ok])
        return out
