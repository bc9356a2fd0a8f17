"""The product in a real browser: Debian's chromium driven by playwright, a real Streamlit server, Redis and worker."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from playwright.sync_api import expect

from tests.conftest import Stack, loaded, reruns, settle, wait_for
from workers.metrics import EVERY_STEP
from workers.optimizers import OPTIMIZERS

pytestmark = [pytest.mark.browser, pytest.mark.live_worker]

# Plotly sends numpy data as base64 typed arrays; plotly.js keeps the decoded array in `_inputArray`.
_XS = """const xs = t => !t.x ? [] : Array.isArray(t.x) ? t.x : (t.x._inputArray || []);
    const traces = Array.from(document.querySelectorAll('.st-key-live-charts .js-plotly-plot'))
        .flatMap(g => g.data || []);"""
POINTS_JS = f"() => {{ {_XS} return traces.reduce((n, t) => n + xs(t).length, 0); }}"
_LAST = "t => { const x = xs(t); return x.length ? x[x.length - 1] : 0; }"
LAST_STEP_JS = f"() => {{ {_XS} return Math.max(0, ...traces.map({_LAST})); }}"


def set_number(page, label: str, value: str) -> None:  # type: ignore[no-untyped-def]
    box = page.get_by_label(label, exact=True)
    before = reruns(page)
    box.fill(value)
    box.press("Enter")
    settle(page, before)


def launch(page, ui_url: str, name: str, steps: str | None = None) -> int:  # type: ignore[no-untyped-def]
    """Fill the form, press Launch; returns the run id."""
    page.goto(ui_url)
    page.get_by_text("Launch a run").first.wait_for()
    loaded(page)  # the page's first run has finished
    # ... and the browser shows the values the server gave the form's inputs. A number input is first drawn with
    # its bare default (0) and then set to the server's value; an edit sent in between (seconds, on a loaded
    # machine) would send those zeros back and reset the form.
    for label, value in (("hidden", "64"), ("steps", "500"), ("eval_every", "50"), ("size", "64")):
        expect(page.get_by_label(label, exact=True)).to_have_value(value, timeout=60_000)
    before = reruns(page)
    page.get_by_label("Run name").fill(name)
    page.get_by_label("Run name").press("Enter")
    settle(page, before)
    if steps:
        set_number(page, "steps", steps)
    page.locator(".js-plotly-plot").first.wait_for()  # drawn as a user sees it: plotly.js loaded, preview plotted
    page.get_by_role("button", name="Launch").click()
    message = page.get_by_text(re.compile(r"Run #\d+ queued"))
    message.wait_for()
    return int(message.inner_text().split("#")[1].split()[0])


def chart_points(page) -> int:  # type: ignore[no-untyped-def]
    return int(page.evaluate(POINTS_JS))


def test_launch_watch_live_download_and_cancel(stack: Stack, worker, ui_url: str, page, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # 1. AdamW + warm-up cosine on digits-mlp for 500 steps (the form's defaults): its curves appear while it
    # trains (how soon is a speed, measured apart from the tests; here only that they come).
    first = launch(page, ui_url, "browser-adamw")
    page.get_by_role("link", name=f"Watch run #{first} live").click()
    wait_for(lambda: chart_points(page) > 0, 60, "curves in the browser")
    assert wait_for(lambda: stack.store.get_run(first).status != "running" and stack.store.get_run(first).status, 60,
                    "run to end") == "completed"  # fmt: skip
    page.get_by_text("completed (500/500)").wait_for()

    # 2. The CSV from the Live page of the finished run: 500 rows, every per-step metric filled.
    page.goto(f"{ui_url}/live?run={first}")
    loaded(page)
    with page.expect_download(timeout=60_000) as download:
        page.get_by_role("button", name="Download CSV of the watched runs").click()
    path = tmp_path / "runs.csv"
    download.value.save_as(path)
    frame = pd.read_csv(path)
    assert len(frame) == 500 and set(frame.run_id) == {first}
    per_step = list(EVERY_STEP)
    assert frame[per_step].notna().all().all()
    assert frame.val_loss.notna().sum() == 10

    # 3. A second, long run: the live chart gains points while it trains; Cancel stops it.
    second = launch(page, ui_url, "browser-long", steps="100000")
    page.get_by_role("link", name=f"Watch run #{second} live").click()
    before = wait_for(lambda: page.evaluate(LAST_STEP_JS), 60, "the long run's first points")
    wait_for(lambda: page.evaluate(LAST_STEP_JS) > before + 100, 60, "the chart to gain points")
    page.get_by_role("button", name="Cancel").first.click()
    assert wait_for(lambda: (r := stack.store.get_run(second)) and r.status in ("cancelled",) and r.status, 60,
                    "the run to stop") == "cancelled"  # fmt: skip
    page.get_by_text("cancelled (").wait_for()


def test_negative_lr_shows_an_error_and_queues_nothing(stack: Stack, ui_url: str, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(ui_url)
    page.get_by_text("Launch a run").first.wait_for()
    set_number(page, "lr", "-1")
    page.get_by_text("optimizer.lr").wait_for()
    assert page.get_by_text("Input should be greater than 0").is_visible()
    page.get_by_role("button", name="Launch").click()
    page.get_by_text("Nothing was queued").wait_for()
    assert stack.store.list_runs() == []


FAMILIES = ["sgd", "adamw", "lion", "lamb", "adahessian", "muon", "schedulefree-adamw", "frugal"]


def test_one_run_per_optimizer_family_completes(stack: Stack, worker, ui_url: str, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(ui_url)
    page.get_by_text("Launch a run").first.wait_for()
    set_number(page, "steps", "100")
    for name in FAMILIES:
        page.get_by_label("Optimizer", exact=True).click()
        page.get_by_role("option", name=name, exact=True).click()
        page.get_by_text(OPTIMIZERS[name].paper.split(",")[0]).first.wait_for()  # the form switched to it
        page.get_by_role("button", name="Launch").click()
        wait_for(lambda n=name: any(r.spec["optimizer"]["name"] == n for r in stack.store.list_runs()), 300, f"{name}")
    runs = wait_for(
        lambda: (rs := stack.store.list_runs()) and all(r.status == "completed" for r in rs) and rs, 300, "every run"
    )
    assert sorted(r.spec["optimizer"]["name"] for r in runs) == sorted(FAMILIES)
    page.get_by_role("link", name="Runs").click()
    page.get_by_text("8 of 8 runs").wait_for()
