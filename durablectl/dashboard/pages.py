"""The dashboard's HTML, rendered on the server.

Every value that comes from the database (ids, payloads, errors, reasons, workflow names) goes
through :func:`esc`; templates are ``string.Template`` strings whose every ``$name`` is escaped
unless it is already :class:`Html` built here. The one script and stylesheet are inlined under
the response's CSP nonce (``durablectl.dashboard.assets``)."""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from string import Template
from typing import Any
from urllib.parse import quote, urlencode

from durablectl import model
from durablectl.dashboard.assets import POLL_MILLISECONDS, SCRIPT, STYLE
from durablectl.model import ExecutionDetail, ExecutionStatus, Schedule, StepRecord
from durablectl.timeline import (
    TimelineRow,
    duration_text,
    error_line,
    failures,
    internal_id,
    iso,
    timeline,
)


class Html(str):
    """Markup that is already safe: built here, with every value escaped."""


def esc(value: Any) -> Html:
    if isinstance(value, Html):
        return value
    return Html(html.escape("" if value is None else str(value), quote=True))


def fill(template: str, **values: Any) -> Html:
    return Html(Template(template).substitute({key: esc(v) for key, v in values.items()}))


def join(parts: Iterable[Any], sep: str = "") -> Html:
    return Html(sep.join(esc(p) for p in parts))


def pretty_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=False, default=str)


def when(value: datetime | None) -> str:
    """UTC, to the millisecond, as the CLI shows it."""
    if value is None:
        return ""
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def short_time(value: datetime | None) -> str:
    """UTC to the second, as the list's script writes it on each refresh."""
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%SZ")


def status_span(status: str) -> Html:
    css = "".join(ch for ch in status if ch.isalpha() or ch == "_")
    return fill('<span class="status s-$css">$status</span>', css=css, status=status)


def execution_link(base: str, execution_id: str, text: str | None = None) -> Html:
    return fill('<a class="mono" href="$href">$text</a>',
                href=f"{base}/executions/{quote(execution_id, safe='')}",
                text=execution_id if text is None else text)


@dataclass(frozen=True)
class PageContext:
    """What every page needs besides its data."""

    base: str  # the mount prefix ("" at the root)
    nonce: str  # this response's CSP nonce
    csrf: str  # the session's CSRF token; "" for a request authenticated by its header
    operator: bool  # operator actions allowed (buttons shown)
    cookie_session: bool  # logged in through the form: offer "log out"


_LAYOUT = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="$csrf">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>$title · durablectl</title>
<style nonce="$nonce">$style</style>
</head>
<body $attrs>
$header
<main>
$content
</main>
<script nonce="$nonce">$script</script>
</body>
</html>
"""

NAV = (("executions", "/", "Executions"), ("schedules", "/schedules", "Schedules"),
       ("health", "/health", "Health"))


def layout(ctx: PageContext, *, page: str, title: str, content: Html,
           attrs: dict[str, str] | None = None, nav: bool = True) -> str:
    data = {"data-page": page, "data-base": ctx.base, "data-poll": str(POLL_MILLISECONDS),
            **(attrs or {})}
    attr_text = join((fill('$k="$v"', k=k, v=v) for k, v in data.items()), " ")
    header = Html("")
    if nav:
        links = join(fill('<a href="$href"$here>$label</a>', href=ctx.base + path,
                          label=label, here=Html(' class="here"') if key == page else Html(""))
                     for key, path, label in NAV)
        logout = Html("")
        if ctx.cookie_session:
            logout = fill('<form method="post" action="$action" class="inline">'
                          '<input type="hidden" name="csrf_token" value="$csrf">'
                          '<button type="submit">Log out</button></form>',
                          action=ctx.base + "/logout", csrf=ctx.csrf)
        header = fill('<header><span class="brand">durablectl</span>$links$logout</header>',
                      links=links, logout=logout)
    return fill(_LAYOUT, csrf=ctx.csrf, title=title, nonce=ctx.nonce, style=Html(STYLE),
                attrs=attr_text, header=header, content=content, script=Html(SCRIPT))


# -- login and errors -------------------------------------------------------------------------
def login_page(ctx: PageContext, error: str | None = None) -> str:
    message = fill('<p class="error">$e</p>', e=error) if error else Html("")
    content = fill("""<form class="login" method="post" action="$action">
