"""Command line: `python -m app.cli [--server URL] {submit,sweep,status,cancel,export,token,user,list}`.

Without `--server` it works on the database directly (DATABASE_URL: whoever can open it is its administrator).
With `--server URL` it calls that lab server's HTTP API (app/api.py) with the token in OPTLAB_TOKEN, else the one
in ~/.config/optlab/token, and acts as that token's account: same commands, output and exit codes.

Exit codes: 0 success; 1 the run failed, diverged or was cancelled (`submit --wait`), or the queue or the server is
down or unreachable (a queue that does not take the message within a few seconds: the run is recorded all the same,
its id printed, and it stays queued until a worker sends it); 2 bad input or a refusal (an invalid spec names each
offending field; nothing is queued; a refused token, a permission or a quota).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from db.store import FINISHED, RunInfo, Store
from workers.inputs import MAX_INPUT_BYTES, decode, shown
from workers.settings import get_settings
from workers.spec import SpecError, load_spec

REGISTRY_NAMES = ("optimizers", "schedules", "batch-policies", "tasks")
T = TypeVar("T")


def _store() -> Store:
    from db.migrate import upgrade

    url = get_settings().database_url
    upgrade(url)
    return Store.from_url(url)


def _fmt_run(run: RunInfo, eta: float | None) -> str:
    spec = run.spec
    progress = f"{run.progress}/{run.steps}" + (f" eta {eta:.0f}s" if eta is not None else "")
    return (
        f"{run.id:>5}  {run.status:<10} {progress:<18} {run.name[:40]:<40} "
        f"{spec['task']['name']:<12} {spec['optimizer']['name']:<8} lr={spec['optimizer']['lr']:g}"
    )


def _refuse(exc: SpecError) -> NoReturn:
    """Print each field-named error (clipped: they never echo a whole input) and exit 2."""
    for error in exc.errors:
        print(f"error: {error}", file=sys.stderr)
    print("nothing was queued", file=sys.stderr)
    raise SystemExit(2)


def _read(path: str, what: str) -> str:
    """A spec file's text (stdin for -): at most 64 KiB of UTF-8, read no further; exit 2 otherwise."""
    try:
        if path == "-":
            raw = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
        else:
            with open(path, "rb") as file:
                raw = file.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        print(f"error: {what}: cannot read {shown(path)}: {exc.strerror}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        return decode(raw, what, "standard input" if path == "-" else shown(path))
    except SpecError as exc:
        _refuse(exc)


def _parse(path: str, what: str, parse: Callable[[str], T]) -> T:
    """Read a spec file (or stdin for -) and parse it; on any problem print field-named errors and exit 2."""
    text = _read(path, what)
    try:
        return parse(text)
    except SpecError as exc:
        _refuse(exc)


def _owner(store: Store) -> int:
    """Whom a run submitted from this machine belongs to: the account named by OPTLAB_USER, else the local
    admin. (Whoever can open the database is its administrator; people use the UI or `--server` with a token.)"""
    from app.accounts import local_principal

    name = os.environ.get("OPTLAB_USER")
    if name:
        user = store.get_user(name=name)
        if user is None:
            print(f"error: OPTLAB_USER: no account {name!r} (python -m app.cli user list)", file=sys.stderr)
            raise SystemExit(2)
        return user.id
    return local_principal(store).id


def cmd_submit(args: argparse.Namespace) -> int:
    from workers.celery_app import QueueUnavailable, QuotaExceeded, submit

    spec = _parse(args.spec, "spec", load_spec)
    store = _store()
    try:
        run_id = submit(store, spec, owner_id=_owner(store))
    except QuotaExceeded as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except QueueUnavailable as exc:  # the run is recorded and stays queued: say its id, and why exit 1
        print(*exc.run_ids, flush=True)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(run_id, flush=True)
    if not args.wait:
        return 0
    return _wait(store, run_id, args.timeout)


def cmd_sweep(args: argparse.Namespace) -> int:
    from workers.celery_app import QueueUnavailable, QuotaExceeded, submit_sweep
    from workers.spec import RunSpec
    from workers.sweep import SweepSpec, build, load_sweep

    def expand(text: str) -> tuple[SweepSpec, list[RunSpec]]:
        sweep = load_sweep(text)
        return sweep, build(sweep)

    sweep, specs = _parse(args.spec, "sweep", expand)
    from workers.packed import packing_summary

    trains = packing_summary(specs, sweep.packing)
    if args.dry_run:
        for spec in specs:
            print(spec.name)
        print(f"{len(specs)} runs, trained {trains} (dry run: nothing queued)", file=sys.stderr)
        return 0
    store = _store()
    try:
        sweep_id = submit_sweep(store, sweep.name, sweep.model_dump(mode="json"), specs, owner_id=_owner(store))
    except QuotaExceeded as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except QueueUnavailable as exc:  # the sweep is recorded and its runs stay queued
        print(exc.sweep_id, flush=True)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(sweep_id)
    print(f"sweep {sweep_id}: {len(specs)} runs queued, to train {trains}", file=sys.stderr)
    return 0


def _wait(store: Store, run_id: int, timeout: float | None) -> int:
    deadline = None if timeout is None else time.monotonic() + timeout
    settings = get_settings()
    while True:
        store.mark_lost_runs(settings.heartbeat_timeout_s)
        run = store.get_run(run_id)
        assert run is not None
        if run.status in FINISHED:
            detail = f": {run.error}" if run.error else ""
            print(f"run {run_id} {run.status}{detail}", file=sys.stderr)
            return 0 if run.status == "completed" else 1
        if deadline is not None and time.monotonic() > deadline:
            print(f"run {run_id} still {run.status} after {timeout:g} s", file=sys.stderr)
            return 1
        time.sleep(0.5)


def cmd_status(args: argparse.Namespace) -> int:
    store = _store()
    store.mark_lost_runs(get_settings().heartbeat_timeout_s)
    if args.run_id is None:
        runs = store.list_runs()
        if not runs:
            print("no runs yet: python -m app.cli submit SPEC.yaml")
        for run in runs:
            print(_fmt_run(run, run.eta_seconds()))
        return 0
    found = store.get_run(args.run_id)
    if found is None:
        print(f"error: run_id: no run {args.run_id}", file=sys.stderr)
        return 2
    print(_fmt_run(found, found.eta_seconds()))
    if found.worker:
        print(f"       worker {found.worker} on {found.device}")
    if found.pack_id is not None:
        print(f"       trained in pack {found.pack_id} ({found.pack_size} runs, as one vectorised model)")
    if found.error:
        print(f"       {found.error}")
    events = store.run_events(found.id)
    if len(events) > 1:  # more than "submitted": say how it got here
        print("       history:")
        for event in events:
            at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.at))
            print(f"         {at}  {event.status:<9} {event.reason or ''}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    status = _store().request_cancel(args.run_id)
    if status is None:
        print(f"error: run_id: no run {args.run_id}", file=sys.stderr)
        return 2
    if status == "running":
        print(f"run {args.run_id}: cancel requested; it stops at its next flush (within a second or two)")
    else:
        print(f"run {args.run_id}: {status}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from app import export

    store = _store()
    if args.sweep is not None:
        if store.get_sweep(args.sweep) is None:
            print(f"error: --sweep: no sweep {args.sweep}", file=sys.stderr)
            return 2
        ids = [r.id for r in store.list_runs(sweep_id=args.sweep)]
    else:
        ids = [r.id for r in store.list_runs()] if args.all else args.run
    missing = sorted(set(ids) - {r.id for r in store.list_runs(ids=ids)})
    if missing:
        print(f"error: --run: no run {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    parquet = args.output.endswith(".parquet")
    if args.summary:  # one row per run
        frame = export.summary_frame(store, ids, (args.target_metric, args.target) if args.target is not None else None)
        Path(args.output).write_bytes(export.parquet_bytes(frame) if parquet else export.frame_csv_bytes(frame))
        rows = len(frame)
    elif parquet:  # the long table, streamed a chunk at a time (one row group each)
        with open(args.output, "wb") as binary:
            rows = export.write_long_parquet(store, ids, binary)
    else:  # CSV, streamed a chunk at a time: long for a sweep, one row per step for runs
        write = export.write_long_csv if args.sweep is not None else export.write_csv
        with open(args.output, "w", newline="", encoding="utf-8") as out:
            rows = write(store, ids, out)
    print(f"wrote {rows} rows for {len(ids)} run(s) to {args.output}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from models.tasks import TASKS
    from workers.batching import BATCH_POLICIES
    from workers.optimizers import OPTIMIZERS
    from workers.schedules import SCHEDULES

    registry = dict(zip(REGISTRY_NAMES, (OPTIMIZERS, SCHEDULES, BATCH_POLICIES, TASKS), strict=True))[args.what]
    for entry in registry.values():
        print(f"{entry.name}\n    {entry.description}\n    paper: {entry.paper}")
        for p in entry.params:
            bounds = p.describe_range()
            print(
                f"    {p.name} = {p.default!r}"
                + (f"  ({bounds})" if bounds else "")
                + (f"  {p.help}" if p.help else "")
            )
    return 0


def _password(args: argparse.Namespace) -> str:
    """A new password: from stdin with --password-stdin (scripts), else asked twice at the terminal."""
    import getpass

    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if first != getpass.getpass("again: "):
        print("error: password: the two entries differ", file=sys.stderr)
        raise SystemExit(2)
    return first


def cmd_user(args: argparse.Namespace) -> int:
    """Accounts, managed by whoever can reach the database (the server's admin): add, passwd, role, remove, list."""
    from app.accounts import ROLES, hash_password
    from db.store import Conflict

    store = _store()
    if args.action == "list":
        for u in store.list_users():
            limits = ", ".join(
                f"{k}={v:g}" for k, v in (("running", u.max_running), ("queued", u.max_queued),
                                           ("gpu_h/week", u.gpu_hours_per_week)) if v is not None
            )  # fmt: skip
            print(f"{u.id:>4}  {u.name:<24} {u.role:<7} share={u.share:g}" + (f"  {limits}" if limits else ""))
        return 0
    if args.name is None:
        print(f"error: name: `user {args.action}` needs an account name", file=sys.stderr)
        return 2
    user = store.get_user(name=args.name)
    if args.action == "add":
        role = args.role or "member"
        if role not in ROLES:
            print(f"error: role: one of {', '.join(ROLES)}, not {role!r}", file=sys.stderr)
            return 2
        try:
            hashed = None if args.no_password else hash_password(_password(args))
            store.create_user(args.name, role, hashed, email=args.email)
        except (ValueError, Conflict) as exc:
            print(f"error: {'name' if isinstance(exc, Conflict) else 'password'}: {exc}", file=sys.stderr)
            return 2
        print(f"added {args.name} ({role})")
        return 0
    if user is None:
        print(f"error: name: no account {args.name!r}", file=sys.stderr)
        return 2
    if args.action == "passwd":
        try:
            store.update_user(user.id, password_hash=hash_password(_password(args)))
        except ValueError as exc:
            print(f"error: password: {exc}", file=sys.stderr)
            return 2
        print(f"password of {args.name} changed")
    elif args.action == "role":
        if args.role not in ROLES:
            print(f"error: role: one of {', '.join(ROLES)}", file=sys.stderr)
            return 2
        store.update_user(user.id, role=args.role)
        print(f"{args.name} is now {args.role}")
    elif args.action == "remove":
        store.remove_user(user.id)
        print(f"removed {args.name} (their runs stay, without an owner)")
    return 0


# --- API tokens -------------------------------------------------------------------------------------------------


def token_path() -> Path:
    """Where `--server` looks for a token when OPTLAB_TOKEN is unset: $XDG_CONFIG_HOME/optlab/token."""
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "optlab" / "token"


def _when(t: float | None, never: str = "never") -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else never


def _fmt_token(t: dict[str, Any]) -> str:
    return (f"{t['id']:>4}  {t['name'][:24]:<24} {t['prefix']}…  created {_when(t['created_at'])}  "
            f"last used {_when(t['last_used_at'])}  expires {_when(t['expires_at'])}")  # fmt: skip


def _emit_token(token: str, token_id: int, owner: str, save: bool) -> None:
    """Print a new token (stdout: the token alone, for scripts) and, with --save, keep it in `token_path()`."""
    print(token)
    if save:
        path = token_path()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
        os.chmod(path, 0o600)
        where = f"saved in {path}"
    else:
        where = f"put it in OPTLAB_TOKEN or {token_path()}"
    print(f"token {token_id} of {owner}: shown this once ({where})", file=sys.stderr)


def _token_args(args: argparse.Namespace) -> tuple[str | None, int | None]:
    """`token create NAME` / `token revoke ID`: the name or id the action needs; exit 2 when it is missing."""
    if args.action == "list":
        return None, None
    if args.target is None:
        print(f"error: {'name' if args.action == 'create' else 'id'}: `token {args.action}` needs one", file=sys.stderr)
        raise SystemExit(2)
    if args.action == "create":
        return args.target, None
    if not args.target.isdigit():
        print(f"error: id: a token id is a number (token list), not {args.target!r}", file=sys.stderr)
        raise SystemExit(2)
    return None, int(args.target)


def cmd_token(args: argparse.Namespace) -> int:
    """Personal API tokens for `--server` and scripts, on the database directly: for --user NAME, else for
    OPTLAB_USER or the local admin."""
    from dataclasses import asdict

    from app.accounts import new_token

    name, token_id = _token_args(args)
    store = _store()
    user = store.get_user(name=args.user) if args.user else store.get_user(user_id=_owner(store))
    if user is None:
        print(f"error: --user: no account {args.user!r} (python -m app.cli user list)", file=sys.stderr)
        return 2
    if args.action == "list":
        for info in store.list_tokens(user.id):
            print(_fmt_token(asdict(info)))
        return 0
    if args.action == "create":
        assert name is not None
        expires = time.time() + args.expires_days * 86400 if args.expires_days else None
        new_id, token = new_token(store, user.id, name[:100], expires)
        _emit_token(token, new_id, user.name, args.save)
        return 0
    assert token_id is not None
    if not store.revoke_token(token_id, user_id=user.id):
        print(f"error: id: {user.name} has no live token {token_id}", file=sys.stderr)
        return 2
    print(f"token {token_id} of {user.name} revoked")
    return 0


# --- --server URL: the same commands through a lab server's HTTP API --------------------------------------------


class Remote:
    """A lab server's API. Refusals become `error: …` lines and an exit: 2 for what the server refused (4xx), 1
    for a server that cannot be reached or fails (5xx)."""

    def __init__(self, url: str, token: str | None) -> None:
        import httpx

        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=f"{self.url}/api/v1", headers=headers, timeout=300)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Remote:
        token = os.environ.get("OPTLAB_TOKEN", "").strip()
        if not token:
            try:
                token = token_path().read_text().strip()
            except OSError:
                token = ""
        return cls(args.server, token or None)

    def call(self, method: str, path: str, missing: str = "run_id", refused: str = "token", **kwargs: Any) -> Any:
        """The response of a successful call; otherwise print why and exit. `missing` names the argument a 404
        is about, `refused` what a 401 is about."""
        import httpx

        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            print(f"error: server: cannot reach {self.url}: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        if response.status_code < 400:
            return response
        try:
            body = response.json()
        except ValueError:
            body = {}
        detail = body.get("detail") if isinstance(body, dict) else None
        detail = detail if isinstance(detail, str) else response.text[:500] or response.reason_phrase
        if response.status_code >= 500:
            print(f"error: server: {response.status_code} {detail}", file=sys.stderr)
            raise SystemExit(1)
        if response.status_code == 401 and refused == "token":
            print(f"error: token: {detail} (OPTLAB_TOKEN, or {token_path()})", file=sys.stderr)
        elif response.status_code == 401:
            print(f"error: {refused}: {detail}", file=sys.stderr)
        elif response.status_code == 404:
            print(f"error: {missing}: {detail}", file=sys.stderr)
        elif response.status_code == 422 and isinstance(body.get("errors"), list):
            for error in body["errors"]:
                print(f"error: {error.get('field')}: {error.get('message')}", file=sys.stderr)
            if detail.endswith("nothing was queued"):
                print("nothing was queued", file=sys.stderr)
        else:
            print(f"error: {detail}", file=sys.stderr)
        raise SystemExit(2)

    def run(self, run_id: int) -> tuple[RunInfo, float | None]:
        data = self.call("GET", f"/runs/{run_id}").json()
        return _run_info(data), data.get("eta_seconds")


def _run_info(data: dict[str, Any]) -> RunInfo:
    """A run as the API sent it (fields this CLI knows and the server did not send keep their defaults)."""
    from dataclasses import fields

    return RunInfo(**{f.name: data[f.name] for f in fields(RunInfo) if f.name in data})


YAML = {"Content-Type": "application/yaml"}


def remote_submit(args: argparse.Namespace) -> int:
    remote = Remote.from_args(args)
    text = _read(args.spec, "spec")
    run_id = int(remote.call("POST", "/runs", content=text.encode(), headers=YAML).json()["id"])
    print(run_id, flush=True)
    if not args.wait:
        return 0
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    while True:
        run, _ = remote.run(run_id)
        if run.status in FINISHED:
            detail = f": {run.error}" if run.error else ""
            print(f"run {run_id} {run.status}{detail}", file=sys.stderr)
            return 0 if run.status == "completed" else 1
        if deadline is not None and time.monotonic() > deadline:
            print(f"run {run_id} still {run.status} after {args.timeout:g} s", file=sys.stderr)
            return 1
        time.sleep(1.0)


def remote_sweep(args: argparse.Namespace) -> int:
    remote = Remote.from_args(args)
    text = _read(args.spec, "sweep").encode()
    if args.dry_run:
        plan = remote.call("POST", "/sweeps/plan", content=text, headers=YAML).json()
        for name in plan["runs"]:
            print(name)
        print(f"{len(plan['runs'])} runs (dry run: nothing queued)", file=sys.stderr)
        return 0
    created = remote.call("POST", "/sweeps", content=text, headers=YAML).json()
    print(created["id"])
    print(f"sweep {created['id']}: {len(created['runs'])} runs queued", file=sys.stderr)
    return 0


def remote_status(args: argparse.Namespace) -> int:
    remote = Remote.from_args(args)
    if args.run_id is None:
        runs = remote.call("GET", "/runs", params={"limit": 10_000}).json()
        if not runs:
            print("no runs yet: python -m app.cli --server URL submit SPEC.yaml")
        for data in runs:
            print(_fmt_run(_run_info(data), data.get("eta_seconds")))
        return 0
    found, eta = remote.run(args.run_id)
    print(_fmt_run(found, eta))
    if found.worker:
        print(f"       worker {found.worker} on {found.device}")
    if found.pack_id is not None:
        print(f"       trained in pack {found.pack_id} ({found.pack_size} runs, as one vectorised model)")
    if found.error:
        print(f"       {found.error}")
    return 0


def remote_cancel(args: argparse.Namespace) -> int:
    done = Remote.from_args(args).call("POST", f"/runs/{args.run_id}/cancel").json()
    print(f"run {args.run_id}: {done['message']}")
    return 0


def remote_export(args: argparse.Namespace) -> int:
    remote = Remote.from_args(args)
    params: dict[str, Any] = {"summary": args.summary, "target_metric": args.target_metric}
    if args.sweep is not None:
        params["sweep"] = args.sweep
    elif args.all:
        params["all"] = True
    else:
        params["run"] = args.run
    if args.target is not None:
        params["target"] = args.target
    kind = "parquet" if args.output.endswith(".parquet") else "csv"
    missing = "--sweep" if args.sweep is not None else "--run"
    response = remote.call("GET", f"/export.{kind}", missing=missing, params=params)
    Path(args.output).write_bytes(response.content)
    print(f"wrote {response.headers.get('X-Rows')} rows for {response.headers.get('X-Runs')} run(s) to {args.output}")
    return 0


def remote_token(args: argparse.Namespace) -> int:
    """The caller's own tokens on the server. `token create NAME --login USER` signs in with a password instead of
    a token, to make a first one."""
    name, token_id = _token_args(args)
    remote = Remote.from_args(args)
    if args.action == "list":
        for info in remote.call("GET", "/tokens").json():
            print(_fmt_token(info))
        return 0
    if args.action == "revoke":
        remote.call("DELETE", f"/tokens/{token_id}", missing="id")
        print(f"token {token_id} revoked")
        return 0
    body = {"name": name, "expires_in_days": args.expires_days}
    if args.login:
        import httpx

        if not args.password_stdin:
            import getpass

            password = getpass.getpass(f"password of {args.login}: ")
        else:
            password = sys.stdin.readline().rstrip("\n")
        remote.client.headers.pop("Authorization", None)
        login = httpx.BasicAuth(args.login, password)
        created = remote.call("POST", "/tokens", refused="--login", json=body, auth=login).json()
    else:
        created = remote.call("POST", "/tokens", json=body).json()
    owner = args.login or remote.call("GET", "/me").json()["name"]
    _emit_token(created["token"], created["id"], owner, args.save)
    return 0


REMOTE: dict[str, Callable[[argparse.Namespace], int]] = {
    "submit": remote_submit, "sweep": remote_sweep, "status": remote_status, "cancel": remote_cancel,
    "export": remote_export, "token": remote_token,
}  # fmt: skip


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m app.cli", description="Optimizer Lab from the command line.")
    root.add_argument(
        "--server", metavar="URL", help="a lab server (http://host:8502) to call through its HTTP API, with the token "
        "in OPTLAB_TOKEN or ~/.config/optlab/token; without it, the database (DATABASE_URL) is used directly",
    )  # fmt: skip
    sub = root.add_subparsers(dest="command", required=True)

    p = sub.add_parser("submit", help="validate a YAML/JSON spec and queue it; prints the run id")
    p.add_argument("spec", help="path to a YAML or JSON run spec, or - for stdin")
    p.add_argument("--wait", action="store_true", help="wait for the end; exit 0 only if the run completes")
    p.add_argument("--timeout", type=float, default=None, help="with --wait: give up after this many seconds")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("sweep", help="expand a sweep (grid and random ranges over any field) and queue its runs")
    p.add_argument("spec", help="path to a YAML or JSON sweep, or - for stdin")
    p.add_argument("--dry-run", action="store_true", help="validate and list the runs; queue nothing")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("status", help="list runs, or show one")
    p.add_argument("run_id", nargs="?", type=int)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("cancel", help="cancel a queued or running run")
    p.add_argument("run_id", type=int)
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser(
        "export",
        help="write runs as CSV or Parquet",
        description="Runs (--run/--all): one row per run and step, a column per metric. A sweep (--sweep): the "
        "long table, one row per run, step and metric. --summary: one row per run. FILE.parquet writes Parquet.",
    )
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--run", type=int, nargs="+", metavar="ID", help="run ids")
    group.add_argument("--all", action="store_true", help="every run")
    group.add_argument("--sweep", type=int, metavar="ID", help="every run of a sweep (long table)")
    p.add_argument("--summary", action="store_true", help="one row per run: spec, final and best metrics, status")
    p.add_argument("--target", type=float, help="with --summary: when each run first reached this value")
    p.add_argument("--target-metric", default="loss", help="the metric --target applies to (default: loss)")
    p.add_argument("-o", "--output", required=True, help="FILE.csv or FILE.parquet")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("user", help="manage accounts: add, passwd, role, remove, list")
    p.add_argument("action", choices=("add", "passwd", "role", "remove", "list"))
    p.add_argument("name", nargs="?", help="the account's name")
    p.add_argument("role", nargs="?", help="with `role` (and optionally `add`): admin, member or viewer")
    p.add_argument("--email", help="with add: the e-mail an OpenID Connect login maps to this account")
    p.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    p.add_argument("--no-password", action="store_true", help="with add: an account that logs in only by OIDC")
    p.set_defaults(func=cmd_user)

    p = sub.add_parser("token", help="personal API tokens: create NAME, list, revoke ID")
    p.add_argument("action", choices=("create", "list", "revoke"))
    p.add_argument("target", nargs="?", help="create: what the token is for (`laptop`); revoke: its id")
    p.add_argument("--user", help="without --server: whose token (default: OPTLAB_USER, else the local admin)")
    p.add_argument("--expires-days", type=float, help="with create: the token stops working after this many days")
    p.add_argument("--save", action="store_true", help="with create: also write it to ~/.config/optlab/token")
    p.add_argument("--login", metavar="USER", help="with --server: sign in with USER's password to create a token")
    p.add_argument("--password-stdin", action="store_true", help="with --login: read the password from stdin")
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("list", help="print a registry: name, description, paper, defaults")
    p.add_argument("what", choices=REGISTRY_NAMES)
    p.set_defaults(func=cmd_list)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.server is not None:
        if args.command == "user":
            print("error: --server: accounts are managed on the server itself (python -m app.cli user ...)",
                  file=sys.stderr)  # fmt: skip
            return 2
        if args.command in REMOTE:
            return REMOTE[args.command](args)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
