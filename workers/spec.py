"""The run spec: one frozen pydantic model used by the UI, the CLI and the worker, stored as JSON on the run row.

Each component (task, optimizer, schedule, batch) is a union of models generated from its registry and tagged
by `name`, so an unknown name or hyper-parameter, a bound or a non-finite number is refused with the field's
dotted path (`optimizer.lr`). `parse_spec` turns pydantic's errors into `FieldError`s a person can read.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from models.tasks import TASKS, train_size
from workers.batching import BATCH_POLICIES
from workers.inputs import (
    MAX_COUNT,
    MAX_SEED,
    FieldError,
    Int,
    SpecError,
    check_tree,
    load_yaml,
    quote,
    shown,
    text_problem,
)
from workers.optimizers import OPTIMIZERS
from workers.registry import Registry
from workers.schedules import SCHEDULES
from workers.settings import get_settings

COMPONENTS: dict[str, Registry] = {
    "task": TASKS,
    "optimizer": OPTIMIZERS,
    "schedule": SCHEDULES,
    "batch": BATCH_POLICIES,
}
DEFAULT_NAMES = {"schedule": "constant", "batch": "constant"}


def _union(registry: Registry) -> Any:
    return Annotated[Union[tuple(registry.spec_models())], Field(discriminator="name")]  # noqa: UP007


class RunSpec(BaseModel):
    """What to train, how, and for how long. Frozen: a run's spec never changes after it is queued."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(
        "",
        max_length=200,
        description="a label for the run; made from the spec when empty",
    )
    task: _union(TASKS)  # type: ignore[valid-type]
    optimizer: _union(OPTIMIZERS)  # type: ignore[valid-type]
    schedule: _union(SCHEDULES) = Field(default_factory=lambda: {"name": "constant"}, validate_default=True)  # type: ignore[valid-type]
    batch: _union(BATCH_POLICIES) = Field(default_factory=lambda: {"name": "constant"}, validate_default=True)  # type: ignore[valid-type]
    steps: Int = Field(500, ge=1, le=MAX_COUNT, description="optimizer steps")
    eval_every: Int = Field(
        50,
        ge=1,
        le=MAX_COUNT,
        description="steps between validation passes (one also runs at the end)",
    )
    seed: Int = Field(0, ge=0, le=MAX_SEED, description="seeds initialisation and batch order")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto uses CUDA when the worker has it")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        """`task: digits-mlp` means `task: {name: digits-mlp}`; schedule and batch policy default to constant."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for key in COMPONENTS:
            value = data.get(key)
            if isinstance(value, str):
                data[key] = {"name": value}
            elif isinstance(value, dict) and "name" not in value and key in DEFAULT_NAMES:
                data[key] = {"name": DEFAULT_NAMES[key], **value}
        return data

    @field_validator("name")
    @classmethod
    def _strip(cls, v: str) -> str:
        if problem := text_problem(v):
            raise PydanticCustomError("text", problem)
        return v.strip()

    @model_validator(mode="after")
    def _cross_field(self) -> RunSpec:
        max_steps = get_settings().max_steps
        if self.steps > max_steps:
            _fail(
                "steps",
                f"at most {max_steps} steps are allowed on this server (got {self.steps})",
            )
        n_train = train_size(self.task.name, params(self.task))
        if self.batch.size > n_train:
            _fail(
                "batch.size",
                f"{self.batch.size} is larger than the {n_train} training examples of {self.task.name}",
            )
        max_size = getattr(self.batch, "max_size", None)
        if max_size is not None and max_size > n_train:
            _fail("batch.max_size", f"{max_size} is larger than the {n_train} training examples of {self.task.name}")
        if max_size is not None and max_size < self.batch.size:
            _fail("batch.max_size", f"must be at least batch.size ({self.batch.size}), got {max_size}")
        warmup = getattr(self.schedule, "warmup_steps", None)
        if warmup is not None and warmup >= self.steps:
            _fail(
                "schedule.warmup_steps",
                f"must be less than steps ({self.steps}), got {warmup}",
            )
        for key, registry in COMPONENTS.items():
            component = getattr(self, key)
            check = registry[component.name].extra.get("check")
            for field, message in check(params(component)) if check else ():
                _fail(f"{key}.{field}", message)
        if not self.name:
            object.__setattr__(
                self,
                "name",
                f"{self.optimizer.name}-{self.schedule.name}-{self.task.name}",
            )
        return self


