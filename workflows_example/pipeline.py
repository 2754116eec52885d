"""Word count, made for shell pipelines::

    cat notes.txt | jq -Rs '{text: .}' | durablectl start pipeline.wordcount.v1 --input - --wait

Workflow ``pipeline.wordcount.v1`` (alias ``pipeline.wordcount``). Input: a string, a list of
lines, ``{"text": "..."}`` or ``{"lines": [...]}``, with optional ``"top": 10`` (how many words
to rank) and ``"case_sensitive": false``. Output (JSON)::

    {"lines": 2, "words": 6, "unique": 5, "characters": 27,
     "top": [{"word": "the", "count": 2}, ...], "counts": {"the": 2, ...}}

Big inputs are counted in chunks of ``CHUNK_LINES`` lines, one step per chunk, run concurrently
(``asyncio.gather`` over steps with distinct ids). Bad input fails the execution at once: it is
declared with ``max_attempts=1`` since retrying cannot fix it. No signals.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from functools import partial
from typing import Any

from durablectl import WorkflowContext, workflow

CHUNK_LINES = 500
DEFAULT_TOP = 10
WORD = re.compile(r"[^\W_]+(?:['\u2019-][^\W_]+)*")  # letters/digits, with inner ' or -


def read_lines(data: Any) -> dict[str, Any]:
    """The lines and options of any accepted input shape; ``ValueError`` for anything else."""
    options: dict[str, Any] = {}
    if isinstance(data, dict):
        options = data
        if isinstance(data.get("text"), str):
            lines = data["text"].splitlines()
        elif isinstance(data.get("lines"), list):
            lines = data["lines"]
        else:
            raise ValueError("expected {\"text\": str} or {\"lines\": [str, ...]}")
    elif isinstance(data, str):
        lines = data.splitlines()
    elif isinstance(data, list):
        lines = data
    else:
        raise ValueError(f"expected text, a list of lines or an object, not {type(data).__name__}")
    if not all(isinstance(line, str) for line in lines):
        raise ValueError("every line must be a string")
    top = options.get("top", DEFAULT_TOP)
    if isinstance(top, bool) or not isinstance(top, int) or top < 0:
        raise ValueError("'top' must be a non-negative integer")
    return {"lines": lines, "top": top, "case_sensitive": bool(options.get("case_sensitive"))}


def count_words(lines: list[str], case_sensitive: bool) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    for line in lines:
        words = WORD.findall(line)
        counts.update(words if case_sensitive else (w.lower() for w in words))
    return {"counts": dict(counts), "characters": sum(len(line) for line in lines)}


@workflow("pipeline.wordcount.v1", alias="pipeline.wordcount", max_attempts=1)
async def wordcount(ctx: WorkflowContext, data: Any) -> dict[str, Any]:
    parsed = await ctx.step("read-input", lambda: read_lines(data))
    lines: list[str] = parsed["lines"]
    chunks = [lines[i:i + CHUNK_LINES] for i in range(0, len(lines), CHUNK_LINES)]
    partials = await asyncio.gather(*(
        ctx.step(f"count-chunk-{n}", partial(count_words, chunk, parsed["case_sensitive"]))
        for n, chunk in enumerate(chunks)))
    # merging is pure and cheap: it runs again on a replay, no step needed
    counts: Counter[str] = Counter()
    for part in partials:
        counts.update(part["counts"])
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    result = {
        "lines": len(lines),
        "words": sum(counts.values()),
        "unique": len(counts),
        "characters": sum(part["characters"] for part in partials),
        "top": [{"word": w, "count": c} for w, c in ranked[:parsed["top"]]],
        "counts": dict(ranked),
    }
    await ctx.note("counted", {"lines": result["lines"], "words": result["words"],
                               "chunks": len(chunks)})
    return result
