"""The Playground in a real browser: a teacher's locked lesson URL, a student moves the one slider they may move,
and the trajectory on the contour plot follows."""

from __future__ import annotations

import pytest

from tests.conftest import Stack, wait_for

pytestmark = [pytest.mark.browser]

PATH_JS = """() => {
    const plot = document.querySelector('.st-key-pg-contour .js-plotly-plot') || document.querySelector('.js-plotly-plot');
    if (!plot || !plot.data) return null;
    const paths = plot.data.filter(t => t.mode === 'lines' && t.name !== 'landscape');
    const xs = t => Array.isArray(t.x) ? t.x : Array.from(t.x._inputArray || []);
    return paths.map(t => xs(t).slice(-1)[0]);
}"""


def test_a_lesson_url_a_slider_and_the_trajectory_moves(stack: Stack, ui_url: str, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{ui_url}/playground?lesson=momentum&lock=1")
    page.get_by_text("Momentum on an ill-conditioned quadratic").first.wait_for()
    page.get_by_text("Locked by your teacher").wait_for()
    ends = wait_for(lambda: (e := page.evaluate(PATH_JS)) and len(e) == 2 and e, 30, "two trajectories")
    assert page.get_by_role("slider", name="momentum").count() == 2
    locked, open_ = page.get_by_role("slider", name="momentum").all()
    assert locked.is_disabled() and not open_.is_disabled()  # optimizer 1 is the teacher's
    open_.focus()
    for _ in range(5):
        open_.press("ArrowLeft")  # momentum 0.6 → 0.55 (steps of 0.01)
    page.wait_for_timeout(300)
    moved = wait_for(lambda: (e := page.evaluate(PATH_JS)) and e[1] != ends[1] and e, 30, "the trajectory to move")
    assert moved[0] == ends[0]  # plain GD did not change
