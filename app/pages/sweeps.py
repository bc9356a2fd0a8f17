"""Sweeps: build one (grid values and random ranges over any field, with the run count and an estimated duration
before anything is queued), watch its progress, cancel it or re-run what failed, and read what won."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
import streamlit as st
import yaml

from app import analysis
from app.accounts import allowed
from app.export import (
    SUMMARY_METRICS,
    flatten_dict,
    frame_csv_bytes,
    long_csv_bytes,
    long_frame,
    parquet_bytes,
    summary_frame,
)
from app.figures import best_lr_chart, heatmap, parallel_chart, sensitivity_chart, time_to_target_chart
from app.session import auth_on, guard, owner_names, refusing, show_refused, signed_in
from app.ui import component_form, fmt_seconds, get_store, reap_lost_runs
from db.store import ACTIVE, FINISHED, RERUNNABLE, RunInfo, Store, SweepInfo, higher_is_better
from models.tasks import TASKS
from workers.batching import BATCH_POLICIES
from workers.celery_app import QueueUnavailable, QuotaExceeded, rerun, submit_sweep
from workers.metrics import METRIC_NAMES
from workers.optimizers import OPTIMIZERS
from workers.packed import packing_summary, plan_packs
from workers.schedules import SCHEDULES
from workers.settings import get_settings
from workers.spec import COMPONENTS, FieldError, RunSpec, SpecError
from workers.sweep import SweepSpec, build, load_sweep

AXES = 4
AXIS_KINDS = ("values", "log range", "linear range")
DEFAULT_AXES = [
    ("optimizer.lr", "values", "0.001, 0.01"),
    ("batch.size", "values", "32, 128"),
    ("seed", "values", "0, 1"),
    ("—", "values", ""),
]

st.title("Sweeps")  # first, so the page says what it is before any database work
store = get_store()
reap_lost_runs(store)
who = signed_in(store)
owners = owner_names(store) if auth_on() else {}


def sweepable(base: dict[str, Any]) -> list[str]:
    """Fields a sweep can vary: the usual suspects first, then every parameter of the chosen components."""
    fields = ["optimizer.lr", "batch.size", "seed", "optimizer.name", "schedule.name", "task.name", "steps"]
    for key, registry in COMPONENTS.items():
        entry = registry[base[key]["name"]]
        fields += [f"{key}.{p.name}" for p in entry.params if p.kind != "floats"]
    return list(dict.fromkeys(fields))


def example(field: str, kind: str, base: dict[str, Any]) -> str | None:
    """Example text for an axis over `field`, from its registry entry (`analysis.axis_example`)."""
    key, _, name = field.partition(".")
    if key in COMPONENTS and name == "name":
        return analysis.axis_example(field, kind, choices=list(COMPONENTS[key]))
    if key in COMPONENTS:
        param = next((p for p in COMPONENTS[key][base[key]["name"]].params if p.name == name), None)
        if param is not None:
            return analysis.axis_example(field, kind, param.default, param.choices)
    return analysis.axis_example(field, kind)


def parse_axis(field: str, kind: str, text: str, number: int, sample: str | None) -> tuple[str, Any]:
    """One builder row → ('grid', [values]) or ('random', {low, high, scale}); errors name the row and field, and
    their example is `sample` (from `example`: None where a range does not fit the field)."""
    where = f"axis {number} ({field})"
    try:
        values = [_number(v) for v in yaml.safe_load(f"[{text}]")]
    except yaml.YAMLError:
        raise SpecError([FieldError(where, f"cannot read {text!r}: write values separated by commas")]) from None
    if kind == "values":
        if not values:
            hint = f", e.g. {sample}" if sample else ""
            raise SpecError([FieldError(where, f"give at least one value{hint}")])
        return "grid", values
    if len(values) != 2 or not all(isinstance(v, int | float) for v in values):
        hint = f" (e.g. {sample})" if sample else "; this field takes values, not a range"
        raise SpecError([FieldError(where, f"a range is two numbers: low, high{hint}")])
    return "random", {"low": values[0], "high": values[1], "scale": kind.split()[0], "integer": field in INT_FIELDS}


INT_FIELDS = {"batch.size", "seed", "steps"}


def _number(value: Any) -> Any:
    """YAML reads 1e-4 as text (it wants 1.0e-4); people write 1e-4."""
    if isinstance(value, str):
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
    return value


def builder() -> None:
    show_refused()
    if not allowed(who, "launch"):
        st.info(
            "Your account can read sweeps and what won, but not queue them. Ask an admin for the member role.",
            icon=":material/visibility:",
        )
        return
    bounds = (st.query_params.get("lr_low"), st.query_params.get("lr_high"))  # from the Laws page's range test
    if all(bounds) and st.session_state.get("sw.prefilled") != bounds:
        st.session_state.update(
            {
                "sw.axis0.field": "optimizer.lr",
                "sw.axis0.kind": "log range",
                "sw.axis0.values": f"{bounds[0]}, {bounds[1]}",
                "sw.prefilled": bounds,
            }
        )
    st.session_state.setdefault("sw.steps", 300)
    st.session_state.setdefault("sw.eval_every", 50)
    st.session_state.setdefault("sw.name", "sweep")
    form, side = st.columns([3, 2], gap="large")
    with form:
        st.text_input("Sweep name", key="sw.name")
        with st.expander("Base run: every run starts from this", expanded=True):
            base: dict[str, Any] = {
                "task": component_form("Task", TASKS, "sw.task", None),
                "optimizer": component_form("Optimizer", OPTIMIZERS, "sw.optimizer", {"name": "adamw"}),
                "schedule": component_form("Schedule", SCHEDULES, "sw.schedule", {"name": "warmup-cosine"}),
                "batch": component_form("Batch size policy", BATCH_POLICIES, "sw.batch", None),
            }
            c1, c2, c3 = st.columns(3)
            base["steps"] = c1.number_input("steps", min_value=1, step=1, key="sw.steps")
            base["eval_every"] = c2.number_input("eval_every", min_value=1, step=1, key="sw.eval_every")
            base["device"] = c3.selectbox("device", ("auto", "cpu", "cuda"), key="sw.device")
        st.markdown("**Swept fields** · values are a grid (every combination); a range draws random samples")
        options = ["—", *sweepable(base)]
        grid: dict[str, Any] = {}
        ranges: dict[str, Any] = {}
        errors: list[FieldError] = []
        for i in range(AXES):
            field0, kind0, text0 = DEFAULT_AXES[i]
            st.session_state.setdefault(f"sw.axis{i}.field", field0)
            st.session_state.setdefault(f"sw.axis{i}.kind", kind0)
            st.session_state.setdefault(f"sw.axis{i}.values", text0)
            if st.session_state[f"sw.axis{i}.field"] not in options:
                st.session_state[f"sw.axis{i}.field"] = "—"
            c1, c2, c3 = st.columns([2, 1.8, 2.2])  # Kind fits "linear range" (it showed "value" for "values")
            field = c1.selectbox(f"Field {i + 1}", options, key=f"sw.axis{i}.field")
            kind = c2.selectbox(f"Kind {i + 1}", AXIS_KINDS, key=f"sw.axis{i}.kind", disabled=field == "—")
            sample = example(field, kind, base) if field != "—" else None
            text = c3.text_input(
                f"Values {i + 1}",
                key=f"sw.axis{i}.values",
                disabled=field == "—",
                placeholder=sample or ("values separated by commas" if kind == "values" else "low, high"),
            )
            if field == "—":
                continue
            try:
                where, axis = parse_axis(field, kind, text, i + 1, sample)
            except SpecError as exc:
                errors.extend(exc.errors)
                continue
            if field in grid or field in ranges:
                errors.append(FieldError(f"axis {i + 1} ({field})", "this field is already swept above"))
            (grid if where == "grid" else ranges)[field] = axis
        c1, c2 = st.columns(2)
        samples = c1.number_input("Random samples per grid point", 1, 1000, 4, key="sw.samples", disabled=not ranges)
        sampler_seed = c2.number_input("Sampler seed", 0, 2**31 - 1, 0, key="sw.sampler_seed", disabled=not ranges)
        packing = st.toggle(
            "Train compatible runs together (packed)", value=True, key="sw.packing",
            help="runs that differ only in learning rate, other hyper-parameters, schedule parameters or seed train "
            "at once as one vectorised model on one worker, each still its own run; off: one at a time",
        )  # fmt: skip
        with st.expander("Early stopping"):
            c1, c2, c3 = st.columns(3)
            rule = c1.selectbox(
                "Rule",
                ("none", "median", "asha"),
                key="sw.es.rule",
                help="median: stop a run whose running mean is worse than the others' median; "
                "asha: keep the best 1/η at each rung. Diverged runs always stop at once.",
            )
            es_metric = c2.selectbox("Metric", METRIC_NAMES, key="sw.es.metric", disabled=rule == "none")
            grace = c3.number_input(
                "Grace steps",
                1,
                10**7,
                50,
                key="sw.es.grace",
                disabled=rule == "none",
                help="no judgement before this step; ASHA's first rung",
            )
            every = c1.number_input("Check every (median)", 1, 10**7, 50, key="sw.es.every", disabled=rule != "median")
            min_runs = c2.number_input(
                "Min other runs (median)", 1, 1000, 3, key="sw.es.min", disabled=rule != "median"
            )
            eta = c3.number_input("η (asha)", 2, 10, 3, key="sw.es.eta", disabled=rule != "asha")

    data: dict[str, Any] = {
        "name": st.session_state["sw.name"] or "sweep",
        "base": base,
        "grid": grid,
        "random": ranges,
        "samples": int(samples),
        "sampler_seed": int(sampler_seed),
        "packing": "auto" if packing else "off",
        "early_stopping": {
            "rule": rule,
            "metric": es_metric,
            "mode": "max" if higher_is_better(es_metric) else "min",
            "grace_steps": int(grace),
            "every": int(every),
            "min_runs": int(min_runs),
            "reduction_factor": int(eta),
        },
    }
    sweep: SweepSpec | None = None
    specs: list[RunSpec] = []
    if not errors:
        try:
            sweep = load_sweep(yaml.safe_dump(data))
            specs = build(sweep)
        except SpecError as exc:
            errors, sweep = exc.errors, None
    with side:
        if sweep is not None:
            finished_runs = store.list_runs(statuses=["completed"])
            packs = plan_packs(specs, get_settings().pack_size) if sweep.packing != "off" else []
            seconds = analysis.estimate_seconds(
                [s.model_dump() for s in specs], analysis.seconds_per_step(finished_runs), packs,
                analysis.seconds_per_member_step(finished_runs),
            )  # fmt: skip
            m1, m2, m3 = st.columns(3)
            m1.metric("Runs", len(specs))
            m2.metric("Steps in all", f"{sum(s.steps for s in specs):,}")
            m3.metric(
                "Estimated",
                fmt_seconds(seconds),
                help="on one worker, at the pace of finished runs of the same task, packed or alone as these will "
                "train (a guess until one has finished); divide by the number of workers",
            )
            st.caption(f"Trains {packing_summary(specs, sweep.packing)}.")
            st.dataframe(pd.DataFrame({"run": [s.name for s in specs[:200]]}), hide_index=True, height=220)
        if errors:
            st.error("**This sweep cannot run yet:**\n" + "\n".join(f"- `{e.field}`: {e.message}" for e in errors))
        with st.expander("Sweep as YAML (for `python -m app.cli sweep FILE`)"):
            st.code(yaml.safe_dump(sweep.model_dump(mode="json") if sweep else data, sort_keys=False), language="yaml")
        st.button(
            f"Queue {len(specs)} runs" if sweep else "Queue", type="primary", width="stretch",
            disabled=sweep is None, key="sw.queue", on_click=queue, args=(sweep, specs),
        )  # fmt: skip
        if problem := st.session_state.pop("sw.queue_error", None):
            st.error(problem)


@refusing
def queue(sweep: SweepSpec, specs: list[RunSpec]) -> None:
    """The Queue button's callback: it runs before the page, so it may switch the view to the new sweep."""
    who = guard("launch")  # again on the server: the button may be older than a change of role or a logout
    try:
        sweep_id = submit_sweep(store, sweep.name, sweep.model_dump(mode="json"), specs, owner_id=who.id)
    except QuotaExceeded as exc:
        st.session_state["sw.queue_error"] = str(exc)
        return
    except QueueUnavailable as exc:  # the sweep is recorded and its runs queued: show it, and say why they wait
        st.session_state["sw.queue_error"] = str(exc)
        if exc.sweep_id is None:
            return
        sweep_id = exc.sweep_id
    st.session_state["sweeps.view"] = "Sweeps"
    st.session_state["sweeps.chosen"] = sweep_id


