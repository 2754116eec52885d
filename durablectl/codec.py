"""JSON-only payload encoding. Never pickle, never eval: what is stored is plain JSON text."""

from __future__ import annotations

import json
from typing import Any

from durablectl.errors import PayloadError

DEFAULT_MAX_PAYLOAD_BYTES = 1_048_576


def encode(value: Any, *, what: str, step_id: str | None = None,
           max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> str:
    """Serialise ``value``; the error names ``what`` (e.g. "result of step 'charge'")."""
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"{what} is not JSON-serialisable: {exc}", step_id) from exc
    # a character is 1 to 4 bytes: encode only when the length alone cannot tell
    if max_bytes and len(text) * 4 > max_bytes and len(text.encode()) > max_bytes:
        raise PayloadError(
            f"{what} is {len(text.encode())} bytes, over the limit of {max_bytes} bytes", step_id
        )
    return text


def decode(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def round_trip(value: Any, *, what: str, step_id: str | None = None,
               max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> tuple[str, Any]:
    """Encode and return (text, decoded): a step returns what a replay would return."""
    text = encode(value, what=what, step_id=step_id, max_bytes=max_bytes)
    return text, json.loads(text)
