"""The HTTP API: what the CLI and scripts do, over HTTP. `python -m app.api` serves it (`make run` starts it beside
the UI); the OpenAPI schema is at /openapi.json and browsable at /docs.

Who is calling is a chain of dependencies: the bearer token (`Authorization: Bearer olab_…`) → the account it
belongs to (`current_principal`); with auth off (`OPTLAB_AUTH` unset), a request without a token acts as the one
local admin. Every route then asks `app.accounts.require` through one of two dependencies: `may(action)` (the
caller's role allows the action at all) or `run_for(action)` (… and on this run: owner-only actions need its
owner or an admin). tests/test_api.py walks every route and fails if one has neither, so a new route cannot
forget. Refusals are JSON: 401 (no or bad token), 403 `{"detail": "not allowed: …"}`, 404, 409, 413 (a body over
1 MB), 415, 422 `{"detail": …, "errors": [{"field", "message"}]}`, 429 (over quota), 503 (queue down:
the runs stay queued, `run_ids` in the body).

Routes stay thin: they call `Store`, `workers.celery_app` and `app.export`. Responses never carry password hashes
or token digests (a token itself is returned once, when it is created).
"""

import argparse
import json
import math
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBasic, HTTPBasicCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DataError

from app.accounts import PERMISSIONS, Action, Forbidden, Principal, login, new_token, require, token_principal
from db.store import ACTIVE, STATUSES, RunInfo, Store, SweepInfo, TokenInfo
from workers.celery_app import QueueUnavailable, QuotaExceeded
from workers.settings import get_settings
from workers.spec import FieldError, RunSpec, SpecError, load_spec, parse_spec

PREFIX = "/api/v1"
MAX_BODY_BYTES = 1_000_000
MAX_YAML_BYTES = 64_000  # PyYAML is pure Python here: ~1 s for 64 KB of the worst input; a sweep is ~1 KB
MAX_ID = 2**31 - 1  # ids, steps and priorities are 32-bit integers in PostgreSQL
MAX_MESSAGE = 500  # an error message quoting a huge input is cut here
NAME_PATTERN = r"^[^\x00-\x1f\x7f]+$"  # no control characters (PostgreSQL refuses NUL in text)
JSON_TYPES = ("application/json",)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
Status = Literal["queued", "running", "completed", "failed", "diverged", "cancelled", "stopped"]
assert set(Status.__args__) == set(STATUSES)  # type: ignore[attr-defined]

RunId = Annotated[int, Path(ge=1, le=MAX_ID, description="a run's id")]
SweepId = Annotated[int, Path(ge=1, le=MAX_ID, description="a sweep's id")]
TokenId = Annotated[int, Path(ge=1, le=MAX_ID, description="a token's id")]
IdItem = Annotated[int, Field(ge=1, le=MAX_ID)]
MetricName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


# --- who is calling -------------------------------------------------------------------------------------------


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


StoreDep = Annotated[Store, Depends(_store)]
_bearer = HTTPBearer(auto_error=False, description="a personal API token, `olab_…` (POST /api/v1/tokens)")
_basic = HTTPBasic(auto_error=False, description="an account's name and password: only to create a token")


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


