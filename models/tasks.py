"""Task registry: what a run optimizes. Every dataset here is built offline (shipped with sklearn or generated).

A task's `build(seed=..., **params)` returns a `Problem`: the network (initialised from the run's seed), the
whole training and validation sets as tensors, and the loss. `extra["train_size"](**params)` tells the spec
how many training examples there are without building anything, so a batch larger than the set is refused
before a run is queued.

The train/validation split and the data itself are fixed (seed 0) so runs with different seeds differ only in
initialisation and batch order, and their validation numbers are comparable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workers.registry import Entry, Param, Registry

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

DATA_SEED = 0
VAL_FRACTION = 0.2


@dataclass
class Problem:
    model: nn.Module
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    classification: bool

    def to(self, device: torch.device) -> Problem:
        self.model.to(device)
        for name in ("x_train", "y_train", "x_val", "y_val"):
            setattr(self, name, getattr(self, name).to(device))
        return self


def _split_sizes(n: int) -> tuple[int, int]:
    n_val = int(n * VAL_FRACTION)
    return n - n_val, n_val


def _split(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    import numpy as np

    n_train, _ = _split_sizes(len(x))
    order = np.random.default_rng(DATA_SEED).permutation(len(x))
    train, val = order[:n_train], order[n_train:]
    return x[train], y[train], x[val], y[val]


def _mlp(sizes: Sequence[int]) -> nn.Module:
    from torch import nn

    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _classification(x: np.ndarray, y: np.ndarray, seed: int, hidden: int, n_classes: int) -> Problem:
    import torch
    from torch.nn import functional as F

    x_tr, y_tr, x_va, y_va = _split(x, y)
    torch.manual_seed(seed)
    model = _mlp([x.shape[1], hidden, hidden, n_classes])
    as_x = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    as_y = lambda a: torch.as_tensor(a, dtype=torch.long)  # noqa: E731
    return Problem(
        model,
        as_x(x_tr),
        as_y(y_tr),
        as_x(x_va),
        as_y(y_va),
        F.cross_entropy,
        classification=True,
    )


DIGITS_SIZE = 1797  # sklearn.datasets.load_digits(): 1,797 8×8 images, shipped inside the sklearn wheel


@lru_cache(maxsize=1)
def _digits() -> Any:
    """sklearn's digits, read once per process (a pack builds one model per member on the same data); the arrays
    are read-only, and every task computes new ones from them."""
    from sklearn.datasets import load_digits

    data = load_digits()
    for array in (data.data, data.images, data.target):
        array.flags.writeable = False
    return data


def digits_mlp(seed: int, hidden: int) -> Problem:
    data = _digits()
    return _classification(data.data / 16.0, data.target, seed, hidden, n_classes=10)


def digits_logreg(seed: int, weight_init_std: float) -> Problem:
    """Multinomial logistic regression on the digits: a convex problem, so every optimizer's endpoint is comparable."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    data = _digits()
    x_tr, y_tr, x_va, y_va = _split(data.data / 16.0, data.target)
    torch.manual_seed(seed)
    model = nn.Linear(64, 10)
    nn.init.normal_(model.weight, std=weight_init_std)
    nn.init.zeros_(model.bias)
    as_x = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    as_y = lambda a: torch.as_tensor(a, dtype=torch.long)  # noqa: E731
    return Problem(model, as_x(x_tr), as_y(y_tr), as_x(x_va), as_y(y_va), F.cross_entropy, classification=True)


def digits_cnn(seed: int, channels: int) -> Problem:
    """A small convolutional network on the 8×8 digits images (two 3×3 convolutions, then a linear head)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    data = _digits()
    x_tr, y_tr, x_va, y_va = _split(data.images[:, None] / 16.0, data.target)
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(),
        nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * channels * 16, 10),
    )  # fmt: skip
    as_x = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    as_y = lambda a: torch.as_tensor(a, dtype=torch.long)  # noqa: E731
    return Problem(model, as_x(x_tr), as_y(y_tr), as_x(x_va), as_y(y_va), F.cross_entropy, classification=True)


TEXT_PATH = Path(__file__).parent / "data" / "public_domain.txt"  # shipped with this package: see its sources below
TEXT_SOURCES = (
    "Lincoln, Gettysburg Address (1863); Shakespeare, Sonnets 18, 116, 130 (1609) and Hamlet III.i; Dickens, "
    "A Tale of Two Cities (1859); Austen, Pride and Prejudice (1813); the US Declaration of Independence (1776); "
    "Melville, Moby-Dick (1851); Carroll, Alice's Adventures in Wonderland (1865): openings, all public domain"
)


def _text_windows(context: int) -> int:
    n_train_chars = int(len(TEXT_PATH.read_text(encoding="utf-8")) * (1 - VAL_FRACTION))
    return n_train_chars - context


def charlm_transformer(seed: int, context: int, width: int, layers: int, heads: int) -> Problem:
    """A small causal transformer predicting the next character; every window of `context` characters of the
    training text is one example, and the loss is averaged over all its positions."""
    import torch
    from torch.nn import functional as F

    text = TEXT_PATH.read_text(encoding="utf-8")
    vocab = sorted(set(text))
    ids = torch.tensor([vocab.index(c) for c in text], dtype=torch.long)
    split = int(len(ids) * (1 - VAL_FRACTION))

    def windows(part: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.arange(len(part) - context)
        offsets = torch.arange(context + 1)
        block = part[starts[:, None] + offsets[None, :]]
        return block[:, :-1], block[:, 1:]

    x_tr, y_tr = windows(ids[:split])
    x_va, y_va = windows(ids[split:])
    torch.manual_seed(seed)
    model = _char_lm(len(vocab), context, width, layers, heads)

    def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))

    return Problem(model, x_tr, y_tr, x_va, y_va, loss_fn, classification=True)


MNIST1D_SIZE = 5000  # mnist1d's default: 4,000 training and 1,000 test sequences of length 40


@lru_cache(maxsize=1)
def _mnist1d() -> dict[str, Any]:
    """Generated offline from the templates inside the mnist1d package (about 2 s; cached per process)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = DATA_SEED
    return make_dataset(args)  # type: ignore[no-any-return]


