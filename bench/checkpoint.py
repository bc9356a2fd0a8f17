"""What checkpoints cost a run: the same runs with checkpoints off and at the worker's default (every 30 s or 500
steps) and at an aggressive setting (every 1 s), interleaved in this one process; the median of several repeats.

A checkpoint is the run's whole state serialised in the training thread (`torch.save` of the model, optimizer,
data order and RNG states) and written atomically (write, fsync, rename) — here on the training thread too,
where a worker writes it from its metrics thread. Run: `python bench/checkpoint.py [--repeats 3]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.checkpoints import CheckpointStore
from workers.settings import get_settings
from workers.spec import parse_spec
from workers.training import ListSink, run

CASES = {
    "digits-mlp": {"task": "digits-mlp", "optimizer": "adamw", "steps": 3000, "eval_every": 500},
    "charlm-transformer": {"task": "charlm-transformer", "optimizer": "adamw", "steps": 300, "eval_every": 100},
}
SETTINGS = {"off": ("0", "0"), "default (30 s / 500 steps)": ("500", "30"), "every 1 s": ("0", "1")}


class SavingSink(ListSink):
    def __init__(self, store: CheckpointStore) -> None:
        super().__init__()
        self.store = store
        self.saved: list[int] = []
        self.seconds = 0.0

    def save_checkpoint(self, step: int, blob: bytes) -> None:
        tic = time.perf_counter()
        self.store.save(1, blob)
        self.seconds += time.perf_counter() - tic
        self.saved.append(len(blob))


def timed(spec: dict, steps: str, seconds: str, directory: str) -> tuple[float, SavingSink]:  # type: ignore[type-arg]
    os.environ["OPTLAB_CHECKPOINT_STEPS"], os.environ["OPTLAB_CHECKPOINT_SECONDS"] = steps, seconds
    get_settings.cache_clear()
    sink = SavingSink(store=CheckpointStore(directory))
    tic = time.perf_counter()
    run(parse_spec(spec), sink, torch.device("cpu"))
    return time.perf_counter() - tic, sink


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as directory:
        for name, spec in CASES.items():
            times: dict[str, list[float]] = {label: [] for label in SETTINGS}
            sinks: dict[str, SavingSink] = {}
            timed(spec, "0", "0", directory)  # warm-up
            for _ in range(args.repeats):
                for label, (steps, seconds) in SETTINGS.items():  # interleaved: drift hits all alike
                    elapsed, sinks[label] = timed(spec, steps, seconds, directory)
                    times[label].append(elapsed)
            base = statistics.median(times["off"])
            print(f"\n{name}, {spec['steps']} steps (median of {args.repeats}):")
            for label in SETTINGS:
                t, sink = statistics.median(times[label]), sinks[label]
                size = f"{sink.saved[-1] / 1024:.0f} KiB each" if sink.saved else "-"
                print(f"  checkpoints {label:<28} {t:7.2f} s  ×{t / base:.3f}  {len(sink.saved):3d} saved, {size}, "
                      f"{sink.seconds * 1000:.0f} ms writing")  # fmt: skip


if __name__ == "__main__":
    main()
