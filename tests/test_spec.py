"""The run spec: the issue's example loads; every invalid input is refused with the offending field's name."""

from __future__ import annotations

import json
import math

import pytest

from workers.spec import RunSpec, SpecError, flatten, load_spec, parse_spec, unflatten

EXAMPLE = """
name: adamw-cosine-digits
task: digits-mlp
optimizer: {name: adamw, lr: 0.003, weight_decay: 0.01}
schedule: {name: warmup-cosine, warmup_steps: 25, min_lr: 0.0}
batch: {size: 64}
steps: 500
eval_every: 50
seed: 0
device: auto        # auto | cpu | cuda
"""

BASE = {"task": "digits-mlp", "optimizer": {"name": "adamw", "lr": 0.003}}


def test_example_loads_with_defaults_filled() -> None:
    spec = load_spec(EXAMPLE)
    assert spec.name == "adamw-cosine-digits"
    assert spec.task.name == "digits-mlp" and spec.task.hidden == 64
    assert spec.optimizer.lr == 0.003 and spec.optimizer.weight_decay == 0.01 and spec.optimizer.beta2 == 0.999
    assert spec.schedule.warmup_steps == 25 and spec.batch.name == "constant" and spec.batch.size == 64
    assert (spec.steps, spec.eval_every, spec.seed, spec.device) == (500, 50, 0, "auto")


def test_json_loads_the_same_and_round_trips() -> None:
    spec = load_spec(EXAMPLE)
    assert load_spec(json.dumps(spec.model_dump(mode="json"))) == spec
    assert RunSpec.model_validate_json(spec.model_dump_json()) == spec
    assert parse_spec(unflatten(flatten(spec))) == spec


def test_spec_is_frozen() -> None:
    spec = parse_spec(BASE)
    with pytest.raises(ValueError):
        spec.steps = 3  # type: ignore[misc]


def test_name_is_made_when_empty() -> None:
    assert parse_spec(BASE).name == "adamw-constant-digits-mlp"


def _with(**changes: object) -> dict[str, object]:
    data: dict[str, object] = {**BASE, **changes}
    return data


INVALID = [
    (_with(task="imagenet"), "task.name", "unknown task 'imagenet'"),
    (_with(task={"name": "quadratic", "dim": 0}), "task.dim", "greater than or equal to 1"),
    (_with(task={"name": "quadratic", "size": 3}), "task.size", "unknown hyper-parameter for quadratic"),
    (_with(optimizer={"name": "adamx", "lr": 0.1}), "optimizer.name", "unknown optimizer 'adamx'"),
    (_with(optimizer={"lr": 0.1}), "optimizer.name", "missing"),
    (_with(optimizer={"name": "adamw", "lr": -1}), "optimizer.lr", "greater than 0"),
    (_with(optimizer={"name": "adamw", "lr": 0}), "optimizer.lr", "greater than 0"),
    (_with(optimizer={"name": "adamw", "lr": math.nan}), "optimizer.lr", "finite"),
    (_with(optimizer={"name": "adamw", "lr": math.inf}), "optimizer.lr", "finite"),
    (_with(optimizer={"name": "adamw", "lr": "fast"}), "optimizer.lr", "valid number"),
    (_with(optimizer={"name": "adamw", "lr": 0.1, "momentum": 0.9}), "optimizer.momentum", "unknown hyper-parameter"),
    (_with(optimizer={"name": "adamw", "lr": 0.1, "beta1": 1.0}), "optimizer.beta1", "less than 1"),
    (_with(optimizer={"name": "sgd", "momentum": 0, "nesterov": True}), "optimizer.nesterov", "momentum > 0"),
    (_with(schedule={"name": "linear"}), "schedule.name", "unknown schedule 'linear'"),
    (_with(schedule={"name": "step", "gamma": 0}), "schedule.gamma", "greater than 0"),
    (_with(schedule={"name": "warmup-cosine", "warmup_steps": 500}), "schedule.warmup_steps", "less than steps"),
    (_with(batch={"size": 0}), "batch.size", "greater than or equal to 1"),
    (_with(batch={"size": 1439}), "batch.size", "larger than the 1438 training examples"),
    (_with(task={"name": "moons-mlp", "n_samples": 100}, batch={"size": 81}), "batch.size", "larger than the 80"),
    (_with(steps=0), "steps", "greater than or equal to 1"),
    (_with(steps=100_001), "steps", "at most 100000 steps"),
    (_with(eval_every=0), "eval_every", "greater than or equal to 1"),
    (_with(seed=-1), "seed", "greater than or equal to 0"),
    (_with(device="tpu"), "device", "'auto', 'cpu' or 'cuda'"),
    (_with(colour="red"), "colour", "unknown field"),
    ({"optimizer": {"name": "adamw"}}, "task", "Field required"),
]


@pytest.mark.parametrize(("data", "field", "message"), INVALID, ids=[f"{f}-{i}" for i, (_, f, _) in enumerate(INVALID)])
def test_invalid_input_names_the_field(data: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(data)
    errors = {e.field: e.message for e in caught.value.errors}
    assert field in errors, errors
    assert message in errors[field]


def test_max_steps_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.settings import get_settings

    monkeypatch.setenv("OPTLAB_MAX_STEPS", "100")
    get_settings.cache_clear()
    try:
        with pytest.raises(SpecError, match="steps: at most 100 steps"):
            parse_spec(_with(steps=101, eval_every=10))
        assert parse_spec(_with(steps=100, eval_every=10)).steps == 100
    finally:
        get_settings.cache_clear()


def test_not_yaml_is_a_clear_error() -> None:
    with pytest.raises(SpecError, match="spec: not valid YAML"):
        load_spec("task: [unclosed")
    with pytest.raises(SpecError, match="expected a mapping"):
        load_spec("- a\n- b\n")
