"""Who may do what in the pages: a coverage test that every call changing state is guarded (mlflow's
authorization-coverage idea), and the pages refusing, on the server, what a stale button or another account's run
id asks for. Real database and Streamlit's AppTest; logins are on (OPTLAB_AUTH=1) unless a test says otherwise.

How the coverage test decides "guarded": in the function (or page script) that makes the call, a call
`guard("<action>", ...)` with the action `app.session.GUARDED_CALLS` names must come first on the way to it: in an
earlier statement of the same block or of an enclosing block (a `for` loop of guards counts; a `with` or `try` body
does not, since `refusals()` swallows the refusal and code after it would go on), or in the test of an enclosing
`if`. Every public function of the store, the queue and the accounts module is classified below, so a new one is
refused until someone says whether pages may call it and with which guard (fail closed).
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import app.accounts as accounts
import workers.celery_app as celery_app
from app.accounts import PERMISSIONS, hash_password, start_web_session, token_principal
from app.session import GUARDED_CALLS, TOKEN_KEY
from db.store import Store
from tests.conftest import ROOT, Stack
from workers.settings import get_settings
from workers.spec import parse_spec

# --- what each callable is ---------------------------------------------------------------------------------------

STORE_READS = {
    "get_run", "list_runs", "get_sweep", "list_sweeps", "sweep_counts", "dispatch_order", "packed_curves",
    "metrics", "window_means", "metric_names", "summaries", "first_reaching", "values_at", "get_user", "list_users",
    "count_users", "list_tokens", "active_counts", "gpu_hours_by_owner", "gpu_hours", "list_workers",
    "worker_draining", "queue_lengths", "typical_run_seconds", "run_events", "queued_per_queue", "iter_metrics",
}  # fmt: skip
HOUSEKEEPING = {"mark_lost_runs"}  # any page reaps runs whose worker went silent, as the CLI's status does
NOT_FROM_PAGES = {  # the worker's side, the accounts machinery (through app.session only), raw access
    "claim", "claim_next", "pack_held", "finish", "record", "record_many", "hand_back", "begin_attempt", "note",
    "worker_heartbeat",
    "create_run", "create_sweep", "create_pack",
    "create_token", "touch_token", "create_web_session", "web_session_user", "end_web_session", "password_hash",
    "token_candidates", "session", "from_url",
    "enqueue", "check_quota", "send_ticket",  # workers.celery_app: pages submit, which checks the quota
    "login", "start_web_session", "web_session_principal", "token_principal", "local_principal",
    "ensure_first_admin",  # app.accounts
}  # fmt: skip
PURE = {"allowed", "require", "hash_password", "public_url"}  # decide or compute, change nothing
MODULES = {"workers.celery_app": celery_app, "app.accounts": accounts}
UI_FILES = [*sorted((ROOT / "app" / "pages").glob("*.py")), ROOT / "app" / "main.py", ROOT / "app" / "ui.py"]
# Pages that do not ask who is signed in yet, each a strict xfail (once it asks, the test fails until its entry goes).
PENDING_SIGNED_IN: dict[str, str] = {}


def public_functions(module: object) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if inspect.isfunction(value) and value.__module__ == module.__name__ and not name.startswith("_")  # type: ignore[attr-defined]
    }


def store_methods() -> set[str]:
    return {name for name in vars(Store) if not name.startswith("_")}


def test_every_store_queue_and_accounts_function_is_classified() -> None:
    classes = [STORE_READS, HOUSEKEEPING, NOT_FROM_PAGES, PURE, set(GUARDED_CALLS)]
    everything = store_methods() | public_functions(celery_app) | public_functions(accounts)
    unclassified = everything - set().union(*classes)
    assert not unclassified, f"say whether pages may call these, and with which guard: {sorted(unclassified)}"
    for i, a in enumerate(classes):
        for b in classes[i + 1 :]:
            assert not (a & b), f"classified twice: {sorted(a & b)}"
    acts = set().union(*PERMISSIONS.values())
    assert set(GUARDED_CALLS.values()) <= acts, "a guard names an action no role has"
    assert set(GUARDED_CALLS) <= everything, f"stale entries: {sorted(set(GUARDED_CALLS) - everything)}"


# --- the checker -------------------------------------------------------------------------------------------------


def _imports(tree: ast.Module) -> dict[str, str]:
    """Local name -> qualified name, for `from X import y [as z]` and `import X [as z]`."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name] = alias.name
    return names


