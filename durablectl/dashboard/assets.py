"""The dashboard's one stylesheet and one script, inlined in every page under the page's CSP
nonce (so there are no static routes to protect and no inline handlers to allow).

The script only reads JSON from the dashboard's own API and writes it with ``textContent``:
data never becomes markup. It polls every few seconds while the tab is visible, and sends
operator actions with ``fetch`` and the page's CSRF token in ``X-CSRF-Token``."""

from __future__ import annotations

POLL_MILLISECONDS = 3000

STYLE = """
:root { color-scheme: light dark; --fg: #1d1f21; --bg: #fbfbfa; --muted: #6b6f76;
  --line: #dcdde0; --panel: #f1f1ef; --red: #c0392b; --green: #1e8449; --yellow: #b7950b;
  --blue: #2471a3; --magenta: #8e44ad; --cyan: #138d90; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6e6e6; --bg: #17181a; --muted: #9a9da3;
  --line: #33363b; --panel: #202226; --red: #ec7063; --green: #58d68d; --yellow: #f4d03f;
  --blue: #5dade2; --magenta: #bb8fce; --cyan: #48c9b0; } }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; gap: 1.2em; align-items: center; padding: .6em 1.2em;
  border-bottom: 1px solid var(--line); background: var(--panel); }
header .brand { font-weight: 700; margin-right: 1em; }
header a { color: var(--fg); text-decoration: none; }
header a.here { font-weight: 700; text-decoration: underline; }
header form { margin-left: auto; }
main { padding: 1em 1.2em; max-width: 1400px; }
h1 { font-size: 1.3em; margin: .2em 0 .6em; word-break: break-all; }
h2 { font-size: 1.1em; margin: 1.4em 0 .5em; }
a { color: var(--blue); }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .3em .6em; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { font-weight: 600; color: var(--muted); white-space: nowrap; }
td.num { text-align: right; }
td.mono, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 13px; }
td.wrap { word-break: break-word; white-space: pre-wrap; }
td.time { white-space: nowrap; }
details summary { cursor: pointer; color: var(--muted); font-size: 12px; }
pre { margin: 0; white-space: pre-wrap; word-break: break-word; max-height: 24em; overflow: auto;
  font: 13px/1.4 ui-monospace, SFMono-Regular, Menlo, monospace; }
dl.fields { display: grid; grid-template-columns: max-content 1fr; gap: .25em 1.2em; margin: 0; }
dl.fields dt { color: var(--muted); }
dl.fields dd { margin: 0; word-break: break-word; }
.status { font-weight: 600; }
.s-pending, .s-retrying, .t-yellow { color: var(--yellow); }
.s-running { color: var(--cyan); }
.s-sleeping { color: var(--blue); }
.s-waiting { color: var(--magenta); }
.s-completed, .t-green, .s-active { color: var(--green); }
.s-failed, .s-compensation_failed, .t-red { color: var(--red); }
.s-cancelled, .t-bright_black, .s-paused, .s-done { color: var(--muted); }
.t-bold { font-weight: 700; }
.t-cyan { color: var(--cyan); } .t-blue { color: var(--blue); }
.t-magenta { color: var(--magenta); }
.internal, .internal td { color: var(--muted); }
.muted { color: var(--muted); }
.error { color: var(--red); }
.notice { padding: .5em .8em; border: 1px solid var(--line); background: var(--panel);
  margin: .6em 0; }
.failure { border-left: 3px solid var(--red); padding: .3em .8em; margin: .6em 0;
  background: var(--panel); }
form.filters { display: flex; flex-wrap: wrap; gap: .6em; align-items: end; margin-bottom: .8em; }
form.filters label, .ops label { display: flex; flex-direction: column; font-size: 12px;
  color: var(--muted); gap: .15em; }
input, select, textarea, button { font: inherit; color: inherit; background: var(--bg);
  border: 1px solid var(--line); border-radius: 4px; padding: .25em .5em; }
button { cursor: pointer; background: var(--panel); }
button.danger { border-color: var(--red); color: var(--red); }
.pager { display: flex; gap: 1em; margin: .8em 0; align-items: center; }
.live { font-size: 12px; color: var(--muted); }
.live.stale { color: var(--yellow); }
.ops { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: .8em; }
.ops form { border: 1px solid var(--line); border-radius: 6px; padding: .6em .8em;
  display: flex; flex-direction: column; gap: .4em; background: var(--panel); }
.ops form h3 { margin: 0; font-size: 1em; }
.ops form p { margin: 0; color: var(--muted); font-size: 12px; }
.op-result { font-size: 12px; color: var(--red); min-height: 1em; }
.login { max-width: 360px; margin: 10vh auto; display: flex; flex-direction: column; gap: .6em; }
.inline { display: inline; }
"""

