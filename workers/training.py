"""The training loop. No Celery, no Streamlit: `run(spec, sink)` trains one run and reports through the sink.

Each step reads in order: set LR → sample → forward → backward → gradient norms → optimizer step → update
norms → periodic evaluation → flush → stop check. Per-step numbers stay on the device in a small buffer; a
flush (at most every `flush_seconds`, or every `flush_steps` steps, and at the end) copies them to the host
once, checks them for divergence and hands them to the sink, which writes them in one transaction.

Step numbers in metrics are 1-based: step k is the k-th optimizer update; its loss and gradient are those of
the batch that update used, its LR is the schedule's value for k − 1 steps taken.

What some registry entries ask of the loop, by a flag in their `extra` (the loop never names an optimizer):
`create_graph` (AdaHessian: keep the backward graph), `worker_grads` (1-bit Adam: one gradient per simulated
worker's share of the batch), `train_eval` (schedule-free, DiLoCo/NoLoCo: switch to eval mode to validate);
schedules may be `online` (hypergradient: the LR learns from g_t · Δθ_{t−1}) or `stop_when_loss_exceeds` a factor
of the lowest smoothed loss (the LR range test); batch policies may `observe`
per-sample gradients (adaptive batch size); optimizers may report `step_metrics` (dispersion, compression).
"""

from __future__ import annotations

import io
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import torch

from models.tasks import TASKS, Problem
from workers.batching import BATCH_POLICIES, per_sample_grads
from workers.flat import FlatParams
from workers.metrics import DEVICE_COLUMNS
from workers.optimizers import OPTIMIZERS
from workers.schedules import SCHEDULES
from workers.spec import RunSpec, params

MetricRow = tuple[int, str, float]  # (step, metric, value)
Columns = Mapping[str, tuple[np.ndarray, np.ndarray]]  # metric → (its steps, ascending; its values): no row per value
Flush = Sequence[MetricRow] | Columns  # what a sink is handed per flush: rows, or (a pack's members) columns
Status = Literal["completed", "diverged", "cancelled"]


class Sink(Protocol):
    """Where a run's metrics go. `write` is called once per flush; `should_stop` is polled after it."""

    def write(self, rows: Flush) -> None: ...

    def should_stop(self) -> bool: ...


class ListSink:
    """Keeps every flush in memory as it was handed (no work per value while training: what "in memory" costs the
    loop); `rows` reads them as rows, step by step. For tests, benchmarks and notebooks."""

    def __init__(self, rows: Sequence[MetricRow] = (), stop_after_rows: int | None = None) -> None:
        self._rows: list[MetricRow] = list(rows)
        self._handed: list[Flush] = []  # not yet read as rows
        self._count = len(self._rows)
        self.stop_after_rows = stop_after_rows

    @property
    def rows(self) -> list[MetricRow]:
        for flush in self._handed:
            self._rows.extend(as_rows(flush))
        self._handed.clear()
        return self._rows

    def write(self, rows: Flush) -> None:
        self._handed.append(rows)
        self._count += sum(len(steps) for steps, _ in rows.values()) if isinstance(rows, Mapping) else len(rows)

    def should_stop(self) -> bool:
        return self.stop_after_rows is not None and self._count >= self.stop_after_rows

    def series(self, metric: str) -> dict[int, float]:
        return {step: value for step, name, value in self.rows if name == metric}


def as_rows(flush: Flush) -> list[MetricRow]:
    """A flush as rows, step by step (columns: each step's metrics in the columns' order)."""
    if not isinstance(flush, Mapping):
        return list(flush)
    rows = [(int(s), name, float(v)) for name, (steps, values) in flush.items()
            for s, v in zip(steps.tolist(), values.tolist(), strict=True)]  # fmt: skip
    rows.sort(key=lambda row: row[0])  # stable: within a step, the columns' order
    return rows


def last_step(flush: Flush) -> int | None:
    """The furthest step a flush holds; None when it holds nothing."""
    if isinstance(flush, Mapping):
        return max((int(steps.max()) for steps, _ in flush.values() if len(steps)), default=None)
    return max((step for step, _, _ in flush), default=None)


