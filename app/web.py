"""Start the Streamlit server on app/main.py: `python -m app.web [streamlit options]`.

Why not plain `streamlit run app/main.py`: Streamlit treats a `pages/` folder beside the entry script as a
legacy (v1) multipage app and then runs page files directly, never the entry script's `st.navigation`, so a
link to /live would skip the router, its page config and its titles. app/pages/ holds our `st.Page`s, so this
entry point turns that legacy detection off before the server starts.

It also shows viewers Streamlit's viewer toolbar (no "Deploy" button, no developer menu), and imports what the
pages need (PyTorch, the registries, plotly, pandas: seconds) in a thread as the server starts (`preload`), so
the first visit to a page does not spend them behind Streamlit's grey placeholders.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
from pathlib import Path

MAIN = Path(__file__).resolve().parent / "main.py"
FLAGS = [
    "--server.headless", "true",
    "--browser.gatherUsageStats", "false",
    "--client.toolbarMode", "viewer",  # people using the lab get no "Deploy" button or developer menu
]  # fmt: skip

# What the pages import, heaviest first (torch alone is 2–3 s). A name that no longer imports is logged and
# skipped: the page that imports it reports the real error.
PRELOAD = (
    "torch",
    "pandas",
    "pyarrow",
    "plotly.graph_objects",
    "scipy.signal",
    "db.store",
    "db.migrate",
    "workers.optimizers",
    "workers.schedules",
    "workers.batching",
    "models.tasks",
    "models.landscapes",
    "workers.spec",
    "workers.sweep",
    "workers.celery_app",
    "workers.playground",
    "workers.scaling",
    "app.ui",
    "app.figures",
    "app.teaching_figures",
    "app.analysis",
    "app.curves",
    "app.export",
    "app.lessons",
)

_lock = threading.Lock()
_done = threading.Event()
log = logging.getLogger(__name__)


def preload() -> None:
    """Import `PRELOAD` once per process. A caller arriving while another thread imports waits for it, so no two
    threads import the same modules at once (the router calls this before any page runs)."""
    with _lock:
        if _done.is_set():
            return
        for name in PRELOAD:
            try:
                importlib.import_module(name)
            except Exception:
                log.exception("preload: importing %s failed", name)
        _done.set()


def preloaded() -> bool:
    return _done.is_set()


def main(argv: list[str]) -> None:
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.web import cli

    PagesManager.uses_pages_directory = False
    threading.Thread(target=preload, name="optlab-preload", daemon=True).start()
    sys.argv = ["streamlit", "run", str(MAIN), *FLAGS, *argv]
    cli.main()


if __name__ == "__main__":
    from app.web import main as run  # this file as the module `app.web`, whose preload state the router reads

    run(sys.argv[1:])
