"""Laws: experiments that teach a result from the papers — the LR range test, LR–batch-size scaling rules, the
Step Law, the gradient ℓ1/ℓ2 ratio, optimizer memory, and schedules side by side."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import streamlit as st

from app.accounts import allowed
from app.analysis import GAUSSIAN_L1_L2, ScalingRun, scaling_summary, suggest_lr_range
from app.curves import CurveCache
from app.figures import metric_chart, schedule_preview
from app.session import guard, refusals, signed_in
from app.teaching_figures import (
    range_test_chart,
    scaling_curves_chart,
    scaling_final_chart,
    state_memory_chart,
    step_law_surface,
)
from app.ui import get_store, run_label
from db.store import ACTIVE, FINISHED
from models.tasks import TASKS
from workers.celery_app import QueueUnavailable, QuotaExceeded, submit, submit_sweep
from workers.optimizers import OPTIMIZERS
from workers.scaling import scaling_experiment, step_law, step_law_grid
from workers.schedules import SCHEDULES, curve
from workers.spec import SpecError, parse_spec

st.title("Laws")  # first: drawn before the database is opened and queried
store = get_store()
who = signed_in(store)
may_launch = allowed(who, "launch")
st.caption(
    "Experiments that show a result from the papers on real runs. Each queues ordinary runs or sweeps, so "
    "their curves are also on the Compare and Sweeps pages."
)

range_tab, scaling_tab, steplaw_tab, ratio_tab, memory_tab, schedule_tab = st.tabs(
    ["LR range test", "Scaling rules", "Step Law", "Gradient ℓ1/ℓ2", "Optimizer memory", "Schedules"]
)

REFRESH_SECONDS = 1.0


def range_results(chosen: list[int], polling: bool) -> None:
    """The chosen range tests' loss against LR, and each finished one's suggested range. Polled every second
    while one of them is queued or running (`polling`); when the last one ends, the page reruns once without
    polling."""
    runs = {r.id: r for r in store.list_runs(ids=chosen)}
    frame = store.metrics(chosen, ["loss", "lr"])
    rows, lr_curves, ranges, notes = [], {}, {}, []
    for run_id in chosen:
        if (run := runs.get(run_id)) is None:
            continue
        label = run_label(run)
        wide = frame[frame.run_id == run_id].pivot(index="step", columns="metric", values="value")
        wide = wide.reindex(columns=["lr", "loss"]).dropna()
        if run.status in ACTIVE:
            notes.append(f"{label}: {run.status} ({run.progress}/{run.steps}); its suggested range comes when it ends.")
        if len(wide) < 5:
            if run.status not in ACTIVE:
                notes.append(f"{label}: {run.status} with {len(wide)} points, too few for a curve. {run.error or ''}")
            continue
        lr_curves[label] = (wide["lr"].to_numpy(), wide["loss"].to_numpy())
        if run.status in ACTIVE:
            continue
        try:
            hint = suggest_lr_range(*lr_curves[label])
        except ValueError as exc:  # too few finite points before the blow-up
            notes.append(f"{label}: no suggestion ({exc}).")
            continue
        ranges[label] = (hint.low, hint.high)
        partial = run.status not in ("completed", "diverged")
        rows.append(
            {
                "run": label,
                "steepest LR": hint.steepest,
                "valley LR": hint.valley,
                "optimizer": run.spec["optimizer"]["name"],
                "note": f" (it was {run.status} at step {run.progress}: the curve may end early)" if partial else "",
            }
        )
    for note in notes:
        st.caption(note)
    st.plotly_chart(range_test_chart(lr_curves, ranges), key="rt.chart")
    for row in rows:
        c1, c2, c3 = st.columns([3, 1, 1])
        low, high = sorted((row["steepest LR"], row["valley LR"]))
        c1.markdown(
            f"**{row['run']}**: suggested LR {row['steepest LR']:.2g}, range {low:.2g} – {high:.2g}{row['note']}"
        )
        c2.page_link(
            "pages/launch.py",
            label="Use in Launch",
            icon=":material/rocket_launch:",
            query_params={"optimizer": row["optimizer"], "lr": f"{row['steepest LR']:.3g}"},
        )
        c3.page_link(
            "pages/sweeps.py",
            label="Use as sweep bounds",
            icon=":material/grid_view:",
            query_params={"lr_low": f"{low:.3g}", "lr_high": f"{high:.3g}"},
        )
    if polling and not any(r.status in ACTIVE for r in runs.values()):
        st.rerun()  # the last one ended: redraw the page once, without polling


with range_tab:
    st.markdown(
        "The LR grows exponentially from 1e-7 to 10 while the model trains; the loss falls where the LR "
        "is useful and blows up past it. The suggestion: from the steepest fall to a tenth of the LR at the "
        "lowest loss (Smith 2017)."
    )
    c1, c2, c3, c4, c5 = st.columns(5)
    task = c1.selectbox("Task", list(TASKS), key="rt.task")
    optimizer = c2.selectbox("Optimizer", list(OPTIMIZERS), index=list(OPTIMIZERS).index("adamw"), key="rt.opt")
    batch = c3.number_input("Batch size", 1, 4096, 64, key="rt.batch")
    steps = c4.number_input("Steps", 20, 5000, 300, key="rt.steps")
    c5.write("")
    launched = None
    if c5.button("Run a range test", type="primary", key="rt.go", disabled=not may_launch,
                 help=None if may_launch else "your account can read, not launch"):  # fmt: skip
        with refusals():
            acting = guard("launch")
            try:
                spec = parse_spec(
                    {
                        "name": f"range test {optimizer} B={batch} {task}",
                        "task": task,
                        "steps": int(steps),
                        "optimizer": {"name": optimizer, "lr": 10.0},
                        "eval_every": int(steps),
                        "schedule": {"name": "range-test", "start_lr": 1e-7},
                        "batch": {"size": int(batch)},
                    }
                )
                launched = submit(store, spec, owner_id=acting.id)
            except SpecError as exc:
                st.error("\n".join(f"`{e.field}`: {e.message}" for e in exc.errors))
            except QuotaExceeded as exc:
                st.error(str(exc))
            except QueueUnavailable as exc:
                st.warning(str(exc), icon=":material/schedule:")  # recorded and queued: a worker sends it later
            else:
                st.success(f"Range test #{launched} queued; it appears below as it runs.")
    tests = {r.id: r for r in store.list_runs() if r.spec.get("schedule", {}).get("name") == "range-test"}
    if not tests:
        st.info("No range tests yet: run one above, per optimizer and batch size, and compare them here.")
    else:
        # The selection lives in session state, not in the widget's default (which Streamlit applies only the first
        # time): a test launched above joins it, and deleted runs leave it.
        picked = [i for i in st.session_state.get("rt.runs", list(tests)[:4]) if i in tests]
        if launched is not None and launched not in picked:
            picked.insert(0, launched)
        if st.session_state.get("rt.runs") != picked:
            st.session_state["rt.runs"] = picked
        chosen = st.multiselect("Range tests", list(tests), format_func=lambda i: run_label(tests[i]), key="rt.runs")
        if chosen:
            polling = any(tests[i].status in ACTIVE for i in chosen)
            st.fragment(run_every=REFRESH_SECONDS if polling else None)(range_results)(chosen, polling)
        else:
            st.info("Choose one or more range tests to draw.")

with scaling_tab:
    st.markdown(
        "Batch sizes 16 to 1,024, the LR scaled from a base tuned at 16 by the **linear** rule (η·B/16) "
        "and by the **square-root** rule (η·√(B/16)), for SGD and for Adam. A rule is right for an "
        "optimizer when the loss against *samples seen* stays the same as the batch grows (Granziol et "
        "al., JMLR 2022: linear for SGD, square root for Adam)."
    )
    c1, c2, c3, c4 = st.columns(4)
    s_task = c1.selectbox("Task", list(TASKS), key="sc.task")
    sgd_lr = c2.number_input("SGD base LR at B=16", value=0.02, format="%g", key="sc.sgd")
    adam_lr = c3.number_input("Adam base LR at B=16", value=0.001, format="%g", key="sc.adam")
    samples = c4.number_input(
        "Samples per run",
        1000,
        10**7,
        64_000,
        step=1000,
        key="sc.samples",
        help="each run sees as many samples, so steps = samples / B",
    )
    train_size = TASKS[s_task].extra["train_size"](**TASKS[s_task].defaults)
    plan = scaling_experiment(s_task, {"sgd": sgd_lr, "adam": adam_lr}, int(samples), train_size)
    sizes = sorted({spec["batch"]["size"] for spec in plan["linear"]})  # type: ignore[index]
    if st.button(f"Queue the experiment (2 rules × 2 optimizers × batch sizes {', '.join(map(str, sizes))})",
                 key="sc.go", disabled=not may_launch):  # fmt: skip
        with refusals():
            acting = guard("launch")
            try:
                parsed = {rule: [parse_spec(spec) for spec in specs] for rule, specs in plan.items()}  # all, then queue
                for rule, specs in parsed.items():
                    name = f"scaling-rules {rule}"
                    submit_sweep(store, name, {"name": name, "rule": rule}, specs, owner_id=acting.id)
            except SpecError as exc:
                st.error("\n".join(f"`{e.field}`: {e.message}" for e in exc.errors))
            except QuotaExceeded as exc:
                st.error(str(exc))
            except QueueUnavailable as exc:
                st.warning(str(exc), icon=":material/schedule:")  # recorded and queued: a worker sends it later
            else:
                st.success("Queued two sweeps, 'scaling-rules linear' and 'scaling-rules sqrt'.")
    experiments = {str(s.spec.get("rule")): s for s in store.list_sweeps() if s.name.startswith("scaling-rules ")}
    if not experiments:
        st.info("Queue the experiment to see which rule keeps the curves aligned.")
    else:
        cache = CurveCache()
        experiment_runs = []
        for rule, sweep in sorted(experiments.items()):
            runs = [r for r in store.list_runs(sweep_id=sweep.id) if r.status in FINISHED]
            finals = store.summaries([r.id for r in runs])
            loss_vs_samples = cache.xy(store, runs, "loss", "samples seen")
            experiment_runs += [
                ScalingRun(
                    optimizer=r.spec["optimizer"]["name"],
                    rule=rule,
                    batch=int(r.spec["batch"]["size"]),
                    status=r.status,
                    final=finals.get(r.id, {}).get("final", math.nan),
                    curve=loss_vs_samples.get(r.id),
                )
                for r in runs
            ]
        summary = scaling_summary(experiment_runs)
        panels = {key: panel for key, panel in summary.panels.items() if panel}
        if panels:
            st.plotly_chart(scaling_curves_chart(panels), key="sc.curves")
            st.caption(
                "Train loss against samples seen, smoothed over the same number of samples (2 % of the run) at "
                "every batch size. Where a rule works, the batch sizes' curves lie on top of each other."
            )
        st.plotly_chart(scaling_final_chart(summary.finals), key="sc.chart")
        st.dataframe(
            pd.DataFrame(summary.table),
            hide_index=True,
            column_config={"curve spread": st.column_config.NumberColumn(format="%.3f")},
        )
        st.caption(
            "Curve spread: the mean, over the samples every run saw, of the standard deviation of log10 loss "
            "across batch sizes (0 = aligned; 0.5 = a factor of 10 apart; ∞ = a run diverged). The smaller it "
            "is, and the flatter a line above, the better that rule keeps training on track as the batch grows."
        )

with steplaw_tab:
    st.markdown(
        "**Step Law** (Li et al., *Predictable Scale: Part I*, 2025): for a language model with N "
        "non-embedding parameters trained on D tokens, η* = 1.79·N^−0.713·D^0.307 and "
        "B* = 0.58·D^0.571 tokens. Fitted on AdamW LLM pre-training; a default for language models only."
    )
    c1, c2 = st.columns(2)
    n_exp = c1.slider("log10 N (parameters)", 6.0, 12.0, 8.0, 0.1, key="sl.n")
    d_exp = c2.slider("log10 D (tokens)", 8.0, 13.0, 9.3, 0.1, key="sl.d")
    lr, tokens = step_law(10**n_exp, 10**d_exp)
    m1, m2, m3 = st.columns(3)
    m1.metric("N, D", f"{10**n_exp:.3g}, {10**d_exp:.3g}")
    m2.metric("η*", f"{lr:.3g}")
    m3.metric("B* (tokens)", f"{tokens:,.0f}", help="divide by the sequence length for sequences per batch")
    ns, ds = np.logspace(6, 12, 60), np.logspace(8, 13, 60)
    lrs, _ = step_law_grid(ns, ds)
    st.plotly_chart(step_law_surface(ns, ds, lrs, (10**n_exp, 10**d_exp)), key="sl.chart")

with ratio_tab:
    st.markdown(
        f"‖g‖₁/(√d‖g‖₂) lies in [1/√d, 1]. For a gradient with i.i.d. Gaussian coordinates it is "
        f"√(2/π) ≈ {GAUSSIAN_L1_L2:.3f}; the AdamW and LION convergence papers observe ‖g‖₁ = Θ(√d)‖g‖₂ on "
        f"real networks, which makes their ℓ1 rates comparable to SGD's ℓ2 ones."
    )
    runs = store.list_runs()
    picked = st.multiselect(
        "Runs",
        [r.id for r in runs],
        default=[r.id for r in runs[:3]],
        key="l1.runs",
        format_func=lambda i: run_label(next(r for r in runs if r.id == i)),
    )
    if picked:
        labels = {r.id: run_label(r) for r in runs if r.id in picked}
        fig = metric_chart(store.metrics(picked, ["grad_l1_l2_ratio"]), ["grad_l1_l2_ratio"], labels)
        fig.add_hline(y=GAUSSIAN_L1_L2, line={"dash": "dash", "color": "#888"}, annotation_text="√(2/π)")
        st.plotly_chart(fig, key="l1.chart")
    else:
        st.info("Choose runs to see their gradients' ℓ1/ℓ2 ratio.")


with schedule_tab:
    c1, c2 = st.columns([1, 2])
    names = c1.multiselect(
        "Schedules",
        [n for n in SCHEDULES if n not in ("hypergradient", "range-test")],
        default=["cosine", "wsd", "uba"],
        key="sch.names",
    )
    phi = c1.slider("UBA φ", 0.25, 10.0, 2.0, 0.25, key="sch.phi")
    c1.markdown(
        "**UBA's φ** bends the curve with one number: φ = 2 is exactly cosine; φ < 2 holds the LR high "
        "longer and drops late; φ > 2 decays early and lingers low. With φ = 2·η/η_min its steps are the "
        "Chebyshev steps for a quadratic with curvatures in [η_min, η]. (Formula from third-party code, "
        "not yet checked against the paper.)"
    )
    curves = {}
    for name in names:
        params = dict(SCHEDULES[name].defaults)
        if name == "uba":
            params["phi"] = phi
        curves[name if name != "uba" else f"uba φ={phi:g}"] = curve(name, 1000, 1.0, params, points=500)
    c2.plotly_chart(schedule_preview(curves), key="sch.chart")


# Last, though its tab is not: measuring every optimizer takes seconds the first time a task is chosen, and the
# other tabs are drawn before it.
@st.cache_data(show_spinner="Building every optimizer on the task...")
def state_bytes(task: str) -> pd.DataFrame:
    """Optimizer state after three real training steps of each optimizer on `task`, at its defaults."""
    from workers.training import ListSink, run

    rows = []
    for name in OPTIMIZERS:
        spec = parse_spec({"task": task, "optimizer": name, "steps": 3, "eval_every": 3, "device": "cpu"})
        sink = ListSink()
        run(spec, sink)
        rows.append({"optimizer": name, "bytes": sink.series("optimizer_state_bytes").get(3, math.nan)})
    return pd.DataFrame(rows).sort_values("bytes")


with memory_tab:
    st.markdown(
        "What each optimizer keeps between steps (momentum buffers, moments, accumulators), measured "
        "after three real steps on the chosen task. FRUGAL's point: most of it can go."
    )
    m_task = st.selectbox("Task", list(TASKS), key="mem.task")
    table = state_bytes(m_task)
    model = TASKS[m_task].build(seed=0, **TASKS[m_task].defaults).model
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    st.plotly_chart(
        state_memory_chart(dict(zip(table["optimizer"], table["bytes"], strict=True)), size), key="mem.chart"
    )
    st.caption(f"The model's parameters take {size / 1024:.1f} KiB.")
