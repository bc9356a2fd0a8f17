"""How fast the Compare page becomes interactive on a big comparison, in a real browser.

Fills a fresh SQLite database with a sweep of 50 runs × 10,000 steps × 3 metrics (1.5 M rows, as a worker writes
them), starts the Streamlit server, and opens the Compare page on that sweep in chromium. Timed from navigation
until the chart holds all 50 curves and the page's script has finished (nothing left running), for:

- **default**: min/max downsampling to 500 points per curve, EMA smoothing with the raw curve faint;
- **no downsampling**: the same page sending every point (10,000 per curve), to show what downsampling buys;
- **slider**: moving the smoothing slider on the loaded page (no database access: curves are held in memory);
- **zoom**: a box-zoom into a tenth of the steps, redrawn from the full-resolution data;
- **Sweeps page**: the sweep's page in a new tab, until its heatmap (summary of every run) is drawn.

Target: default ≤ 2 s. Run: `python bench/compare_page.py [--runs 50] [--steps 10000]`.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from db.migrate import upgrade  # noqa: E402
from db.store import Store  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
READY_JS = """n => {
    const plot = document.querySelector('.js-plotly-plot');
    const curves = plot && plot.data ? plot.data.filter(t => t.showlegend !== false).length : 0;
    const app = document.querySelector('[data-testid="stApp"]');
    return curves >= n && app.getAttribute('data-test-script-state') === 'notRunning';
}"""
HEATMAP_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot'))
    .some(p => (p.data || []).some(t => t.type === 'heatmap'))"""
FIRST_CURVE_JS = """() => {
    const plot = document.querySelector('.js-plotly-plot');
    const t = plot && plot.data ? plot.data.filter(t => t.showlegend !== false)[0] : null;
    if (!t) return [0, null];
    const y = Array.isArray(t.y) ? t.y : (t.y._inputArray || []);
    return [y.length, y[Math.floor(y.length / 2)]];
}"""


def fill(url: str, runs: int, steps: int) -> int:
    upgrade(url)
    store = Store.from_url(url)
    sweep_id = store.create_sweep("bench", {})
    rng = np.random.default_rng(0)
    t = np.arange(1, steps + 1)
    for i in range(runs):
        lr = 10 ** rng.uniform(-4, -1)
        spec = {"name": f"bench {i}", "task": {"name": "digits-mlp"}, "optimizer": {"name": "adamw", "lr": lr},
                "batch": {"name": "constant", "size": 32}, "seed": i % 5, "steps": steps}  # fmt: skip
        run_id = store.create_run(spec["name"], spec, sweep_id)
        loss = 2.3 * np.exp(-t * lr / 10) + 0.05 * rng.standard_normal(steps) ** 2
        grad = loss * (1 + 0.3 * rng.standard_normal(steps))
        lrs = lr * np.minimum(1, t / 100)
        store.claim(run_id, "bench", "cpu", 30)
        for lo in range(0, steps, 2000):  # flushes, as a worker writes them
            chunk = range(lo, min(lo + 2000, steps))
            store.record(run_id, [(int(t[k]), name, float(v[k])) for k in chunk
                                  for name, v in (("loss", loss), ("grad_l2", grad), ("lr", lrs))])  # fmt: skip
        store.finish(run_id, "completed")
    tiny = store.create_run("tiny", {"name": "tiny", "task": {"name": "digits-mlp"}, "steps": 10})
    store.claim(tiny, "bench", "cpu", 30)
    store.record(tiny, [(k, "loss", 1.0 / k) for k in range(1, 11)])
    store.finish(tiny, "completed")
    return sweep_id