@refusing
def cancel(run_ids: list[int]) -> None:
    """Cancel Sweep: those of these runs still queued or running, each checked against its owner now."""
    doomed = [r for r in store.list_runs(ids=run_ids) if r.status in ACTIVE]
    for run in doomed:
        guard("cancel", run.owner_id)
    for run in doomed:
        store.request_cancel(run.id)


@refusing
def rerun_failed(run_ids: list[int]) -> None:
    """Re-run failed: reset these runs (those that did not complete) and queue them again."""
    again = [r for r in store.list_runs(ids=run_ids) if r.status in RERUNNABLE]
    for run in again:
        guard("rerun", run.owner_id)
    try:
        rerun(store, [r.id for r in again])
    except QueueUnavailable as exc:  # they are queued again all the same; a worker sends them later
        st.session_state["sw.queue_error"] = str(exc)


def progress_panel(sweep: SweepInfo) -> None:
    sweep_id = sweep.id
    runs = store.list_runs(sweep_id=sweep_id)
    counts = pd.Series([r.status for r in runs]).value_counts().to_dict()
    total, finished = len(runs), sum(counts.get(s, 0) for s in FINISHED)
    steps_total = sum(r.steps for r in runs) or 1
    steps_done = sum(r.steps if r.status in FINISHED else r.progress for r in runs)
    done = [r for r in runs if r.status == "completed" and r.duration and r.progress]
    # a packed run's duration is its pack's, shared by its members: each member's share is its cost
    elapsed = sum((r.duration or 0.0) / (r.pack_size or 1) for r in done)
    pace = elapsed / sum(r.progress for r in done) if done else None
    left = (steps_total - steps_done) * pace if pace else None
    st.progress(
        steps_done / steps_total,
        text=f"{finished} of {total} runs finished"
        + (f" · about {fmt_seconds(left)} left on one worker" if left and finished < total else ""),
    )
    st.caption(" · ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    active = [r.id for r in runs if r.status in ACTIVE]
    failed = [r.id for r in runs if r.status in RERUNNABLE]
    show_refused()
    if problem := st.session_state.pop("sw.queue_error", None):
        st.error(problem)
    b1, b2, b3 = st.columns(3)
    owned = {sweep.owner_id, *(r.owner_id for r in runs)}  # one owner: the sweep's
    if all(allowed(who, "cancel", owner) for owner in owned):  # an admin, or the sweep's owner
        b1.button(
            f"Cancel sweep ({len(active)} active)", disabled=not active, width="stretch", key="sweep.cancel",
            on_click=cancel, args=(active,),
        )  # fmt: skip
    if all(allowed(who, "rerun", owner) for owner in owned):
        b2.button(
            f"Re-run failed ({len(failed)})", disabled=not failed, width="stretch", key="sweep.rerun",
            help="failed, diverged, cancelled and stopped runs: reset and queued again", on_click=rerun_failed,
            args=(failed,),
        )  # fmt: skip
    if not allowed(who, "cancel", sweep.owner_id):
        b1.caption(
            f"This sweep belongs to {owners.get(sweep.owner_id, '—')}: only they or an admin may cancel or re-run it."
            if allowed(who, "launch")
            else "Your account can read sweeps, not change them."
        )
    group = analysis.compare_group([flatten_dict(r.spec) for r in runs])  # seeds folded into bands
    b3.page_link(
        "pages/compare.py",
        label="Compare its curves",
        icon=":material/stacked_line_chart:",
        query_params={"sweep": str(sweep_id), **({"group": ",".join(group)} if group else {})},
    )
    rows = [
        {"id": r.id, "name": r.name, "status": r.status, "progress": r.fraction_done, "reason": r.error or ""}
        for r in sorted(runs, key=lambda r: r.id)
    ]
    with st.expander(f"Runs ({total})", expanded=total <= 6):
        st.dataframe(
            pd.DataFrame(rows),
            hide_index=True,
            column_config={
                "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent")
            },
        )


