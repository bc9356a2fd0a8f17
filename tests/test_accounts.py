"""Accounts: the permission rules as a table, argon2 passwords never stored in clear, API tokens stored as
digests and refused once revoked or expired, and `python -m app.cli user`. On SQLite and PostgreSQL."""

from __future__ import annotations

import time

import pytest

from app.accounts import (
    PERMISSIONS,
    Forbidden,
    Principal,
    allowed,
    ensure_first_admin,
    hash_password,
    local_principal,
    login,
    new_token,
    require,
    token_principal,
)
from db.store import Conflict, Store
from tests.conftest import Stack

ADMIN, ALICE, BOB, VIEWER = (Principal(1, "root", "admin"), Principal(2, "alice", "member"),
                             Principal(3, "bob", "member"), Principal(4, "vera", "viewer"))  # fmt: skip

# (who, action, owner of the run, allowed?)
RULES = [
    (ADMIN, "cancel", ALICE.id, True), (ADMIN, "delete", None, True), (ADMIN, "manage_users", None, True),
    (ALICE, "read", BOB.id, True), (ALICE, "launch", None, True),
    (ALICE, "cancel", ALICE.id, True), (ALICE, "rerun", ALICE.id, True), (ALICE, "delete", ALICE.id, True),
    (ALICE, "cancel", BOB.id, False), (ALICE, "rerun", BOB.id, False), (ALICE, "delete", BOB.id, False),
    (ALICE, "prioritise", BOB.id, False), (ALICE, "delete", None, False),  # an ownerless run is the admin's
    (ALICE, "manage_users", None, False), (ALICE, "manage_workers", None, False),
    (VIEWER, "read", ALICE.id, True), (VIEWER, "launch", None, False), (VIEWER, "cancel", VIEWER.id, False),
    (VIEWER, "delete", VIEWER.id, False),
    (None, "read", None, False), (None, "launch", None, False),
]  # fmt: skip


@pytest.mark.parametrize(("who", "action", "owner", "expected"), RULES)
def test_permission_rules(who: Principal | None, action: str, owner: int | None, expected: bool) -> None:
    assert allowed(who, action, owner) is expected  # type: ignore[arg-type]
    if not expected:
        with pytest.raises(Forbidden, match="not allowed"):
            require(who, action, owner)  # type: ignore[arg-type]


def test_every_action_is_decided_for_every_role() -> None:
    actions = set().union(*PERMISSIONS.values())
    assert {a for _, a, _, _ in RULES} == actions  # the table above covers every action there is
    assert PERMISSIONS["viewer"] == {"read"}


def test_passwords_are_argon2_and_never_stored_in_clear(store: Store) -> None:
    user_id = store.create_user("alice", "member", hash_password("correct horse"))
    stored = store.password_hash("alice")
    assert stored is not None and stored[1].startswith("$argon2id$") and "correct horse" not in stored[1]
    assert login(store, "alice", "correct horse") == Principal(user_id, "alice", "member")
    assert login(store, "alice", "wrong horse!") is None
    assert login(store, "nobody", "correct horse") is None
    with pytest.raises(ValueError, match="at least 8"):
        hash_password("short")
    with pytest.raises(Conflict):
        store.create_user("alice", "viewer")