@dataclass(frozen=True)
class Outcome:
    status: Status
    steps: int
    message: str = ""


class BlowUp:
    """Ends a run once its smoothed loss rises above `factor` × the lowest smoothed loss so far: the LR range
    test's stop (the loss has left the useful range, even if it is still finite). Smoothing is TensorBoard's
    debiased EMA with weight 0.9, over the rows as they are flushed."""

    def __init__(self, factor: float, weight: float = 0.9) -> None:
        self.factor, self.weight = factor, weight
        self.last, self.count, self.best = 0.0, 0, math.inf

    def __call__(self, rows: Sequence[MetricRow]) -> int | None:
        """The step at which the loss blew up, or None."""
        for step, name, value in rows:
            if name != "loss" or not math.isfinite(value):
                continue
            self.last = self.weight * self.last + (1 - self.weight) * value
            self.count += 1
            smoothed = self.last / (1 - self.weight**self.count)
            self.best = min(self.best, smoothed)
            if self.count > 10 and smoothed > self.factor * self.best:
                return step
        return None


class UnavailableDevice(RuntimeError):
    pass


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise UnavailableDevice("the spec asks for device cuda, but this worker has no CUDA device")
    if requested == "cpu":
        return torch.device("cpu")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Batches:
    """Batches drawn without replacement from a fresh seeded permutation each epoch."""

    def __init__(self, problem: Problem, seed: int) -> None:
        self.x, self.y = problem.x_train, problem.y_train
        self.n = len(self.x)
        self.generator = torch.Generator().manual_seed(seed)
        self.order = self._shuffle()
        self.position = 0

    def _shuffle(self) -> torch.Tensor:
        return torch.randperm(self.n, generator=self.generator).to(self.x.device)

    def next_index(self, size: int) -> torch.Tensor:
        """The next batch's example indices (a packed run gathers every member's at once)."""
        if self.position + size > self.n:
            self.order, self.position = self._shuffle(), 0
        index = self.order[self.position : self.position + size]
        self.position += size
        return index

    def next(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = self.next_index(size)
        return self.x[index], self.y[index]


@torch.no_grad()
def evaluate(problem: Problem) -> dict[str, torch.Tensor]:
    problem.model.eval()
    out = problem.model(problem.x_val)
    result = {"val_loss": problem.loss_fn(out, problem.y_val)}
    if problem.classification:
        result["val_accuracy"] = (out.argmax(dim=-1) == problem.y_val).float().mean()  # classes last
    problem.model.train()
    return result


def _worker_gradients(
    problem: Problem, flat: FlatParams, optimizer: Any, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """Split the batch among the optimizer's workers; leave each worker's gradient in `optimizer.worker_grads`,
    each worker's share of the batch in `optimizer.worker_weights`, and the share-weighted average (the whole
    batch's gradient, the one the optimizer averages too) in the parameters' `.grad`."""
    xs, ys = x.tensor_split(optimizer.workers), y.tensor_split(optimizer.workers)
    grads = torch.empty(len(xs), flat.numel, device=x.device, dtype=flat.grad.dtype)
    total = torch.zeros((), device=x.device)
    for k, (xk, yk) in enumerate(zip(xs, ys, strict=True)):
        if len(xk) == 0:  # more workers than examples: this one has no share (weight 0) this step
            grads[k].zero_()
            continue
        flat.zero_grad()
        loss = problem.loss_fn(problem.model(xk), yk)
        loss.backward()
        grads[k].copy_(flat.grad)
        total += loss.detach() * len(xk)
    weights = torch.tensor([len(xk) / len(x) for xk in xs], device=x.device, dtype=grads.dtype)
    flat.grad.copy_(weights @ grads)
    optimizer.worker_grads, optimizer.worker_weights = grads, weights
    return total / len(x)


def optimizer_state_bytes(optimizer: object) -> int:
    """Bytes of every tensor the optimizer keeps between steps (moments, momentum buffers, accumulators)."""
    total = 0
    for state in getattr(optimizer, "state", {}).values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size()
    return total


def build(spec: RunSpec, device: torch.device) -> tuple[Problem, torch.optim.Optimizer]:
    problem = TASKS[spec.task.name].build(seed=spec.seed, **params(spec.task)).to(device)
    optimizer = OPTIMIZERS[spec.optimizer.name].build(problem.model.parameters(), **params(spec.optimizer))
    return problem, optimizer


HostRow = tuple[int, float, int, int, float, float, float, float]  # step lr batch seen step_time wall state test


@dataclass
class Log:
    """What the steps since the last flush measured: per-step numbers still on the device, host-side numbers,
    validation results and optimizer-specific extras. A flush empties it."""

    device: list[torch.Tensor] = field(default_factory=list)  # one (len(DEVICE_COLUMNS),) tensor per step
    host: list[HostRow] = field(default_factory=list)
    evals: list[tuple[int, dict[str, torch.Tensor]]] = field(default_factory=list)
    extras: list[torch.Tensor] = field(default_factory=list)
    extra_names: list[str] = field(default_factory=list)


@dataclass
class Counters:
    """The loop's own numbers between two steps (the rest of a run's state lives in the objects it trains)."""

    step: int = 0  # optimizer updates taken
    samples_seen: int = 0
    peak_lr: float = 0.0  # the schedule's LR (before the batch policy's factor)
    last_lr: float = 0.0  # the LR the last update was taken with
    wall: float = 0.0  # seconds trained in earlier attempts (a resumed run's clock goes on from there)


def _plain_state(obj: object) -> dict[str, Any]:
    """The numbers a small Python object (batch policy, online schedule, blow-up watch) keeps between steps."""
    return {k: v for k, v in vars(obj).items() if isinstance(v, (bool, int, float, str, torch.Tensor, type(None)))}


class Trainer:
    """One run's whole training state and the hooks a step calls, in order: `schedule` (LR) → batch policy →
    `backward` → optimizer step → `measure` → `evaluate_if_due` → `flush` (→ sink, checkpoint, stop). `run` below
    is the loop over them; `state_dict`/`load_state_dict` are what a checkpoint saves and resumes."""

    def __init__(self, spec: RunSpec, device: torch.device) -> None:
        from workers.settings import get_settings

        self.spec, self.settings = spec, get_settings()
        self.problem, self.optimizer = build(spec, device)
        entry = OPTIMIZERS[spec.optimizer.name]
        self.create_graph = bool(entry.extra.get("create_graph"))  # Hessian-vector products need the graph
        self.worker_grads = bool(entry.extra.get("worker_grads"))  # 1-bit Adam: K workers' gradients, not one
        self.flat = FlatParams(list(self.problem.model.parameters()), flat_grads=not self.create_graph)
        # Schedule-free optimizers hold two points: train() to step at y, eval() to evaluate the average x.
        self.modes: Any = self.optimizer if entry.extra.get("train_eval") else None
        self.batches = Batches(self.problem, spec.seed)
        self.policy = BATCH_POLICIES[spec.batch.name].build(**params(spec.batch))
        self.log_test = hasattr(self.policy, "observe")  # adaptive policies log their test's ratio every step
        schedule = SCHEDULES[spec.schedule.name]
        self.schedule_fn, self.schedule_params = schedule.build, params(spec.schedule)
        online = schedule.extra.get("online")  # an LR that learns from the gradients
        self.adapter = online(spec.optimizer.lr, **self.schedule_params) if online else None
        self.blowup = schedule.extra.get("stop_when_loss_exceeds")  # the LR range test's stop
        self.watch = BlowUp(self.blowup) if self.blowup else None
        self.base_lr = spec.optimizer.lr
        self.peaks = [g["lr"] for g in self.optimizer.param_groups]  # each group follows its own peak
        self.step_metrics = getattr(self.optimizer, "step_metrics", None)  # e.g. replica dispersion
        self.counters = Counters(peak_lr=self.base_lr, last_lr=self.base_lr)
        self.log = Log()
        self.state_bytes = 0.0
        self.started = self.last_flush = time.perf_counter()

    # --- the hooks, in the order a step calls them -------------------------------------------------------------

    def set_lr(self, peak_lr: float, size: int) -> float:
        """Every group follows the schedule from its own peak, scaled by the batch policy's LR factor."""
        lr = peak_lr * self.policy.lr_factor(size)
        for group, peak in zip(self.optimizer.param_groups, self.peaks, strict=True):
            group["lr"] = peak * lr / self.base_lr
        return lr

    def schedule(self, t: int, size: int) -> float:
        if self.adapter is None:
            self.counters.peak_lr = self.schedule_fn(t, self.spec.steps, self.base_lr, **self.schedule_params)
        return self.set_lr(self.counters.peak_lr, size)

    def backward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        problem, flat = self.problem, self.flat
        flat.zero_grad()
        if self.worker_grads:  # simulated workers: one gradient per share of the batch; their average is the grad
            return _worker_gradients(problem, flat, self.optimizer, x, y)
        loss = problem.loss_fn(problem.model(x), y)
        if self.create_graph:
            with warnings.catch_warnings():  # the cycle it warns about is broken by zero_grad() setting None
                warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
                loss.backward(create_graph=True)
        else:
            loss.backward()
        return loss

    def adapt(self, t: int, size: int, lr: float) -> float:
        """An online schedule learns from g_t · Δθ_{t−1}: one host sync per step, the price of its rule."""
        if self.adapter is None or t == 0 or not self.flat.flat_grads:
            return lr
        self.counters.peak_lr = self.adapter.observe(float(torch.dot(self.flat.grad, self.flat.previous)),
                                                     self.counters.last_lr)  # fmt: skip
        return self.set_lr(self.counters.peak_lr, size)

    def step(self) -> None:
        """Take optimizer step `counters.step + 1` and log what it measured (on the device)."""
        c, spec, flat = self.counters, self.spec, self.flat
        t = c.step
        tic = time.perf_counter()
        size = self.policy.size_at(t, spec.steps)
        lr = self.schedule(t, size)
        x, y = self.batches.next(size)
        c.samples_seen += size
        if self.policy.wants_test(t):  # adaptive batch size: per-sample gradients of part of this batch
            n = self.policy.test_samples
            self.policy.observe(per_sample_grads(self.problem.model, self.problem.loss_fn, x[:n], y[:n]))
        loss = self.backward(x, y)
        grad_l2, grad_l1 = flat.grad_norms()
        lr = self.adapt(t, size, lr)
        flat.remember()
        c.last_lr = lr  # the LR this update is taken with
        self.optimizer.step()
        c.step = step = t + 1
        update_l2, param_l2 = flat.update_and_param_norms()
        self.log.device.append(torch.stack([loss.detach(), grad_l2, grad_l1, update_l2, param_l2]))
        if self.step_metrics is not None:
            extras = self.step_metrics()
            self.log.extra_names = list(extras)
            self.log.extras.append(torch.stack(list(extras.values())))
        if step == 1 or len(self.log.device) == 1:  # after the first step, then once per flush: state can grow
            self.state_bytes = float(optimizer_state_bytes(self.optimizer))
        self.evaluate_if_due()
        toc = time.perf_counter()
        wall = c.wall + toc - self.started
        self.log.host.append((step, lr, size, c.samples_seen, toc - tic, wall, self.state_bytes, self.policy.statistic))

    def evaluate_if_due(self) -> None:
        step = self.counters.step
        if step % self.spec.eval_every == 0 or step == self.spec.steps:
            if self.modes:
                self.modes.eval()
            self.log.evals.append((step, evaluate(self.problem)))
            if self.modes:
                self.modes.train()

    def flush_due(self) -> bool:
        step = self.counters.step
        due = (
            len(self.log.device) >= self.settings.flush_steps
            or time.perf_counter() - self.last_flush >= self.settings.flush_seconds
        )
        return step == 1 or step == self.spec.steps or due  # the first step at once: a new run shows a point

    def flush(self, sink: Sink) -> Outcome | None:
        """Copy the log to the host once, hand it to the sink; the run's end if it diverged, blew up or was asked
        to stop, else None."""
        self.flat.check_intact()
        log, step = self.log, self.counters.step
        rows, diverged_at = _to_host(log.device, log.host, log.evals, self.flat.sqrt_d, self.log_test)
        if log.extras and rows:
            kept = rows["loss"][0]  # the steps logged (up to a divergence)
            extras = torch.stack(log.extras).cpu().double().numpy()[: len(kept)]
            rows.update((name, (kept, extras[:, j])) for j, name in enumerate(log.extra_names))
        self.log = Log(extra_names=log.extra_names)
        self.last_flush = time.perf_counter()
        sink.write(rows)
        if diverged_at is not None:
            at, what = diverged_at
            return Outcome("diverged", at, f"{what} became non-finite at step {at}")
        if self.watch is not None and (blown := self.watch(as_rows(rows))) is not None:
            message = f"range test ended at step {blown}: the smoothed loss passed {self.blowup:g}× its lowest"
            return Outcome("completed", blown, message)
        if sink.should_stop():
            return Outcome("cancelled", step, f"stopped at step {step}")
        return None

    # --- checkpoints --------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything the next step depends on. Taken right after a flush, so the log is empty."""
        c = self.counters
        wall = c.wall + time.perf_counter() - self.started
        return {
            "version": CHECKPOINT_VERSION,
            "counters": {
                "step": c.step,
                "samples_seen": c.samples_seen,
                "peak_lr": c.peak_lr,
                "last_lr": c.last_lr,
                "wall": wall,
            },
            "model": self.problem.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "previous_update": self.flat.previous.clone(),  # Δθ of the last step (online schedules read it)
            "batches": {
                "generator": self.batches.generator.get_state(),
                "order": self.batches.order.cpu(),
                "position": self.batches.position,
            },
            "policy": _plain_state(self.policy),
            "adapter": _plain_state(self.adapter) if self.adapter is not None else None,
            "watch": _plain_state(self.watch) if self.watch is not None else None,
            "rng": {
                "cpu": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint version {state.get('version')} is not {CHECKPOINT_VERSION}")
        self.counters = Counters(**state["counters"])
        self.problem.model.load_state_dict(state["model"])  # copies into the flat buffer's views
        self.optimizer.load_state_dict(state["optimizer"])
        self.flat.previous.copy_(state["previous_update"])
        batches = state["batches"]
        self.batches.generator.set_state(batches["generator"])
        self.batches.order, self.batches.position = batches["order"].to(self.batches.x.device), batches["position"]
        for obj, values in ((self.policy, state["policy"]), (self.adapter, state["adapter"]),
                            (self.watch, state["watch"])):  # fmt: skip
            for key, value in (values or {}).items():
                setattr(obj, key, value)
        torch.set_rng_state(state["rng"]["cpu"])
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.started = self.last_flush = time.perf_counter()
        if self.modes:
            self.modes.train()

    def checkpoint_due(self, last: tuple[int, float]) -> bool:
        """Every `checkpoint_steps` steps or `checkpoint_seconds` seconds, whichever comes first (0: never)."""
        every_steps, every_s = self.settings.checkpoint_steps, self.settings.checkpoint_seconds
        if self.counters.step >= self.spec.steps:
            return False  # the run is over: nothing to resume
        return bool(every_steps and self.counters.step - last[0] >= every_steps) or bool(
            every_s and time.monotonic() - last[1] >= every_s
        )


CHECKPOINT_VERSION = 1


def save_state(state: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def load_state(blob: bytes) -> dict[str, Any]:
    """A checkpoint holds tensors, numbers and strings only: loaded with `weights_only`, nothing is unpickled."""
    return dict(torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True))


def run(spec: RunSpec, sink: Sink, device: torch.device | None = None, resume: bytes | None = None) -> Outcome:
    """Train `spec` to the end, a divergence, or a stop asked for by the sink; from a checkpoint if `resume`
    holds one. A sink with `save_checkpoint(step, blob)` gets a checkpoint every few steps or seconds (see
    Trainer.checkpoint_due) and when it asks the run to stop; it must save it only after the rows flushed before
    it, so a checkpoint never runs ahead of the metrics."""
    trainer = Trainer(spec, device or resolve_device(spec.device))
    if resume is not None:
        trainer.load_state_dict(load_state(resume))
    save = getattr(sink, "save_checkpoint", None)
    last_checkpoint = (trainer.counters.step, time.monotonic())
    trainer.problem.model.train()
    if trainer.modes:
        trainer.modes.train()
    while trainer.counters.step < spec.steps:
        trainer.step()
        if not trainer.flush_due():
            continue
        outcome = trainer.flush(sink)
        if outcome is not None:
            if outcome.status == "cancelled" and save is not None:  # handed back: the next worker goes on from here
                save(trainer.counters.step, save_state(trainer.state_dict()))
            return outcome
        if save is not None and trainer.checkpoint_due(last_checkpoint):
            save(trainer.counters.step, save_state(trainer.state_dict()))
            last_checkpoint = (trainer.counters.step, time.monotonic())
    return Outcome("completed", trainer.counters.step)


def flush_columns(
    device: np.ndarray,
    steps: np.ndarray,
    host: Mapping[str, np.ndarray],
    evals: Sequence[tuple[int, Mapping[str, float]]],
    sqrt_d: float,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], tuple[int, str] | None]:
    """One flush as columns: `device` [S, 5] (DEVICE_COLUMNS), the L1/L2 ratio, the `host` columns [S] in their
    order, then each evaluation at or before the last step. Columns stop at the first step whose loss or gradient
    norm is not finite (returned with the metric that was not)."""
    n, diverged_at = len(steps), None
    finite = np.isfinite(device[:, :3])  # loss, grad l2, grad l1
    if not finite.all():
        at = int(np.argmin(finite.all(axis=1)))
        n, diverged_at = at + 1, (int(steps[at]), ("loss", "grad_l2", "grad_l1")[int(np.argmin(finite[at]))])
    kept = steps[:n]
    grad_l2, grad_l1 = device[:n, 1], device[:n, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(grad_l2 > 0, grad_l1 / (sqrt_d * grad_l2), math.nan)
    columns = {name: (kept, device[:n, j]) for j, name in enumerate(DEVICE_COLUMNS)}
    columns["grad_l1_l2_ratio"] = (kept, ratio)
    columns.update((name, (kept, column[:n])) for name, column in host.items())
    last = int(kept[-1])
    at_eval: dict[str, tuple[list[int], list[float]]] = {}
    for step, metrics in evals:
        if step <= last:
            for name, value in metrics.items():
                got = at_eval.setdefault(name, ([], []))
                got[0].append(step)
                got[1].append(float(value))
    for name, (when, values) in at_eval.items():
        columns[name] = (np.asarray(when, dtype=np.int64), np.asarray(values, dtype=np.float64))
    return columns, diverged_at


HOST_COLUMNS = ("lr", "batch_size", "samples_seen", "step_time", "wall_time", "optimizer_state_bytes")


def _to_host(
    device_rows: list[torch.Tensor],
    host_rows: list[tuple[int, float, int, int, float, float, float, float]],
    eval_rows: list[tuple[int, dict[str, torch.Tensor]]],
    sqrt_d: float,
    log_test: bool,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], tuple[int, str] | None]:
    """One device→host copy for a whole flush, as columns (`flush_columns`)."""
    if not device_rows:
        return {}, None
    device = torch.stack(device_rows).cpu().double().numpy()
    by_column = list(zip(*host_rows, strict=True))
    steps = np.asarray(by_column[0], dtype=np.int64)
    host = {name: np.asarray(by_column[j], dtype=np.float64) for j, name in enumerate(HOST_COLUMNS, start=1)}
    if log_test:
        host["batch_test_ratio"] = np.asarray([math.nan if t is None else t for t in by_column[7]], dtype=np.float64)
    evals = [(s, {k: float(v) for k, v in m.items()}) for s, m in eval_rows]
    return flush_columns(device, steps, host, evals, sqrt_d)
