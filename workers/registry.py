"""Registry entries: a name, a description, the paper, defaults and a parameter schema.

Every optimizer, schedule, batch-size policy and task is one `Entry` in a plain dict built from a list.
The run spec's validation and the UI's forms are both generated from the `Param` schemas, so adding an
entry never touches the UI or the spec.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from workers.inputs import MAX_COUNT, Bool, Float, Int, LooseFloat

ParamKind = Literal["float", "int", "bool", "choice", "floats"]  # floats: a list, e.g. milestones
# The bound of a number whose entry sets none: far past any sensible value, yet products of two stay finite in
# float32 (a weight decay of 1e308 overflowed in the worker) and counts stay 32-bit.
CEILING: dict[str, Any] = {"float": 1e6, "floats": 1e6, "int": MAX_COUNT}
MAX_ITEMS = 64  # values in a `floats` list


def _split_numbers(value: Any) -> Any:
    """`"0.5, 0.75"` (a form field or the CLI) means `[0.5, 0.75]`."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


@dataclass(frozen=True)
class Param:
    """One hyper-parameter: its type, default and valid range.

    `gt`/`ge`/`lt`/`le` are the bounds the spec enforces (a number without an upper bound gets `CEILING`); `log`
    tells the UI to offer a log-scale input. Numbers are strict: true/false or text is no number (only a `floats`
    list may be typed as text, "0.5, 0.75").
    """

    name: str
    kind: ParamKind
    default: Any
    help: str = ""
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: tuple[str, ...] = ()
    log: bool = False

    def bounds(self) -> dict[str, Any]:
        """The bounds the spec enforces: the entry's own, with `CEILING` where it sets no upper bound."""
        bounds = {k: getattr(self, k) for k in ("gt", "ge", "lt", "le") if getattr(self, k) is not None}
        if self.kind in CEILING and "lt" not in bounds and "le" not in bounds:
            bounds["le"] = CEILING[self.kind]
        return bounds

    def annotation(self) -> Any:
        """The pydantic type that validates this parameter (bounds, finiteness, choices)."""
        if self.kind == "bool":
            return Bool
        if self.kind == "choice":
            return Literal[self.choices]  # type: ignore[valid-type]
        bounds = self.bounds()
        if self.kind == "floats":
            item = Annotated[LooseFloat, Field(**bounds)]
            return Annotated[
                tuple[item, ...], BeforeValidator(_split_numbers), Field(min_length=1, max_length=MAX_ITEMS)
            ]
        if self.kind == "int":
            return Annotated[Int, Field(**bounds)]
        return Annotated[Float, Field(**bounds)]

    def describe_range(self) -> str:
        fmt = (lambda v: f"{int(v):,}") if self.kind == "int" else (lambda v: f"{v:g}")
        signs = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
        parts = [f"{signs[k]} {fmt(v)}" for k, v in self.bounds().items()]
        if self.choices:
            parts.append(" | ".join(self.choices))
        return ", ".join(parts)


@dataclass(frozen=True)
class Entry:
    """A named, documented, buildable thing. `build` is the factory; its meaning depends on the registry."""

    name: str
    description: str
    paper: str
    params: tuple[Param, ...]
    build: Callable[..., Any]
    extra: Mapping[str, Any] = field(default_factory=dict)
    rule: str = ""  # the update rule or formula, in plain text, for the reference page

    @property
    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)


class Registry(Mapping[str, Entry]):
    """An ordered name → entry mapping with a readable error for unknown names."""

    def __init__(self, kind: str, entries: Iterable[Entry], rules: Mapping[str, str] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        for entry in entries:
            if rules and entry.name in rules:
                entry = replace(entry, rule=rules[entry.name])
            if entry.name in self._entries:
                raise ValueError(f"duplicate {kind} {entry.name!r}")
            self._entries[entry.name] = entry

    def __getitem__(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self._entries)
            raise KeyError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def spec_models(self) -> list[type[BaseModel]]:
        """One frozen pydantic model per entry, tagged by `name`, for a discriminated union in the spec."""
        models: list[type[BaseModel]] = []
        for entry in self._entries.values():
            fields: dict[str, Any] = {"name": (Literal[entry.name], ...)}  # type: ignore[valid-type]
            for p in entry.params:
                fields[p.name] = (p.annotation(), p.default)
            model = create_model(
                f"{self.kind.title().replace('-', '')}_{entry.name.replace('-', '_')}",
                __config__=ConfigDict(extra="forbid", frozen=True),
                **fields,
            )
            models.append(model)
        return models