def _target(node: ast.expr, imports: dict[str, str]) -> str | None:
    """The classified name `node` refers to (a store method, or a function of the queue or accounts module)."""
    if isinstance(node, ast.Name):
        module, _, name = imports.get(node.id, "").rpartition(".")
        return name if inspect.isfunction(getattr(MODULES.get(module), name, None)) else None
    if isinstance(node, ast.Attribute):
        receiver = imports.get(node.value.id, "") if isinstance(node.value, ast.Name) else ""
        if receiver in MODULES:
            return node.attr if inspect.isfunction(getattr(MODULES[receiver], node.attr, None)) else None
        if receiver == "" and node.attr in store_methods():  # store.x, self.store.x, get_store().x
            return node.attr
    return None


def _is_guard(call: ast.AST, action: str, imports: dict[str, str]) -> bool:
    return (
        isinstance(call, ast.Call)
        and isinstance(call.func, ast.Name)
        and imports.get(call.func.id) == "app.session.guard"
        and bool(call.args)
        and isinstance(call.args[0], ast.Constant)
        and call.args[0].value == action
    )


def _guards(stmt: ast.stmt, action: str, imports: dict[str, str]) -> bool:
    """Does this statement, run to its end, always call guard(action)?"""
    if isinstance(stmt, ast.Expr | ast.Assign | ast.AnnAssign | ast.AugAssign | ast.Return):
        return any(_is_guard(n, action, imports) for n in ast.walk(stmt))
    if isinstance(stmt, ast.For):  # for run in runs: guard(..., run.owner_id)
        return any(_guards(s, action, imports) for s in stmt.body)
    return False


def violations(source: str, filename: str = "<page>") -> list[str]:
    tree = ast.parse(source)
    imports = _imports(tree)
    parents: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    calls = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    found: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Name | ast.Attribute) or isinstance(parents.get(node), ast.Attribute):
            continue
        name = _target(node, imports)
        if name is None or name in STORE_READS | HOUSEKEEPING | PURE:
            continue
        where = f"{filename}:{node.lineno}"
        if name in NOT_FROM_PAGES:
            found.append(f"{where}: {name} is not for pages")
        elif id(node) not in calls:
            found.append(f"{where}: {name} is passed on, not called: call it in a guarded handler")
        elif not _guarded(node, GUARDED_CALLS[name], parents, imports):
            found.append(f"{where}: {name} without guard({GUARDED_CALLS[name]!r}, ...) before it")
    return found


def _guarded(node: ast.AST, action: str, parents: dict[ast.AST, ast.AST], imports: dict[str, str]) -> bool:
    child = node
    while not isinstance(child, ast.stmt):  # up to the statement holding the call; not through a lambda
        child = parents[child]
        if isinstance(child, ast.Lambda):
            return False
    while True:
        parent = parents.get(child)
        if parent is None:
            return False
        for field in ("body", "orelse", "finalbody"):
            block = getattr(parent, field, None)
            if isinstance(block, list) and child in block:
                if any(_guards(s, action, imports) for s in block[: block.index(child)]):
                    return True
                tested = parent.test if isinstance(parent, ast.If | ast.While) and field != "finalbody" else None
                if tested is not None and any(_is_guard(n, action, imports) for n in ast.walk(tested)):
                    return True
        if isinstance(parent, ast.FunctionDef | ast.AsyncFunctionDef | ast.Module):
            return False
        child = parent


