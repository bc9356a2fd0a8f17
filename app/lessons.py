"""Playground lessons: presets that fill the page, shareable as a URL, optionally locked by a teacher.

A setup is a flat dict of the Playground's widget keys → values (`pg.land.name`, `pg.opt0:sgd:momentum`, ...).
`?lesson=NAME` loads a preset; `?setup=...` carries any setup (URL-safe base64 of compact JSON); `&lock=1` leaves
only the lesson's `open` controls changeable.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Lesson:
    title: str
    text: str
    setup: dict[str, Any]
    open: tuple[str, ...]  # the widget keys students may change when the lesson is locked


def _optimizer(slot: int, name: str, **params: Any) -> dict[str, Any]:
    return {f"pg.opt{slot}.name": name, **{f"pg.opt{slot}:{name}:{k}": v for k, v in params.items()}}


LESSONS: dict[str, Lesson] = {
    "momentum": Lesson(
        "Momentum on an ill-conditioned quadratic",
        "Gradient descent must keep its step below 2 for the steep direction (curvature 1), so it crawls along the "
        "shallow one (curvature 1/κ). Momentum accumulates the consistent shallow component and damps the "
        "zig-zag. Raise κ and watch plain GD slow down; move the momentum slider.",
        {
            "pg.land.name": "quadratic",
            "pg.land:quadratic:condition_number": 200.0,
            "pg.steps": 150,
            "pg.n": 2,
            **_optimizer(0, "sgd", lr=1.8, momentum=0.0),
            **_optimizer(1, "sgd", lr=1.8, momentum=0.6),
        },
        ("pg.land:quadratic:condition_number", "pg.opt1:sgd:momentum", "pg.step"),
    ),
    "saddle": Lesson(
        "Adam vs SGD on a saddle",
        "Started almost on the ridge, SGD's gradient along y is tiny, so it lingers at the saddle. Adam divides "
        "by the gradient's running size: its first steps have length ≈ η in every coordinate, so it escapes at once.",
        {
            "pg.land.name": "saddle",
            "pg.steps": 120,
            "pg.n": 2,
            **_optimizer(0, "sgd", lr=0.05, momentum=0.0),
            **_optimizer(1, "adam", lr=0.05),
        },
        ("pg.opt0:sgd:lr", "pg.opt1:adam:lr", "pg.step"),
    ),
    "warmup": Lesson(
        "Why warm-up",
        "Adam's first updates have length ≈ η whatever the gradient's size (its second moment starts from one "
        "sample). With a large η they throw the point far off the valley; a linear warm-up keeps the first "
        "steps small until the moments settle.",
        {
            "pg.land.name": "rosenbrock",
            "pg.steps": 300,
            "pg.n": 2,
            "pg.warmup0": 0,
            "pg.warmup1": 100,
            **_optimizer(0, "adam", lr=0.5),
            **_optimizer(1, "adam", lr=0.5),
        },
        ("pg.warmup1", "pg.opt0:adam:lr", "pg.opt1:adam:lr", "pg.step"),
    ),
    "lion": Lesson(
        "LION vs AdamW",
        "LION steps by the sign of an interpolated momentum: every coordinate moves exactly η (plus weight decay), "
        "so it needs a 3–10× smaller η than AdamW. Compare the 'update / LR' rows below: ±1 for LION.",
        {
            "pg.land.name": "rosenbrock",
            "pg.steps": 400,
            "pg.n": 2,
            **_optimizer(0, "lion", lr=0.01),
            **_optimizer(1, "adamw", lr=0.05),
        },
        ("pg.opt0:lion:lr", "pg.opt1:adamw:lr", "pg.step"),
    ),
    "scaling": Lesson(
        "Linear vs square-root LR scaling",
        "A batch of B samples divides the gradient noise by √B. Going from B = 1 to B = 16, the linear rule "
        "multiplies η by 16, the square-root rule by 4. On this noisy quadratic, SGD keeps up with the linear "
        "rule until η hits the stability limit; the square-root rule is the safe one for Adam (Granziol et al.).",
        {
            "pg.land.name": "quadratic",
            "pg.land:quadratic:condition_number": 10.0,
            "pg.steps": 200,
            "pg.n": 3,
            "pg.noise": 2.0,
            "pg.batch0": 1,
            "pg.batch1": 16,
            "pg.batch2": 16,
            **_optimizer(0, "sgd", lr=0.05),
            **_optimizer(1, "sgd", lr=0.8),
            **_optimizer(2, "sgd", lr=0.2),
        },
        ("pg.noise", "pg.opt1:sgd:lr", "pg.opt2:sgd:lr", "pg.step"),
    ),
}


def encode(setup: dict[str, Any]) -> str:
    """A setup as a URL-safe string."""
    raw = json.dumps(setup, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(text: str) -> dict[str, Any]:
    """The inverse of `encode`; raises ValueError on anything that is not an encoded setup."""
    try:
        data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a Playground setup: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and k.startswith("pg.") for k in data):
        raise ValueError("not a Playground setup: expected a mapping of pg.* controls")
    return data


_LABELS = {"pg.land.name": "Landscape", "pg.sched.name": "Schedule", "pg.noise": "gradient noise σ",
           "pg.steps": "steps", "pg.n": "optimizers", "pg.step": "Step"}  # fmt: skip


def open_controls(lesson: Lesson) -> list[str]:
    """The lesson's own controls (those a locked lesson leaves to students), named as the page labels them."""
    names = []
    for key in lesson.open:
        if match := re.fullmatch(r"pg\.(land|sched):[^:]+:(.+)", key):
            names.append(f"{match[2]} ({'landscape' if match[1] == 'land' else 'schedule'})")
        elif match := re.fullmatch(r"pg\.opt(\d+):[^:]+:(.+)", key):
            names.append(f"{match[2]} (optimizer {int(match[1]) + 1})")
        elif match := re.fullmatch(r"pg\.opt(\d+)\.name", key):
            names.append(f"Optimizer {int(match[1]) + 1}")
        elif match := re.fullmatch(r"pg\.(batch|warmup)(\d+)", key):
            names.append(f"{'batch' if match[1] == 'batch' else 'warm-up steps'} (optimizer {int(match[2]) + 1})")
        else:
            names.append(_LABELS.get(key, key))
    return names
