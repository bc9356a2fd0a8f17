"""Helpers shared by the pages: the cached store, forms generated from registry schemas, run labels."""

from __future__ import annotations

import time
from collections.abc import Container
from typing import Any

import streamlit as st

from db.store import RunInfo, Store
from workers.registry import Entry, Param, Registry
from workers.settings import get_settings


def get_store() -> Store:
    """The store for the configured database: one engine per server process, migrated on first use."""
    return _store_for(get_settings().database_url)


@st.cache_resource
def _store_for(url: str) -> Store:
    from db.migrate import upgrade

    upgrade(url)
    return Store.from_url(url)


def reap_lost_runs(store: Store) -> None:
    store.mark_lost_runs(get_settings().heartbeat_timeout_s)


def run_label(run: RunInfo) -> str:
    return f"#{run.id} {run.name}"


def pack_label(run: RunInfo) -> str:
    """Where a run trains: "pack 3 (32 runs)" (with the rest of its pack, as one vectorised model), or "alone"."""
    if run.pack_id is None:
        return "alone"
    return f"pack {run.pack_id} ({run.pack_size} runs)"


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def fmt_age(timestamp: float) -> str:
    return fmt_seconds(time.time() - timestamp) + " ago"


def widget_value(param: Param, value: Any) -> Any:
    """A spec value as its widget holds it (number inputs are strict about int vs float)."""
    if param.kind == "floats":
        return ", ".join(f"{v:g}" for v in value) if isinstance(value, list | tuple) else str(value)
    return {"float": float, "int": int}.get(param.kind, lambda v: v)(value)


def slider_range(param: Param) -> tuple[float, float] | None:
    """The slider bounds of a bounded, linear-scale float (the Playground's sliders); None for any other."""
    if param.kind != "float" or param.log:
        return None
    low = param.ge if param.ge is not None else param.gt
    high = param.le if param.le is not None else (param.lt - 0.01 if param.lt is not None else None)
    return (float(low), float(high)) if low is not None and high is not None and high > low else None


def param_input(param: Param, key: str, initial: Any, *, disabled: bool = False, slider: bool = False) -> Any:
    """One widget for one hyper-parameter. No bounds on number inputs: the spec validates and names the field.
    With `slider`, a bounded, linear-scale float gets a slider (the Playground, where dragging is the point)."""
    label = param.name
    help_text = " · ".join(part for part in (param.help, param.describe_range()) if part) or None
    seed_param(param, key, initial, slider=slider)
    if param.kind == "bool":
        return st.checkbox(label, key=key, help=help_text, disabled=disabled)
    if param.kind == "choice":
        return st.selectbox(label, param.choices, key=key, help=help_text, disabled=disabled)
    if param.kind == "int":
        return st.number_input(label, step=1, key=key, help=help_text, disabled=disabled)
    if param.kind == "floats":
        return st.text_input(label, key=key, help=f"comma-separated · {help_text}", disabled=disabled)
    if slider and (bounds := slider_range(param)):
        low, high = bounds
        return st.slider(label, low, high, step=(high - low) / 100, key=key, help=help_text, disabled=disabled)
    return st.number_input(label, format="%g", step=None, key=key, help=help_text, disabled=disabled)


def seed_param(param: Param, key: str, initial: Any, *, slider: bool = False) -> Any:
    """Put a parameter's starting value into session state unless it holds one (clamped into a slider's range);
    return the value its widget will show."""
    if key not in st.session_state:
        st.session_state[key] = widget_value(param, initial)
    if slider and (bounds := slider_range(param)):
        st.session_state[key] = min(max(float(st.session_state[key]), bounds[0]), bounds[1])
    return st.session_state[key]


def seed_component(
    registry: Registry, key: str, initial: dict[str, Any] | None, *, sliders: bool = False
) -> dict[str, Any]:
    """What `component_form` will return, read from session state (seeded with the defaults where empty) without
    drawing anything: a page can compute from a form before it draws it, and send its results first."""
    names = list(registry)
    select_key = f"{key}.name"
    if select_key not in st.session_state or st.session_state[select_key] not in names:
        st.session_state[select_key] = (initial or {}).get("name", names[0])
    name = st.session_state[select_key]
    entry: Entry = registry[name]
    start = dict(entry.defaults)
    if initial and initial.get("name") == name:
        start.update({k: v for k, v in initial.items() if k in start})
    values: dict[str, Any] = {"name": name}
    for param in entry.params:
        values[param.name] = seed_param(param, f"{key}:{name}:{param.name}", start[param.name], slider=sliders)
    return values


def component_form(
    title: str,
    registry: Registry,
    key: str,
    initial: dict[str, Any] | None,
    *,
    choose: bool = True,
    locked: Container[str] = frozenset(),
    sliders: bool = False,
) -> dict[str, Any]:
    """A selectbox over the registry and the chosen entry's parameters; returns {name, **params}. Widgets whose
    keys are in `locked` are shown but cannot be changed (a teacher's locked lesson)."""
    seeded = seed_component(registry, key, initial, sliders=sliders)
    select_key = f"{key}.name"
    if choose:
        name = st.selectbox(title, list(registry), key=select_key, disabled=select_key in locked)
    else:
        name = st.session_state[select_key]
    entry: Entry = registry[name]
    st.caption(f"{entry.description}  \n*{entry.paper}*" if entry.paper != "—" else entry.description)
    values: dict[str, Any] = {"name": name}
    columns = st.columns(min(3, max(1, len(entry.params))))
    for i, param in enumerate(entry.params):
        with columns[i % len(columns)]:
            widget_key = f"{key}:{name}:{param.name}"
            values[param.name] = param_input(
                param, widget_key, seeded[param.name], disabled=widget_key in locked, slider=sliders
            )
    return values
