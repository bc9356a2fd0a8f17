"""Input that cannot hurt: every hostile or sloppy spec from issue 12 is refused before anything is queued, with the
field named and a short message, quickly; and a property-based fuzz test over run and sweep specs (dicts, YAML
text, mutations of valid ones, file bytes through the CLI's reader) finds nothing that escapes as another exception.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import os
import subprocess
import sys
import tempfile
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ROOT
from workers.inputs import (
    MAX_FIELD,
    MAX_INPUT_BYTES,
    MAX_MESSAGE,
    MAX_QUOTE,
    MAX_SEED,
    check_tree,
    decode,
    load_yaml,
    quote,
)
from workers.spec import COMPONENTS, RunSpec, SpecError, flatten, load_spec, parse_spec
from workers.sweep import build, load_sweep, parse_sweep

SPEC = "task: digits-mlp\noptimizer: {name: adamw, lr: 0.003}\nsteps: 50\neval_every: 25\n"
BASE: dict[str, Any] = {"task": "digits-mlp", "optimizer": {"name": "adamw", "lr": 0.003}, "steps": 50}
SWEEP = """name: lr
base: {task: digits-mlp, optimizer: adamw, steps: 30, eval_every: 10}
grid:
  optimizer.lr: [0.001, 0.01]
  seed: [0, 1]
random:
  optimizer.weight_decay: {low: 0.0001, high: 0.1, scale: log}
