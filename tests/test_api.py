"""The HTTP API (app/api.py) through FastAPI's TestClient, over a real SQLite file and a real Redis: who may do what
(one test per owner-only verb, like full-stack-fastapi-template's), tokens, the metrics cursor, exports, quotas,
and a schemathesis run over the served OpenAPI schema that must never see a 5xx."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from app.accounts import new_token
from app.api import PREFIX, create_app
from db.store import Store
from tests.conftest import Stack
from workers.settings import get_settings

SPEC = {"task": "moons-mlp", "optimizer": {"name": "sgd", "lr": 0.1}, "steps": 50}
PUBLIC = {f"{PREFIX}/health"}  # the only route that answers without deciding who is calling


@dataclass
class Lab:
    """An API with auth on, four accounts and a token each."""

    client: TestClient
    store: Store
    ids: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    def headers(self, who: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}

    def call(
        self, who: str | None, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> Any:
        return self.client.request(method, PREFIX + path, headers={**self.headers(who), **(headers or {})}, **kwargs)

    def run(self, owner: str, status: str = "queued", name: str = "r") -> int:
        run_id = self.store.create_run(name, {**SPEC, "name": name}, owner_id=self.ids[owner])
        if status != "queued":
            self.store.record(run_id, [(1, "loss", 0.5), (2, "loss", 0.4)])
            self.store.finish(run_id, status, "stopped by the test")
        return run_id


def auth_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTLAB_AUTH", "1")
    get_settings.cache_clear()


@pytest.fixture
def lab(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    auth_on(monkeypatch)
    store = stack.store
    lab = Lab(TestClient(create_app(stack.db_url)), store)
    for name, role in (("root", "admin"), ("alice", "member"), ("bob", "member"), ("vera", "viewer")):
        lab.ids[name] = store.create_user(name, role)
        lab.tokens[name] = new_token(store, lab.ids[name], "test")[1]
    with lab.client:
        yield lab


def routes(app: Any) -> list[APIRoute]:
    return [r for r in app.routes if isinstance(r, APIRoute) and r.path.startswith(PREFIX)]


def decisions(route: APIRoute) -> set[str]:
    """The permission decisions (`may`/`run_for` dependencies) anywhere in the route's dependency tree."""
    found, stack = set(), list(route.dependant.dependencies)
    while stack:
        dependant = stack.pop()
        action = getattr(dependant.call, "__optlab_action__", None)
        if action:
            found.add(action)
        stack.extend(dependant.dependencies)
    return found


def sample_path(route: APIRoute) -> str:
    return route.path.replace("{run_id}", "1").replace("{sweep_id}", "1").replace("{token_id}", "1")


# --- every route decides -----------------------------------------------------------------------------------------


def test_every_route_decides_who_may_call_it(stack: Stack) -> None:
    """mlflow's authorization-coverage idea: a route nobody remembered to guard fails this test."""
    app = create_app(stack.db_url)
    unguarded = [r.path for r in routes(app) if r.path not in PUBLIC and not decisions(r)]
    assert unguarded == []
    assert len(routes(app)) >= 18


def test_anonymous_and_bad_tokens_get_401_on_every_route(lab: Lab) -> None:
    run_id = lab.run("alice")
    for route in routes(lab.client.app):
        if route.path in PUBLIC:
            continue
        for method in route.methods:
            for headers in ({}, {"Authorization": "Bearer olab_not-a-real-token"}, {"Authorization": "Basic x"}):
                response = lab.client.request(method, sample_path(route), headers=headers, json={})
                assert response.status_code == 401, (method, route.path, headers, response.text)
                assert response.headers["www-authenticate"] in ("Bearer", "Basic")
    assert lab.client.get(f"{PREFIX}/health").json() == {"ok": True}
    assert lab.store.get_run(run_id).status == "queued"  # type: ignore[union-attr]


def test_without_auth_a_request_without_token_is_the_local_admin_but_a_bad_token_is_refused(stack: Stack) -> None:
    client = TestClient(create_app(stack.db_url))
    me = client.get(f"{PREFIX}/me").json()
    assert (me["name"], me["role"], me["auth"]) == ("local", "admin", False)
    created = client.post(f"{PREFIX}/runs", json=SPEC)
    assert created.status_code == 201 and created.json()["owner"] == "local"
    assert client.get(f"{PREFIX}/me", headers={"Authorization": "Bearer olab_wrong"}).status_code == 401


# --- owner-only verbs: one test each ----------------------------------------------------------------------------

# verb → (method, path, body, the status the run needs for the verb to apply, the status after)
VERBS = {
    "cancel": ("POST", "/runs/{id}/cancel", None, "queued", "cancelled"),
    "rerun": ("POST", "/runs/{id}/rerun", None, "failed", "queued"),
    "delete": ("DELETE", "/runs/{id}", None, "failed", None),
    "prioritise": ("PATCH", "/runs/{id}", {"priority": 7}, "queued", "queued"),
}


