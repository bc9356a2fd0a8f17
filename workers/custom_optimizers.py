"""The optimizers no library has (ALGORITHMS.md's "implement" list), and the Muon + AdamW pairing."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from pytorch_optimizer import AdaHessian as _AdaHessianBase
from torch.optim import Optimizer


def _evaluate(closure: Any) -> Any:
    """An optimizer's optional closure (re-evaluate the loss), run with gradients on, as torch.optim's do."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class AdaGradNorm(Optimizer):
    """AdaGrad-Norm (Ward, Wu & Bottou 2020): b_t² = b_{t−1}² + ‖g_t‖², θ ← θ − η g_t / b_t.

    One scalar accumulator over every parameter of every group (the global gradient norm), kept in the state of
    the first parameter so that `state_dict()` carries it.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1.0, b0: float = 0.01) -> None:
        if lr <= 0 or b0 <= 0:
            raise ValueError(f"AdaGradNorm needs lr > 0 and b0 > 0, got lr={lr}, b0={b0}")
        super().__init__(params, {"lr": lr, "b0": b0})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = _evaluate(closure)
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not params:
            return loss
        state = self.state[self.param_groups[0]["params"][0]]
        if "b_squared" not in state:
            state["b_squared"] = torch.tensor(
                self.param_groups[0]["b0"] ** 2, dtype=params[0].dtype, device=params[0].device
            )
        grads = [p.grad for p in params]
        state["b_squared"] += torch.stack(torch._foreach_norm(grads)).square().sum()  # type: ignore[arg-type]
        b = state["b_squared"].sqrt()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.addcdiv_(p.grad, b, value=-group["lr"])
        return loss


class Lamb(Optimizer):
    """LAMB as You et al. (ICLR 2020) give it in Algorithm 2, per tensor:

      m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;  m̂ = m/(1−β1^t);  v̂ = v/(1−β2^t)
      r = m̂/(√v̂ + ε) + λθ;  θ ← θ − η · φ(‖θ‖)/‖r‖ · r,   φ(z) = min(z, 10), trust ratio 1 if either norm is 0.

    Written here because pytorch-optimizer's `Lamb` (and torch-optimizer's) scale the step by 1/(1−β1^t) after
    the trust ratio has normalised it (10× the paper's step at t = 1) or drop the bias correction inside r, which
    changes how the decay λθ weighs against the Adam direction. The step keeps every number on the device (no
    host sync): each tensor moves by exactly η·φ(‖θ‖).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        clamp: float = 10.0,
    ) -> None:
        if lr <= 0 or eps <= 0 or weight_decay < 0 or clamp <= 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"bad LAMB settings: lr={lr}, betas={betas}, eps={eps}, weight_decay={weight_decay}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "clamp": clamp})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = _evaluate(closure)
        for group in self.param_groups:
            (beta1, beta2), eps, decay = group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                state["step"] += 1
                t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                r = (m / (1 - beta1**t)) / ((v / (1 - beta2**t)).sqrt_().add_(eps))
                if decay:
                    r.add_(p, alpha=decay)
                w, u = p.norm().clamp(max=group["clamp"]), r.norm()
                trust = torch.where((w > 0) & (u > 0), w / u, torch.ones_like(w))
                p.sub_(r.mul_(trust * group["lr"]))
        return loss


class AdaHessian(_AdaHessianBase):
    """pytorch-optimizer's AdaHessian, with the Hutchinson estimate D = z ⊙ Hz averaged as the paper's code does:
    for a convolution kernel (a tensor of 3 or more dimensions), |D| is averaged over each kernel's spatial
    dimensions, so all taps of one (output, input) channel pair share one curvature; matrices, vectors and
    scalars keep D per coordinate (Yao et al., AAAI 2021, §3.2 "spatial averaging"; the authors'
    `optim_adahessian.py`). The library computes D per coordinate only, so the estimate is made here and handed
    to its `step(hessian=...)`; the moments, bias correction and update stay the library's."""

    @torch.no_grad()
    def step(self, closure: Any = None, hessian: list[torch.Tensor] | None = None) -> Any:  # type: ignore[override]
        if hessian is None:
            hessian = self.spatially_averaged_hutchinson()
        return super().step(closure, hessian=hessian)

    def spatially_averaged_hutchinson(self) -> list[torch.Tensor]:
        """One Rademacher probe z per step: D = z ⊙ (Hz) from the backward graph the loop kept, averaged over a
        kernel's spatial dimensions; one tensor per parameter in group order (zeros where there is no gradient)."""
        params = [p for g in self.param_groups for p in g["params"]]
        live = [p for p in params if p.requires_grad and p.grad is not None and p.grad.requires_grad]
        estimates = {id(p): torch.zeros_like(p) for p in params}
        if live:
            zs = [torch.randint_like(p, 0, 2) * 2.0 - 1.0 for p in live]
            hzs = torch.autograd.grad([p.grad for p in live], live, grad_outputs=zs, allow_unused=True)  # type: ignore[misc]
            for p, z, hz in zip(live, zs, hzs, strict=True):
                d = z * hz if hz is not None else torch.zeros_like(p)
                if p.ndim >= 3:  # (out, in, *spatial): one value per kernel
                    d = d.abs().mean(dim=tuple(range(2, p.ndim)), keepdim=True).expand_as(p).contiguous()
                estimates[id(p)] = d
        return [estimates[id(p)] for p in params]


