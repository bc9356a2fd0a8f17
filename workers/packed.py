"""Packed training: K runs of a sweep trained as one vectorised model (issue 13).

A pack's members share the task and its parameters (so the data and the architecture), the batch policy, the
number of steps, the evaluation period, the device and the optimizer and schedule *entries*; they differ in
anything else: learning rate and other hyper-parameters, schedule parameters, seed. `plan_packs` groups a sweep's
runs when it is submitted (workers/celery_app.py); a worker claims a pack whole and `run_pack` trains it. The
members' parameters are one [K, D] tensor; a chain of Linear layers runs as batched matmuls, any other model through
`vmap(functional_call)`; each member draws its own batches in its own seeded order, and the optimizer is
workers/packed_optim.py's vectorised update with each member's hyper-parameters and, each step, its learning rate.

Each member logs what the same run trained alone logs (tests/test_packed.py holds them to 1e-5), to its own sink,
and checkpoints its own slice of the pack. A member that diverges, or whose sink asks it to stop (cancel, early
stopping, a worker shutting down), stops being updated and recorded while the others go on. Per-member numbers stay
on the device until a flush, as in the single-run loop.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from workers.batching import BATCH_POLICIES
from workers.packed_optim import PACKED
from workers.packed_optim import build as build_optimizer
from workers.schedules import SCHEDULES
from workers.spec import RunSpec, params
from workers.training import HOST_COLUMNS, Batches, Outcome, Sink, flush_columns, resolve_device

SHARED = ("task", "batch", "steps", "eval_every", "device")  # whole values every member must share
PACK_EVERY_TASK = False  # bench/packed.py sets it, to measure a task whose entry says it does not pack
CHECKPOINT_VERSION = "packed-1"  # a member's checkpoint: its own slice of the pack (tests/test_packed.py)


def pack_key(spec: RunSpec) -> tuple[Any, ...] | None:
    """What members of one pack share; None when this run cannot be packed (it then trains alone)."""
    schedule = SCHEDULES[spec.schedule.name]
    policy = BATCH_POLICIES[spec.batch.name]
    from models.tasks import TASKS

    if (
        not (PACK_EVERY_TASK or TASKS[spec.task.name].extra.get("packs", True))
        or spec.optimizer.name not in PACKED
        or schedule.extra.get("online")
        or schedule.extra.get("stop_when_loss_exceeds")
    ):
        return None
    if "observe" in dir(policy.build(**params(spec.batch))):  # adaptive batch sizes differ per member
        return None
    shared = spec.model_dump(mode="json", include=set(SHARED))
    return (repr(sorted(shared.items())), spec.optimizer.name, spec.schedule.name)


def plan_packs(specs: Sequence[RunSpec], cap: int) -> list[list[int]]:
    """Group a sweep's runs into packs: indices into `specs`, each group sharing a `pack_key`, in submission order,
    at most `cap` each (the last of a key may be smaller). Runs that cannot pack, or that would be alone, get no
    group (they train alone)."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, spec in enumerate(specs):
        key = pack_key(spec)
        if key is not None:
            groups.setdefault(key, []).append(i)
    packs = [members[j : j + cap] for members in groups.values() for j in range(0, len(members), max(cap, 1))]
    return [p for p in packs if len(p) > 1]


def packing_summary(specs: Sequence[RunSpec], packing: str = "auto", cap: int | None = None) -> str:
    """How a sweep's runs will train, for the CLI and the Sweeps page: "in 1 pack of 32", "in 2 packs (32, 8)
    and 3 runs alone", "one at a time (packing: off)"."""
    if packing == "off":
        return "one at a time (packing: off)"
    if cap is None:
        from workers.settings import get_settings

        cap = get_settings().pack_size
    packs = plan_packs(specs, cap)
    alone = len(specs) - sum(len(p) for p in packs)
    if not packs:
        return "one at a time (no two runs can share a pack)"
    sizes = (
        f"1 pack of {len(packs[0])}"
        if len(packs) == 1
        else f"{len(packs)} packs ({', '.join(str(len(p)) for p in packs)})"
    )
    return f"in {sizes}" + (f" and {alone} run{'s' * (alone != 1)} alone" if alone else "")


