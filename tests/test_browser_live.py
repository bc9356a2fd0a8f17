"""The Live page in a real browser while a real worker trains: the learning-rate chart of a `wsd` run shows its flat
stretch at its value, and the three charts end at the same step. Real chromium, Streamlit, Redis and worker."""

from __future__ import annotations

import pytest

from tests.conftest import Stack, wait_for
from workers.celery_app import submit
from workers.spec import parse_spec

pytestmark = [pytest.mark.browser, pytest.mark.live_worker]

FLAT_LR = 3e-4

# Per chart of the Live page (loss, gradient norm, learning rate): its title, the last step of its curves, the
# learning-rate values it holds, its y-axis range as plotly drew it, and whether its toolbar overlaps its title.
# Streamlit keeps a redrawn chart's previous element, hidden, until the new one is drawn: only visible ones count.
CHARTS_JS = """() => Array.from(document.querySelectorAll('.st-key-live-charts .js-plotly-plot'))
    .filter(g => g.getBoundingClientRect().width > 0).map(g => {
    const xs = a => !a ? [] : Array.isArray(a) ? a : Array.from(a._inputArray || a);
    const last = t => { const x = xs(t.x); return x.length ? x[x.length - 1] : 0; };
    const box = el => el && el.getBoundingClientRect();
    const bar = box(g.querySelector('.modebar-container .modebar') || g.querySelector('.modebar'));
    const title = box(g.querySelector('.g-gtitle text, .gtitle'));
    const overlaps = !!(bar && title && bar.width && title.width && bar.left < title.right && title.left < bar.right
                        && bar.top < title.bottom && title.top < bar.bottom);
    return {title: ((g._fullLayout && g._fullLayout.title && g._fullLayout.title.text) || '').replace(/<[^>]*>/g, ''),
            last: Math.max(0, ...(g.data || []).map(last)),
            ys: (g.data || []).flatMap(t => xs(t.y)),
            range: g._fullLayout && g._fullLayout.yaxis.range,
            overlaps};
})"""


def charts(page) -> dict[str, dict]:  # type: ignore[no-untyped-def,type-arg]
    return {c["title"]: c for c in page.evaluate(CHARTS_JS)}


def test_a_flat_learning_rate_is_drawn_at_its_value_and_the_charts_agree(
    stack: Stack, worker, ui_url: str, page
) -> None:  # type: ignore[no-untyped-def]
    spec = parse_spec(
        {
            "name": "wsd-flat",
            "task": "digits-mlp",
            "optimizer": {"name": "adamw", "lr": FLAT_LR},
            "schedule": {"name": "wsd", "decay_fraction": 0.01},
            "steps": 100_000,  # flat for 99,000 steps: the test reads the chart and cancels the run long before
            "eval_every": 1000,
        }
    )
    run_id = submit(stack.store, spec)
    page.set_viewport_size({"width": 1100, "height": 1000})  # narrow charts: the toolbar spans most of their width
    page.goto(f"{ui_url}/live?run={run_id}")

    def flat_lr_drawn() -> dict | None:  # type: ignore[type-arg]
        lr = charts(page).get("Learning rate")
        return lr if lr and len(lr["ys"]) >= 2 and all(y == pytest.approx(FLAT_LR) for y in lr["ys"]) else None

    lr = wait_for(flat_lr_drawn, 90, "the learning-rate chart's first points, all on the flat stretch")
    low, high = lr["range"]
    assert low <= FLAT_LR <= high, lr["range"]
    assert high - low < 10 * FLAT_LR, lr["range"]  # drawn at its value, not as a line near 0 of a unit-wide axis
    assert not any(c["overlaps"] for c in charts(page).values())  # every toolbar clear of its chart's title

    stack.store.request_cancel(run_id)
    run = wait_for(lambda: (r := stack.store.get_run(run_id)) and r.status == "cancelled" and r, 60, "the cancel")
    wait_for(
        lambda: {c["last"] for c in charts(page).values()} == {run.progress} and len(charts(page)) == 3,
        60,
        f"the three charts to end at step {run.progress}",
    )