CHECKER_CASES = [  # (page source, the violations expected): the checker itself, on what it must refuse
    ("from app.session import guard\ndef f(store, i):\n    guard('cancel', 1)\n    store.request_cancel(i)\n", []),
    ("def f(store, i):\n    store.request_cancel(i)\n", ["request_cancel without guard('cancel'"]),
    ("from app.session import guard\ndef f(store, i):\n    guard('delete', 1)\n    store.request_cancel(i)\n",
     ["request_cancel without guard('cancel'"]),
    ("from app.session import guard\ndef f(store, i):\n    store.request_cancel(i)\n    guard('cancel', 1)\n",
     ["request_cancel without guard('cancel'"]),
    ("from app.session import guard\ndef f(store, i, x):\n    if x:\n        guard('cancel', 1)\n    store.request_cancel(i)\n",
     ["request_cancel without guard('cancel'"]),
    ("from app.session import guard, refusals\ndef f(store, i):\n    with refusals():\n        guard('cancel', 1)\n"
     "    store.request_cancel(i)\n", ["request_cancel without guard('cancel'"]),
    ("from app.session import guard\ndef g():\n    guard('cancel', 1)\ndef f(store, i):\n    store.request_cancel(i)\n",
     ["request_cancel without guard('cancel'"]),
    ("from app.session import guard\nimport streamlit as st\nguard('cancel', 1)\n"
     "st.button('x', on_click=lambda: store.request_cancel(1))\n", ["request_cancel without guard('cancel'"]),
    ("import streamlit as st\nst.button('x', on_click=store.delete_runs, args=([1],))\n", ["delete_runs is passed on"]),
    ("from app.session import guard\nfor r in runs:\n    guard('delete', r.owner_id)\nstore.delete_runs(ids)\n", []),
    ("from app.session import guard\nif i == guard('manage_users').id:\n    pass\nelse:\n    store.remove_user(i)\n", []),
    ("from workers.celery_app import submit as go\ngo(store, spec)\n", ["submit without guard('launch'"]),
    ("from app.session import guard\nfrom workers.celery_app import rerun\nimport streamlit as st\nst.rerun()\n"
     "guard('rerun', 1)\nrerun(store, [1])\n", []),
    ("import workers.celery_app as q\nq.submit_sweep(store, 'n', {}, [])\n", ["submit_sweep without guard('launch'"]),
    ("store.claim(1, 'w', 'cpu', 30)\n", ["claim is not for pages"]),
    ("from app.accounts import login\nlogin(store, 'a', 'b')\n", ["login is not for pages"]),
]  # fmt: skip


@pytest.mark.parametrize(("source", "expected"), CHECKER_CASES)
def test_the_checker_refuses_what_it_must(source: str, expected: list[str]) -> None:
    found = violations(source)
    assert len(found) == len(expected), found
    for message, part in zip(found, expected, strict=True):
        assert part in message


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_every_page_guards_every_change(path: Path) -> None:
    assert violations(path.read_text(), path.name) == []


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(p, id=p.name, marks=[pytest.mark.xfail(strict=True, reason=PENDING_SIGNED_IN[p.name])])
        if p.name in PENDING_SIGNED_IN
        else pytest.param(p, id=p.name)
        for p in UI_FILES
        if p.parent.name == "pages" and p.name != "login.py"
    ],
)
def test_every_page_first_asks_who_is_signed_in(path: Path) -> None:
    """Each page stops for nobody, even if something runs it without the router (as AppTest does)."""
    assert "signed_in(" in path.read_text()


# --- the pages refusing, for real --------------------------------------------------------------------------------

SPEC = parse_spec({"task": "moons-mlp", "optimizer": "sgd", "steps": 10}).model_dump(mode="json")


class Lab:
    """Logins on, four accounts, and AppTest sessions logged in as any of them."""

    def __init__(self, stack: Stack) -> None:
        self.store = stack.store
        self.ids = {
            name: self.store.create_user(name, role, hash_password(f"{name}-password"))
            for name, role in (("root", "admin"), ("alice", "member"), ("bob", "member"), ("vera", "viewer"))
        }

    def run(self, owner: str | None, status: str = "queued", name: str = "r") -> int:
        run_id = self.store.create_run(name, {**SPEC, "name": name}, owner_id=self.ids[owner] if owner else None)
        if status == "running":
            self.store.claim(run_id, "w", "cpu", 30)
        elif status != "queued":
            self.store.claim(run_id, "w", "cpu", 30)
            self.store.finish(run_id, status)
        return run_id

    def page(self, who: str, page: str) -> AppTest:
        """The app logged in as `who` (a real server-side session, as the login page starts), on `page`."""
        at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=60)
        user = self.store.get_user(name=who)
        assert user is not None
        at.session_state[TOKEN_KEY] = start_web_session(self.store, accounts.Principal.of(user), 1)
        at.run()
        assert f"Signed in as **{who}** ({user.role})" in [c.value for c in at.sidebar.caption]
        if page != "launch.py":
            at.switch_page(f"pages/{page}").run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    def demote(self, who: str, role: str = "viewer") -> None:
        self.store.update_user(self.ids[who], role=role)


