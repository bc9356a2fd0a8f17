"""Reference: every optimizer, schedule, batch-size policy and task, with its rule, defaults and paper."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.figures import schedule_preview
from app.session import signed_in
from app.ui import get_store
from models.tasks import TASKS
from workers.batching import BATCH_POLICIES
from workers.optimizers import OPTIMIZERS
from workers.registry import Entry, Registry
from workers.schedules import SCHEDULES, curve

st.title("Reference")
signed_in(get_store())
st.caption(
    "Everything you can choose on the Launch page, from the same registries the worker uses. "
    "`python -m app.cli list optimizers` prints the same from a terminal."
)


def params_table(entry: Entry) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"parameter": p.name, "default": str(p.default), "valid": p.describe_range(), "meaning": p.help}
            for p in entry.params
        ]
    )


def show(registry: Registry, search: str) -> None:
    for entry in registry.values():
        text = f"{entry.name} {entry.description} {entry.paper}".lower()
        if search and search.lower() not in text:
            continue
        with st.expander(f"**{entry.name}** — {entry.description.split('.')[0]}", expanded=bool(search)):
            st.markdown(entry.description)
            if entry.rule:
                st.code(entry.rule, language=None)
            st.caption(f"Paper: {entry.paper}")
            if entry.params:
                st.dataframe(params_table(entry), hide_index=True, width="stretch")


search = st.text_input("Search", placeholder="e.g. momentum, Adam, warm-up, trust ratio")
tabs = st.tabs(["Optimizers", "Schedules", "Batch-size policies", "Tasks"])
with tabs[0]:
    show(OPTIMIZERS, search)
with tabs[1]:
    steps = 1000
    curves = {name: curve(name, steps, 1.0, entry.defaults, points=300) for name, entry in SCHEDULES.items()}
    st.plotly_chart(schedule_preview(curves), key="all-schedules")
    st.caption(f"Every schedule at its defaults over {steps} steps, peak learning rate 1.")
    show(SCHEDULES, search)
with tabs[2]:
    show(BATCH_POLICIES, search)
with tabs[3]:
    show(TASKS, search)