<h1>durablectl dashboard</h1>
$message
<label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Log in</button>
<p class="muted">The token is <code>[dashboard] token</code> in the daemon's configuration.</p>
</form>""", action=ctx.base + "/login", message=message)
    return layout(ctx, page="login", title="Log in", content=content, nav=False)


def error_page(ctx: PageContext, status: int, message: str) -> str:
    content = fill('<h1>$status</h1><p class="error">$message</p>'
                   '<p><a href="$home">Back to the executions</a></p>',
                   status=status, message=message, home=ctx.base + "/")
    return layout(ctx, page="error", title=str(status), content=content)


# -- executions -------------------------------------------------------------------------------
STATUS_CHOICES: tuple[str, ...] = ("active", "finished", *(s.value for s in ExecutionStatus))


def _execution_row(ctx: PageContext, e: Any) -> Html:
    return fill("""<tr><td>$link</td><td>$workflow</td><td>$status</td>
<td class="num">$attempt</td><td class="mono time">$created</td>
<td class="mono time">$updated</td>
<td class="wrap">$reason</td></tr>""",
                link=execution_link(ctx.base, e.execution_id), workflow=e.workflow_id,
                status=status_span(e.status), attempt=f"{e.attempt}/{e.max_attempts}",
                created=short_time(e.created_at), updated=short_time(e.updated_at),
                reason=e.status_reason or "")


def executions_page(ctx: PageContext, *, executions: Sequence[Any], status: str,
                    workflow: str, limit: int, offset: int, next_offset: int | None,
                    workflows: Sequence[str], notice: str | None = None,
                    error: str | None = None) -> str:
    options = [fill('<option value="">any status</option>')]
    options += [fill('<option value="$v"$sel>$v</option>', v=choice,
                     sel=Html(" selected") if choice == status else Html(""))
                for choice in STATUS_CHOICES]
    if status and status not in STATUS_CHOICES:
        options.append(fill('<option value="$v" selected>$v</option>', v=status))
    known = join(fill('<option value="$v">', v=w) for w in workflows)
    rows = join(_execution_row(ctx, e) for e in executions)
    if not executions:
        rows = Html('<tr><td colspan="7" class="muted">no executions</td></tr>')

    def page_link(new_offset: int) -> str:
        query = {k: v for k, v in (("status", status), ("workflow", workflow)) if v}
        query.update(limit=str(limit), offset=str(max(0, new_offset)))
        return f"{ctx.base}/?{urlencode(query)}"

    api_query = {k: v for k, v in (("status", status), ("workflow", workflow)) if v}
    api_query.update(limit=str(limit), offset=str(offset))
    prev_link = fill('<a href="$href">← newer</a>', href=page_link(offset - limit)) \
        if offset > 0 else Html('<span class="muted">← newer</span>')
    next_link = fill('<a id="next-page" href="$href"$hidden>older →</a>',
                     href=page_link(offset + limit),
                     hidden=Html(" hidden") if next_offset is None else Html(""))
    messages = Html("")
    if notice:
        messages = fill('<p class="notice">$n</p>', n=notice)
    if error:
        messages = fill('<p class="notice error">$n</p>', n=error)
    content = fill("""<h1>Executions</h1>
<form class="filters" method="get" action="$action">
<label>Status<select name="status">$options</select></label>
<label>Workflow<input name="workflow" value="$workflow" list="known-workflows" size="24"></label>
<datalist id="known-workflows">$known</datalist>
<label>Limit<input name="limit" value="$limit" size="4" inputmode="numeric"></label>
<button type="submit">Filter</button>
<label>Execution id<input name="id" size="20" class="mono" placeholder="go to an id"></label>
<button type="submit" name="go" value="1">Open</button>
</form>
$messages
<table><thead><tr><th>execution</th><th>workflow</th><th>status</th><th>attempt</th>
<th>created (UTC)</th><th>updated (UTC)</th><th>reason</th></tr></thead>
<tbody id="executions-body">$rows</tbody></table>
<div class="pager">$prev $next <span class="muted">offset $offset</span>
<span id="live" class="live"></span></div>""",
                   action=ctx.base + "/", options=join(options), workflow=workflow,
                   known=known, limit=limit, messages=messages, rows=rows, prev=prev_link,
                   next=next_link, offset=offset)
    return layout(ctx, page="executions", title="Executions", content=content,
                  attrs={"data-api": f"{ctx.base}/api/executions?{urlencode(api_query)}"})


# -- one execution ------------------------------------------------------------------------------
def _fields(ctx: PageContext, detail: ExecutionDetail) -> Html:
    e = detail.execution
    rows: list[tuple[str, Html | str]] = [
        ("workflow", e.workflow_id),
        ("status", Html(status_span(e.status) + (esc(f" ({e.status_reason})")
                                                  if e.status_reason else Html("")))),
        ("attempt", f"{e.attempt}/{e.max_attempts}"),
        ("created", iso(e.created_at)),
        ("updated", iso(e.updated_at)),
    ]
    if e.deadline is not None:
        rows.append(("deadline", iso(e.deadline)))
    if e.idempotency_key is not None:
        rows.append(("idempotency key", e.idempotency_key))
    if e.forked_from:
        source = str(e.forked_from.get("execution_id", ""))
        rows.append(("forked from", Html(execution_link(ctx.base, source) + esc(
            f" at step {e.forked_from.get('step_id')}"))))
    if e.lease_owner:
        rows.append(("held by", e.lease_owner))
    rows.append(("input", fill("<pre>$v</pre>", v=pretty_json(e.input))))
    if e.status == "completed":
        rows.append(("result", fill("<pre>$v</pre>", v=pretty_json(e.result))))
    if e.error is not None:
        rows.append(("error", fill('<span class="error">$v</span>', v=error_line(e.error))))
    return Html('<dl class="fields">' + join(fill("<dt>$k</dt><dd>$v</dd>", k=k, v=v)
                                              for k, v in rows) + "</dl>")


def _row_classes(row: TimelineRow) -> str:
    """A row's rich style (``bold red``) as CSS classes (``t-bold t-red``)."""
    return " ".join(f"t-{word}" for word in row.style.split()
                    if word.replace("_", "").isalpha())


