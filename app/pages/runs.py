"""Runs: every run in one filterable table; cancel, delete, clone, watch and export the selected ones."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.export import csv_bytes
from app.ui import fmt_seconds, get_store, reap_lost_runs, run_label
from db.store import ACTIVE, STATUSES, RunInfo

st.title("Runs")  # first, so the page says what it is before any database work
store = get_store()
reap_lost_runs(store)

runs = store.list_runs()
if not runs:
    st.info("No runs yet. Launch your first one: the Launch page builds it from the optimizer catalogue.")
    st.page_link("pages/launch.py", label="Launch a run", icon=":material/rocket_launch:")
    st.stop()


def table(runs: list[RunInfo]) -> pd.DataFrame:
    summaries = store.summaries([r.id for r in runs])
    rows = []
    for r in runs:
        spec = r.spec
        summary = summaries.get(r.id, {})
        rows.append(
            {
                "id": r.id, "name": r.name, "status": r.status, "task": spec["task"]["name"],
                "optimizer": spec["optimizer"]["name"], "schedule": spec["schedule"]["name"],
                "lr": spec["optimizer"]["lr"], "batch size": spec["batch"]["size"], "steps": r.steps,
                "progress": r.fraction_done, "final loss": summary.get("final"), "best loss": summary.get("best"),
                "duration": fmt_seconds(r.duration), "sweep": r.sweep_id, "reason": r.error or "",
                "created": pd.Timestamp(r.created_at, unit="s"),
            }
        )  # fmt: skip
    return pd.DataFrame(rows)


frame = table(runs)
f1, f2, f3, f4 = st.columns([2, 2, 2, 3])
statuses = f1.multiselect("Status", STATUSES, placeholder="any status")
tasks = f2.multiselect("Task", sorted(frame["task"].unique()), placeholder="any task")
optimizers = f3.multiselect("Optimizer", sorted(frame["optimizer"].unique()), placeholder="any optimizer")
text = f4.text_input("Search names", placeholder="e.g. cosine")
mask = pd.Series(True, index=frame.index)
for column, chosen in (("status", statuses), ("task", tasks), ("optimizer", optimizers)):
    if chosen:
        mask &= frame[column].isin(chosen)
if text:
    mask &= frame["name"].str.contains(text, case=False, regex=False)
shown = frame[mask].reset_index(drop=True)

labels = {r.id: run_label(r) for r in runs}


def _table_selection() -> None:
    rows = st.session_state["runs-table"]["selection"]["rows"]
    st.session_state["selected"] = [int(shown.loc[i, "id"]) for i in rows]


st.dataframe(
    shown,
    key="runs-table",
    on_select=_table_selection,
    selection_mode="multi-row",
    hide_index=True,
    column_config={
        "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent"),
        "lr": st.column_config.NumberColumn("lr", format="%.2e"),
        "final loss": st.column_config.NumberColumn(format="%.4f"),
        "best loss": st.column_config.NumberColumn(format="%.4f"),
        "created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
    },
)
st.caption(f"{len(shown)} of {len(frame)} runs · tick rows in the table, or pick them here:")
valid = [i for i in st.session_state.get("selected", []) if i in labels]
st.session_state["selected"] = valid
selected: list[int] = st.multiselect("Selected runs", list(labels), format_func=labels.__getitem__, key="selected")

a1, a0, a2, a3, a4, a5 = st.columns(6)
if a1.button("Watch live", disabled=not selected, width="stretch"):
    st.switch_page("pages/live.py", query_params={"run": [str(i) for i in selected]})
if a0.button("Compare", disabled=not selected, width="stretch", help="overlay, smooth and group these runs"):
    st.session_state.pop("compare.sweeps", None)  # the Compare page takes its choice from the URL
    st.switch_page("pages/compare.py", query_params={"runs": ",".join(map(str, selected))})
active = [r.id for r in runs if r.id in selected and r.status in ACTIVE]
if a2.button("Cancel", disabled=not active, width="stretch"):
    for run_id in active:
        store.request_cancel(run_id)
    st.rerun()
if a3.button("Clone", disabled=len(selected) != 1, width="stretch", help="open Launch with this run's spec"):
    st.switch_page("pages/launch.py", query_params={"clone": str(selected[0])})
a4.download_button(
    "Download CSV",
    data=lambda: csv_bytes(store, selected),
    on_click="ignore",
    file_name="optimizer-lab-runs.csv",
    mime="text/csv",
    disabled=not selected,
    width="stretch",
)
with a5.popover("Delete", disabled=not selected, width="stretch"):
    doomed = [i for i in selected if i not in active]
    if active:
        st.caption(f"Queued or running runs are not deleted: cancel them first ({', '.join(f'#{i}' for i in active)}).")
    st.write(f"Delete {len(doomed)} run(s) and all their metrics? This cannot be undone.")
    if st.button("Delete for good", type="primary", disabled=not doomed):
        store.delete_runs(doomed)
        st.session_state.pop("selected", None)
        st.rerun()
