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

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch

from models.tasks import TASKS, Problem
from workers.batching import BATCH_POLICIES, per_sample_grads
from workers.metrics import DEVICE_COLUMNS, FlatParams
from workers.optimizers import OPTIMIZERS
from workers.schedules import SCHEDULES
from workers.spec import RunSpec, params

MetricRow = tuple[int, str, float]  # (step, metric, value)
Status = Literal["completed", "diverged", "cancelled"]


class Sink(Protocol):
    """Where a run's metrics go. `write` is called once per flush; `should_stop` is polled after it."""

    def write(self, rows: Sequence[MetricRow]) -> None: ...

    def should_stop(self) -> bool: ...


@dataclass
class ListSink:
    """Keeps every row in memory: for tests, benchmarks and notebooks."""

    rows: list[MetricRow] = field(default_factory=list)
    stop_after_rows: int | None = None

    def write(self, rows: Sequence[MetricRow]) -> None:
        self.rows.extend(rows)

    def should_stop(self) -> bool:
        return self.stop_after_rows is not None and len(self.rows) >= self.stop_after_rows

    def series(self, metric: str) -> dict[int, float]:
        return {step: value for step, name, value in self.rows if name == metric}


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

    def next(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.position + size > self.n:
            self.order, self.position = self._shuffle(), 0
        index = self.order[self.position : self.position + size]
        self.position += size
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


def run(spec: RunSpec, sink: Sink, device: torch.device | None = None) -> Outcome:
    """Train `spec` to the end, a divergence, or a stop asked for by the sink."""
    from workers.settings import get_settings

    settings = get_settings()
    device = device or resolve_device(spec.device)
    problem, optimizer = build(spec, device)
    entry = OPTIMIZERS[spec.optimizer.name]
    create_graph = bool(entry.extra.get("create_graph"))  # Hessian-vector products need the backward graph
    worker_grads = bool(entry.extra.get("worker_grads"))  # 1-bit Adam: K workers' gradients, not one
    flat = FlatParams(list(problem.model.parameters()), flat_grads=not create_graph)
    # Schedule-free optimizers hold two points: train() to step at y, eval() to evaluate the average x.
    modes: Any = optimizer if entry.extra.get("train_eval") else None
    batches = Batches(problem, spec.seed)
    policy = BATCH_POLICIES[spec.batch.name].build(**params(spec.batch))
    log_test = hasattr(policy, "observe")  # adaptive policies log their sampling test's ratio every step
    schedule = SCHEDULES[spec.schedule.name].build
    schedule_params = params(spec.schedule)
    online = SCHEDULES[spec.schedule.name].extra.get("online")  # an LR that learns from the gradients
    blowup = SCHEDULES[spec.schedule.name].extra.get("stop_when_loss_exceeds")  # the LR range test's stop
    watch = BlowUp(blowup) if blowup else None
    adapter = online(spec.optimizer.lr, **schedule_params) if online else None
    base_lr = spec.optimizer.lr
    peak_lr = last_lr = base_lr
    peaks = [group["lr"] for group in optimizer.param_groups]  # each group follows the schedule from its own peak
    state_bytes = 0.0

    device_rows: list[torch.Tensor] = []  # one (len(DEVICE_COLUMNS),) tensor per step, still on the device
    step_metrics = getattr(optimizer, "step_metrics", None)  # optimizer-specific numbers, e.g. replica dispersion
    extra_names: list[str] = []
    extra_rows: list[torch.Tensor] = []
    host_rows: list[tuple[int, float, int, int, float, float, float, float]] = []  # step lr batch seen times state test
    eval_rows: list[tuple[int, dict[str, torch.Tensor]]] = []
    samples_seen = 0
    start = last_flush = time.perf_counter()

    def flush() -> Outcome | None:
        nonlocal device_rows, host_rows, eval_rows, extra_rows, last_flush
        flat.check_intact()
        rows, diverged_at = _to_host(device_rows, host_rows, eval_rows, flat.sqrt_d, log_test)
        if extra_rows:
            last = rows[-1][0] if rows else 0
            for (step_, *_), values in zip(host_rows, torch.stack(extra_rows).cpu().tolist(), strict=True):
                if step_ <= last:
                    rows.extend((step_, name, float(v)) for name, v in zip(extra_names, values, strict=True))
        device_rows, host_rows, eval_rows, extra_rows = [], [], [], []
        last_flush = time.perf_counter()
        sink.write(rows)
        if diverged_at is not None:
            at, what = diverged_at
            return Outcome("diverged", at, f"{what} became non-finite at step {at}")
        if watch is not None and (blown := watch(rows)) is not None:
            message = f"range test ended at step {blown}: the smoothed loss passed {blowup:g}× its lowest"
            return Outcome("completed", blown, message)
        if sink.should_stop():
            return Outcome("cancelled", step, f"stopped at step {step}")
        return None

    problem.model.train()
    if modes:
        modes.train()
    step = 0
    for t in range(spec.steps):
        step = t + 1
        tic = time.perf_counter()
        size = policy.size_at(t, spec.steps)
        if adapter is None:
            peak_lr = schedule(t, spec.steps, base_lr, **schedule_params)
        lr = peak_lr * policy.lr_factor(size)
        for group, peak in zip(optimizer.param_groups, peaks, strict=True):
            group["lr"] = peak * lr / base_lr
        x, y = batches.next(size)
        samples_seen += size
        if policy.wants_test(t):  # adaptive batch size: per-sample gradients of part of this batch
            n = policy.test_samples
            policy.observe(per_sample_grads(problem.model, problem.loss_fn, x[:n], y[:n]))

        flat.zero_grad()
        if worker_grads:  # simulated workers: one gradient per share of the batch; their average is the gradient
            loss = _worker_gradients(problem, flat, optimizer, x, y)
        else:
            loss = problem.loss_fn(problem.model(x), y)
            if create_graph:
                with warnings.catch_warnings():  # the cycle it warns about is broken by zero_grad() setting None
                    warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
                    loss.backward(create_graph=True)
            else:
                loss.backward()
        grad_l2, grad_l1 = flat.grad_norms()
        if adapter is not None and t > 0 and flat.flat_grads:  # needs g_t · Δθ_{t−1} on the host: one sync
            peak_lr = adapter.observe(float(torch.dot(flat.grad, flat.previous)), last_lr)
            lr = peak_lr * policy.lr_factor(size)
            for group, peak in zip(optimizer.param_groups, peaks, strict=True):
                group["lr"] = peak * lr / base_lr
        flat.remember()
        last_lr = lr  # the LR this update is taken with
        optimizer.step()
        update_l2, param_l2 = flat.update_and_param_norms()
        device_rows.append(torch.stack([loss.detach(), grad_l2, grad_l1, update_l2, param_l2]))
        if step_metrics is not None:
            extras = step_metrics()
            extra_names = list(extras)
            extra_rows.append(torch.stack(list(extras.values())))

        if step == 1 or len(device_rows) == 1:  # after the first step, then once per flush: state can change size
            state_bytes = float(optimizer_state_bytes(optimizer))
        if step % spec.eval_every == 0 or step == spec.steps:
            if modes:
                modes.eval()
            eval_rows.append((step, evaluate(problem)))
            if modes:
                modes.train()
        toc = time.perf_counter()
        host_rows.append((step, lr, size, samples_seen, toc - tic, toc - start, state_bytes, policy.statistic))

        due = len(device_rows) >= settings.flush_steps or toc - last_flush >= settings.flush_seconds
        if step == 1 or step == spec.steps or due:  # the first step at once: a new run shows a point right away
            outcome = flush()
            if outcome is not None:
                return outcome
    return Outcome("completed", step)


def _to_host(
    device_rows: list[torch.Tensor],
    host_rows: list[tuple[int, float, int, int, float, float, float, float]],
    eval_rows: list[tuple[int, dict[str, torch.Tensor]]],
    sqrt_d: float,
    log_test: bool,
) -> tuple[list[MetricRow], tuple[int, str] | None]:
    """One device→host copy for a whole flush; rows stop at the first non-finite loss or gradient."""
    if not device_rows:
        return [], None
    values = torch.stack(device_rows).cpu().tolist()
    evals = [(s, {k: float(v) for k, v in m.items()}) for s, m in eval_rows]
    rows: list[MetricRow] = []
    diverged_at: tuple[int, str] | None = None
    for (loss, grad_l2, grad_l1, update_l2, param_l2), (step, lr, size, seen, step_time, wall, state, test) in zip(
        values, host_rows, strict=True
    ):
        ratio = grad_l1 / (sqrt_d * grad_l2) if grad_l2 > 0 else math.nan
        named = dict(zip(DEVICE_COLUMNS, (loss, grad_l2, grad_l1, update_l2, param_l2), strict=True))
        named.update(grad_l1_l2_ratio=ratio, lr=lr, batch_size=size, samples_seen=seen)
        named.update(step_time=step_time, wall_time=wall, optimizer_state_bytes=state)
        if log_test:
            named["batch_test_ratio"] = test
        rows.extend((step, name, float(value)) for name, value in named.items())
        for what in ("loss", "grad_l2", "grad_l1"):
            if not math.isfinite(named[what]):
                diverged_at = (step, what)
                break
        if diverged_at:
            break
    last_step = rows[-1][0]
    for step, metrics in evals:
        if step <= last_step:
            rows.extend((step, name, value) for name, value in metrics.items())
    return rows, diverged_at
