"""How fast the Playground answers: 4 optimizers × 500 steps on a 2-D landscape.

Side by side, in this one process:
- **engine, hand-written gradients** (what the Playground does): four trajectories computed from scratch;
- **engine, autograd gradients**: the same with the gradient from torch.autograd each step, to show the choice;
- **figure**: building the contour plot with the trajectories and a 25-frame animation, as plotly JSON (what the
  Playground does) and, beside it, the same figure validated through plotly's graph objects (what it did before);
- **server**: what one slider move costs in Python: one trajectory again (the others are cached) and the figure.
Then in headless chromium, against a real Streamlit server:
- **slider change**: one key press on one optimizer's slider until the new trajectory is drawn (its other three
  trajectories come from the cache); target < 300 ms. Timed inside the page, from the keydown event to the
  animation frame in which the plot holds the new trajectory, so the test driver's own round trips are not
  counted; also until the whole rerun has finished (the loss chart and internals below, the ~40 controls).
  Side by side, on a second server and page, the same with no pause after a changed plot
  (`OPTLAB_PLAYGROUND_DRAW_PAUSE_S=0`), key presses alternating between the two;
- **noise change**: the same for the gradient-noise slider, which recomputes all four;
- **plotly redraw, side by side**: plotly.js alone (the copy in the plotly wheel) in a blank chromium page,
  redrawing the Playground's figure as it is drawn now (contour lines traced on the server, fixed margins,
  float32 typed-array frames) and as it was drawn before (a plotly `contour` trace that plotly.js traces on
  every redraw, automatic margins, frames as decimal lists).

Run: `python bench/playground.py [--repeats 7]`.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import plotly
import plotly.graph_objects as go
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.lessons import encode  # noqa: E402
from app.teaching_figures import landscape_figure  # noqa: E402
from bench.compare_page import CHROMIUM_ARGS, free_port, wait_until_up  # noqa: E402
from models.landscapes import LANDSCAPES, Landscape  # noqa: E402
from workers.playground import trajectory  # noqa: E402

OPTIMIZERS = (
    {"name": "sgd", "lr": 0.5, "momentum": 0.0},
    {"name": "sgd", "lr": 0.5, "momentum": 0.9},
    {"name": "adam", "lr": 0.05},
    {"name": "lion", "lr": 0.01},
)
SETUP = {
    "pg.land.name": "quadratic",
    "pg.land:quadratic:condition_number": 25.0,
    "pg.steps": 500,
    "pg.n": 4,
    **{f"pg.opt{i}.name": o["name"] for i, o in enumerate(OPTIMIZERS)},
    **{f"pg.opt{i}:{o['name']}:{k}": v for i, o in enumerate(OPTIMIZERS) for k, v in o.items() if k != "name"},
}
READY_JS = (
    """() => document.querySelector('[data-testid="stApp"]').getAttribute('data-test-script-state') === 'notRunning'"""
)
END_JS = """i => { const p = document.querySelector('.js-plotly-plot');
    if (!p || !p.data) return null;
    const t = p.data.filter(t => t.mode === 'lines' && t.name !== 'landscape')[i];
    const x = Array.isArray(t.x) ? t.x : Array.from(t.x._inputArray || []); return x[x.length - 1]; }"""
WATCH_JS = """([i, before]) => { window.__answer = new Promise(resolve => {
    const end = __END__;
    let pressed = null, drawn = null, waiting = true;
    setTimeout(() => { if (waiting) { waiting = false; resolve(null); } }, 60000);  // no answer: say so
    document.addEventListener('keydown', () => { pressed = performance.now(); }, {once: true, capture: true});
    const state = () => document.querySelector('[data-testid="stApp"]').getAttribute('data-test-script-state');
    const tick = () => {
        const now = performance.now();
        if (pressed !== null && drawn === null && end(i) !== before) drawn = now - pressed;
        if (drawn !== null && state() === 'notRunning') {
            waiting = false;
            return resolve([drawn / 1000, (now - pressed) / 1000]);
        }
        if (waiting) requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
}); }""".replace("__END__", END_JS)


def autograd_version(land: Landscape) -> Landscape:
    def grad(x: float, y: float) -> tuple[float, float]:
        point = torch.tensor([x, y], dtype=torch.float64, requires_grad=True)
        with torch.enable_grad():  # the Playground steps under no_grad
            land(point).backward()
        assert point.grad is not None
        return float(point.grad[0]), float(point.grad[1])

    return dataclasses.replace(land, grad=grad)


def timed(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    land = LANDSCAPES["quadratic"].build(condition_number=25.0)
    slow = autograd_version(land)
    for o in OPTIMIZERS:  # warm every lazy import
        trajectory(land, o, steps=5)
    hand = timed(lambda: [trajectory(land, o, steps=500) for o in OPTIMIZERS], args.repeats)
    auto = timed(lambda: [trajectory(slow, o, steps=500) for o in OPTIMIZERS], args.repeats)
    runs = {str(i): trajectory(land, o, steps=500) for i, o in enumerate(OPTIMIZERS)}
    figure = timed(lambda: landscape_figure(land, runs, 500).to_json(), args.repeats)
    validated = timed(lambda: go.Figure(landscape_figure(land, runs, 500).to_dict()).to_json(), args.repeats)

    def one_slider() -> None:  # what the server does when one optimizer's slider moves (the others are cached)
        runs["1"] = trajectory(land, OPTIMIZERS[1], steps=500)
        landscape_figure(land, runs, 500).to_json()

    server = timed(one_slider, args.repeats)
    figures = {  # two states of each figure (optimizer 2's trajectory differs), so every redraw changes data
        "now": [landscape_figure(land, runs, 500).to_json()],
        "before": [],
    }
    figures["before"].append(json.dumps(earlier_style(json.loads(figures["now"][0]), land)))
    runs["1"] = trajectory(land, {**OPTIMIZERS[1], "momentum": 0.8}, steps=500)
    figures["now"].append(landscape_figure(land, runs, 500).to_json())
    figures["before"].append(json.dumps(earlier_style(json.loads(figures["now"][1]), land)))
    redraw = plotly_redraw_times(figures, args.repeats)
    browser = browser_times(args.repeats)
    (slider, landscape), (slider_np, landscape_np) = browser["pause"], browser["no pause"]
    print(f"\n{'case (4 optimizers × 500 steps)':<48}{'median ms':>10}")
    for name, seconds in (
        ("engine, hand-written gradients", hand),
        ("engine, autograd gradients", auto),
        ("contour figure with 25 animation frames", figure),
        ("  the same, validated by plotly's graph objects", validated),
        ("server: one optimizer again + figure + JSON", server),
        ("browser: one optimizer's slider → drawn", slider[0]),
        ("browser: … → whole rerun finished", slider[1]),
        ("browser: the noise slider (all four) → drawn", landscape[0]),
        ("browser: … → whole rerun finished", landscape[1]),
        ("  the same with no pause after the plot: slider", slider_np[0]),
        ("  … → whole rerun finished", slider_np[1]),
        ("  … noise slider → drawn", landscape_np[0]),
        ("  … → whole rerun finished", landscape_np[1]),
        ("plotly.js redraw, figure as drawn now", redraw["now"]),
        ("plotly.js redraw, figure as drawn before", redraw["before"]),
    ):
        print(f"{name:<48}{seconds * 1000:>10.0f}")
    print(
        f"\nautograd / hand-written: {auto / hand:.1f}×   slider drawn / 300 ms target: {slider[0] / 0.3:.2f}×   "
        f"redraw before / now: {redraw['before'] / redraw['now']:.1f}×   "
        f"figure JSON before / now: {len(figures['before'][0]) / 1024:.0f} / {len(figures['now'][0]) / 1024:.0f} KiB"
    )


def earlier_style(fig: dict[str, Any], land: Landscape) -> dict[str, Any]:
    """The figure as the Playground drew it before: contours as a plotly `contour` trace (70 × 70 grid, traced by
    plotly.js on every redraw), automatic margins, and frames whose coordinates are decimal lists."""
    xs, ys, z = (t.numpy() for t in land.grid(70))
    shown = np.log10(z - z.min() + 1e-3) if land.log_contours else z
    fig["data"][0] = {"type": "contour", "x": xs.tolist(), "y": ys.tolist(), "z": shown.tolist(), "ncontours": 30,
                      "colorscale": "Greys", "showscale": False, "opacity": 0.55, "contours": {"coloring": "lines"},
                      "hoverinfo": "skip", "name": "landscape"}  # fmt: skip
    fig["layout"]["margin"] = {"l": 10, "r": 10, "t": 50, "b": 10}
    for frame in fig["frames"]:
        for trace in frame["data"]:
            for axis in ("x", "y"):
                if isinstance(trace[axis], dict):  # a typed array → the decimal list it replaced
                    raw = base64.b64decode(trace[axis]["bdata"])
                    trace[axis] = np.frombuffer(raw, dtype="<f4").astype(float).tolist()
    return fig


def plotly_redraw_times(figures: dict[str, list[str]], repeats: int) -> dict[str, float]:
    """Median ms of `Plotly.react` alternating between each variant's two figures, in one blank chromium page."""
    from playwright.sync_api import sync_playwright

    script = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 900, "height": 700})
        page.set_content('<div id="g" style="width:800px;height:600px"></div>')
        page.add_script_tag(path=str(script))
        out = {}
        for name, pair in figures.items():
            out[name] = page.evaluate(
                """async ([pair, repeats]) => {
                    const figs = pair.map(JSON.parse), g = document.getElementById('g'), times = [];
                    await Plotly.newPlot(g, figs[1]);
                    for (let k = 0; k < repeats; k++) {
                        const start = performance.now();
                        await Plotly.react(g, figs[k % 2]);
                        await new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)));  // painted
                        times.push(performance.now() - start);
                    }
                    await Plotly.purge(g);
                    times.sort((a, b) => a - b);
                    return times[Math.floor(times.length / 2)] / 1000;
                }""",
                [pair, repeats],
            )
        browser.close()
    return out


