"""Optimizer registry. Each entry wraps a library class (torch.optim here) and builds it from the spec.

`build(params, **hyper)` returns a torch optimizer. The learning rate is set by the loop before every step
from the schedule, so `lr` here is only the initial value.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from workers.registry import Entry, Param, Registry

MAX_LR = 100.0  # the LR range test ends at 10; numbers without a bound of their own get the registry's CEILING

if TYPE_CHECKING:
    import torch


def _sgd(
    params: Iterable[torch.Tensor],
    lr: float,
    momentum: float,
    nesterov: bool,
    weight_decay: float,
) -> Any:
    import torch

    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)


def _adam(
    params: Iterable[torch.Tensor],
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
) -> Any:
    import torch

    return torch.optim.Adam(params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)


def _adamw(
    params: Iterable[torch.Tensor],
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
) -> Any:
    import torch

    return torch.optim.AdamW(params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)


def _adagrad(
    params: Iterable[torch.Tensor],
    lr: float,
    eps: float,
    weight_decay: float,
    initial_accumulator_value: float,
) -> Any:
    import torch

    return torch.optim.Adagrad(
        params,
        lr=lr,
        eps=eps,
        weight_decay=weight_decay,
        initial_accumulator_value=initial_accumulator_value,
    )


def _rmsprop(
    params: Iterable[torch.Tensor], lr: float, alpha: float, eps: float, momentum: float, weight_decay: float
) -> Any:
    import torch

    return torch.optim.RMSprop(params, lr=lr, alpha=alpha, eps=eps, momentum=momentum, weight_decay=weight_decay)


def _adagrad_norm(params: Iterable[torch.Tensor], lr: float, b0: float) -> Any:
    from workers.custom_optimizers import AdaGradNorm

    return AdaGradNorm(params, lr=lr, b0=b0)


def _signsgd(params: Iterable[torch.Tensor], lr: float, momentum: float, weight_decay: float) -> Any:
    import pytorch_optimizer as po

    return po.SignSGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, weight_decouple=True)


def _lion(params: Iterable[torch.Tensor], lr: float, beta1: float, beta2: float, weight_decay: float) -> Any:
    import pytorch_optimizer as po

    return po.Lion(params, lr=lr, betas=(beta1, beta2), weight_decay=weight_decay, weight_decouple=True)


def _adabelief(
    params: Iterable[torch.Tensor], lr: float, beta1: float, beta2: float, eps: float, weight_decay: float
) -> Any:
    import pytorch_optimizer as po

    return po.AdaBelief(params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay, weight_decouple=True)


def _lamb(
    params: Iterable[torch.Tensor], lr: float, beta1: float, beta2: float, eps: float, weight_decay: float
) -> Any:
    from workers.custom_optimizers import Lamb

    return Lamb(params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)


def _lars(
    params: Iterable[torch.Tensor], lr: float, momentum: float, trust_coefficient: float, weight_decay: float
) -> Any:
    import pytorch_optimizer as po

    return po.LARS(params, lr=lr, momentum=momentum, trust_coefficient=trust_coefficient, weight_decay=weight_decay)


def _muon(
    params: Iterable[torch.Tensor], lr: float, momentum: float, nesterov: bool, weight_decay: float,
    adjust_lr: str, adamw_lr: float, adamw_weight_decay: float,
) -> Any:  # fmt: skip
    from workers.custom_optimizers import muon_with_adamw

    return muon_with_adamw(
        list(params), lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
        adjust_lr=adjust_lr, adamw_lr=adamw_lr, adamw_weight_decay=adamw_weight_decay,
    )  # fmt: skip


def _schedulefree_adamw(
    params: Iterable[torch.Tensor], lr: float, beta1: float, beta2: float, eps: float, weight_decay: float,
    warmup_steps: int,
) -> Any:  # fmt: skip
    import pytorch_optimizer as po

    return po.ScheduleFreeAdamW(
        params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay, warmup_steps=warmup_steps
    )


def _adahessian(
    params: Iterable[torch.Tensor], lr: float, beta1: float, beta2: float, eps: float, weight_decay: float,
    hessian_power: float,
) -> Any:  # fmt: skip
    from workers.custom_optimizers import AdaHessian

    return AdaHessian(
        params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay, hessian_power=hessian_power
    )


def _frugal(
    params: Iterable[torch.Tensor], lr: float, density: float, update_gap: int, projection: str, state_free: str,
    free_lr_scale: float, beta1: float, beta2: float, eps: float,
) -> Any:  # fmt: skip
    from workers.custom_optimizers import Frugal

    return Frugal(
        params, lr=lr, density=density, update_gap=update_gap, projection=projection, state_free=state_free,
        free_lr_scale=free_lr_scale, betas=(beta1, beta2), eps=eps,
    )  # fmt: skip


def _local_replicas(method: str) -> Any:
    def build(
        params: Iterable[torch.Tensor], lr: float, weight_decay: float, replicas: int, inner_steps: int,
        outer_lr: float, outer_momentum: float, group_size: int = 2,
    ) -> Any:  # fmt: skip
        from workers.custom_optimizers import LocalReplicas

        return LocalReplicas(
            params, method, replicas=replicas, inner_steps=inner_steps, lr=lr, weight_decay=weight_decay,
            outer_lr=outer_lr, outer_momentum=outer_momentum, group_size=group_size,
        )  # fmt: skip

    return build


def _replica_params(outer_momentum: float, inner_steps: int) -> tuple[Param, ...]:
    return (
        Param("lr", "float", 1e-3, "peak LR of each replica's inner AdamW", gt=0.0, le=MAX_LR, log=True),
        _wd(0.0, "inner AdamW weight decay"),
        Param("replicas", "int", 4, "K: simulated workers (each loop step trains one, in turn)", ge=1, le=64),
        Param("inner_steps", "int", inner_steps, "H: inner steps per replica between outer steps", ge=1),
        Param("outer_lr", "float", 0.7, "α: outer learning rate", gt=0.0),
        Param("outer_momentum", "float", outer_momentum, "μ: outer momentum", ge=0.0, lt=1.0),
    )


def _onebit_adam(
    params: Iterable[torch.Tensor], lr: float, beta1: float, beta2: float, eps: float, workers: int, freeze_step: int
) -> Any:
    from workers.custom_optimizers import OneBitAdam

    return OneBitAdam(params, lr=lr, betas=(beta1, beta2), eps=eps, workers=workers, freeze_step=freeze_step)


def _lr(default: float) -> Param:
    return Param(
        "lr",
        "float",
        default,
        "peak learning rate (the schedule scales it)",
        gt=0.0,
        le=MAX_LR,
        log=True,
    )


def _wd(default: float, what: str) -> Param:
    return Param("weight_decay", "float", default, what, ge=0.0)


_BETA1 = Param("beta1", "float", 0.9, "first-moment decay β1", ge=0.0, lt=1.0)
_BETA2 = Param("beta2", "float", 0.999, "second-moment decay β2", ge=0.0, lt=1.0)
_EPS = Param("eps", "float", 1e-8, "added to the denominator for stability", gt=0.0, le=1.0, log=True)


def _check_sgd(hyper: dict[str, Any]) -> list[tuple[str, str]]:
    if hyper["nesterov"] and hyper["momentum"] <= 0:
        return [("nesterov", "Nesterov momentum needs momentum > 0")]
    return []


_ENTRIES: Sequence[Entry] = [
    Entry(
        "sgd",
        "Stochastic gradient descent with optional heavy-ball or Nesterov momentum; weight decay is coupled "
        "(added to the gradient).",
        "Polyak 1964; Sutskever et al., ICML 2013",
        (
            _lr(0.05),
            Param(
                "momentum",
                "float",
                0.9,
                "momentum factor μ (0 = plain SGD)",
                ge=0.0,
                lt=1.0,
            ),
            Param("nesterov", "bool", False, "use Nesterov momentum"),
            _wd(0.0, "L2 penalty added to the gradient"),
        ),
        _sgd,
        {"check": _check_sgd},
    ),
    Entry(
        "adam",
        "Adam: per-coordinate steps from bias-corrected first and second moment estimates; weight decay is "
        "coupled (L2).",
        "Kingma & Ba, ICLR 2015, arXiv:1412.6980",
        (_lr(1e-3), _BETA1, _BETA2, _EPS, _wd(0.0, "L2 penalty added to the gradient")),
        _adam,
    ),
    Entry(
        "adamw",
        "AdamW: Adam with decoupled weight decay (θ ← θ − ηλθ applied apart from the adaptive step).",
        "Loshchilov & Hutter, ICLR 2019, arXiv:1711.05101",
        (
            _lr(1e-3),
            _BETA1,
            _BETA2,
            _EPS,
            _wd(0.01, "decoupled weight decay λ (multiplied by the LR)"),
        ),
        _adamw,
    ),
    Entry(
        "adagrad",
        "AdaGrad: steps scaled by the root of the sum of all past squared gradients, per coordinate.",
        "Duchi, Hazan & Singer, JMLR 2011",
        (
            _lr(0.01),
            Param(
                "eps",
                "float",
                1e-10,
                "added to the denominator for stability",
                gt=0.0,
                le=1.0,
                log=True,
            ),
            _wd(0.0, "L2 penalty added to the gradient"),
            Param(
                "initial_accumulator_value",
                "float",
                0.0,
                "starting value of the sum of squares",
                ge=0.0,
            ),
        ),
        _adagrad,
    ),
    Entry(
        "adagrad-norm",
        "AdaGrad-Norm: one scalar step size for all parameters, η / √(b0² + Σ‖g‖²). Robust to the choice of η.",
        "Ward, Wu & Bottou, AdaGrad stepsizes, JMLR 2020, arXiv:1806.01811",
        (_lr(1.0), Param("b0", "float", 0.01, "initial accumulator b0 (> 0)", gt=0.0, le=1e3, log=True)),
        _adagrad_norm,
    ),
    Entry(
        "rmsprop",
        "RMSprop: steps divided by the root of an exponential average of squared gradients.",
        "Tieleman & Hinton, Coursera lecture 6.5, 2012",
        (
            _lr(1e-3),
            Param("alpha", "float", 0.99, "decay of the squared-gradient average", ge=0.0, lt=1.0),
            _EPS,
            Param("momentum", "float", 0.0, "momentum factor", ge=0.0, lt=1.0),
            _wd(0.0, "L2 penalty added to the gradient"),
        ),
        _rmsprop,
    ),
    Entry(
        "signsgd",
        "signSGD / Signum: step by the sign of the (momentum-averaged) gradient; momentum 0 is plain signSGD.",
        "Bernstein et al., signSGD, ICML 2018, arXiv:1802.04434",
        (
            _lr(1e-3),
            Param("momentum", "float", 0.9, "β of the gradient average (0 = signSGD, 0.9 = Signum)", ge=0.0, lt=1.0),
            _wd(0.0, "decoupled weight decay"),
        ),
        _signsgd,
    ),
    Entry(
        "lion",
        "LION: the sign of an interpolation of momentum and gradient; use an LR 3–10× smaller than AdamW's and "
        "a weight decay 3–10× larger.",
        "Chen et al., Symbolic Discovery of Optimization Algorithms, NeurIPS 2023, arXiv:2302.06675",
        (
            _lr(1e-4),
            Param("beta1", "float", 0.9, "interpolation for the update", ge=0.0, lt=1.0),
            Param("beta2", "float", 0.99, "momentum decay", ge=0.0, lt=1.0),
            _wd(0.0, "decoupled weight decay λ"),
        ),
        _lion,
    ),
    Entry(
        "adabelief",
        "AdaBelief: Adam whose denominator tracks the variance of the gradient around its average (the belief).",
        "Zhuang et al., AdaBelief, NeurIPS 2020, arXiv:2010.07468",
        (
            _lr(1e-3),
            _BETA1,
            _BETA2,
            Param("eps", "float", 1e-16, "added inside the belief average", gt=0.0, le=1.0, log=True),
            _wd(0.0, "decoupled weight decay"),
        ),
        _adabelief,
    ),
    Entry(
        "lamb",
        "LAMB: Adam's step rescaled per layer by the trust ratio ‖θ‖/‖update‖, for large batches. Convention: "
        "the paper's Algorithm 2 — both moments bias-corrected inside the update r, the decay λθ added to r before "
        "the ratio, so every tensor moves by exactly η·φ(‖θ‖) with φ clamping ‖θ‖ at 10 (pytorch-optimizer's "
        "default instead scales the step by 1/(1−β1^t) after the ratio: 10× at step 1).",
        "You et al., Large Batch Optimization for Deep Learning, ICLR 2020, arXiv:1904.00962",
        (
            _lr(1e-3),
            _BETA1,
            _BETA2,
            Param("eps", "float", 1e-6, "denominator stability", gt=0.0, le=1.0, log=True),
            _wd(0.01, "λ: decay added to the update r, inside the trust ratio"),
        ),
        _lamb,
    ),
    Entry(
        "lars",
        "LARS: momentum SGD with a per-layer trust ratio γ‖θ‖/(‖g‖ + λ‖θ‖) on weight matrices.",
        "You, Gitman & Ginsburg, Large Batch Training of CNNs, arXiv:1708.03888",
        (
            _lr(1.0),
            Param("momentum", "float", 0.9, "momentum factor", ge=0.0, lt=1.0),
            Param("trust_coefficient", "float", 1e-3, "γ, the trust coefficient", gt=0.0, le=1.0, log=True),
            _wd(0.0, "L2 penalty inside the trust ratio"),
        ),
        _lars,
    ),
    Entry(
        "muon",
        "Muon: momentum orthogonalised by Newton–Schulz on 2-D hidden weight matrices; the rest (biases, the "
        "output layer) on AdamW. One entry, two optimizers, one schedule.",
        "Jordan, Muon (blog, 2024); Liu et al., Muon is Scalable for LLM Training, arXiv:2502.16982",
        (
            Param(
                "lr", "float", 0.02, "Muon's peak learning rate (the schedule scales both)", gt=0.0, le=MAX_LR, log=True
            ),
            Param("momentum", "float", 0.95, "momentum μ", ge=0.0, lt=1.0),
            Param("nesterov", "bool", True, "Nesterov momentum"),
            _wd(0.0, "Muon's decoupled weight decay"),
            Param(
                "adjust_lr",
                "choice",
                "original",
                "shape scale: original √max(1, A/B), or match_rms_adamw 0.2√max(A, B)",
                choices=("original", "match_rms_adamw"),
            ),
            Param("adamw_lr", "float", 3e-4, "peak LR of the AdamW part", gt=0.0, le=MAX_LR, log=True),
            Param("adamw_weight_decay", "float", 0.0, "weight decay of the AdamW part", ge=0.0),
        ),
        _muon,
    ),
    Entry(
        "schedulefree-adamw",
        "Schedule-Free AdamW: no decay schedule needed; averages iterates instead. The loop switches the "
        "optimizer to eval mode (the averaged weights) for validation.",
        "Defazio et al., The Road Less Scheduled, NeurIPS 2024, arXiv:2405.15682",
        (
            _lr(2.5e-3),
            _BETA1,
            _BETA2,
            _EPS,
            _wd(0.0, "decoupled weight decay"),
            Param("warmup_steps", "int", 0, "the optimizer's own linear warm-up", ge=0),
        ),
        _schedulefree_adamw,
        {"train_eval": True},
    ),
    Entry(
        "frugal",
        "FRUGAL: Adam (with state) on a subspace holding `density` of the parameters, state-free signSGD or "
        "SGD on the rest; the subspace changes every update_gap steps. Optimizer memory scales with density. "
        "Convention: at a change, coordinates that stay in the subspace keep their moments and step count, new ones "
        "start from zero (the paper also discusses re-projecting), so density 1 is Adam for any run length.",
        "Zmushko, Beznosikov, Takáč & Horváth, FRUGAL, ICML 2025, arXiv:2411.07837",
        (
            _lr(1e-3),
            Param(
                "density",
                "float",
                0.25,
                "ρ: fraction of parameters with Adam state (1 = Adam, 0 = signSGD)",
                ge=0.0,
                le=1.0,
            ),
            Param(
                "update_gap",
                "int",
                200,
                "T: steps between subspace changes (coordinates that stay keep their moments)",
                ge=1,
            ),
            Param(
                "projection",
                "choice",
                "blockwise",
                "whole tensors in turn, or random coordinates",
                choices=("blockwise", "random"),
            ),
            Param("state_free", "choice", "signsgd", "update for the rest", choices=("signsgd", "sgd")),
            Param("free_lr_scale", "float", 1.0, "state-free LR = lr × this", gt=0.0),
            _BETA1,
            _BETA2,
            _EPS,
        ),
        _frugal,
    ),
    Entry(
        "onebit-adam",
        "1-bit Adam, simulated: the batch is split among K workers; after a warm-up of plain Adam the variance "
        "is frozen and workers exchange only 1-bit compressed momentum, with error feedback. ε defaults to 1e-3, "
        "not the paper's 1e-8: with the variance frozen, coordinates whose gradient was ~0 during warm-up (dead "
        "pixels, dead ReLUs) would otherwise take steps of the layer's RMS / ε.",
        "Tang et al., 1-bit Adam, ICML 2021, arXiv:2102.02888",
        (
            _lr(1e-3),
            _BETA1,
            _BETA2,
            Param("eps", "float", 1e-3, "added to √v̂*; see the description", gt=0.0, le=1.0, log=True),
            Param("workers", "int", 4, "K: simulated workers, each with its share of the batch", ge=1, le=64),
            Param("freeze_step", "int", 100, "warm-up steps of plain Adam before the variance freezes", ge=1),
        ),
        _onebit_adam,
        {"worker_grads": True},
    ),
    Entry(
        "diloco",
        "DiLoCo, simulated: K replicas train with their own AdamW for H steps each; then the average change "
        "is one outer Nesterov step on the shared weights, and every replica restarts from them.",
        "Douillard et al., DiLoCo: Distributed Low-Communication Training, arXiv:2311.08105",
        _replica_params(outer_momentum=0.9, inner_steps=50),
        _local_replicas("diloco"),
        {"train_eval": True},
    ),
    Entry(
        "noloco",
        "NoLoCo, simulated: like DiLoCo but without an all-reduce; at each outer step replicas average with one "
        "random partner (groups of group_size) through per-replica anchors and momentum.",
        "Kolehmainen et al., NoLoCo, arXiv:2506.10911",
        (
            *_replica_params(outer_momentum=0.5, inner_steps=50),
            Param("group_size", "int", 2, "n: replicas averaged together at each outer step", ge=1, le=64),
        ),
        _local_replicas("noloco"),
        {"train_eval": True},
    ),
    Entry(
        "adahessian",
        "AdaHessian: Adam whose second moment is the Hutchinson estimate of the Hessian diagonal (one "
        "Hessian-vector product per step: the loop keeps the backward graph). Convention: as in the paper's code, "
        "a convolution kernel's estimate is |D| averaged over its spatial taps (one curvature per channel pair); "
        "matrices and vectors keep theirs per coordinate.",
        "Yao et al., ADAHESSIAN, AAAI 2021, arXiv:2006.00719",
        (
            _lr(0.15),
            _BETA1,
            _BETA2,
            Param("eps", "float", 1e-4, "denominator stability", gt=0.0, le=1.0, log=True),
            _wd(0.0, "decoupled weight decay"),
            Param("hessian_power", "float", 1.0, "k in (D̄²)^(k/2)", gt=0.0, le=1.0),
        ),
        _adahessian,
        {"create_graph": True},
    ),
]

RULES = {
    "sgd": "b ← μb + g (g includes λθ);  θ ← θ − η·(g + μb if Nesterov else b)",
    "adam": "m ← β1·m + (1−β1)g;  v ← β2·v + (1−β2)g²;  θ ← θ − η·m̂/(√v̂ + ε)  (g includes λθ)",
    "adamw": "as Adam, then decoupled decay: θ ← θ − ηλθ − η·m̂/(√v̂ + ε)",
    "adagrad": "G ← G + g²;  θ ← θ − η·g/(√G + ε)",
    "adagrad-norm": "b² ← b² + ‖g‖²;  θ ← θ − η·g/b  (one scalar b for all parameters)",
    "rmsprop": "v ← α·v + (1−α)g²;  θ ← θ − η·g/(√v + ε)",
    "signsgd": "m ← β·m + (1−β)g;  θ ← θ(1 − ηλ) − η·sign(m)",
    "lion": "c ← β1·m + (1−β1)g;  θ ← θ(1 − ηλ) − η·sign(c);  m ← β2·m + (1−β2)g",
    "adabelief": "m as Adam;  s ← β2·s + (1−β2)(g − m)² + ε;  θ ← θ − η·m̂/(√ŝ + ε)",
    "lamb": "r = m̂/(√v̂ + ε) + λθ per tensor;  θ ← θ − η·(φ(‖θ‖)/‖r‖)·r  (trust ratio; φ clamps ‖θ‖ at 10)",
    "lars": "r = γ‖θ‖/(‖g‖ + λ‖θ‖) per weight matrix;  v ← μv + r(g + λθ);  θ ← θ − ηv",
    "muon": "B ← μB + G;  O ≈ UVᵀ of B by 5 Newton–Schulz steps;  W ← W − η·s·O  (hidden matrices; AdamW on the rest)",
    "schedulefree-adamw": "y = (1−β1)z + β1x;  z ← z − γ(g(y)/(√v̂ + ε) + λy);  x ← (1 − 1/t)x + z/t",
    "frugal": "Adam on P(g) (subspace, density ρ);  θ ← θ − η·P⁻¹Adam(Pg) − η_free·sign(g − P⁻¹Pg)",
    "onebit-adam": "warm-up: Adam;  then c_k = C(β1m + (1−β1)g_k + e_k), m = C(mean c_k + e_s), θ ← θ − ηm/(√v̂* + ε)",
    "diloco": "every H rounds: Δ = θ − mean_k θ_k;  m ← μm + Δ;  θ ← θ − α(Δ + μm);  θ_k ← θ",
    "noloco": "groups G of n: m_k ← μm_k + α·mean_G(φ − θ̃) + α(mean_G θ̃ − θ̃_k);  θ̃_k ← θ̃_k + m_k;  φ_k ← θ̃_k",
    "adahessian": "D = z ⊙ (Hz), z Rademacher; conv kernels: D̄ = mean of |D| over each kernel's spatial taps;  "
    "v ← β2·v + (1−β2)D̄²;  θ ← θ − η·m̂/(v̂^(k/2) + ε)",
}

OPTIMIZERS = Registry("optimizer", _ENTRIES, RULES)
