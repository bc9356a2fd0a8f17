"""A lab server has no internet: every page must load from the app's own server alone, and viewers get the viewer
toolbar (no "Deploy" button). Real chromium and Streamlit; this machine has no internet either, so a request
elsewhere fails: it is recorded by its host, whatever became of it."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest

from tests.conftest import Stack, loaded

pytestmark = [pytest.mark.browser]

PAGES = ("", "live", "runs", "sweeps", "compare", "playground", "laws", "reference")  # "" is Launch


def test_every_page_loads_from_the_local_server_only_and_offers_no_deploy_button(
    stack: Stack, ui_url: str, page
) -> None:  # type: ignore[no-untyped-def]
    local = urlparse(ui_url).netloc
    elsewhere: list[tuple[str, str]] = []  # (page, url)
    current = {"page": ""}

    def record(url: str) -> None:
        parsed = urlparse(url)
        if parsed.scheme in ("http", "https", "ws", "wss") and parsed.netloc != local:
            elsewhere.append((current["page"] or "launch", url))

    page.on("request", lambda request: record(request.url))
    page.on("websocket", lambda socket: record(socket.url))
    deploy: list[str] = []  # pages that show a Deploy button
    for name in PAGES:
        current["page"] = name
        page.goto(f"{ui_url}/{name}")
        page.locator('[data-testid="stMain"] h1').first.wait_for(timeout=60_000)
        loaded(page)  # the page's first run has finished
        page.locator('[data-testid="stToolbar"]').wait_for(state="attached")  # the header is drawn
        shown = page.get_by_role("button", name="Deploy").count() + page.get_by_test_id("stAppDeployButton").count()
        if shown:
            deploy.append(name or "launch")
    assert sorted(set(elsewhere)) == [], "requests that leave the lab server"
    assert deploy == [], "pages that offer viewers a Deploy button"