def browser_times(repeats: int) -> dict[str, tuple[tuple[float, float], tuple[float, float]]]:
    """For the Playground as shipped ("pause") and with no pause after a changed plot ("no pause"), each on its own
    server and page in one chromium, key presses alternating between them: (trajectory drawn, rerun finished) in
    seconds, medians, for one optimizer's slider and for the noise slider."""
    from playwright.sync_api import sync_playwright

    variants = {"pause": {}, "no pause": {"OPTLAB_PLAYGROUND_DRAW_PAUSE_S": "0"}}
    servers, ports = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for name, extra in variants.items():
                ports[name] = port = free_port()
                env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp}/{port}.db", "REDIS_URL": "redis://127.0.0.1:1/0"}
                servers.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "app.web", "--server.port", str(port), "--server.headless", "true"],
                        cwd=ROOT,
                        env={**env, **extra},
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            for port in ports.values():
                wait_until_up(f"http://127.0.0.1:{port}/_stcore/health")
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                pages = {}
                for name, port in ports.items():
                    pages[name] = page = browser.new_page(viewport={"width": 1500, "height": 1300})
                    page.goto(f"http://127.0.0.1:{port}/playground?setup={encode(SETUP)}")
                    page.wait_for_function(END_JS, arg=3, timeout=120_000)
                    page.wait_for_function(READY_JS)
                results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
                for label, index, key in (("momentum", 1, "ArrowLeft"), ("gradient noise σ", 0, "ArrowRight")):
                    answers: dict[str, list[list[float]]] = {name: [] for name in variants}
                    for _ in range(repeats):  # one way only: every figure is new (none from the browser's cache)
                        for name, page in pages.items():
                            page.bring_to_front()
                            page.wait_for_timeout(300)
                            slider = page.get_by_role("slider", name=label).nth(index)  # optimizer 2's momentum
                            slider.focus()
                            page.evaluate(WATCH_JS, [index, page.evaluate(END_JS, index)])
                            slider.press(key)
                            answer = page.evaluate("() => window.__answer")
                            if answer is None:
                                raise RuntimeError(f"the {label!r} slider got no answer within 60 s")
                            answers[name].append(answer)
                    for name in variants:
                        results[name].append(tuple(statistics.median(a[k] for a in answers[name]) for k in (0, 1)))
                browser.close()
        finally:
            for server in servers:
                server.terminate()
                server.wait(10)
    return {name: (r[0], r[1]) for name, r in results.items()}


if __name__ == "__main__":
    main()
