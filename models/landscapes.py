"""2-D test functions for the Playground: one registry entry each, with a description, its source, defaults and a
parameter schema, like every other registry. `build(**params)` returns a `Landscape`.

Each function is written in torch so the real optimizers (workers/optimizers.py) step on it through autograd,
exactly as they step on a network. Any of them becomes stochastic with the Playground's gradient noise σ (each
step's gradient plus σ·ξ, ξ ~ N(0, I)), which stands in for a mini-batch gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from workers.registry import Entry, Param, Registry

Fn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, y) → f, elementwise: works on grids too
Grad = Callable[[float, float], tuple[float, float]]  # (x, y) → ∇f, by hand: ~50× cheaper than autograd here


@dataclass(frozen=True)
class Landscape:
    fn: Fn
    grad: Grad
    start: tuple[float, float]
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    minimum: tuple[float, float] | None  # a global minimum, drawn as a star; None when unbounded
    log_contours: bool = False  # contour levels on a log scale (steep valleys)

    def __call__(self, point: torch.Tensor) -> torch.Tensor:
        return self.fn(point[..., 0], point[..., 1])

    def grid(self, n: int = 120) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xs = torch.linspace(*self.x_range, n, dtype=torch.float64)
        ys = torch.linspace(*self.y_range, n, dtype=torch.float64)
        gx, gy = torch.meshgrid(xs, ys, indexing="xy")
        return xs, ys, self.fn(gx, gy)


def rosenbrock(a: float, b: float) -> Landscape:
    def grad(x: float, y: float) -> tuple[float, float]:
        return -2 * (a - x) - 4 * b * x * (y - x * x), 2 * b * (y - x * x)

    return Landscape(
        lambda x, y: (a - x) ** 2 + b * (y - x**2) ** 2,
        grad,
        (-1.5, 2.0),
        (-2.0, 2.0),
        (-1.0, 3.0),
        (a, a * a),
        log_contours=True,
    )


def beale() -> Landscape:
    def fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2

    def grad(x: float, y: float) -> tuple[float, float]:
        t1, t2, t3 = 1.5 - x + x * y, 2.25 - x + x * y * y, 2.625 - x + x * y**3
        return (
            2 * t1 * (y - 1) + 2 * t2 * (y * y - 1) + 2 * t3 * (y**3 - 1),
            2 * t1 * x + 4 * t2 * x * y + 6 * t3 * x * y * y,
        )

    return Landscape(fn, grad, (1.0, 1.4), (-4.5, 4.5), (-4.5, 4.5), (3.0, 0.5), log_contours=True)


def rastrigin(amplitude: float) -> Landscape:
    def fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ripple = torch.cos(2 * math.pi * x) + torch.cos(2 * math.pi * y)
        return 2 * amplitude + x**2 + y**2 - amplitude * ripple

    def grad(x: float, y: float) -> tuple[float, float]:
        k = 2 * math.pi * amplitude
        return 2 * x + k * math.sin(2 * math.pi * x), 2 * y + k * math.sin(2 * math.pi * y)

    return Landscape(fn, grad, (2.3, 1.8), (-5.12, 5.12), (-5.12, 5.12), (0.0, 0.0))


def saddle(quartic: float) -> Landscape:
    """x² − y² + c·y⁴: a saddle at the origin, minima at y = ±1/√(2c)."""
    minimum = (0.0, 1 / math.sqrt(2 * quartic)) if quartic > 0 else None
    return Landscape(
        lambda x, y: x**2 - y**2 + quartic * y**4,
        lambda x, y: (2 * x, -2 * y + 4 * quartic * y**3),
        (1.5, 1e-3),
        (-2.0, 2.0),
        (-2.0, 2.0),
        minimum,
    )


def quadratic(condition_number: float) -> Landscape:
    """½(x²/κ + y²): curvatures 1/κ and 1, so the step that is stable across y (< 2) crawls along x."""
    return Landscape(
        lambda x, y: 0.5 * (x**2 / condition_number + y**2),
        lambda x, y: (x / condition_number, y),
        (-4.5, 1.5),
        (-5.0, 5.0),
        (-2.0, 2.0),
        (0.0, 0.0),
    )


LANDSCAPES = Registry(
    "landscape",
    [
        Entry(
            "quadratic",
            "An ill-conditioned quadratic ½(x²/κ + y²): gradient descent zig-zags across the steep "
            "direction and crawls along the shallow one; momentum fixes it.",
            'Goh, "Why Momentum Really Works", Distill 2017',
            (Param("condition_number", "float", 25.0, "κ: the ratio of the two curvatures", ge=1.0, le=1e4, log=True),),
            quadratic,
        ),
        Entry(
            "rosenbrock",
            "Rosenbrock's banana: a curved, flat-bottomed valley to the minimum at (a, a²).",
            "Rosenbrock, The Computer Journal 3(3), 1960",
            (
                Param("a", "float", 1.0, ge=-2.0, le=2.0),
                Param("b", "float", 100.0, "valley steepness", gt=0.0, le=1000.0),
            ),
            rosenbrock,
        ),
        Entry(
            "beale",
            "Beale's function: flat plateaus and sharp ridges; minimum at (3, 0.5).",
            "Beale, On an iterative method for finding a local minimum, 1958",
            (),
            beale,
        ),
        Entry(
            "rastrigin",
            "Rastrigin's function: a bowl covered in local minima; minimum at the origin.",
            "Rastrigin, Systems of extremal control, 1974",
            (Param("amplitude", "float", 10.0, "height of the ripples", ge=0.0, le=50.0),),
            rastrigin,
        ),
        Entry(
            "saddle",
            "A saddle x² − y² + c·y⁴ started almost on the ridge: plain gradient descent lingers, "
            "sign- and Adam-like steps escape at once.",
            "Dauphin et al., Identifying and attacking the saddle point problem, NeurIPS 2014",
            (Param("quartic", "float", 0.25, "c: how far away the minima sit (0: unbounded below)", ge=0.0, le=10.0),),
            saddle,
        ),
    ],
)
