"""Optimizer Lab's Streamlit entry point: only a router over app/pages/."""

import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `streamlit run app/main.py` from anywhere

st.set_page_config(page_title="Optimizer Lab", page_icon=":material/trending_down:", layout="wide")
pages = [
    st.Page("pages/launch.py", title="Launch", icon=":material/rocket_launch:", default=True),
    st.Page("pages/live.py", title="Live", icon=":material/monitoring:"),
    st.Page("pages/runs.py", title="Runs", icon=":material/table_rows:"),
    st.Page("pages/sweeps.py", title="Sweeps", icon=":material/grid_view:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/stacked_line_chart:"),
    st.Page("pages/playground.py", title="Playground", icon=":material/school:"),
    st.Page("pages/laws.py", title="Laws", icon=":material/functions:"),
    st.Page("pages/reference.py", title="Reference", icon=":material/menu_book:"),
]
st.navigation(pages).run()
