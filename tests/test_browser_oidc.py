"""Single sign-on end to end: chromium, the real Streamlit server with OPTLAB_AUTH=1 and an `[auth]` secrets file,
Streamlit's own st.login / st.logout (Authlib underneath), and a real OpenID Connect provider on 127.0.0.1
(tests/oidc_provider.py: discovery, authorization code with PKCE, RS256 ID tokens, JWKS, RP-initiated logout).

A sign-in is let in only as the existing account with that e-mail, and only when the provider says it verified
the e-mail (app.session._sso_principal): it survives a reload (Streamlit's identity cookie) and Log out ends it,
at the provider too. An e-mail no account has, or one not verified, is nobody: the login page, and nothing else."""

from __future__ import annotations

import secrets
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, Stack, free_port, loaded, wait_for
from tests.oidc_provider import OIDCProvider
from workers.settings import get_settings
from workers.spec import parse_spec

pytestmark = [pytest.mark.browser, pytest.mark.live_worker]

WAIT_MS = 120_000  # a busy machine (2 cores, a CI run beside us) is slow; nothing here asserts speed
SPEC = parse_spec({"task": "moons-mlp", "optimizer": "sgd", "steps": 10}).model_dump(mode="json")
ALICE_EMAIL = "alice@lab.example"
ALICE = {"email": ALICE_EMAIL, "email_verified": True, "name": "Alice Example", "sub": "alice-at-the-idp"}
SSO_BUTTON = "Log in with single sign-on"
USER_COOKIE = "_streamlit_user"  # Streamlit's signed identity cookie, set by /oauth2callback


@dataclass
class SSO:
    url: str  # the Streamlit server
    provider: OIDCProvider
    log: Path  # the server's output, for a failure's message


def secrets_toml(redirect_uri: str, provider: OIDCProvider) -> str:
    """The `[auth]` block a lab writes in .streamlit/secrets.toml, for the unnamed provider."""
    return (
        "[auth]\n"
        f'redirect_uri = "{redirect_uri}"\n'
        f'cookie_secret = "{secrets.token_hex(32)}"\n'
        f'client_id = "{provider.client_id}"\n'
        f'client_secret = "{provider.client_secret}"\n'
        f'server_metadata_url = "{provider.metadata_url}"\n'
    )