def mnist1d_mlp(seed: int, hidden: int) -> Problem:
    import torch

    data = _mnist1d()
    torch.manual_seed(seed)
    model = _mlp([data["x"].shape[1], hidden, hidden, 10])
    from torch.nn import functional as F

    as_x = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    as_y = lambda a: torch.as_tensor(a, dtype=torch.long)  # noqa: E731
    x, y, xt, yt = data["x"], data["y"], data["x_test"], data["y_test"]
    return Problem(model, as_x(x), as_y(y), as_x(xt), as_y(yt), F.cross_entropy, classification=True)


def moons_mlp(seed: int, hidden: int, n_samples: int, noise: float) -> Problem:
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=n_samples, noise=noise, random_state=DATA_SEED)
    return _classification(x, y, seed, hidden, n_classes=2)


def quadratic(seed: int, dim: int, condition_number: float, n_samples: int, noise: float) -> Problem:
    """Least squares whose Hessian has eigenvalues log-spaced in [1/κ, 1]: an ill-conditioned quadratic.

    x = z · diag(√λ) with z ~ N(0, I), so E[xᵀx]/n = diag(λ); the loss ½·mean((x·w − y)²) has Hessian ≈ diag(λ)
    and curvature ratio ≈ κ. The optimum w* has unit entries, so the loss at 0 is about ½·Σλ.
    """
    import numpy as np
    import torch
    from torch import nn

    rng = np.random.default_rng(DATA_SEED)
    eig = np.logspace(-np.log10(condition_number), 0.0, dim)
    x = rng.standard_normal((n_samples, dim)) * np.sqrt(eig)
    y = x @ np.ones(dim) + noise * rng.standard_normal(n_samples)
    x_tr, y_tr, x_va, y_va = _split(x, y[:, None])
    torch.manual_seed(seed)
    model = nn.Linear(dim, 1, bias=False)

    def half_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 0.5 * torch.mean((pred - target) ** 2)

    t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    return Problem(model, t(x_tr), t(y_tr), t(x_va), t(y_va), half_mse, classification=False)


MAX_TASK_BYTES = 4 * 2**30  # the memory a task may take to build its data and model, whatever the worker has
QUADRATIC_BYTES = 24  # per value of x: the float64 draw, its scaled copy, the split copies, the float32 tensors


def _check_quadratic_memory(hyper: dict[str, Any]) -> list[tuple[str, str]]:
    """The other tasks' schemas bound their size; the quadratic's data is dim × n_samples values."""
    values = hyper["dim"] * hyper["n_samples"]
    if values * QUADRATIC_BYTES > MAX_TASK_BYTES:
        need = values * QUADRATIC_BYTES / 2**30
        return [
            (
                "n_samples",
                f"dim × n_samples = {values:,} values need about {need:,.0f} GiB of memory to build; at most "
                f"{MAX_TASK_BYTES / 2**30:g} GiB: lower n_samples or dim",
            )
        ]
    return []


def _check_heads(hyper: dict[str, Any]) -> list[tuple[str, str]]:
    if hyper["width"] % hyper["heads"]:
        return [("heads", f"must divide width ({hyper['width']}), got {hyper['heads']}")]
    return []


def _char_lm(vocab: int, context: int, width: int, layers: int, heads: int) -> nn.Module:
    """Token + position embeddings, pre-norm causal transformer blocks, a linear head. The embeddings and the
    head are marked `muon = False`: Muon is for hidden matrices only."""
    import torch
    from torch import nn

    class CharLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(vocab, width)
            self.position = nn.Parameter(torch.zeros(context, width))
            block = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
            self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(width)
            self.head = nn.Linear(width, vocab)
            self.mask: torch.Tensor
            self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(context), persistent=False)
            for p in (self.embed.weight, self.position, self.head.weight):
                p.muon = False  # type: ignore[attr-defined]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n = x.shape[1]
            h = self.embed(x) + self.position[:n]
            h = self.blocks(h, mask=self.mask[:n, :n], is_causal=True)
            return self.head(self.norm(h))  # type: ignore[no-any-return]

    return CharLM()