samples: 2
early_stopping: {rule: asha, grace_steps: 10}
"""
# 342 bytes: 9 levels of 9 aliases, 9**9 (387 million) leaves once expanded (the issue's 400-byte file)
LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join(["*" + chr(97 + i)] * 9) + "]\n" for i in range(8)
)


def refused(load: Any, text: Any) -> dict[str, str]:
    """The errors (field -> message) `load` raises for `text`; fails if it accepts it or raises anything else."""
    with pytest.raises(SpecError) as caught:
        load(text)
    errors = caught.value.errors
    assert errors and all(e.field and e.message for e in errors)
    return {e.field: e.message for e in errors}


# --- the issue's inputs, one by one ---------------------------------------------------------------------------------

ISSUE = [
    # (what, text, field, part of the message)
    ("billion laughs", LAUGHS, "spec", "more than 20 YAML aliases"),
    ("nesting of 500 levels", "task: " + "[" * 500 + "]" * 500, "spec", "nested deeper than 50 levels"),
    ("nesting of 500 block levels", "- " * 500 + "1", "spec", "nested deeper than 50 levels"),
    ("seed 2**63", SPEC + f"seed: {2**63}\n", "seed", "less than or equal to 9223372036854775807"),
    (
        "weight decay 1e308",
        SPEC.replace("lr: 0.003", "lr: 0.003, weight_decay: 1e308"),
        "optimizer.weight_decay",
        "less than or equal to",
    ),
    (
        "a 745 GiB quadratic",
        SPEC.replace("digits-mlp", "{name: quadratic, dim: 100000, n_samples: 1000000}"),
        "task.n_samples",
        "GiB of memory",
    ),
    ("steps: true", SPEC + "steps: true\n", "steps", "valid integer (got True)"),
    ("steps: 1:30 (sexagesimal 90 in YAML 1.1)", SPEC + "steps: 1:30\n", "steps", "valid integer (got '1:30')"),
    ("a NUL in the name", SPEC + 'name: "run\\0one"\n', "name", "control characters"),
    ("a newline in the name", SPEC + 'name: "run\\none"\n', "name", "control characters"),
    ("a lone surrogate in the name", SPEC + 'name: "run\\ud800"\n', "name", "unicode string"),
    ("nesterov: yes", SPEC.replace("adamw, lr: 0.003", "sgd, nesterov: yes"), "optimizer.nesterov", "boolean"),
    ("lr as text", SPEC.replace("0.003", '"0.003"'), "optimizer.lr", "valid number"),
    ("a recursive alias", "a: &a [*a]\n", "spec", "refers to a value that contains it"),
    ("over 64 KiB", SPEC + "#" * MAX_INPUT_BYTES, "spec", "at most 65,536"),
    ("a 5,000-digit integer", SPEC + "seed: " + "9" * 5000, "spec", "cannot be read"),
]


@contextmanager
def memory_peak() -> Iterator[Callable[[], int]]:
    """The peak bytes Python allocated inside the block (tracemalloc): work bounded by the input's size shows as
    a small peak on any machine, however busy, where a timing would not."""
    tracemalloc.start()
    peak = [0]
    try:
        yield lambda: peak[0]
    finally:
        peak[0] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


@pytest.mark.parametrize(("what", "text", "field", "message"), ISSUE, ids=[case[0] for case in ISSUE])
def test_the_issues_specs_are_refused_naming_the_field(what: str, text: str, field: str, message: str) -> None:
    with memory_peak() as peak:
        errors = refused(load_spec, text)
    assert peak() < 64 * 2**20, what  # the laughs took 1.4 GB (and minutes) before: bounded work, not a speed
    assert field in errors, errors
    assert message in errors[field], errors[field]


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("grid: {steps.x: [1, 2]}", "grid.steps.x", "steps is a single value"),  # a TypeError in expand before
        ("grid: {optimizer.lr.x: [1]}", "grid.optimizer.lr.x", "one level deep"),
        ("grid: {colour: [1]}", "grid.colour", "unknown field 'colour'"),
        ("samples: true\nrandom: {optimizer.lr: {low: 0.1, high: 1}}", "samples", "valid integer"),
        ("random: {seed: {low: -1e308, high: 1e308, integer: true}}", "random.seed", "finite"),  # round(inf) before
        ("random: {optimizer.lr: {low: 0.1, high: 1, integer: yes}}", "random.optimizer.lr.integer", "boolean"),
        ("early_stopping: {rule: asha, grace_steps: true}", "early_stopping.grace_steps", "valid integer"),
        ('early_stopping: {rule: asha, metric: "lo\\0ss"}', "early_stopping.metric", "control characters"),
        ('name: "sw\\0eep"', "name", "control characters"),
    ],
)
def test_bad_sweeps_are_refused_naming_the_field(text: str, field: str, message: str) -> None:
    errors = refused(load_sweep, "base: {task: digits-mlp, optimizer: adamw, steps: 30}\n" + text)
    assert field in errors and message in errors[field], errors


def test_a_base_component_that_is_no_mapping_is_named() -> None:
    sweep = load_sweep("base: {task: digits-mlp, optimizer: 5}\ngrid: {optimizer.lr: [0.1]}\n")
    with pytest.raises(SpecError) as caught:
        build(sweep)
    assert caught.value.errors[0].field == "base.optimizer"


def test_what_still_loads_keeps_loading() -> None:
    spec = load_spec(SPEC + f"seed: {MAX_SEED}\n")
    assert spec.seed == 2**63 - 1 and spec.steps == 50
    assert len(build(load_sweep(SWEEP))) == 8
    # a few aliases are fine (a block shared by two components), and YAML's merge key still works
    shared = load_sweep("base: {task: digits-mlp, optimizer: &lr {name: sgd, lr: 0.1}, steps: 20}\nname: &n shared\n")
    assert shared.name == "shared" and shared.base["optimizer"] == {"name": "sgd", "lr": 0.1}
    merged = load_sweep(
        "base: &b {task: digits-mlp, optimizer: sgd, steps: 20}\ngrid: {seed: [0]}\nname: merged\n"
        "early_stopping: {<<: {rule: median}, every: 5}\n"
    )
    assert merged.early_stopping.rule == "median" and merged.early_stopping.every == 5


def test_seed_bound_is_what_torch_accepts() -> None:
    """2**63 - 1 seeds torch (as every int64 column and Parquet does); the issue's 2**63 + ... is refused."""
    import torch

    torch.manual_seed(MAX_SEED)
    assert torch.initial_seed() == MAX_SEED
    with pytest.raises((RuntimeError, OverflowError, ValueError)):
        torch.manual_seed(2**64)  # past what torch takes at all
    assert refused(parse_spec, {**BASE, "seed": 2**64})["seed"].startswith("Input should be less than or equal")


def test_a_quadratic_within_the_memory_cap_is_accepted() -> None:
    big = parse_spec({**BASE, "task": {"name": "quadratic", "dim": 100_000}})  # 1,024 samples: 2.3 GiB by estimate
    assert big.task.dim == 100_000
    errors = refused(parse_spec, {**BASE, "task": {"name": "quadratic", "dim": 20_000, "n_samples": 1_000_000}})
    assert "task.n_samples" in errors and "dim × n_samples = 20,000,000,000" in errors["task.n_samples"]


# --- YAML 1.2 core schema ---------------------------------------------------------------------------------------------

