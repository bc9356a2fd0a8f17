"""Start the Streamlit server on app/main.py: `python -m app.web [streamlit options]`.

Why not plain `streamlit run app/main.py`: Streamlit treats a `pages/` folder beside the entry script as a
legacy (v1) multipage app and then runs page files directly, never the entry script's `st.navigation`, so a
link to /live would skip the router, its page config and its titles. app/pages/ holds our `st.Page`s, so this
entry point turns that legacy detection off before the server starts.
"""

from __future__ import annotations

import sys
from pathlib import Path

MAIN = Path(__file__).resolve().parent / "main.py"


def main(argv: list[str]) -> None:
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.web import cli

    PagesManager.uses_pages_directory = False
    defaults = ["--server.headless", "true", "--browser.gatherUsageStats", "false"]
    sys.argv = ["streamlit", "run", str(MAIN), *defaults, *argv]
    cli.main()


if __name__ == "__main__":
    main(sys.argv[1:])