def _hidden(default: int) -> Param:
    return Param("hidden", "int", default, "width of the two hidden layers", ge=1, le=4096)


def _n_samples(default: int) -> Param:
    return Param(
        "n_samples",
        "int",
        default,
        "examples generated (80% train, 20% validation)",
        ge=10,
        le=1_000_000,
    )


_ENTRIES: Sequence[Entry] = [
    Entry(
        "digits-mlp",
        "Handwritten digits (sklearn's 8×8 digits, 1,797 images, 10 classes) with a two-hidden-layer ReLU MLP.",
        "Alpaydin & Kaynak, UCI Optical Recognition of Handwritten Digits, 1998",
        (_hidden(64),),
        digits_mlp,
        {"train_size": lambda **p: _split_sizes(DIGITS_SIZE)[0]},
    ),
    Entry(
        "moons-mlp",
        "Two interleaving half-moons (generated, two classes) with a small two-hidden-layer ReLU MLP.",
        "scikit-learn make_moons",
        (
            _hidden(32),
            _n_samples(1000),
            Param("noise", "float", 0.2, "std of the Gaussian noise", ge=0.0),
        ),
        moons_mlp,
        {"train_size": lambda **p: _split_sizes(p["n_samples"])[0]},
    ),
    Entry(
        "digits-logreg",
        "Multinomial logistic regression on the digits: convex, so optimizers can be compared on reaching the "
        "same optimum (good for teaching).",
        "Cox, The regression analysis of binary sequences, JRSS B 1958",
        (Param("weight_init_std", "float", 0.01, "std of the initial weights", ge=0.0),),
        digits_logreg,
        {"train_size": lambda **p: _split_sizes(DIGITS_SIZE)[0]},
    ),
    Entry(
        "digits-cnn",
        "A small CNN (two 3×3 convolutions, max-pool, linear head) on sklearn's 8×8 digits images.",
        "LeCun et al., Gradient-based learning applied to document recognition, 1998",
        (
            Param(
                "channels", "int", 8, "channels of the first convolution (the second has twice as many)", ge=1, le=256
            ),
        ),
        digits_cnn,
        {"train_size": lambda **p: _split_sizes(DIGITS_SIZE)[0]},
    ),
    Entry(
        "mnist1d-mlp",
        "MNIST-1D: 1-D sequences of length 40 generated from digit templates with shifts, noise and scaling; "
        "harder than digits for an MLP, yet trains in seconds.",
        "Greydanus & Kobak, Scaling Down Deep Learning with MNIST-1D, ICML 2024, arXiv:2011.14439",
        (_hidden(100),),
        mnist1d_mlp,
        {"train_size": lambda **p: _split_sizes(MNIST1D_SIZE)[0]},
    ),
    Entry(
        "charlm-transformer",
        "A small character-level transformer language model on public-domain English text shipped with Optimizer "
        "Lab (about 6.7 kB: Lincoln, Shakespeare, Dickens, Austen, Melville, Carroll): compare Muon, LION and AdamW "
        "on a transformer in minutes on a CPU. Accuracy is next-character accuracy.",
        "Vaswani et al., Attention Is All You Need, 2017; text: " + TEXT_SOURCES,
        (
            Param("context", "int", 64, "characters per example", ge=2, le=512),
            Param("width", "int", 64, "model width", ge=8, le=1024),
            Param("layers", "int", 2, "transformer blocks", ge=1, le=12),
            Param("heads", "int", 4, "attention heads (must divide width)", ge=1, le=16),
        ),
        charlm_transformer,
        # a pack would train it slower (bench/packed.py: 0.85x on a CPU): torch.vmap has no batching rule for the
        # fused attention and encoder-layer kernels, so it loops over the members
        {"train_size": lambda **p: _text_windows(p["context"]), "check": _check_heads, "packs": False},
    ),
    Entry(
        "quadratic",
        "An ill-conditioned quadratic: least squares with Hessian eigenvalues log-spaced in [1/κ, 1]. "
        "Shows why momentum and adaptive steps help when curvatures differ.",
        "Nesterov, Introductory Lectures on Convex Optimization, 2004 (condition number and GD rates)",
        (
            Param("dim", "int", 20, "number of parameters", ge=1, le=100_000),
            Param(
                "condition_number",
                "float",
                100.0,
                "κ = largest / smallest curvature",
                ge=1.0,
                le=1e12,
                log=True,
            ),
            _n_samples(1024),
            Param("noise", "float", 0.0, "std of the label noise", ge=0.0),
        ),
        quadratic,
        {"train_size": lambda **p: _split_sizes(p["n_samples"])[0], "check": _check_quadratic_memory},
    ),
]

TASKS = Registry("task", _ENTRIES)


def train_size(name: str, params: dict[str, Any]) -> int:
    size: int = TASKS[name].extra["train_size"](**params)
    return size
