"""Each page through Streamlit's AppTest, over a real database and Redis (live refresh is in test_browser.py)."""

from __future__ import annotations

import json
import math

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT, Stack
from workers.optimizers import OPTIMIZERS
from workers.spec import parse_spec

MAIN = str(ROOT / "app" / "main.py")


def app(page: str | None = None, **query: str) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=60)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def values(trace: dict, axis: str) -> list[float]:  # type: ignore[type-arg]
    """A trace's x or y, whether plotly sent a list or a base64 typed array."""
    import base64

    import numpy as np

    data = trace[axis]
    if isinstance(data, dict):
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=np.dtype(data["dtype"])).tolist()
    return list(data)


def plotly_json(at: AppTest) -> dict:  # type: ignore[type-arg]
    return json.loads(at.get("plotly_chart")[0].proto.spec)


def test_launch_form_comes_from_the_registries(stack: Stack) -> None:
    at = app()
    assert at.title[0].value == "Launch a run"
    assert at.selectbox(key="optimizer.name").options == list(OPTIMIZERS)
    at.selectbox(key="optimizer.name").set_value("sgd").run()
    keys = {w.key for w in at.number_input} | {w.key for w in at.checkbox}
    assert {"optimizer:sgd:lr", "optimizer:sgd:momentum", "optimizer:sgd:nesterov"} <= keys
    assert any("Polyak" in c.value for c in at.caption)  # the entry's paper is shown


def test_negative_lr_shows_a_field_error_and_queues_nothing(stack: Stack) -> None:
    at = app()
    at.number_input(key="optimizer:adamw:lr").set_value(-1.0).run()
    assert any("`optimizer.lr`" in e.value and "greater than 0" in e.value for e in at.error)
    at.button[0].click().run()
    assert any("Nothing was queued" in e.value for e in at.error)
    assert stack.store.list_runs() == []


def test_preview_redraws_when_the_schedule_changes(stack: Stack) -> None:
    at = app()
    warm = plotly_json(at)["data"][0]["y"]
    assert warm[0] < max(warm) and warm[-1] < max(warm)  # warm-up, then decay: the default schedule
    at.selectbox(key="schedule.name").set_value("constant").run()
    assert len(set(plotly_json(at)["data"][0]["y"])) == 1
    at.selectbox(key="schedule.name").set_value("cosine").run()
    trace = plotly_json(at)["data"][0]
    assert trace["name"] == "cosine" and trace["y"][0] > trace["y"][-1]
    at.number_input(key="run.steps").set_value(80).run()
    assert plotly_json(at)["data"][0]["x"][-1] == 80


def test_launch_queues_a_run_and_links_to_it(stack: Stack) -> None:
    at = app()
    at.text_input(key="run.name").set_value("from-the-form").run()
    at.button[0].click().run()
    (run,) = stack.store.list_runs()
    assert run.status == "queued" and run.name == "from-the-form"
    assert parse_spec(run.spec).optimizer.name == "adamw"
    assert any(f"Run #{run.id} queued" in s.value for s in at.success)


def test_clone_fills_the_form(stack: Stack) -> None:
    spec = parse_spec({"name": "orig", "task": "moons-mlp", "optimizer": {"name": "sgd", "lr": 0.25, "nesterov": True},
                       "schedule": {"name": "step", "step_size": 7}, "steps": 99})  # fmt: skip
    run_id = stack.store.create_run(spec.name, spec.model_dump(mode="json"))
    at = app(clone=str(run_id))
    assert at.selectbox(key="optimizer.name").value == "sgd"
    assert at.number_input(key="optimizer:sgd:lr").value == 0.25
    assert at.checkbox(key="optimizer:sgd:nesterov").value is True
    assert at.number_input(key="schedule:step:step_size").value == 7
    assert at.number_input(key="run.steps").value == 99 and at.selectbox(key="task.name").value == "moons-mlp"


def test_live_page_empty_state(stack: Stack) -> None:
    at = app("pages/live.py")
    assert any("No runs yet" in i.value for i in at.info)


