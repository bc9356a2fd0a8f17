"""Compare: overlay any metric of chosen runs and sweeps; smooth, group seeds into bands, zoom with full detail."""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from app.analysis import Band, ema_smooth, group_band, legend_labels, short_field, varying
from app.curves import X_AXES, CurveCache
from app.export import flatten_dict
from app.figures import Curve, compare_chart
from app.session import signed_in
from app.ui import get_store, run_label
from db.store import ACTIVE, RunInfo
from workers.metrics import LABELS

st.title("Compare runs")
store = get_store()
signed_in(store)

sweeps = {s.id: s for s in store.list_sweeps()}
all_runs = store.list_runs()
by_id = {r.id: r for r in all_runs}


def _ints(text: str | None) -> list[int]:
    return [int(t) for t in (text or "").split(",") if t.strip().isdigit()]


# Arriving from a link (?sweep=3&runs=1,2&group=optimizer.lr,batch.size; a sweep's link names its swept fields
# but the seed, so seeds fold into bands): take the choice from the URL, once per distinct link.
link = tuple(st.query_params.get(k) for k in ("sweep", "runs", "group"))
if "compare.sweeps" not in st.session_state or (any(link) and st.session_state.get("compare.link") != link):
    st.session_state["compare.link"] = link
    st.session_state["compare.sweeps"] = [i for i in _ints(st.query_params.get("sweep")) if i in sweeps]
    st.session_state["compare.runs"] = [i for i in _ints(st.query_params.get("runs")) if i in by_id]
    st.session_state["compare.group"] = [f for f in (link[2] or "").split(",") if f]

for key, known in (("compare.sweeps", sweeps), ("compare.runs", by_id)):  # drop what was deleted meanwhile
    st.session_state[key] = [i for i in st.session_state[key] if i in known]

if not all_runs:
    st.info("No runs yet. Launch a run or a sweep, then come back to compare them.", icon=":material/info:")
    st.stop()

pick_sweeps, pick_runs = st.columns(2)
chosen_sweeps = pick_sweeps.multiselect(
    "Sweeps",
    list(sweeps),
    key="compare.sweeps",
    format_func=lambda i: f"#{i} {sweeps[i].name}",
    placeholder="every run of these sweeps",
)
chosen_runs = pick_runs.multiselect(
    "Runs", list(by_id), key="compare.runs", format_func=lambda i: run_label(by_id[i]), placeholder="and these runs"
)
run_ids = sorted({r.id for r in all_runs if r.sweep_id in chosen_sweeps} | set(chosen_runs))
if not run_ids:
    st.info("Choose one or more sweeps or runs above.", icon=":material/info:")
    st.stop()
runs: list[RunInfo] = [by_id[i] for i in run_ids]

cache: CurveCache = st.session_state.setdefault("compare.cache", CurveCache())
names = store.metric_names(run_ids)
specs = {r.id: flatten_dict(r.spec) for r in runs}
fields = [f for f in varying(specs.values()) if f != "name"]
st.session_state["compare.group"] = [f for f in st.session_state.get("compare.group", []) if f in fields]

c1, c2, c3, c4 = st.columns([2, 2, 1, 1])
metric = c1.selectbox(
    "Metric",
    names,
    index=names.index("loss") if "loss" in names else 0,
    key="compare.metric",
    format_func=lambda m: f"{LABELS.get(m, m)} ({m})" if LABELS.get(m, m) != m else m,
)
x_axis = c2.radio("x axis", list(X_AXES), horizontal=True, key="compare.x")
log_x = c3.toggle("log x", key="compare.logx")
log_y = c4.toggle("log y", key="compare.logy")
c1, c2, c3, c4 = st.columns([2, 2, 1, 1])
smoothing = c1.slider(
    "Smoothing",
    0.0,
    0.99,
    0.6,
    0.01,
    key="compare.smoothing",
    help="TensorBoard's debiased exponential moving average, on the full-resolution data; the raw curve stays faint",
)
group_by = c2.multiselect(
    "Group by",
    fields,
    key="compare.group",
    format_func=short_field,
    help="one curve per distinct value of these fields, the mean of its runs (seeds) with a band",
    placeholder="each run its own curve",
)
band = c3.selectbox("Band", ("± std", "min–max", "none"), key="compare.band", disabled=not group_by)
budget = c4.number_input(
    "Points per curve",
    100,
    20000,
    500,
    100,
    key="compare.points",
    help="each curve is cut into buckets and each bucket keeps its minimum and maximum, so spikes survive",
)

