"""The Playground's engine: the real optimizers and schedules of the registries, stepping on a 2-D landscape.

No queue and no database: a trajectory of a few hundred steps takes milliseconds, so the page computes it on
every change. Each step records the point, the loss, the LR, the (noisy) gradient, the update, and the
optimizer's state tensors (momentum buffer, Adam's moments, ...) as the library keeps them, so the page can show
an optimizer's internals at any step.
"""

from __future__ import annotations

import functools
import inspect
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ValidationError

from models.landscapes import Landscape
from workers.optimizers import OPTIMIZERS
from workers.registry import Registry
from workers.schedules import SCHEDULES

# Entries that cannot step a single 2-D point the way they step a network, and why.
LEFT_OUT = {
    "muon": "orthogonalises matrix updates; a 2-D point is a vector, which Muon hands to AdamW",
    "onebit-adam": "simulates several workers sharing a mini-batch",
    "diloco": "trains several replicas",
    "noloco": "trains several replicas",
    "schedulefree-adamw": "evaluates at an averaged point that differs from where it steps",
}
PLAYGROUND_OPTIMIZERS = Registry("optimizer", [e for n, e in OPTIMIZERS.items() if n not in LEFT_OUT])
PLAYGROUND_SCHEDULES = Registry("schedule", [e for e in SCHEDULES.values() if not e.extra.get("online")])


@dataclass
class Trajectory:
    points: np.ndarray  # (n + 1, 2): the start, then the point after each step
    loss: np.ndarray  # (n + 1,)
    lr: np.ndarray  # (n,)
    grads: np.ndarray  # (n, 2): the gradient each step used (noise included)
    updates: np.ndarray  # (n, 2): θ_{t+1} − θ_t
    state: dict[str, np.ndarray] = field(default_factory=dict)  # name → (n, 2), after each step
    diverged_at: int | None = None  # the step at which the point or loss became non-finite
    batch: int = 1  # the mini-batch the noise stood for: samples seen = step × batch

    @property
    def steps(self) -> int:
        return len(self.lr)


def trajectory(
    landscape: Landscape,
    optimizer: Mapping[str, Any],
    schedule: Mapping[str, Any] | None = None,
    *,
    steps: int = 200,
    start: tuple[float, float] | None = None,
    noise: float = 0.0,
    batch: int = 1,
    warmup: int = 0,
    seed: int = 0,
) -> Trajectory:
    """Step `optimizer` ({name, **hyper-parameters}) on `landscape` from `start` for `steps` steps, the LR
    following `schedule` ({name, **params}; constant if None). With `noise` σ > 0 each gradient gets σ/√batch·ξ,
    ξ ~ N(0, I) from `seed`: a mini-batch of `batch` samples. `warmup` > 0 ramps the LR linearly over that many
    first steps, on top of the schedule. Stops early if the point diverges."""
    entry = OPTIMIZERS[optimizer["name"]]
    hyper = {**entry.defaults, **{k: v for k, v in optimizer.items() if k != "name"}}
    point = torch.tensor(start or landscape.start, dtype=torch.float64, requires_grad=True)
    opt = entry.build([point], **hyper)
    step = _bare_step(opt)
    create_graph = bool(entry.extra.get("create_graph"))
    schedule = dict(schedule or {"name": "constant"})
    schedule_entry = SCHEDULES[schedule.pop("name")]
    lr_at, schedule = schedule_entry.build, {**schedule_entry.defaults, **schedule}
    base_lr = float(hyper["lr"])
    generator = torch.Generator().manual_seed(seed)
    scale = noise / math.sqrt(batch)

    # Bookkeeping goes into numpy arrays: a numpy row write costs ~1 µs, a torch one ~5 µs, and this loop's own
    # overhead is what a Playground slider waits for (the optimizer's step is a few tensor ops).
    points = np.empty((steps + 1, 2))
    grads, updates, lrs = np.empty((steps, 2)), np.empty((steps, 2)), np.empty(steps)
    state: dict[str, np.ndarray] = {}
    noise_draws = torch.randn(steps, 2, generator=generator, dtype=torch.float64).mul_(scale) if scale else None
    xy = point.tolist()
    points[0] = xy
    diverged_at, n = None, 0
    with torch.no_grad():
        for t in range(steps):
            lr = lr_at(t, steps, base_lr, **schedule) * (min(1.0, (t + 1) / warmup) if warmup > 0 else 1.0)
            lrs[t] = lr
            for group in opt.param_groups:
                group["lr"] = lr
            if create_graph:  # AdaHessian's Hessian-vector products need autograd's graph
                point.grad = _graph_grad(landscape, point)
            else:  # the gradient by hand: no graph to build for one 2-D point
                point.grad = torch.tensor(landscape.grad(*xy), dtype=torch.float64)
            if noise_draws is not None:
                point.grad.add_(noise_draws[t])
            grads[t] = point.grad.numpy()
            step()
            xy = point.tolist()
            points[t + 1] = xy
            for name, value in opt.state[point].items():
                if torch.is_tensor(value) and value.shape == point.shape:
                    if name not in state:
                        state[name] = np.full((steps, 2), np.nan)
                    state[name][t] = value.numpy()
            n = t + 1
            if not (math.isfinite(xy[0]) and math.isfinite(xy[1])):
                diverged_at = n
                break
        updates[:n] = points[1 : n + 1] - points[:n]
        loss = landscape(torch.from_numpy(points[: n + 1]))
    return Trajectory(
        points=points[: n + 1],
        loss=loss.numpy(),
        lr=lrs[:n],
        grads=grads[:n],
        updates=updates[:n],
        state={k: v[:n] for k, v in state.items()},
        diverged_at=diverged_at,
        batch=batch,
    )