def test_live_page_shows_progress_and_curves(stack: Stack) -> None:
    spec = parse_spec({"task": "digits-mlp", "optimizer": "adamw", "steps": 100})
    run_id = stack.store.create_run(spec.name, spec.model_dump(mode="json"))
    stack.store.claim(run_id, "w", "cpu", 30)
    stack.store.record(run_id, [(s, m, 1.0 / s) for s in range(1, 41) for m in ("loss", "grad_l2", "lr")])
    queued = stack.store.create_run("waiting", spec.model_dump(mode="json"))
    at = app("pages/live.py", run=str(run_id))
    texts = [p.proto.text for p in at.get("progress")]
    assert any("step 40/100" in t and "ETA" in t for t in texts)
    assert any(f"#{queued} waiting" in t and "queued" in t for t in texts)
    charts = at.get("plotly_chart")
    assert len(charts) == 3
    loss = json.loads(charts[0].proto.spec)["data"][0]
    assert values(loss, "x")[-1] == 40 and values(loss, "y")[0] == 1.0
    cancel = next(b for b in at.button if b.key == f"cancel-{queued}")
    cancel.click().run()
    assert stack.store.get_run(queued).status == "cancelled"  # type: ignore[union-attr]


def test_runs_page_table_filter_and_clone(stack: Stack) -> None:
    at = app("pages/runs.py")
    assert any("No runs yet" in i.value for i in at.info)
    for name, opt in (("alpha", "sgd"), ("beta", "adam")):
        spec = parse_spec({"name": name, "task": "moons-mlp", "optimizer": opt, "steps": 10})
        rid = stack.store.create_run(name, spec.model_dump(mode="json"))
        stack.store.record(rid, [(1, "loss", 2.0), (2, "loss", 1.0)])
    at = app("pages/runs.py")
    table = at.dataframe[0].value
    assert list(table["name"]) == ["beta", "alpha"] and list(table["final loss"]) == [1.0, 1.0]
    at.multiselect[2].select("sgd").run()  # the optimizer filter
    assert list(at.dataframe[0].value["name"]) == ["alpha"]
    at.multiselect(key="selected").select(2).run()
    clone = next(b for b in at.button if b.label == "Clone")
    clone.click().run()
    assert at.title[0].value == "Launch a run"
    assert at.selectbox(key="optimizer.name").value == "adam"


@pytest.mark.parametrize("page", ["pages/launch.py", "pages/live.py", "pages/runs.py"])
def test_every_page_renders_without_error(stack: Stack, page: str) -> None:
    app(page)


def test_runs_page_deletes_finished_runs_but_not_running_ones(stack: Stack) -> None:
    spec = parse_spec({"task": "moons-mlp", "optimizer": "sgd", "steps": 10}).model_dump(mode="json")
    done, busy = stack.store.create_run("done", spec), stack.store.create_run("busy", spec)
    stack.store.claim(done, "w", "cpu", 30)
    stack.store.finish(done, "completed")
    stack.store.claim(busy, "w", "cpu", 30)
    at = app("pages/runs.py")
    at.multiselect(key="selected").select(done).select(busy).run()
    assert any("cancel them first (#2)" in c.value for c in at.caption)
    next(b for b in at.button if b.label == "Delete for good").click().run()
    assert stack.store.get_run(done) is None and stack.store.get_run(busy) is not None


def test_reference_page_lists_every_entry_with_its_rule(stack: Stack) -> None:
    from workers.schedules import SCHEDULES

    at = app("pages/reference.py")
    labels = " ".join(e.label for e in at.expander)
    for name in [*OPTIMIZERS, *SCHEDULES]:
        assert f"**{name}**" in labels
    assert any("sign(c)" in c.value for c in at.code)  # LION's rule
    assert len(plotly_json(at)["data"]) == len(SCHEDULES)  # every schedule drawn at its defaults


