"""Accounts and what each may do: password hashing (argon2), API tokens, and the permission rules.

The rules are data (`PERMISSIONS`): a role grants actions, and some actions on a run or sweep are granted only to its
owner. Every page action, download and API route asks `allowed(...)` before it acts, on the server; a route or
button that does not ask is a bug the permission tests look for. With auth off (a laptop), everyone is the one
local admin, `LOCAL`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from db.store import Conflict, Store, UserInfo

Role = Literal["admin", "member", "viewer"]
ROLES: tuple[Role, ...] = ("admin", "member", "viewer")
Action = Literal["read", "launch", "cancel", "rerun", "delete", "prioritise", "manage_users", "manage_workers"]
LOCAL_NAME = "local"
TOKEN_PREFIX = "olab_"

# What each role may do at all, and which of those actions need the caller to own the run or sweep.
PERMISSIONS: dict[Role, frozenset[Action]] = {
    "admin": frozenset({"read", "launch", "cancel", "rerun", "delete", "prioritise", "manage_users", "manage_workers"}),
    "member": frozenset({"read", "launch", "cancel", "rerun", "delete", "prioritise"}),
    "viewer": frozenset({"read"}),
}
OWNER_ONLY: frozenset[Action] = frozenset({"cancel", "rerun", "delete", "prioritise"})  # ... unless admin


@dataclass(frozen=True)
class Principal:
    """Who is acting: an account's id, name and role."""

    id: int
    name: str
    role: Role

    @classmethod
    def of(cls, user: UserInfo) -> Principal:
        return cls(user.id, user.name, user.role)  # type: ignore[arg-type]


class Forbidden(PermissionError):
    pass


def allowed(who: Principal | None, action: Action, owner_id: int | None = None) -> bool:
    """May `who` do `action` (on a run or sweep owned by `owner_id`)? Nobody (None) may do anything."""
    if who is None or action not in PERMISSIONS.get(who.role, frozenset()):
        return False
    if action in OWNER_ONLY and who.role != "admin":
        return owner_id is not None and owner_id == who.id
    return True


def require(who: Principal | None, action: Action, owner_id: int | None = None) -> Principal:
    if not allowed(who, action, owner_id):
        what = f"{action} this" if action in OWNER_ONLY else action.replace("_", " ")
        raise Forbidden(f"not allowed: {who.name if who else 'an anonymous visitor'} cannot {what}")
    assert who is not None
    return who


# --- passwords ------------------------------------------------------------------------------------------------

_HASHER = PasswordHasher()
_DUMMY_HASH = _HASHER.hash("not a password anyone has")  # unknown names cost as much as known ones


def hash_password(password: str) -> str:
    if len(password) < 8:
        raise ValueError("a password needs at least 8 characters")
    return _HASHER.hash(password)


def login(store: Store, name: str, password: str) -> Principal | None:
    """The account whose name and password these are, or None. Takes the same time whether or not the name
    exists, so a login form does not tell which accounts there are."""
    found = store.password_hash(name)
    stored = found[1] if found else _DUMMY_HASH
    try:
        _HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return None
    if found is None:
        return None
    user = found[0]
    if _HASHER.check_needs_rehash(stored):
        store.update_user(user.id, password_hash=_HASHER.hash(password))
    return Principal.of(user)


# --- API tokens -----------------------------------------------------------------------------------------------


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(store: Store, user_id: int, name: str, expires_at: float | None = None) -> tuple[int, str]:
    """Create a token; returns its id and the token itself, which is shown once and stored only as a digest."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = store.create_token(user_id, name, token[:12], _digest(token), expires_at)
    return token_id, token


def token_principal(store: Store, token: str) -> Principal | None:
    """The account a live token belongs to, or None (unknown, revoked or expired)."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    digest = _digest(token)
    for info, stored in store.token_candidates(token[:12]):
        if hmac.compare_digest(stored, digest):
            user = store.get_user(user_id=info.user_id)
            if user is None:
                return None
            store.touch_token(info.id)
            return Principal.of(user)
    return None


# --- the local user and the first admin -------------------------------------------------------------------------


def local_principal(store: Store) -> Principal:
    """With auth off: the one local admin, created on first use; it owns what is launched from this machine."""
    user = store.get_user(name=LOCAL_NAME)
    if user is None:
        with contextlib.suppress(Conflict):  # another process may create it first
            store.create_user(LOCAL_NAME, "admin")
        user = store.get_user(name=LOCAL_NAME)
    assert user is not None
    return Principal.of(user)


def ensure_first_admin(store: Store, name: str | None, password: str | None) -> bool:
    """On a server's first start: create the admin named in the environment, unless that account exists."""
    if not name or not password or store.get_user(name=name) is not None:
        return False
    with contextlib.suppress(Conflict):
        store.create_user(name, "admin", hash_password(password))
        return True
    return False


# --- browser sessions ------------------------------------------------------------------------------------------

SESSION_COOKIE = "optlab_session"


def start_web_session(store: Store, who: Principal, hours: float) -> str:
    """A new browser login lasting `hours`; returns the token for the cookie (the database keeps its digest)."""
    import time

    token = secrets.token_urlsafe(32)
    store.create_web_session(who.id, _digest(token), time.time() + hours * 3600)
    return token


def web_session_principal(store: Store, token: str | None) -> Principal | None:
    """Who a browser's cookie logs in, or None (no cookie, unknown, or expired)."""
    if not token or len(token) > 200:
        return None
    user = store.web_session_user(_digest(token))
    return Principal.of(user) if user else None


def end_web_session(store: Store, token: str | None) -> None:
    if token:
        store.end_web_session(_digest(token))
