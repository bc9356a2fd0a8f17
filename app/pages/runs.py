"""Runs: every run in one filterable table (with its owner when logins are on); cancel, delete, re-prioritise,
clone, watch and export the selected ones. Cancel, Delete and Priority are drawn only for runs you may change,
and their handlers check again on the server (app.session.guard) before they act."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.accounts import allowed
from app.export import csv_bytes
from app.session import auth_on, guard, owner_names, refusing, show_refused, signed_in
from app.ui import fmt_seconds, get_store, pack_label, reap_lost_runs, run_label
from db.store import ACTIVE, STATUSES, RunInfo

st.title("Runs")  # first, so the page says what it is before any database work
store = get_store()
reap_lost_runs(store)
who = signed_in(store)
owners = owner_names(store) if auth_on() else {}

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
                "duration": fmt_seconds(r.duration), "sweep": r.sweep_id,
                "trained in": pack_label(r), "reason": r.error or "",
                "created": pd.Timestamp(r.created_at, unit="s"),
            }
        )  # fmt: skip
        if owners:
            rows[-1] = {"id": r.id, "owner": owners.get(r.owner_id, "—"), **rows[-1], "priority": r.priority}
    return pd.DataFrame(rows)


@refusing
def cancel(run_ids: list[int]) -> None:
    """Cancel these runs (those still queued or running): all or none, each checked against its owner now."""
    doomed = [r for r in store.list_runs(ids=run_ids) if r.status in ACTIVE]
    for run in doomed:
        guard("cancel", run.owner_id)
    for run in doomed:
        store.request_cancel(run.id)


@refusing
def delete(run_ids: list[int]) -> None:
    """Delete these runs (those finished) and their metrics: all or none, each checked against its owner now."""
    doomed = [r for r in store.list_runs(ids=run_ids) if r.status not in ACTIVE]
    for run in doomed:
        guard("delete", run.owner_id)
    store.delete_runs([r.id for r in doomed])
    st.session_state.pop("selected", None)


@refusing
def prioritise(run_ids: list[int]) -> None:
    """Give these queued runs the priority typed in (within their owner's queue: higher goes first)."""
    queued = [r for r in store.list_runs(ids=run_ids) if r.status == "queued"]
    for run in queued:
        guard("prioritise", run.owner_id)
    for run in queued:
        store.set_priority(run.id, int(st.session_state["runs.priority"]))


frame = table(runs)
if owners:
    f0, f1, f2, f3, f4 = st.columns([1.5, 2, 2, 2, 3], vertical_alignment="bottom")
    mine = f0.toggle("Only mine", key="runs.mine")
else:
    f1, f2, f3, f4 = st.columns([2, 2, 2, 3])
    mine = False
statuses = f1.multiselect("Status", STATUSES, placeholder="any status")
tasks = f2.multiselect("Task", sorted(frame["task"].unique()), placeholder="any task")
optimizers = f3.multiselect("Optimizer", sorted(frame["optimizer"].unique()), placeholder="any optimizer")
text = f4.text_input("Search names", placeholder="e.g. cosine")
mask = pd.Series(True, index=frame.index)
if mine:
    mask &= frame["owner"] == who.name
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

picked = [r for r in runs if r.id in selected]
active = [r.id for r in picked if r.status in ACTIVE]
finished = [r.id for r in picked if r.status not in ACTIVE]
queued = [r.id for r in picked if r.status == "queued"]
# Changes are offered only where you may make them all (your own runs; any run for an admin).
me = who.id
may_cancel = allowed(who, "cancel", me) and all(allowed(who, "cancel", r.owner_id) for r in picked)
may_delete = allowed(who, "delete", me) and all(allowed(who, "delete", r.owner_id) for r in picked)
may_prioritise = allowed(who, "prioritise", me) and all(allowed(who, "prioritise", r.owner_id) for r in picked)
if picked and not allowed(who, "cancel", me):
    st.caption("Your account can read runs, not change them.")
elif theirs := [r for r in picked if not allowed(who, "cancel", r.owner_id)]:
    names = ", ".join(sorted({owners.get(r.owner_id, "—") for r in theirs}))
    st.caption(
        f"{', '.join(f'#{r.id}' for r in theirs)} belong to {names}: you may watch, compare, clone and download "
        "them; only their owner or an admin may cancel, delete or re-prioritise them."
    )
show_refused()

a1, a0, a2, a3, a4, a5, a6 = st.columns(7)
if a1.button("Watch live", disabled=not selected, width="stretch"):
    st.switch_page("pages/live.py", query_params={"run": [str(i) for i in selected]})
if a0.button("Compare", disabled=not selected, width="stretch", help="overlay, smooth and group these runs"):
    st.session_state.pop("compare.sweeps", None)  # the Compare page takes its choice from the URL
    st.switch_page("pages/compare.py", query_params={"runs": ",".join(map(str, selected))})
if may_cancel:
    a2.button("Cancel", disabled=not active, width="stretch", key="runs.cancel", on_click=cancel, args=(active,))
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
if may_delete:
    with a5.popover("Delete", disabled=not selected, width="stretch"):
        if active:
            st.caption(
                f"Queued or running runs are not deleted: cancel them first ({', '.join(f'#{i}' for i in active)})."
            )
        st.write(f"Delete {len(finished)} run(s) and all their metrics? This cannot be undone.")
        st.button(
            "Delete for good", type="primary", disabled=not finished, key="runs.delete", on_click=delete,
            args=(finished,),
        )  # fmt: skip
if may_prioritise:
    with a6.popover("Priority", disabled=not queued, width="stretch", help="the order of your own queued runs"):
        st.number_input("Priority", value=0, step=1, key="runs.priority", help="higher goes first among your runs")
        st.button("Set priority", key="runs.set_priority", on_click=prioritise, args=(queued,))
