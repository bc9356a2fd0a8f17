"""The Workers page in chromium over real workers: a live one shows the run it trains, a second one killed with
SIGKILL shows as lost once it has been silent past the heartbeat timeout, and Drain reaches the worker."""

from __future__ import annotations

import os
import signal

import pytest

from tests.conftest import Stack, loaded, wait_for
from workers.celery_app import submit
from workers.spec import parse_spec

pytestmark = [pytest.mark.browser, pytest.mark.live_worker]


def row(page, name: str):  # type: ignore[no-untyped-def]
    """The Workers table's row of one worker."""
    return page.locator('[data-testid="stTable"] tr', has_text=name)


def test_workers_page_shows_a_live_worker_training_and_a_killed_one_lost(
    stack: Stack, start_worker, ui_url: str, page
) -> None:  # type: ignore[no-untyped-def]
    trainer = start_worker("trainer")
    trainer_name = wait_for(lambda: [w.name for w in stack.store.list_workers()], 60, "the first report")[0]
    assert trainer_name.endswith(f":{trainer.process.pid}")
    run_id = submit(stack.store, parse_spec({"task": "digits-mlp", "optimizer": "adamw", "steps": 100_000}))
    wait_for(lambda: (r := stack.store.get_run(run_id)) and r.status == "running", 60, "the trainer to take it")
    victim = start_worker("victim")  # idle: the one run is taken
    victim_name = wait_for(
        lambda: [w.name for w in stack.store.list_workers() if w.name.endswith(f":{victim.process.pid}")],
        60,
        "the second worker's report",
    )[0]

    page.goto(f"{ui_url}/workers")
    page.get_by_role("heading", name="Workers").wait_for()
    loaded(page)  # the page's first run has finished
    row(page, trainer_name).get_by_text(f"training run {run_id}", exact=True).wait_for(timeout=120_000)
    row(page, victim_name).get_by_text("idle").wait_for(timeout=120_000)
    assert "CPU, " in row(page, trainer_name).inner_text()  # its device

    os.kill(victim.process.pid, signal.SIGKILL)
    victim.process.wait(10)
    row(page, victim_name).get_by_text("lost", exact=True).wait_for(timeout=120_000)  # redrawn by itself
    assert f"training run {run_id}" in row(page, trainer_name).inner_text()

    page.get_by_role("button", name="Drain").first.click()  # the only worker left to drain
    wait_for(lambda: stack.store.worker_draining(trainer_name), 60, "the drain request")
    row(page, trainer_name).get_by_text(f"draining (training run {run_id}").wait_for(timeout=120_000)
    stack.store.request_cancel(run_id)
