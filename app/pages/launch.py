"""Launch: a form generated from the registries, a live learning-rate preview, and the submit button."""

from __future__ import annotations

from typing import Any

import streamlit as st
import yaml

from app.accounts import allowed
from app.figures import schedule_preview
from app.session import guard, refusals, signed_in
from app.ui import component_form, get_store, widget_value
from db.store import Store
from models.tasks import TASKS
from workers.batching import BATCH_POLICIES
from workers.celery_app import QueueUnavailable, QuotaExceeded, submit  # imported with the page, not on the first click
from workers.optimizers import OPTIMIZERS
from workers.schedules import SCHEDULES, curve
from workers.spec import COMPONENTS, FieldError, RunSpec, SpecError, parse_spec

TOP_LEVEL = {"steps": 500, "eval_every": 50, "seed": 0, "device": "auto", "name": ""}


def apply_clone(spec: dict[str, Any], run_id: int) -> None:
    """Put a stored spec into the form's widgets (once per clone), before any widget is drawn."""
    for key, registry in COMPONENTS.items():
        component = spec.get(key) or {}
        if component.get("name") not in registry:
            continue
        st.session_state[f"{key}.name"] = component["name"]
        entry = registry[component["name"]]
        for p in entry.params:
            if p.name in component:
                st.session_state[f"{key}:{entry.name}:{p.name}"] = widget_value(p, component[p.name])
    for field in TOP_LEVEL:
        if field in spec:
            st.session_state[f"run.{field}"] = spec[field] if field != "name" else f"{spec[field]} (clone)"
    st.session_state["cloned_from"] = run_id


def logged_lr(store: Store) -> dict[str, tuple[list[int], list[float]]]:
    """The learning rate the cloned run actually logged, drawn over the preview."""
    source = st.session_state.get("cloned_from")
    if not source:
        return {}
    rows = store.metrics([source], names=["lr"])
    return {f"#{source}": (rows["step"].tolist(), rows["value"].tolist())} if len(rows) else {}


st.title("Launch a run")  # first, so the page says what it is before any database work
store = get_store()
who = signed_in(store)
if not allowed(who, "launch"):
    st.info(
        "Your account can read everything here (runs, sweeps, curves, the Playground and the Reference) but not "
        "launch runs. Ask an admin for the member role.",
        icon=":material/visibility:",
    )
    st.page_link("pages/runs.py", label="See the runs", icon=":material/table_rows:")
    st.stop()
clone = st.query_params.get("clone")
if clone and clone.isdigit() and st.session_state.get("cloned_from") != int(clone):
    source = store.get_run(int(clone))
    if source is not None:
        apply_clone(source.spec, source.id)

wanted = (st.query_params.get("optimizer"), st.query_params.get("lr"))  # from the Laws page's range test
if wanted[0] in OPTIMIZERS and wanted[1] and st.session_state.get("prefilled") != wanted:
    try:
        st.session_state["optimizer.name"] = wanted[0]
        st.session_state[f"optimizer:{wanted[0]}:lr"] = float(wanted[1])
        st.session_state["prefilled"] = wanted
    except ValueError:
        pass

if st.session_state.get("cloned_from"):
    st.info(f"Form filled from run #{st.session_state['cloned_from']}. Change anything, then launch.")

for field, default in TOP_LEVEL.items():
    st.session_state.setdefault(f"run.{field}", default)

form, side = st.columns([3, 2], gap="large")
with form:
    st.text_input("Run name", key="run.name", placeholder="made from the optimizer, schedule and task when empty")
    with st.container(border=True):
        task = component_form("Task", TASKS, "task", None)
    with st.container(border=True):
        optimizer = component_form("Optimizer", OPTIMIZERS, "optimizer", {"name": "adamw"})
    with st.container(border=True):
        schedule = component_form("Learning-rate schedule", SCHEDULES, "schedule", {"name": "warmup-cosine"})
    with st.container(border=True):
        batch = component_form("Batch size policy", BATCH_POLICIES, "batch", None)
    c1, c2, c3, c4 = st.columns(4)
    c1.number_input("steps", step=1, key="run.steps", help="optimizer steps")
    c2.number_input("eval_every", step=1, key="run.eval_every", help="steps between validation passes")
    c3.number_input("seed", step=1, key="run.seed", help="seeds initialisation and batch order")
    c4.selectbox("device", ("auto", "cpu", "cuda"), key="run.device", help="auto uses a GPU when the worker has one")

data: dict[str, Any] = {f: st.session_state[f"run.{f}"] for f in TOP_LEVEL}
data.update(task=task, optimizer=optimizer, schedule=schedule, batch=batch)

spec: RunSpec | None = None
errors: list[FieldError] = []
try:
    spec = parse_spec(data)
except SpecError as exc:
    errors = exc.errors

with side:
    steps = spec.steps if spec else int(data["steps"] or 1)
    overlay = st.multiselect(
        "Compare with", [n for n in SCHEDULES if n != schedule["name"]], key="overlay",
        placeholder="overlay other schedules (at their defaults)",
    )  # fmt: skip
    try:
        lr = float(optimizer["lr"])
        schedule_params = {k: v for k, v in schedule.items() if k != "name"}
        curves = {schedule["name"]: curve(schedule["name"], max(1, steps), lr, schedule_params, points=1000)}
        for name in overlay:
            curves[name] = curve(name, max(1, steps), lr, SCHEDULES[name].defaults, points=1000)
        st.plotly_chart(schedule_preview(curves, logged_lr(store)), key="preview")
    except (ValueError, ZeroDivisionError, TypeError, OverflowError):
        st.caption("The preview appears once the schedule's fields are valid.")
    if errors:
        st.error("**This spec cannot run yet:**\n" + "\n".join(f"- `{e.field}`: {e.message}" for e in errors))
    with st.expander("Spec as YAML"):
        st.code(yaml.safe_dump(spec.model_dump(mode="json") if spec else data, sort_keys=False), language="yaml")
    launched = st.button("Launch", type="primary", width="stretch")

if launched:
    if spec is None:
        side.error("Nothing was queued: fix the fields listed above first.")
    else:
        with refusals(side):
            owner = guard("launch")  # again, right before acting: a role changed or a logout since counts
            try:
                run_id = submit(store, spec, owner_id=owner.id)
            except QuotaExceeded as exc:
                side.error(str(exc), icon=":material/block:")
            except QueueUnavailable as exc:  # recorded and queued all the same: a worker sends it later
                side.warning(str(exc), icon=":material/schedule:")
                if exc.run_ids:
                    st.session_state["last_launched"] = exc.run_ids[0]
            else:
                st.session_state["last_launched"] = run_id

if last := st.session_state.get("last_launched"):
    side.success(f"Run #{last} queued.")
    side.page_link(
        "pages/live.py", label=f"Watch run #{last} live", icon=":material/monitoring:", query_params={"run": str(last)}
    )