@pytest.mark.parametrize("verb", VERBS)
def test_owner_only_verbs(lab: Lab, verb: str) -> None:
    method, path, body, before, after = VERBS[verb]
    mine, admins = lab.run("alice", before), lab.run("alice", before)
    for caller in ("bob", "vera"):  # another member, a viewer: refused, and nothing changes
        snapshot, metrics = lab.store.get_run(mine), lab.store.metrics([mine])
        response = lab.call(caller, method, path.format(id=mine), json=body)
        assert response.status_code == 403, response.text
        assert response.json() == {"detail": f"not allowed: {caller} cannot {verb} this"}
        assert lab.store.get_run(mine) == snapshot
        pd.testing.assert_frame_equal(lab.store.metrics([mine]), metrics)
    for caller, run_id in (("alice", mine), ("root", admins)):  # the owner, an admin: done
        response = lab.call(caller, method, path.format(id=run_id), json=body)
        assert response.status_code in (200, 204), response.text
        run = lab.store.get_run(run_id)
        assert (run.status if run else None) == after
        if verb == "prioritise":
            assert run is not None and run.priority == 7 and response.json()["priority"] == 7
        if verb == "rerun":
            assert lab.store.metrics([run_id]).empty  # a rerun starts afresh
    assert lab.call("alice", method, path.format(id=999_999), json=body).status_code == 404
    assert lab.call("vera", method, path.format(id=999_999), json=body).status_code == 403  # never allowed


def test_verbs_that_do_not_apply_are_409_and_change_nothing(lab: Lab) -> None:
    queued, done = lab.run("alice"), lab.run("alice", "completed")
    assert lab.call("alice", "DELETE", f"/runs/{queued}").status_code == 409  # cancel it first
    assert lab.call("alice", "POST", f"/runs/{queued}/rerun").status_code == 409
    assert lab.call("alice", "POST", f"/runs/{done}/rerun").status_code == 409
    assert lab.call("alice", "POST", f"/runs/{done}/cancel").json()["status"] == "completed"
    assert [lab.store.get_run(i).status for i in (queued, done)] == ["queued", "completed"]  # type: ignore[union-attr]


def test_viewers_read_everything_and_launch_nothing(lab: Lab) -> None:
    run_id = lab.run("alice", "completed")
    for path in ("/me", "/runs", f"/runs/{run_id}", f"/runs/{run_id}/metrics", f"/runs/{run_id}/export.csv",
                 f"/runs/{run_id}/export.parquet", f"/export.csv?run={run_id}", "/sweeps", "/tokens"):  # fmt: skip
        assert lab.call("vera", "GET", path).status_code == 200, path
    assert lab.call("vera", "POST", "/runs", json=SPEC).json() == {"detail": "not allowed: vera cannot launch"}
    sweep = {"base": SPEC, "grid": {"seed": [0, 1]}}
    assert lab.call("vera", "POST", "/sweeps", json=sweep).status_code == 403
    assert [r.id for r in lab.store.list_runs()] == [run_id] and lab.store.list_sweeps() == []


def test_members_launch_runs_and_sweeps_owned_by_them_and_list_by_owner(lab: Lab) -> None:
    created = lab.call("alice", "POST", "/runs", json=SPEC)
    assert created.status_code == 201
    run = created.json()
    assert run["owner"] == "alice" and run["status"] == "queued" and run["spec"]["optimizer"]["lr"] == 0.1
    yaml_body = "name: lr\nbase: {task: moons-mlp, optimizer: sgd, steps: 30}\ngrid: {optimizer.lr: [0.01, 0.1]}\n"
    yaml = {"Content-Type": "application/yaml"}
    plan = lab.call("bob", "POST", "/sweeps/plan", content=yaml_body, headers=yaml)
    assert plan.json() == {"name": "lr", "runs": ["lr [lr=0.01]", "lr [lr=0.1]"]}
    assert lab.store.list_sweeps() == []  # a plan queues nothing
    sweep = lab.call("bob", "POST", "/sweeps", content=yaml_body, headers=yaml).json()
    assert len(sweep["runs"]) == 2
    assert {r.owner_id for r in lab.store.list_runs(sweep_id=sweep["id"])} == {lab.ids["bob"]}
    (listed,) = lab.call("vera", "GET", "/sweeps").json()
    assert listed["owner"] == "bob" and listed["counts"] == {"queued": 2}
    assert [r["id"] for r in lab.call("alice", "GET", "/runs?owner=me").json()] == [run["id"]]
    assert sorted(r["id"] for r in lab.call("alice", "GET", "/runs?owner=bob").json()) == sweep["runs"]
    assert len(lab.call("alice", "GET", "/runs?status=queued&status=running").json()) == 3
    assert lab.call("alice", "GET", "/runs?status=completed").json() == []
    assert lab.call("alice", "GET", "/runs?owner=nobody").status_code == 404


