"""The Playground in a real browser: a teacher's locked lesson URL, a student moves the one slider they may move,
and the trajectory on the contour plot follows."""

from __future__ import annotations

import pytest

from app.lessons import encode
from tests.conftest import Stack, wait_for

pytestmark = [pytest.mark.browser]

PATH_JS = """() => {
    const plot = document.querySelector('.st-key-pg-contour .js-plotly-plot');  // never the loss chart (x = steps)
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


LEGEND_JS = """() => {
    const plot = document.querySelector('.st-key-pg-contour .js-plotly-plot');
    const svg = plot.querySelector('.main-svg').getBoundingClientRect();
    return Array.from(plot.querySelectorAll('.legend .traces')).map(t => {
        const r = t.getBoundingClientRect();
        return {text: t.textContent, inside: r.top >= svg.top && r.bottom <= svg.bottom && r.left >= svg.left
                                             && r.right <= svg.right};
    });
}"""


def test_four_optimizers_all_show_in_the_legend(stack: Stack, ui_url: str, page) -> None:  # type: ignore[no-untyped-def]
    setup = {"pg.n": 4, "pg.opt1:sgd:momentum": 0.9, "pg.opt2.name": "adam", "pg.opt3.name": "lion"}
    page.goto(f"{ui_url}/playground?setup={encode(setup)}")
    wait_for(lambda: (e := page.evaluate(PATH_JS)) and len(e) == 4, 30, "four trajectories")
    entries = page.evaluate(LEGEND_JS)
    assert [e["text"][:2] for e in entries[:4]] == ["1.", "2.", "3.", "4."]
    assert all(e["inside"] for e in entries), entries  # none pushed off the figure by the fixed margins
