"""Playground: the real optimizers and schedules moving on 2-D landscapes, with their internals at any step, and
lessons a teacher can share as a URL (and lock)."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pandas as pd
import streamlit as st

from app.lessons import LESSONS, decode, encode, open_controls
from app.session import signed_in
from app.teaching_figures import landscape_figure, playground_loss_chart
from app.ui import component_form, get_store, seed_component
from models.landscapes import LANDSCAPES
from workers.playground import (
    LEFT_OUT,
    PLAYGROUND_OPTIMIZERS,
    PLAYGROUND_SCHEDULES,
    Trajectory,
    check,
    internals,
    trajectory,
)
from workers.settings import get_settings

SLOTS = 4
DEFAULTS: dict[str, Any] = {"pg.steps": 200, "pg.n": 3, "pg.noise": 0.0, "pg.step": 200}
SLOT_DEFAULTS = (
    {"name": "sgd", "lr": 0.01},
    {"name": "sgd", "lr": 0.01, "momentum": 0.9},
    {"name": "adam", "lr": 0.05},
    {"name": "lion", "lr": 0.01},
)

st.title("Playground")
signed_in(get_store())  # logins on: nobody sees the page (it reads no data, but it is part of the app)


def load(setup: dict[str, Any], tag: str) -> None:
    """Put a setup into the widgets, once per lesson or link (later edits are the user's)."""
    if st.session_state.get("pg.loaded") == tag:
        return
    for key in [k for k in st.session_state if str(k).startswith("pg.") and k != "pg.loaded"]:
        del st.session_state[key]
    st.session_state.update(setup)
    st.session_state["pg.step"] = int(setup.get("pg.steps", DEFAULTS["pg.steps"]))
    st.session_state["pg.loaded"] = tag


lesson_name = st.query_params.get("lesson")
lesson = LESSONS.get(lesson_name or "")
locked_lesson = lesson is not None and st.query_params.get("lock") == "1"
if lesson is not None:
    load(lesson.setup, f"lesson:{lesson_name}")
elif shared := st.query_params.get("setup"):
    try:
        load(decode(shared), f"setup:{shared}")
    except ValueError as exc:
        st.error(f"The link's setup could not be read ({exc}); showing the defaults.")
for key, value in DEFAULTS.items():
    st.session_state.setdefault(key, value)

pick, about = st.columns([1, 2])
choice = pick.selectbox(
    "Lesson",
    ["—", *LESSONS],
    index=([None, *LESSONS].index(lesson_name) if lesson else 0),
    format_func=lambda k: "free play" if k == "—" else LESSONS[k].title,
    disabled=locked_lesson,
    key="pg.lesson",
)
if choice != (lesson_name or "—"):
    st.query_params.clear()
    if choice != "—":
        st.query_params["lesson"] = choice
    st.session_state.pop("pg.loaded", None)
    st.rerun()
if lesson is not None:
    about.info(
        f"**{lesson.title}.** {lesson.text}"
        + (
            "  \n🔒 Locked by your teacher: only the highlighted controls move ("
            + ", ".join(open_controls(lesson))
            + "); the others are the teacher's."
            if locked_lesson
            else ""
        ),
        icon=":material/school:",
    )
if locked_lesson and lesson is not None:  # outline the students' controls (a style-only element takes no space)
    st.html(
        "<style>"
        + "".join(
            f".st-key-{re.sub(r'[^a-zA-Z0-9_-]', '-', key)} {{outline: 2px solid #f58518; outline-offset: 4px; "
            "border-radius: 0.5rem; background: rgba(245, 133, 24, 0.08);}"
            for key in lesson.open
        )
        + "</style>"
    )


def is_locked(key: str) -> bool:
    """In a locked lesson, every control but the lesson's own is the teacher's."""
    return locked_lesson and lesson is not None and key not in lesson.open


def locked_keys(keys: list[str]) -> set[str]:
    return {k for k in keys if is_locked(k)}


# The page computes from the controls' values first and draws the controls last: Streamlit sends elements in the
# order the script makes them, so the browser gets the new trajectories before re-rendering ~40 unchanged widgets.
for i in range(SLOTS):
    st.session_state.setdefault(f"pg.batch{i}", 1)
    st.session_state.setdefault(f"pg.warmup{i}", 0)
land_spec = seed_component(LANDSCAPES, "pg.land", {"name": "quadratic"}, sliders=True)
schedule = seed_component(PLAYGROUND_SCHEDULES, "pg.sched", {"name": "constant"})
steps, noise = int(st.session_state["pg.steps"]), float(st.session_state["pg.noise"])
slots: list[dict[str, Any]] = [
    {
        "optimizer": seed_component(PLAYGROUND_OPTIMIZERS, f"pg.opt{i}", SLOT_DEFAULTS[i], sliders=True),
        "batch": int(st.session_state[f"pg.batch{i}"]),
        "warmup": int(st.session_state[f"pg.warmup{i}"]),
    }
    for i in range(int(st.session_state["pg.n"]))
]


def draw_controls() -> None:
    """The widgets behind the values above (same keys, so they show and change exactly those values)."""
    with st.container(border=True):
        land = land_spec["name"]
        land_keys = ["pg.land.name", *(f"pg.land:{land}:{p.name}" for p in LANDSCAPES[land].params)]
        component_form(
            "Landscape", LANDSCAPES, "pg.land", {"name": "quadratic"}, sliders=True, locked=locked_keys(land_keys)
        )
        c1, c2 = st.columns(2)
        c1.number_input("steps", 10, 2000, step=10, key="pg.steps", disabled=is_locked("pg.steps"))
        c2.slider(
            "gradient noise σ",
            0.0,
            5.0,
            step=0.1,
            key="pg.noise",
            disabled=is_locked("pg.noise"),
            help="each step's gradient gets σ/√batch · N(0, I): a stochastic gradient",
        )
    with st.container(border=True):
        sched = schedule["name"]
        sched_keys = ["pg.sched.name", *(f"pg.sched:{sched}:{p.name}" for p in PLAYGROUND_SCHEDULES[sched].params)]
        component_form(
            "Schedule (every optimizer)",
            PLAYGROUND_SCHEDULES,
            "pg.sched",
            {"name": "constant"},
            locked=locked_keys(sched_keys),
        )
    st.number_input("optimizers", 1, SLOTS, key="pg.n", disabled=is_locked("pg.n"))
    for i, slot in enumerate(slots):
        with st.container(border=True):
            name_key = f"pg.opt{i}.name"
            current = slot["optimizer"]["name"]
            param_keys = [f"pg.opt{i}:{current}:{p.name}" for p in PLAYGROUND_OPTIMIZERS[current].params]
            component_form(
                f"Optimizer {i + 1}",
                PLAYGROUND_OPTIMIZERS,
                f"pg.opt{i}",
                SLOT_DEFAULTS[i],
                sliders=True,
                locked=locked_keys([name_key, *param_keys]),
            )
            c1, c2 = st.columns(2)
            c1.number_input(
                "batch",
                1,
                4096,
                key=f"pg.batch{i}",
                disabled=is_locked(f"pg.batch{i}"),
                help="divides the gradient noise by √batch",
            )
            c2.number_input(
                "warm-up steps",
                0,
                10_000,
                key=f"pg.warmup{i}",
                disabled=is_locked(f"pg.warmup{i}"),
                help="a linear LR ramp over the first steps, on top of the schedule",
            )
    st.caption("Not here: " + "; ".join(f"{k} ({why})" for k, why in LEFT_OUT.items()) + ".")


@st.cache_data(max_entries=256, show_spinner=False)
def cached_run(land: str, params_json: str, slot_json: str, schedule_json: str, steps: int, noise: float) -> Trajectory:
    """One optimizer's trajectory; cached, so moving one optimizer's slider recomputes only that one."""
    landscape = LANDSCAPES[land].build(**json.loads(params_json))
    slot = json.loads(slot_json)
    run = trajectory(
        landscape,
        slot["optimizer"],
        json.loads(schedule_json),
        steps=steps,
        noise=noise,
        batch=slot["batch"],
        warmup=slot["warmup"],
    )
    return run


def draw_view() -> None:
    """Problems, the step slider, the contour plot, loss against step and the internals; only an error if the
    landscape or schedule cannot exist (the controls, drawn after, stay there to fix it)."""
    land_params = {k: v for k, v in land_spec.items() if k != "name"}
    invalid = check(LANDSCAPES, land_spec, "landscape") + check(PLAYGROUND_SCHEDULES, schedule, "schedule")
    if invalid:  # nothing can run on an invalid landscape or schedule
        st.error("**Fix these first:**\n" + "\n".join(f"- `{e.split(': ', 1)[0]}`: {e.split(': ', 1)[1]}"
                                                       for e in invalid))  # fmt: skip
        return
    landscape = LANDSCAPES[land_spec["name"]].build(**land_params)
    runs: dict[str, Trajectory] = {}
    problems: list[str] = []
    for i, slot in enumerate(slots):
        spec = slot["optimizer"]
        if bad := check(PLAYGROUND_OPTIMIZERS, spec, f"optimizer {i + 1}"):
            problems.extend(bad)
            continue
        label = (
            f"{i + 1}. {spec['name']} η={spec['lr']:g}"
            + "".join(
                f" {k}={v:g}" for k, v in spec.items() if k in ("momentum", "beta1") and isinstance(v, int | float)
            )
            + (f" B={slot['batch']}" if slot["batch"] > 1 else "")
            + (f" warm-up {slot['warmup']}" if slot["warmup"] else "")
        )
        try:
            run = cached_run(
                land_spec["name"],
                json.dumps(land_params, sort_keys=True),
                json.dumps(slot, sort_keys=True),
                json.dumps(schedule, sort_keys=True),
                steps,
                noise,
            )
        except (ValueError, TypeError, RuntimeError) as exc:
            problems.append(f"Optimizer {i + 1} ({spec['name']}): {exc}")
            continue
        runs[label] = run
        if run.diverged_at:
            problems.append(f"Optimizer {i + 1} ({spec['name']}) diverged at step {run.diverged_at}: lower its η.")

    for problem in problems:
        st.warning(problem, icon=":material/warning:")
    st.session_state["pg.step"] = min(int(st.session_state["pg.step"]), steps)
    follow = "the markers and the internals below follow it"
    step = st.slider("Step", 0, steps, key="pg.step", disabled=is_locked("pg.step"), help=follow)
    st.plotly_chart(landscape_figure(landscape, runs, step), key="pg.contour")
    answer = json.dumps([land_spec, slots, schedule, steps, noise, step], sort_keys=True)
    if st.session_state.get("playground.drawn") != answer:
        # Streamlit's frontend renders the elements that have arrived in batches. Sent straight after the new plot,
        # the ~100 unchanged elements below it (loss chart, internals, controls) join its batch, and the plot is
        # drawn only after all of them: ~70 ms later on a 2-core box (bench/playground.py). A short pause gives the
        # browser time to draw the plot first; the rerun ends that much later.
        st.session_state["playground.drawn"] = answer
        time.sleep(get_settings().playground_draw_pause_s)
    x_axis = st.radio("loss against", ("step", "samples"), horizontal=True, key="pg.x")
    st.plotly_chart(playground_loss_chart(runs, step if x_axis == "step" else 0, x_axis), key="pg.loss")
    if runs and step > 0:
        st.markdown(f"**Inside each optimizer at step {step}** (x, y components)")
        rows = []
        for label, run in runs.items():
            for name, (vx, vy) in internals(run, step).items():
                rows.append({"optimizer": label, "quantity": name, "x": vx, "y": vy})
        st.dataframe(
            pd.DataFrame(rows),
            hide_index=True,
            column_config={
                "x": st.column_config.NumberColumn(format="%.4g"),
                "y": st.column_config.NumberColumn(format="%.4g"),
            },
        )
        st.caption(
            "effective step Δθ/(−g): the step per unit of gradient each coordinate took (η for plain SGD; "
            "Adam's is η/(√v̂+ε)·m̂/g). update / LR: ±1 for LION's sign update, before weight decay. The "
            "other rows are the optimizer's own state, as the library keeps it."
        )


controls, view = st.columns([2, 3], gap="large")
with view:
    draw_view()
with controls:
    draw_controls()

setup: dict[str, Any] = {
    str(k): v
    for k, v in st.session_state.items()
    if str(k).startswith("pg.") and k not in ("pg.loaded", "pg.lesson") and isinstance(v, int | float | str)
}
with st.expander("Share this setup"):
    st.caption(
        "Anyone opening this link sees exactly this page. Add `&lock=1` to a `?lesson=` link to let "
        "students change only the lesson's own controls."
    )
    st.code(f"?setup={encode(setup)}", language=None)
    st.caption("Lessons: " + " · ".join(f"`?lesson={k}`" for k in LESSONS))