SCRIPT = r"""
(function () {
  "use strict";
  var body = document.body;
  var base = body.getAttribute("data-base") || "";
  var page = body.getAttribute("data-page");
  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.getAttribute("content") : "";
  var POLL = Number(body.getAttribute("data-poll")) || 3000;

  // {data, etag} from url; null when it still has the given etag (a bodiless 304)
  function fetchJSON(url, etag) {
    var headers = {"Accept": "application/json"};
    if (etag) { headers["If-None-Match"] = etag; }
    return fetch(url, {credentials: "same-origin", headers: headers})
      .then(function (r) {
        if (r.status === 401) { window.location.href = base + "/login"; }
        if (r.status === 304) { return null; }
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json().then(function (data) {
          return {data: data, etag: r.headers.get("ETag")};
        });
      });
  }
  function getJSON(url) {
    return fetchJSON(url, null).then(function (got) { return got.data; });
  }
  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    if (cls) { node.className = cls; }
    return node;
  }
  function live(ok, why) {
    var node = document.getElementById("live");
    if (!node) { return; }
    node.textContent = ok ? "live, updated " + new Date().toLocaleTimeString()
                          : "not updating: " + (why && why.message ? why.message : why);
    node.className = ok ? "live" : "live stale";
  }
  function every(fn) {
    var busy = false;
    window.setInterval(function () {
      if (document.hidden || busy) { return; }
      busy = true;
      Promise.resolve().then(fn).then(function () { live(true); }, function (e) { live(false, e); })
        .then(function () { busy = false; });
    }, POLL);
  }
  function when(iso) { return iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "Z") : ""; }
  function statusClass(s) { return "status s-" + String(s).replace(/[^a-z_]/g, ""); }

  var shown = null;
  function executionRows(data) {
    var tbody = document.getElementById("executions-body");
    var text = JSON.stringify(data);
    if (!tbody || text === shown) { return; }  // unchanged: keep the reader's selection
    shown = text;
    while (tbody.firstChild) { tbody.removeChild(tbody.firstChild); }
    data.executions.forEach(function (e) {
      var tr = el("tr");
      var idCell = el("td", null, "mono");
      var link = el("a", e.execution_id);
      link.href = base + "/executions/" + encodeURIComponent(e.execution_id);
      idCell.appendChild(link);
      tr.appendChild(idCell);
      tr.appendChild(el("td", e.workflow_id));
      var st = el("td");
      st.appendChild(el("span", e.status, statusClass(e.status)));
      tr.appendChild(st);
      tr.appendChild(el("td", e.attempt + "/" + e.max_attempts, "num"));
      tr.appendChild(el("td", when(e.created_at), "mono time"));
      tr.appendChild(el("td", when(e.updated_at), "mono time"));
      tr.appendChild(el("td", e.status_reason || "", "wrap"));
      tbody.appendChild(tr);
    });
    if (!data.executions.length) {
      var empty = el("tr");
      var cell = el("td", "no executions", "muted");
      cell.colSpan = 7;
      empty.appendChild(cell);
      tbody.appendChild(empty);
    }
    var next = document.getElementById("next-page");
    if (next) { next.hidden = data.next_offset === null; }
  }

  var api = body.getAttribute("data-api");
  if (page === "executions" && api) {
    every(function () { return getJSON(api).then(executionRows); });
  }
  if (page === "execution" && api && body.getAttribute("data-active") === "true") {
    var stamp = body.getAttribute("data-updated");
    var etag = null;  // unchanged since the last answer: a bodiless 304, not the whole history
    every(function () {
      return fetchJSON(api, etag).then(function (got) {
        if (got === null) { return; }
        etag = got.etag;
        if (got.data.execution.updated_at === stamp) { return; }
        var editing = document.activeElement && document.activeElement.form;
        if (editing) {
          var note = document.getElementById("changed");
          if (note) { note.hidden = false; }
        } else {
          window.location.reload();
        }
      });
    });
  }
  if (page === "health") {
    every(function () {
      return getJSON(base + "/api/health").then(function (d) {
        document.querySelectorAll("[data-health]").forEach(function (node) {
          var value = d;
          node.getAttribute("data-health").split(".").forEach(function (k) {
            value = value === null || value === undefined ? value : value[k];
          });
          node.textContent = value === null || value === undefined ? "" :
            (typeof value === "object" ? JSON.stringify(value) : String(value));
        });
      });
    });
  }

  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var out = form.querySelector(".op-result");
      if (!window.confirm(form.getAttribute("data-confirm"))) { return; }
      var payload = {};
      var bad = null;
      new FormData(form).forEach(function (value, key) {
        if (key === "csrf_token") { return; }
        if (key === "value") {
          if (String(value).trim() === "") { return; }
          try { payload.value = JSON.parse(value); } catch (e) {
            bad = "value is not JSON: " + e.message;
          }
        } else if (value !== "") {
          payload[key] = value;
        }
      });
      if (!bad && form.getAttribute("data-needs-value") === "true" && !("value" in payload)) {
        bad = "value is required (JSON; null is a value)";
      }
      if (bad) { if (out) { out.textContent = bad; } return; }
      if (out) { out.textContent = "working..."; }
      fetch(form.action, {
        method: "POST", credentials: "same-origin",
        headers: {"Content-Type": "application/json", "Accept": "application/json",
                  "X-CSRF-Token": csrf},
        body: JSON.stringify(payload)
      }).then(function (r) {
        return r.json().then(function (d) { return {status: r.status, data: d}; },
                             function () { return {status: r.status, data: {}}; });
      }).then(function (res) {
        if (res.status === 200 && res.data.execution_id &&
            form.getAttribute("data-follow") === "true") {
          window.location.href = base + "/executions/" + encodeURIComponent(res.data.execution_id);
        } else if (res.status === 200) {
          window.location.reload();
        } else if (out) {
          out.textContent = "error " + res.status + ": " + (res.data.error || "request failed");
        }
      }, function (e) { if (out) { out.textContent = String(e); } });
    });
  });
})();
"""
