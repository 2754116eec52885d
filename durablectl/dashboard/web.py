"""The little WSGI plumbing the dashboard needs: a request, a response, content negotiation and
the Host check. Standard library only (a framework would not earn its place for ten routes)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

MAX_BODY_BYTES = 4 * 1024 * 1024  # a form or JSON body; payloads are capped lower by the store

#: every response: no caching of data pages, no framing, no sniffing, no referrer (ids stay
#: in this tab). The CSP allows only this page's own nonce'd script and style.
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
)


class BodyError(Exception):
    """A request body the dashboard will not read (too large, not UTF-8, bad JSON)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Request:
    """One WSGI request, decoded once."""

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self.environ = environ
        self.method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        # PEP 3333: PATH_INFO is the bytes of the path as latin-1; ids may be any UTF-8
        raw_path = str(environ.get("PATH_INFO", "") or "/")
        self.path = raw_path.encode("latin-1", "replace").decode("utf-8", "replace")
        self.base = str(environ.get("SCRIPT_NAME", "")).rstrip("/")
        query = str(environ.get("QUERY_STRING", ""))
        self.query: dict[str, str] = {}
        for key, value in parse_qsl(query, keep_blank_values=True):
            self.query.setdefault(key, value)
        self.nonce = secrets.token_urlsafe(12)  # this response's CSP nonce
        self._body: bytes | None = None

    def header(self, name: str) -> str | None:
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            value = self.environ.get(key)
        else:
            value = self.environ.get("HTTP_" + key)
        return None if value is None else str(value)

    @property
    def secure(self) -> bool:
        return self.environ.get("wsgi.url_scheme") == "https"

    @property
    def content_type(self) -> str:
        return (self.header("Content-Type") or "").split(";")[0].strip().lower()

    def url(self, path: str) -> str:
        """A path inside the app, as the browser must ask for it (mounted under a prefix)."""
        return self.base + path

    def body(self) -> bytes:
        if self._body is None:
            try:
                length = int(self.header("Content-Length") or 0)
            except ValueError:
                raise BodyError("bad Content-Length") from None
            if length < 0:
                raise BodyError("bad Content-Length")
            if length > MAX_BODY_BYTES:
                raise BodyError(f"the body is larger than {MAX_BODY_BYTES} bytes", 413)
            stream = self.environ.get("wsgi.input")
            self._body = stream.read(length) if stream is not None and length else b""
        return self._body

    def form(self) -> dict[str, str]:
        try:
            text = self.body().decode("utf-8")
        except UnicodeDecodeError:
            raise BodyError("the form is not UTF-8") from None
        fields: dict[str, str] = {}
        for key, value in parse_qsl(text, keep_blank_values=True):
            fields.setdefault(key, value)
        return fields

    def json(self) -> Any:
        try:
            return json.loads(self.body().decode("utf-8"))
        except UnicodeDecodeError:
            raise BodyError("the body is not UTF-8") from None
        except json.JSONDecodeError as exc:
            raise BodyError(f"the body is not valid JSON: {exc.msg} at line {exc.lineno} "
                            f"column {exc.colno}") from None

    def prefers_html(self) -> bool:
        return prefers_html(self.header("Accept"))


def _quality(accept: str, kind: str) -> float:
    """The q-value ``accept`` gives ``kind`` (its most specific matching range wins)."""
    major = kind.split("/")[0]
    best: tuple[int, float] = (-1, 0.0)
    for item in accept.split(","):
        parts = [p.strip() for p in item.split(";")]
        media = parts[0].lower()
        q = 1.0
        for param in parts[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if media == kind:
            rank = 2
        elif media == f"{major}/*":
            rank = 1
        elif media == "*/*":
            rank = 0
        else:
            continue
        if rank > best[0]:
            best = (rank, q)
    return best[1]


def prefers_html(accept: str | None) -> bool:
    """A browser's navigation (``text/html`` ranked above JSON); ``fetch``, curl and urllib,
    which send ``*/*`` or nothing, are not browsers here."""
    if not accept:
        return False
    html = _quality(accept, "text/html")
    return html > 0 and html > _quality(accept, "application/json")


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    nonce: str | None = None  # an HTML page's CSP nonce

    def status_line(self) -> str:
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            phrase = "Unknown"
        return f"{self.status} {phrase}"

    def all_headers(self) -> list[tuple[str, str]]:
        headers = [] if self.status == 304 else [  # a 304 describes the body it did not send
            ("Content-Type", self.content_type), ("Content-Length", str(len(self.body)))]
        headers += SECURITY_HEADERS
        if self.nonce is not None:
            headers.append(("Content-Security-Policy", content_security_policy(self.nonce)))
        else:
            headers.append(("Content-Security-Policy",
                            "default-src 'none'; frame-ancestors 'none'"))
        return headers + self.headers


def content_security_policy(nonce: str) -> str:
    return ("default-src 'none'; "
            f"script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "connect-src 'self'; img-src 'self' data:; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'")


def json_response(data: Any, status: int = 200,
                  headers: Iterable[tuple[str, str]] = ()) -> Response:
    body = json.dumps(data, ensure_ascii=False).encode("utf-8")
    return Response(status, body, "application/json; charset=utf-8", list(headers))


def json_error(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


def html_response(page: str, nonce: str, status: int = 200,
                  headers: Iterable[tuple[str, str]] = ()) -> Response:
    return Response(status, page.encode("utf-8"), "text/html; charset=utf-8", list(headers),
                    nonce=nonce)


def redirect(location: str, headers: Iterable[tuple[str, str]] = ()) -> Response:
    """303: after a POST the browser GETs the new page."""
    return Response(303, b"", "text/plain; charset=utf-8",
                    [("Location", location), *headers])


# -- the Host check (DNS rebinding) ---------------------------------------------------------
def host_name(header: str) -> str:
    """``Host`` without its port, lower case, without a trailing dot; ``[::1]:80`` -> ``::1``."""
    value = header.strip().lower()
    if value.startswith("["):
        name = value[1:].split("]", 1)[0]
    elif value.count(":") == 1:
        name = value.split(":", 1)[0]
    else:
        name = value  # no port, or a bare IPv6 address
    return name.rstrip(".")


def normalise_hosts(hosts: Iterable[str]) -> frozenset[str]:
    return frozenset(host_name(h) if h.strip() != "*" else "*" for h in hosts if h.strip())


def host_allowed(header: str | None, allowed: frozenset[str]) -> bool:
    """Whether a request's ``Host`` is one of ``allowed`` (``*`` allows any). A page on an
    attacker's name that resolves to this machine carries that name, and is refused."""
    if "*" in allowed:
        return True
    if not header:
        return False
    return host_name(header) in allowed