# Reference values: the YAML 1.2.2 specification, 10.3.2 "Tag Resolution" of the core schema (independent of
# PyYAML, which implements YAML 1.1: there `1:30` is 90, `yes` is true, `010` is 8 and `1e-4` is text).
CORE = [
    ("1e-4", 1e-4), ("1E+3", 1000.0), (".5", 0.5), ("-1.5e3", -1500.0), ("1:30", "1:30"), ("yes", "yes"),
    ("on", "on"), ("True", True), ("false", False), ("010", 10), ("0o17", 15), ("0x1F", 31), ("1_000", "1_000"),
    ("2024-01-01", "2024-01-01"), ("~", None), ("null", None), ("-.inf", -math.inf), ("+12", 12),
]  # fmt: skip


@pytest.mark.parametrize(("scalar", "value"), CORE, ids=[s for s, _ in CORE])
def test_scalars_resolve_as_in_yaml_1_2(scalar: str, value: object) -> None:
    loaded = load_yaml(f"x: {scalar}", "spec")["x"]
    assert loaded == value and type(loaded) is type(value)
    assert math.isnan(load_yaml("x: .nan", "spec")["x"])


def test_explicit_tags_do_not_bring_yaml_1_1_numbers_back() -> None:
    assert "not an integer" in refused(load_spec, "steps: !!int 1:30")["spec"]
    assert "not a number" in refused(load_spec, "steps: !!float 1_0")["spec"]
    assert load_yaml("x: !!float 3", "spec")["x"] == 3.0


# --- what an error may quote --------------------------------------------------------------------------------------


def test_errors_quote_a_glance_of_the_input() -> None:
    huge = "x" * 60_000
    for errors in (
        refused(load_spec, SPEC + f'name: "{huge}"\n'),
        refused(load_spec, f'task: "{huge}"\noptimizer: adamw\n'),
        refused(parse_spec, {**BASE, huge: 1}),
        refused(parse_spec, {**BASE, "device": huge}),
        refused(lambda t: build(load_sweep(t)), f"base: {{task: sgd}}\ngrid: {{optimizer.name: ['{huge}']}}\n"),
    ):
        for field, message in errors.items():
            assert len(field) <= MAX_FIELD and len(message) <= MAX_MESSAGE, (field[:50], message[:50])
            assert "x" * (MAX_QUOTE + 1) not in field + message
    assert quote("y" * 1000) == "'" + "y" * (MAX_QUOTE - 2) + "…"
    assert quote("short") == "'short'" and quote(2**80) == "1208925819614629174706176"


def test_quoting_a_hugely_shared_value_is_instant() -> None:
    """The Sweeps page freeze: a value box read by yaml.safe_load holds a billion shared leaves; quoting it walked
    them all. (The page then dumps its sweep to YAML for load_sweep, which refuses the aliases.)"""
    value: Any = ["lol"] * 9
    for _ in range(8):
        value = [value] * 9  # 9**9 leaves, 81 list objects
    with memory_peak() as peak:
        assert len(quote(value)) <= MAX_QUOTE
        errors = refused(parse_spec, {**BASE, "steps": value})
        assert "more than 10,000 values" in errors["spec"]
        page = {"name": "sweep", "base": BASE, "grid": {"optimizer.lr": value}}
        errors = refused(load_sweep, yaml.safe_dump(page))
        assert "sweep" in errors
    assert peak() < 64 * 2**20  # nothing walked or copied the 9**9 shared leaves


def test_already_parsed_data_is_walked_with_the_same_limits() -> None:
    deep: Any = 1
    for _ in range(60):
        deep = [deep]
    assert "nested deeper than 50" in refused(lambda d: check_tree(d, "spec"), deep)["spec"]
    check_tree({"a": [[1, 2], {"b": None}]}, "spec")


# --- files: bytes, encodings ----------------------------------------------------------------------------------------


def test_files_must_be_utf8_and_are_named() -> None:
    assert decode(SPEC.encode(), "spec", "run.yaml") == SPEC
    assert decode(b"\xef\xbb\xbf" + SPEC.encode(), "spec", "run.yaml") == SPEC  # a BOM is dropped
    latin = refused(lambda raw: decode(raw, "spec", "run.yaml"), "name: café\n".encode("latin-1"))["spec"]
    assert "run.yaml is not UTF-8 text (byte 0xe9 at offset 9)" in latin
    utf16 = refused(lambda raw: decode(raw, "spec", "run.yaml"), SPEC.encode("utf-16"))["spec"]
    assert "run.yaml is UTF-16 text; it must be UTF-8" in utf16
    big = refused(lambda raw: decode(raw, "spec", "run.yaml"), b"#" * (MAX_INPUT_BYTES + 1))["spec"]
    assert "over 65,536 bytes" in big


# --- the HTTP API reads bodies with the same functions -------------------------------------------------------------


