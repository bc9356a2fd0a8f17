"""Optimizer Lab's Streamlit entry point: only a router over app/pages/.

With logins on (OPTLAB_AUTH) and nobody logged in, the router offers the login page and nothing else: every
other address (/runs, /live, ...) runs the login page too, and once logged in the same address is the real page.
"""

import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `streamlit run app/main.py` from anywhere

from app.web import preload, preloaded  # stdlib only: nothing heavy is imported before the spinner shows

# The favicon ships with the app: a `:material/...` page icon is fetched from fonts.gstatic.com by the browser,
# which a lab server without internet cannot reach. The pages' `:material/...` icons come from a font Streamlit
# ships, so they stay.
ICON = Path(__file__).resolve().parent / "static" / "favicon.png"
PAGES = (  # file, title, icon; the first is the default
    ("pages/launch.py", "Launch", ":material/rocket_launch:"),
    ("pages/live.py", "Live", ":material/monitoring:"),
    ("pages/runs.py", "Runs", ":material/table_rows:"),
    ("pages/sweeps.py", "Sweeps", ":material/grid_view:"),
    ("pages/compare.py", "Compare", ":material/stacked_line_chart:"),
    ("pages/playground.py", "Playground", ":material/school:"),
    ("pages/laws.py", "Laws", ":material/functions:"),
    ("pages/reference.py", "Reference", ":material/menu_book:"),
    ("pages/workers.py", "Workers", ":material/dns:"),
    ("pages/account.py", "Account", ":material/person:"),  # with logins on only
)

st.set_page_config(page_title="Optimizer Lab", page_icon=str(ICON), layout="wide")
# The first page after the server started says what the wait is for. Its spinner sits in a slot that every run
# draws, empty or not: a spinner of its own, drawn only on the first run, moved every element of the page down one
# place on that run and back up on the next, and the browser then took the form's inputs for new widgets and sent
# their bare defaults (index 0, 0) — on a loaded server, the Launch form reset itself after the first edit.
notice = st.empty()
if not preloaded():
    with notice, st.spinner("Loading PyTorch, the optimizer catalogue and the charts (once, after the server starts)…"):
        preload()
    notice.empty()

from app import session  # noqa: E402  (after the preload: it imports the store)
from app.ui import get_store  # noqa: E402

if not session.auth_on():  # a laptop: everyone is the local admin, no login
    pages = [st.Page(f, title=t, icon=i, default=n == 0) for n, (f, t, i) in enumerate(PAGES) if t != "Account"]
    page = st.navigation(pages)
else:
    store = get_store()
    session.ensure_admin(store)
    who = session.current_principal(store)
    if who is None:
        # The login page stands in for every page (the menu holds only it): an address such as /runs shows the login,
        # and, being the same page to Streamlit, the page itself once logged in.
        logins = [
            st.Page("pages/login.py", title="Log in", icon=":material/login:", default=n == 0, url_path=Path(f).stem,
                    visibility="visible" if n == 0 else "hidden")
            for n, (f, _, _) in enumerate(PAGES)
        ]  # fmt: skip
        page = st.navigation(logins, position="hidden")
        session.sync_cookie()  # clears a cookie the server no longer knows
    else:
        page = st.navigation([st.Page(f, title=t, icon=i, default=n == 0) for n, (f, t, i) in enumerate(PAGES)])
        with st.sidebar:
            st.caption(f"Signed in as **{who.name}** ({who.role})")
            if st.button("Log out", icon=":material/logout:", key="auth.logout"):
                if session.log_out(store):
                    st.stop()  # the browser is sent to the single sign-on's logout, and reloads
                st.rerun()
            session.sync_cookie()
page.run()