def test_invalid_specs_are_422_naming_each_field_and_queue_nothing(lab: Lab) -> None:
    bad = lab.call("alice", "POST", "/runs", json={"task": "digits-mlp", "optimizer": {"name": "adamw", "lr": -1}})
    assert bad.status_code == 422
    assert {"field": "optimizer.lr", "message": "Input should be greater than 0 (got -1)"} in bad.json()["errors"]
    yaml = {"Content-Type": "application/yaml"}
    for body in ("task: [unclosed", "a: &x [1]\nb: *x\n", "steps: " + "9" * 5000, "[" * 60_000, "- " * 30_000):
        response = lab.call("alice", "POST", "/runs", content=body, headers=yaml)
        assert response.status_code == 422 and response.json()["errors"], body[:20]
    assert lab.call("alice", "POST", "/runs", content="[" * 100_000).status_code == 422  # as JSON
    assert lab.call("alice", "POST", "/runs", content="#" * 70_000, headers=yaml).status_code == 413  # YAML: 64 KB
    assert lab.call("alice", "POST", "/runs", content="x", headers={"Content-Type": "text/csv"}).status_code == 415
    too_big = lab.call("alice", "POST", "/runs", json={**SPEC, "name": "x" * 1_100_000})
    assert too_big.status_code == 413
    sweep = {"base": SPEC, "grid": {"optimizer.lr": [0.1, -1]}}
    errors = lab.call("alice", "POST", "/sweeps", json=sweep).json()["errors"]
    assert errors[0]["field"].startswith("run 2 (") and errors[0]["field"].endswith("optimizer.lr")
    assert lab.store.list_runs() == [] and lab.store.list_sweeps() == []


def test_bad_ids_and_cursors_are_422_not_500(lab: Lab) -> None:
    for path in ("/runs/abc", "/runs/0", "/runs/99999999999999999999", "/runs/1/metrics?after=-1",
                 "/runs/1/metrics?names=a%00b", "/export.csv?run=x", "/export.csv?all=true&summary=true&target=nan"):  # fmt: skip
        response = lab.call("alice", "GET", path)
        assert response.status_code in (404, 422), (path, response.text)
    assert lab.call("alice", "GET", "/export.csv").json()["errors"][0]["field"] == "run"
    assert lab.call("alice", "GET", "/export.csv?run=123").json() == {"detail": "no run 123"}


# --- tokens ------------------------------------------------------------------------------------------------------


def test_tokens_are_shown_once_listed_without_secrets_and_refused_once_revoked(lab: Lab) -> None:
    created = lab.call("alice", "POST", "/tokens", json={"name": "laptop", "expires_in_days": 30})
    assert created.status_code == 201
    token, token_id = created.json()["token"], created.json()["id"]
    mine = {"Authorization": f"Bearer {token}"}
    assert lab.client.get(f"{PREFIX}/me", headers=mine).json()["name"] == "alice"
    listed = lab.call("alice", "GET", "/tokens").text
    assert token not in listed and "digest" not in listed and '"laptop"' in listed
    assert lab.call("bob", "DELETE", f"/tokens/{token_id}").status_code == 404  # not bob's
    assert lab.client.get(f"{PREFIX}/me", headers=mine).status_code == 200
    assert lab.call("alice", "DELETE", f"/tokens/{token_id}").status_code == 204
    refused = lab.client.get(f"{PREFIX}/runs", headers=mine)
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]


def test_a_first_token_with_name_and_password(lab: Lab) -> None:
    from app.accounts import hash_password

    lab.store.update_user(lab.ids["bob"], password_hash=hash_password("a long password"))
    url = f"{PREFIX}/tokens"
    wrong = lab.client.post(url, json={"name": "cli"}, auth=("bob", "not it"))
    assert wrong.status_code == 401
    made = lab.client.post(url, json={"name": "cli"}, auth=("bob", "a long password"))
    assert made.status_code == 201
    me = lab.client.get(f"{PREFIX}/me", headers={"Authorization": f"Bearer {made.json()['token']}"}).json()
    assert me["name"] == "bob" and "cancel" in me["actions"] and "manage_users" not in me["actions"]
    assert lab.client.get(f"{PREFIX}/runs", auth=("bob", "a long password")).status_code == 401  # tokens only