def _fail(field: str, message: str) -> None:
    raise PydanticCustomError("spec_field", "{message}", {"field": field, "message": message})


def params(component: BaseModel) -> dict[str, Any]:
    """A component's hyper-parameters, without its name."""
    return component.model_dump(exclude={"name"})


def flatten(spec: RunSpec) -> dict[str, Any]:
    """The spec as one flat dict with dotted keys (`optimizer.lr`), in a stable order: CSV columns, tables."""
    flat: dict[str, Any] = {"name": spec.name}
    for key in COMPONENTS:
        for k, v in getattr(spec, key).model_dump().items():
            flat[f"{key}.{k}"] = v
    for key in ("steps", "eval_every", "seed", "device"):
        flat[key] = getattr(spec, key)
    return flat


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `flatten`, giving a dict that `parse_spec` accepts."""
    data: dict[str, Any] = {}
    for key, value in flat.items():
        head, _, tail = key.partition(".")
        if tail:
            data.setdefault(head, {})[tail] = value
        else:
            data[key] = value
    return data


def _readable(err: Any) -> FieldError:
    loc = list(err["loc"])
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "spec_field":
        return FieldError(ctx["field"], ctx["message"])
    # A tagged union puts the tag in the path: ('optimizer', 'adamw', 'lr') reads as optimizer.lr.
    if len(loc) >= 2 and loc[0] in COMPONENTS and loc[1] in COMPONENTS[str(loc[0])]:
        component = COMPONENTS[str(loc[0])][str(loc[1])]
        del loc[1]
    else:
        component = None
    field = ".".join(str(part) if isinstance(part, int) else shown(part) for part in loc) or "spec"
    if kind == "union_tag_invalid":
        registry = COMPONENTS[str(loc[0])]
        return FieldError(
            f"{field}.name",
            f"unknown {registry.kind} {quote(ctx['tag'])}; choose one of: {', '.join(registry)}",
        )
    if kind == "union_tag_not_found":
        return FieldError(
            f"{field}.name",
            f"missing; choose one of: {', '.join(COMPONENTS[str(loc[0])])}",
        )
    if kind == "extra_forbidden":
        if component is not None:
            known = ", ".join(p.name for p in component.params) or "none"
            return FieldError(field, f"unknown hyper-parameter for {component.name} (known: {known})")
        return FieldError(field, "unknown field")
    message = err["msg"]
    if "input" in err and kind not in ("missing",) and not isinstance(err["input"], dict):
        message += f" (got {quote(err['input'])})"  # a glance of it: the input may be 60 KB of text
    return FieldError(field, message)


def parse_spec(data: Any) -> RunSpec:
    """Validate a dict (from YAML, JSON, the form or the database) into a RunSpec, or raise SpecError."""
    if not isinstance(data, dict):
        raise SpecError([FieldError("spec", "expected a mapping of fields (name, task, optimizer, ...)")])
    check_tree(data, "spec")
    try:
        return RunSpec.model_validate(data)
    except ValidationError as exc:
        errors = list(dict.fromkeys(_readable(e) for e in exc.errors()))
        raise SpecError(errors) from None


def load_spec(text: str) -> RunSpec:
    """Parse a spec from YAML or JSON text (size, aliases and nesting capped: `workers.inputs.load_yaml`)."""
    return parse_spec(load_yaml(text, "spec"))