def _timeline(rows: list[TimelineRow]) -> Html:
    if not rows:
        return Html('<p class="muted">(no history)</p>')
    body = join(fill("""<tr class="$internal"><td class="mono time">$at</td>
<td class="$cls"><b>$kind</b></td><td class="mono $idcls">$step</td>
<td class="num">$duration</td><td class="num">$attempt</td>
<td class="wrap $cls">$detail</td></tr>""", cls=_row_classes(r),
                      internal="internal" if r.internal else "", at=when(r.at), kind=r.kind,
                      idcls="muted" if internal_id(r.step_id) or r.internal else "",
                      step=r.step_id or "", duration=duration_text(r.duration_ms),
                      attempt=r.attempt, detail=r.detail) for r in rows)
    return fill("""<table><thead><tr><th>time (UTC)</th><th>kind</th><th>id</th>
<th>duration</th><th>att</th><th>detail</th></tr></thead><tbody>$body</tbody></table>""",
                body=body)


def _steps(steps: list[StepRecord]) -> Html:
    if not steps:
        return Html('<p class="muted">no stored steps</p>')

    def outcome(step: StepRecord) -> Html:
        if step.error is None:
            return fill("<pre>$v</pre>", v=pretty_json(step.result))
        trace = Html("")
        if step.error.traceback:
            trace = fill("<details><summary>traceback</summary><pre>$t</pre></details>",
                         t=step.error.traceback)
        return fill('<span class="error">$line</span>$trace', line=error_line(step.error),
                    trace=trace)

    body = join(fill("""<tr class="$cls"><td class="mono">$id</td><td>$kind</td>
<td class="num">$attempt</td><td class="mono">$started</td><td class="mono">$completed</td>
<td class="num">$duration</td><td>$outcome</td></tr>""",
                     cls="internal" if internal_id(s.step_id) else "", id=s.step_id,
                     kind=s.kind, attempt=s.attempt, started=when(s.started_at),
                     completed=when(s.completed_at), duration=duration_text(s.duration_ms),
                     outcome=outcome(s)) for s in steps)
    return fill("""<table><thead><tr><th>step</th><th>kind</th><th>att</th><th>started</th>
<th>completed</th><th>duration</th><th>result or error</th></tr></thead>
<tbody>$body</tbody></table>""", body=body)


def _failures(detail: ExecutionDetail) -> Html:
    parts = []
    for title, error in failures(detail):
        trace = fill("<details><summary>traceback</summary><pre>$t</pre></details>",
                     t=error.traceback) if error.traceback else Html("")
        parts.append(fill('<div class="failure"><b>failure of $title</b>: '
                          '<span class="error">$line</span>$trace</div>',
                          title=title, line=error_line(error), trace=trace))
    return join(parts)


# name, title, what it does, needs a step, value field ("" none, "optional", "required"),
# danger. Names are those of the CLI and of POST /api/operator/<action>.
OPERATOR_FORMS: tuple[tuple[str, str, str, bool, str, bool], ...] = (
    ("retry", "Retry", "Run a failed execution again from its last stored step.", False, "",
     False),
    ("fork", "Fork", "A new execution with this one's history before the chosen step.", True,
     "", False),
    ("skip-step", "Skip step", "Store a result for the step without running it "
     "(optional JSON value).", True, "optional", True),
    ("edit-state", "Edit state", "Overwrite the stored result of a step with a JSON value.",
     True, "required", True),
    ("retry-rollback", "Retry rollback", "Run the compensation of a failed rollback again.",
     False, "", False),
    ("force-fail", "Force fail", "Mark the execution failed now.", False, "", True),
)