def test_tokens_are_stored_as_digests_and_refused_once_revoked_or_expired(store: Store) -> None:
    alice = store.create_user("alice", "member")
    token_id, token = new_token(store, alice, "laptop")
    assert token.startswith("olab_") and len(token) > 40
    (info,) = store.list_tokens(alice)
    assert info.prefix == token[:12] and token not in repr(store.token_candidates(token[:12]))
    assert token_principal(store, token) == Principal(alice, "alice", "member")
    assert token_principal(store, token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert store.list_tokens(alice)[0].last_used_at is not None

    bob = store.create_user("bob", "member")
    assert not store.revoke_token(token_id, user_id=bob)  # not bob's to revoke
    assert store.revoke_token(token_id, user_id=alice)
    assert token_principal(store, token) is None and store.list_tokens(alice) == []

    _, old = new_token(store, alice, "old", expires_at=time.time() - 1)
    assert token_principal(store, old) is None


def test_runs_have_owners_and_removing_a_user_keeps_their_runs(store: Store) -> None:
    alice = store.create_user("alice", "member")
    mine = store.create_run("a", {"steps": 1}, owner_id=alice)
    store.create_run("b", {"steps": 1})
    assert [r.id for r in store.list_runs(owner_id=alice)] == [mine]
    assert store.active_counts(alice) == {"queued": 1, "running": 0}
    assert store.remove_user(alice)
    assert store.get_run(mine).owner_id is None  # type: ignore[union-attr]


def test_local_user_and_first_admin(store: Store) -> None:
    local = local_principal(store)
    assert local.role == "admin" and local_principal(store) == local  # created once
    assert ensure_first_admin(store, "root", "a long password")
    assert not ensure_first_admin(store, "root", "another password")  # exists: left alone
    assert login(store, "root", "a long password") is not None


def test_cli_user_commands(stack: Stack) -> None:
    added = stack.cli("user", "add", "alice", "--password-stdin", stdin="a fine password\n")
    assert added.returncode == 0, added.stderr
    assert "fine password" not in added.stdout + added.stderr
    short = stack.cli("user", "add", "bob", "--password-stdin", stdin="short\n")
    assert short.returncode == 2 and "error: password:" in short.stderr
    assert stack.cli("user", "role", "alice", "viewer").returncode == 0
    bad_role = stack.cli("user", "role", "alice", "king")
    assert bad_role.returncode == 2 and "error: role:" in bad_role.stderr
    listed = stack.cli("user", "list")
    assert "alice" in listed.stdout and "viewer" in listed.stdout
    assert stack.cli("user", "passwd", "alice", "--password-stdin", stdin="a better password\n").returncode == 0
    assert login(stack.store, "alice", "a better password") is not None
    assert stack.cli("user", "remove", "alice").returncode == 0
    missing = stack.cli("user", "remove", "alice")
    assert missing.returncode == 2 and "no account" in missing.stderr


def test_quotas_refuse_a_submission_with_the_limit_named_and_queue_nothing(stack: Stack) -> None:
    from workers.celery_app import QuotaExceeded, submit, submit_sweep
    from workers.spec import parse_spec

    store = stack.store
    alice = store.create_user("alice", "member")
    store.update_user(alice, max_queued=2, gpu_hours_per_week=1.0)
    spec = parse_spec({"task": "quadratic", "optimizer": "sgd", "steps": 5})
    submit(store, spec, owner_id=alice)
    submit(store, spec, owner_id=alice)
    with pytest.raises(QuotaExceeded, match="quota: alice may have 2 runs queued at once; 2 are queued"):
        submit(store, spec, owner_id=alice)
    with pytest.raises(QuotaExceeded):
        submit_sweep(store, "s", {"name": "s"}, [spec], owner_id=alice)
    assert len(store.list_runs(owner_id=alice)) == 2 and store.list_sweeps() == []
    submit(store, spec)  # someone else (no owner) is not limited by alice's quota

    store.update_user(alice, max_queued=None)
    used = store.create_run("gpu", {"steps": 1}, owner_id=alice)
    assert store.claim(used, "w", "cuda:0", stale_after=30) is not None
    from sqlalchemy import update

    from db.tables import Run

    with store.session() as s:  # it started two hours ago
        s.execute(update(Run).where(Run.id == used).values(started_at=time.time() - 2 * 3600))
    assert store.gpu_hours(alice, since=time.time() - 7 * 86400) == pytest.approx(2.0, abs=0.01)
    gpu = parse_spec({"task": "quadratic", "optimizer": "sgd", "steps": 5, "device": "cuda"})
    with pytest.raises(QuotaExceeded, match=r"used 2\.0 of 1 GPU-hours"):
        submit(store, gpu, owner_id=alice)
    submit(store, spec, owner_id=alice)  # CPU runs are still allowed


def test_cli_submit_over_quota_exits_2_and_queues_nothing(stack: Stack) -> None:
    alice = stack.store.create_user("alice", "member")
    stack.store.update_user(alice, max_queued=0)
    result = stack.cli("submit", "-", stdin="task: quadratic\noptimizer: sgd\nsteps: 5\n", OPTLAB_USER="alice")
    assert result.returncode == 2 and "error: quota: alice may have 0 runs queued" in result.stderr
    assert stack.store.list_runs() == []
    unknown = stack.cli("submit", "-", stdin="task: quadratic\noptimizer: sgd\n", OPTLAB_USER="nobody")
    assert unknown.returncode == 2 and "OPTLAB_USER" in unknown.stderr


def test_browser_sessions_expire_and_end(store: Store) -> None:
    from app.accounts import end_web_session, start_web_session, web_session_principal

    alice = Principal(store.create_user("alice", "member"), "alice", "member")
    token = start_web_session(store, alice, hours=1)
    assert web_session_principal(store, token) == alice
    assert web_session_principal(store, token + "x") is None and web_session_principal(store, None) is None
    end_web_session(store, token)
    assert web_session_principal(store, token) is None
    expired = start_web_session(store, alice, hours=-1)
    assert web_session_principal(store, expired) is None