if any(r.status in ACTIVE for r in runs):
    st.caption("Some runs are still going: the curves extend each time the page reruns.")
    if st.button("Refresh", icon=":material/refresh:"):
        st.rerun()

xy = cache.xy(store, runs, metric, x_axis)
if not xy:
    st.info(f"None of these runs has logged {metric} yet.", icon=":material/hourglass_empty:")
    st.stop()

labels = legend_labels({rid: specs[rid] for rid in xy}, {rid: run_label(by_id[rid]) for rid in xy})
smoothed = {rid: ema_smooth(y, smoothing) if smoothing > 0 else y for rid, (_, y) in xy.items()}
curves: list[Curve] = []
if group_by:
    groups: dict[tuple[str, ...], list[int]] = {}
    for rid in xy:
        groups.setdefault(tuple(repr(specs[rid].get(f)) for f in group_by), []).append(rid)
    for members in groups.values():
        spec = specs[members[0]]
        runs_in = f"{len(members)} run" + ("s" if len(members) > 1 else "")
        label = ", ".join(f"{short_field(f)}={spec.get(f)}" for f in group_by) + f" ({runs_in})"
        kind = {"± std": "std", "min–max": "minmax"}.get(band, "none")
        b: Band = group_band([(xy[r][0], smoothed[r]) for r in members], kind, points=int(budget) * 2)
        show_band = kind != "none" and len(members) > 1
        curves.append(
            Curve(label, b.x, b.centre, lower=b.lower if show_band else None, upper=b.upper if show_band else None)
        )
else:
    for rid, (x, y) in xy.items():
        curves.append(Curve(labels[rid], x, smoothed[rid], raw=y if smoothing > 0 else None))

x_lo = float(min(np.nanmin(c.x) for c in curves if len(c.x)))
x_hi = float(max(np.nanmax(c.x) for c in curves if len(c.x)))
zoom = st.session_state.get("compare.zoom")
if zoom is not None and not (x_lo <= zoom[1] and zoom[0] <= x_hi):
    zoom = None
fig = compare_chart(
    curves,
    x_title=x_axis,
    y_title=LABELS.get(metric, metric),
    log_x=log_x,
    log_y=log_y,
    max_points=int(budget),
    x_range=zoom,
)
fig.update_layout(dragmode="select", selectdirection="h")
event = st.plotly_chart(fig, key="compare.chart", on_select="rerun", selection_mode="box")
selection: Any = event.get("selection") if event else None
boxes = (selection or {}).get("box") or []
if boxes and boxes[0].get("x"):
    x0, x1 = sorted(float(v) for v in boxes[0]["x"])
    if log_x:
        x0, x1 = 10**x0, 10**x1
    if (x0, x1) != zoom and x1 > x0:
        st.session_state["compare.zoom"] = (x0, x1)
        st.rerun()
left, right = st.columns([4, 1])
left.caption(
    f"{len(xy)} runs · {sum(len(x) for x, _ in xy.values()):,} points held · drag across the chart to zoom in "
    "with full detail" + (f" · showing {x_axis} {zoom[0]:.4g} to {zoom[1]:.4g}" if zoom else "")
)
if zoom and right.button("Reset zoom", icon=":material/zoom_out:", key="compare.unzoom"):
    st.session_state["compare.zoom"] = None
    st.rerun()