class Combined:
    """Several optimizers stepped as one: what the loop sees (param_groups, step, state, state_dict)."""

    def __init__(self, *optimizers: Optimizer) -> None:
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for opt in self.optimizers for group in opt.param_groups]

    @property
    def state(self) -> dict[Any, Any]:
        return {k: v for opt in self.optimizers for k, v in opt.state.items()}

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {str(i): opt.state_dict() for i, opt in enumerate(self.optimizers)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for i, opt in enumerate(self.optimizers):
            opt.load_state_dict(state[str(i)])


def muon_params(params: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(Muon, AdamW) split: 2-D hidden weight matrices on Muon; biases, the output layer (the last 2-D parameter
    in model order) and anything a task marks `muon = False` (embeddings) on AdamW, as Keller Jordan prescribes."""
    matrices = [i for i, p in enumerate(params) if p.ndim == 2 and getattr(p, "muon", True)]
    marked = any(hasattr(p, "muon") for p in params)  # the task said which are not hidden: trust it
    hidden = set(matrices if marked else matrices[:-1])
    return [p for i, p in enumerate(params) if i in hidden], [p for i, p in enumerate(params) if i not in hidden]


def muon_with_adamw(
    params: list[torch.Tensor],
    lr: float,
    momentum: float,
    nesterov: bool,
    weight_decay: float,
    adjust_lr: str,
    adamw_lr: float,
    adamw_weight_decay: float,
) -> Combined:
    """torch.optim.Muon on the hidden matrices, torch.optim.AdamW on the rest. The loop scales every group's LR
    by the schedule's factor, so both follow the same schedule from their own peaks."""
    hidden, rest = muon_params(params)
    parts: list[Optimizer] = []
    if hidden:
        parts.append(
            torch.optim.Muon(
                hidden,
                lr=lr,
                momentum=momentum,
                nesterov=nesterov,
                weight_decay=weight_decay,
                adjust_lr_fn=None if adjust_lr == "original" else adjust_lr,
            )
        )
    if rest:
        parts.append(torch.optim.AdamW(rest, lr=adamw_lr, betas=(0.9, 0.95), weight_decay=adamw_weight_decay))
    return Combined(*parts)


class Frugal(Optimizer):
    """FRUGAL (Zmushko et al., ICML 2025): gradient splitting. A state-full Adam on a subspace holding a fraction
    `density` of the parameters, a state-free signSGD (or SGD) on the rest; the subspace changes every
    `update_gap` steps. Coordinates that stay state-full across a change keep their moments; new ones start fresh.

    Subspaces: `blockwise` takes whole tensors, cycling through the model in order, until `density` of all
    coordinates are covered; `random` takes each coordinate with probability `density`, and stores Adam's
    moments and a step count only for those coordinates (so optimizer memory scales with `density`).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 1e-3,
        density: float = 0.25,
        update_gap: int = 200,
        projection: str = "blockwise",
        state_free: str = "signsgd",
        free_lr_scale: float = 1.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= density <= 1.0 or update_gap < 1 or projection not in ("blockwise", "random"):
            raise ValueError(f"bad FRUGAL settings: density={density}, update_gap={update_gap}, {projection}")
        defaults = {"lr": lr, "betas": betas, "eps": eps, "free_lr_scale": free_lr_scale}
        super().__init__(params, defaults)
        self.density, self.update_gap, self.projection, self.state_free = density, update_gap, projection, state_free
        self.generator = torch.Generator().manual_seed(seed)
        self.param_groups[0].setdefault("frugal_step", 0)
        self.param_groups[0].setdefault("frugal_cursor", 0)

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["frugal_generator"] = self.generator.get_state()  # the random subspaces still to come
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        generator = state_dict.pop("frugal_generator", None)
        super().load_state_dict(state_dict)
        if generator is not None:
            self.generator.set_state(generator)
        for state in self.state.values():  # torch casts every tensor of the state to the parameter's dtype
            if isinstance(state.get("index"), torch.Tensor):
                state["index"] = state["index"].long()
                state["step"] = state["step"].to(torch.int32)

    def _refresh(self) -> None:
        """Choose the next state-full subspace. Coordinates that stay in it keep their Adam moments and step count;
        those that join start from zero with their own bias correction; those that leave drop their state. So
        density 1 is Adam for any run length, and a refresh never resets what it does not move."""
        params, meta = self._params(), self.param_groups[0]
        previous = dict(self.state)
        self.state.clear()
        if self.projection == "random":
            for p in params:
                mask = torch.rand(p.numel(), generator=self.generator) < self.density
                index = mask.nonzero().squeeze(1).to(p.device)
                state = {"index": index, "step": torch.zeros(len(index), dtype=torch.int32, device=p.device),
                         "exp_avg": p.new_zeros(len(index)), "exp_avg_sq": p.new_zeros(len(index))}  # fmt: skip
                old = previous.get(p)
                if old and old["index"] is not None and len(old["index"]):
                    slot = torch.full((p.numel(),), -1, dtype=torch.long, device=p.device)
                    slot[old["index"]] = torch.arange(len(old["index"]), device=p.device)
                    source = slot[index]
                    stays = source >= 0
                    for key in ("step", "exp_avg", "exp_avg_sq"):
                        state[key][stays] = old[key][source[stays]]
                self.state[p] = state
            return
        budget, total = self.density * sum(p.numel() for p in params), 0
        cursor = meta["frugal_cursor"]
        for k in range(len(params)):
            if total >= budget or budget == 0:
                break
            p = params[(cursor + k) % len(params)]
            old = previous.get(p)
            kept = old is not None and old.get("index", 0) is None
            self.state[p] = (
                old
                if kept
                else {  # type: ignore[assignment]
                    "index": None,
                    "step": 0,
                    "exp_avg": torch.zeros_like(p),
                    "exp_avg_sq": torch.zeros_like(p),
                }
            )
            total += p.numel()
            meta["frugal_cursor"] = (cursor + k + 1) % len(params)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = _evaluate(closure)
        meta = self.param_groups[0]
        if meta["frugal_step"] % self.update_gap == 0:
            self._refresh()
        meta["frugal_step"] += 1
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            free_lr = lr * group["free_lr_scale"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.reshape(-1)
                flat = p.view(-1)
                state = self.state.get(p)
                free = g.clone()
                if state:
                    index = state["index"]
                    full = g if index is None else g[index]
                    state["step"] += 1  # an int for whole tensors, one count per coordinate for random ones
                    m, v, t = state["exp_avg"].view(-1), state["exp_avg_sq"].view(-1), state["step"]
                    if isinstance(t, torch.Tensor):
                        t = t.to(m.dtype)
                    m.mul_(beta1).add_(full, alpha=1 - beta1)
                    v.mul_(beta2).addcmul_(full, full, value=1 - beta2)
                    update = (m / (1 - beta1**t)) / ((v / (1 - beta2**t)).sqrt() + eps)
                    if index is None:
                        flat.sub_(update, alpha=lr)
                        continue
                    flat.index_add_(0, index, update, alpha=-lr)
                    free[index] = 0.0
                flat.sub_(free.sign() if self.state_free == "signsgd" else free, alpha=free_lr)
        return loss


class LocalReplicas:
    """DiLoCo and NoLoCo, simulated in one process: K replicas of the model, each with its own inner AdamW.

    The loop's steps go to the replicas in turn: step t trains replica t mod K on its own batch (so each replica
    sees its own stream of data) with the model holding that replica's weights. Every H rounds (K·H loop steps)
    comes the outer step:
    - DiLoCo (Douillard et al.): Δ = θ − mean_k θ_k; Nesterov momentum SGD on Δ (lr α, momentum μ) moves the
      shared θ, and every replica restarts from it. Inner AdamW states stay local.
    - NoLoCo (Kolehmainen et al.): no all-reduce. Replicas are shuffled into groups of n; each replica k keeps
      an anchor θ̃_k and momentum m_k: m_k ← μm_k + α·mean_G(φ − θ̃) + α(mean_G θ̃ − θ̃_k); θ̃_k ← θ̃_k + m_k;
      its live weights φ_k restart from θ̃_k.
    eval() loads the consensus weights (θ, or the mean anchor) for validation; train() restores the replica.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        method: str,
        replicas: int,
        inner_steps: int,
        lr: float,
        weight_decay: float,
        outer_lr: float,
        outer_momentum: float,
        group_size: int = 2,
        seed: int = 0,
    ) -> None:
        self.params = list(params)
        self.method, self.k, self.h, self.group_size = method, replicas, inner_steps, group_size
        self.outer_lr, self.outer_momentum = outer_lr, outer_momentum
        self.generator = torch.Generator().manual_seed(seed)
        clone = lambda: [p.detach().clone() for p in self.params]  # noqa: E731
        self.live = [clone() for _ in range(replicas)]  # φ_k: each replica's weights
        self.anchor = [clone() for _ in range(replicas)]  # θ̃_k (NoLoCo); DiLoCo's θ is anchor[0]
        self.momentum = [[torch.zeros_like(p) for p in self.params] for _ in range(replicas)]
        # one AdamW per replica over the same (swapped) parameters; Combined exposes their groups to the schedule
        self.inner = Combined(
            *[torch.optim.AdamW(self.params, lr=lr, weight_decay=weight_decay) for _ in range(replicas)]
        )
        self.current, self.loop_steps, self.outer_steps = 0, 0, 0
        self.evaluating = False

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.inner.param_groups

    @property
    def state(self) -> dict[Any, Any]:
        state: dict[Any, Any] = {}
        for i, opt in enumerate(self.inner.optimizers):  # keyed by replica: they share parameter objects
            state.update({(i, id(p)): s for p, s in opt.state.items()})
        for name in ("live", "anchor", "momentum"):
            for i, tensors in enumerate(getattr(self, name)):
                state[(name, i)] = dict(enumerate(tensors))
        return state

    def _load(self, tensors: list[torch.Tensor]) -> None:
        torch._foreach_copy_(self.params, tensors)

    def _save(self, tensors: list[torch.Tensor]) -> None:
        torch._foreach_copy_(tensors, [p.detach() for p in self.params])

    @torch.no_grad()
    def step(self) -> None:
        self.inner.optimizers[self.current].step()
        self._save(self.live[self.current])
        self.loop_steps += 1
        self.current = self.loop_steps % self.k
        if self.loop_steps % (self.k * self.h) == 0:
            self._outer()
        self._load(self.live[self.current])

    def _outer(self) -> None:
        self.outer_steps += 1
        if self.method == "diloco":
            theta, m = self.anchor[0], self.momentum[0]
            for j in range(len(theta)):
                delta = theta[j] - torch.stack([live[j] for live in self.live]).mean(0)
                m[j].mul_(self.outer_momentum).add_(delta)
                theta[j].sub_(delta + self.outer_momentum * m[j], alpha=self.outer_lr)  # Nesterov
            for live in self.live:
                torch._foreach_copy_(live, theta)
            return
        order = torch.randperm(self.k, generator=self.generator).tolist()
        groups = [order[i : i + self.group_size] for i in range(0, self.k, self.group_size)]
        for group in groups:
            for j in range(len(self.params)):
                progress = torch.stack([self.live[r][j] - self.anchor[r][j] for r in group]).mean(0)
                centre = torch.stack([self.anchor[r][j] for r in group]).mean(0)
                for r in group:
                    m = self.momentum[r][j]
                    m.mul_(self.outer_momentum).add_(progress, alpha=self.outer_lr)
                    m.add_(centre - self.anchor[r][j], alpha=self.outer_lr)
            for r in group:
                torch._foreach_add_(self.anchor[r], self.momentum[r])
                torch._foreach_copy_(self.live[r], self.anchor[r])

    def consensus(self) -> list[torch.Tensor]:
        if self.method == "diloco":
            return self.anchor[0]
        return [torch.stack([a[j] for a in self.anchor]).mean(0) for j in range(len(self.params))]

    @torch.no_grad()
    def eval(self) -> None:
        if not self.evaluating:
            self._save(self.live[self.current])
            self._load(self.consensus())
            self.evaluating = True

    @torch.no_grad()
    def train(self) -> None:
        if self.evaluating:
            self._load(self.live[self.current])
            self.evaluating = False

    @torch.no_grad()
    def step_metrics(self) -> dict[str, torch.Tensor]:
        """Replica dispersion (1/K)·Σ_k ‖w_k − mean w‖ over live weights (DiLoCo) or anchors (NoLoCo)."""
        weights = self.live if self.method == "diloco" else self.anchor
        flat = torch.stack([torch.cat([t.reshape(-1) for t in w]) for w in weights])
        return {"replica_dispersion": (flat - flat.mean(0)).norm(dim=1).mean()}

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {
            "inner": self.inner.state_dict(),
            "live": self.live, "anchor": self.anchor, "momentum": self.momentum,
            "counters": (self.current, self.loop_steps, self.outer_steps),
            "generator": self.generator.get_state(),
        }  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state["inner"])
        for name in ("live", "anchor", "momentum"):
            for mine, theirs in zip(getattr(self, name), state[name], strict=True):
                torch._foreach_copy_(mine, theirs)
        self.current, self.loop_steps, self.outer_steps = state["counters"]
        self.generator.set_state(state["generator"])


