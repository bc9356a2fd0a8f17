"""A teacher's locked Playground lesson in a real browser: with `&lock=1` every control but the lesson's own is
disabled, the lesson's own are outlined and named in a note; without it, every control moves."""

from __future__ import annotations

import pytest

from app.lessons import LESSONS
from tests.conftest import Stack, wait_for

pytestmark = [pytest.mark.browser]

# Every keyed Playground control on the page: its key as Streamlit writes it into a class ("pg.opt1:sgd:momentum"
# → "pg-opt1-sgd-momentum"), whether it is disabled, and whether it is outlined.
CONTROLS_JS = """() => {
    const found = {};
    for (const el of document.querySelectorAll('[class*="st-key-pg-"]')) {
        const key = Array.from(el.classList).find(c => c.startsWith('st-key-pg-')).slice('st-key-'.length);
        const control = el.querySelector('input, [role="slider"]');
        if (!control) continue;  // not drawn yet, or not a control (a chart)
        found[key] = {disabled: control.disabled || control.getAttribute('aria-disabled') === 'true',
                      outlined: getComputedStyle(el).outlineStyle !== 'none'};
    }
    return found;
}"""

# Controls of the momentum lesson: the schedule's parameter was once left changeable in a locked lesson.
TEACHERS = ["pg-land-name", "pg-steps", "pg-noise", "pg-sched-name", "pg-sched-constant-warmup_steps", "pg-n",
            "pg-opt0-name", "pg-opt0-sgd-lr", "pg-opt0-sgd-momentum", "pg-opt1-sgd-lr", "pg-batch1", "pg-warmup0"]  # fmt: skip
STUDENTS = ["pg-land-quadratic-condition_number", "pg-opt1-sgd-momentum", "pg-step"]


def controls(page, url: str) -> dict[str, dict]:  # type: ignore[no-untyped-def,type-arg]
    page.goto(url)
    page.get_by_text(LESSONS["momentum"].title).first.wait_for()
    return wait_for(
        lambda: (found := page.evaluate(CONTROLS_JS)) and set(TEACHERS + STUDENTS) <= set(found) and found,
        60,
        "every control of the lesson",
    )


def test_a_locked_lesson_leaves_students_only_its_own_controls(stack: Stack, ui_url: str, page) -> None:  # type: ignore[no-untyped-def]
    assert [k.replace(".", "-").replace(":", "-") for k in LESSONS["momentum"].open] == STUDENTS

    locked = controls(page, f"{ui_url}/playground?lesson=momentum&lock=1")
    assert {k for k in TEACHERS if not locked[k]["disabled"]} == set()
    assert {k for k in STUDENTS if locked[k]["disabled"]} == set()
    assert {k for k, c in locked.items() if c["outlined"]} == set(STUDENTS)  # the students' controls stand out
    note = page.get_by_text("Locked by your teacher")
    assert "condition_number (landscape), momentum (optimizer 2), Step" in note.inner_text()

    free = controls(page, f"{ui_url}/playground?lesson=momentum")
    assert {k for k in TEACHERS + STUDENTS if free[k]["disabled"]} == set()
    assert not any(c["outlined"] for c in free.values())
    assert page.get_by_text("Locked by your teacher").count() == 0
