"""Sweeps: a run spec with lists (a grid) and ranges (random samples) on any field, expanded into run specs.

```yaml
name: lr-x-batch
base: {task: digits-mlp, optimizer: adamw, schedule: warmup-cosine, steps: 300}
grid:                       # every combination
  optimizer.lr: [0.001, 0.003, 0.01]
  batch.size: [32, 128]
  seed: [0, 1]
random:                     # `samples` draws per grid point
  optimizer.weight_decay: {low: 0.0001, high: 0.1, scale: log}
samples: 4
early_stopping:             # optional: median or asha (see workers/early_stopping.py)
  rule: asha
  metric: loss
  grace_steps: 30
packing: auto               # default: runs that differ only in LR, other hyper-parameters, schedule parameters
                            # or seed train together as one vectorised model (workers/packed.py); off: one by one
```

Fields are dotted paths into the run spec. Setting a component's name (`optimizer.name: [sgd, adam]`) starts
that component afresh, so one optimizer's hyper-parameters never leak into another's. Every expanded spec is
validated before anything is queued; an error names the run and the field.
"""

from __future__ import annotations

import copy
import itertools
import math
import random
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from workers.early_stopping import EarlyStopping
from workers.inputs import MAX_SEED, Bool, Float, Int, check_tree, load_yaml, quote, shown, text_problem
from workers.spec import COMPONENTS, FieldError, RunSpec, SpecError, parse_spec

MAX_RUNS = 1000