@pytest.fixture
def lab(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    monkeypatch.setenv("OPTLAB_AUTH", "1")
    get_settings.cache_clear()
    yield Lab(stack)
    get_settings.cache_clear()


def labels(at: AppTest) -> list[str]:
    return [b.label for b in at.button]


def errors(at: AppTest) -> str:
    return " ".join(e.value for e in at.error)


def test_nobody_logged_in_sees_only_the_login_page(lab: Lab) -> None:
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=60).run()
    assert [t.value for t in at.title] == ["Optimizer Lab"] and labels(at) == ["Log in"]
    assert not at.get("download_button") and not at.dataframe
    with pytest.raises(ValueError, match="Could not find a navigation page"):  # the router holds no other page
        at.switch_page("pages/runs.py")
    for page in ("runs.py", "live.py", "sweeps.py", "compare.py", "account.py", "workers.py", "launch.py"):
        direct = AppTest.from_file(str(ROOT / "app" / "pages" / page), default_timeout=60).run()
        assert [w.value for w in direct.warning] == ["Log in first."], page
        assert not direct.dataframe and not direct.get("download_button") and not direct.get("plotly_chart"), page


def test_a_wrong_name_or_password_gets_one_neutral_message_and_a_right_one_a_session(lab: Lab) -> None:
    messages = []
    for name, password in (("alice", "not her password"), ("nobody", "alice-password")):
        at = AppTest.from_file(str(ROOT / "app" / "pages" / "login.py"), default_timeout=60).run()
        at.text_input[0].input(name)
        at.text_input[1].input(password)
        at.button[0].click().run()
        messages.append(errors(at))
        assert TOKEN_KEY not in at.session_state
    assert messages == ["Wrong name or password."] * 2
    at = AppTest.from_file(str(ROOT / "app" / "pages" / "login.py"), default_timeout=60).run()
    at.text_input[0].input("alice")
    at.text_input[1].input("alice-password")
    at.button[0].click().run()
    assert accounts.web_session_principal(lab.store, at.session_state[TOKEN_KEY]).name == "alice"  # type: ignore[union-attr]


def test_a_member_sees_owners_filters_her_own_and_gets_no_cancel_or_delete_on_another_members_run(lab: Lab) -> None:
    mine, theirs = lab.run("alice", name="hers"), lab.run("bob", name="his")
    at = lab.page("alice", "runs.py")
    table = at.dataframe[0].value
    assert dict(zip(table["id"], table["owner"], strict=True)) == {mine: "alice", theirs: "bob"}
    at.toggle(key="runs.mine").set_value(True).run()
    assert list(at.dataframe[0].value["id"]) == [mine]
    at.multiselect(key="selected").set_value([theirs]).run()
    assert "Cancel" not in labels(at) and "Delete for good" not in labels(at)
    assert any("belong to bob" in c.value for c in at.caption)
    at.multiselect(key="selected").set_value([mine]).run()
    at.button(key="runs.cancel").click().run()
    assert lab.store.get_run(mine).status == "cancelled"  # type: ignore[union-attr]
    assert lab.store.get_run(theirs).status == "queued"  # type: ignore[union-attr]


def test_a_stale_cancel_button_is_refused_on_the_server(lab: Lab) -> None:
    """The button was drawn while allowed; by the click the account was demoted: nothing changes."""
    mine = lab.run("alice")
    at = lab.page("alice", "runs.py")
    at.multiselect(key="selected").set_value([mine]).run()
    lab.demote("alice")
    at.button(key="runs.cancel").click().run()
    assert "alice cannot cancel this" in errors(at) and "Nothing was changed" in errors(at)
    assert lab.store.get_run(mine).status == "queued"  # type: ignore[union-attr]
    assert "runs.cancel" not in [b.key for b in at.button]  # and, being a viewer now, it is no longer drawn


def test_an_action_on_another_members_run_is_refused_after_the_admin_who_saw_it_is_demoted(lab: Lab) -> None:
    theirs = lab.run("bob", status="failed")
    at = lab.page("root", "runs.py")
    at.multiselect(key="selected").set_value([theirs]).run()
    assert "Delete for good" in labels(at)  # an admin may delete anyone's run
    lab.demote("root", "member")
    at.button(key="runs.delete").click().run()
    assert "root cannot delete this" in errors(at)
    assert lab.store.get_run(theirs) is not None


def test_a_click_after_logging_out_elsewhere_is_refused(lab: Lab) -> None:
    mine = lab.run("alice", status="failed")
    at = lab.page("alice", "runs.py")
    at.multiselect(key="selected").set_value([mine]).run()
    accounts.end_web_session(lab.store, at.session_state[TOKEN_KEY])  # "Log out" in another tab
    at.button(key="runs.delete").click().run()
    assert lab.store.get_run(mine) is not None
    assert [w.value for w in at.warning] == ["Log in first."] and not at.dataframe


