"""The dashboard as a WSGI application (SPEC §4): routing, authentication, the JSON API and the
pages.

Each request goes: Host check (when there is a list) -> ``/login`` (open) -> token (Bearer
header or session cookie; anything else is 401, or a redirect to the login page for a browser)
-> CSRF for a cookie session's POST -> the route. Every write goes through
``DurableOperator`` (actor ``dashboard``) or the schedule manager, so it is audited and checked
exactly as from the CLI.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from durablectl.clock import Clock, SystemClock, real_time, to_datetime
from durablectl.codec import DEFAULT_MAX_PAYLOAD_BYTES
from durablectl.dashboard import pages
from durablectl.dashboard.auth import (
    CSRF_ENVIRON,
    CSRF_FIELD,
    SESSION_COOKIE,
    TokenAuth,
    cleared_cookie,
    read_cookie,
    session_cookie,
)
from durablectl.dashboard.web import (
    BodyError,
    Request,
    Response,
    host_allowed,
    html_response,
    json_error,
    json_response,
    normalise_hosts,
    redirect,
)
from durablectl.errors import (
    DurableError,
    ExecutionNotFound,
    ExecutionStateError,
    InvalidSchedule,
    PayloadError,
    ScheduleNotFound,
    StepIdError,
)
from durablectl.model import ACTIVE_STATUSES, to_json
from durablectl.model import parse_statuses as model_parse_statuses
from durablectl.store.base import Store
from durablectl.timeline import iso

log = logging.getLogger(__name__)

ACTOR = "dashboard"
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
UPCOMING_TICKS = 2  # schedule ticks shown after the stored next run

StartResponse = Callable[..., Any]

# action -> (DurableOperator method, needs step_id, value: "" | "optional" | "required")
OPERATOR_ACTIONS: dict[str, tuple[str, bool, str]] = {
    "retry": ("retry", False, ""),
    "fork": ("fork", True, ""),
    "skip-step": ("skip_step", True, "optional"),
    "force-fail": ("force_fail", False, ""),
    "edit-state": ("edit_state", True, "required"),
    "retry-rollback": ("retry_rollback", False, ""),
}


#: a library error's CLI exit code (SPEC §6) -> the HTTP status of the same meaning
STATUS_OF_EXIT_CODE = {1: 409, 2: 400, 3: 404, 4: 503, 5: 504, 6: 500}


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Caller:
    """How a request proved it has the token."""

    by: str  # "header" | "cookie"
    session: str = ""  # the cookie session (CSRF tokens are derived from it)


def parse_statuses(text: str | None) -> list[str] | None:
    """``model.parse_statuses``, with a bad word as a 400."""
    try:
        return model_parse_statuses(text)
    except ValueError as exc:
        raise HttpError(400, str(exc)) from None


def _int_param(query: dict[str, str], name: str, default: int, minimum: int,
               maximum: int | None = None) -> int:
    raw = query.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HttpError(400, f"{name} must be an integer, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
        raise HttpError(400, f"{name} must be {bound}, got {value}")
    return value


def _nudge_daemon(store: Store) -> None:
    """Best effort: wake the database's daemon so it acts on a write at once (it would notice
    the commit a moment later anyway)."""
    from durablectl.daemon.ipc import nudge

    try:
        nudge(store.get_meta("daemon.socket"))
    except Exception:  # never fail an action that was committed
        log.debug("could not nudge the daemon", exc_info=True)


class DashboardApp:
    """The WSGI callable. ``allowed_hosts`` None: no Host check (a framework it is mounted in
    does it); ``on_change`` runs after each committed write (the daemon wakes its runner)."""

    def __init__(self, store: Store, *, token: str, operator: bool = True,
                 allowed_hosts: Iterable[str] | None = None,
                 on_change: Callable[[], None] | None = None,
                 daemon_info: Callable[[], dict[str, Any]] | None = None,
                 clock: Clock | None = None,
                 max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        self.store = store
        self.auth = TokenAuth(token)
        self.operator = operator
        if isinstance(allowed_hosts, str):  # one name, not its letters
            allowed_hosts = [allowed_hosts]
        self.allowed_hosts = None if allowed_hosts is None else normalise_hosts(allowed_hosts)
        self.on_change = on_change if on_change is not None else (
            lambda: _nudge_daemon(store))
        self.daemon_info = daemon_info
        self.clock: Clock = clock or SystemClock()
        self.max_payload_bytes = max_payload_bytes

    def __repr__(self) -> str:
        return f"DashboardApp(operator={self.operator}, allowed_hosts={self.allowed_hosts})"

    # -- WSGI ------------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        request = Request(environ)
        try:
            response = self.handle(request)
        except Exception:
            log.exception("dashboard: %s %s failed", request.method, request.path)
            response = self._error(request, 500, "internal error (see the daemon's log)")
        start_response(response.status_line(), response.all_headers())
        return [] if request.method == "HEAD" else [response.body]

    def handle(self, request: Request) -> Response:
        if self.allowed_hosts is not None and not host_allowed(request.header("Host"),
                                                               self.allowed_hosts):
            log.warning("dashboard: refused a request for host %r (not in allowed_hosts)",
                        (request.header("Host") or "")[:100])
            return self._error(request, 403, "this host name is not allowed (DNS rebinding "
                                             "protection: see [dashboard] allowed_hosts)")
        if request.path == "/login":
            return self._login(request)
        caller = self._authenticate(request)
        if caller is None:
            if request.prefers_html():
                return redirect(request.url("/login"))
            return json_response({"error": "authentication required: send the token as "
                                           "'Authorization: Bearer <token>' or log in"}, 401,
                                 [("WWW-Authenticate", 'Bearer realm="durablectl"')])
        try:
            if request.method == "POST":
                self._check_csrf(request, caller)
            return self._route(request, caller)
        except HttpError as exc:
            return self._error(request, exc.status, exc.message)
        except BodyError as exc:
            return self._error(request, exc.status, str(exc))
        except DurableError as exc:  # what the CLI would exit with, as an HTTP status
            status = STATUS_OF_EXIT_CODE.get(exc.exit_code, 500)
            if status == 500:
                log.error("dashboard: %s %s: %s", request.method, request.path, exc.message)
            return self._error(request, status, exc.message)

    def _authenticate(self, request: Request) -> Caller | None:
        header = request.header("Authorization")
        if header is not None:  # a wrong header is refused, not rescued by a cookie
            return Caller("header") if self.auth.bearer_matches(header) else None
        session = read_cookie(request.header("Cookie"), SESSION_COOKIE)
        if session and self.auth.session_valid(session, real_time()):
            return Caller("cookie", session)
        return None

    def _check_csrf(self, request: Request, caller: Caller) -> None:
        if caller.by != "cookie":
            return  # a header a page on another site cannot set
        candidate = request.environ.get(CSRF_ENVIRON)
        if not candidate and request.content_type == "application/x-www-form-urlencoded":
            candidate = request.form().get(CSRF_FIELD)
        if not self.auth.csrf_valid(caller.session, candidate):
            raise HttpError(403, "missing or wrong CSRF token (reload the page)")

    # -- responses -------------------------------------------------------------------------
    def _context(self, request: Request, caller: Caller | None) -> pages.PageContext:
        csrf = self.auth.csrf_token(caller.session) if caller and caller.by == "cookie" else ""
        return pages.PageContext(base=request.base, nonce=request.nonce, csrf=csrf,
                                 operator=self.operator,
                                 cookie_session=bool(caller and caller.by == "cookie"))

    def _wants_json(self, request: Request) -> bool:
        """Errors in the caller's language: a page for a form posted without script and for a
        browser's navigation, JSON for the API and for everything else."""
        if self._form_post(request):
            return False
        return request.path.startswith("/api/") or not request.prefers_html()

    @staticmethod
    def _form_post(request: Request) -> bool:
        return request.method == "POST" and \
            request.content_type == "application/x-www-form-urlencoded"

    def _error(self, request: Request, status: int, message: str) -> Response:
        if self._wants_json(request):
            return json_error(status, message)
        ctx = self._context(request, None)
        return html_response(pages.error_page(ctx, status, message), request.nonce, status)

    def _page(self, request: Request, caller: Caller, render: Callable[..., str],
              *args: Any, **kwargs: Any) -> Response:
        ctx = self._context(request, caller)
        return html_response(render(ctx, *args, **kwargs), request.nonce)

    # -- routing ---------------------------------------------------------------------------
    def _route(self, request: Request, caller: Caller) -> Response:
        path, method = request.path, request.method
        parts = [p for p in path.split("/") if p]
        reading = method in ("GET", "HEAD")

        def only(*methods: str) -> None:
            if method not in methods:
                raise HttpError(405, f"{method} is not allowed here (use {' or '.join(methods)})")

        if path == "/logout":
            only("POST")
            return redirect(request.url("/login"), [(
                "Set-Cookie", cleared_cookie(path=request.base or "/", secure=request.secure))])
        if not parts:
            only("GET", "HEAD")
            return self.executions_page(request, caller)
        if parts[0] == "api":
            return self._api(request, parts[1:], reading, only)
        if parts == ["schedules"]:
            only("GET", "HEAD")
            return self._page(request, caller, pages.schedules_page, *self._schedules())
        if parts == ["health"]:
            only("GET", "HEAD")
            if not request.prefers_html():
                return json_response(self.health())
            return self._page(request, caller, pages.health_page, self.health())
        if len(parts) == 2 and parts[0] == "executions":
            only("GET", "HEAD")
            detail = self._detail(parts[1])
            return self._page(request, caller, pages.execution_page, detail)
        raise HttpError(404, f"no page at {path}")

    def _api(self, request: Request, parts: list[str], reading: bool,
             only: Callable[..., None]) -> Response:
        if parts == ["executions"]:
            only("GET", "HEAD")
            return json_response(self.list_executions(request.query))
        if len(parts) == 2 and parts[0] == "executions":
            only("GET", "HEAD")
            return self._detail_response(request, parts[1])
        if parts == ["schedules"]:
            only("GET", "HEAD")
            return json_response({"schedules": to_json(self.store.list_schedules())})
        if parts == ["health"]:
            only("GET", "HEAD")
            return json_response(self.health())
        if len(parts) == 2 and parts[0] == "operator":
            only("POST")
            return self._operator_action(request, parts[1])
        if len(parts) == 3 and parts[0] == "schedules" and parts[2] in ("pause", "resume"):
            only("POST")
            return self._schedule_action(request, parts[1], parts[2])
        raise HttpError(404, f"no API at /api/{'/'.join(parts)}")

    # -- reads -----------------------------------------------------------------------------
    def _workflow_id(self, workflow: str) -> str:
        """An alias lists the executions of its workflow id, as in ``durablectl list``."""
        known = self.store.known_workflows()
        if workflow in known:
            return workflow
        return next((wid for wid, alias in known.items() if alias == workflow), workflow)

    def _list(self, query: dict[str, str]) -> tuple[list[Any], int | None, int, int]:
        """The executions a query asks for, the next page's offset (None: no more), the limit
        and the offset."""
        statuses = parse_statuses(query.get("status"))
        workflow = query.get("workflow", "").strip()
        limit = _int_param(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        offset = _int_param(query, "offset", 0, 0)
        found = self.store.list_executions(
            status=statuses, workflow=self._workflow_id(workflow) if workflow else None,
            limit=limit + 1, offset=offset)
        return found[:limit], offset + limit if len(found) > limit else None, limit, offset

    def list_executions(self, query: dict[str, str]) -> dict[str, Any]:
        """``GET /api/executions``: ``{"executions": [...], "next_offset": n | null}``."""
        executions, next_offset, _limit, _offset = self._list(query)
        return {"executions": to_json(executions), "next_offset": next_offset}

    def _operator(self) -> Any:
        from durablectl.client import DurableOperator

        return DurableOperator(self.store, clock=self.clock,
                               max_payload_bytes=self.max_payload_bytes)

    def _detail_response(self, request: Request, execution_id: str) -> Response:
        """``show --json``, with an ETag: an execution page asks every few seconds whether
        anything changed, and a long history (thousands of steps and audit rows) costs tens
        of milliseconds to read and send; unchanged, the answer is a bodiless 304."""
        version = self.store.execution_version(execution_id)
        if version is None:
            raise HttpError(404, ExecutionNotFound(execution_id).message)
        tag = f'"{hashlib.sha256(version.encode()).hexdigest()[:32]}"'
        if request.header("If-None-Match") == tag:
            return Response(304, b"", headers=[("ETag", tag)])
        return json_response(to_json(self._detail(execution_id)), headers=[("ETag", tag)])

    def _detail(self, execution_id: str) -> Any:
        try:
            return self._operator().get_execution_detail(execution_id)
        except ExecutionNotFound as exc:
            raise HttpError(404, exc.message) from None

    def executions_page(self, request: Request, caller: Caller) -> Response:
        query = request.query
        wanted = query.get("id", "").strip()
        notice = None
        if wanted:
            if self.store.get_execution(wanted) is not None:
                return redirect(request.url(f"/executions/{quote(wanted, safe='')}"))
            notice = f"no execution with id {wanted}"
        status, workflow = query.get("status", ""), query.get("workflow", "").strip()
        executions: list[Any] = []
        next_offset, limit, offset, error = None, DEFAULT_LIMIT, 0, None
        try:
            executions, next_offset, limit, offset = self._list(query)
        except HttpError as exc:  # a bad filter is said on the page, above the filter form
            error = exc.message
        return self._page(request, caller, pages.executions_page, executions=executions,
                          status=status, workflow=workflow, limit=limit, offset=offset,
                          next_offset=next_offset,
                          workflows=sorted(self.store.known_workflows()), notice=notice,
                          error=error)

    def _schedules(self) -> tuple[list[Any], dict[str, list[Any]]]:
        from durablectl.scheduling import next_runs

        schedules = self.store.list_schedules()
        upcoming: dict[str, list[Any]] = {}
        for s in schedules:
            if s.status != "active" or s.kind == "once" or s.next_run is None:
                continue
            try:
                upcoming[s.id] = next_runs(s.cron, s.interval_seconds, timezone=s.timezone,
                                           after=s.next_run, anchor=s.next_run,
                                           count=UPCOMING_TICKS)
            except Exception:  # a schedule the scheduler itself would refuse: show it bare
                log.debug("dashboard: no upcoming ticks for schedule %s", s.id, exc_info=True)
        return schedules, upcoming

    def health(self) -> dict[str, Any]:
        """The daemon, the queue and the timers, for ``/health`` and ``/api/health``."""
        counts = self.store.count_executions()
        workers = self.store.live_workers()
        pid_text = self.store.get_meta("daemon.pid")
        pid = int(pid_text) if pid_text and pid_text.isdigit() else None
        running = pid is not None and any(w.pid == pid for w in workers)
        next_due = self.store.next_due_at()
        now = self.clock.timestamp()
        daemon: dict[str, Any] = {"pid": pid if running else None,
                                  "state": "running" if running else "not running"}
        if self.daemon_info is not None:
            daemon.update(self.daemon_info())
        return {
            "status": "ok",
            "database": getattr(self.store, "path", None),
            "daemon": daemon,
            "workers": [to_json(w) for w in workers],
            "executions": counts,
            "queue_depth": counts.get("pending", 0),
            "active": sum(counts.get(s, 0) for s in ACTIVE_STATUSES),
            "next_due": None if next_due is None else iso(to_datetime(next_due)),
            "timers_due": next_due is not None and next_due <= now,
        }

    # -- writes ----------------------------------------------------------------------------
    def _body(self, request: Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            body = request.json()
            if not isinstance(body, dict):
                raise HttpError(400, "the body must be a JSON object")
            return body
        if request.content_type == "application/x-www-form-urlencoded":
            return self._form_body(request.form())
        if not request.body():
            return {}
        raise HttpError(400, "send the body as application/json")

    @staticmethod
    def _form_body(form: dict[str, str]) -> dict[str, Any]:
        """A browser's form without script: ``value`` holds JSON text, empty fields are
        left out."""
        import json

        body: dict[str, Any] = {k: v for k, v in form.items() if k != CSRF_FIELD and v != ""}
        if "value" in body:
            try:
                body["value"] = json.loads(body["value"])
            except json.JSONDecodeError as exc:
                raise HttpError(400, f"value is not valid JSON: {exc.msg}") from None
        return body

    def _done(self, request: Request, execution_id: str) -> Response:
        self.on_change()
        if self._form_post(request):  # a form without script: back to a page
            return redirect(request.url(f"/executions/{quote(execution_id, safe='')}"))
        return json_response({"execution_id": execution_id})

    def _operator_action(self, request: Request, action: str) -> Response:
        if not self.operator:
            raise HttpError(403, "this dashboard is read-only ([dashboard] operator = false)")
        spec = OPERATOR_ACTIONS.get(action)
        if spec is None:
            raise HttpError(400, f"unknown action {action!r} (use "
                                 f"{', '.join(OPERATOR_ACTIONS)})")
        method_name, needs_step, value_rule = spec
        body = self._body(request)
        execution_id = body.get("execution_id")
        if not isinstance(execution_id, str) or not execution_id:
            raise HttpError(400, "execution_id is required (a string)")
        step_id = body.get("step_id")
        if needs_step and (not isinstance(step_id, str) or not step_id):
            raise HttpError(400, f"{action} needs step_id (a string)")
        reason = body.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise HttpError(400, "reason must be a string")
        if value_rule == "required" and "value" not in body:
            raise HttpError(400, f"{action} needs value (any JSON, null included)")
        value = body.get("value")

        method = getattr(self._operator(), method_name, None)
        if method is None:
            raise HttpError(501, f"this version of durablectl has no {action} action yet")
        try:
            if action == "fork":
                result = method(execution_id, step_id, reason=reason, actor=ACTOR)
            elif action in ("skip-step", "edit-state"):
                result = method(execution_id, step_id, value, reason=reason, actor=ACTOR)
            elif action == "force-fail":
                result = method(execution_id, reason, actor=ACTOR)
            else:
                result = method(execution_id, reason=reason, actor=ACTOR)
        except ExecutionNotFound as exc:
            raise HttpError(404, exc.message) from None
        except ExecutionStateError as exc:
            raise HttpError(409, exc.message) from None
        except (StepIdError, PayloadError) as exc:
            raise HttpError(400, exc.message) from None
        log.info("dashboard: %s on execution %s done", action, execution_id)
        return self._done(request, result if isinstance(result, str) else execution_id)

    def _schedule_action(self, request: Request, schedule_id: str, verb: str) -> Response:
        if not self.operator:
            raise HttpError(403, "this dashboard is read-only ([dashboard] operator = false)")
        from durablectl.schedules import ScheduleManager

        manager = ScheduleManager(self.store, self.clock,
                                  max_payload_bytes=self.max_payload_bytes)
        try:
            if verb == "pause":
                schedule = manager.pause_schedule(schedule_id)
            else:
                schedule = manager.resume_schedule(schedule_id)
        except ScheduleNotFound as exc:
            raise HttpError(404, exc.message) from None
        except InvalidSchedule as exc:
            raise HttpError(409, exc.message) from None
        log.info("dashboard: schedule %s %sd", schedule_id, verb)
        self.on_change()
        if self._form_post(request):
            return redirect(request.url("/schedules"))
        return json_response({"schedule": to_json(schedule)})

    # -- login -----------------------------------------------------------------------------
    def _login(self, request: Request) -> Response:
        ctx = self._context(request, None)
        if request.method in ("GET", "HEAD"):
            return html_response(pages.login_page(ctx), request.nonce)
        if request.method != "POST":
            return self._error(request, 405, "use GET or POST")
        try:
            token = request.form().get("token", "") \
                if request.content_type == "application/x-www-form-urlencoded" else ""
        except BodyError as exc:
            return self._error(request, exc.status, str(exc))
        if not token or not self.auth.token_matches(token):
            log.warning("dashboard: a login with a wrong token")  # never the token itself
            return html_response(pages.login_page(ctx, "That is not the dashboard's token."),
                                 request.nonce, 401)
        session = self.auth.new_session(real_time())
        return redirect(request.url("/"), [("Set-Cookie", session_cookie(
            session, path=request.base or "/", secure=request.secure))])


def create_dashboard_app(store: Store, *, token: str, operator: bool = True,
                         allowed_hosts: Sequence[str] | None = None) -> DashboardApp:
    """The dashboard as a WSGI application on ``store``, to mount in a web framework or serve
    with any WSGI server. Every route but ``/login`` needs ``token`` (``Authorization: Bearer``
    or the login form's cookie); ``operator=False`` makes it read-only; with ``allowed_hosts``
    a request for any other ``Host`` gets 403 (DNS rebinding), without it the framework
    decides."""
    return DashboardApp(store, token=token, operator=operator, allowed_hosts=allowed_hosts)
