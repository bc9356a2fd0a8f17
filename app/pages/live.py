"""Live: queued and running runs with progress and ETA, and live curves for the runs you watch.

The curves refresh in a fragment every second and fetch only the rows newer than those this page already
holds (a cursor per run in the session), so a long run costs the same per refresh as a short one.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.accounts import allowed
from app.analysis import QueueSpot, queue_estimates
from app.export import csv_bytes
from app.figures import complete_step, metric_chart
from app.session import auth_on, guard, owner_names, refusing, show_refused, signed_in
from app.ui import fmt_age, fmt_seconds, get_store, pack_label, reap_lost_runs, run_label
from db.store import ACTIVE, RunInfo, Store
from workers.settings import get_settings

REFRESH_SECONDS = 1.0
CHARTS = (  # title, metrics, log y
    ("Loss", ("loss", "val_loss"), True),
    ("Gradient norm", ("grad_l2",), True),
    ("Learning rate", ("lr",), False),
)
PER_STEP = ("loss", "grad_l2", "lr")  # logged at every step (val_loss only every eval_every steps)

st.title("Live")  # first: drawn before the database is opened (migrated on the first visit) and queried
store = get_store()
reap_lost_runs(store)
who = signed_in(store)
owners = owner_names(store) if auth_on() else {}


@refusing
def cancel(run_id: int) -> None:
    """Cancel one run, checked against its owner as the database holds it now (a stale button is refused)."""
    run = store.get_run(run_id)
    if run is None or run.status not in ACTIVE:
        return
    guard("cancel", run.owner_id)
    store.request_cancel(run.id)


def queue_spots() -> dict[int, QueueSpot]:
    """Each queued run's place in its device queue (fair share's order) and an estimated start."""
    stale = get_settings().heartbeat_timeout_s
    live = [w for w in store.list_workers() if w.status(stale) not in ("lost", "stopped") and not w.drain]
    running = {r.id: r for r in store.list_runs(statuses=["running"])}
    workers = []
    for w in live:
        job = running.get(w.run_id) if w.run_id else None
        workers.append((w.kind, (job.eta_seconds() or 0.0) if job else 0.0))
    orders = {queue: store.dispatch_order(queue)[0] for queue in ("auto", "cpu", "cuda")}
    return queue_estimates(orders, workers, store.typical_run_seconds())


def fetch_new(store: Store, run_ids: list[int]) -> pd.DataFrame:
    """Append rows newer than each run's cursor to the session's cache and return the whole cache.

    A run's cursor is the last step through which it holds every per-step metric (`complete_step`); rows past it
    are left for the next refresh, which fetches from the cursor again. So the cache, and the three charts drawn
    from it, end at the same step for every metric.
    """
    cache: dict[int, pd.DataFrame] = st.session_state.setdefault("live_rows", {})
    cursors: dict[int, int] = st.session_state.setdefault("live_cursors", {})
    names = [m for _, metrics, _ in CHARTS for m in metrics]
    fresh = store.metrics(run_ids, names=names, after={rid: cursors[rid] for rid in run_ids if rid in cursors})
    for key, rows in fresh.groupby("run_id"):
        rid = int(key)  # type: ignore[call-overload]
        upto = complete_step(rows, PER_STEP, cursors.get(rid, 0))
        rows = rows[rows["step"] <= upto]
        cache[rid] = pd.concat([cache[rid], rows]) if rid in cache and rid in cursors else rows
        cursors[rid] = upto
    frames = [cache[rid] for rid in run_ids if rid in cache]
    return pd.concat(frames) if frames else fresh.iloc[:0]


def progress_line(run: RunInfo, spot: QueueSpot | None) -> None:
    cols = st.columns([6, 1])
    owner = f" ({owners.get(run.owner_id, '—')})" if owners else ""
    if run.status == "queued":
        device = run.spec.get("device", "auto")
        worker = {"cuda": "a GPU worker", "cpu": "a CPU worker"}.get(device, "a worker")
        where = ""
        if spot is not None:
            starts = "no live worker takes it yet" if spot.starts_in is None else (
                "starts next" if spot.starts_in < 1 else f"starts in about {fmt_seconds(spot.starts_in)}"
            )  # fmt: skip
            where = f" · #{spot.position} in the {spot.queue} queue, {starts}"
        text = f"{run_label(run)}{owner} — queued {fmt_age(run.created_at)}, waiting for {worker}{where}"
        if run.progress:  # handed back or lost mid-run: the next worker goes on from its checkpoint
            text += f" · to resume at step ≤ {run.progress}"
        cols[0].progress(0.0, text=text)
    else:
        eta = run.eta_seconds()
        text = (
            f"{run_label(run)}{owner} — step {run.progress}/{run.steps} · ETA {fmt_seconds(eta)} · {run.device or ''}"
        )
        if run.pack_id is not None:
            text += f" · trained in {pack_label(run)}"
        if run.resumed_from:
            text += f" · resumed from step {run.resumed_from}"
        if run.cancel_requested:
            text += " · stopping…"
        cols[0].progress(run.fraction_done, text=text)
    if allowed(who, "cancel", run.owner_id):
        cols[1].button("Cancel", key=f"cancel-{run.id}", disabled=run.cancel_requested, on_click=cancel, args=(run.id,))


@st.fragment(run_every=REFRESH_SECONDS)
def active_runs() -> None:
    show_refused()
    everyone = store.list_runs(statuses=ACTIVE)
    runs = [r for r in everyone if not mine or r.owner_id == who.id]
    if not runs:
        st.caption("Nothing queued or running.")
        return
    spots = queue_spots() if any(r.status == "queued" for r in runs) else {}  # places in the whole queue
    running = [r for r in reversed(runs) if r.status == "running"]
    place = {run_id: spot.position for run_id, spot in spots.items()}
    queued = sorted((r for r in runs if r.status == "queued"), key=lambda r: (place.get(r.id, 10**9), r.id))
    for run in running + queued:  # running first, then the queue in the order it will start
        progress_line(run, spots.get(run.id))


mine = st.toggle("Only mine", key="live.mine", help="only your runs, in the queue and to watch") if owners else False
st.subheader("Queue")
active_runs()

all_runs = [r for r in store.list_runs() if not mine or r.owner_id == who.id]
if not all_runs:
    st.info("No runs yet. Launch one and it will appear here while it trains.")
    st.page_link("pages/launch.py", label="Launch a run", icon=":material/rocket_launch:")
    st.stop()

labels = {r.id: run_label(r) for r in all_runs}
requested = [int(x) for x in st.query_params.get_all("run") if x.isdigit() and int(x) in labels]
default = requested or [r.id for r in all_runs if r.status in ACTIVE][:5] or [all_runs[0].id]
st.subheader("Curves")
watched = st.multiselect("Runs to watch", list(labels), default=default, format_func=labels.__getitem__, key="watched")


@st.fragment(run_every=REFRESH_SECONDS)
def curves(run_ids: list[int]) -> None:
    if not run_ids:
        st.caption("Pick one or more runs above.")
        return
    frame = fetch_new(store, run_ids)
    runs = {r.id: r for r in store.list_runs(ids=run_ids)}
    active = any(r.status in ACTIVE for r in runs.values())
    if st.session_state.get("live.drawn_active") and not active:  # the last watched run just ended: redraw the
        st.session_state["live.drawn_active"] = False  # page once, so its download holds the finished file
        st.rerun(scope="app")
    status = " · ".join(
        f"{labels[i]}: **{runs[i].status}** ({runs[i].progress}/{runs[i].steps})" for i in run_ids if i in runs
    )
    st.markdown(status)
    for run in runs.values():
        if run.error:
            st.warning(f"{run_label(run)}: {run.error}")
    if frame.empty:
        st.caption("No metrics yet — the first points arrive within a second of the run starting.")
        return
    st.caption(f"{len(frame)} points held · refreshed every {REFRESH_SECONDS:g} s")
    columns = st.container(key="live-charts").columns(len(CHARTS))
    watched_labels = {i: labels[i] for i in run_ids}
    for col, (title, metrics, log_y) in zip(columns, CHARTS, strict=True):  # all three from the one frame above
        fig = metric_chart(frame, metrics, watched_labels, log_y=log_y, y_from_zero=not log_y, title=title)
        col.plotly_chart(fig, key=f"chart-{title}")


curves(watched)

if watched:
    # Finished runs: the file is built now, with the page (their rows no longer change). Runs still training: built
    # when clicked, so it holds their latest rows. Streamlit leaves a file built on click unreferenced, and the
    # fragments' reruns each second delete it after two, so on a slow machine such a download can fail: the
    # finished case, the common one, avoids that.
    finished = all(r.status not in ACTIVE for r in store.list_runs(ids=watched))
    st.session_state["live.drawn_active"] = not finished
    st.download_button(
        "Download CSV of the watched runs",
        data=csv_bytes(store, watched) if finished else lambda: csv_bytes(store, watched),
        on_click="ignore",  # no rerun: the page stays as it is
        file_name=f"optimizer-lab-runs-{'-'.join(map(str, watched))}.csv",
        mime="text/csv",
        icon=":material/download:",
    )
