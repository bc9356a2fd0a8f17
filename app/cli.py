"""Command line: `python -m app.cli {submit,sweep,status,cancel,export,user,list}`.

Exit codes: 0 success; 1 the run failed, diverged or was cancelled (`submit --wait`), or the queue is down;
2 bad input (an invalid spec names each offending field; nothing is queued).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from db.store import FINISHED, RunInfo, Store
from workers.settings import get_settings
from workers.spec import SpecError, load_spec

REGISTRY_NAMES = ("optimizers", "schedules", "batch-policies", "tasks")
T = TypeVar("T")


def _store() -> Store:
    from db.migrate import upgrade

    url = get_settings().database_url
    upgrade(url)
    return Store.from_url(url)


def _fmt_run(run: RunInfo) -> str:
    spec = run.spec
    eta = run.eta_seconds()
    progress = f"{run.progress}/{run.steps}" + (f" eta {eta:.0f}s" if eta is not None else "")
    return (
        f"{run.id:>5}  {run.status:<10} {progress:<18} {run.name[:40]:<40} "
        f"{spec['task']['name']:<12} {spec['optimizer']['name']:<8} lr={spec['optimizer']['lr']:g}"
    )


def _parse(path: str, what: str, parse: Callable[[str], T]) -> T:
    """Read a spec file (or stdin for -) and parse it; on any problem print field-named errors and exit 2."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        print(f"error: {what}: cannot read {path}: {exc.strerror}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        return parse(text)
    except SpecError as exc:
        for error in exc.errors:
            print(f"error: {error}", file=sys.stderr)
        print("nothing was queued", file=sys.stderr)
        raise SystemExit(2) from None


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
    except QueueUnavailable as exc:
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
    if args.dry_run:
        for spec in specs:
            print(spec.name)
        print(f"{len(specs)} runs (dry run: nothing queued)", file=sys.stderr)
        return 0
    store = _store()
    try:
        sweep_id = submit_sweep(store, sweep.name, sweep.model_dump(mode="json"), specs, owner_id=_owner(store))
    except QuotaExceeded as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except QueueUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(sweep_id)
    print(f"sweep {sweep_id}: {len(specs)} runs queued", file=sys.stderr)
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
            print(_fmt_run(run))
        return 0
    found = store.get_run(args.run_id)
    if found is None:
        print(f"error: run_id: no run {args.run_id}", file=sys.stderr)
        return 2
    print(_fmt_run(found))
    if found.worker:
        print(f"       worker {found.worker} on {found.device}")
    if found.error:
        print(f"       {found.error}")
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
    elif parquet:  # the long table
        frame = export.long_frame(store, ids)
        Path(args.output).write_bytes(export.parquet_bytes(frame))
        rows = len(frame)
    else:  # CSV, streamed one run at a time: long for a sweep, one row per step for runs
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


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m app.cli", description="Optimizer Lab from the command line.")
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

    p = sub.add_parser("list", help="print a registry: name, description, paper, defaults")
    p.add_argument("what", choices=REGISTRY_NAMES)
    p.set_defaults(func=cmd_list)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