def wait_until_up(url: str, timeout: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        start = time.perf_counter()
        sweep_id = fill(url, args.runs, args.steps)
        print(f"filled {args.runs} runs × {args.steps} steps × 3 metrics in {time.perf_counter() - start:.1f} s")
        port = free_port()
        env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": "redis://127.0.0.1:1/0"}
        server = subprocess.Popen(
            [sys.executable, "-m", "app.web", "--server.port", str(port), "--server.headless", "true"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_until_up(f"http://127.0.0.1:{port}/_stcore/health")
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                results = measure(browser, f"http://127.0.0.1:{port}", sweep_id, args.runs, args.repeats)
                browser.close()
        finally:
            server.terminate()
            server.wait(10)
    print(f"\n{'case':<40}{'median s':>10}{'runs':>8}")
    for name, times in results.items():
        print(f"{name:<40}{statistics.median(times):>10.2f}{len(times):>8}")
    default = statistics.median(results["default (500 points per curve)"])
    full = statistics.median(results["no downsampling (every point)"])
    base = statistics.median(results["baseline: 1 run × 10 steps"])
    print(
        f"\nno downsampling / default: {full / default:.2f}×   default / baseline: {default / base:.2f}×   "
        f"default / the 2 s target: {default / 2:.2f}×"
    )


def measure(browser, base: str, sweep_id: int, runs: int, repeats: int) -> dict[str, list[float]]:  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    page.goto(f"{base}/compare?sweep={sweep_id}")  # warm-up: the server imports the page's modules once
    page.wait_for_function(READY_JS, arg=runs, timeout=120_000)
    page.close()
    results: dict[str, list[float]] = {
        "baseline: 1 run × 10 steps": [], "default (500 points per curve)": [],
        "from the Sweeps page's link": [], "no downsampling (every point)": [],
        "Sweeps page, new tab, until its heatmap": [],
        "slider change (smoothing)": [], "box zoom (a tenth of the steps)": [],
    }  # fmt: skip
    for _ in range(repeats):
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        start = time.perf_counter()
        page.goto(f"{base}/compare?runs={runs + 1}")  # the tiny run: what any page with a chart costs
        page.wait_for_function(READY_JS, arg=1, timeout=120_000)
        results["baseline: 1 run × 10 steps"].append(time.perf_counter() - start)
        page.close()
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        start = time.perf_counter()
        page.goto(f"{base}/sweeps?sweep={sweep_id}")  # progress, runs, summary of 50 × 10k steps, heatmap
        page.wait_for_function(HEATMAP_JS, timeout=120_000)
        page.wait_for_function(READY_JS, arg=0, timeout=120_000)
        results["Sweeps page, new tab, until its heatmap"].append(time.perf_counter() - start)
        page.close()
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.goto(f"{base}/sweeps?sweep={sweep_id}")  # the app is loaded; the user follows its link to Compare
        page.get_by_role("link", name="Compare its curves").wait_for(timeout=120_000)
        page.wait_for_function(HEATMAP_JS, timeout=120_000)  # the Sweeps page has finished drawing
        page.wait_for_function(READY_JS, arg=0, timeout=120_000)
        start = time.perf_counter()
        page.get_by_role("link", name="Compare its curves").click()
        page.wait_for_function(READY_JS, arg=runs, timeout=120_000)
        results["from the Sweeps page's link"].append(time.perf_counter() - start)
        page.close()
        for points in (1000, 0):
            page = browser.new_page(viewport={"width": 1500, "height": 1100})  # a new session: nothing cached
            start = time.perf_counter()
            page.goto(f"{base}/compare?sweep={sweep_id}")
            if points == 0:  # set the budget above the curve length, then time the redraw
                page.wait_for_function(READY_JS, arg=runs, timeout=120_000)
                box = page.get_by_label("Points per curve", exact=True)
                box.fill("20000")
                start = time.perf_counter()
                box.press("Enter")
                page.wait_for_function(f"() => ({FIRST_CURVE_JS})()[0] > 1000", timeout=120_000)
            page.wait_for_function(READY_JS, arg=runs, timeout=120_000)
            elapsed = time.perf_counter() - start
            name = "default (500 points per curve)" if points else "no downsampling (every point)"
            results[name].append(elapsed)
            if points:
                slider = page.get_by_role("slider")
                slider.focus()
                before = page.evaluate(FIRST_CURVE_JS)
                start = time.perf_counter()
                slider.press("ArrowRight")
                page.wait_for_function(f"b => ({FIRST_CURVE_JS})()[1] !== b[1]", arg=before, timeout=120_000)
                page.wait_for_function(READY_JS, arg=runs, timeout=120_000)
                results["slider change (smoothing)"].append(time.perf_counter() - start)
                area = page.locator(".js-plotly-plot .nsewdrag").first.bounding_box()
                y = area["y"] + area["height"] / 2
                start = time.perf_counter()
                page.mouse.move(area["x"] + area["width"] * 0.4, y)
                page.mouse.down()
                page.mouse.move(area["x"] + area["width"] * 0.5, y, steps=4)
                page.mouse.up()
                page.get_by_text("showing step").wait_for(timeout=60_000)
                page.wait_for_function(READY_JS, arg=runs, timeout=120_000)
                results["box zoom (a tenth of the steps)"].append(time.perf_counter() - start)
            page.close()
    return results


if __name__ == "__main__":
    main()
