"""The Laws page in a real browser: launch an LR range test from the page and watch its curve and suggested LR range
arrive while a real worker runs it. Real chromium, Streamlit, Redis and worker."""

from __future__ import annotations

import re

import pytest

from tests.conftest import Stack, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.live_worker]

# The range-test chart: its points (lengths of every trace's x) and its shaded suggested ranges (layout shapes).
RANGE_CHART_JS = """() => {
    const plot = document.querySelector('.st-key-rt-chart .js-plotly-plot');
    if (!plot || !plot.data) return null;
    const xs = t => !t.x ? [] : Array.isArray(t.x) ? t.x : Array.from(t.x._inputArray || t.x);
    return {points: plot.data.map(t => xs(t).length), shapes: (plot.layout.shapes || []).length};
}"""


def test_a_range_test_launched_from_the_page_draws_its_curve_and_range(stack: Stack, worker, ui_url: str, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{ui_url}/laws")
    page.get_by_text("No range tests yet").wait_for(timeout=60_000)
    page.get_by_role("button", name="Run a range test").click()
    queued = page.get_by_text(re.compile(r"Range test #\d+ queued"))
    queued.wait_for(timeout=60_000)
    run_id = int(queued.inner_text().split("#")[1].split()[0])

    # No reload, no click: the page follows the run by itself.
    def drawn() -> dict | None:  # type: ignore[type-arg]
        chart = page.evaluate(RANGE_CHART_JS)
        return chart if chart and any(n >= 5 for n in chart["points"]) and chart["shapes"] >= 1 else None

    chart = wait_for(drawn, 120, "the range test's curve and its suggested range")
    assert len(chart["points"]) == 1  # one range test, one curve
    page.get_by_text(re.compile(rf"#{run_id} range test .*: suggested LR [0-9.e+-]+, range")).wait_for(timeout=60_000)
    assert stack.store.get_run(run_id).spec["schedule"]["name"] == "range-test"
