"""A sweep from the browser: build 2 LRs × 2 batch sizes × 2 seeds on the Sweeps page (two packs of four), watch it
finish, read the heatmap, then follow its link to the Compare page, which opens with the seeds grouped into bands.
Real chromium, Streamlit, Redis and worker."""

from __future__ import annotations

import re

import pytest

from tests.conftest import Stack, loaded, reruns, settle, wait_for
from tests.test_browser import set_number

pytestmark = [pytest.mark.browser, pytest.mark.live_worker]

TRACES_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).flatMap(g => g.data || [])
    .map(t => ({type: t.type, fill: t.fill || null, name: t.name || ''}))"""


KINDS_JS = """() => Array.from(document.querySelectorAll('[data-testid=stSelectbox]'))
    .filter(e => e.innerText.startsWith('Kind')).map(e => {
        const input = e.querySelector('input'), ctx = document.createElement('canvas').getContext('2d');
        ctx.font = getComputedStyle(input).font;
        return {room: input.clientWidth, needed: ctx.measureText('linear range').width};
    })"""
PICKER_JS = """() => document.querySelector('[data-testid=stSelectbox] input').value"""


def traces(page) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    return list(page.evaluate(TRACES_JS))


def test_build_a_sweep_watch_it_and_see_the_heatmap_and_bands(stack: Stack, worker, ui_url: str, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{ui_url}/sweeps")
    page.get_by_text("No sweeps yet").wait_for()
    loaded(page)  # the page's first run has finished
    before = reruns(page)
    page.get_by_role("radio", name="New sweep").click()
    settle(page, before)
    page.get_by_text("Swept fields").wait_for()
    kinds = wait_for(lambda: (found := page.evaluate(KINDS_JS)) and len(found) == 4 and found, 60, "the Kind fields")
    assert all(k["room"] >= k["needed"] for k in kinds), kinds  # they show their longest choice whole
    set_number(page, "steps", "80")
    set_number(page, "eval_every", "40")
    assert page.get_by_label("Values 3").input_value() == "0, 1"  # the seeds: the default already, and an
    # unchanged field reruns nothing, so it is not typed again
    for label, text in (("Values 1", "0.003, 0.03"), ("Values 2", "16, 64")):
        before = reruns(page)
        page.get_by_label(label).fill(text)
        page.get_by_label(label).press("Enter")
        settle(page, before)
    page.get_by_text("Trains in 2 packs (4, 4).").wait_for()  # the batch size splits them; LR and seed pack
    page.get_by_role("button", name="Queue 8 runs").click()

    page.get_by_text("of 8 runs finished").wait_for(timeout=60_000)  # the view switched to the new sweep
    page.get_by_text("8 of 8 runs finished").wait_for(timeout=300_000)
    wait_for(lambda: any(t["type"] == "heatmap" for t in traces(page)), 60, "the heatmap")
    runs = stack.store.list_runs()
    assert len(runs) == 8 and all(r.status == "completed" for r in runs)
    assert {(r.spec["optimizer"]["lr"], r.spec["batch"]["size"], r.spec["seed"]) for r in runs} == {
        (lr, b, s) for lr in (0.003, 0.03) for b in (16, 64) for s in (0, 1)
    }
    packs = {r.pack_id: {x.spec["batch"]["size"] for x in runs if x.pack_id == r.pack_id} for r in runs}
    assert len(packs) == 2 and None not in packs and all(len(b) == 1 for b in packs.values())  # trained packed
    assert {r.pack_size for r in runs} == {4}
    # The page redraws its analysis once the watcher sees the last run finish; until then the heatmap on screen is
    # the one drawn while runs were still going (fewer runs per cell).
    wait_for(lambda: page.get_by_text("n=2").count() >= 4, 60, "every heatmap cell averaging two seeds")
    picker = page.evaluate(PICKER_JS)  # the sweep picker does not contradict the bar (it said "0/8 finished")
    assert all(done == "8" for done in re.findall(r"(\d+)/8 finished", picker)), picker

    # From the sweep's link, Compare groups by the swept fields but the seed: the seeds fold into bands at once.
    page.get_by_role("link", name="Compare its curves").click()
    page.get_by_text("Compare runs").wait_for()

    def grouped() -> bool:
        found = traces(page)
        bands = [t for t in found if t["fill"] == "toself"]
        lines = [t for t in found if t["type"] == "scatter" and t["fill"] != "toself"]
        return len(bands) == 4 and len(lines) == 4 and all(t["name"].endswith("(2 runs)") for t in lines)

    wait_for(grouped, 60, "four groups of two seeds, each with a band")