def _operator_forms(ctx: PageContext, detail: ExecutionDetail) -> Html:
    """A form per action the execution's status accepts (``model.OPERATOR_ACCEPTS``; all of
    them when it is not known). The server checks again: a button is a convenience."""
    execution_id = detail.execution.execution_id
    status = detail.execution.status
    accepts: dict[str, tuple[str, ...]] = getattr(model, "OPERATOR_ACCEPTS", {})
    step_ids = list(dict.fromkeys(s.step_id for s in detail.steps))
    step_options = join(fill('<option value="$v">$v</option>', v=s) for s in step_ids)
    forms = []
    for name, title, text, needs_step, value, danger in OPERATOR_FORMS:
        if name in accepts and status not in accepts[name]:
            continue
        step = Html("")
        if needs_step:
            step = fill('<label>Step<input name="step_id" list="step-ids" required '
                        'class="mono"></label>')
        value_field = Html("")
        if value:
            value_field = fill('<label>Value (JSON$opt)<textarea name="value" rows="3" '
                               'class="mono"$req></textarea></label>',
                               opt=", optional" if value == "optional" else "",
                               req=Html(" required") if value == "required" else Html(""))
        forms.append(fill("""<form method="post" action="$action" data-confirm="$confirm"
data-follow="true" data-needs-value="$needs">
<h3>$title</h3><p>$text</p>
<input type="hidden" name="csrf_token" value="$csrf">
<input type="hidden" name="execution_id" value="$id">
$step$value
<label>Reason<input name="reason" placeholder="recorded in the audit trail"></label>
<button type="submit" class="$cls">$title</button>
<div class="op-result" role="status"></div>
</form>""", action=f"{ctx.base}/api/operator/{name}",
                          confirm=f"{title} execution {execution_id}?", needs=str(
                              value == "required").lower(), title=title, text=text,
                          csrf=ctx.csrf, id=execution_id, step=step, value=value_field,
                          cls="danger" if danger else ""))
    if not forms:
        return fill('<h2>Operator actions</h2><p class="muted">No operator action applies to '
                    'a $status execution.</p>', status=status)
    return fill('<h2>Operator actions</h2><datalist id="step-ids">$options</datalist>'
                '<div class="ops">$forms</div>', options=step_options, forms=join(forms))


def execution_page(ctx: PageContext, detail: ExecutionDetail) -> str:
    e = detail.execution
    operator = _operator_forms(ctx, detail) if ctx.operator else Html("")
    content = fill("""<h1>Execution <span class="mono">$id</span></h1>
<p id="changed" class="notice" hidden>This execution has changed: reload to see it.</p>
$fields
$failures
<h2>Timeline <span id="live" class="live"></span></h2>
$timeline
<h2>Steps</h2>
$steps
$operator""", id=e.execution_id, fields=_fields(ctx, detail), failures=_failures(detail),
                   timeline=_timeline(timeline(detail)), steps=_steps(detail.steps),
                   operator=operator)
    return layout(ctx, page="execution", title=f"Execution {e.execution_id}", content=content,
                  attrs={"data-api": f"{ctx.base}/api/executions/{quote(e.execution_id, '')}",
                         "data-updated": iso(e.updated_at),
                         "data-active": "true" if e.is_active else "false"})


# -- schedules ----------------------------------------------------------------------------------
def _every(seconds: float | None) -> str:
    """``every 1h``, ``every 90s``, ``every 1d 12h``: an interval in its own units."""
    if seconds is None:
        return ""
    if seconds != int(seconds):
        return f"every {seconds:g}s"
    rest = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "every " + (" ".join(parts) or "0s")