def analysis_panel(sweep_id: int, runs: list[RunInfo]) -> None:
    ids = [r.id for r in runs]
    c1, c2, c3 = st.columns(3)
    value = c1.selectbox(
        "Value",
        [f"{w}_{m}" for m in SUMMARY_METRICS for w in ("final", "best")],
        key="an.value",
        format_func=lambda c: c.replace("_", " ", 1),
    )
    target_metric = c2.selectbox("Target metric", SUMMARY_METRICS, key="an.target_metric")
    target = c3.number_input(
        "Target value", value=0.5, format="%g", key="an.target", help="time to target: when each run first reached it"
    )
    summary = summary_frame(store, ids, (target_metric, float(target)))
    flat = {r.id: flatten_dict(r.spec) for r in runs}
    fields = [f for f in analysis.varying(flat.values()) if f != "name"]
    for column in fields:
        if summary[column].map(lambda v: isinstance(v, list)).any():
            summary[column] = summary[column].astype(str)
    if not fields:
        st.info("The runs of this sweep do not differ in any field yet.")
        return
    numeric = [f for f in fields if pd.to_numeric(summary[f], errors="coerce").notna().all()]

    tabs = st.tabs(["Heatmap", "Best LR vs batch", "Sensitivity", "Time to target", "Parallel coordinates", "Export"])
    with tabs[0]:
        c1, c2 = st.columns(2)
        hx, hy = analysis.heatmap_axes(analysis.swept_fields(flat.values()), fields)  # seeds averaged in cells
        x = c1.selectbox("x", fields, index=fields.index(hx), key="an.hx")
        y = c2.selectbox("y", fields, index=fields.index(hy), key="an.hy")
        if x == y:
            st.info("Choose two different fields.")
        else:
            cells = analysis.aggregate_grid(summary, x, y, value)
            st.plotly_chart(heatmap(cells, x, y, value.replace("_", " ", 1)), key="an.heatmap")
            st.caption(
                "Each cell: the mean over its runs (seeds) ± their standard deviation; ✕ where any run diverged."
            )
    group_default = "optimizer.name" if "optimizer.name" in fields else None
    with tabs[1]:
        if "optimizer.lr" in numeric and "batch.size" in numeric:
            group = [group_default] if group_default else []
            best = analysis.best_per_group(
                summary, [*group, "batch.size"], "optimizer.lr", value, higher=higher_is_better(value)
            )
            st.plotly_chart(best_lr_chart(best, "batch.size", "optimizer.lr", group_default), key="an.bestlr")
            st.dataframe(best, hide_index=True)
        else:
            st.info("Sweep both optimizer.lr and batch.size to see how the best LR moves with the batch size.")
    with tabs[2]:
        if "optimizer.lr" in numeric:
            st.plotly_chart(sensitivity_chart(summary, "optimizer.lr", value, group_default), key="an.sensitivity")
        else:
            st.info("Sweep optimizer.lr to see how sensitive the result is to it.")
    with tabs[3]:
        unit = st.radio(
            "Measured in",
            ("target_step", "target_samples", "target_seconds"),
            horizontal=True,
            key="an.unit",
            format_func=lambda u: u.removeprefix("target_"),
        )
        labels = analysis.legend_labels(flat, {r.id: r.name for r in runs})
        st.plotly_chart(time_to_target_chart(summary, labels, unit), key="an.ttt")
        st.dataframe(
            summary[["run_id", "run_name", "status", "target_step", "target_samples", "target_seconds"]],
            hide_index=True,
        )
    with tabs[4]:
        st.plotly_chart(parallel_chart(summary, fields, value), key="an.parallel")
    with tabs[5]:
        name = f"sweep-{sweep_id}"
        e1, e2, e3, e4 = st.columns(4)
        e1.download_button(
            "Long CSV",
            lambda: long_csv_bytes(store, ids),
            f"{name}.csv",
            "text/csv",
            on_click="ignore",
            key="ex.long",
            help="every run, step and metric: one number per row",
        )
        e2.download_button(
            "Summary CSV",
            frame_csv_bytes(summary),
            f"{name}-summary.csv",
            "text/csv",
            on_click="ignore",
            key="ex.summary",
            help="one row per run",
        )
        e3.download_button(
            "Long Parquet",
            lambda: parquet_bytes(long_frame(store, ids)),
            f"{name}.parquet",
            "application/vnd.apache.parquet",
            on_click="ignore",
            key="ex.longpq",
        )
        e4.download_button(
            "Summary Parquet",
            parquet_bytes(summary),
            f"{name}-summary.parquet",
            "application/vnd.apache.parquet",
            on_click="ignore",
            key="ex.summarypq",
        )
        st.dataframe(summary.fillna({"reason": ""}), hide_index=True)  # no reason: an empty cell, not "None"