class Range(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    low: Float
    high: Float
    scale: Literal["linear", "log"] = "linear"
    integer: Bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.high < self.low:
            raise ValueError(f"high ({self.high:g}) is below low ({self.low:g})")
        if self.scale == "log" and self.low <= 0:
            raise ValueError(f"a log scale needs low > 0, got {self.low:g}")
        if not math.isfinite(self.high - self.low):  # a draw would be inf, and round(inf) raises
            raise ValueError(f"high - low must be a finite number, got {self.high:g} - {self.low:g}")
        return self

    def draw(self, rng: random.Random) -> float | int:
        if self.scale == "log":
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        return round(value) if self.integer else value


class SweepSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field("sweep", min_length=1, max_length=200)
    base: dict[str, Any]
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    random: dict[str, Range] = Field(default_factory=dict)
    samples: Int = Field(1, ge=1, le=MAX_RUNS, description="random draws per grid point")
    sampler_seed: Int = Field(0, ge=0, le=MAX_SEED)
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    packing: Literal["auto", "off"] = Field(
        "auto", description="auto: compatible runs train together in packs (workers/packed.py); off: one by one"
    )

    @field_validator("packing", mode="before")
    @classmethod
    def _packing_words(cls, v: Any) -> Any:
        """`packing: off` (YAML 1.2 keeps it text), `false` or `no` turn packing off; `on`, `true`, `yes` are auto."""
        words = {"on": "auto", "yes": "auto", "true": "auto", "no": "off", "false": "off"}
        if isinstance(v, bool):
            return "auto" if v else "off"
        return words.get(v.lower(), v.lower()) if isinstance(v, str) else v

    @field_validator("name")
    @classmethod
    def _printable(cls, v: str) -> str:
        if problem := text_problem(v):
            raise PydanticCustomError("text", problem)
        return v

    @field_validator("early_stopping", mode="before")
    @classmethod
    def _strict_numbers(cls, v: Any) -> Any:
        """`grace_steps: true` is no step count: validate the rule strictly (early_stopping.py is lax)."""
        if isinstance(v, dict):
            metric = v.get("metric")
            if isinstance(metric, str) and (problem := text_problem(metric)):
                raise _field("early_stopping.metric", problem)
            return EarlyStopping.model_validate(v, strict=True)
        return v

    @model_validator(mode="after")
    def _valid_paths(self) -> SweepSpec:
        for where, paths in (("grid", self.grid), ("random", self.random)):
            for path in paths:
                if problem := _path_problem(path):
                    raise _field(f"{where}.{shown(path)}", problem)
        for path, values in self.grid.items():
            if not values:
                raise _field(f"grid.{shown(path)}", "is an empty list")
        return self

    @property
    def size(self) -> int:
        return math.prod(len(v) for v in self.grid.values()) * (self.samples if self.random else 1)


def _field(field: str, message: str) -> PydanticCustomError:
    return PydanticCustomError("spec_field", "{message}", {"field": field, "message": message})


def _path_problem(path: str) -> str | None:
    """Why a swept path cannot name a run-spec field (`steps`, `seed`, `optimizer.lr`, `task.name`), or None."""
    head, _, rest = path.partition(".")
    if "" in path.split("."):
        return "a dotted path without empty parts, such as optimizer.lr"
    if head not in RunSpec.model_fields:
        return f"unknown field {quote(head)}; sweep one of {', '.join(RunSpec.model_fields)}, or COMPONENT.PARAMETER"
    if head in COMPONENTS:
        if rest and (not rest.isidentifier()):
            return f"write {head}.PARAMETER (such as {head}.name), one level deep"
    elif rest:
        return f"{head} is a single value, not a mapping: write {head}"
    return None


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    """Set a swept path in a run's dict. Paths are checked (`_path_problem`); a base whose component is neither a
    name nor a mapping is refused here, naming it."""
    head, _, rest = path.partition(".")
    if not rest:
        data[head] = value
        return
    node = data.get(head)
    if isinstance(node, str):  # `task: digits-mlp` shorthand
        node = {"name": node}
    if rest == "name" and head in COMPONENTS:
        data[head] = {"name": value}  # a new component starts from its own defaults
        return
    if node is not None and not isinstance(node, dict):
        raise SpecError(
            [FieldError(f"base.{head}", f"must be a mapping or a name to sweep {path} (got {quote(node)})")]
        )
    node = dict(node or {})
    _set(node, rest, value)
    data[head] = node


def _label(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def expand(sweep: SweepSpec) -> list[dict[str, Any]]:
    """The run specs (dicts, not yet validated) in a stable order: grid points in order, then random draws."""
    if sweep.size > MAX_RUNS:
        raise SpecError([FieldError("grid", f"{sweep.size} runs is more than the {MAX_RUNS} a sweep may hold")])
    rng = random.Random(sweep.sampler_seed)
    # component names first, so `optimizer.name` does not wipe an `optimizer.lr` set in the same point
    paths = sorted(sweep.grid, key=lambda p: not p.endswith(".name"))
    runs = []
    for point in itertools.product(*(sweep.grid[p] for p in paths)):
        for _ in range(sweep.samples if sweep.random else 1):
            data = copy.deepcopy(sweep.base)
            chosen = dict(zip(paths, point, strict=True))
            chosen.update({path: r.draw(rng) for path, r in sweep.random.items()})
            for path in sorted(chosen, key=lambda p: not p.endswith(".name")):
                _set(data, path, chosen[path])
            shown = ", ".join(f"{p.split('.')[-1] if p.endswith('.lr') else p}={_label(v)}" for p, v in chosen.items())
            data["name"] = f"{sweep.name} [{shown}]" if shown else sweep.name
            runs.append(data)
    return runs


def build(sweep: SweepSpec) -> list[RunSpec]:
    """Expand and validate every run; one SpecError lists every invalid run by number and field."""
    specs: list[RunSpec] = []
    errors: list[FieldError] = []
    for i, data in enumerate(expand(sweep), start=1):
        try:
            specs.append(parse_spec(data))
        except SpecError as exc:
            errors.extend(FieldError(f"run {i} ({shown(data['name'])}): {e.field}", e.message) for e in exc.errors)
    if errors:
        raise SpecError(errors)
    return specs


def _readable(err: Any) -> FieldError:
    if err["type"] == "spec_field":
        return FieldError(err["ctx"]["field"], err["ctx"]["message"])
    field = ".".join(str(p) if isinstance(p, int) else shown(p) for p in err["loc"]) or "sweep"
    message = err["msg"]
    if "input" in err and err["type"] != "missing" and not isinstance(err["input"], dict):
        message += f" (got {quote(err['input'])})"
    return FieldError(field, message)


def parse_sweep(data: Any) -> SweepSpec:
    """Validate parsed data (from YAML, JSON or a page) into a SweepSpec, or raise SpecError naming each field."""
    if not isinstance(data, dict):
        raise SpecError([FieldError("sweep", "expected a mapping with base, grid and/or random")])
    check_tree(data, "sweep")
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(list(dict.fromkeys(_readable(e) for e in exc.errors()))) from None


def load_sweep(text: str) -> SweepSpec:
    """Parse a sweep from YAML or JSON text (size, aliases and nesting capped: `workers.inputs.load_yaml`)."""
    return parse_sweep(load_yaml(text, "sweep"))
