"""`python -m app.cli --server URL …` against a real API server (`python -m app.api`, uvicorn, logins on) and a
real worker: the same output and exit codes as on the database directly; and `make run`'s launcher serving the
API beside the UI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
import pytest

from app.accounts import new_token
from tests.conftest import ROOT, Stack, free_port, http_ok, wait_for
from tests.test_cli import GOOD
from tests.test_queue import finished, running_with_progress


@dataclass
class Server:
    url: str
    stack: Stack
    tokens: dict[str, str]

    def cli(self, who: str | None, *args: str, **kwargs: str | float) -> subprocess.CompletedProcess[str]:
        """The CLI as `who` (a name in `tokens`, a token itself, or None for no token at all). XDG_CONFIG_HOME
        points at an empty folder, so no token file of the machine's user is read."""
        token = self.tokens.get(who, who) if who else ""
        env = {"OPTLAB_TOKEN": token, "XDG_CONFIG_HOME": str(self.stack.tmp / "config")}
        stdin, timeout = kwargs.pop("stdin", None), kwargs.pop("timeout", 180)
        return self.stack.cli("--server", self.url, *args, stdin=stdin, timeout=timeout, **env)  # type: ignore[arg-type]


@pytest.fixture
def server(stack: Stack) -> Iterator[Server]:
    store = stack.store
    tokens = {}
    for name, role in (("alice", "member"), ("bob", "member")):
        tokens[name] = new_token(store, store.create_user(name, role), "test")[1]
    port = free_port()
    log = open(stack.tmp / "api.log", "w")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "app.api", "--port", str(port)], cwd=ROOT, env={**stack.env, "OPTLAB_AUTH": "1"},
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http_ok(f"{url}/api/v1/health") or process.poll() is not None, 120, "the API server")
        assert process.poll() is None, (stack.tmp / "api.log").read_text()
        yield Server(url, stack, tokens)
    finally:
        process.terminate()
        process.wait(30)
        log.close()


@pytest.mark.live_worker
def test_submit_wait_status_export_and_cancel_through_the_server(server: Server, worker) -> None:  # type: ignore[no-untyped-def]
    spec = server.stack.tmp / "run.yaml"
    spec.write_text(GOOD)
    result = server.cli("alice", "submit", str(spec), "--wait", "--timeout", "120")
    assert result.returncode == 0, result.stderr
    run_id = int(result.stdout.strip())
    assert f"run {run_id} completed" in result.stderr
    run = server.stack.store.get_run(run_id)
    assert run is not None and run.owner_id == server.stack.store.get_user(name="alice").id  # type: ignore[union-attr]

    status = server.cli("bob", "status", str(run_id))  # anyone may read
    assert status.returncode == 0 and "completed" in status.stdout and "cli-run" in status.stdout
    listed = server.cli("bob", "status")
    assert listed.returncode == 0 and f"{run_id:>5}  completed" in listed.stdout

    out = server.stack.tmp / "runs.csv"
    exported = server.cli("bob", "export", "--run", str(run_id), "-o", str(out))
    assert exported.returncode == 0, exported.stderr
    assert f"wrote 120 rows for 1 run(s) to {out}" in exported.stdout
    frame = pd.read_csv(out)
    assert len(frame) == 120 and set(frame.run_id) == {run_id} and frame.loss.notna().all()
    missing = server.cli("bob", "export", "--run", "999", "-o", str(out))
    assert missing.returncode == 2 and "error: --run: no run 999" in missing.stderr

    submitted = server.cli("alice", "submit", "-", stdin="task: digits-mlp\noptimizer: adam\nsteps: 100000\n")
    long_id = int(submitted.stdout)
    running_with_progress(server.stack, long_id)
    refused = server.cli("bob", "cancel", str(long_id))  # not bob's run
    assert refused.returncode == 2 and "error: not allowed: bob cannot cancel this" in refused.stderr
    assert server.stack.store.get_run(long_id).status == "running"  # type: ignore[union-attr]
    cancelled = server.cli("alice", "cancel", str(long_id))
    assert cancelled.returncode == 0 and "cancel requested" in cancelled.stdout
    assert finished(server.stack, long_id) == "cancelled"
    waited = server.cli("alice", "status", str(long_id))
    assert waited.returncode == 0 and "cancelled" in waited.stdout


def test_refused_tokens_exit_2_and_queue_nothing(server: Server) -> None:
    spec = server.stack.tmp / "run.yaml"
    spec.write_text(GOOD)
    for who in (None, "olab_not-a-token", "not even the format"):
        result = server.cli(who, "submit", str(spec))
        assert result.returncode == 2, (who, result.stderr)
        assert result.stderr.startswith("error: token: ") and result.stdout == ""
    made = server.cli("alice", "token", "create", "laptop")  # alice's own, through the API
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert server.cli(token, "status").returncode == 0
    token_id = next(t.id for t in server.stack.store.list_tokens(server.stack.store.get_user(name="alice").id)  # type: ignore[union-attr]
                    if t.name == "laptop")  # fmt: skip
    assert server.cli("bob", "token", "revoke", str(token_id)).returncode == 2  # not bob's to revoke
    assert server.cli("alice", "token", "revoke", str(token_id)).returncode == 0
    revoked = server.cli(token, "status")
    assert revoked.returncode == 2 and "revoked" in revoked.stderr
    assert server.stack.store.list_runs() == []


