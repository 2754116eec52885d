"""Who may use the dashboard: the configured token, a signed session cookie, and CSRF tokens.

There is one secret, the token (SPEC §4). A client sends it as ``Authorization: Bearer``; a
browser types it once into the login form and gets a session cookie instead. The cookie does
not hold the token: it is ``<issued>.<nonce>.<mac>``, signed with a key derived from the token,
so a stolen cookie expires, a changed token ends every session, and no state is kept on the
server. The CSRF token of a cookie session is another MAC of that session, so a page can embed
it and a forged cross-site request, which cannot read the page, cannot produce it.

Every comparison with a secret goes through ``hmac.compare_digest``; the token itself is
compared as a SHA-256 digest, so the comparison does not even leak its length.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SESSION_COOKIE = "durablectl_session"
SESSION_SECONDS = 12 * 3600  # a browser session lasts a working day, then logs in again
CLOCK_SKEW_SECONDS = 60  # a session "issued in the future" by this much is still accepted
CSRF_FIELD = "csrf_token"  # form field; the header is X-CSRF-Token
CSRF_ENVIRON = "HTTP_X_CSRF_TOKEN"

_SESSION_PURPOSE = b"durablectl dashboard session key"


class TokenAuth:
    """Checks the token, issues and verifies session cookies and their CSRF tokens."""

    def __init__(self, token: str) -> None:
        if not isinstance(token, str) or not token.strip():
            raise ValueError("the dashboard needs a non-empty token")
        secret = token.encode("utf-8")
        self._digest = hashlib.sha256(secret).digest()
        self._key = hmac.new(secret, _SESSION_PURPOSE, hashlib.sha256).digest()

    def __repr__(self) -> str:  # never the token, not even in a traceback's locals
        return "TokenAuth(token=********)"

    def _sign(self, purpose: str, payload: str) -> str:
        message = f"{purpose}\n{payload}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def token_matches(self, candidate: str) -> bool:
        given = hashlib.sha256(candidate.encode("utf-8", "surrogateescape")).digest()
        return hmac.compare_digest(given, self._digest)

    def bearer_matches(self, header: str) -> bool:
        """An ``Authorization`` header value: ``Bearer <token>`` with the right token."""
        scheme, _, credentials = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return self.token_matches(credentials.strip())

    # sessions ------------------------------------------------------------------------------
    def new_session(self, now: float) -> str:
        payload = f"{int(now)}.{secrets.token_urlsafe(18)}"
        return f"{payload}.{self._sign('session', payload)}"

    def session_valid(self, value: str, now: float) -> bool:
        issued_text, _, rest = value.partition(".")
        nonce, _, mac = rest.partition(".")
        if not issued_text.isdigit() or not nonce or not mac:
            return False
        expected = self._sign("session", f"{issued_text}.{nonce}")
        if not hmac.compare_digest(expected.encode(), mac.encode("utf-8", "surrogateescape")):
            return False
        issued = int(issued_text)
        return issued - CLOCK_SKEW_SECONDS <= now < issued + SESSION_SECONDS

    def csrf_token(self, session: str) -> str:
        return self._sign("csrf", session)

    def csrf_valid(self, session: str, candidate: str | None) -> bool:
        if not candidate:
            return False
        return hmac.compare_digest(self.csrf_token(session).encode(),
                                   candidate.strip().encode("utf-8", "surrogateescape"))


def read_cookie(header: str | None, name: str) -> str | None:
    """One cookie's value from a ``Cookie`` header (``http.cookies`` gives up on the whole
    header when another site's cookie on the same host is malformed)."""
    if not header:
        return None
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"')
    return None


def session_cookie(value: str, *, path: str, secure: bool, max_age: int = SESSION_SECONDS) -> str:
    """The ``Set-Cookie`` value: HttpOnly (no script reads it), SameSite=Strict (no other site
    sends it), Secure when served over https."""
    parts = [f"{SESSION_COOKIE}={value}", f"Path={path}", "HttpOnly", "SameSite=Strict",
             f"Max-Age={max_age}"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def cleared_cookie(*, path: str, secure: bool) -> str:
    return session_cookie("", path=path, secure=secure, max_age=0)
