"""Regenerate docs/live.png (the README's screenshot): the whole product on private ports, three runs, the Live page.

Run: `make screenshot` (needs Debian's chromium at /usr/bin/chromium).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import CHROMIUM, CHROMIUM_ARGS, free_port, wait_for  # noqa: E402

RUNS = [
    "name: adamw-warmup-cosine\ntask: digits-mlp\noptimizer: {name: adamw, lr: 0.003}\n"
    "schedule: {name: warmup-cosine, warmup_steps: 300}\nsteps: 6000\neval_every: 200\n",
    "name: sgd-momentum-step\ntask: digits-mlp\noptimizer: {name: sgd, lr: 0.05, momentum: 0.9}\n"
    "schedule: {name: step, step_size: 2000, gamma: 0.3}\nsteps: 6000\neval_every: 200\n",
]


def main() -> None:
    from playwright.sync_api import sync_playwright

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "OPTLAB_PORT": str(port), "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
               "DATABASE_URL": f"sqlite:///{tmp}/lab.db"}  # fmt: skip
        serve = subprocess.Popen([sys.executable, "-m", "app.serve", "--workers", "2"], cwd=ROOT, env=env,
                                 start_new_session=True, stdout=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert serve.stdout is not None
            wait_for(lambda: "is up" in serve.stdout.readline(), 120, "the product")  # type: ignore[union-attr]
            ids = []
            for spec in RUNS:
                out = subprocess.run([sys.executable, "-m", "app.cli", "submit", "-"], input=spec, cwd=ROOT, env=env,
                                     capture_output=True, text=True, check=True)  # fmt: skip
                ids.append(out.stdout.strip())
            time.sleep(8)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 900}, device_scale_factor=1)
                page.goto(f"http://127.0.0.1:{port}/live?" + "&".join(f"run={i}" for i in ids))
                page.locator(".st-key-live-charts .js-plotly-plot").first.wait_for()
                time.sleep(3)
                (ROOT / "docs").mkdir(exist_ok=True)
                page.screenshot(path=str(ROOT / "docs" / "live.png"))
                browser.close()
        finally:
            os.killpg(serve.pid, signal.SIGINT)
            serve.wait(60)
    print("wrote docs/live.png")


if __name__ == "__main__":
    main()
