"""The web dashboard (SPEC §4, §7): every route and every authentication case, called as a WSGI
application with environ dicts (no server, no sockets), then the real thing: a daemon with
``[dashboard] enabled = true`` on a free port, fetched with urllib.

Operator actions are checked twice: the HTTP mapping (status codes, body rules, CSRF, actor)
against stand-in ``DurableOperator`` methods, and end to end against the real methods, which
are skipped while ``DurableOperator`` does not have them yet.
"""

from __future__ import annotations

import io
import json
import logging
import re
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from wsgiref.util import setup_testing_defaults

import pytest
from typer.testing import CliRunner

from durablectl import (
    DurableClient,
    DurableOperator,
    DurableService,
    ExecutionFailed,
    ExecutionNotFound,
    ExecutionStateError,
    PayloadError,
    SqliteStore,
    StepIdError,
    create_dashboard_app,
    workflow,
)
from durablectl.dashboard.app import DashboardApp
from durablectl.dashboard.auth import SESSION_SECONDS, TokenAuth
from durablectl.dashboard.server import DashboardServer, allowed_hosts_for
from durablectl.dashboard.web import host_name, prefers_html
from durablectl.model import to_json

from .conftest import run
from .test_daemon import DURABLECTL, DaemonHarness, wait_until
from .test_daemon import daemon as daemon  # the fixture, for the daemon tests at the end

TOKEN = "tok-3f9c2b7e-a-long-random-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
XSS = "<script>alert(1)</script>"
XSS_ERROR = "<img src=x onerror=alert(1)>"
ACTIONS = ("retry", "fork", "skip-step", "force-fail", "edit-state", "retry-rollback")
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]*)">')


# -- workflows and data -----------------------------------------------------------------------
@workflow("dash.echo.v1", alias="dash.echo")
async def echo(ctx: Any, data: Any) -> Any:
    return await ctx.step("echo", lambda: {"echo": data, "html": XSS})


def _boom() -> None:
    raise ValueError(XSS_ERROR)


@workflow("dash.fail.v1", max_attempts=1)
async def fail(ctx: Any, data: Any) -> None:
    await ctx.step("first", lambda: 1)
    await ctx.step("boom", _boom)


class Seeded:
    def __init__(self, completed: str, failed: str, pending: list[str]) -> None:
        self.completed, self.failed, self.pending = completed, failed, pending


@pytest.fixture
def seeded(store: SqliteStore) -> Seeded:
    """A completed execution whose input and result hold a script tag, a failed one whose error
    is markup, and five pending ones that no worker runs."""
    async def main() -> tuple[str, str]:
        async with DurableService(store, [echo, fail]) as service:
            done = await service.start_execution(echo, {"x": XSS})
            await service.wait(done, timeout=5)
            failed = await service.start_execution(fail, None)
            with pytest.raises(ExecutionFailed):
                await service.wait(failed, timeout=5)
            return done, failed

    completed, failed = run(main())
    client = DurableClient(store)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no worker is running": on purpose
        pending = [client.start_execution("dash.echo.v1", {"n": n}) for n in range(5)]
    return Seeded(completed, failed, pending)


# -- a WSGI test client -----------------------------------------------------------------------
class Reply:
    def __init__(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = int(status.split()[0])
        self.header_list = headers
        self.headers = {k.lower(): v for k, v in headers}
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        assert self.headers["content-type"].startswith("application/json"), self.headers
        return json.loads(self.body)

    def cookies(self) -> list[str]:
        return [v for k, v in self.header_list if k.lower() == "set-cookie"]

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.body[:200]!r})"