def current_principal(
    store: StoreDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    """The account a bearer token belongs to. Without one: the local admin when auth is off, else 401. A token that
    is given but unknown, revoked or expired is refused even with auth off (the caller meant someone)."""
    from app.accounts import local_principal

    if credentials is not None:
        who = token_principal(store, credentials.credentials)
        if who is None:
            raise _unauthorized("the token is unknown, revoked or expired")
        return who
    if not get_settings().auth:
        return local_principal(store)
    raise _unauthorized("a token is needed: send `Authorization: Bearer olab_…` (see POST /api/v1/tokens)")


Caller = Annotated[Principal, Depends(current_principal)]


def _decides(action: Action, dependency: Callable[..., Any]) -> Callable[..., Any]:
    dependency.__optlab_action__ = action  # type: ignore[attr-defined]  # read by the route-coverage test
    return dependency


def may(action: Action) -> Callable[..., Principal]:
    """A dependency: the caller, if their role allows `action` at all (for owner-only actions, on a run of their
    own: the run itself is checked by `run_for`)."""

    def dependency(who: Caller) -> Principal:
        return require(who, action, who.id)

    return _decides(action, dependency)


def run_for(action: Action) -> Callable[..., RunInfo]:
    """A dependency: the run named in the path, if the caller may do `action` on it (403 before 404 for a role that
    may never do it; then 404 for no such run; then the owner check)."""

    def dependency(who: Annotated[Principal, Depends(may(action))], store: StoreDep, run_id: RunId) -> RunInfo:
        run = store.get_run(run_id)
        if run is None:
            raise HTTPException(404, f"no run {run_id}")
        require(who, action, run.owner_id)
        return run

    return _decides(action, dependency)


Reader = Annotated[Principal, Depends(may("read"))]
Launcher = Annotated[Principal, Depends(may("launch"))]


# --- bodies ---------------------------------------------------------------------------------------------------


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is answered 413 before any route reads it."""

    def __init__(self, app: Callable[..., Awaitable[None]], limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[..., Any], send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self._refuse(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:  # read it all now (at most `limit` bytes), so that a chunked body is limited too
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, given = b"".join(chunks), False

        async def replay() -> Any:
            nonlocal given
            if given:
                return await receive()
            given = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: MutableMapping[str, Any], receive: Callable[..., Any], send: Any) -> None:
        response = JSONResponse({"detail": f"the request body is over {self.limit:,} bytes"}, status_code=413)
        await response(scope, receive, send)


@dataclass(frozen=True)
class Document:
    """A spec or sweep as sent: parsed JSON, or YAML text (parsed by the same function as the CLI's)."""

    data: Any = None
    yaml_text: str | None = None


async def _document(request: Request) -> Document:
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    raw = await request.body()
    if kind in YAML_TYPES:
        if len(raw) > MAX_YAML_BYTES:
            raise HTTPException(413, f"a YAML body is limited to {MAX_YAML_BYTES:,} bytes (send JSON for more)")
        try:
            return Document(yaml_text=raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise SpecError([FieldError("body", "not UTF-8 text")]) from None
    if kind not in JSON_TYPES and not kind.endswith("+json"):
        raise HTTPException(415, f"send JSON (application/json) or YAML (application/yaml), not {kind!r}")

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not a number JSON allows")

    try:
        return Document(data=json.loads(raw, parse_constant=refuse))
    except (ValueError, RecursionError) as exc:
        raise SpecError([FieldError("body", f"not valid JSON: {exc}")]) from None


def _spec_body(example: dict[str, Any], schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """The OpenAPI request body of a route that reads a `Document` itself."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": schema or {"type": "object"}, "example": example},
                "application/yaml": {"schema": {"type": "string"}},
            },
        }
    }


def _guarded(parse: Callable[[], Any], what: str) -> Any:
    """Run a parser; what it raises that is not a SpecError (a 5,000-digit integer, nesting deeper than Python's
    stack) is still bad input: 422, not 500."""
    try:
        return parse()
    except SpecError:
        raise
    except (ValueError, RecursionError, TypeError) as exc:
        raise SpecError([FieldError(what, f"cannot be read: {exc}")]) from None


def read_spec(document: Document) -> RunSpec:
    """The spec, by the CLI's own functions: YAML through `workers.inputs.load_yaml` (size, aliases, nesting
    capped before anything grows), JSON through the same depth and size walk."""
    if document.yaml_text is not None:
        text = document.yaml_text
        return _guarded(lambda: load_spec(text), "spec")  # type: ignore[no-any-return]
    return _guarded(lambda: parse_spec(document.data), "spec")  # type: ignore[no-any-return]


def read_sweep(document: Document) -> tuple[Any, list[RunSpec]]:
    """The sweep and its expanded, validated runs (SpecError naming the run and field otherwise)."""
    from workers.sweep import build, load_sweep, parse_sweep

    if document.yaml_text is not None:
        text = document.yaml_text
        sweep = _guarded(lambda: load_sweep(text), "sweep")
    else:
        sweep = _guarded(lambda: parse_sweep(document.data), "sweep")
    return sweep, _guarded(lambda: build(sweep), "sweep")


# --- what goes out --------------------------------------------------------------------------------------------


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunOut(Model):
    id: int
    name: str
    status: str
    owner: str | None = Field(description="the owner's account name (None once the account is removed)")
    owner_id: int | None
    sweep_id: int | None
    priority: int
    queue: str = Field(description="the device queue it asked for: auto, cpu or cuda")
    progress: int = Field(description="steps done")
    steps: int
    eta_seconds: float | None = Field(description="at the pace so far; None unless running")
    created_at: float
    started_at: float | None
    finished_at: float | None
    heartbeat_at: float | None
    worker: str | None
    device: str | None
    cancel_requested: bool
    error: str | None
    attempts: int = Field(description="workers this run has lost (it was queued again to resume after each)")
    resumed_from: int = Field(description="the checkpoint step the current (or last) attempt began at; 0: none")
    pack_id: int | None = Field(None, description="the pack it trains in, with the rest of its sweep's pack as one "
                                "vectorised model; null: alone")  # fmt: skip
    pack_size: int | None = Field(None, description="how many runs its pack was made of")
    spec: dict[str, Any]

    @classmethod
    def of(cls, run: RunInfo, owners: dict[int, str]) -> "RunOut":
        return cls(
            id=run.id, name=run.name, status=run.status, owner=owners.get(run.owner_id or -1), owner_id=run.owner_id,
            sweep_id=run.sweep_id, priority=run.priority, queue=run.queue, progress=run.progress, steps=run.steps,
            eta_seconds=run.eta_seconds(), created_at=run.created_at, started_at=run.started_at,
            finished_at=run.finished_at, heartbeat_at=run.heartbeat_at, worker=run.worker, device=run.device,
            cancel_requested=run.cancel_requested, error=run.error, attempts=run.attempts,
            resumed_from=run.resumed_from, pack_id=run.pack_id, pack_size=run.pack_size, spec=run.spec,
        )  # fmt: skip


class SweepOut(Model):
    id: int
    name: str
    owner: str | None
    owner_id: int | None
    created_at: float
    counts: dict[str, int] = Field(description="its runs in each status")
    spec: dict[str, Any]

    @classmethod
    def of(cls, sweep: SweepInfo, owners: dict[int, str], counts: dict[str, int]) -> "SweepOut":
        return cls(
            id=sweep.id, name=sweep.name, owner=owners.get(sweep.owner_id or -1), owner_id=sweep.owner_id,
            created_at=sweep.created_at, counts=counts, spec=sweep.spec,
        )  # fmt: skip


class SweepCreated(Model):
    id: int
    name: str
    runs: list[int] = Field(description="the ids of its runs, queued")


class SweepPlan(Model):
    name: str
    runs: list[str] = Field(description="the name of each run the sweep would queue (nothing is queued)")


class MetricsOut(Model):
    """Long rows as columns: row i is (step[i], metric[i], value[i]). Values that are not finite are the strings
    "NaN", "inf" and "-inf" (JSON has no such numbers)."""

    run_id: int
    after: int = Field(description="the cursor sent: only rows with a larger step are here")
    cursor: int = Field(description="send this as `after` next time: the last step here (or `after` if none)")
    step: list[int]
    metric: list[str]
    value: list[float | str]


class Me(Model):
    id: int
    name: str
    role: str
    actions: list[str] = Field(description="what the role allows (cancel, rerun, delete, prioritise: own runs)")
    auth: bool = Field(description="False: the server runs without accounts and everyone is the local admin")


class TokenOut(Model):
    id: int
    name: str
    prefix: str = Field(description="the token's first characters, to tell tokens apart")
    created_at: float
    last_used_at: float | None
    expires_at: float | None

    @classmethod
    def of(cls, info: TokenInfo) -> "TokenOut":
        return cls(id=info.id, name=info.name, prefix=info.prefix, created_at=info.created_at,
                   last_used_at=info.last_used_at, expires_at=info.expires_at)  # fmt: skip


class TokenCreated(TokenOut):
    token: str = Field(description="the token itself: shown this once, stored only as a digest")


class TokenIn(Model):
    name: str = Field(min_length=1, max_length=100, pattern=NAME_PATTERN, description="what it is for: `laptop`")
    expires_in_days: float | None = Field(None, gt=0, le=3650, allow_inf_nan=False)


class PriorityIn(Model):
    priority: int = Field(ge=-MAX_ID, le=MAX_ID, description="within its owner's queue: higher goes first")


class Done(Model):
    id: int
    status: str
    message: str


def _owners(store: Store) -> dict[int, str]:
    return {user.id: user.name for user in store.list_users()}


def _value(v: float) -> float | str:
    if math.isfinite(v):
        return float(v)
    return "NaN" if math.isnan(v) else ("inf" if v > 0 else "-inf")


class Invalid(ValueError):
    """A request the schema allows but that makes no sense (422, naming the field)."""

    def __init__(self, field: str, message: str) -> None:
        self.field, self.message = field, message
        super().__init__(f"{field}: {message}")


def _error_body(detail: str, errors: list[tuple[str, str]]) -> dict[str, Any]:
    return {"detail": detail, "errors": [{"field": f, "message": m[:MAX_MESSAGE]} for f, m in errors]}


def export_table(
    store: Store, ids: list[int], *, parquet: bool, sweep: bool = False, summary: bool = False,
    target: tuple[str, float] | None = None,
) -> tuple[Any, int]:  # fmt: skip
    """The same files as `app.cli export`: the runs' CSV (one row per run and step), a sweep's long CSV, the long
    table as Parquet, or the summary (one row per run). Returns a binary file positioned at its start (streamed
    into it a chunk at a time: kept in memory up to 16 MiB, then on disk) and the row count."""
    import io
    import tempfile

    from app import export

    file: Any = tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024)  # noqa: SIM115 (closed by _file)
    try:
        if summary:
            frame = export.summary_frame(store, ids, target)
            file.write(export.parquet_bytes(frame) if parquet else export.frame_csv_bytes(frame))
            rows = len(frame)
        elif parquet:
            rows = export.write_long_parquet(store, ids, file)
        else:
            text = io.TextIOWrapper(file, encoding="utf-8", newline="", write_through=True)
            rows = (export.write_long_csv if sweep else export.write_csv)(store, ids, text)
            text.flush()
            text.detach()
        file.seek(0)
    except BaseException:
        file.close()
        raise
    return file, rows


def _file(data: Any, rows: int, runs: int, filename: str) -> Response:
    """Stream the export's file (see `export_table`) in 1 MiB pieces, closing it at the end."""
    from fastapi.responses import StreamingResponse

    def pieces() -> Any:
        with data:
            while piece := data.read(1024 * 1024):
                yield piece

    parquet = filename.endswith(".parquet")
    return StreamingResponse(
        pieces(),
        media_type="application/vnd.apache.parquet" if parquet else "text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "X-Rows": str(rows),
                 "X-Runs": str(runs)},
    )  # fmt: skip


FILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/csv": {"schema": {"type": "string"}}, "application/vnd.apache.parquet": {}},
        "description": "the file; headers X-Rows and X-Runs count what it holds",
    }
}


