"""Account: your role, limits and use; your API tokens (create one, shown once; revoke); and, for admins, every
account's role, share and limits, adding and removing accounts. Each change is checked on the server by
app.session.guard before it is made."""

from __future__ import annotations

import math
import time
from typing import Any

import pandas as pd
import streamlit as st

from app.accounts import PERMISSIONS, ROLES, allowed, hash_password, new_token
from app.session import guard, refusals, refusing, show_refused, signed_in
from app.ui import fmt_age, get_store
from db.store import Conflict, Store, UserInfo
from workers.celery_app import WEEK_S

st.title("Account")
store = get_store()
who = signed_in(store)
me = store.get_user(user_id=who.id)
if me is None:
    st.stop()


def limit(value: float | None, unit: str = "") -> str:
    return "no limit" if value is None else f"{value:g}{unit}"


# --- you --------------------------------------------------------------------------------------------------------

counts = store.active_counts(me.id)
used = store.gpu_hours(me.id, since=time.time() - WEEK_S)
st.markdown(f"**{me.name}** · {me.role}" + (f" · {me.email}" if me.email else ""))
st.caption("You may: " + ", ".join(sorted(a.replace("_", " ") for a in PERMISSIONS[who.role])))
c1, c2, c3, c4 = st.columns(4)
c1.metric("Running", counts["running"], help=f"at once: {limit(me.max_running)}")
c2.metric("Queued", counts["queued"], help=f"at once: {limit(me.max_queued)}")
c3.metric("GPU-hours, last 7 days", f"{used:.1f}", help=f"limit: {limit(me.gpu_hours_per_week, ' h')}")
c4.metric("Fair share", f"{me.share:g}", help="twice the share, twice the GPU time when everyone is waiting")
limits = [f"{n:g} {what}" for n, what in ((me.max_running, "running at once"), (me.max_queued, "queued at once"),
          (me.gpu_hours_per_week, "GPU-hours a week")) if n is not None]  # fmt: skip
st.caption("Limits: " + ("at most " + ", ".join(limits) if limits else "none") + ". An admin sets them.")

# --- API tokens ---------------------------------------------------------------------------------------------------

st.subheader("API tokens")
st.caption("For the HTTP API and scripts: send `Authorization: Bearer <token>`. A token acts as you, with your role.")
with st.form("token.new", border=True, clear_on_submit=True):
    t1, t2 = st.columns([3, 1])
    token_name = t1.text_input("Token name", placeholder="e.g. laptop, notebook, CI")
    days = t2.number_input("Expires after (days)", min_value=0, value=90, step=1, help="0: never")
    if st.form_submit_button("Create token", type="primary"):
        with refusals():
            owner = guard("read")  # any signed-in account, for itself: the token belongs to who is acting now
            expires = time.time() + days * 86400 if days else None
            _, st.session_state["account.token"] = new_token(store, owner.id, token_name.strip() or "token", expires)
if token := st.session_state.pop("account.token", None):  # shown once: gone at the next rerun
    st.success("Your new token. Copy it now (the icon at the box's right): it is shown only this once.")
    st.code(token, language=None)

tokens = store.list_tokens(me.id)
if tokens:
    rows = [
        {"name": t.name, "starts with": f"{t.prefix}…", "created": fmt_age(t.created_at),
         "last used": fmt_age(t.last_used_at) if t.last_used_at else "never",
         "expires": pd.Timestamp(t.expires_at, unit="s").strftime("%Y-%m-%d") if t.expires_at else "never"}
        for t in tokens
    ]  # fmt: skip
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    by_id = {t.id: t for t in tokens}
    r1, r2 = st.columns([3, 1], vertical_alignment="bottom")
    doomed = r1.selectbox("Token", list(by_id), format_func=lambda i: f"{by_id[i].name} ({by_id[i].prefix}…)")
    if r2.button("Revoke", key="token.revoke"):
        with refusals():
            owner = guard("read")
            if store.revoke_token(doomed, user_id=owner.id):  # only the acting account's own tokens
                st.rerun()
else:
    st.caption("You have no tokens.")

# --- accounts (admins) --------------------------------------------------------------------------------------------

show_refused()  # a refusal of a stale admin button, here where a demoted admin still sees it
if not allowed(who, "manage_users"):
    st.stop()

st.subheader("Accounts")
COLUMNS = {"share": "share", "max_running": "max running", "max_queued": "max queued",
           "gpu_hours_per_week": "GPU-hours/week"}  # fmt: skip
users = store.list_users()


def users_frame(users: list[UserInfo]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"name": u.name, "role": u.role, "e-mail": u.email or "", "password": u.has_password,
             **{label: getattr(u, field) for field, label in COLUMNS.items()}}
            for u in users
        ]
    )  # fmt: skip