def member_bytes(spec: RunSpec) -> int:
    """A generous estimate of the memory one more member of a pack takes: its parameters, gradient, two optimizer
    state tensors, the step's copy and update (6x the parameters), and its batch through the widest layer."""
    from models.tasks import TASKS

    problem = TASKS[spec.task.name].build(seed=spec.seed, **params(spec.task))
    numel = sum(p.numel() for p in problem.model.parameters())
    widest = max((p.shape[0] for p in problem.model.parameters() if p.dim() >= 1), default=1)
    features = problem.x_train[0].numel()
    size = BATCH_POLICIES[spec.batch.name].build(**params(spec.batch)).size_at(spec.steps - 1, spec.steps)
    return int(4 * (6 * numel + 4 * size * (features + widest)))


def memory_cap(spec: RunSpec, device: torch.device, fraction: float = 0.5) -> int:
    """How many members this worker may train in one pack: `fraction` of the memory free on its device, at least 1."""
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        import psutil

        free = psutil.virtual_memory().available
    return max(1, int(free * fraction) // max(member_bytes(spec), 1))


_ELEMENTWISE = ("ReLU", "Tanh", "Sigmoid", "GELU", "SiLU", "LeakyReLU", "ELU", "Identity")


def _layers(model: torch.nn.Module) -> list[torch.nn.Module] | None:
    """The model as a chain of Linear layers and elementwise activations (the fast path: batched matmuls over the
    member axis), or None (any other model goes through `vmap(functional_call)`)."""
    chain = list(model) if isinstance(model, torch.nn.Sequential) else [model]
    ok = all(isinstance(m, torch.nn.Linear) or type(m).__name__ in _ELEMENTWISE for m in chain)
    return chain if ok else None


class PackedTrainer:
    """K members as one model. Their parameters live in one leaf tensor `flat` of shape [K, D] (each member's
    parameters contiguous in its row, as a run alone keeps them in one flat buffer), so the optimizer, the norms and
    a checkpoint each touch one tensor; the forward sees per-parameter views of it. A chain of Linear layers and
    elementwise activations runs as batched matmuls (`torch.baddbmm`); any other model through
    `vmap(functional_call)`. Each member's LR for every step is computed once, up front (packable schedules and
    batch policies are functions of the step alone)."""

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
        # members' parameters and buffers stacked by name (not stack_module_state: a task may define its model's
        # class per build, as charlm-transformer does, and the architectures are equal by the pack key)
        named = [dict(p.model.named_parameters()) for p in problems]
        stacked = {n: torch.stack([m[n].detach() for m in named]) for n in named[0]}
        buffers = [dict(p.model.named_buffers()) for p in problems]
        self.buffers = {n: torch.stack([b[n] for b in buffers]) for n in buffers[0]}
        self.names = list(stacked)
        self.shapes = [tuple(stacked[n].shape[1:]) for n in self.names]
        sizes = [math.prod(shape) for shape in self.shapes]
        self.bounds = list(zip(itertools.accumulate([0, *sizes[:-1]]), itertools.accumulate(sizes), strict=True))
        self.d = sum(sizes)
        flat = torch.cat([stacked[n].detach().reshape(self.k, -1) for n in self.names], dim=1)
        self.flat = flat.contiguous().requires_grad_(True)  # the one leaf: [K, D]
        self.optimizer = build_optimizer(first.optimizer.name, [self.flat], [params(s.optimizer) for s in specs])
        self.batches = [Batches(self.problem, s.seed) for s in specs]  # each member's own seeded order
        self.policy = BATCH_POLICIES[first.batch.name].build(**params(first.batch))
        schedule = SCHEDULES[first.schedule.name]
        self.sizes = [self.policy.size_at(t, self.steps) for t in range(self.steps)]
        self.lrs = torch.tensor(
            [[schedule.build(t, self.steps, s.optimizer.lr, **params(s.schedule)) * self.policy.lr_factor(size)
              for s in specs] for t, size in enumerate(self.sizes)],
            dtype=torch.float64,
        )  # fmt: skip  # [steps, K] on the host, for the log
        self.lrs_device = self.lrs.to(device)
        self.chain = _layers(self.base) if not self.buffers else None
        self.active = torch.ones(self.k, dtype=torch.bool, device=device)
        self.all_active = True  # host-side: no member has ended (so `active` needs no look)
        self.outcomes: list[Outcome | None] = [None] * self.k
        self.step_count = 0
        self.samples_seen = 0

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each parameter as a [K, *shape] view of `flat`."""
        return {
            n: flat[:, a:b].view(self.k, *shape)
            for n, (a, b), shape in zip(self.names, self.bounds, self.shapes, strict=True)
        }

    # --- checkpoints: each member's own slice, so any subset of a pack can resume together ------------------
    def member_state(self, m: int, wall: float) -> dict[str, Any]:
        batches = self.batches[m]
        row = self.flat[m].detach().cpu()
        return {
            "version": CHECKPOINT_VERSION,
            "key": repr(pack_key(self.specs[m])),
            "step": self.step_count,
            "samples_seen": self.samples_seen,
            "wall": wall,
            "params": {n: row[a:b].clone() for n, (a, b) in zip(self.names, self.bounds, strict=True)},
            "buffers": {n: b[m].cpu().clone() for n, b in self.buffers.items()},
            "optimizer": {key: v[m].cpu().clone() for key, v in self.optimizer.state_dict().items()},
            "batches": {
                "generator": batches.generator.get_state(),
                "order": batches.order.cpu(),
                "position": batches.position,
            },
        }

    def load_member_states(self, states: Sequence[dict[str, Any]]) -> float:
        """Resume every member from its own checkpoint (all taken at one step); returns the wall time they had."""
        if len(states) != self.k:
            raise ValueError(f"{len(states)} checkpoints for a pack of {self.k}")
        for m, state in enumerate(states):
            if state.get("version") != CHECKPOINT_VERSION:
                raise ValueError(f"member {m}: checkpoint version {state.get('version')} is not {CHECKPOINT_VERSION}")
            if state["key"] != repr(pack_key(self.specs[m])):
                raise ValueError(f"member {m}: its checkpoint is of another kind of run")
        steps = {int(s["step"]) for s in states}
        if len(steps) != 1:
            raise ValueError(f"a pack resumes from one step; its members' checkpoints are at {sorted(steps)}")
        with torch.no_grad():
            rows = [torch.cat([s["params"][n].reshape(-1) for n in self.names]) for s in states]
            self.flat.copy_(torch.stack(rows).to(self.device))
            for n, b in self.buffers.items():
                b.copy_(torch.stack([s["buffers"][n] for s in states]).to(b.device))
        saved = {key: torch.stack([s["optimizer"][key] for s in states]) for key in states[0]["optimizer"]}
        self.optimizer.load_state_dict({key: v.to(self.device) for key, v in saved.items()})
        for batches, state in zip(self.batches, states, strict=True):
            batches.generator.set_state(state["batches"]["generator"])
            batches.order = state["batches"]["order"].to(batches.x.device)
            batches.position = int(state["batches"]["position"])
        self.step_count = steps.pop()
        self.samples_seen = int(states[0]["samples_seen"])
        self.active = torch.ones(self.k, dtype=torch.bool, device=self.device)  # a checkpoint is of a live member
        self.optimizer.active = self.active
        return float(states[0]["wall"])

    # --- the model ------------------------------------------------------------------------------------------
    def forward(self, weights: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Every member's output on its own inputs: x [K, B, ...] -> [K, B, ...]."""
        if self.chain is None:
            return vmap(self._forward_one)(weights, self.buffers, x)  # type: ignore[no-any-return]
        h = x
        prefix = "" if isinstance(self.base, torch.nn.Sequential) else None
        for i, layer in enumerate(self.chain):
            if isinstance(layer, torch.nn.Linear):
                name = f"{i}." if prefix == "" else ""
                w = weights[name + "weight"]
                bias = weights.get(name + "bias")
                if bias is None:
                    h = torch.bmm(h, w.transpose(1, 2))
                else:
                    h = torch.baddbmm(bias.unsqueeze(1), h, w.transpose(1, 2))
            else:
                h = layer(h)
        return h

    def _forward_one(self, p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor) -> Any:
        return functional_call(self.base, (p, b), (x,))

    def member_losses(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each member's mean loss: [K]."""
        loss_fn = self.problem.loss_fn
        k = out.shape[0]
        if loss_fn is F.cross_entropy and out.dim() == 3:
            return F.cross_entropy(out.flatten(0, 1), y.flatten(0, 1), reduction="none").view(k, -1).mean(1)
        if loss_fn is F.mse_loss:
            return F.mse_loss(out, y, reduction="none").reshape(k, -1).mean(1)
        return vmap(loss_fn)(out, y)  # type: ignore[no-any-return]

    @torch.no_grad()
    def evaluate(self) -> dict[str, torch.Tensor]:
        """Each member on the whole validation set: {"val_loss": [K], "val_accuracy": [K]}."""
        problem = self.problem
        self.base.eval()
        x_val = problem.x_val.expand(self.k, *problem.x_val.shape)
        y_val = problem.y_val.expand(self.k, *problem.y_val.shape)
        out = self.forward(self.views(self.flat.detach()), x_val)
        result = {"val_loss": self.member_losses(out, y_val)}
        if problem.classification:
            result["val_accuracy"] = (out.argmax(dim=-1) == y_val).float().flatten(1).mean(dim=1)
        self.base.train()
        return result

    def step(self) -> tuple[torch.Tensor, int, float]:
        """One step of every active member. Returns the device row [K, 5] (loss, grad l2, grad l1, update l2,
        param l2), the batch size, and the step's host time. Each member's LR is `self.lrs[step - 1]`."""
        tic = time.perf_counter()
        t = self.step_count
        size = self.sizes[t]
        index = torch.stack([b.next_index(size) for b in self.batches])  # [K, size]
        x, y = self.problem.x_train[index], self.problem.y_train[index]
        self.samples_seen += size
        self.flat.grad = None
        losses = self.member_losses(self.forward(self.views(self.flat), x), y)
        losses.sum().backward()  # members are independent: each gets the gradient of its own loss
        grad = self.flat.grad
        assert grad is not None
        before = self.flat.detach().clone()
        self.optimizer.active = None if self.all_active else self.active  # no masking cost while all train
        self.optimizer.step(self.lrs_device[t])
        with torch.no_grad():
            after = self.flat.detach()
            row = torch.stack([
                losses.detach(),
                torch.linalg.vector_norm(grad, dim=1),
                torch.linalg.vector_norm(grad, 1, dim=1),
                torch.linalg.vector_norm(before.sub_(after), dim=1),
                torch.linalg.vector_norm(after, dim=1),
            ], dim=1)  # fmt: skip
        self.step_count = t + 1
        return row, size, time.perf_counter() - tic


def run_pack(
    specs: Sequence[RunSpec], sinks: Sequence[Sink], device: torch.device | None = None,
    resume: Sequence[bytes] | None = None,
) -> list[Outcome]:  # fmt: skip
    """Train the pack to the end; each member ends on its own (completed, diverged, or stopped by its sink).

    With `resume`, every member starts from its own checkpoint (all at one step). A sink with
    `save_checkpoint(step, blob)` gets its member's checkpoint every few steps or seconds, as a run alone does, and
    when it asks its member to stop; a member's checkpoint is its own slice of the pack, so the members of a pack
    that was interrupted can resume in any grouping."""
    from workers.settings import get_settings
    from workers.training import load_state, save_state

    settings = get_settings()
    trainer = PackedTrainer(specs, device or resolve_device(specs[0].device))
    wall_before = trainer.load_member_states([load_state(b) for b in resume]) if resume else 0.0
    k, steps, eval_every = trainer.k, trainer.steps, specs[0].eval_every
    sqrt_d = math.sqrt(trainer.d)
    state_bytes = 0.0
    device_rows: list[torch.Tensor] = []
    host_rows: list[tuple[int, int, int, float, float]] = []
    evals: list[tuple[int, dict[str, torch.Tensor]]] = []
    start = last_flush = time.perf_counter()
    start -= wall_before
    saves = [getattr(sink, "save_checkpoint", None) for sink in sinks]
    together = getattr(sinks[0], "together", None) or contextlib.nullcontext
    last_checkpoint = (trainer.step_count, time.monotonic())
    trainer.base.train()

    def checkpoint(m: int) -> None:
        save = saves[m]
        if save is not None:
            save(trainer.step_count, save_state(trainer.member_state(m, time.perf_counter() - start)))

    def checkpoint_due() -> bool:
        every_steps, every_s = settings.checkpoint_steps, settings.checkpoint_seconds
        step, at = last_checkpoint
        return bool(
            (every_steps and trainer.step_count - step >= every_steps) or (every_s and time.monotonic() - at >= every_s)
        )

    def flush() -> None:
        nonlocal device_rows, host_rows, evals, last_flush
        if not device_rows:
            return
        values = torch.stack(device_rows).cpu()  # [S, K, 5]: one copy for the whole pack
        lrs = trainer.lrs[host_rows[0][0] - 1 : host_rows[-1][0], :]  # [S, K]
        evaluated = [(s, {n: v.cpu().tolist() for n, v in m.items()}) for s, m in evals]
        with together():  # a sink that can takes the whole pack's flush as one (StoreSink: one transaction)
            write_members(values, lrs, evaluated)
        device_rows, host_rows, evals = [], [], []
        last_flush = time.perf_counter()

    def write_members(values: torch.Tensor, lrs: torch.Tensor, evaluated: list[tuple[int, dict[str, Any]]]) -> None:
        """Each member's flush as columns (metric → steps, values): no Python object per value, for any K."""
        every = values.double().numpy()  # [S, K, 5]
        every_lr = lrs.double().cpu().numpy()  # [S, K]
        host = np.asarray(host_rows, dtype=np.float64)  # [S, 5]: step, batch size, samples seen, step time, wall
        all_steps = host[:, 0].astype(np.int64)
        host_columns = {name: host[:, j] for j, name in enumerate(HOST_COLUMNS[1:5], start=1)}
        for m in range(k):
            if trainer.outcomes[m] is not None:
                continue
            member = {"lr": every_lr[:, m], **host_columns, "optimizer_state_bytes": np.full(len(host), state_bytes)}
            at_eval = [(step, {name: float(vals[m]) for name, vals in metrics.items()}) for step, metrics in evaluated]
            rows, diverged = flush_columns(every[:, m], all_steps, member, at_eval, sqrt_d)
            last = int(rows["loss"][0][-1])
            sinks[m].write(rows)
            if diverged is not None:
                at, what = diverged
                trainer.outcomes[m] = Outcome("diverged", at, f"{what} became non-finite at step {at}")
            elif sinks[m].should_stop():
                checkpoint(m)  # a member handed back resumes from here
                trainer.outcomes[m] = Outcome("cancelled", last, f"stopped at step {last}")
            if trainer.outcomes[m] is not None:
                trainer.active[m] = False
                trainer.all_active = False
                if (end := getattr(sinks[m], "end", None)) is not None:
                    end()  # its mates' early-stopping judges stop waiting for it

    while trainer.step_count < steps and any(o is None for o in trainer.outcomes):
        row, size, step_time = trainer.step()
        step = trainer.step_count
        device_rows.append(row)
        if len(device_rows) == 1:
            total = sum(v.numel() * v.element_size() for k_, v in trainer.optimizer.state_dict().items()
                        if k_.startswith("state."))  # fmt: skip
            state_bytes = float(total) / k
        if step % eval_every == 0 or step == steps:
            evals.append((step, trainer.evaluate()))
        wall = time.perf_counter() - start
        host_rows.append((step, size, trainer.samples_seen, step_time, wall))
        due = len(device_rows) >= settings.flush_steps or time.perf_counter() - last_flush >= settings.flush_seconds
        if step == 1 or step == steps or due:
            flush()
            if step < steps and checkpoint_due():
                for m in range(k):
                    if trainer.outcomes[m] is None:
                        checkpoint(m)
                last_checkpoint = (trainer.step_count, time.monotonic())
    flush()
    return [o if o is not None else Outcome("completed", trainer.step_count) for o in trainer.outcomes]