def test_preview_overlays_schedules_and_the_cloned_runs_logged_lr(stack: Stack) -> None:
    spec = parse_spec({"task": "digits-mlp", "optimizer": {"name": "adamw", "lr": 0.01}, "steps": 10,
                       "schedule": "cosine"})  # fmt: skip
    run_id = stack.store.create_run(spec.name, spec.model_dump(mode="json"))
    stack.store.record(run_id, [(s, "lr", 0.01) for s in range(1, 11)])
    at = app(clone=str(run_id))
    at.multiselect(key="overlay").select("wsd").select("uba").run()
    names = [t["name"] for t in plotly_json(at)["data"]]
    assert names == ["cosine", "wsd", "uba", f"#{run_id} (logged)"]


def fake_sweep(stack: Stack, statuses: tuple[str, ...] = ("completed",) * 8) -> int:
    """A finished 2 (lr) × 2 (batch) × 2 (seed) sweep with hand-made curves: loss = lr·100/step + batch/1000."""
    store = stack.store
    sweep_id = store.create_sweep("grid", {"name": "grid"})
    i = 0
    for lr in (0.001, 0.01):
        for batch in (32, 128):
            for seed in (0, 1):
                spec = parse_spec({"name": f"r{i}", "task": "moons-mlp", "optimizer": {"name": "adam", "lr": lr},
                                   "batch": {"size": batch}, "seed": seed, "steps": 50})  # fmt: skip
                rid = store.create_run(spec.name, spec.model_dump(mode="json"), sweep_id)
                rows = [(s, "loss", lr * 100 / s + batch / 1000 + seed * 0.01) for s in range(1, 51)]
                rows += [(s, "samples_seen", float(batch * s)) for s in range(1, 51)]
                rows += [(s, "wall_time", 0.01 * s) for s in range(1, 51)]
                store.claim(rid, "w", "cpu", 30)
                store.record(rid, rows)
                store.finish(rid, statuses[i]) if statuses[i] != "running" else None
                i += 1
    return sweep_id


def test_sweep_builder_shows_count_and_estimate_and_names_bad_fields(stack: Stack) -> None:
    at = app("pages/sweeps.py")
    assert any("No sweeps yet" in i.value for i in at.info)
    at.segmented_control(key="sweeps.view").set_value("New sweep").run()
    assert not at.exception, [e.value for e in at.exception]
    runs = next(m for m in at.metric if m.label == "Runs")
    assert runs.value == "8"  # the default 2 LRs × 2 batch sizes × 2 seeds
    at.text_input(key="sw.axis0.values").set_value("0.001, -1").run()
    assert any("`run 3 (" in e.value and "optimizer.lr" in e.value for e in at.error)
    at.selectbox(key="sw.axis0.kind").set_value("log range").run()
    at.text_input(key="sw.axis0.values").set_value("1e-4").run()
    assert any("axis 1 (optimizer.lr)" in e.value and "two numbers" in e.value for e in at.error)
    at.text_input(key="sw.axis0.values").set_value("1e-4, 1e-1").run()
    at.number_input(key="sw.samples").set_value(3).run()
    assert next(m for m in at.metric if m.label == "Runs").value == "12"  # 2 × 2 grid points × 3 draws
    assert stack.store.list_runs() == []  # nothing queued while building


def test_sweep_page_shows_progress_heatmap_and_exports(stack: Stack) -> None:
    sweep_id = fake_sweep(stack, ("completed",) * 6 + ("diverged", "failed"))
    at = app("pages/sweeps.py", sweep=str(sweep_id))
    assert any("8 of 8 runs finished" in p.proto.text for p in at.get("progress"))
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    heat = next(c for c in charts if c["data"][0]["type"] == "heatmap")
    texts = [t for row in heat["data"][0]["text"] for t in row]
    assert any("diverged" in t for t in texts)  # lr 0.01 × batch 128 held the diverged run
    # lr 0.001, batch 32: final loss = 0.1/50 + 0.032 + seed·0.01 → mean 0.039 over two seeds
    assert any(t.startswith("0.039") for t in texts), texts
    assert at.button(key="sweep.rerun").proto.label == "Re-run failed (2)"
    labels = {b.proto.label for b in at.get("download_button")}
    assert {"Long CSV", "Summary CSV", "Long Parquet", "Summary Parquet"} <= labels


