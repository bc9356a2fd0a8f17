"""Checkpoints and resume in the training loop on its own: a run stopped (or lost) after a checkpoint and resumed
from it logs exactly what the same run logs uninterrupted (same seed, CPU), for every optimizer and for the
schedules and batch policies that keep state of their own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from workers.settings import get_settings
from workers.spec import parse_spec
from workers.training import ListSink, load_state, run

CLOCKS = {"step_time", "wall_time"}  # measured, not computed: they differ between any two runs
STEPS = 60


class CheckpointSink(ListSink):
    def __init__(self, stop_after_rows: int | None = None) -> None:
        super().__init__(stop_after_rows=stop_after_rows)
        self.checkpoints: dict[int, bytes] = {}

    def save_checkpoint(self, step: int, blob: bytes) -> None:
        self.checkpoints[step] = blob


@pytest.fixture(autouse=True)
def deterministic_flushes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Flush every 7 steps (never by time) and checkpoint every 20: the same points on any machine."""
    monkeypatch.setenv("OPTLAB_FLUSH_STEPS", "7")
    monkeypatch.setenv("OPTLAB_FLUSH_SECONDS", "1e9")
    monkeypatch.setenv("OPTLAB_CHECKPOINT_STEPS", "20")
    monkeypatch.setenv("OPTLAB_CHECKPOINT_SECONDS", "0")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def values(rows: list[tuple[int, str, float]]) -> dict[tuple[int, str], float]:
    return {(step, name): value for step, name, value in rows if name not in CLOCKS}


CASES = [
    {"optimizer": {"name": "adamw", "lr": 3e-3}, "schedule": {"name": "warmup-cosine", "warmup_steps": 10}},
    {"optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True}, "schedule": "step"},
    {"optimizer": "muon"},
    {"optimizer": "lamb"},
    {"optimizer": {"name": "frugal", "lr": 3e-3, "density": 0.3, "update_gap": 15, "projection": "random"}},
    {"optimizer": {"name": "onebit-adam", "lr": 3e-3, "freeze_step": 25}},
    {"optimizer": {"name": "diloco", "lr": 3e-3, "replicas": 2, "inner_steps": 9}},
    {"optimizer": {"name": "noloco", "lr": 3e-3, "replicas": 3, "inner_steps": 8}},
    {"optimizer": {"name": "adahessian", "lr": 0.15}},  # Hutchinson draws from the global RNG
    {"optimizer": {"name": "schedulefree-adamw", "lr": 3e-3}},
    {"optimizer": {"name": "sgd", "lr": 0.01}, "schedule": {"name": "hypergradient"}},  # an LR that learns
    {"optimizer": {"name": "adam", "lr": 1e-3}, "batch": {"name": "adaptive", "size": 16, "test_interval": 5}},
    {"optimizer": {"name": "adam", "lr": 1e-3}, "batch": {"name": "linear", "size": 16}},
    {"optimizer": {"name": "adamw", "lr": 1e-3}, "task": {"name": "digits-cnn", "channels": 4}},
]


def spec_for(case: dict, steps: int = STEPS):  # type: ignore[no-untyped-def]
    data = {"task": "digits-mlp", "steps": steps, "eval_every": 10, "seed": 3, "batch": {"size": 32}, **case}
    return parse_spec(data)


@pytest.mark.parametrize(
    "case",
    CASES,
    ids=lambda c: (
        f"{c['optimizer'] if isinstance(c['optimizer'], str) else c['optimizer']['name']}-{c.get('schedule', c.get('batch', c.get('task', '')))}"
    ),
)
def test_resumed_run_logs_what_an_uninterrupted_run_logs(case: dict) -> None:
    spec = spec_for(case)
    whole = CheckpointSink()
    assert run(spec, whole).status == "completed"
    assert sorted(whole.checkpoints) == [22, 43]  # the first flush 20 steps after the last (flushes: 1, 8, 15, ...)

    # A worker lost after its first checkpoint: the next resumes from it; the steps after it are recomputed.
    first = min(whole.checkpoints)
    resumed = CheckpointSink()
    assert run(spec, resumed, resume=whole.checkpoints[first]).status == "completed"
    assert min(step for step, _, _ in resumed.rows) == first + 1  # nothing before the checkpoint is redone
    expected = values(whole.rows)
    got = {k: v for k, v in values(whole.rows).items() if k[0] <= first} | values(resumed.rows)
    assert got.keys() == expected.keys()
    mismatched = [k for k in expected if not (expected[k] == got[k] or abs(expected[k] - got[k]) <= 1e-6 * max(1.0, abs(expected[k])))]  # fmt: skip
    assert not mismatched, mismatched[:10]


def test_a_stop_hands_back_a_checkpoint_of_the_step_it_stopped_at() -> None:
    """A worker shutting down (SIGTERM) stops at its next flush and checkpoints there: the next one goes on."""
    spec = spec_for({"optimizer": {"name": "adamw", "lr": 3e-3}}, steps=40)
    whole = CheckpointSink()
    run(spec, whole)
    stopped = CheckpointSink(stop_after_rows=1)  # asks to stop at the first flush after a row arrived
    outcome = run(spec, stopped)
    assert outcome.status == "cancelled" and outcome.steps == 1 and list(stopped.checkpoints) == [1]
    rest = CheckpointSink()
    assert run(spec, rest, resume=stopped.checkpoints[1]).status == "completed"
    got = values(stopped.rows) | values(rest.rows)
    assert got == pytest.approx(values(whole.rows), rel=1e-6, abs=1e-9)
    # the clock goes on from the checkpoint's, not from 0
    assert min(v for s, m, v in rest.rows if m == "wall_time") >= max(v for s, m, v in stopped.rows if m == "wall_time")


def test_a_checkpoint_is_plain_data() -> None:
    """Loaded with torch.load(weights_only=True): tensors, numbers and strings, no pickled objects."""
    spec = spec_for({"optimizer": "adamw"}, steps=25)
    sink = CheckpointSink()
    run(spec, sink)
    state = load_state(sink.checkpoints[22])
    assert state["counters"]["step"] == 22 and state["batches"]["position"] > 0


def test_checkpoint_store_replaces_atomically_and_leaves_no_temporary_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from workers.checkpoints import CheckpointStore

    store = CheckpointStore(str(tmp_path / "ckpt"))
    assert store.load(7) is None
    store.save(7, b"first")
    store.save(7, b"second")
    assert store.load(7) == b"second"
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["run-7.pt"]  # the temporary file was renamed
    store.delete(7)
    store.delete(7)  # twice is fine
    assert store.load(7) is None


def test_checkpoint_store_takes_an_fsspec_url() -> None:
    """An object store through fsspec (here its in-memory filesystem; s3://, gs://... with their packages)."""
    from workers.checkpoints import CheckpointStore

    store = CheckpointStore("memory://optlab-test/checkpoints")
    assert store.remote and store.load(3) is None
    store.save(3, b"state")
    assert store.load(3) == b"state"
    store.delete(3)
    assert store.load(3) is None
