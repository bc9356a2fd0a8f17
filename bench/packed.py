"""Packed sweeps against one run at a time: the same sweep's runs trained by workers/packed.py as one vectorised
model, and one after another by the ordinary loop (workers/training.py), side by side in this one process.

The sweep is the issue's: 8 learning rates x 4 seeds of AdamW on digits-mlp, 500 steps (and a charlm-transformer
case: 8 runs x 40 steps, one repeat). Every metric is captured in both (into memory: the database's cost is
bench/overhead.py's). Printed: runs per hour each way and their ratio; then throughput against the pack size K,
with where it stops growing; and peak memory against K (each K in a fresh process: its peak resident set, or peak
CUDA memory on a GPU).

Run: `python bench/packed.py` (add `--device cuda` on a GPU machine, `--quick` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workers import packed as packed_module  # noqa: E402
from workers.packed import run_pack  # noqa: E402
from workers.spec import RunSpec, parse_spec  # noqa: E402
from workers.training import ListSink, resolve_device, run  # noqa: E402


def sweep(task: str, k: int, steps: int, device: str, seeds: int = 4) -> list[RunSpec]:
    """k runs: log-spaced learning rates x `seeds` seeds (k/seeds rates), AdamW with warm-up and cosine."""
    rates = max(1, k // seeds)
    lrs = [10 ** (-4 + 2.5 * i / max(rates - 1, 1)) for i in range(rates)]  # 1e-4 ... ~3e-2
    out = []
    for i in range(k):
        lr, seed = lrs[i % rates], i // rates
        out.append(parse_spec({
            "task": task, "optimizer": {"name": "adamw", "lr": lr},
            "schedule": {"name": "warmup-cosine", "warmup_steps": max(1, steps // 10)},
            "steps": steps, "eval_every": max(steps // 5, 1), "seed": seed, "batch": {"size": 32}, "device": device,
        }))  # fmt: skip
    return out


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def packed(specs: list[RunSpec], device: torch.device) -> float:
    return timed(lambda: run_pack(specs, [ListSink() for _ in specs], device))


def one_at_a_time(specs: list[RunSpec], device: torch.device) -> float:
    return timed(lambda: [run(s, ListSink(), device) for s in specs])


def side_by_side(task: str, k: int, steps: int, device: torch.device, repeats: int) -> None:
    specs = sweep(task, k, steps, str(device.type))
    packed(specs[:2], device)  # warm both paths (lazy imports, kernels) before timing either
    one_at_a_time(specs[:1], device)
    alone_s, packed_s = [], []
    for _ in range(repeats):  # interleaved, so a change in the machine's load hits both
        alone_s.append(one_at_a_time(specs, device))
        packed_s.append(packed(specs, device))
    a, p = statistics.median(alone_s), statistics.median(packed_s)
    print(f"{task}, {k} runs x {steps} steps, AdamW, {device.type} ({torch.get_num_threads()} threads):")
    print(f"  one at a time : {a:7.2f} s  {3600 * k / a:9.0f} runs/hour")
    print(f"  packed (K={k:>2}): {p:7.2f} s  {3600 * k / p:9.0f} runs/hour")
    print(f"  packed / one at a time: {a / p:.2f}x the runs per hour  (medians of {repeats})")


def scaling(task: str, steps: int, device: torch.device, sizes: list[int]) -> None:
    print(f"{task}: throughput and peak memory against the pack size K ({steps} steps)")
    print(f"  {'K':>4} {'runs/hour':>10} {'vs K=1':>7} {'peak memory':>12}")
    rates: dict[int, float] = {}
    for k in sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(k), "--task", task, "--steps", str(steps),
             "--device", device.type, "--threads", str(torch.get_num_threads())],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        result = json.loads(out.stdout.strip().splitlines()[-1])
        rates[k] = 3600 * k / result["seconds"]
        print(f"  {k:>4} {rates[k]:>10.0f} {rates[k] / rates[sizes[0]]:>6.1f}x {result['peak_mb']:>9.0f} MB")
    best = max(rates.values())
    knee = min(k for k, rate in rates.items() if rate >= 0.9 * best)
    print(f"  throughput reaches 90% of its best ({best:.0f} runs/hour) at K={knee}")


def _peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM: unlike ru_maxrss, not carried over from the parent across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(k: int, task: str, steps: int, device: torch.device) -> None:
    """In a fresh process: time one pack of K and report its peak memory (for `scaling`)."""
    specs = sweep(task, k, steps, device.type, seeds=max(1, math.ceil(k / 8)))
    packed(specs[:1], device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = packed(specs, device)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else _peak_rss_mb()
    print(json.dumps({"seconds": seconds, "peak_mb": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--task", default="digits-mlp")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer steps, sizes and repeats")
    parser.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    packed_module.PACK_EVERY_TASK = True  # measure tasks that do not pack too (charlm-transformer: why it does not)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.one:
        one(args.one, args.task, args.steps, device)
        return
    steps = 50 if args.quick else args.steps
    repeats = 1 if args.quick else args.repeats
    side_by_side(args.task, 32, steps, device, repeats)
    side_by_side("charlm-transformer", 8, 20 if args.quick else 40, device, 1)  # ~1 min a side on a CPU
    sizes = [1, 4, 16] if args.quick else [1, 2, 4, 8, 16, 32, 64, 128, 256]
    scaling(args.task, steps, device, sizes)


if __name__ == "__main__":
    main()
