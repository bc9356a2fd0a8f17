"""DiLoCo and NoLoCo against the papers' outer steps computed by hand, with torch's AdamW as the inner optimizer.

Replica k minimises its own quadratic ½‖θ − c_k‖² (different data per replica), so replicas drift apart
between outer steps and the outer step has something to average."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workers.optimizers import OPTIMIZERS

K, H, ROUNDS = 2, 3, 2
TARGETS = [torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64), torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64)]
THETA0 = torch.tensor([0.3, 0.3, -0.3], dtype=torch.float64)
HYPER = {"lr": 0.05, "weight_decay": 0.0, "replicas": K, "inner_steps": H, "outer_lr": 0.7}


def ours(name: str, **extra: object) -> tuple[torch.Tensor, object]:
    theta = torch.nn.Parameter(THETA0.clone())
    opt = OPTIMIZERS[name].build([theta], **{**OPTIMIZERS[name].defaults, **HYPER, **extra})
    for t in range(K * H * ROUNDS):
        opt.zero_grad()  # type: ignore[attr-defined]
        (0.5 * (theta - TARGETS[t % K]).square().sum()).backward()  # step t trains replica t mod K
        opt.step()  # type: ignore[attr-defined]
    return theta, opt


def inner_round(replicas: list[torch.nn.Parameter], inner: list[torch.optim.AdamW]) -> None:
    for _ in range(H):
        for k in range(K):
            inner[k].zero_grad()
            (0.5 * (replicas[k] - TARGETS[k]).square().sum()).backward()
            inner[k].step()


def test_diloco_outer_nesterov_on_the_average_change() -> None:
    mu, alpha = 0.9, 0.7
    theta, m = THETA0.clone(), torch.zeros(3, dtype=torch.float64)
    replicas = [torch.nn.Parameter(THETA0.clone()) for _ in range(K)]
    inner = [torch.optim.AdamW([r], lr=0.05, weight_decay=0.0) for r in replicas]
    for _ in range(ROUNDS):
        inner_round(replicas, inner)
        delta = theta - torch.stack([r.detach() for r in replicas]).mean(0)
        m = mu * m + delta
        theta = theta - alpha * (delta + mu * m)
        for r in replicas:
            r.data.copy_(theta)
    got, opt = ours("diloco", outer_momentum=mu)
    assert torch.allclose(got.detach(), theta, atol=1e-10)  # replica 0 restarted from θ
    opt.eval()  # type: ignore[attr-defined]
    assert torch.allclose(got.detach(), theta, atol=1e-10)  # validation sees θ
    assert not torch.allclose(theta, THETA0)


def test_noloco_pairs_average_through_anchors_and_momentum() -> None:
    mu, alpha = 0.5, 0.7
    anchors = [THETA0.clone() for _ in range(K)]
    moms = [torch.zeros(3, dtype=torch.float64) for _ in range(K)]
    replicas = [torch.nn.Parameter(THETA0.clone()) for _ in range(K)]
    inner = [torch.optim.AdamW([r], lr=0.05, weight_decay=0.0) for r in replicas]
    for _ in range(ROUNDS):
        inner_round(replicas, inner)  # K = 2 with groups of 2: one group, whatever the shuffle
        progress = torch.stack([replicas[k].detach() - anchors[k] for k in range(K)]).mean(0)
        centre = torch.stack(anchors).mean(0)
        for k in range(K):
            moms[k] = mu * moms[k] + alpha * progress + alpha * (centre - anchors[k])
        for k in range(K):
            anchors[k] = anchors[k] + moms[k]
            replicas[k].data.copy_(anchors[k])
    got, opt = ours("noloco", outer_momentum=mu, group_size=2)
    assert torch.allclose(got.detach(), anchors[0], atol=1e-10)
    opt.eval()  # type: ignore[attr-defined]
    assert torch.allclose(got.detach(), torch.stack(anchors).mean(0), atol=1e-10)
    assert not torch.allclose(anchors[0], THETA0)


def test_noloco_without_an_all_reduce_anchors_of_different_pairs_differ() -> None:
    theta = torch.nn.Parameter(THETA0.clone())
    opt = OPTIMIZERS["noloco"].build([theta], **{**HYPER, "replicas": 4, "group_size": 2, "outer_momentum": 0.5})
    targets = [*TARGETS, -TARGETS[0], -TARGETS[1]]
    for t in range(4 * H):
        opt.zero_grad()
        (0.5 * (theta - targets[t % 4]).square().sum()).backward()
        opt.step()
    anchors = torch.stack([a[0] for a in opt.anchor])
    distinct = {tuple(np.round(a.numpy(), 12)) for a in anchors}
    assert len(distinct) == 2  # two pairs, each averaged within itself only
    assert opt.step_metrics()["replica_dispersion"].item() > 0


@pytest.mark.parametrize("name", ["diloco", "noloco"])
def test_state_dict_round_trip_resumes_identically(name: str) -> None:
    straight, _ = ours(name)
    theta = torch.nn.Parameter(THETA0.clone())
    hyper = {**OPTIMIZERS[name].defaults, **HYPER}
    opt = OPTIMIZERS[name].build([theta], **hyper)

    def steps(o: object, p: torch.nn.Parameter, start: int, stop: int) -> None:
        for t in range(start, stop):
            o.zero_grad()  # type: ignore[attr-defined]
            (0.5 * (p - TARGETS[t % K]).square().sum()).backward()
            o.step()  # type: ignore[attr-defined]

    half = K * H * ROUNDS // 2 + 1
    steps(opt, theta, 0, half)
    resumed = torch.nn.Parameter(theta.detach().clone())
    opt2 = OPTIMIZERS[name].build([resumed], **hyper)
    opt2.load_state_dict(opt.state_dict())
    steps(opt2, resumed, half, K * H * ROUNDS)
    assert torch.equal(resumed, straight)


def test_dispersion_is_zero_right_after_a_diloco_outer_step() -> None:
    _, opt = ours("diloco")
    assert opt.step_metrics()["replica_dispersion"].item() == pytest.approx(0.0, abs=1e-12)  # type: ignore[attr-defined]
    np.testing.assert_equal(opt.outer_steps, ROUNDS)  # type: ignore[attr-defined]