def number(value: Any) -> float | None:
    """An edited limit cell: empty means no limit."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def changes(store: Store, users: list[UserInfo], edited: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The editor's edited rows as update_user values per account id; ValueError names a bad cell."""
    out: dict[int, dict[str, Any]] = {}
    for row, cells in edited.items():
        user = users[int(row)]
        values: dict[str, Any] = {}
        for column, value in cells.items():
            if column == "role":
                if value not in ROLES:
                    raise ValueError(f"{user.name}: the role must be one of {', '.join(ROLES)}")
                values["role"] = value
            elif column == "e-mail":
                values["email"] = str(value).strip() or None
            else:
                field = next(f for f, label in COLUMNS.items() if label == column)
                amount = number(value)
                if field == "share":
                    if amount is None or amount <= 0:
                        raise ValueError(f"{user.name}: the share must be above 0")
                    values["share"] = amount
                elif amount is not None and amount < 0:
                    raise ValueError(f"{user.name}: {column} cannot be negative")
                else:
                    values[field] = (
                        None if amount is None else (amount if field == "gpu_hours_per_week" else int(amount))
                    )
        out[user.id] = values
    admins = {u.id for u in users if out.get(u.id, {}).get("role", u.role) == "admin"}
    if not admins:
        raise ValueError("at least one account must stay an admin")
    return out


@refusing
def remove_user(user_id: int) -> None:
    """The Remove button's handler (it runs before the page, with the account the button was drawn for)."""
    if user_id == guard("manage_users").id:
        st.session_state["account.removed"] = "You cannot remove yourself."
    elif store.remove_user(user_id):
        st.session_state["account.removed"] = "Removed."


version = st.session_state.setdefault("account.editor", 0)
st.data_editor(
    users_frame(users),
    key=f"account.users.{version}",
    hide_index=True,
    disabled=["name", "password"],
    column_config={
        "role": st.column_config.SelectboxColumn("role", options=list(ROLES), required=True),
        "password": st.column_config.CheckboxColumn("password", help="can log in with a password"),
        "share": st.column_config.NumberColumn("share", min_value=0.01, format="%g", help="fair-share weight"),
        "max running": st.column_config.NumberColumn("max running", min_value=0, step=1, help="empty: no limit"),
        "max queued": st.column_config.NumberColumn("max queued", min_value=0, step=1, help="empty: no limit"),
        "GPU-hours/week": st.column_config.NumberColumn("GPU-hours/week", min_value=0, help="empty: no limit"),
    },
)
edited = st.session_state[f"account.users.{version}"].get("edited_rows", {})
if st.button("Save changes", type="primary", disabled=not edited, key="account.save"):
    with refusals():
        guard("manage_users")
        try:
            updates = changes(store, users, edited)
        except ValueError as exc:
            st.error(f"Nothing was saved: {exc}.")
        else:
            try:
                for user_id, values in updates.items():
                    store.update_user(user_id, **values)
            except Exception as exc:  # e.g. an e-mail another account has
                st.error(f"Not saved: {exc}")
            else:
                st.session_state["account.editor"] = version + 1
                st.rerun()

add, remove = st.columns(2, gap="large")
with add, st.form("user.add", border=True, clear_on_submit=True):
    st.markdown("**Add an account**")
    new_name = st.text_input("Name")
    new_role = st.selectbox("Role", ROLES, index=ROLES.index("member"))
    new_password = st.text_input("Initial password", type="password", help="at least 8 characters; they log in "
                                 "with it (change it with `python -m app.cli user passwd NAME`)")  # fmt: skip
    new_email = st.text_input("E-mail (optional)", help="a single sign-on with this e-mail logs in as this account")
    if st.form_submit_button("Add account"):
        with refusals():
            guard("manage_users")
            try:
                hashed = hash_password(new_password)
                store.create_user(new_name.strip(), new_role, hashed, email=new_email.strip() or None)
            except (ValueError, Conflict) as exc:
                st.error(f"Not added: {exc}")
            else:
                st.session_state["account.added"] = f"Added {new_name.strip()} ({new_role})."
                st.rerun()  # the table and the list below include it
if added := st.session_state.pop("account.added", None):
    add.success(added)

with remove, st.container(border=True):
    st.markdown("**Remove an account**")
    others = {u.id: u for u in users if u.id != who.id}
    if not others:
        st.caption("No other accounts.")
    else:
        victim = st.selectbox("Account", list(others), format_func=lambda i: f"{others[i].name} ({others[i].role})")
        st.caption("Its tokens and logins end; its runs and sweeps stay, without an owner.")
        st.button("Remove for good", key="user.remove", on_click=remove_user, args=(victim,))
    if removed := st.session_state.pop("account.removed", None):
        st.info(removed)