def test_priority_of_own_queued_runs(lab: Lab) -> None:
    mine = lab.run("alice")
    at = lab.page("alice", "runs.py")
    at.multiselect(key="selected").set_value([mine]).run()
    at.number_input(key="runs.priority").set_value(5).run()
    lab.demote("alice")
    at.button(key="runs.set_priority").click().run()
    assert lab.store.get_run(mine).priority == 0  # type: ignore[union-attr]
    lab.demote("alice", "member")
    at = lab.page("alice", "runs.py")
    at.multiselect(key="selected").set_value([mine]).run()
    at.number_input(key="runs.priority").set_value(5).run()
    at.button(key="runs.set_priority").click().run()
    assert lab.store.get_run(mine).priority == 5  # type: ignore[union-attr]


def test_a_viewer_gets_no_launch_form_and_changes_nothing(lab: Lab) -> None:
    run_id = lab.run("vera")  # even a run of hers (made before she was a viewer)
    at = lab.page("vera", "launch.py")
    assert any("not launch runs" in i.value for i in at.info) and "Launch" not in labels(at)
    assert not at.selectbox and not at.number_input
    at = lab.page("vera", "sweeps.py")
    at.segmented_control(key="sweeps.view").set_value("New sweep").run()
    assert any("not queue them" in i.value for i in at.info) and "sw.queue" not in [b.key for b in at.button]
    at = lab.page("vera", "runs.py")
    at.multiselect(key="selected").set_value([run_id]).run()
    assert not {"Cancel", "Delete for good", "Set priority"} & set(labels(at))
    assert any("can read runs, not change them" in c.value for c in at.caption)
    assert lab.store.get_run(run_id).status == "queued"  # type: ignore[union-attr]


def test_launch_records_the_owner_and_a_quota_refusal_queues_nothing(lab: Lab) -> None:
    at = lab.page("alice", "launch.py")
    at.button[0].click().run()
    (run,) = lab.store.list_runs()
    assert run.owner_id == lab.ids["alice"]
    lab.store.update_user(lab.ids["alice"], max_queued=1)
    at.button[0].click().run()
    assert "may have 1 runs queued at once" in errors(at)
    assert len(lab.store.list_runs()) == 1


def test_a_stale_queue_sweep_button_is_refused_and_a_sweep_records_its_owner(lab: Lab) -> None:
    at = lab.page("alice", "sweeps.py")
    at.segmented_control(key="sweeps.view").set_value("New sweep").run()
    lab.demote("alice")
    at.button(key="sw.queue").click().run()
    assert "alice cannot launch" in errors(at)
    assert lab.store.list_sweeps() == [] and lab.store.list_runs() == []
    lab.demote("alice", "member")
    at = lab.page("alice", "sweeps.py")
    at.segmented_control(key="sweeps.view").set_value("New sweep").run()
    at.button(key="sw.queue").click().run()
    (sweep,) = lab.store.list_sweeps()
    assert sweep.owner_id == lab.ids["alice"]
    assert {r.owner_id for r in lab.store.list_runs()} == {lab.ids["alice"]}


def test_sweep_controls_only_for_its_owner_and_a_stale_one_is_refused(lab: Lab) -> None:
    sweep_id = lab.store.create_sweep("bobs", {"name": "bobs"}, owner_id=lab.ids["bob"])
    run_id = lab.store.create_run("b1", SPEC, sweep_id=sweep_id, owner_id=lab.ids["bob"])
    at = lab.page("alice", "sweeps.py")
    assert "#1 bobs · bob" in at.selectbox(key="sweeps.chosen").options
    assert not {"sweep.cancel", "sweep.rerun"} & {b.key for b in at.button}
    assert any("belongs to bob" in c.value for c in at.caption)
    at = lab.page("bob", "sweeps.py")
    lab.demote("bob")
    at.button(key="sweep.cancel").click().run()
    assert "bob cannot cancel this" in errors(at)
    assert lab.store.get_run(run_id).status == "queued"  # type: ignore[union-attr]


def test_account_page_creates_a_token_once_and_revokes_it(lab: Lab) -> None:
    at = lab.page("vera", "account.py")  # a viewer too: her token reads as she does
    assert any("vera" in m.value and "viewer" in m.value for m in at.markdown)
    at.text_input[0].input("laptop")
    next(b for b in at.button if b.label == "Create token").click().run()
    token = at.code[0].value
    assert token_principal(lab.store, token).name == "vera"  # type: ignore[union-attr]
    assert lab.store.list_tokens(lab.ids["vera"])[0].name == "laptop"
    at.run()
    assert not at.code  # shown once
    assert "Accounts" not in [s.value for s in at.subheader]  # no admin section
    at.button(key="token.revoke").click().run()
    assert token_principal(lab.store, token) is None