@pytest.fixture
def sso(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[SSO]:
    """The UI with logins on and an `[auth]` secrets file of its own (`--secrets.files`) pointing at a provider on
    127.0.0.1; alice (member) has the e-mail alice@lab.example and no password: she logs in only by single sign-on."""
    monkeypatch.setenv("OPTLAB_AUTH", "1")
    monkeypatch.setenv("OPTLAB_ADMIN_USER", "root")
    monkeypatch.setenv("OPTLAB_ADMIN_PASSWORD", "root-password")
    get_settings.cache_clear()
    added = stack.cli("user", "add", "alice", "member", "--email", ALICE_EMAIL, "--no-password")
    assert added.returncode == 0, added.stderr
    assert stack.cli("user", "add", "bob", "member", "--password-stdin", stdin="bob-password\n").returncode == 0

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    provider = OIDCProvider(
        client_id="optlab-test", client_secret=secrets.token_urlsafe(24), redirect_uris=[f"{url}/oauth2callback"]
    ).start()
    secrets_file = stack.tmp / "secrets.toml"
    secrets_file.write_text(secrets_toml(f"{url}/oauth2callback", provider))
    log_path = stack.tmp / "streamlit.log"
    log = open(log_path, "w")  # noqa: SIM115
    env = {**stack.env, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    process = subprocess.Popen(
        [sys.executable, "-m", "app.web", "--server.port", str(port), "--server.address", "127.0.0.1",
         "--secrets.files", str(secrets_file)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"streamlit exited {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_for(healthy, 120, "streamlit")
        yield SSO(url, provider, log_path)
    finally:
        process.terminate()
        process.wait(20)
        log.close()
        provider.stop()
        get_settings.cache_clear()


def identity_cookie(page) -> dict | None:  # type: ignore[no-untyped-def, type-arg]
    found = [c for c in page.context.cookies() if c["name"] == USER_COOKIE and c["value"]]
    return found[0] if found else None


def sign_in_with_the_provider(page, sso: SSO, claims: dict) -> None:  # type: ignore[no-untyped-def, type-arg]
    """On the login page: the provider will vouch for `claims`; click the button and follow the redirects
    (/auth/login, the provider's /authorize, /oauth2callback) back to the app's first page, loaded."""
    sso.provider.identity = claims
    before = len(sso.provider.log)
    page.get_by_role("button", name=SSO_BUTTON).click()
    wait_for(lambda: "POST /token" in sso.provider.log[before:], 120, "the app to redeem the code at the provider")
    page.wait_for_url(f"{sso.url}/", timeout=WAIT_MS)  # /oauth2callback redirects to the app's root
    loaded(page)
    assert not sso.provider.errors, sso.provider.errors


def the_login_page(page) -> None:  # type: ignore[no-untyped-def]
    """Only the login page: its form and title, no menu of other pages, nobody signed in."""
    page.get_by_role("button", name="Log in", exact=True).wait_for(timeout=WAIT_MS)
    loaded(page)
    assert page.locator('[data-testid="stMain"] h1').all_inner_texts() == ["Optimizer Lab"]
    assert page.get_by_test_id("stSidebarNav").count() == 0
    assert page.get_by_test_id("stSidebar").get_by_text("Signed in as").count() == 0


def test_a_verified_e_mail_of_an_account_logs_in_survives_a_reload_and_logs_out(stack: Stack, sso: SSO, page) -> None:  # type: ignore[no-untyped-def]
    alice = stack.store.get_user(name="alice")
    assert alice is not None
    stack.store.create_run("alices-run", SPEC, owner_id=alice.id)
    page.goto(f"{sso.url}/runs")
    the_login_page(page)
    assert page.get_by_text("alices-run").count() == 0

    sign_in_with_the_provider(page, sso, ALICE)
    page.get_by_text("Signed in as alice (member)").wait_for(timeout=WAIT_MS)
    cookie = identity_cookie(page)
    assert cookie is not None and cookie["httpOnly"]  # Streamlit's, signed with auth.cookie_secret
    assert [e for e in sso.provider.log if e != "GET /.well-known/openid-configuration"] == [
        "GET /authorize", "POST /token", "GET /jwks",
    ]  # fmt: skip
    page.goto(f"{sso.url}/runs")
    page.get_by_role("heading", name="Runs").wait_for(timeout=WAIT_MS)
    page.get_by_text("1 of 1 runs").wait_for(timeout=WAIT_MS)  # hers, in the table (drawn on a canvas)

    page.reload()  # a new Streamlit session: the identity comes from the cookie again
    page.get_by_text("Signed in as alice (member)").wait_for(timeout=WAIT_MS)
    page.get_by_role("heading", name="Runs").wait_for(timeout=WAIT_MS)
    page.get_by_role("link", name="Account").click()
    page.get_by_text("Limits:").wait_for(timeout=WAIT_MS)

    page.get_by_role("button", name="Log out").click()  # Streamlit's logout, then the provider's end_session
    wait_for(lambda: sso.provider.logouts, 120, "the provider's logout")
    assert sso.provider.logouts[0]["client_id"] == "optlab-test" and sso.provider.logouts[0].get("id_token_hint")
    page.wait_for_url(f"{sso.url}/", timeout=WAIT_MS)
    the_login_page(page)
    assert identity_cookie(page) is None
    page.goto(f"{sso.url}/runs")
    the_login_page(page)
    assert page.get_by_text("alices-run").count() == 0


def test_an_e_mail_no_account_has_is_nobody(stack: Stack, sso: SSO, page) -> None:  # type: ignore[no-untyped-def]
    bob = stack.store.get_user(name="bob")
    assert bob is not None
    stack.store.create_run("bobs-run", SPEC, owner_id=bob.id)
    page.goto(sso.url)
    the_login_page(page)
    sign_in_with_the_provider(page, sso, {"email": "mallory@elsewhere.example", "email_verified": True})
    page.get_by_text("no account here has that e-mail").wait_for(timeout=WAIT_MS)
    the_login_page(page)
    assert "mallory@elsewhere.example" in page.get_by_test_id("stAlert").inner_text()
    assert stack.store.get_user(email="mallory@elsewhere.example") is None  # never creates an account
    for name in ("runs", "account", "workers"):
        page.goto(f"{sso.url}/{name}")
        the_login_page(page)
        page.get_by_text("no account here has that e-mail").wait_for(timeout=WAIT_MS)  # still signed in there
        assert page.get_by_text("bobs-run").count() == 0 and page.get_by_role("heading", name="Runs").count() == 0

    page.get_by_role("button", name="Sign out of the single sign-on").click()
    wait_for(lambda: sso.provider.logouts, 120, "the provider's logout")
    page.wait_for_url(f"{sso.url}/", timeout=WAIT_MS)
    the_login_page(page)
    assert page.get_by_text("no account here has that e-mail").count() == 0
    assert identity_cookie(page) is None
    page.get_by_label("Name", exact=True).fill("bob")  # and the name-and-password login still works
    page.get_by_label("Password", exact=True).fill("bob-password")
    page.get_by_role("button", name="Log in", exact=True).click()
    page.get_by_text("Signed in as bob (member)").wait_for(timeout=WAIT_MS)


def test_an_e_mail_the_provider_has_not_verified_is_nobody(stack: Stack, sso: SSO, page) -> None:  # type: ignore[no-untyped-def]
    """`email_verified` false, the string "false" (some providers send strings), or missing: one server, each in a
    fresh browser session."""
    claims = {k: v for k, v in ALICE.items() if k != "email_verified"}
    for verified in (False, "false", None):
        page.context.clear_cookies()
        page.goto(f"{sso.url}/runs")
        the_login_page(page)
        sign_in_with_the_provider(page, sso, claims if verified is None else {**claims, "email_verified": verified})
        page.get_by_text("has not verified that e-mail").wait_for(timeout=WAIT_MS)
        the_login_page(page)
        page.goto(f"{sso.url}/runs")
        the_login_page(page)
        page.get_by_text("has not verified that e-mail").wait_for(timeout=WAIT_MS)
        assert page.get_by_role("heading", name="Runs").count() == 0, verified


class FakeSecrets:
    """`st.secrets` as the login page reads it, from a secrets.toml's text (None: no file)."""

    def __init__(self, text: str | None) -> None:
        from streamlit.runtime.secrets import AttrDict

        self.data = AttrDict(tomllib.loads(text)) if text is not None else None

    def load_if_toml_exists(self) -> bool:
        return self.data is not None

    def get(self, key: str, default: object = None) -> object:
        assert self.data is not None
        return self.data.get(key, default)


BASE = '[auth]\nredirect_uri = "http://127.0.0.1:8501/oauth2callback"\ncookie_secret = "0123456789abcdef0123"\n'
CLIENT = 'client_id = "id"\nclient_secret = "secret"\nserver_metadata_url = "https://idp.example/.well-known/openid-configuration"\n'


@pytest.mark.parametrize(
    ("toml", "buttons"),
    [
        (None, []),
        ('[other]\nkey = "value"\n', []),
        (BASE, []),  # no provider: no button (st.login would refuse it)
        (BASE + CLIENT, [None]),
        (BASE + CLIENT + 'client_kwargs = { prompt = "login" }\n', [None]),  # a setting, not a provider
        (BASE + CLIENT + "[auth.client_kwargs]\nprompt = \"login\"\n", [None]),
        (BASE + "[auth.google]\n" + CLIENT + "[auth.microsoft]\n" + CLIENT, ["google", "microsoft"]),
        (BASE + CLIENT + "[auth.google]\n" + CLIENT, [None, "google"]),  # the unnamed one and a named one
    ],
    ids=["no-secrets", "no-auth", "no-provider", "unnamed", "client-kwargs-inline", "client-kwargs-table", "named", "both"],
)  # fmt: skip
def test_the_login_page_offers_one_button_per_configured_provider(
    monkeypatch: pytest.MonkeyPatch, toml: str | None, buttons: list[str | None]
) -> None:
    import streamlit as st

    from app import session

    monkeypatch.setattr(st, "secrets", FakeSecrets(toml))
    assert session.sso_providers() == buttons
