"""Log in: name and password (the lab's accounts), or the lab's single sign-on where secrets.toml configures one.

The only page an anonymous visitor can reach (app/main.py). A wrong name and a wrong password get the same
message, and take the same time (app.accounts.login)."""

from __future__ import annotations

import streamlit as st

from app import session
from app.ui import get_store

st.title("Optimizer Lab")
store = get_store()
st.caption("This lab server needs a login.")

left, _ = st.columns([2, 3])
with left:
    with st.form("login", border=True):
        name = st.text_input("Name", autocomplete="username")
        password = st.text_input("Password", type="password", autocomplete="current-password")
        submitted = st.form_submit_button("Log in", type="primary")
    if submitted:
        if session.log_in(store, name, password) is None:
            st.error("Wrong name or password.")
        else:
            st.rerun()

    for provider in session.sso_providers():
        label = f"Log in with {provider.replace('_', ' ').title()}" if provider else "Log in with single sign-on"
        if st.button(label, key=f"sso-{provider or 'default'}", icon=":material/key:"):
            st.login(provider)
    identity = session.sso_identity()
    if identity is not None:  # signed in with the provider, but that is no account here
        email = identity.get("email")
        if email and not session.sso_email_verified(identity):
            st.warning(
                f"You are signed in as {email}, but the single sign-on has not verified that e-mail, so it logs "
                "in to no account here. Verify it with the provider, or log in with your name and password."
            )
        else:
            st.warning(
                f"You are signed in as {email or 'someone without an e-mail'}, but no account here has that "
                "e-mail. Ask an admin to add it (Account page, or `python -m app.cli user add`)."
            )
        if st.button("Sign out of the single sign-on", key="sso-logout"):
            st.logout()
    st.caption("No account? An admin creates one on the Account page, or with `python -m app.cli user add NAME`.")