def test_compare_groups_seeds_into_bands_and_smooths(stack: Stack) -> None:
    sweep_id = fake_sweep(stack)
    at = app("pages/compare.py", sweep=str(sweep_id))
    spec = plotly_json(at)
    main = [t for t in spec["data"] if t.get("showlegend") is not False]
    assert len(main) == 8 and all("lr=" in t["name"] and "seed=" in t["name"] for t in main)  # labels: what differs
    assert sum(1 for t in spec["data"] if t["name"].endswith(" raw")) == 8  # raw curves stay, faint
    at.multiselect(key="compare.group").set_value(["optimizer.lr", "batch.size"]).run()
    spec = plotly_json(at)
    bands = [t for t in spec["data"] if t.get("fill") == "toself"]
    lines = [t for t in spec["data"] if t.get("fill") != "toself"]
    assert len(bands) == 4 and len(lines) == 4 and all("(2 runs)" in t["name"] for t in lines)
    # the band of a group is mean ± std of its two seeds, which differ by 0.01: std = 0.01/√2
    band_y = values(bands[0], "y")
    half = len(band_y) // 2
    assert band_y[half] - band_y[half - 1] == pytest.approx(2 * 0.01 / 2**0.5, rel=1e-6)
    at.radio(key="compare.x").set_value("samples seen").run()
    assert "samples" in plotly_json(at)["layout"]["xaxis"]["title"]["text"]


def test_playground_lesson_fills_the_page_and_a_lock_leaves_only_its_controls(stack: Stack) -> None:
    at = app("pages/playground.py", lesson="momentum", lock="1")
    assert any("Momentum on an ill-conditioned quadratic" in i.value for i in at.info)
    assert at.selectbox(key="pg.land.name").value == "quadratic"
    assert at.selectbox(key="pg.opt0.name").disabled  # locked
    momentum = at.slider(key="pg.opt1:sgd:momentum")
    assert momentum.value == pytest.approx(0.6) and not momentum.disabled  # the lesson's own control
    assert at.slider(key="pg.opt0:sgd:momentum").disabled
    contour = json.loads(at.get("plotly_chart")[0].proto.spec)
    paths = [t for t in contour["data"] if t.get("mode") == "lines" and t.get("name") != "landscape"]
    assert len(paths) == 2 and len(contour["frames"]) > 10  # two trajectories, an animation
    before = values(paths[1], "x")
    momentum.set_value(0.0).run()
    after = values([t for t in json.loads(at.get("plotly_chart")[0].proto.spec)["data"]
                    if t.get("mode") == "lines"][1], "x")  # fmt: skip
    assert before != after  # the trajectory followed the slider
    table = at.dataframe[0].value  # the internals at the chosen step
    assert {"gradient g", "update Δθ", "effective step Δθ/(−g)"} <= set(table["quantity"])


def test_playground_setup_link_round_trips(stack: Stack) -> None:
    from app.lessons import encode

    setup = {"pg.land.name": "saddle", "pg.n": 1, "pg.opt0.name": "adam", "pg.opt0:adam:lr": 0.02, "pg.steps": 60}
    at = app("pages/playground.py", setup=encode(setup))
    assert at.selectbox(key="pg.land.name").value == "saddle"
    assert at.number_input(key="pg.opt0:adam:lr").value == pytest.approx(0.02)
    assert at.number_input(key="pg.steps").value == 60
    code = next(c.value for c in at.code if c.value.startswith("?setup="))
    from app.lessons import decode

    shared = decode(code.removeprefix("?setup="))
    assert {k: shared[k] for k in setup} == setup