def viewer(store: Store) -> None:
    sweeps = {s.id: s for s in store.list_sweeps()}
    if owners and sweeps and st.toggle("Only mine", key="sweeps.mine"):
        sweeps = {i: s for i, s in sweeps.items() if s.owner_id == who.id}
        if not sweeps:
            st.info("You have no sweeps yet. Build one under **New sweep**.", icon=":material/info:")
            return
    if not sweeps:
        st.info(
            "No sweeps yet. Build one under **New sweep**, or queue one from a file with "
            "`python -m app.cli sweep FILE`.",
            icon=":material/info:",
        )
        return
    counts = store.sweep_counts()  # whether it is live; the progress bar below counts afresh each time it is drawn
    wanted = st.query_params.get("sweep")
    if wanted and wanted.isdigit() and int(wanted) in sweeps and "sweeps.chosen" not in st.session_state:
        st.session_state["sweeps.chosen"] = int(wanted)
    if st.session_state.get("sweeps.chosen") not in sweeps:
        st.session_state["sweeps.chosen"] = next(iter(sweeps))

    # The label holds no counts: the progress bar says how far the sweep is, counted as it is drawn. A selectbox
    # whose labels change while the page is open keeps showing the old label (it was "0/8 finished" beside a
    # bar saying "8 of 8 runs finished").
    def label(i: int) -> str:
        return f"#{i} {sweeps[i].name}" + (f" · {owners.get(sweeps[i].owner_id, '—')}" if owners else "")

    sweep_id = st.selectbox("Sweep", list(sweeps), format_func=label, key="sweeps.chosen")
    live = any(s in ACTIVE for s in counts.get(sweep_id, {}))
    drawn_with = (sum(n for s, n in counts.get(sweep_id, {}).items() if s in FINISHED), time.monotonic())

    @st.fragment(run_every=2 if live else None)
    def watch() -> None:
        progress_panel(sweeps[sweep_id])
        statuses = [r.status for r in store.list_runs(sweep_id=sweep_id)]
        finished = sum(s in FINISHED for s in statuses)
        if live and analysis.refresh_due(drawn_with, finished, all(s not in ACTIVE for s in statuses)):
            st.rerun()  # the whole page, so the analysis below includes the runs finished since it was drawn

    watch()
    runs = store.list_runs(sweep_id=sweep_id)
    if not any(r.progress for r in runs):
        st.info("Analysis appears once runs have logged metrics.", icon=":material/hourglass_empty:")
        return
    st.subheader("What won")
    analysis_panel(sweep_id, runs)


if st.query_params.get("lr_low") and "sweeps.view" not in st.session_state:
    st.session_state["sweeps.view"] = "New sweep"
view = st.segmented_control(
    "View", ("Sweeps", "New sweep"), key="sweeps.view", default="Sweeps", label_visibility="collapsed"
)
if view == "New sweep":
    builder()
else:
    viewer(store)
