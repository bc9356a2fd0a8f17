"""The registries' contents are pinned, so nothing vanishes silently; every entry is documented."""

from __future__ import annotations

import pytest

from models.tasks import TASKS
from workers.batching import BATCH_POLICIES
from workers.optimizers import OPTIMIZERS
from workers.schedules import SCHEDULES

PINNED = {
    "task": (
        TASKS,
        ["digits-mlp", "moons-mlp", "digits-logreg", "digits-cnn", "mnist1d-mlp", "charlm-transformer", "quadratic"],
    ),
    "optimizer": (
        OPTIMIZERS,
        [
            "sgd",
            "adam",
            "adamw",
            "adagrad",
            "adagrad-norm",
            "rmsprop",
            "signsgd",
            "lion",
            "adabelief",
            "lamb",
            "lars",
            "muon",
            "schedulefree-adamw",
            "frugal",
            "onebit-adam",
            "diloco",
            "noloco",
            "adahessian",
        ],
    ),
    "schedule": (
        SCHEDULES,
        [
            "constant",
            "step",
            "multistep",
            "exponential",
            "cosine",
            "warmup-cosine",
            "wsd",
            "one-cycle",
            "inverse-sqrt",
            "polynomial",
            "cyclic",
            "hypergradient",
            "range-test",
            "uba",
        ],
    ),
    "batch": (BATCH_POLICIES, ["constant", "step", "linear", "adaptive"]),
}
ALL = [(kind, name) for kind, (reg, names) in PINNED.items() for name in names]


@pytest.mark.parametrize("kind", PINNED)
def test_registry_contents_are_pinned(kind: str) -> None:
    registry, names = PINNED[kind]
    assert list(registry) == names


@pytest.mark.parametrize(("kind", "name"), ALL)
def test_every_entry_is_documented_and_its_defaults_validate(kind: str, name: str) -> None:
    entry = PINNED[kind][0][name]
    assert len(entry.description) > 20 and entry.paper
    if kind in ("optimizer", "schedule"):
        assert entry.rule, f"{name} has no update rule for the reference page"
    for param in entry.params:
        assert param.help, f"{name}.{param.name} has no help text"
    # the defaults pass the entry's own schema
    model = next(m for m in PINNED[kind][0].spec_models() if m.model_fields["name"].annotation.__args__ == (name,))
    model(name=name, **entry.defaults)


def test_unknown_name_error_lists_known_ones() -> None:
    with pytest.raises(KeyError, match="known: sgd, adam, adamw, adagrad, "):
        OPTIMIZERS["adamx"]
