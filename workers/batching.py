"""Batch-size policies. A policy says how many examples step `t` draws; `size` is its starting (or only) size."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from workers.registry import Entry, Param, Registry


@dataclass(frozen=True)
class ConstantBatch:
    size: int

    def size_at(self, step: int) -> int:
        return self.size


_ENTRIES: Sequence[Entry] = [
    Entry(
        "constant",
        "The same batch size at every step.",
        "—",
        (Param("size", "int", 64, "examples per step", ge=1),),
        ConstantBatch,
    ),
]

BATCH_POLICIES = Registry("batch policy", _ENTRIES)