# --- the app --------------------------------------------------------------------------------------------------


def create_app(store_url: str | None = None) -> FastAPI:
    """The API over one store (the settings' DATABASE_URL unless given)."""
    from workers import celery_app

    store = Store.from_url(store_url or get_settings().database_url)
    app = FastAPI(
        title="Optimizer Lab API",
        version="1",
        description="Submit runs and sweeps, follow them, cancel, export. Authenticate with a personal token: "
        "`Authorization: Bearer olab_…`.",
    )
    app.state.store = store
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)  # type: ignore[arg-type]

    @app.exception_handler(Forbidden)
    def forbidden(_request: Request, exc: Forbidden) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.exception_handler(SpecError)
    def invalid_spec(_request: Request, exc: SpecError) -> JSONResponse:
        errors = [(e.field, e.message) for e in exc.errors]
        return JSONResponse(_error_body("invalid spec: nothing was queued", errors), status_code=422)

    @app.exception_handler(Invalid)
    def invalid(_request: Request, exc: Invalid) -> JSONResponse:
        return JSONResponse(_error_body("invalid request", [(exc.field, exc.message)]), status_code=422)

    @app.exception_handler(RequestValidationError)
    def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for e in exc.errors():
            loc = [str(p) for p in e.get("loc", ())]
            errors.append((".".join(loc[1:] if len(loc) > 1 else loc) or "request", str(e.get("msg", "invalid"))))
        return JSONResponse(_error_body("invalid request", errors), status_code=422)

    @app.exception_handler(QuotaExceeded)
    def over_quota(_request: Request, exc: QuotaExceeded) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=429)

    @app.exception_handler(QueueUnavailable)
    def queue_down(_request: Request, exc: QueueUnavailable) -> JSONResponse:
        # The runs are recorded as queued all the same (a worker sends their messages once the queue is back):
        # their ids are in the body, so a client does not submit them twice.
        body = {"detail": str(exc), "run_ids": exc.run_ids, "sweep_id": exc.sweep_id}
        return JSONResponse(body, status_code=503)

    @app.exception_handler(DataError)
    def refused_by_database(_request: Request, exc: DataError) -> JSONResponse:
        return JSONResponse({"detail": f"the database refused a value: {exc.orig}"[:MAX_MESSAGE]}, status_code=422)

    @app.get(f"{PREFIX}/health", tags=["server"])
    def health() -> dict[str, bool]:
        """Public: the server answers (no token needed)."""
        return {"ok": True}

    @app.get(f"{PREFIX}/me", tags=["accounts"])
    def me(who: Reader) -> Me:
        """Who the token belongs to, and what their role allows."""
        actions = sorted(PERMISSIONS.get(who.role, frozenset()))
        return Me(id=who.id, name=who.name, role=who.role, actions=actions, auth=get_settings().auth)

    # --- runs -------------------------------------------------------------------------------------------------

    @app.post(
        f"{PREFIX}/runs", status_code=201, tags=["runs"],
        openapi_extra=_spec_body({"task": "digits-mlp", "optimizer": {"name": "adamw", "lr": 0.003}, "steps": 500}),
    )  # fmt: skip
    def submit_run(who: Launcher, store: StoreDep, document: Annotated[Document, Depends(_document)]) -> RunOut:
        """Validate a run spec (JSON, or YAML with `Content-Type: application/yaml`) and queue it, owned by the
        caller. 422 names each invalid field; 429 over the caller's quota; 503 if the queue cannot be reached."""
        run_id = celery_app.submit(store, read_spec(document), owner_id=who.id)
        run = store.get_run(run_id)
        assert run is not None
        return RunOut.of(run, {who.id: who.name})

    @app.get(f"{PREFIX}/runs", tags=["runs"])
    def list_runs(
        who: Reader,
        store: StoreDep,
        owner: Annotated[
            str | None, Query(max_length=64, pattern=NAME_PATTERN, description="`me` or an account name")
        ] = None,
        status: Annotated[list[Status] | None, Query(description="any of these statuses (repeatable)")] = None,
        sweep: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
        limit: Annotated[int, Query(ge=1, le=10_000, description="at most this many, newest first")] = 1000,
    ) -> list[RunOut]:
        """Runs, newest first."""
        owner_id = None
        if owner == "me":
            owner_id = who.id
        elif owner is not None:
            user = store.get_user(name=owner)
            if user is None:
                raise HTTPException(404, f"no account {owner!r}")
            owner_id = user.id
        store.mark_lost_runs(get_settings().heartbeat_timeout_s)
        runs = store.list_runs(statuses=status, sweep_id=sweep, owner_id=owner_id)[:limit]
        owners = _owners(store)
        return [RunOut.of(run, owners) for run in runs]

    @app.get(f"{PREFIX}/runs/{{run_id}}", tags=["runs"])
    def get_run(run: Annotated[RunInfo, Depends(run_for("read"))], store: StoreDep) -> RunOut:
        """One run (a run whose worker went silent is marked failed first, as everywhere)."""
        if store.mark_lost_runs(get_settings().heartbeat_timeout_s):
            run = store.get_run(run.id) or run
        return RunOut.of(run, _owners(store))

    @app.post(f"{PREFIX}/runs/{{run_id}}/cancel", tags=["runs"])
    def cancel_run(run: Annotated[RunInfo, Depends(run_for("cancel"))], store: StoreDep) -> Done:
        """Owner or admin: cancel a queued run at once; ask a running one to stop at its next flush. A finished run
        is left as it is (its status comes back)."""
        status = store.request_cancel(run.id) or run.status
        if status == "running":
            message = "cancel requested; it stops at its next flush (within a second or two)"
        else:
            message = status
        return Done(id=run.id, status=status, message=message)

    @app.post(f"{PREFIX}/runs/{{run_id}}/rerun", tags=["runs"])
    def rerun_run(run: Annotated[RunInfo, Depends(run_for("rerun"))], store: StoreDep) -> Done:
        """Owner or admin: queue a run that failed, diverged, was cancelled or stopped again (its metrics are
        dropped). 409 for a run in any other state; 429 if it would take its owner over their queue quota."""
        from db.store import RERUNNABLE

        if run.status not in RERUNNABLE:
            raise HTTPException(409, f"run {run.id} is {run.status}; only {', '.join(RERUNNABLE)} runs can be re-run")
        celery_app.check_quota(store, run.owner_id, [parse_spec(run.spec)])
        if not celery_app.rerun(store, [run.id]):
            raise HTTPException(409, f"run {run.id} changed state meanwhile; nothing was queued")
        return Done(id=run.id, status="queued", message="queued again")

    @app.patch(f"{PREFIX}/runs/{{run_id}}", tags=["runs"])
    def prioritise_run(
        run: Annotated[RunInfo, Depends(run_for("prioritise"))], store: StoreDep, body: PriorityIn
    ) -> RunOut:
        """Owner or admin: set the run's priority within its owner's queue (higher goes first)."""
        store.set_priority(run.id, body.priority)
        changed = store.get_run(run.id)
        if changed is None:
            raise HTTPException(404, f"no run {run.id}")
        return RunOut.of(changed, _owners(store))

    @app.delete(f"{PREFIX}/runs/{{run_id}}", status_code=204, tags=["runs"])
    def delete_run(run: Annotated[RunInfo, Depends(run_for("delete"))], store: StoreDep) -> Response:
        """Owner or admin: delete a finished run and its metrics (409 for a queued or running one: cancel it
        first)."""
        if run.status in ACTIVE:
            raise HTTPException(409, f"run {run.id} is {run.status}: cancel it first")
        store.delete_runs([run.id])
        return Response(status_code=204)

    @app.get(f"{PREFIX}/runs/{{run_id}}/metrics", tags=["runs"])
    def run_metrics(
        run: Annotated[RunInfo, Depends(run_for("read"))],
        store: StoreDep,
        after: Annotated[int, Query(ge=0, le=MAX_ID, description="the last step you hold; 0 for all")] = 0,
        names: Annotated[list[MetricName] | None, Query(max_length=50, description="only these metrics")] = None,
    ) -> MetricsOut:
        """The run's metric rows newer than the cursor `after`, ordered by step."""
        frame = store.metrics([run.id], names=names, after={run.id: after})
        steps = [int(s) for s in frame["step"]]
        return MetricsOut(
            run_id=run.id, after=after, cursor=max(steps, default=after), step=steps,
            metric=[str(m) for m in frame["metric"]], value=[_value(float(v)) for v in frame["value"]],
        )  # fmt: skip

    @app.get(f"{PREFIX}/runs/{{run_id}}/export.csv", tags=["export"], responses=FILE_RESPONSES)
    def export_run_csv(run: Annotated[RunInfo, Depends(run_for("read"))], store: StoreDep) -> Response:
        """The run as CSV: one row per step, the spec flattened into columns, one column per metric; text cells a
        spreadsheet would run as a formula are prefixed with '."""
        data, rows = export_table(store, [run.id], parquet=False)
        return _file(data, rows, 1, f"run-{run.id}.csv")

    @app.get(f"{PREFIX}/runs/{{run_id}}/export.parquet", tags=["export"], responses=FILE_RESPONSES)
    def export_run_parquet(run: Annotated[RunInfo, Depends(run_for("read"))], store: StoreDep) -> Response:
        """The run as Parquet: the long table (run_id, run_name, step, metric, value)."""
        data, rows = export_table(store, [run.id], parquet=True)
        return _file(data, rows, 1, f"run-{run.id}.parquet")

    def export_many(
        store: Store, fmt: str, run: list[int] | None, every: bool, sweep: int | None, summary: bool,
        target: float | None, target_metric: str,
    ) -> Response:  # fmt: skip
        chosen = [name for name, given in (("run", bool(run)), ("all", every), ("sweep", sweep is not None)) if given]
        if len(chosen) != 1:
            raise Invalid("run", "give exactly one of run=ID (repeatable), all=true or sweep=ID")
        if sweep is not None:
            if store.get_sweep(sweep) is None:
                raise HTTPException(404, f"no sweep {sweep}")
            ids = [r.id for r in store.list_runs(sweep_id=sweep)]
        else:
            ids = [r.id for r in store.list_runs()] if every else list(dict.fromkeys(run or []))
        missing = sorted(set(ids) - {r.id for r in store.list_runs(ids=ids)})
        if missing:
            raise HTTPException(404, f"no run {', '.join(map(str, missing))}")
        data, rows = export_table(
            store, ids, parquet=fmt == "parquet", sweep=sweep is not None, summary=summary,
            target=(target_metric, target) if target is not None else None,
        )  # fmt: skip
        kind = "summary" if summary else (f"sweep-{sweep}" if sweep is not None else "runs")
        return _file(data, rows, len(ids), f"optimizer-lab-{kind}.{fmt}")

    ExportRuns = Annotated[list[IdItem] | None, Query(max_length=1000, description="run ids (repeatable)")]
    ExportAll = Annotated[bool, Query(alias="all", description="every run")]
    ExportSweep = Annotated[int | None, Query(ge=1, le=MAX_ID, description="every run of a sweep: the long table")]
    ExportSummary = Annotated[bool, Query(description="one row per run: spec, final and best metrics, status")]
    ExportTarget = Annotated[
        float | None, Query(allow_inf_nan=False, description="with summary: when each run first reached this")
    ]
    ExportTargetMetric = Annotated[MetricName, Query(description="the metric `target` applies to")]

    @app.get(f"{PREFIX}/export.csv", tags=["export"], responses=FILE_RESPONSES)
    def export_csv(
        _who: Reader, store: StoreDep, run: ExportRuns = None, every: ExportAll = False, sweep: ExportSweep = None,
        summary: ExportSummary = False, target: ExportTarget = None, target_metric: ExportTargetMetric = "loss",
    ) -> Response:  # fmt: skip
        """Several runs as CSV, as `app.cli export`: runs (`run=1&run=2`, or `all=true`) one row per run and step;
        a sweep (`sweep=ID`) the long table; `summary=true` one row per run."""
        return export_many(store, "csv", run, every, sweep, summary, target, target_metric)

    @app.get(f"{PREFIX}/export.parquet", tags=["export"], responses=FILE_RESPONSES)
    def export_parquet(
        _who: Reader, store: StoreDep, run: ExportRuns = None, every: ExportAll = False, sweep: ExportSweep = None,
        summary: ExportSummary = False, target: ExportTarget = None, target_metric: ExportTargetMetric = "loss",
    ) -> Response:  # fmt: skip
        """The same selections as Parquet: the long table (run_id, run_name, varying fields, step, metric, value),
        or with `summary=true` one row per run."""
        return export_many(store, "parquet", run, every, sweep, summary, target, target_metric)

    # --- sweeps -----------------------------------------------------------------------------------------------

    sweep_example = {"name": "lr", "base": {"task": "digits-mlp", "optimizer": "adamw", "steps": 300},
                     "grid": {"optimizer.lr": [0.001, 0.003, 0.01]}}  # fmt: skip

    @app.post(f"{PREFIX}/sweeps", status_code=201, tags=["sweeps"], openapi_extra=_spec_body(sweep_example))
    def submit_sweep(who: Launcher, store: StoreDep, document: Annotated[Document, Depends(_document)]) -> SweepCreated:
        """Expand a sweep (JSON, or YAML with `Content-Type: application/yaml`), validate every run and queue them
        all, owned by the caller, or none: 422 names the run and field; 429 over the caller's quota."""
        sweep, specs = read_sweep(document)
        sweep_id = celery_app.submit_sweep(store, sweep.name, sweep.model_dump(mode="json"), specs, owner_id=who.id)
        runs = sorted(r.id for r in store.list_runs(sweep_id=sweep_id))
        return SweepCreated(id=sweep_id, name=sweep.name, runs=runs)

    @app.post(f"{PREFIX}/sweeps/plan", tags=["sweeps"], openapi_extra=_spec_body(sweep_example))
    def plan_sweep(_who: Reader, document: Annotated[Document, Depends(_document)]) -> SweepPlan:
        """Expand and validate a sweep and list its runs; nothing is queued (`app.cli sweep --dry-run`)."""
        sweep, specs = read_sweep(document)
        return SweepPlan(name=sweep.name, runs=[spec.name for spec in specs])

    @app.get(f"{PREFIX}/sweeps", tags=["sweeps"])
    def list_sweeps(_who: Reader, store: StoreDep) -> list[SweepOut]:
        """Sweeps, newest first, with how many of their runs are in each status."""
        owners, counts = _owners(store), store.sweep_counts()
        return [SweepOut.of(s, owners, counts.get(s.id, {})) for s in store.list_sweeps()]

    @app.get(f"{PREFIX}/sweeps/{{sweep_id}}", tags=["sweeps"])
    def get_sweep(_who: Reader, store: StoreDep, sweep_id: SweepId) -> SweepOut:
        sweep = store.get_sweep(sweep_id)
        if sweep is None:
            raise HTTPException(404, f"no sweep {sweep_id}")
        return SweepOut.of(sweep, _owners(store), store.sweep_counts().get(sweep_id, {}))

    # --- the caller's own tokens ------------------------------------------------------------------------------

    def token_owner(
        store: StoreDep,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        basic: Annotated[HTTPBasicCredentials | None, Depends(_basic)],
    ) -> Principal:
        """Who creates a token: the bearer of one, or an account's name and password (HTTP Basic), so that a user
        can make a first token without the UI."""
        if basic is not None and bearer is None:
            who = login(store, basic.username, basic.password)
            if who is None:
                raise HTTPException(401, "wrong name or password", headers={"WWW-Authenticate": "Basic"})
            return require(who, "read")
        return require(current_principal(store, bearer), "read")

    @app.get(f"{PREFIX}/tokens", tags=["accounts"])
    def list_tokens(who: Reader, store: StoreDep) -> list[TokenOut]:
        """The caller's live tokens (never the tokens themselves)."""
        return [TokenOut.of(t) for t in store.list_tokens(who.id)]

    @app.post(f"{PREFIX}/tokens", status_code=201, tags=["accounts"])
    def create_token(
        who: Annotated[Principal, Depends(_decides("read", token_owner))], store: StoreDep, body: TokenIn
    ) -> TokenCreated:
        """A new personal token for the caller. The token is in this response only: the server keeps its digest."""
        expires = time.time() + body.expires_in_days * 86400 if body.expires_in_days else None
        token_id, token = new_token(store, who.id, body.name, expires)
        info = next(t for t in store.list_tokens(who.id) if t.id == token_id)
        return TokenCreated(**TokenOut.of(info).model_dump(), token=token)

    @app.delete(f"{PREFIX}/tokens/{{token_id}}", status_code=204, tags=["accounts"])
    def revoke_token(who: Reader, store: StoreDep, token_id: TokenId) -> Response:
        """Revoke one of the caller's tokens (404 if the caller has no live token with this id)."""
        if not store.revoke_token(token_id, user_id=who.id):
            raise HTTPException(404, f"no live token {token_id} of yours")
        return Response(status_code=204)

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from app.accounts import ensure_first_admin

    args = argparse.ArgumentParser(description="Serve the Optimizer Lab HTTP API.")
    args.add_argument("--host", default=os.environ.get("OPTLAB_API_ADDRESS", "127.0.0.1"))
    args.add_argument("--port", type=int, default=int(os.environ.get("OPTLAB_API_PORT", "8502")))
    opts = args.parse_args(argv)
    settings = get_settings()
    app = create_app()
    if settings.auth:
        ensure_first_admin(app.state.store, settings.admin_user, settings.admin_password)
    uvicorn.run(app, host=opts.host, port=opts.port, server_header=False, log_level="info")


if __name__ == "__main__":
    main()