def test_admins_add_and_remove_accounts_and_a_demoted_admin_cannot(lab: Lab) -> None:
    at = lab.page("root", "account.py")
    assert "Accounts" in [s.value for s in at.subheader]
    form = {t.label: t for t in at.text_input}
    form["Name"].input("carol")
    form["Initial password"].input("carol-password")
    next(b for b in at.button if b.label == "Add account").click().run()
    carol = lab.store.get_user(name="carol")
    assert carol is not None and carol.role == "member"
    assert accounts.login(lab.store, "carol", "carol-password") is not None
    remove = next(s for s in at.selectbox if s.label == "Account")
    remove.set_value(carol.id).run()
    lab.demote("root", "member")
    at.button(key="user.remove").click().run()
    assert "root cannot manage users" in errors(at) and lab.store.get_user(name="carol") is not None
    lab.demote("root", "admin")
    at = lab.page("root", "account.py")
    next(s for s in at.selectbox if s.label == "Account").set_value(carol.id).run()
    at.button(key="user.remove").click().run()
    assert lab.store.get_user(name="carol") is None


def fake_worker(lab: Lab, name: str, run_id: int | None = None) -> None:
    lab.store.worker_heartbeat(
        name, celery_name=f"c@{name}", host="gpu-box", kind="cuda", device="NVIDIA H200, 141 GiB",
        state="training" if run_id else "idle", run_id=run_id,
        stats={"cpu_percent": 12.0, "memory_percent": 40.0, "gpu_util_percent": 97.0,
               "gpu_memory_used": 30 * 2**30, "gpu_memory_total": 141 * 2**30},
    )  # fmt: skip


def test_workers_page_and_a_drain_only_an_admin_may_ask_for(lab: Lab) -> None:
    run_id = lab.run("alice", status="running")
    fake_worker(lab, "gpu-box:1", run_id)
    at = lab.page("bob", "workers.py")
    table = at.table[0].value
    assert table.loc["gpu-box:1", "status"] == f"training run {run_id} (alice)"
    assert table.loc["gpu-box:1", "GPU"] == "97% · 30.0/141 GiB"
    assert not [b for b in at.button if b.label in ("Drain", "Undrain")]
    at = lab.page("root", "workers.py")
    lab.demote("root", "member")
    at.button(key="drain-gpu-box:1").click().run()
    assert not lab.store.worker_draining("gpu-box:1")
    lab.demote("root", "admin")
    at = lab.page("root", "workers.py")
    at.button(key="drain-gpu-box:1").click().run()
    assert lab.store.worker_draining("gpu-box:1")
    assert "Undrain" in labels(at)


def test_workers_page_says_how_to_start_one(lab: Lab) -> None:
    at = lab.page("vera", "workers.py")
    assert any("python -m workers" in i.value for i in at.info)


def test_with_auth_off_nothing_asks_who_you_are(stack: Stack) -> None:
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=60).run()
    assert at.title[0].value == "Launch a run" and "Launch" in labels(at)
    run_id = stack.store.create_run("r", SPEC)
    at = AppTest.from_file(str(ROOT / "app" / "pages" / "runs.py"), default_timeout=60).run()
    assert "owner" not in at.dataframe[0].value.columns  # no owners shown on a laptop
    at.multiselect(key="selected").set_value([run_id]).run()
    at.button(key="runs.cancel").click().run()
    assert stack.store.get_run(run_id).status == "cancelled"  # type: ignore[union-attr]


def test_live_shows_owners_no_cancel_on_anothers_run_and_only_mine(lab: Lab) -> None:
    mine, theirs = lab.run("alice", name="hers"), lab.run("bob", name="his")
    at = lab.page("alice", "live.py")
    texts = [p.proto.text for p in at.get("progress")]
    assert any(f"#{mine} hers (alice)" in t for t in texts) and any(f"#{theirs} his (bob)" in t for t in texts)
    assert {b.key for b in at.button if b.key and b.key.startswith("cancel-")} == {f"cancel-{mine}"}
    at.toggle(key="live.mine").set_value(True).run()
    texts = [p.proto.text for p in at.get("progress")]
    assert len(texts) == 1 and f"#{mine} hers" in texts[0]