def test_the_api_refuses_the_same_inputs() -> None:
    from app.api import Document, read_spec, read_sweep

    for text in (LAUGHS, SPEC + "steps: true\n", SPEC + "steps: 1:30\n", "a: " + "[" * 500):
        assert refused(lambda t: read_spec(Document(yaml_text=t)), text)
    errors = refused(lambda d: read_spec(Document(data=d)), {**BASE, "seed": 2**63})
    assert "seed" in errors
    errors = refused(lambda d: read_sweep(Document(data=d)), {"base": BASE, "grid": {"steps.x": [1, 2]}})
    assert "grid.steps.x" in errors


# --- every parameter of every registry has an upper bound and strict numbers ----------------------------------------

PARAMS = [
    (key, entry.name, p.name, p.kind)
    for key, registry in COMPONENTS.items()
    for entry in registry.values()
    for p in entry.params
    if p.kind in ("float", "int")
]


@pytest.mark.parametrize(("key", "entry", "param", "kind"), PARAMS, ids=[f"{k}.{e}.{p}" for k, e, p, _ in PARAMS])
def test_every_number_is_bounded_and_strict(key: str, entry: str, param: str, kind: str) -> None:
    spec = {**BASE, key: {**COMPONENTS[key][entry].defaults, "name": entry}}
    for absurd in (1e308, 2**80, True, "1"):
        if kind == "float" and absurd == 2**80:
            continue  # an int where a float goes is fine in range, and 2**80 is then caught as > bound below
        data = copy.deepcopy(spec)
        data[key][param] = absurd
        errors = refused(parse_spec, data)
        assert f"{key}.{param}" in errors, (absurd, errors)
    data = copy.deepcopy(spec)
    data[key][param] = float(2**80)
    assert f"{key}.{param}" in refused(parse_spec, data)


# --- property-based fuzzing ---------------------------------------------------------------------------------------

KEYS = ["name", "task", "optimizer", "schedule", "batch", "steps", "eval_every", "seed", "device", "lr", "size",
        "weight_decay", "warmup_steps", "dim", "n_samples", "base", "grid", "random", "samples", "low", "high",
        "optimizer.lr", "steps.x", "batch.size", "seed", "early_stopping", "rule", "grace_steps"]  # fmt: skip
WORDS = ["adamw", "sgd", "digits-mlp", "quadratic", "charlm-transformer", "cosine", "step", "adaptive", "auto",
         "1:30", "yes", "1e-4", "0.5, 0.75", "run\x00", "\ud800", "log", "asha", ""]  # fmt: skip
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.sampled_from([0, 1, 2, 64, 500, 2**31, 2**63, 1e308, -1.0, 0.003]),
    st.text(max_size=12),
    st.sampled_from(WORDS),
)
KEY = st.sampled_from(KEYS) | st.text(max_size=6)
VALUES = st.recursive(
    LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEY, inner, max_size=4), max_leaves=12
)
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def field_named(exc: SpecError) -> None:
    assert exc.errors
    for error in exc.errors:
        assert isinstance(error.field, str) and error.field and isinstance(error.message, str) and error.message
        assert len(error.field) <= MAX_FIELD and len(error.message) <= MAX_MESSAGE


def validates_or_names_fields(load: Any, data: Any) -> Any:
    try:
        return load(data)
    except SpecError as exc:
        field_named(exc)
        return None


VALID_FLAT = flatten(parse_spec({**BASE, "schedule": {"name": "warmup-cosine"}, "batch": {"name": "step"}}))


