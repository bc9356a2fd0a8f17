"""Packed training: K runs of a sweep trained as one vectorised model (issue 13, the loop's half; dispatch follows).

A pack's members share the task and its parameters (so the data and the architecture), the batch policy, the
number of steps, the evaluation period, the device and the optimizer and schedule *entries*; they differ in
anything else: learning rate and other hyper-parameters, schedule parameters, seed. The model's parameters carry a
leading member axis (`torch.func.stack_module_state`), the forward is `vmap(functional_call)` over the members, each
member draws its own batches in its own seeded order, and the optimizer is workers/packed_optim.py's vectorised
update with each member's hyper-parameters and, each step, each member's learning rate.

Each member logs what the same run trained alone logs (tests/test_packed.py holds them to 1e-5), to its own sink.
A member that diverges, or whose sink asks it to stop (cancel, early stopping), stops being updated and recorded
while the others go on. Per-member numbers stay on the device until a flush, as in the single-run loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch.func import functional_call, stack_module_state, vmap

from workers.batching import BATCH_POLICIES
from workers.metrics import DEVICE_COLUMNS
from workers.packed_optim import PACKED
from workers.packed_optim import build as build_optimizer
from workers.schedules import SCHEDULES
from workers.spec import RunSpec, params
from workers.training import Batches, MetricRow, Outcome, Sink, resolve_device

SHARED = ("task", "batch", "steps", "eval_every", "device")  # whole values every member must share


def pack_key(spec: RunSpec) -> tuple[Any, ...] | None:
    """What members of one pack share; None when this run cannot be packed (it then trains alone)."""
    schedule = SCHEDULES[spec.schedule.name]
    policy = BATCH_POLICIES[spec.batch.name]
    if (
        spec.optimizer.name not in PACKED
        or schedule.extra.get("online")
        or schedule.extra.get("stop_when_loss_exceeds")
    ):
        return None
    if "observe" in dir(policy.build(**params(spec.batch))):  # adaptive batch sizes differ per member
        return None
    shared = spec.model_dump(mode="json", include=set(SHARED))
    return (repr(sorted(shared.items())), spec.optimizer.name, spec.schedule.name)


class PackedTrainer:
    def __init__(self, specs: Sequence[RunSpec], device: torch.device) -> None:
        from models.tasks import TASKS

        keys = {pack_key(s) for s in specs}
        if None in keys or len(keys) != 1:
            raise ValueError("these runs cannot train as one pack: " + ", ".join(sorted(map(str, keys))))
        self.specs, self.k, self.device = list(specs), len(specs), device
        first = specs[0]
        self.steps = first.steps
        problems = [TASKS[s.task.name].build(seed=s.seed, **params(s.task)).to(device) for s in specs]
        self.problem = problems[0]  # the data (fixed for a task) and the loss
        self.base = problems[0].model
        stacked, self.buffers = stack_module_state([p.model for p in problems])
        self.names = list(stacked)
        self.params = [stacked[n] for n in self.names]  # leaf tensors [K, ...], requires_grad
        self.optimizer = build_optimizer(first.optimizer.name, self.params, [params(s.optimizer) for s in specs])
        self.batches = [Batches(self.problem, s.seed) for s in specs]  # each member's own seeded order
        self.policy = BATCH_POLICIES[first.batch.name].build(**params(first.batch))
        schedule = SCHEDULES[first.schedule.name]
        self.schedule = [(schedule.build, params(s.schedule), s.optimizer.lr) for s in specs]
        self.active = torch.ones(self.k, dtype=torch.bool, device=device)
        self.outcomes: list[Outcome | None] = [None] * self.k
        self.step_count = 0
        self.samples_seen = 0

    def _forward(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor) -> Any:
        return functional_call(self.base, (params, buffers), (x,))

    def _losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each member's loss on its own batch: [K]."""
        loss_fn = self.problem.loss_fn

        def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], xk: torch.Tensor, yk: torch.Tensor) -> Any:
            return loss_fn(self._forward(p, b, xk), yk)

        return vmap(one)(dict(zip(self.names, self.params, strict=True)), self.buffers, x, y)  # type: ignore[no-any-return]

    @torch.no_grad()
    def evaluate(self) -> dict[str, torch.Tensor]:
        """Each member on the whole validation set: {"val_loss": [K], "val_accuracy": [K]}."""
        problem = self.problem
        self.base.eval()
        params = {n: p.detach() for n, p in zip(self.names, self.params, strict=True)}
        out = vmap(self._forward, in_dims=(0, 0, None))(params, self.buffers, problem.x_val)
        result = {"val_loss": vmap(problem.loss_fn, in_dims=(0, None))(out, problem.y_val)}
        if problem.classification:
            result["val_accuracy"] = (out.argmax(dim=-1) == problem.y_val).float().mean(dim=1)
        self.base.train()
        return result

    def _norms(self, tensors: Sequence[torch.Tensor], p: float) -> torch.Tensor:
        """Each member's norm over all of its tensors: [K]."""
        k = self.k
        if p == 2:
            return torch.stack([t.reshape(k, -1).pow(2).sum(1) for t in tensors]).sum(0).sqrt()
        return torch.stack([t.reshape(k, -1).abs().sum(1) for t in tensors]).sum(0)

    def step(self) -> tuple[torch.Tensor, list[float], int, float]:
        """One step of every active member. Returns the device row [K, 5] (loss, grad l2, grad l1, update l2,
        param l2), each member's LR, the batch size, and the step's host time."""
        tic = time.perf_counter()
        t = self.step_count
        size = self.policy.size_at(t, self.steps)
        factor = self.policy.lr_factor(size)
        lrs = [fn(t, self.steps, base, **sp) * factor for fn, sp, base in self.schedule]
        index = torch.stack([b.next_index(size) for b in self.batches])  # [K, size]
        x, y = self.problem.x_train[index], self.problem.y_train[index]
        self.samples_seen += size
        for p in self.params:
            p.grad = None
        losses = self._losses(x, y)
        losses.sum().backward()  # members are independent: each gets the gradient of its own loss
        grads = [p.grad for p in self.params]
        assert all(g is not None for g in grads)
        grad_l2, grad_l1 = self._norms(grads, 2), self._norms(grads, 1)  # type: ignore[arg-type]
        before = [p.detach().clone() for p in self.params]
        self.optimizer.active = self.active
        self.optimizer.step(torch.tensor(lrs, dtype=torch.float64, device=self.device))
        with torch.no_grad():
            update_l2 = self._norms([p - b for p, b in zip(self.params, before, strict=True)], 2)
            param_l2 = self._norms([p.detach() for p in self.params], 2)
        self.step_count = t + 1
        row = torch.stack([losses.detach(), grad_l2, grad_l1, update_l2, param_l2], dim=1)
        return row, lrs, size, time.perf_counter() - tic


