"""Who is using this browser session, and the one check every page action makes before it changes anything.

`app.accounts` holds the rules (`PERMISSIONS`, `allowed`, `require`); this module applies them to Streamlit:

- `current_principal(store)`: with auth off, the one local admin (a laptop: nothing to log in to). With auth on:
  the login held in this session, else the browser's session cookie, else the lab's single sign-on (`st.user`,
  when `.streamlit/secrets.toml` configures `[auth]`) mapped by e-mail onto an existing account. Anyone else is
  None, and the router then offers nothing but the login page. Every call asks the database again, so a logout
  in another tab, an expired session, a removed account or a changed role counts at the next click.
- `signed_in(store)`: each page's first call; it stops a page that somehow runs for nobody. Pages draw a button
  only where `app.accounts.allowed(who, action, owner_id)`.
- `guard(action, owner_id)`: called by each handler on the server right before it changes state; raises
  `Forbidden` (shown by `refusals()`) for a stale button, a forged widget value or another user's run.
  `GUARDED_CALLS` lists the calls that change state and the action each one's guard must name;
  tests/test_ui_permissions.py walks every page and fails where one is not guarded.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec

import streamlit as st

from app.accounts import (
    SESSION_COOKIE,
    Action,
    Forbidden,
    Principal,
    end_web_session,
    ensure_first_admin,
    local_principal,
    login,
    require,
    start_web_session,
    web_session_principal,
)
from db.store import Store
from workers.settings import get_settings

log = logging.getLogger(__name__)

P = ParamSpec("P")
TOKEN_KEY = "auth.token"  # this session's login (the cookie's value): never a widget key, so no client can set it
WROTE_KEY = "auth.cookie_written"  # this session wrote a cookie (that st.context.cookies cannot show)

# Every call a page may make that changes state, and the action the guard(...) before it must name. A call that
# is not here and not a read is refused by the coverage test (fail closed): add it here with its action first.
GUARDED_CALLS: dict[str, Action] = {
    "submit": "launch",  # workers.celery_app
    "submit_sweep": "launch",
    "rerun": "rerun",
    "requeue": "rerun",  # Store
    "request_cancel": "cancel",
    "delete_runs": "delete",
    "set_priority": "prioritise",
    "create_user": "manage_users",
    "update_user": "manage_users",
    "remove_user": "manage_users",
    "request_drain": "manage_workers",
    # an account's own API tokens: any signed-in account, for itself only (the guard's principal is the owner)
    "new_token": "read",
    "revoke_token": "read",
}


def auth_on() -> bool:
    return get_settings().auth


def current_principal(store: Store) -> Principal | None:
    """Who this browser session acts as, or None (auth on and nobody logged in)."""
    if not auth_on():
        return _local(store)
    token = st.session_state.get(TOKEN_KEY)
    if token:
        who = web_session_principal(store, token)
        if who is not None:
            return who
        del st.session_state[TOKEN_KEY]  # ended elsewhere or expired: fail closed
    cookie = _cookie()
    if cookie and cookie != token:
        who = web_session_principal(store, cookie)
        if who is not None:
            st.session_state[TOKEN_KEY] = cookie
            return who
    return _sso_principal(store)


def signed_in(store: Store) -> Principal:
    """Every page's first check: who is acting. Nobody: the page stops here, having shown nothing. The router
    offers only the login page to anyone not logged in; this holds even where a page runs without the router."""
    who = current_principal(store)
    if who is None:
        st.warning("Log in first.", icon=":material/lock:")
        st.stop()
    return who


def _local(store: Store) -> Principal:
    who = st.session_state.get("auth.local")
    if not isinstance(who, Principal):
        who = st.session_state["auth.local"] = local_principal(store)
    return who


def _cookie() -> str | None:
    try:
        value = st.context.cookies.get(SESSION_COOKIE)
    except Exception:  # no browser behind this run (a bare script)
        return None
    return value if isinstance(value, str) else None  # AppTest's context is a stand-in


# --- single sign-on (Streamlit's st.login, configured by the lab in .streamlit/secrets.toml) -------------------


def sso_providers() -> list[str | None]:
    """The OpenID Connect providers `[auth]` in secrets.toml configures: None for the unnamed one, else names."""
    try:
        if not st.secrets.load_if_toml_exists():
            return []
        section = st.secrets.get("auth")
    except Exception:
        return []
    if not section:
        return []
    # A provider is a table with its own client (`[auth.google]`); other tables (`client_kwargs`) are settings. The
    # unnamed one is `client_id` ... right in `[auth]`; both kinds may be configured together.
    default: list[str | None] = [None] if section.get("client_id") else []
    named = [
        name for name, value in section.items()
        if hasattr(value, "items") and ("client_id" in value or "server_metadata_url" in value)
    ]  # fmt: skip
    return default + named


def sso_identity() -> dict[str, Any] | None:
    """Who the provider says is signed in (Streamlit's identity cookie), or None."""
    if not sso_providers():
        return None
    try:
        user = st.user.to_dict()
    except Exception:
        return None
    return user if user.get("is_logged_in") else None


def sso_email_verified(identity: dict[str, Any]) -> bool:
    """Whether the provider says it verified the e-mail: `email_verified` true (a JSON boolean, or the string some
    providers send). Missing or anything else is not verified: an e-mail a user typed in at the provider proves
    nothing about who they are here."""
    verified = identity.get("email_verified")
    return verified is True or (isinstance(verified, str) and verified.strip().lower() == "true")


def _sso_principal(store: Store) -> Principal | None:
    """The existing account whose e-mail the provider vouches for. Never creates one: an unknown e-mail, or one the
    provider does not say it verified, is nobody."""
    identity = sso_identity()
    if identity is None:
        return None
    email = str(identity.get("email") or "").strip()
    if not email or not sso_email_verified(identity):
        return None
    user = store.get_user(email=email) or store.get_user(email=email.lower())
    if user is None:
        return None
    return Principal.of(user)


# --- logging in and out ----------------------------------------------------------------------------------------


def log_in(store: Store, name: str, password: str) -> Principal | None:
    """Check a name and password; on success start a server-side session whose token the browser keeps as a cookie
    (see `sync_cookie`). None for a wrong name or password, alike."""
    who = login(store, name.strip(), password)
    if who is None:
        return None
    st.session_state[TOKEN_KEY] = start_web_session(store, who, get_settings().session_hours)
    return who


def log_out(store: Store) -> bool:
    """End the session on the server (so the cookie is worthless everywhere), forget it here; the next run clears
    the cookie. A single sign-on is ended with Streamlit's own logout: it sends the browser to /auth/logout (which
    clears the identity cookie, then the provider's logout) and the page reloads. True then: the caller must stop
    this run, not rerun it, as a rerun's start empties what is still queued for the browser, that redirect with it
    (the identity cookie would stay, and the next reload would sign in again)."""
    for token in {st.session_state.pop(TOKEN_KEY, None), _cookie()}:
        end_web_session(store, token)
    if sso_identity() is not None:
        st.logout()
        return True
    return False


def sync_cookie() -> None:
    """Make the browser's session cookie match this session's login: write it after a login (it then survives a
    reload until settings.session_hours), clear it after a logout or once the server no longer knows it.

    Streamlit reads cookies once, when the page connects, so `st.context.cookies` keeps the old value for the rest
    of this session: the script is drawn on every run until then, and being unchanged it runs once."""
    token = st.session_state.get(TOKEN_KEY)
    cookie = _cookie()
    if token and token != cookie:
        _set_cookie(token, int(get_settings().session_hours * 3600))
        st.session_state[WROTE_KEY] = True
    elif not token and (cookie or st.session_state.get(WROTE_KEY)):
        _set_cookie("", 0)


def _set_cookie(value: str, max_age: int) -> None:
    cookie = json.dumps(f"{SESSION_COOKIE}={value}; path=/; SameSite=Strict; max-age={max_age}")
    script = f"<script>document.cookie = {cookie} + (location.protocol === 'https:' ? '; Secure' : '');</script>"
    st.html(script, unsafe_allow_javascript=True)


@st.cache_resource
def _first_admin(url: str) -> bool:
    """Once per server process: the first admin from OPTLAB_ADMIN_USER / OPTLAB_ADMIN_PASSWORD, unless it exists."""
    settings = get_settings()
    try:
        return ensure_first_admin(Store.from_url(url), settings.admin_user, settings.admin_password)
    except ValueError as exc:  # e.g. a password too short
        log.error("first admin %r not created: %s", settings.admin_user, exc)
        return False


def ensure_admin(store: Store) -> None:
    if auth_on():
        _first_admin(get_settings().database_url)


# --- the checks pages make ----------------------------------------------------------------------------------------


def _store() -> Store:
    from app.ui import get_store

    return get_store()


def guard(action: Action, owner_id: int | None = None) -> Principal:
    """On the server, right before a handler changes anything: who is acting, re-read now, who must be allowed
    `action` (on a run or sweep owned by `owner_id`, as the database holds it now). Raises `Forbidden`."""
    return require(current_principal(_store()), action, owner_id)


REFUSED_KEY = "auth.refused"


def _refusal(exc: Forbidden) -> str:
    message = str(exc)
    return f"{message[:1].upper()}{message[1:]}. Nothing was changed."


@contextlib.contextmanager
def refusals(where: Any = st) -> Iterator[None]:
    """Show a `Forbidden` raised inside as an error (on `where`) instead of a traceback."""
    try:
        yield
    except Forbidden as exc:
        where.error(_refusal(exc), icon=":material/block:")


def refusing(handler: Callable[P, None]) -> Callable[P, None]:
    """For a button's on_click handler: Streamlit runs it before the page is drawn, with the arguments the button
    was drawn with (so a stale button acts on what it showed). A `Forbidden` it raises is kept for
    `show_refused` to draw where the page's buttons are."""

    @functools.wraps(handler)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            handler(*args, **kwargs)
        except Forbidden as exc:
            st.session_state[REFUSED_KEY] = _refusal(exc)

    return run


def show_refused(where: Any = st) -> None:
    if message := st.session_state.pop(REFUSED_KEY, None):
        where.error(message, icon=":material/block:")


def owner_names(store: Store) -> dict[int | None, str]:
    """Account names by id, for the owner columns ("—" for runs whose owner was removed)."""
    names: dict[int | None, str] = {u.id: u.name for u in store.list_users()}
    names[None] = "—"
    return names