class OneBitAdam(Optimizer):
    """1-bit Adam (Tang et al., ICML 2021), simulated: K workers in one process, one gradient each per step.

    Warm-up (t ≤ freeze_step): plain Adam on the averaged gradient. Then the variance is frozen at v̂* and only
    momentum is communicated, compressed to 1 bit per coordinate with error feedback:
      worker k: m_k = β1·m + (1−β1)·g_k;  c_k = C(m_k + e_k);  e_k ← m_k + e_k − c_k
      server:   a = mean_k c_k;  m = C(a + e_s);  e_s ← a + e_s − m;      θ ← θ − η·m/(√v̂* + ε)
    with C(x) = (‖x‖₂/√n)·sign(x) per tensor and sign(0) = +1. The loop hands the K gradients in `worker_grads`
    (K × d, the model's parameters flattened in order) and each worker's share of the batch in `worker_weights`
    (K, summing to 1); used on its own, the summed `.grad`s act as one worker. Every average over workers ("mean")
    is weighted by those shares — the all-reduce of workers whose batches differ in size — so the warm-up's
    gradient is the whole batch's, the one the loop logs; with equal shares it is the plain mean of the paper.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        workers: int = 4,
        freeze_step: int = 100,
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})
        self.workers, self.freeze_step = workers, freeze_step
        self.worker_grads: torch.Tensor | None = None
        self.worker_weights: torch.Tensor | None = None
        self.last_metrics: dict[str, torch.Tensor] = {}

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def _compress(self, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        """C per tensor: each parameter's segment becomes ±(its RMS)."""
        parts = []
        for seg in x.split(sizes, dim=-1):
            scale = seg.norm(dim=-1, keepdim=True) / seg.shape[-1] ** 0.5
            parts.append(torch.where(seg >= 0, scale, -scale))
        return torch.cat(parts, dim=-1)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = _evaluate(closure)
        params = self._params()
        sizes = [p.numel() for p in params]
        grads = self.worker_grads
        if grads is None:
            grads = torch.cat([p.grad.reshape(-1) for p in params])[None, :]  # type: ignore[union-attr]
        weights = self.worker_weights
        if weights is None:
            weights = grads.new_full((grads.shape[0],), 1.0 / grads.shape[0])
        self.worker_grads = self.worker_weights = None
        group = self.param_groups[0]
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        state = self.state[params[0]]
        if not state:
            d, k = sum(sizes), grads.shape[0]
            state.update(step=0, m=grads.new_zeros(d), v=grads.new_zeros(d), v_frozen=grads.new_zeros(d),
                         e_workers=grads.new_zeros(k, d), e_server=grads.new_zeros(d))  # fmt: skip
        state["step"] += 1
        t, m = state["step"], state["m"]
        mean = weights @ grads  # the whole batch's gradient
        uncompressed = beta1 * m + (1 - beta1) * mean
        if t <= self.freeze_step:
            m.copy_(uncompressed)
            state["v"].mul_(beta2).addcmul_(mean, mean, value=1 - beta2)
            v_hat = state["v"] / (1 - beta2**t)
            update = (m / (1 - beta1**t)) / (v_hat.sqrt() + eps)
            if t == self.freeze_step:
                state["v_frozen"].copy_(v_hat)
        else:
            e, e_s = state["e_workers"], state["e_server"]
            local = beta1 * m[None, :] + (1 - beta1) * grads + e
            sent = self._compress(local, sizes)
            e.copy_(local - sent)
            a = weights @ sent + e_s
            m.copy_(self._compress(a, sizes))
            e_s.copy_(a - m)
            update = m / (state["v_frozen"].sqrt() + eps)
        torch._foreach_add_(params, [u.view_as(p) for u, p in zip(update.split(sizes), params, strict=True)], alpha=-lr)
        self.last_metrics = {
            "compression_error_worker": state["e_workers"].norm(dim=1).mean(),
            "compression_error_server": state["e_server"].norm(),
            "compression_cosine": torch.nn.functional.cosine_similarity(m, uncompressed, dim=0, eps=1e-30),
        }
        return loss

    def step_metrics(self) -> dict[str, torch.Tensor]:
        return self.last_metrics