@st.composite
def mutated_specs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid spec (flattened: `optimizer.lr`, `batch.milestones`, ...) with a few keys replaced, removed or added."""
    flat = dict(VALID_FLAT)
    for _ in range(draw(st.integers(1, 4))):
        key = draw(st.sampled_from(sorted(flat)) | st.sampled_from(KEYS))
        if draw(st.booleans()) and key in flat:
            del flat[key]
        else:
            flat[key] = draw(VALUES)
    data: dict[str, Any] = {}
    for key, value in flat.items():  # unflatten, where a mutation may have put a number in place of a component
        head, _, tail = key.partition(".")
        if not tail:
            data[head] = value
        elif isinstance(data.setdefault(head, {}), dict):
            data[head][tail] = value
    if draw(st.integers(0, 4)) == 0:
        data[draw(st.sampled_from(list(COMPONENTS)))] = draw(VALUES)
    return data


@FUZZ
@given(st.one_of(mutated_specs(), VALUES))
def test_fuzz_run_specs_validate_or_name_their_fields(data: Any) -> None:
    spec = validates_or_names_fields(parse_spec, data)
    assert spec is None or isinstance(spec, RunSpec)


VALID_SWEEP = yaml.safe_load(SWEEP)


@st.composite
def mutated_sweeps(draw: st.DrawFn) -> Any:
    data = copy.deepcopy(VALID_SWEEP)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["top", "base", "grid", "random", "early_stopping"]))
        target = data if where == "top" else data.setdefault(where, {})
        if not isinstance(target, dict):
            continue
        key = draw(st.sampled_from(sorted(map(str, target)) or ["x"]) | st.sampled_from(KEYS) | st.text(max_size=8))
        target[key] = draw(VALUES)
    return data


@FUZZ
@given(st.one_of(mutated_sweeps(), VALUES))
def test_fuzz_sweeps_validate_and_build_or_name_their_fields(data: Any) -> None:
    sweep = validates_or_names_fields(parse_sweep, data)
    if sweep is not None:
        validates_or_names_fields(build, sweep)


YAML_BITS = st.sampled_from(["[", "]", "{", "}", ":", ", ", "- ", "&a ", "*a", "!!int ", "!!float ", "!!binary ",
                             "!!python/object ", "<<: ", "? ", "|\n", "'", '"', "\\0", "\n", "\n  ", "#", "\t", "%YAML",
                             "---", "1:30", "true", "1e308", "9" * 40, "\x00", "\x85", "\ufeff", "é"])  # fmt: skip


@st.composite
def mutated_text(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from([SPEC, SWEEP, '{"task": "digits-mlp", "optimizer": {"name": "sgd"}}']))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 3))
        text = text[:at] + draw(YAML_BITS | st.text(max_size=4)) + text[at + cut :]
    return text


@FUZZ
@given(st.one_of(mutated_text(), VALUES.map(lambda v: yaml.safe_dump(v, allow_unicode=True)), st.text(max_size=80)))
def test_fuzz_yaml_text_loads_or_names_fields(text: str) -> None:
    validates_or_names_fields(load_spec, text)
    sweep = validates_or_names_fields(load_sweep, text)
    if sweep is not None:
        validates_or_names_fields(build, sweep)


@FUZZ
@given(
    st.one_of(
        mutated_text().map(lambda t: t.encode("utf-8", "surrogatepass")),
        mutated_text().map(lambda t: t.encode("utf-16")),
        st.binary(max_size=200),
        st.just(LAUGHS.encode()),
    )
)
def test_fuzz_the_clis_reader_accepts_or_exits_2_with_field_errors(raw: bytes) -> None:
    """The CLI's own read-and-parse (`app.cli._parse`): a spec, or exit 2 with `error: FIELD: message` lines and
    "nothing was queued" (it returns before the store or the queue is opened)."""
    from app import cli

    with tempfile.NamedTemporaryFile(suffix=".yaml", delete=False) as file:
        file.write(raw)
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            for what, parse in (("spec", load_spec), ("sweep", lambda t: build(load_sweep(t)))):
                try:
                    cli._parse(file.name, what, parse)
                except SystemExit as exc:
                    assert exc.code == 2
                    lines = stderr.getvalue().splitlines()
                    assert lines[-1] == "nothing was queued" and len(lines) >= 2
                    assert all(line.startswith("error: ") and ": " in line[7:] for line in lines[:-1]), lines
                    stderr.seek(0)
                    stderr.truncate()
    finally:
        os.unlink(file.name)


# --- the real command: refused before anything is queued ----------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "content", "field"),
    [
        ("submit", LAUGHS.encode(), "error: spec: more than 20 YAML aliases"),
        ("submit", (SPEC + "steps: true\n").encode(), "error: steps: Input should be a valid integer (got True)"),
        ("submit", (SPEC + "name: café\n").encode("latin-1"), "error: spec: "),
        ("sweep", b"base: {task: digits-mlp, optimizer: sgd}\ngrid: {steps.x: [1, 2]}\n", "error: grid.steps.x: "),
    ],
)
def test_the_cli_exits_2_and_queues_nothing(
    sqlite_url: str, tmp_path: Path, command: str, content: bytes, field: str
) -> None:
    from db.store import Store

    path = tmp_path / "input.yaml"
    path.write_bytes(content)
    env = {**os.environ, "DATABASE_URL": sqlite_url, "REDIS_URL": "redis://127.0.0.1:9/0"}  # nothing listens on 9
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", command, str(path)], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert field in result.stderr and "nothing was queued" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert len(result.stderr) < 2_000
    assert Store.from_url(sqlite_url).list_runs() == []
