"""JSON-only payload encoding. Never pickle, never eval: what is stored is plain JSON text."""

from __future__ import annotations

import json
from collections.abc import Callable
from json import encoder as _stdlib_encoder
from typing import Any

from durablectl.errors import PayloadError

DEFAULT_MAX_PAYLOAD_BYTES = 1_048_576


def compact_encoder(*, ensure_ascii: bool, allow_nan: bool) -> Callable[[Any], str]:
    """``json.dumps(value, separators=(",", ":"), ...)`` with its options fixed once: the same
    text, without building an encoder object per call (``json.dumps`` with options makes a
    ``JSONEncoder`` and a float helper every time; a daemon encodes ~10 values per execution).
    Circular structures are still refused: each call gets its own markers."""
    reference = json.JSONEncoder(separators=(",", ":"), ensure_ascii=ensure_ascii,
                                 allow_nan=allow_nan)
    make = getattr(_stdlib_encoder, "c_make_encoder", None)
    if make is None:  # an interpreter without the C accelerator
        return reference.encode
    strings = (_stdlib_encoder.encode_basestring_ascii if ensure_ascii
               else _stdlib_encoder.encode_basestring)
    default = reference.default

    def encode(value: Any) -> str:
        if value.__class__ is str:
            return strings(value)
        chunks = make({}, default, strings, None, ":", ",", False, False, allow_nan)(value, 0)
        return "".join(chunks)

    return encode


_scan_once: Callable[[str, int], tuple[Any, int]] = (
    json.JSONDecoder().scan_once)  # type: ignore[attr-defined]


def loads(text: str) -> Any:
    """``json.loads`` for text this project wrote (no surrounding blanks): the decoder's
    scanner called directly; anything unusual goes through ``json.loads`` and its errors."""
    try:
        value, end = _scan_once(text, 0)
    except StopIteration:
        return json.loads(text)
    if end != len(text):
        return json.loads(text)
    return value


_payload_json = compact_encoder(ensure_ascii=False, allow_nan=False)


def encode(value: Any, *, what: str, step_id: str | None = None,
           max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> str:
    """Serialise ``value``; the error names ``what`` (e.g. "result of step 'charge'")."""
    try:
        text = _payload_json(value)
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"{what} is not JSON-serialisable: {exc}", step_id) from exc
    # a character is 1 to 4 bytes: encode only when the length alone cannot tell
    if max_bytes and len(text) * 4 > max_bytes and len(text.encode()) > max_bytes:
        raise PayloadError(
            f"{what} is {len(text.encode())} bytes, over the limit of {max_bytes} bytes", step_id
        )
    return text


def decode(text: str | None) -> Any:
    return None if text is None else loads(text)


def round_trip(value: Any, *, what: str, step_id: str | None = None,
               max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> tuple[str, Any]:
    """Encode and return (text, decoded): a step returns what a replay would return."""
    text = encode(value, what=what, step_id=step_id, max_bytes=max_bytes)
    return text, loads(text)
