"""The cheap per-step capture of gradient, update and parameter norms.

Per-step capture must cost almost nothing next to a small model's step (see bench/overhead.py). The trick:
the model's parameters and gradients are re-pointed at two flat buffers, so each global norm is one tensor
op instead of one per parameter, and the norms stay on the device until the loop flushes (one host copy per
flush, never one per step).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


class FlatParams:
    """Point every parameter and its gradient at one flat buffer each, so norms are single ops.

    Autograd accumulates into an existing `.grad` in place (this is what DDP's gradient_as_bucket_view relies
    on), so as long as gradients are zeroed with `zero_grad()` here rather than set to None, every backward
    writes straight into `self.grad`. With `flat_grads=False` (optimizers that need the backward graph, such
    as AdaHessian, whose `.grad` must stay connected to it) gradients are left alone and reduced per tensor.
    """

    def __init__(self, params: Sequence[torch.nn.Parameter], flat_grads: bool = True) -> None:
        self.params = [p for p in params if p.requires_grad]
        first = self.params[0]
        self.numel = sum(p.numel() for p in self.params)
        self.data = torch.empty(self.numel, dtype=first.dtype, device=first.device)
        self.grad = torch.zeros_like(self.data)
        self.previous = torch.empty_like(self.data)
        offset = 0
        for p in self.params:
            n = p.numel()
            self.data[offset : offset + n].copy_(p.detach().reshape(-1))
            p.data = self.data[offset : offset + n].view_as(p)
            p.grad = self.grad[offset : offset + n].view_as(p)
            offset += n
        self.sqrt_d = math.sqrt(self.numel)
        self.flat_grads = flat_grads
        if not flat_grads:
            for p in self.params:
                p.grad = None
        self._pointers = [p.data_ptr() for p in self.params]

    def zero_grad(self) -> None:
        if self.flat_grads:
            self.grad.zero_()
        else:
            for p in self.params:
                p.grad = None

    @torch.no_grad()
    def grad_norms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(‖g‖₂, ‖g‖₁) of the whole gradient, as 0-d tensors on the device."""
        if self.flat_grads:
            return torch.linalg.vector_norm(self.grad), torch.linalg.vector_norm(self.grad, 1)
        grads = [p.grad.detach() for p in self.params if p.grad is not None]
        l2 = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        return l2, torch.stack(torch._foreach_norm(grads, 1)).sum()

    def check_intact(self) -> None:
        """An optimizer that re-allocates parameters (instead of updating them in place) would silently stop
        training the flat buffer's copy: refuse it loudly."""
        if [p.data_ptr() for p in self.params] != self._pointers:
            raise RuntimeError("the optimizer replaced parameter storage instead of updating it in place")

    @torch.no_grad()
    def remember(self) -> None:
        """Keep θ before the step, to measure the update after it."""
        self.previous.copy_(self.data)

    @torch.no_grad()
    def update_and_param_norms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(‖θ_new − θ_old‖₂, ‖θ_new‖₂), as 0-d tensors on the device."""
        torch.sub(self.data, self.previous, out=self.previous)
        return torch.linalg.vector_norm(self.previous), torch.linalg.vector_norm(self.data)