class Client:
    """Calls the app as a WSGI server would; keeps cookies like a browser."""

    def __init__(self, app: Any, host: str | None = "localhost", script_name: str = "") -> None:
        self.app = app
        self.host = host
        self.script_name = script_name
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, *, query: dict[str, Any] | None = None,
                headers: dict[str, str] | None = None, body: bytes = b"",
                json_body: Any = None, form: dict[str, str] | None = None,
                host: str | None = "") -> Reply:
        environ: dict[str, Any] = {}
        setup_testing_defaults(environ)
        headers = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers.setdefault("Content-Type", "application/json")
        if form is not None:
            body = urlencode(form).encode()
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        environ.update({
            "REQUEST_METHOD": method, "SCRIPT_NAME": self.script_name,
            "PATH_INFO": path.encode("utf-8").decode("latin-1"),
            "QUERY_STRING": urlencode(query or {}), "wsgi.input": io.BytesIO(body),
            "CONTENT_LENGTH": str(len(body)),
        })
        chosen_host = self.host if host == "" else host
        if chosen_host is not None:
            environ["HTTP_HOST"] = chosen_host
        if self.cookies:
            environ["HTTP_COOKIE"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        for name, value in headers.items():
            key = name.upper().replace("-", "_")
            environ[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"] = value
        seen: dict[str, Any] = {}

        def start_response(status: str, response_headers: list[tuple[str, str]],
                           exc_info: Any = None) -> None:
            seen["status"], seen["headers"] = status, response_headers

        out = b"".join(self.app(environ, start_response))
        reply = Reply(seen["status"], seen["headers"], out)
        for cookie in reply.cookies():
            name, _, rest = cookie.partition("=")
            value = rest.split(";")[0]
            if "Max-Age=0" in cookie:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return reply

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Reply:
        return self.request("POST", path, **kwargs)

    def login(self, token: str = TOKEN) -> Reply:
        return self.post("/login", form={"token": token}, headers={"Accept": BROWSER})

    def csrf(self) -> str:
        page = self.get("/", headers={"Accept": BROWSER})
        assert page.status == 200, page
        found = CSRF_META.search(page.text)
        assert found and found.group(1), "no CSRF token on the page"
        return found.group(1)


@pytest.fixture
def app(store: SqliteStore) -> DashboardApp:
    return create_dashboard_app(store, token=TOKEN)


@pytest.fixture
def web(app: DashboardApp) -> Client:
    return Client(app)


class Calls:
    """Stand-ins for the operator's methods: they record their arguments and return or raise
    what the test says."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.outcome: Any = None
        for name in ("retry", "fork", "skip_step", "force_fail", "edit_state",
                     "retry_rollback"):
            monkeypatch.setattr(DurableOperator, name, self._method(name), raising=False)

    def _method(self, name: str) -> Any:
        def method(operator: DurableOperator, execution_id: str, *args: Any,
                   **kwargs: Any) -> Any:
            self.seen.append((name, (execution_id, *args), kwargs))
            if isinstance(self.outcome, Exception):
                raise self.outcome
            return self.outcome if self.outcome is not None else execution_id
        return method


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    return Calls(monkeypatch)


# -- authentication ---------------------------------------------------------------------------
PROTECTED = ["/", "/schedules", "/health", "/executions/{id}", "/api/executions",
             "/api/executions/{id}", "/api/schedules", "/api/health"]


@pytest.mark.parametrize("path", PROTECTED)
def test_without_a_token_a_client_gets_401_and_no_data(web: Client, seeded: Seeded,
                                                       path: str) -> None:
    for accept in (None, "*/*", "application/json"):
        reply = web.get(path.format(id=seeded.completed),
                        headers={"Accept": accept} if accept else {})
        assert reply.status == 401, (accept, reply)
        assert reply.json()["error"].startswith("authentication required")
        assert reply.headers["www-authenticate"].startswith("Bearer")
        assert seeded.completed not in reply.text and "dash.echo" not in reply.text


@pytest.mark.parametrize("path", PROTECTED)
def test_without_a_token_a_browser_is_sent_to_the_login_page(web: Client, seeded: Seeded,
                                                             path: str) -> None:
    reply = web.get(path.format(id=seeded.completed), headers={"Accept": BROWSER})
    assert reply.status == 303 and reply.headers["location"] == "/login"
    assert reply.body == b""


def test_posts_without_a_token_are_refused_before_anything_runs(web: Client, seeded: Seeded,
                                                                calls: Calls) -> None:
    reply = web.post("/api/operator/force-fail", json_body={"execution_id": seeded.pending[0]})
    assert reply.status == 401 and calls.seen == []
    assert web.post("/api/schedules/x/pause").status == 401


@pytest.mark.parametrize("header", [
    "Bearer wrong", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer", "Bearer ",
    f"Basic {TOKEN}", TOKEN, f"Token {TOKEN}",
])
def test_a_wrong_token_is_refused(web: Client, seeded: Seeded, header: str) -> None:
    reply = web.get("/api/executions", headers={"Authorization": header})
    assert reply.status == 401 and "executions" not in reply.json()


def test_a_wrong_header_is_not_rescued_by_a_valid_cookie(web: Client) -> None:
    assert web.login().status == 303
    assert web.get("/api/executions").status == 200
    assert web.get("/api/executions", headers={"Authorization": "Bearer nope"}).status == 401


@pytest.mark.parametrize("path", PROTECTED)
def test_the_right_bearer_token_opens_every_route(web: Client, seeded: Seeded,
                                                  path: str) -> None:
    target = path.format(id=seeded.completed)
    reply = web.get(target, headers=BEARER)
    assert reply.status == 200, reply
    if target.startswith("/api/"):
        reply.json()
    page = web.get(target, headers={**BEARER, "Accept": BROWSER})
    assert page.status == 200
    expected = "application/json" if target.startswith("/api/") else "text/html"
    assert page.headers["content-type"].startswith(expected)


def test_an_empty_token_is_refused_up_front(store: SqliteStore) -> None:
    for token in ("", "   "):
        with pytest.raises(ValueError, match="non-empty token"):
            create_dashboard_app(store, token=token)


def test_the_bearer_scheme_is_case_insensitive(web: Client) -> None:
    assert web.get("/api/health", headers={"Authorization": f"bearer {TOKEN}"}).status == 200


def test_the_login_form_sets_an_httponly_samesite_cookie_and_redirects_home(
        web: Client, seeded: Seeded) -> None:
    form = web.get("/login", headers={"Accept": BROWSER})
    assert form.status == 200 and 'name="token"' in form.text and 'method="post"' in form.text
    assert seeded.completed not in form.text  # the login page shows no data
    reply = web.login()
    assert reply.status == 303 and reply.headers["location"] == "/"
    [cookie] = reply.cookies()
    assert cookie.startswith("durablectl_session=")
    attributes = {a.strip().split("=")[0] for a in cookie.split(";")[1:]}
    assert {"HttpOnly", "SameSite", "Path", "Max-Age"} <= attributes
    assert "SameSite=Strict" in cookie and "Path=/;" in cookie and "Secure" not in cookie
    assert TOKEN not in cookie  # the cookie is a signed session, not the token
    page = web.get("/", headers={"Accept": BROWSER})
    assert page.status == 200 and seeded.completed in page.text
    assert web.get("/api/executions").json()["executions"]


def test_a_wrong_login_sets_no_cookie(web: Client) -> None:
    for form in ({"token": "nope"}, {"token": ""}, {}):
        reply = web.post("/login", form=form, headers={"Accept": BROWSER})
        assert reply.status == 401 and reply.cookies() == []
        assert "not the dashboard&#x27;s token" in reply.text
    assert web.post("/login", json_body={"token": TOKEN}).status == 401  # a form, not JSON
    assert web.get("/api/executions").status == 401


def test_the_login_cookie_is_secure_over_https(app: DashboardApp) -> None:
    client = Client(app)
    environ_scheme = {"wsgi.url_scheme": "https"}
    original = client.app

    def https(environ: dict[str, Any], start_response: Any) -> Any:
        environ.update(environ_scheme)
        return original(environ, start_response)

    client.app = https
    assert "Secure" in client.login().cookies()[0]


def test_forged_and_expired_sessions_are_refused(web: Client, app: DashboardApp) -> None:
    web.login()
    good = web.cookies["durablectl_session"]
    issued, nonce, mac = good.split(".")
    forged = [f"{issued}.{nonce}.{'0' * len(mac)}", f"{int(issued) + 1}.{nonce}.{mac}",
              f"{issued}.other.{mac}", "garbage", "", TOKEN,
              TokenAuth("another-token").new_session(float(issued)),
              app.auth.new_session(float(issued) - SESSION_SECONDS - 5)]
    for value in forged:
        web.cookies["durablectl_session"] = value
        assert web.get("/api/executions").status == 401, value


def test_logout_clears_the_cookie(web: Client) -> None:
    web.login()
    csrf = web.csrf()
    assert web.post("/logout", form={}).status == 403  # a cookie session's POST needs CSRF
    reply = web.post("/logout", form={"csrf_token": csrf}, headers={"Accept": BROWSER})
    assert reply.status == 303 and reply.headers["location"] == "/login"
    assert "Max-Age=0" in reply.cookies()[0]
    assert web.get("/api/executions").status == 401


def test_the_token_never_shows_in_a_page_a_header_or_the_log(
        web: Client, seeded: Seeded, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    replies = [web.login("wrong"), web.login()]
    replies += [web.get(p.format(id=seeded.completed), headers={"Accept": BROWSER})
                for p in PROTECTED]
    replies.append(web.get("/login"))
    for reply in replies:
        assert TOKEN not in reply.text
        assert all(TOKEN not in v for _k, v in reply.header_list)
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(web.app) and TOKEN not in repr(web.app.auth)


# -- CSRF -------------------------------------------------------------------------------------
def test_a_cookie_session_needs_the_csrf_token_on_post(web: Client, seeded: Seeded,
                                                       calls: Calls) -> None:
    web.login()
    body = {"execution_id": seeded.pending[0]}
    reply = web.post("/api/operator/retry", json_body=body)
    assert reply.status == 403 and "CSRF" in reply.json()["error"]
    reply = web.post("/api/operator/retry", json_body=body, headers={"X-CSRF-Token": "0" * 64})
    assert reply.status == 403
    other = Client(web.app)
    other.login()
    reply = web.post("/api/operator/retry", json_body=body,
                     headers={"X-CSRF-Token": other.csrf()})  # another session's token
    assert reply.status == 403
    assert calls.seen == []
    csrf = web.csrf()
    reply = web.post("/api/operator/retry", json_body=body, headers={"X-CSRF-Token": csrf})
    assert reply.status == 200 and reply.json() == {"execution_id": seeded.pending[0]}
    # a form posted without script carries it as a field, and lands back on a page
    reply = web.post("/api/operator/retry", form={**body, "csrf_token": csrf, "reason": "r"},
                     headers={"Accept": BROWSER})
    assert reply.status == 303
    assert reply.headers["location"] == f"/executions/{seeded.pending[0]}"
    assert [c[0] for c in calls.seen] == ["retry", "retry"]
    assert calls.seen[1][2] == {"reason": "r", "actor": "dashboard"}


def test_a_bearer_request_needs_no_csrf_token(web: Client, seeded: Seeded,
                                              calls: Calls) -> None:
    reply = web.post("/api/operator/retry", json_body={"execution_id": seeded.failed},
                     headers=BEARER)
    assert reply.status == 200 and reply.json() == {"execution_id": seeded.failed}


def test_every_page_carries_the_sessions_csrf_token_in_its_forms(web: Client,
                                                                 seeded: Seeded) -> None:
    web.login()
    csrf = web.csrf()
    page = web.get(f"/executions/{seeded.failed}", headers={"Accept": BROWSER})
    assert f'name="csrf_token" value="{csrf}"' in page.text
    assert CSRF_META.search(page.text).group(1) == csrf  # type: ignore[union-attr]


# -- the Host check ---------------------------------------------------------------------------
def test_host_check_refuses_other_names(store: SqliteStore) -> None:
    app = create_dashboard_app(store, token=TOKEN, allowed_hosts=["dash.example", "10.0.0.7"])
    client = Client(app)
    for host in ("dash.example", "dash.example:8080", "DASH.Example.", "10.0.0.7:80"):
        assert client.get("/api/health", headers=BEARER, host=host).status == 200, host
    for host in ("evil.example", "dash.example.evil.example", "localhost", None, "",
                 "evil.example:8765"):
        reply = client.get("/api/health", headers=BEARER, host=host)
        assert reply.status == 403, host
        assert "not allowed" in reply.json()["error"]
    # before anything else: the login page and unauthenticated requests too
    assert client.get("/login", host="evil.example").status == 403
    assert client.get("/api/health", host="evil.example").status == 403


def test_a_mounted_app_without_allowed_hosts_leaves_the_host_to_its_framework(
        web: Client) -> None:
    for host in ("evil.example", "anything:1234", None):
        assert web.get("/api/health", headers=BEARER, host=host).status == 200


def test_a_served_dashboard_accepts_its_address_localhost_and_allowed_hosts(
        store: SqliteStore) -> None:
    app = create_dashboard_app(store, token=TOKEN,
                               allowed_hosts=allowed_hosts_for("127.0.0.1", ["box.lan"]))
    client = Client(app)
    for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765", "box.lan", "LOCALHOST"):
        assert client.get("/api/health", headers=BEARER, host=host).status == 200, host
    for host in ("rebind.attacker.example:8765", "127.0.0.1.nip.io", "0.0.0.0"):
        assert client.get("/api/health", headers=BEARER, host=host).status == 403, host
    one = Client(create_dashboard_app(store, token=TOKEN, allowed_hosts="box.lan"))
    assert one.get("/api/health", headers=BEARER, host="box.lan").status == 200
    assert one.get("/api/health", headers=BEARER, host="b").status == 403  # not its letters
    wildcard = Client(create_dashboard_app(store, token=TOKEN, allowed_hosts=["*"]))
    assert wildcard.get("/api/health", headers=BEARER, host="any.example").status == 200


def test_host_names_and_accept_headers_parse_as_browsers_send_them() -> None:
    assert host_name("Example.COM.:443") == "example.com"
    assert host_name("[::1]:8765") == "::1" and host_name("::1") == "::1"
    assert prefers_html(BROWSER) and prefers_html("text/html")
    for accept in (None, "", "*/*", "application/json", "application/json, text/html;q=0.5",
                   "text/html;q=0", "text/*;q=0.5, */*"):
        assert not prefers_html(accept), accept


# -- the JSON API -----------------------------------------------------------------------------
def test_api_executions_pages_through_everything_newest_first(web: Client,
                                                              seeded: Seeded) -> None:
    everything = web.get("/api/executions", headers=BEARER).json()
    assert everything["next_offset"] is None
    ids = [e["execution_id"] for e in everything["executions"]]
    assert sorted(ids) == sorted([seeded.completed, seeded.failed, *seeded.pending])
    assert ids == [e.execution_id for e in web.app.store.list_executions()]
    seen: list[str] = []
    offset: int | None = 0
    pages = 0
    while offset is not None:
        page = web.get("/api/executions", query={"limit": 2, "offset": offset},
                       headers=BEARER).json()
        assert set(page) == {"executions", "next_offset"}
        assert len(page["executions"]) <= 2
        seen += [e["execution_id"] for e in page["executions"]]
        offset = page["next_offset"]
        pages += 1
    assert seen == ids and pages == 4
    last = web.get("/api/executions", query={"limit": 2, "offset": 6}, headers=BEARER).json()
    assert last["next_offset"] is None and len(last["executions"]) == 1
    beyond = web.get("/api/executions", query={"offset": 100}, headers=BEARER).json()
    assert beyond == {"executions": [], "next_offset": None}


def test_api_executions_rows_have_the_execution_shape(web: Client, seeded: Seeded) -> None:
    rows = web.get("/api/executions", headers=BEARER).json()["executions"]
    stored = {e.execution_id: to_json(e) for e in web.app.store.list_executions()}
    for row in rows:
        assert row == stored[row["execution_id"]]
        assert {"execution_id", "workflow_id", "status", "status_reason", "attempt",
                "max_attempts", "input", "result", "error", "created_at",
                "updated_at"} <= set(row)


@pytest.mark.parametrize(("query", "expected"), [
    ({"status": "pending"}, "pending"),
    ({"status": "completed"}, "completed"),
    ({"status": "failed,completed"}, "failed completed"),
    ({"status": "finished"}, "failed completed"),
    ({"status": "active"}, "pending"),
    ({"workflow": "dash.fail.v1"}, "failed"),
    ({"workflow": "dash.echo"}, "pending completed"),  # an alias lists its workflow id's
    ({"workflow": "dash.echo.v1", "status": "completed"}, "completed"),
    ({"workflow": "nope"}, ""),
])
def test_api_executions_filters(web: Client, seeded: Seeded, query: dict[str, str],
                                expected: str) -> None:
    rows = web.get("/api/executions", query=query, headers=BEARER).json()["executions"]
    assert {r["status"] for r in rows} == set(expected.split())
    if query.get("status") == "pending":
        assert sorted(r["execution_id"] for r in rows) == sorted(seeded.pending)


@pytest.mark.parametrize("query", [
    {"status": "bogus"}, {"status": "pending,bogus"}, {"limit": "0"}, {"limit": "x"},
    {"limit": "501"}, {"offset": "-1"}, {"offset": "1.5"},
])
def test_api_executions_refuses_bad_queries(web: Client, query: dict[str, str]) -> None:
    reply = web.get("/api/executions", query=query, headers=BEARER)
    assert reply.status == 400 and reply.json()["error"]


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI in this process with no config file and nothing of the user's."""
    for name in ("XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR"):
        folder = tmp_path / "xdg" / name.lower()
        folder.mkdir(parents=True, mode=0o700)
        monkeypatch.setenv(name, str(folder))
    for name in ("DURABLECTL_DB", "DURABLECTL_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)


def test_api_execution_detail_is_the_shape_of_show_json(web: Client, seeded: Seeded,
                                                        db_path: Path, cli_env: None) -> None:
    from durablectl.cli.app import app as cli_app

    for execution_id in (seeded.completed, seeded.failed, seeded.pending[0]):
        api = web.get(f"/api/executions/{execution_id}", headers=BEARER).json()
        shown = CliRunner().invoke(cli_app, ["show", execution_id, "--json", "--db",
                                             str(db_path)], catch_exceptions=False)
        assert shown.exit_code == 0, shown.stderr
        assert api == json.loads(shown.stdout)
        assert set(api) == {"execution", "steps", "audit"}
    failed = web.get(f"/api/executions/{seeded.failed}", headers=BEARER).json()
    assert failed["execution"]["error"]["message"].endswith(XSS_ERROR)


def test_an_unchanged_execution_answers_a_bodiless_304_to_its_etag(
        web: Client, seeded: Seeded) -> None:
    """An execution page asks every few seconds whether anything changed; a long history
    must not be read and sent again each time when nothing did."""
    path = f"/api/executions/{seeded.failed}"
    first = web.get(path, headers=BEARER)
    tag = first.headers["etag"]
    assert first.status == 200 and tag.startswith('"') and first.json()["execution"]
    again = web.get(path, headers={**BEARER, "If-None-Match": tag})
    assert (again.status, again.body, again.headers["etag"]) == (304, b"", tag)
    assert "content-type" not in again.headers and "content-length" not in again.headers
    assert web.get(path, headers={**BEARER, "If-None-Match": '"other"'}).status == 200
    web.post("/api/operator/retry", headers=BEARER,
             json_body={"execution_id": seeded.failed, "reason": "try again"})
    changed = web.get(path, headers={**BEARER, "If-None-Match": tag})
    assert changed.status == 200 and changed.headers["etag"] != tag
    assert changed.json()["execution"]["status"] == "pending"
    assert web.get("/api/executions/nope", headers={**BEARER, "If-None-Match": tag}
                   ).status == 404


def test_an_unknown_execution_is_404(web: Client) -> None:
    reply = web.get("/api/executions/nope", headers=BEARER)
    assert reply.status == 404 and "nope" in reply.json()["error"]
    page = web.get("/executions/nope", headers={**BEARER, "Accept": BROWSER})
    assert page.status == 404 and page.headers["content-type"].startswith("text/html")
    assert web.get("/executions/nope", headers=BEARER).status == 404


def test_unknown_routes_and_wrong_methods(web: Client) -> None:
    assert web.get("/nowhere", headers=BEARER).status == 404
    assert web.get("/api/nowhere", headers=BEARER).status == 404
    assert web.get("/executions/a/b", headers=BEARER).status == 404
    for method, path in (("POST", "/api/executions"), ("GET", "/api/operator/retry"),
                         ("DELETE", "/api/executions"), ("POST", "/"),
                         ("GET", "/logout"), ("PUT", "/login")):
        reply = web.request(method, path, headers=BEARER)
        assert reply.status == 405, (method, path, reply)


def test_head_answers_like_get_without_a_body(web: Client, seeded: Seeded) -> None:
    reply = web.request("HEAD", "/api/executions", headers=BEARER)
    assert reply.status == 200 and reply.body == b""
    assert int(reply.headers["content-length"]) > 0


def test_api_schedules_and_pause_resume(web: Client, seeded: Seeded) -> None:
    client = DurableClient(web.app.store)
    client.ensure_schedule("dash.echo.v1", {"n": 1}, id="nightly", cron="0 3 * * *",
                           timezone="Europe/Paris")
    listed = web.get("/api/schedules", headers=BEARER).json()
    assert listed == {"schedules": to_json(web.app.store.list_schedules())}
    assert listed["schedules"][0]["id"] == "nightly"
    paused = web.post("/api/schedules/nightly/pause", headers=BEARER)
    assert paused.status == 200
    assert paused.json()["schedule"]["status"] == "paused"
    assert web.app.store.get_schedule("nightly").status == "paused"  # type: ignore[union-attr]
    resumed = web.post("/api/schedules/nightly/resume", headers=BEARER).json()
    assert resumed["schedule"]["status"] == "active" and resumed["schedule"]["next_run"]
    assert web.post("/api/schedules/missing/pause", headers=BEARER).status == 404
    page = web.get("/schedules", headers={**BEARER, "Accept": BROWSER})
    assert "nightly" in page.text and "0 3 * * *" in page.text
    assert "/api/schedules/nightly/pause" in page.text


def test_health(web: Client, seeded: Seeded) -> None:
    health = web.get("/health", headers=BEARER).json()
    assert health == web.get("/api/health", headers=BEARER).json()
    assert health["status"] == "ok"
    assert health["queue_depth"] == 5 and health["executions"]["pending"] == 5
    assert health["active"] == 5
    assert health["daemon"] == {"pid": None, "state": "not running"}
    assert health["workers"] == [] and health["timers_due"] is False
    page = web.get("/health", headers={**BEARER, "Accept": BROWSER})
    assert page.headers["content-type"].startswith("text/html")
    assert "queue depth" in page.text and "not running" in page.text


# -- operator actions -------------------------------------------------------------------------
@pytest.mark.parametrize(("action", "body", "method", "args"), [
    ("retry", {}, "retry", ()),
    ("fork", {"step_id": "echo"}, "fork", ("echo",)),
    ("skip-step", {"step_id": "echo"}, "skip_step", ("echo", None)),
    ("skip-step", {"step_id": "echo", "value": {"v": 1}}, "skip_step", ("echo", {"v": 1})),
    ("force-fail", {"reason": "stuck"}, "force_fail", ("stuck",)),
    ("edit-state", {"step_id": "echo", "value": None}, "edit_state", ("echo", None)),
    ("edit-state", {"step_id": "echo", "value": [1, "x"]}, "edit_state", ("echo", [1, "x"])),
    ("retry-rollback", {"reason": "fixed"}, "retry_rollback", ()),
])
def test_each_action_calls_the_operator_as_the_dashboard(
        web: Client, calls: Calls, action: str, body: dict[str, Any], method: str,
        args: tuple[Any, ...]) -> None:
    reply = web.post(f"/api/operator/{action}", json_body={"execution_id": "e1", **body},
                     headers=BEARER)
    assert reply.status == 200 and reply.json() == {"execution_id": "e1"}
    [(name, called_args, kwargs)] = calls.seen
    assert name == method and called_args == ("e1", *args)
    assert kwargs["actor"] == "dashboard"
    if action != "force-fail":
        assert kwargs["reason"] == body.get("reason")


def test_fork_answers_with_the_new_execution(web: Client, calls: Calls) -> None:
    calls.outcome = "new-id"
    reply = web.post("/api/operator/fork", json_body={"execution_id": "e1", "step_id": "s"},
                     headers=BEARER)
    assert reply.json() == {"execution_id": "new-id"}


@pytest.mark.parametrize(("error", "status"), [
    (ExecutionNotFound("e1"), 404),
    (ExecutionStateError("e1", "retry", "completed", ["failed"]), 409),
    (StepIdError("no step 'x' in execution e1"), 400),
    (PayloadError("value is larger than 1048576 bytes"), 400),
])
def test_operator_errors_map_to_http_statuses(web: Client, calls: Calls, error: Exception,
                                              status: int) -> None:
    calls.outcome = error
    for action in ACTIONS:
        body = {"execution_id": "e1", "step_id": "s", "value": 1}
        reply = web.post(f"/api/operator/{action}", json_body=body, headers=BEARER)
        assert reply.status == status, action
        assert reply.json() == {"error": str(error)}


@pytest.mark.parametrize(("action", "body", "message"), [
    ("explode", {"execution_id": "e1"}, "unknown action"),
    ("retry", {}, "execution_id is required"),
    ("retry", {"execution_id": 7}, "execution_id is required"),
    ("retry", {"execution_id": ""}, "execution_id is required"),
    ("retry", [1, 2], "JSON object"),
    ("fork", {"execution_id": "e1"}, "needs step_id"),
    ("skip-step", {"execution_id": "e1", "step_id": 3}, "needs step_id"),
    ("edit-state", {"execution_id": "e1", "step_id": "s"}, "needs value"),
    ("force-fail", {"execution_id": "e1", "reason": {"no": 1}}, "reason must be a string"),
])
def test_bad_actions_and_bodies_are_400(web: Client, calls: Calls, action: str, body: Any,
                                        message: str) -> None:
    reply = web.post(f"/api/operator/{action}", json_body=body, headers=BEARER)
    assert reply.status == 400 and message in reply.json()["error"]
    assert calls.seen == []


def test_unreadable_bodies_are_refused(web: Client, calls: Calls) -> None:
    path = "/api/operator/retry"
    assert web.post(path, body=b"{nope", headers={**BEARER, "Content-Type":
                                                  "application/json"}).status == 400
    assert web.post(path, body=b"\xff\xfe", headers={**BEARER, "Content-Type":
                                                     "application/json"}).status == 400
    assert web.post(path, body=b'{"execution_id": "e1"}',
                    headers={**BEARER, "Content-Type": "text/plain"}).status == 400
    huge = web.post(path, body=b"", headers={**BEARER, "Content-Type": "application/json",
                                             "Content-Length": str(64 * 1024 * 1024)})
    assert huge.status == 413
    form = web.post("/api/operator/edit-state", headers=BEARER,
                    form={"execution_id": "e1", "step_id": "s", "value": "{bad"})
    assert form.status == 400 and "value is not valid JSON" in form.text
    assert calls.seen == []


def test_an_action_the_operator_does_not_have_yet_is_501(web: Client,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(DurableOperator, "retry", raising=False)
    reply = web.post("/api/operator/retry", json_body={"execution_id": "e1"}, headers=BEARER)
    assert reply.status == 501 and "no retry action" in reply.json()["error"]


def test_a_read_only_dashboard_refuses_actions_and_shows_no_buttons(
        store: SqliteStore, seeded: Seeded, calls: Calls) -> None:
    client = Client(create_dashboard_app(store, token=TOKEN, operator=False))
    for action in (*ACTIONS, "explode"):
        reply = client.post(f"/api/operator/{action}",
                            json_body={"execution_id": seeded.failed, "step_id": "first"},
                            headers=BEARER)
        assert reply.status == 403 and "read-only" in reply.json()["error"]
    DurableClient(store).ensure_schedule("dash.echo.v1", None, id="hourly", interval=3600)
    assert client.post("/api/schedules/hourly/pause", headers=BEARER).status == 403
    assert calls.seen == []
    assert store.get_schedule("hourly").status == "active"  # type: ignore[union-attr]
    for path in (f"/executions/{seeded.failed}", "/schedules"):
        page = client.get(path, headers={**BEARER, "Accept": BROWSER})
        assert page.status == 200
        assert "/api/operator/" not in page.text and "/pause" not in page.text
    # reading still works
    assert client.get(f"/api/executions/{seeded.failed}", headers=BEARER).status == 200


needs_operator = pytest.mark.skipif(
    not all(hasattr(DurableOperator, m) for m in ("retry", "fork", "force_fail", "edit_state",
                                                   "skip_step", "retry_rollback")),
    reason="DurableOperator's repair actions are not there yet (the operator issue adds them)")


@needs_operator
def test_real_actions_change_the_execution_and_are_audited_as_the_dashboard(
        web: Client, seeded: Seeded) -> None:
    store = web.app.store
    target = seeded.pending[0]
    reply = web.post("/api/operator/force-fail",
                     json_body={"execution_id": target, "reason": "stuck"}, headers=BEARER)
    assert reply.status == 200 and reply.json() == {"execution_id": target}
    assert store.get_execution(target).status == "failed"  # type: ignore[union-attr]
    actions = [a.data for a in store.list_audit_entries(target) if a.kind == "operator_action"]
    assert actions and actions[-1]["actor"] == "dashboard"
    assert actions[-1]["action"] in ("force-fail", "force_fail")
    fork = web.post("/api/operator/fork", json_body={"execution_id": seeded.completed,
                                                     "step_id": "echo"}, headers=BEARER)
    assert fork.status == 200 and fork.json()["execution_id"] != seeded.completed
    assert store.get_execution(fork.json()["execution_id"]) is not None
    assert web.post("/api/operator/retry", json_body={"execution_id": seeded.completed},
                    headers=BEARER).status == 409
    assert web.post("/api/operator/retry", json_body={"execution_id": "nope"},
                    headers=BEARER).status == 404
    assert web.post("/api/operator/fork", json_body={"execution_id": seeded.completed,
                                                     "step_id": "no-such-step"},
                    headers=BEARER).status == 400


# -- the pages --------------------------------------------------------------------------------
def _no_live_markup(text: str) -> None:
    assert XSS not in text and XSS_ERROR not in text
    assert re.search(r"<[^>]*\son[a-z]+\s*=", text) is None  # no inline handler anywhere


def test_payloads_and_errors_are_escaped_in_every_page(web: Client, seeded: Seeded) -> None:
    store = web.app.store
    DurableClient(store).cancel_execution(seeded.pending[1], reason=XSS)
    browser = {**BEARER, "Accept": BROWSER}
    detail = web.get(f"/executions/{seeded.completed}", headers=browser).text
    _no_live_markup(detail)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in detail  # the input and the result
    failed = web.get(f"/executions/{seeded.failed}", headers=browser).text
    _no_live_markup(failed)
    assert "&lt;img src=x onerror=alert(1)&gt;" in failed  # the error, in full
    listing = web.get("/", headers=browser).text
    _no_live_markup(listing)
    assert "&lt;script&gt;" in listing  # the cancel reason
    for query in ({"id": XSS}, {"workflow": XSS}, {"status": XSS}):
        page = web.get("/", query=query, headers=browser)
        assert page.status == 200
        _no_live_markup(page.text)
    missing = web.get(f"/executions/{XSS}", headers=browser)
    assert missing.status == 404
    _no_live_markup(missing.text)


def test_pages_allow_only_their_own_nonced_script_and_style(web: Client,
                                                            seeded: Seeded) -> None:
    page = web.get(f"/executions/{seeded.failed}", headers={**BEARER, "Accept": BROWSER})
    policy = page.headers["content-security-policy"]
    nonce = re.search(r"'nonce-([^']+)'", policy).group(1)  # type: ignore[union-attr]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    scripts = re.findall(r"<script([^>]*)>", page.text)
    assert scripts == [f' nonce="{nonce}"']
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"
    again = web.get(f"/executions/{seeded.failed}", headers={**BEARER, "Accept": BROWSER})
    assert again.headers["content-security-policy"] != policy  # a fresh nonce each time


def test_the_execution_page_shows_the_timeline_steps_errors_and_actions(
        web: Client, seeded: Seeded) -> None:
    page = web.get(f"/executions/{seeded.failed}", headers={**BEARER, "Accept": BROWSER}).text
    for text in ("Timeline", "pending → running", "boom", "first", "ValueError",
                 "Traceback", "Operator actions", "data-confirm=", 'data-page="execution"'):
        assert text in page, text
    assert f'data-api="/api/executions/{seeded.failed}"' in page
    assert 'data-active="false"' in page
    active = web.get(f"/executions/{seeded.pending[0]}",
                     headers={**BEARER, "Accept": BROWSER}).text
    assert 'data-active="true"' in active  # the page polls while it can still change


def test_the_executions_page_filters_pages_and_finds_an_id(web: Client, seeded: Seeded) -> None:
    browser = {**BEARER, "Accept": BROWSER}
    page = web.get("/", query={"status": "pending", "limit": 2}, headers=browser).text
    shown = [i for i in seeded.pending if i in page]
    assert len(shown) == 2 and seeded.completed not in page
    assert 'data-api="/api/executions?status=pending&amp;limit=2&amp;offset=0"' in page
    assert "offset=2" in page  # the next page
    found = web.get("/", query={"id": seeded.failed}, headers=browser)
    assert found.status == 303 and found.headers["location"] == f"/executions/{seeded.failed}"
    missing = web.get("/", query={"id": "nope"}, headers=browser)
    assert missing.status == 200 and "no execution with id nope" in missing.text
    bad = web.get("/", query={"status": "bogus"}, headers=browser)
    assert bad.status == 200 and "unknown status" in bad.text


def test_a_mounted_app_links_redirects_and_scopes_its_cookie_under_its_prefix(
        app: DashboardApp, seeded: Seeded) -> None:
    client = Client(app, script_name="/ops/durable")
    assert client.get("/", headers={"Accept": BROWSER}).headers["location"] == \
        "/ops/durable/login"
    reply = client.login()
    assert reply.headers["location"] == "/ops/durable/"
    assert "Path=/ops/durable;" in reply.cookies()[0]
    page = client.get("/", headers={"Accept": BROWSER}).text
    assert f'href="/ops/durable/executions/{seeded.completed}"' in page
    assert 'data-base="/ops/durable"' in page


# -- the server and the daemon ----------------------------------------------------------------
def _fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@pytest.fixture
def server(store: SqliteStore) -> Iterator[DashboardServer]:
    served = DashboardServer(store, host="127.0.0.1", port=0, token=TOKEN)
    served.start()
    try:
        yield served
    finally:
        served.stop()


def test_the_server_serves_the_app_on_a_free_port(server: DashboardServer,
                                                  seeded: Seeded) -> None:
    assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}/"
    assert _fetch(server.url + "api/health")[0] == 401
    status, body = _fetch(server.url + "api/executions?status=pending", BEARER)
    assert status == 200 and len(body["executions"]) == 5
    status, body = _fetch(server.url + "api/health", {**BEARER, "Host": "evil.example"})
    assert status == 403


def test_the_server_warns_when_it_is_not_bound_to_loopback(
        store: SqliteStore, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="durablectl.dashboard")
    served = DashboardServer(store, host="0.0.0.0", port=0, token=TOKEN)
    served.start()
    try:
        assert served.url.startswith("http://127.0.0.1:")
        assert any(r.levelno == logging.WARNING and "reachable from other machines" in
                   r.getMessage() for r in caplog.records)
    finally:
        served.stop()
    assert TOKEN not in caplog.text


def test_a_port_in_use_is_a_clear_error(server: DashboardServer, store: SqliteStore) -> None:
    from durablectl.dashboard.server import DashboardBindError

    with pytest.raises(DashboardBindError, match=f"127.0.0.1:{server.port}"):
        DashboardServer(store, host="127.0.0.1", port=server.port, token=TOKEN).start()


needs_script = pytest.mark.skipif(not DURABLECTL.exists(), reason="needs `make install`")


@needs_script
def test_the_daemon_serves_the_dashboard_and_the_cli_prints_its_url(
        daemon: DaemonHarness) -> None:
    assert daemon.cli("dashboard").returncode == 4  # no daemon yet
    daemon.write_config(extra=f'[dashboard]\nenabled = true\ntoken = "{TOKEN}"\nport = 0\n')
    daemon.start()
    try:
        shown = daemon.cli("dashboard", "--json")
        assert shown.returncode == 0, shown.stderr
        url = json.loads(shown.stdout)["url"]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url)
        plain = daemon.cli("dashboard")
        assert plain.stdout.strip() == url and TOKEN not in plain.stdout
        assert daemon.status()["dashboard"] == url
        status, health = _fetch(url + "health", BEARER)
        assert status == 200 and health["status"] == "ok"
        assert health["daemon"]["state"] == "running"
        assert health["daemon"]["pid"] == daemon.status()["pid"]
        assert _fetch(url + "health")[0] == 401
        assert _fetch(url + "health", {"Authorization": "Bearer wrong"})[0] == 401
        assert _fetch(url + "health", {**BEARER, "Host": "rebind.example"})[0] == 403
        assert TOKEN not in daemon.log_text()
        assert "dashboard listening on" in daemon.log_text()
    finally:
        stopped = daemon.stop()
    assert stopped.returncode == 0, stopped.stderr
    assert daemon.store.get_meta("dashboard.url") is None
    assert daemon.cli("dashboard").returncode == 4


@needs_script
def test_the_cli_says_when_the_daemon_serves_no_dashboard(daemon: DaemonHarness) -> None:
    daemon.start()
    try:
        done = daemon.cli("dashboard")
        assert done.returncode == 4
        assert done.stderr.startswith("error: ") and "enabled = true" in done.stderr
        assert done.stdout == ""
    finally:
        daemon.stop()


@needs_script
def test_a_dashboard_that_cannot_listen_fails_daemon_start(daemon: DaemonHarness,
                                                           server: DashboardServer) -> None:
    daemon.write_config(extra=f'[dashboard]\nenabled = true\ntoken = "{TOKEN}"\n'
                              f"port = {server.port}\n")
    done = daemon.cli("daemon", "start")
    assert done.returncode == 6, done.stderr
    assert "cannot serve the dashboard" in done.stderr
    wait_until(lambda: daemon.cli("daemon", "status").returncode == 4, "no daemon left")