_MODELS: dict[int, dict[str, type[BaseModel]]] = {}  # per registry (not hashable: a Mapping), built once


def _models(registry: Registry) -> dict[str, type[BaseModel]]:
    if id(registry) not in _MODELS:
        _MODELS[id(registry)] = dict(zip(registry, registry.spec_models(), strict=True))
    return _MODELS[id(registry)]


def check(registry: Registry, values: Mapping[str, Any], where: str) -> list[str]:
    """The problems with a component ({name, **params}) by its entry's schema, each naming `where.field`: the
    same bounds a run spec enforces, so the Playground refuses what the worker would refuse."""
    try:
        _models(registry)[values["name"]].model_validate(dict(values))
    except ValidationError as exc:
        return [f"{where}.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    return []


def _bare_step(opt: torch.optim.Optimizer) -> Callable[[], Any]:
    """`opt.step` without torch's per-call wrapper (a profiler record, the hook calls, a grad-mode switch): ~40 µs,
    more than the update's own arithmetic on one 2-D point. Only where no step hook is registered, and the
    caller runs it under `no_grad`, as the wrapper would; anything unusual gets the plain `opt.step`."""
    from torch.optim import optimizer as torch_optimizer

    hooked = (
        getattr(opt, "_optimizer_step_pre_hooks", None)
        or getattr(opt, "_optimizer_step_post_hooks", None)
        or getattr(torch_optimizer, "_global_optimizer_pre_hooks", None)
        or getattr(torch_optimizer, "_global_optimizer_post_hooks", None)
    )
    if hooked or "step" in vars(opt) or not hasattr(type(opt).step, "__wrapped__"):
        return opt.step
    return functools.partial(inspect.unwrap(type(opt).step), opt)


def _graph_grad(landscape: Landscape, point: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
        point.grad = None
        landscape(point).backward(create_graph=True)
    assert point.grad is not None
    return point.grad


def internals(run: Trajectory, step: int) -> dict[str, tuple[float, float]]:
    """What an optimizer did at `step` (1-based), per coordinate: the gradient, the update, the effective step
    Δθ/(−g) (η for plain SGD; η/(√v̂+ε)·m̂/g for Adam), the update in LRs Δθ/η (±1 for LION's sign update, before
    weight decay), and every state tensor the optimizer keeps."""
    i = min(max(step, 1), run.steps) - 1
    g, d = run.grads[i], run.updates[i]
    with np.errstate(divide="ignore", invalid="ignore"):
        effective = np.where(g != 0, -d / g, np.nan)
        in_lrs = d / run.lr[i] if run.lr[i] else np.full(2, np.nan)
    out = {"gradient g": g, "update Δθ": d, "effective step Δθ/(−g)": effective, "update / LR": in_lrs}
    out.update({name: values[i] for name, values in run.state.items()})
    return {name: (float(v[0]), float(v[1])) for name, v in out.items()}