def run_pack(specs: Sequence[RunSpec], sinks: Sequence[Sink], device: torch.device | None = None) -> list[Outcome]:
    """Train the pack to the end; each member ends on its own (completed, diverged, or stopped by its sink)."""
    from workers.settings import get_settings

    settings = get_settings()
    trainer = PackedTrainer(specs, device or resolve_device(specs[0].device))
    k, steps, eval_every = trainer.k, trainer.steps, specs[0].eval_every
    sqrt_d = math.sqrt(sum(p[0].numel() for p in trainer.params))
    state_bytes = 0.0
    device_rows: list[torch.Tensor] = []
    host_rows: list[tuple[int, list[float], int, int, float, float]] = []
    evals: list[tuple[int, dict[str, torch.Tensor]]] = []
    start = last_flush = time.perf_counter()
    trainer.base.train()

    def flush() -> None:
        nonlocal device_rows, host_rows, evals, last_flush
        if not device_rows:
            return
        values = torch.stack(device_rows).cpu()  # [S, K, 5]: one copy for the whole pack
        evaluated = [(s, {n: v.cpu().tolist() for n, v in m.items()}) for s, m in evals]
        for m in range(k):
            if trainer.outcomes[m] is not None:
                continue
            rows: list[MetricRow] = []
            diverged: tuple[int, str] | None = None
            for (loss, g2, g1, u2, p2), (step, lrs, size, seen, step_time, wall) in zip(
                values[:, m].tolist(), host_rows, strict=True
            ):
                named = dict(zip(DEVICE_COLUMNS, (loss, g2, g1, u2, p2), strict=True))
                named.update(grad_l1_l2_ratio=g1 / (sqrt_d * g2) if g2 > 0 else math.nan, lr=lrs[m],
                             batch_size=size, samples_seen=seen, step_time=step_time, wall_time=wall,
                             optimizer_state_bytes=state_bytes)  # fmt: skip
                rows.extend((step, name, float(v)) for name, v in named.items())
                bad = next((w for w in ("loss", "grad_l2", "grad_l1") if not math.isfinite(named[w])), None)
                if bad:
                    diverged = (step, bad)
                    break
            last = rows[-1][0] if rows else 0
            for step, metrics in evaluated:
                if step <= last:
                    rows.extend((step, name, float(vals[m])) for name, vals in metrics.items())
            sinks[m].write(rows)
            if diverged is not None:
                at, what = diverged
                trainer.outcomes[m] = Outcome("diverged", at, f"{what} became non-finite at step {at}")
            elif sinks[m].should_stop():
                trainer.outcomes[m] = Outcome("cancelled", last, f"stopped at step {last}")
            if trainer.outcomes[m] is not None:
                trainer.active[m] = False
        device_rows, host_rows, evals = [], [], []
        last_flush = time.perf_counter()

    while trainer.step_count < steps and any(o is None for o in trainer.outcomes):
        row, lrs, size, step_time = trainer.step()
        step = trainer.step_count
        device_rows.append(row)
        if step == 1 or len(device_rows) == 1:
            total = sum(v.numel() * v.element_size() for v in trainer.optimizer.state_dict().values())
            state_bytes = float(total) / k
        if step % eval_every == 0 or step == steps:
            evals.append((step, trainer.evaluate()))
        wall = time.perf_counter() - start
        host_rows.append((step, lrs, size, trainer.samples_seen, step_time, wall))
        due = len(device_rows) >= settings.flush_steps or time.perf_counter() - last_flush >= settings.flush_seconds
        if step == 1 or step == steps or due:
            flush()
    flush()
    return [o if o is not None else Outcome("completed", trainer.step_count) for o in trainer.outcomes]
