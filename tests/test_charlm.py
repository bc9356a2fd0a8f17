"""The character-level transformer task: shipped public-domain text, next-character targets, Muon's split."""

from __future__ import annotations

import pytest
import torch

from models.tasks import TASKS, TEXT_PATH, train_size
from workers.custom_optimizers import muon_params
from workers.spec import SpecError, parse_spec


def test_text_ships_with_the_package_and_windows_predict_the_next_character() -> None:
    text = TEXT_PATH.read_text(encoding="utf-8")
    assert text.startswith("Four score and seven years ago") and len(text) > 5000
    problem = TASKS["charlm-transformer"].build(seed=0, context=16, width=32, layers=1, heads=4)
    assert problem.x_train.shape[1] == 16 and torch.equal(problem.x_train[1:, -1], problem.y_train[:-1, -1])
    assert torch.equal(problem.x_train[0, 1:], problem.y_train[0, :-1])  # targets are the inputs shifted by one
    assert len(problem.x_train) == train_size("charlm-transformer", {"context": 16})


def test_the_model_is_causal() -> None:
    """Changing a later character never changes the predictions for earlier positions."""
    problem = TASKS["charlm-transformer"].build(seed=0, context=16, width=32, layers=2, heads=4)
    problem.model.eval()
    x = problem.x_train[:1].clone()
    before = problem.model(x)
    x[0, 10] = (x[0, 10] + 1) % 20
    after = problem.model(x)
    assert torch.allclose(before[0, :10], after[0, :10], atol=1e-5)
    assert not torch.allclose(before[0, 10:], after[0, 10:], atol=1e-5)


def test_muon_gets_hidden_matrices_and_adamw_the_embeddings_and_head() -> None:
    model = TASKS["charlm-transformer"].build(seed=0, context=16, width=32, layers=2, heads=4).model
    hidden, rest = muon_params(list(model.parameters()))
    assert len(hidden) == 2 * 4  # per block: attention in/out projections, two feed-forward matrices
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in rest} >= {"embed.weight", "position", "head.weight"}


def test_heads_must_divide_width() -> None:
    with pytest.raises(SpecError, match=r"task\.heads: must divide width"):
        parse_spec({"task": {"name": "charlm-transformer", "width": 30, "heads": 4}, "optimizer": "adamw"})