def test_laws_page_range_test_step_law_memory_and_prefill_links(stack: Stack) -> None:
    import numpy as np

    from workers.scaling import step_law

    spec = parse_spec({"name": "rt", "task": "moons-mlp", "optimizer": {"name": "adamw", "lr": 10.0}, "steps": 300,
                       "schedule": {"name": "range-test", "start_lr": 1e-7}})  # fmt: skip
    rid = stack.store.create_run("rt", spec.model_dump(mode="json"))
    lrs = np.geomspace(1e-7, 10, 300)
    u = np.log10(lrs / 1e-3)
    loss = 2 - np.tanh(u) + 10 ** (2 * (u - 3))
    stack.store.claim(rid, "w", "cpu", 30)
    stack.store.record(rid, [(i + 1, "lr", float(lr)) for i, lr in enumerate(lrs)]
                       + [(i + 1, "loss", float(v)) for i, v in enumerate(loss)])  # fmt: skip
    stack.store.finish(rid, "completed")
    at = app("pages/laws.py")
    hint = next(m.value for m in at.markdown if "suggested LR" in m.value)
    suggested = float(hint.split("suggested LR ")[1].split(",")[0])
    assert 5e-4 < suggested < 2e-3  # the synthetic curve falls fastest at 1e-3
    lr, tokens = step_law(1e8, 10**9.3)
    assert next(m for m in at.metric if m.label == "η*").value == f"{lr:.3g}"
    assert next(m for m in at.metric if m.label == "B* (tokens)").value == f"{tokens:,.0f}"
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    memory = next(c for c in charts if c["layout"].get("xaxis", {}).get("title", {}).get("text", "").endswith("KiB)"))
    by_name = dict(zip(memory["data"][0]["y"], values(memory["data"][0], "x"), strict=True))
    assert by_name["adam"] == pytest.approx(2 * by_name["lion"], rel=0.01)  # two moments against one
    assert by_name["sgd"] == pytest.approx(by_name["lion"], rel=0.01)  # one momentum buffer each

    launch = app(optimizer="lion", lr="0.0003")  # "Use in Launch"
    assert launch.selectbox(key="optimizer.name").value == "lion"
    assert launch.number_input(key="optimizer:lion:lr").value == pytest.approx(3e-4)
    sweeps = app("pages/sweeps.py", lr_low="0.0001", lr_high="0.01")  # "Use as sweep bounds"
    assert sweeps.selectbox(key="sw.axis0.kind").value == "log range"
    assert sweeps.text_input(key="sw.axis0.values").value == "0.0001, 0.01"


def test_scaling_rules_experiment_queues_two_sweeps_with_scaled_lrs(stack: Stack) -> None:
    at = app("pages/laws.py")
    next(b for b in at.button if b.label.startswith("Queue the experiment")).click().run()
    assert not at.exception, [e.value for e in at.exception]
    sweeps = {s.name: s for s in stack.store.list_sweeps()}
    assert set(sweeps) == {"scaling-rules linear", "scaling-rules sqrt"}
    for rule, factor in (("linear", lambda b: b / 16), ("sqrt", lambda b: (b / 16) ** 0.5)):
        runs = stack.store.list_runs(sweep_id=sweeps[f"scaling-rules {rule}"].id)
        assert len(runs) == 14  # SGD and Adam × 7 batch sizes
        for run in runs:
            size, base = run.spec["batch"]["size"], {"sgd": 0.02, "adam": 0.001}[run.spec["optimizer"]["name"]]
            assert run.spec["optimizer"]["lr"] == pytest.approx(base * factor(size))
            assert run.spec["steps"] == 64_000 // size  # the same samples for every batch size


@pytest.mark.live_worker
def test_scaling_rules_experiment_runs_and_reports_each_rules_spread(stack: Stack, worker) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import wait_for

    at = app("pages/laws.py")
    at.selectbox(key="sc.task").set_value("moons-mlp").run()
    at.number_input(key="sc.samples").set_value(4096).run()
    next(b for b in at.button if b.label.startswith("Queue the experiment")).click().run()

    def settled() -> bool:
        runs = stack.store.list_runs()
        return len(runs) == 24 and all(r.status not in ("queued", "running") for r in runs)

    wait_for(settled, 240, "the 24 runs of the experiment (moons has 800 training examples: B ≤ 512)")
    at.run()
    table = next(d.value for d in at.dataframe if "final loss spread (max − min)" in d.value.columns)
    assert sorted(zip(table["optimizer"], table["rule"], strict=True)) == [
        ("adam", "linear"), ("adam", "sqrt"), ("sgd", "linear"), ("sgd", "sqrt")
    ]  # fmt: skip
    assert (table["batch sizes"] == 6).all()
    finals = stack.store.summaries([r.id for r in stack.store.list_runs()])
    for _, row in table.iterrows():  # the spread is max − min of the final losses of that rule and optimizer
        runs = [r for r in stack.store.list_runs() if r.name.startswith(f"scaling {row.rule} {row.optimizer} ")]
        values = [finals[r.id]["final"] for r in runs if math.isfinite(finals.get(r.id, {}).get("final", math.nan))]
        assert row["final loss spread (max − min)"] == pytest.approx(max(values) - min(values))
        assert row["curve spread"] >= 0 and (math.isfinite(row["curve spread"]) or row["diverged"] > 0)
    curves = json.loads(next(c for c in at.get("plotly_chart") if "samples seen" in c.proto.spec).proto.spec)
    titles = {a["text"] for a in curves["layout"]["annotations"]}
    assert titles == {"adam, linear rule", "adam, sqrt rule", "sgd, linear rule", "sgd, sqrt rule"}
    assert len(curves["data"]) == 24  # a curve per run: 4 panels × 6 batch sizes


