"""Per-step overhead of Optimizer Lab's loop (every per-step metric captured) against a bare PyTorch loop.

Same task, model, optimizer, data, batch order and steps; both measured in this one process, interleaved, and
the median of several repeats compared. Also shown: the loop writing into a real SQLite database through the
store (what a worker does). Run: `make bench` or `python bench/overhead.py [--task digits-mlp] [--steps 2000]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.tasks import TASKS
from workers.spec import RunSpec, params, parse_spec
from workers.training import ListSink, run


def bare_loop(spec: RunSpec, device: torch.device) -> float:
    """What someone would write by hand: sample, forward, backward, step. Returns seconds."""
    problem = TASKS[spec.task.name].build(seed=spec.seed, **params(spec.task)).to(device)
    opt = torch.optim.AdamW(problem.model.parameters(), lr=spec.optimizer.lr, weight_decay=spec.optimizer.weight_decay)
    gen = torch.Generator().manual_seed(spec.seed)
    n, size = len(problem.x_train), spec.batch.size
    order, pos = torch.randperm(n, generator=gen).to(device), 0
    start = time.perf_counter()
    for _ in range(spec.steps):
        if pos + size > n:
            order, pos = torch.randperm(n, generator=gen).to(device), 0
        idx = order[pos : pos + size]
        pos += size
        opt.zero_grad()
        loss = problem.loss_fn(problem.model(problem.x_train[idx]), problem.y_train[idx])
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def lab_loop(spec: RunSpec, device: torch.device, sink=None) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    run(spec, sink or ListSink(), device)
    return time.perf_counter() - start


def build_time(spec: RunSpec, device: torch.device) -> float:
    """Building the task and optimizer, which run() includes and bare_loop() does not: subtracted below."""
    start = time.perf_counter()
    problem = TASKS[spec.task.name].build(seed=spec.seed, **params(spec.task)).to(device)
    torch.optim.AdamW(problem.model.parameters(), lr=1e-3)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="digits-mlp")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    # eval_every = steps: one validation pass at the end, so we time the per-step work.
    spec = parse_spec({"task": args.task, "optimizer": {"name": "adamw", "lr": 1e-3}, "batch": {"size": 64},
                       "steps": args.steps, "eval_every": args.steps})  # fmt: skip

    from db.migrate import upgrade
    from db.store import Store
    from workers.tasks import StoreSink

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        store = Store.from_url(url)

        # the CPU the writer thread spends writing (its own thread's clock, so not disturbed by other load): on
        # a 2-core machine training with 2 threads it is taken from training, so it bounds the overhead from above
        from workers import tasks

        writer_cpu: list[float] = []
        write = tasks._Writer._write

        def timed_write(self, rows):  # type: ignore[no-untyped-def]
            begin = time.thread_time()
            write(self, rows)
            writer_cpu.append(time.thread_time() - begin)

        tasks._Writer._write = timed_write  # type: ignore[method-assign]

        def with_sqlite() -> float:
            run_id = store.create_run("bench", spec.model_dump(mode="json"))
            sink = StoreSink(store, run_id)
            start = time.perf_counter()
            run(spec, sink, device)
            sink.close()  # every row is in the database
            return time.perf_counter() - start

        bare_loop(spec, device), lab_loop(spec, device)  # warm up both (allocator, dynamo import, caches)
        bare, lab, db, builds = [], [], [], []
        writer_cpu.clear()
        for _ in range(args.repeats):
            bare.append(bare_loop(spec, device))
            builds.append(build_time(spec, device))
            lab.append(lab_loop(spec, device))
            db.append(with_sqlite())

    b, overhead = statistics.median(bare), statistics.median(builds)
    lab_s, db_s = statistics.median(lab) - overhead, statistics.median(db) - overhead
    per = lambda s: 1e3 * s / args.steps  # noqa: E731
    print(f"{args.task} on {device}, {args.steps} steps, AdamW, batch 64, median of {args.repeats}")
    print(f"  (torch {torch.__version__}, {torch.get_num_threads()} threads)")
    print(f"  bare PyTorch loop                  {per(b):7.3f} ms/step")
    print(f"  Optimizer Lab loop, every metric    {per(lab_s):7.3f} ms/step   ratio {lab_s / b:5.3f}")
    print(f"  ... and batched writes to SQLite    {per(db_s):7.3f} ms/step   ratio {db_s / b:5.3f}")
    # the logging overhead proper: each repeat's SQLite run against the in-memory run just before it (paired, so
    # a slow spell of the machine lands on both), the median and the spread of those ratios
    paired = sorted((d - overhead) / (m - overhead) for d, m in zip(db, lab, strict=True))
    q1, q3 = paired[len(paired) // 4], paired[(3 * len(paired)) // 4]
    print(f"  logging to SQLite / in memory, paired: median {statistics.median(paired):5.3f} "
          f"(quartiles {q1:5.3f}–{q3:5.3f}, {len(paired)} pairs)")  # fmt: skip
    cpu = sum(writer_cpu) / args.repeats
    print(
        f"  the writer thread's CPU per run: {cpu * 1e3:.1f} ms in {len(writer_cpu) // args.repeats} writes, "
        f"{100 * cpu / db_s:.2f}% of the run (the most logging can take from training here)"
    )


if __name__ == "__main__":
    main()
