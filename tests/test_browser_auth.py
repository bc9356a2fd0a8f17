"""Logins in a real browser: chromium, the real Streamlit server with OPTLAB_AUTH=1, a real database.

An anonymous visitor sees the login page and nothing else, at every address; a login survives a reload (the
session cookie) and ends with Log out, on the server too; a member sees no Cancel or Delete on another member's
run, and a button gone stale (the account was demoted after it was drawn) is refused; a viewer launches nothing.
The page handlers' refusals are tested one by one in tests/test_ui_permissions.py."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from app.accounts import SESSION_COOKIE, hash_password, web_session_principal
from tests.conftest import Stack, loaded, reruns, settle, wait_for
from workers.settings import get_settings
from workers.spec import parse_spec

pytestmark = [pytest.mark.browser]

SPEC = parse_spec({"task": "moons-mlp", "optimizer": "sgd", "steps": 10}).model_dump(mode="json")
PAGES = ("", "live", "runs", "sweeps", "compare", "playground", "laws", "reference", "workers", "account")


@pytest.fixture
def auth_url(stack: Stack, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[str]:
    """The UI with logins on, its first admin from the environment, and three more accounts."""
    monkeypatch.setenv("OPTLAB_AUTH", "1")
    monkeypatch.setenv("OPTLAB_ADMIN_USER", "root")
    monkeypatch.setenv("OPTLAB_ADMIN_PASSWORD", "root-password")
    get_settings.cache_clear()
    for name, role in (("alice", "member"), ("bob", "member"), ("vera", "viewer")):
        stack.store.create_user(name, role, hash_password(f"{name}-password"))
    yield request.getfixturevalue("ui_url")  # started now, with the environment above
    get_settings.cache_clear()


def owner(stack: Stack, name: str) -> int:
    user = stack.store.get_user(name=name)
    assert user is not None
    return user.id


def idle(page) -> None:  # type: ignore[no-untyped-def]
    loaded(page)  # the page's first run has finished


def session_cookie(page) -> dict | None:  # type: ignore[no-untyped-def, type-arg]
    found = [c for c in page.context.cookies() if c["name"] == SESSION_COOKIE and c["value"]]
    return found[0] if found else None


def log_in(page, name: str, password: str | None = None) -> None:  # type: ignore[no-untyped-def]
    """Fill the login form on the page shown now; wait for the page behind it and for the cookie the page writes
    (a reload before the browser has run that script would find no login)."""
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Password", exact=True).fill(password or f"{name}-password")
    page.get_by_role("button", name="Log in").click()
    page.get_by_text(f"Signed in as {name}").wait_for()
    idle(page)
    wait_for(lambda: session_cookie(page), 60, "the session cookie")


def select_run(page, label: str) -> None:  # type: ignore[no-untyped-def]
    before = reruns(page)
    page.get_by_label("Selected runs").click()
    page.get_by_role("option", name=label).click()
    page.keyboard.press("Escape")
    settle(page, before)


def test_an_anonymous_visitor_sees_the_login_page_and_nothing_else(stack: Stack, auth_url: str, page) -> None:  # type: ignore[no-untyped-def]
    run_id = stack.store.create_run("secret-run", SPEC, owner_id=owner(stack, "alice"))
    stack.store.record(run_id, [(1, "loss", 1.0), (2, "loss", 0.5)])
    for name in PAGES:
        page.goto(f"{auth_url}/{name}")
        page.get_by_role("button", name="Log in").wait_for()
        idle(page)
        assert page.locator('[data-testid="stMain"] h1').all_inner_texts() == ["Optimizer Lab"], name
        assert page.get_by_text("secret-run").count() == 0, name
        assert page.get_by_test_id("stDownloadButton").count() == 0, name
        assert page.get_by_test_id("stSidebarNav").count() == 0, name  # no menu of other pages
        assert page.get_by_test_id("stDataFrame").count() == 0 and page.locator(".js-plotly-plot").count() == 0
        assert page.get_by_text("Page not found").count() == 0, name
    page.get_by_label("Name", exact=True).fill("alice")
    page.get_by_label("Password", exact=True).fill("a wrong password")
    page.get_by_role("button", name="Log in").click()
    page.get_by_text("Wrong name or password.").wait_for()
    page.get_by_label("Name", exact=True).fill("nobody-here")
    page.get_by_label("Password", exact=True).fill("alice-password")
    page.get_by_role("button", name="Log in").click()
    idle(page)
    assert page.get_by_text("Wrong name or password.").count() == 1


def test_a_login_survives_a_reload_and_log_out_ends_it_everywhere(stack: Stack, auth_url: str, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(auth_url)
    log_in(page, "bob")
    first = session_cookie(page)
    page.get_by_role("button", name="Log out").click()  # at once, in the same page: the cookie goes too
    page.get_by_role("button", name="Log in").wait_for()
    wait_for(lambda: session_cookie(page) is None, 60, "the cookie to be cleared")
    assert web_session_principal(stack.store, first["value"]) is None  # type: ignore[index]

    page.goto(f"{auth_url}/runs")  # a link to a page: the login, then that page
    log_in(page, "alice")
    page.get_by_role("heading", name="Runs").wait_for()
    session = session_cookie(page)  # written by the page after the login
    assert session is not None
    assert session["sameSite"] == "Strict" and session["expires"] > 0
    assert web_session_principal(stack.store, session["value"]).name == "alice"  # type: ignore[union-attr]
    page.reload()
    page.get_by_text("Signed in as alice").wait_for()
    page.get_by_role("heading", name="Runs").wait_for()
    page.get_by_role("link", name="Account").click()
    page.get_by_text("Limits:").wait_for()

    page.get_by_role("button", name="Log out").click()
    page.get_by_role("button", name="Log in").wait_for()
    idle(page)
    assert web_session_principal(stack.store, session["value"]) is None  # ended on the server
    page.reload()
    page.get_by_role("button", name="Log in").wait_for()
    idle(page)
    assert page.get_by_text("Signed in as").count() == 0
    wait_for(lambda: session_cookie(page) is None, 60, "the cookie to be cleared")


def test_a_member_sees_no_cancel_on_another_members_run_and_a_stale_button_changes_nothing(
    stack: Stack, auth_url: str, page
) -> None:  # type: ignore[no-untyped-def]
    hers = stack.store.create_run("hers", SPEC, owner_id=owner(stack, "alice"))
    his = stack.store.create_run("his", SPEC, owner_id=owner(stack, "bob"))
    page.goto(f"{auth_url}/runs")
    log_in(page, "alice")
    page.get_by_text("2 of 2 runs").wait_for()
    select_run(page, f"#{his} his")
    page.get_by_text("belong to bob").wait_for()
    assert page.get_by_role("button", name="Cancel", exact=True).count() == 0
    assert page.get_by_role("button", name="Delete").count() == 0

    page.reload()  # a fresh selection (still logged in): only her own run
    page.get_by_text("2 of 2 runs").wait_for()
    idle(page)
    select_run(page, f"#{hers} hers")
    cancel = page.get_by_role("button", name="Cancel", exact=True)
    cancel.wait_for()
    stack.store.update_user(owner(stack, "alice"), role="viewer")  # an admin demotes her meanwhile
    cancel.click()
    page.get_by_text("alice cannot cancel this").wait_for()
    page.get_by_text("Nothing was changed.").wait_for()
    assert stack.store.get_run(hers).status == "queued"  # type: ignore[union-attr]
    assert stack.store.get_run(his).status == "queued"  # type: ignore[union-attr]


def test_a_viewer_gets_no_launch_form(stack: Stack, auth_url: str, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(auth_url)
    log_in(page, "vera")
    page.get_by_text("not launch runs").wait_for()
    assert page.get_by_role("button", name="Launch").count() == 0
    assert page.get_by_label("Optimizer", exact=True).count() == 0
    page.get_by_role("link", name="Sweeps").click()
    page.get_by_role("heading", name="Sweeps").wait_for()
    idle(page)
    before = reruns(page)
    page.get_by_role("radio", name="New sweep").click()
    settle(page, before)
    page.get_by_text("not queue them").wait_for()
    assert page.get_by_role("button", name=re.compile("^Queue")).count() == 0
    assert stack.store.list_runs() == [] and stack.store.list_sweeps() == []


def test_the_first_admin_comes_from_the_environment(stack: Stack, auth_url: str, page) -> None:  # type: ignore[no-untyped-def]
    page.goto(auth_url)
    log_in(page, "root", "root-password")
    page.get_by_role("link", name="Account").click()
    page.get_by_role("heading", name="Accounts").wait_for()
    root = stack.store.get_user(name="root")
    assert root is not None and root.role == "admin"