def test_playground_names_bad_fields_instead_of_failing(stack: Stack) -> None:
    at = app("pages/playground.py", lesson="saddle")
    at.number_input(key="pg.opt1:adam:lr").set_value(-1.0).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("optimizer 2.lr: Input should be greater than 0" in w.value for w in at.warning)
    at.selectbox(key="pg.land.name").set_value("quadratic").run()
    at.number_input(key="pg.land:quadratic:condition_number").set_value(0.0).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("`landscape.condition_number`" in e.value for e in at.error)
    assert not at.get("plotly_chart")  # nothing drawn from a landscape that cannot exist…
    at.number_input(key="pg.land:quadratic:condition_number").set_value(10.0).run()  # … and its control is there
    assert not at.error and len(at.get("plotly_chart")) == 2


def test_a_sweeps_compare_link_folds_its_seeds_into_bands(stack: Stack) -> None:
    from urllib.parse import parse_qsl

    sweep_id = fake_sweep(stack)
    at = app("pages/sweeps.py", sweep=str(sweep_id))
    link = next(e for e in at.get("page_link") if e.proto.label == "Compare its curves")
    query = dict(parse_qsl(link.proto.query_string.lstrip("?")))
    assert query == {"sweep": str(sweep_id), "group": "optimizer.lr,batch.size"}  # the swept fields but the seed
    at = app("pages/compare.py", **query)
    assert at.multiselect(key="compare.group").value == ["optimizer.lr", "batch.size"]
    data = plotly_json(at)["data"]
    bands = [t for t in data if t.get("fill") == "toself"]
    lines = [t for t in data if t.get("fill") != "toself"]
    assert len(bands) == 4 and len(lines) == 4 and all(t["name"].endswith("(2 runs)") for t in lines)


def test_the_heatmap_averages_the_seeds_when_the_optimizer_is_swept(stack: Stack) -> None:
    store = stack.store
    sweep_id = store.create_sweep("opt", {"name": "opt"})
    for name in ("adam", "sgd"):
        for lr in (0.001, 0.01):
            for seed in (0, 1):
                spec = parse_spec({"task": "moons-mlp", "optimizer": {"name": name, "lr": lr}, "seed": seed,
                                   "steps": 5})  # fmt: skip
                rid = store.create_run(spec.name, spec.model_dump(mode="json"), sweep_id)
                store.claim(rid, "w", "cpu", 30)
                store.record(rid, [(s, "loss", lr / s + seed) for s in range(1, 6)])
                store.finish(rid, "completed")
    at = app("pages/sweeps.py", sweep=str(sweep_id))
    assert (at.selectbox(key="an.hx").value, at.selectbox(key="an.hy").value) == ("optimizer.lr", "optimizer.name")
    heat = next(
        c for c in map(json.loads, (c.proto.spec for c in at.get("plotly_chart"))) if c["data"][0]["type"] == "heatmap"
    )
    texts = [t for row in heat["data"][0]["text"] for t in row]
    assert len(texts) == 4 and all(t.endswith("n=2") for t in texts), texts  # each cell: two seeds