def test_bad_input_through_the_server_is_reported_like_locally(server: Server) -> None:
    bad = server.stack.tmp / "bad.yaml"
    bad.write_text("task: digits-mlp\noptimizer: {name: adamw, lr: -1}\n")
    result = server.cli("alice", "submit", str(bad))
    assert result.returncode == 2
    assert "error: optimizer.lr: Input should be greater than 0 (got -1)" in result.stderr
    assert "nothing was queued" in result.stderr and result.stdout == ""
    assert server.cli("alice", "submit", str(server.stack.tmp / "nope.yaml")).returncode == 2
    unknown = server.cli("alice", "status", "12345")
    assert unknown.returncode == 2 and "error: run_id: no run 12345" in unknown.stderr
    sweep = "name: s\nbase: {task: moons-mlp, optimizer: sgd, steps: 20}\ngrid: {optimizer.lr: [0.01, 0.1]}\n"
    plan = server.cli("alice", "sweep", "-", "--dry-run", stdin=sweep)
    assert plan.returncode == 0 and plan.stdout.split("\n")[:2] == ["s [lr=0.01]", "s [lr=0.1]"]
    assert server.stack.store.list_runs() == []
    assert server.cli("alice", "user", "list").returncode == 2  # accounts are managed on the server itself
    queued = server.cli("alice", "sweep", "-", stdin=sweep)
    assert queued.returncode == 0 and "2 runs queued" in queued.stderr, queued.stderr
    alice = server.stack.store.get_user(name="alice")
    assert {r.owner_id for r in server.stack.store.list_runs(sweep_id=int(queued.stdout))} == {alice.id}  # type: ignore[union-attr]


def test_a_first_token_with_a_password(server: Server) -> None:
    from app.accounts import hash_password

    bob = server.stack.store.get_user(name="bob")
    assert bob is not None
    server.stack.store.update_user(bob.id, password_hash=hash_password("a long password"))
    wrong = server.cli(None, "token", "create", "cli", "--login", "bob", "--password-stdin", stdin="nope\n")
    assert wrong.returncode == 2 and "error: --login: wrong name or password" in wrong.stderr
    made = server.cli(None, "token", "create", "cli", "--login", "bob", "--password-stdin", "--save",
                      stdin="a long password\n")  # fmt: skip
    assert made.returncode == 0, made.stderr
    saved = server.stack.tmp / "config" / "optlab" / "token"
    assert saved.read_text().strip() == made.stdout.strip() and saved.stat().st_mode & 0o077 == 0
    listed = server.cli(None, "token", "list")  # with the saved token
    assert listed.returncode == 0 and " cli " in listed.stdout


def test_the_token_file_and_an_unreachable_server(server: Server) -> None:
    config = server.stack.tmp / "config" / "optlab"
    config.mkdir(parents=True)
    (config / "token").write_text(server.tokens["bob"] + "\n")
    assert server.cli(None, "status").stdout.startswith("no runs yet")  # the file's token: bob
    down = server.stack.cli("--server", f"http://127.0.0.1:{free_port()}", "status", OPTLAB_TOKEN="olab_x")
    assert down.returncode == 1 and "error: server: cannot reach" in down.stderr


def test_local_token_commands(stack: Stack) -> None:
    stack.store.create_user("carol", "viewer")
    made = stack.cli("token", "create", "ci", "--user", "carol", "--expires-days", "7")
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().startswith("olab_") and "shown this once" in made.stderr
    listed = stack.cli("token", "list", "--user", "carol")
    assert " ci " in listed.stdout and made.stdout.strip() not in listed.stdout
    token_id = listed.stdout.split()[0]
    assert stack.cli("token", "revoke", token_id, "--user", "carol").returncode == 0
    assert stack.cli("token", "revoke", token_id, "--user", "carol").returncode == 2
    assert stack.cli("token", "create", "--user", "carol").returncode == 2  # needs a name
    assert stack.cli("token", "list", "--user", "nobody").returncode == 2


@pytest.mark.live_worker
def test_the_launcher_serves_the_api_beside_the_ui(stack: Stack) -> None:
    """`python -m app.serve` (what `make run` runs) starts the API on its own port, prints its URL, and stops it on
    Ctrl-C. (tests/test_run_command.py drives `make run` itself.)"""
    ui_port, api_port = free_port(), free_port()
    log_path = stack.tmp / "serve.log"
    with open(log_path, "w") as log:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "app.serve", "--workers", "0", "--port", str(ui_port)], cwd=ROOT,
            env={**stack.env, "OPTLAB_API_PORT": str(api_port)}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_for(lambda: "Optimizer Lab is up" in log_path.read_text() or launcher.poll() is not None, 120, "serve")
        assert launcher.poll() is None, log_path.read_text()
        assert f"API: http://127.0.0.1:{api_port}/api/v1" in log_path.read_text()
        wait_for(lambda: http_ok(f"http://127.0.0.1:{api_port}/api/v1/health"), 120, "the API")
        assert http_ok(f"http://127.0.0.1:{api_port}/openapi.json")
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGINT)
        launcher.wait(60)
    assert not http_ok(f"http://127.0.0.1:{api_port}/api/v1/health")


def test_the_launcher_keeps_the_ui_when_the_api_port_is_taken() -> None:
    import socket

    from app.serve import port_free

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert not port_free("127.0.0.1", taken.getsockname()[1])
    assert port_free("127.0.0.1", free_port())
