"""Optimizer Lab's Streamlit entry point: only a router over app/pages/."""

import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `streamlit run app/main.py` from anywhere

from app.web import preload, preloaded  # stdlib only: nothing heavy is imported before the spinner shows

# The favicon ships with the app: a `:material/...` page icon is fetched from fonts.gstatic.com by the browser,
# which a lab server without internet cannot reach. The pages' `:material/...` icons come from a font Streamlit
# ships, so they stay.
ICON = Path(__file__).resolve().parent / "static" / "favicon.png"
st.set_page_config(page_title="Optimizer Lab", page_icon=str(ICON), layout="wide")
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
page = st.navigation(pages)
if not preloaded():  # the first page after the server started: say what the wait is for
    with st.spinner("Loading PyTorch, the optimizer catalogue and the charts (once, after the server starts)…"):
        preload()
page.run()