def schedules_page(ctx: PageContext, schedules: Sequence[Schedule],
                   upcoming: dict[str, list[datetime]]) -> str:
    rows = []
    for s in schedules:
        spec = s.cron or _every(s.interval_seconds) or "once"
        if s.timezone:
            spec += f" ({s.timezone})"
        status = status_span(s.status)
        if s.paused_reason:
            status = Html(status + esc(f" ({s.paused_reason})"))
        nexts = [when(s.next_run)] if s.next_run and s.status == "active" else []
        nexts += [when(t) for t in upcoming.get(s.id, [])]
        last = Html("")
        if s.last_execution_id:
            last = Html(execution_link(ctx.base, s.last_execution_id) + Html(" ") +
                        (status_span(s.last_execution_status)
                         if s.last_execution_status else Html("")))
        action = Html("")
        if ctx.operator and s.status in ("active", "paused"):
            verb = "pause" if s.status == "active" else "resume"
            action = fill("""<form method="post" action="$action" data-confirm="$confirm">
<input type="hidden" name="csrf_token" value="$csrf"><button type="submit">$label</button>
<div class="op-result" role="status"></div></form>""",
                          action=f"{ctx.base}/api/schedules/{quote(s.id, safe='')}/{verb}",
                          confirm=f"{verb.capitalize()} schedule {s.id}?", csrf=ctx.csrf,
                          label=verb.capitalize())
        rows.append(fill("""<tr><td class="mono">$id</td><td>$workflow</td><td>$kind</td>
<td class="mono">$spec</td><td>$status</td><td class="mono">$next</td>
<td class="mono">$last_run</td><td>$last</td><td>$policy</td><td>$action</td></tr>""",
                         id=s.id, workflow=s.workflow_id, kind=s.kind, spec=spec,
                         status=status, next=Html("<br>".join(esc(n) for n in nexts)),
                         last_run=when(s.last_run), last=last,
                         policy=f"catch-up {s.catch_up}, overlap {s.overlap}", action=action))
    body = join(rows) if rows else Html('<tr><td colspan="10" class="muted">no schedules</td>'
                                        "</tr>")
    content = fill("""<h1>Schedules</h1>
<table><thead><tr><th>schedule</th><th>workflow</th><th>kind</th><th>when</th><th>status</th>
<th>next runs (UTC)</th><th>last run</th><th>last execution</th><th>policy</th><th></th></tr>
</thead><tbody>$body</tbody></table>""", body=body)
    return layout(ctx, page="schedules", title="Schedules", content=content)


# -- health -------------------------------------------------------------------------------------
def health_page(ctx: PageContext, health: dict[str, Any]) -> str:
    daemon = health.get("daemon") or {}
    workers = join(fill('<tr><td class="mono">$id</td><td class="num">$pid</td><td>$host</td>'
                        '<td class="mono">$started</td><td class="mono">$beat</td></tr>',
                        id=w["worker_id"], pid=w["pid"], host=w["hostname"],
                        started=w["started_at"], beat=w["heartbeat_at"])
                   for w in health.get("workers", []))
    if not health.get("workers"):
        workers = Html('<tr><td colspan="5" class="muted">no live worker</td></tr>')
    extra = []
    if daemon.get("uptime_s") is not None:
        extra.append(fill('<dt>uptime</dt><dd data-health="daemon.uptime_s">$v</dd>',
                          v=daemon["uptime_s"]))
    if daemon.get("workflows") is not None:
        extra.append(fill("<dt>workflows loaded</dt><dd>$v</dd>",
                          v=", ".join(daemon["workflows"]) or "(none)"))
    if daemon.get("load_errors"):
        extra.append(fill('<dt>load errors</dt><dd class="error">$v</dd>',
                          v="; ".join(daemon["load_errors"])))
    counts = join(fill('<tr><td>$status</td><td class="num" data-health="executions.$key">'
                       "$count</td></tr>", status=status_span(k), key=k, count=v)
                  for k, v in sorted(health.get("executions", {}).items()))
    content = fill("""<h1>Health <span id="live" class="live"></span></h1>
<dl class="fields">
<dt>daemon</dt><dd data-health="daemon.state">$daemon_state</dd>
<dt>daemon pid</dt><dd data-health="daemon.pid">$pid</dd>
$extra
<dt>queue depth</dt><dd data-health="queue_depth">$queue</dd>
<dt>running or parked</dt><dd data-health="active">$active</dd>
<dt>timers due now</dt><dd data-health="timers_due">$due</dd>
<dt>next timer</dt><dd class="mono" data-health="next_due">$next_due</dd>
<dt>database</dt><dd class="mono">$database</dd>
</dl>
<h2>Executions by status</h2>
<table><tbody>$counts</tbody></table>
<h2>Workers</h2>
<table><thead><tr><th>worker</th><th>pid</th><th>host</th><th>started</th><th>heartbeat</th></tr>
</thead><tbody>$workers</tbody></table>""",
                   daemon_state=daemon.get("state", ""), pid=daemon.get("pid") or "",
                   queue=health.get("queue_depth", 0), active=health.get("active", 0),
                   extra=join(extra),
                   due=json.dumps(bool(health.get("timers_due"))),
                   next_due=health.get("next_due") or "",
                   database=health.get("database") or "", counts=counts, workers=workers)
    return layout(ctx, page="health", title="Health", content=content)
