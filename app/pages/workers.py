"""Workers: every worker that has reported (name, host, device, what it does, CPU and memory, the GPU's where it
has one, when it was last heard), the queues' lengths, and GPU-hours per user this week; admins drain a worker
(it finishes its run and takes no more) or let it take runs again. Redrawn every few seconds."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from app.accounts import allowed
from app.session import auth_on, guard, owner_names, refusing, show_refused, signed_in
from app.ui import fmt_age, get_store
from db.store import WorkerInfo
from workers.celery_app import QUEUES, WEEK_S
from workers.settings import get_settings

REFRESH_SECONDS = 3.0

st.title("Workers")
store = get_store()
who = signed_in(store)


@refusing
def drain(name: str, on: bool) -> None:
    """Ask a worker to finish its run and take no more (on), or to take runs again."""
    guard("manage_workers")
    store.request_drain(name, on)


def gpu(w: WorkerInfo) -> str:
    stats = w.stats
    if "gpu_util_percent" not in stats:
        return "—"
    used, total = stats.get("gpu_memory_used"), stats.get("gpu_memory_total")
    memory = f" · {used / 2**30:.1f}/{total / 2**30:.0f} GiB" if used is not None and total else ""
    return f"{stats['gpu_util_percent']:.0f}%{memory}"


@st.fragment(run_every=REFRESH_SECONDS)
def workers_panel() -> None:
    stale_after = get_settings().heartbeat_timeout_s
    workers = store.list_workers()
    names = owner_names(store)
    if not workers:
        st.info(
            "No worker has reported yet. Start one on any machine that reaches this database and Redis: "
            "`python -m workers` (one per GPU: `CUDA_VISIBLE_DEVICES=0 python -m workers`). It appears here "
            "within seconds.",
            icon=":material/info:",
        )
    else:
        training = {r.id: r for r in store.list_runs(ids=[w.run_id for w in workers if w.run_id])}
        rows = []
        for w in workers:
            status = w.status(stale_after)
            if "training run" in status and w.run_id in training and auth_on():  # whose run, on a shared server
                status = status.replace(
                    f"run {w.run_id}", f"run {w.run_id} ({names.get(training[w.run_id].owner_id, '—')})"
                )
            rows.append(
                {"worker": w.name, "host": w.host, "device": w.device, "status": status,
                 "CPU": f"{w.stats['cpu_percent']:.0f}%" if "cpu_percent" in w.stats else "—",
                 "memory": f"{w.stats['memory_percent']:.0f}%" if "memory_percent" in w.stats else "—",
                 "GPU": gpu(w), "last heard": fmt_age(w.heartbeat_at), "up since": fmt_age(w.started_at)}
            )  # fmt: skip
        st.table(pd.DataFrame(rows).set_index("worker"))  # a few rows: plain text, every cell readable
        st.caption(
            f"A worker silent for {stale_after:g} s is lost (killed, or its machine is down); one stopped on purpose "
            "says so; one whose training is stuck inside a step says stalled and gives its run up to another worker "
            "(restart it). Reports come every few seconds."
        )
        show_refused()
        if allowed(who, "manage_workers"):
            for w in workers:
                if w.status(stale_after) in ("lost", "stopped"):
                    continue
                c1, c2 = st.columns([4, 1], vertical_alignment="center")
                c1.markdown(f"`{w.name}` · {w.status(stale_after)}")
                if w.drain:
                    c2.button("Undrain", key=f"undrain-{w.name}", on_click=drain, args=(w.name, False), width="stretch",
                              help="take runs again")  # fmt: skip
                else:
                    c2.button("Drain", key=f"drain-{w.name}", on_click=drain, args=(w.name, True), width="stretch",
                              help="finish the run it has, then take no more")  # fmt: skip

    st.subheader("Queues")
    lengths = store.queue_lengths()
    q = st.columns(len(QUEUES))
    for col, queue in zip(q, QUEUES, strict=True):
        col.metric(f"{queue} queue", lengths.get(queue, 0), help="runs waiting for a worker that consumes it")

    st.subheader("GPU-hours in the last 7 days")
    hours = store.gpu_hours_by_owner(since=time.time() - WEEK_S)
    if not hours:
        st.caption("No run has trained on a GPU in the last 7 days.")
    else:
        frame = pd.DataFrame(
            [{"user": names.get(owner, "—"), "GPU-hours": round(h, 2)} for owner, h in hours.items()]
        ).sort_values("GPU-hours", ascending=False)
        st.dataframe(frame, hide_index=True)


workers_panel()
