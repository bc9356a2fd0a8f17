"""Packed training (workers/packed.py): each member of a pack logs what the same run trained alone logs — loss,
LR, gradient, update and parameter norms, validation — to 1e-5 relative over 200 steps (float32), for every
packable optimizer, with members of different seeds and hyper-parameters in one pack; a diverging or stopped
member leaves the others untouched."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from workers.packed import pack_key, run_pack
from workers.packed_optim import PACKED
from workers.spec import parse_spec
from workers.training import ListSink, run

COMPARED = ("loss", "lr", "grad_l2", "grad_l1", "update_l2", "param_l2", "grad_l1_l2_ratio", "batch_size",
            "samples_seen", "val_loss", "val_accuracy")  # fmt: skip
STEPS = 200

MEMBERS: dict[str, list[dict[str, Any]]] = {  # the optimizer's per-member hyper-parameters
    "sgd": [{"lr": 0.05, "momentum": 0.9}, {"lr": 0.02, "momentum": 0.5, "nesterov": True, "weight_decay": 1e-3}],
    "adam": [{"lr": 1e-3}, {"lr": 3e-3, "beta1": 0.8, "weight_decay": 1e-4}],
    "adamw": [{"lr": 1e-3}, {"lr": 3e-3, "beta2": 0.99, "weight_decay": 0.1}],
    "lion": [{"lr": 1e-4}, {"lr": 3e-4, "beta1": 0.95, "weight_decay": 0.01}],
    "signsgd": [{"lr": 1e-3}, {"lr": 3e-4, "momentum": 0.9}],
    "rmsprop": [{"lr": 1e-3}, {"lr": 3e-4, "alpha": 0.9}],
    "adagrad": [{"lr": 1e-2}, {"lr": 3e-2}],
}


def specs_for(name: str, schedule: dict[str, Any], steps: int = STEPS, task: str = "digits-logreg") -> list:  # type: ignore[type-arg]
    """Members of one pack. On a smooth task (softmax regression): on a ReLU network, float32 rounding that differs
    by an ulp (the batched kernels reduce in another order) can flip a unit at a kink, and the curves then part by
    far more than rounding (see test_on_a_relu_network_members_agree_until_rounding_flips_a_unit)."""
    out = []
    for seed, hyper in zip(
        (0, 7, 3), [*MEMBERS[name], MEMBERS[name][0]], strict=True
    ):  # a third member: same hyper, new seed
        data = {"task": task, "optimizer": {"name": name, **hyper}, "schedule": schedule,
                "steps": steps, "eval_every": 50, "seed": seed, "batch": {"size": 32}, "device": "cpu"}  # fmt: skip
        out.append(parse_spec(data))
    return out


def series(sink: ListSink) -> dict[tuple[int, str], float]:
    return {(s, m): v for s, m, v in sink.rows if m in COMPARED}


def assert_same(packed: ListSink, alone: ListSink) -> None:
    """1e-5 relative to the value, or to 1% of its curve's largest value where the value is smaller: an update's
    norm at the end of a cosine schedule is 1e-4 of its peak, the difference of two parameter vectors that agree
    to float32 rounding (~1e-7), so its own relative error says nothing about the two loops."""
    got, want = series(packed), series(alone)
    assert got.keys() == want.keys()
    peak: dict[str, float] = {}
    for (_, metric), v in want.items():
        if math.isfinite(v):
            peak[metric] = max(peak.get(metric, 0.0), abs(v))
    # Accuracy counts examples: a logit that agrees to rounding can still land on the other side of a tie, so it
    # may differ by an example or two (1/359 each), never more.
    accuracy = {k: abs(got[k] - v) for k, v in want.items() if k[1] == "val_accuracy"}
    assert max(accuracy.values(), default=0.0) <= 2.5 / 359, accuracy
    errors = {
        k: abs(got[k] - v) / max(abs(v), 0.01 * peak[k[1]], 1e-12)
        for k, v in want.items()
        if math.isfinite(v) and k[1] != "val_accuracy"
    }
    worst = max(errors, key=errors.__getitem__)
    assert errors[worst] <= 1e-5, (worst, errors[worst], got[worst], want[worst])


def assert_members_match(specs: list) -> None:  # type: ignore[type-arg]
    """Train the pack, then each member alone: the same curves."""
    sinks = [ListSink() for _ in specs]
    outcomes = run_pack(specs, sinks, torch.device("cpu"))
    assert [o.status for o in outcomes] == ["completed"] * len(specs)
    for spec, sink in zip(specs, sinks, strict=True):
        alone = ListSink()
        run(spec, alone, torch.device("cpu"))
        assert_same(sink, alone)


def test_every_packed_optimizer_has_members_here() -> None:
    assert set(MEMBERS) == set(PACKED)


@pytest.mark.parametrize("name", list(MEMBERS))
def test_a_member_logs_what_the_run_alone_logs(name: str) -> None:
    specs = specs_for(name, {"name": "warmup-cosine", "warmup_steps": 20})
    assert len({pack_key(s) for s in specs}) == 1
    assert_members_match(specs)


@pytest.mark.parametrize("schedule", [
    {"name": "constant"}, {"name": "step", "step_size": 50}, {"name": "one-cycle"}, {"name": "wsd"},
    {"name": "cyclic"}, {"name": "inverse-sqrt", "warmup_steps": 10}, {"name": "polynomial"},
    {"name": "exponential"},
    {"name": "multistep"}, {"name": "cosine"}, {"name": "uba"},
], ids=lambda s: s["name"])  # fmt: skip
def test_every_schedule_packs(schedule: dict[str, Any]) -> None:
    specs = specs_for("adamw", schedule, steps=60)
    assert_members_match(specs)


def test_on_a_relu_network_members_agree_until_rounding_flips_a_unit() -> None:
    """digits-mlp (ReLU): the first 30 steps agree to 1e-5 for every member."""
    specs = specs_for("adamw", {"name": "warmup-cosine", "warmup_steps": 10}, steps=30, task="digits-mlp")
    assert_members_match(specs)


def test_a_diverging_and_a_stopped_member_leave_the_others_untouched() -> None:
    specs = [
        parse_spec({"task": "quadratic", "optimizer": {"name": "sgd", "lr": lr}, "steps": 80, "eval_every": 20,
                    "seed": seed, "batch": {"size": 32}, "device": "cpu"})
        for seed, lr in enumerate((0.01, 100.0, 0.02, 0.005))  # the second blows up (lr far above 2/L)
    ]  # fmt: skip
    sinks = [ListSink() for _ in specs]
    sinks[2] = ListSink(stop_after_rows=1)  # cancelled at its first flush
    outcomes = run_pack(specs, sinks, torch.device("cpu"))
    assert outcomes[1].status == "diverged" and outcomes[2].status == "cancelled"
    assert outcomes[0].status == outcomes[3].status == "completed"
    assert max(s for s, _, _ in sinks[2].rows) < 80  # it stopped being recorded
    for i in (0, 3):
        alone = ListSink()
        run(specs[i], alone, torch.device("cpu"))
        assert_same(sinks[i], alone)


def test_what_cannot_pack() -> None:
    base = {"task": "digits-mlp", "optimizer": "adamw", "steps": 10}
    assert pack_key(parse_spec(base)) is not None
    assert pack_key(parse_spec({**base, "optimizer": "muon"})) is None  # no vectorised update
    assert pack_key(parse_spec({**base, "schedule": "hypergradient"})) is None  # an LR learned online
    assert pack_key(parse_spec({**base, "batch": {"name": "adaptive"}})) is None  # sizes differ per member
    assert pack_key(parse_spec(base)) != pack_key(parse_spec({**base, "steps": 11}))
    assert pack_key(parse_spec(base)) == pack_key(
        parse_spec({**base, "seed": 3, "optimizer": {"name": "adamw", "lr": 1}})
    )