def test_an_emptied_sweep_axis_gives_an_example_that_fits_its_field(stack: Stack) -> None:
    at = app("pages/sweeps.py")
    at.segmented_control(key="sweeps.view").set_value("New sweep").run()
    assert at.text_input(key="sw.axis1.values").placeholder == "32, 128"  # axis 2 is batch.size
    at.text_input(key="sw.axis1.values").set_value("").run()
    errors = " ".join(e.value for e in at.error)
    assert "axis 2 (batch.size)" in errors and "e.g. 32, 128" in errors and "0.001" not in errors, errors
    at.selectbox(key="sw.axis1.field").set_value("optimizer.name").run()
    at.selectbox(key="sw.axis1.kind").set_value("log range").run()
    errors = " ".join(e.value for e in at.error)
    assert "axis 2 (optimizer.name)" in errors and "takes values, not a range" in errors, errors


def test_runs_with_no_reason_show_an_empty_reason_cell(stack: Stack) -> None:
    sweep_id = fake_sweep(stack)
    at = app("pages/sweeps.py", sweep=str(sweep_id))
    table = next(
        d.value for d in at.dataframe if list(d.value.columns) == ["id", "name", "status", "progress", "reason"]
    )
    assert list(table["reason"]) == [""] * 8
    at = app("pages/runs.py")
    assert list(at.dataframe[0].value["reason"]) == [""] * 8


def test_laws_page_a_range_test_launched_joins_the_ones_drawn(stack: Stack) -> None:
    at = app("pages/laws.py")
    at.button(key="rt.go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    (first,) = [r.id for r in stack.store.list_runs()]
    assert at.multiselect(key="rt.runs").value == [first]
    at.button(key="rt.go").click().run()  # a second one: the selection made for the first must not hide it
    second = max(r.id for r in stack.store.list_runs())
    assert at.multiselect(key="rt.runs").value == [second, first]
    assert any(f"#{second}" in c.value and "queued" in c.value for c in at.caption)  # followed as it runs


def test_live_page_shows_each_queued_runs_place_and_an_estimated_start(stack: Stack) -> None:
    """Two owners' queued runs in fair share's order (bob's goes second though queued last); one idle worker
    reported: the first starts next, the second after a typical run."""
    spec = parse_spec({"task": "moons-mlp", "optimizer": "sgd", "steps": 10}).model_dump(mode="json")
    alice, bob = stack.store.create_user("alice", "member"), stack.store.create_user("bob", "member")
    first, second = (stack.store.create_run(f"a{i}", spec, owner_id=alice) for i in range(2))
    theirs = stack.store.create_run("b", spec, owner_id=bob)
    at = app("pages/live.py")
    texts = [p.proto.text for p in at.get("progress")]
    assert [t.split(" — ")[0].split()[0] for t in texts] == [f"#{first}", f"#{theirs}", f"#{second}"]
    assert "#1 in the auto queue, no live worker takes it yet" in texts[0]
    stack.store.worker_heartbeat("host:1", celery_name="c", host="host", kind="cpu", device="CPU, 2 cores",
                                 state="idle", run_id=None, stats={})  # fmt: skip
    texts = [p.proto.text for p in app("pages/live.py").get("progress")]
    assert "#1 in the auto queue, starts next" in texts[0] and "#2 in the auto queue, starts in about" in texts[1]


def test_the_workers_page_says_which_worker_is_stalled_and_why(stack: Stack) -> None:
    """A worker whose training is stuck inside a step reports itself `stalled`; the Workers page says so, with
    what to do, beside a worker training normally."""
    for name, state, run_id in (("host:1", "training", 7), ("host:2", "stalled", 8)):
        stack.store.worker_heartbeat(name, celery_name="c", host="host", kind="cpu", device="CPU, 2 cores",
                                     state=state, run_id=run_id, stats={})  # fmt: skip
    at = app("pages/workers.py")
    status = at.table[0].value["status"].to_dict()
    assert status == {"host:1": "training run 7",
                      "host:2": "stalled in run 8: stuck inside a step, gave the run up (restart this worker)"}  # fmt: skip