def test_no_response_carries_a_password_hash_or_digest(lab: Lab) -> None:
    from app.accounts import hash_password

    lab.store.update_user(lab.ids["alice"], password_hash=hash_password("a long password"))
    lab.run("alice", "completed")
    for path in ("/me", "/runs", "/runs/1", "/sweeps", "/tokens"):
        text = lab.call("alice", "GET", path).text
        assert "argon2" not in text and "digest" not in text and lab.tokens["alice"] not in text, path


# --- metrics and exports -----------------------------------------------------------------------------------------


def test_metrics_after_a_cursor_returns_only_newer_rows(lab: Lab) -> None:
    run_id = lab.run("alice")
    rows = [(s, m, float(s) if m == "loss" else 0.1) for s in range(1, 11) for m in ("loss", "lr")]
    lab.store.record(run_id, [*rows, (11, "loss", math.nan), (12, "loss", math.inf)])
    everything = lab.call("vera", "GET", f"/runs/{run_id}/metrics").json()
    assert len(everything["step"]) == 22 and everything["cursor"] == 12
    newer = lab.call("vera", "GET", f"/runs/{run_id}/metrics?after=8&names=loss").json()
    assert newer["step"] == [9, 10, 11, 12] and set(newer["metric"]) == {"loss"}
    assert newer["value"] == [9.0, 10.0, "NaN", "inf"]  # JSON has no NaN: named, as in the CSV
    nothing = lab.call("vera", "GET", f"/runs/{run_id}/metrics?after=12").json()
    assert nothing["step"] == [] and nothing["cursor"] == 12


def test_csv_export_escapes_formula_cells_and_parquet_reads_back(lab: Lab) -> None:
    created = lab.call("alice", "POST", "/runs", json={**SPEC, "name": '=HYPERLINK("http://x")'}).json()
    lab.store.record(created["id"], [(1, "loss", 0.7), (2, "loss", 0.6)])
    for path in (f"/runs/{created['id']}/export.csv", f"/export.csv?run={created['id']}"):
        response = lab.call("vera", "GET", path)
        assert response.headers["content-type"].startswith("text/csv") and response.headers["x-rows"] == "2"
        frame = pd.read_csv(io.StringIO(response.text))
        assert list(frame.run_name) == ['\'=HYPERLINK("http://x")'] * 2 and list(frame.loss) == [0.7, 0.6]
    parquet = lab.call("vera", "GET", f"/runs/{created['id']}/export.parquet")
    long = pd.read_parquet(io.BytesIO(parquet.content))
    assert list(long.value) == [0.7, 0.6] and long.run_name.iloc[0].startswith("=")  # Parquet is not a spreadsheet
    summary = pd.read_csv(io.StringIO(lab.call("vera", "GET", "/export.csv?all=true&summary=true").text))
    assert list(summary.final_loss) == [0.6]


# --- quotas --------------------------------------------------------------------------------------------------------


def test_over_quota_is_429_with_the_limit_named_and_nothing_queued(lab: Lab) -> None:
    lab.store.update_user(lab.ids["alice"], max_queued=1)
    assert lab.call("alice", "POST", "/runs", json=SPEC).status_code == 201
    refused = lab.call("alice", "POST", "/runs", json=SPEC)
    assert refused.status_code == 429 and refused.json()["detail"].startswith("quota: alice may have 1 runs queued")
    sweep = lab.call("alice", "POST", "/sweeps", json={"base": SPEC, "grid": {"seed": [0, 1]}})
    assert sweep.status_code == 429
    assert len(lab.store.list_runs()) == 1 and lab.store.list_sweeps() == []
    assert lab.call("bob", "POST", "/runs", json=SPEC).status_code == 201  # bob's limits are his own


# --- fuzzing over the served schema ------------------------------------------------------------------------------


def test_generated_requests_never_get_a_server_error(lab: Lab) -> None:
    """schemathesis generates valid and invalid requests for every operation of the served OpenAPI schema, as an
    admin (so they reach past the permission checks); none may be answered 5xx. Bounded: a few examples per
    operation and mode, derandomized (the same cases every run), no deadline (a busy machine is slow, not wrong)."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error

    for owner in ("alice", "bob"):
        lab.run(owner)
        lab.run(owner, "failed")
    schema = schemathesis.openapi.from_asgi("/openapi.json", lab.client.app)
    headers = lab.headers("root")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 18
    nothing_to_break = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=10, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))  # fmt: skip
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case: Any) -> None:
                response = case.call(headers=headers)
                assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text[:500]}"
                case.validate_response(response, checks=[not_a_server_error])

            try:
                check()
            except Unsatisfiable:  # no parameter or body to make invalid
                assert mode == GenerationMode.NEGATIVE
                nothing_to_break.append(operation.label)
    assert nothing_to_break == [f"GET {PREFIX}/health"]
