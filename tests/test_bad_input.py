"""Bad input, as properties (hypothesis): arbitrary text for ``--input``/``--payload``,
payloads over ``[limits] max_payload_bytes``, ids with unicode and control characters, unknown
workflows, reserved step ids and options out of range. Each gets one ``error: ...`` line and the
exit code of SPEC §6 (2 bad input, 3 not found), and the database is left exactly as it was
(a hash of every table's rows before and after).

The CLI runs in process (typer's ``CliRunner``) against one database per module, set up with a
few executions and recorded workflows; a handful of checks run the real ``durablectl`` script
(the fast path and the one-line usage errors). Example counts are bounded so the module runs in
seconds."""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from durablectl import DurableClient, SqliteStore, workflow
from durablectl.cli.app import app
from durablectl.cli.core import CommandExit
from durablectl.codec import decode, encode
from durablectl.errors import ExecutionFailed, PayloadError
from durablectl.service import DurableService

from .conftest import run

ROOT = Path(__file__).resolve().parent.parent
DURABLECTL = ROOT / ".venv" / "bin" / "durablectl"
LIMIT = 256  # [limits] max_payload_bytes of the module's configuration
KNOWN = ("bad.echo.v1", "bad.gate.v1")

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
FEW = settings(SETTINGS, max_examples=25)

CONTROL = [chr(c) for c in range(0x20)] + ["\x7f", "\x9b"]
ids = st.text(alphabet=st.one_of(st.characters(exclude_categories=("Cs",)),
                                 st.sampled_from(CONTROL)), max_size=24)


# -- the module's database ---------------------------------------------------------------------
class Env:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = root / "bad.db"
        self.config = root / "durablectl.toml"
        self.config.write_text(f"[limits]\nmax_payload_bytes = {LIMIT}\n")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLECTL_")}
        for name in ("XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR"):
            folder = root / "xdg" / name.lower()
            folder.mkdir(parents=True, mode=0o700)
            self.env[name] = str(folder)
        self.env.pop("NO_COLOR", None)
        with SqliteStore(self.db) as store, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            store.record_workflows(worker_id="w1", workflows=[(KNOWN[0], "bad.echo"),
                                                              (KNOWN[1], None)], now=1.0)
            client = DurableClient(store)
            self.pending = client.start_execution(KNOWN[1], {"n": 1})
            client.start_execution(KNOWN[0], ["x"])

    def invoke(self, *args: str, input: str | None = None) -> tuple[int, str, str]:
        """In process; options first, then ``--`` so that any text is an argument."""
        result = CliRunner().invoke(app, list(args), input=input, catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    def opts(self) -> list[str]:
        return ["--db", str(self.db), "--config", str(self.config)]

    def script(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(DURABLECTL), *args], env=self.env, capture_output=True,
                              text=True, timeout=30, stdin=subprocess.DEVNULL, cwd=self.root)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("bad-input")
    saved = {k: os.environ.get(k) for k in ("XDG_STATE_HOME", "XDG_CONFIG_HOME",
                                            "XDG_DATA_HOME", "XDG_RUNTIME_DIR",
                                            "DURABLECTL_DB", "DURABLECTL_CONFIG")}
    made = Env(root)
    for name, value in made.env.items():
        if name.startswith("XDG_"):
            os.environ[name] = value
    os.environ.pop("DURABLECTL_DB", None)
    os.environ.pop("DURABLECTL_CONFIG", None)
    try:
        yield made
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def content(db: Path) -> str:
    """A hash of every row of every table (sorted), so any write shows."""
    digest = hashlib.sha256()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        for table in tables:
            digest.update(table.encode())
            rows = sorted(repr(r) for r in conn.execute(f'SELECT * FROM "{table}"'))
            for row in rows:
                digest.update(row.encode())
    finally:
        conn.close()
    return digest.hexdigest()


def one_error_line(stderr: str) -> str:
    assert stderr.endswith("\n") and stderr.count("\n") == 1, repr(stderr)
    assert stderr.startswith("error: "), repr(stderr)
    assert "\x1b" not in stderr and "\x9b" not in stderr and "\x07" not in stderr, repr(stderr)
    return stderr[len("error: "):-1]


def json_accepts(text: str) -> tuple[bool, Any]:
    """What the CLI should do with ``text``: (accepted, value)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return False, None
    try:
        encoded = json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except ValueError:  # NaN, Infinity, 1e400
        return False, None
    return len(encoded.encode()) <= LIMIT, value


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)

# text that is often JSON, often nearly JSON, sometimes huge
input_texts = st.one_of(
    st.text(max_size=40),
    json_values.map(lambda v: json.dumps(v, ensure_ascii=False)),
    json_values.map(lambda v: json.dumps(v)[:-1] + "x"),
    st.sampled_from(["NaN", "-Infinity", "1e400", "[1,]", "{'a': 1}", "tru", "", " ", "\x00",
                     "\"\x1b[31m\"", "{\"a\":1}{", "__import__('os')"]),
    st.integers(min_value=LIMIT - 8, max_value=LIMIT * 4).map(lambda n: json.dumps("a" * n)),
)


# -- --input and --payload ---------------------------------------------------------------------
@SETTINGS
@given(text=input_texts)
def test_start_input_is_json_or_refused_with_exit_2(env: Env, text: str) -> None:
    assume(text != "-" and not text.startswith("@"))  # stdin and @file: tested in test_cli
    before = content(env.db)
    code, stdout, stderr = env.invoke("start", *env.opts(), f"--input={text}", "--", KNOWN[0])
    accepted, value = json_accepts(text)
    if not accepted:
        assert (code, stdout) == (2, ""), (code, stdout, stderr)
        message = one_error_line(stderr)
        assert "--input is not valid JSON" in message or "input of workflow" in message
        assert content(env.db) == before
        return
    assert code == 0, (code, stdout, stderr)
    execution_id = stdout.strip()
    with SqliteStore(env.db) as store:
        stored = store.get_execution(execution_id)
    assert stored is not None and stored.input == value


@SETTINGS
@given(text=input_texts)
def test_signal_payload_is_json_or_refused_with_exit_2(env: Env, text: str) -> None:
    assume(text != "-" and not text.startswith("@"))
    before = content(env.db)
    code, stdout, stderr = env.invoke("signal", *env.opts(), f"--payload={text}", "--",
                                      env.pending, "go")
    accepted, _ = json_accepts(text)
    if accepted:
        assert code == 0, (code, stdout, stderr)
        return
    assert (code, stdout) == (2, ""), (code, stdout, stderr)
    message = one_error_line(stderr)
    assert "--payload is not valid JSON" in message or "payload of signal" in message \
        or "bytes, over the limit" in message or "not JSON" in message, message
    assert content(env.db) == before


@FEW
@given(size=st.integers(min_value=LIMIT - 1, max_value=LIMIT * 50))
def test_a_payload_over_the_configured_limit_is_exit_2_naming_the_limit(
        env: Env, size: int) -> None:
    # two bytes a character: bytes count, not characters
    text = json.dumps("é" * (size // 2), ensure_ascii=False)
    before = content(env.db)
    code, _, stderr = env.invoke("start", *env.opts(), f"--input={text}", "--", KNOWN[0])
    if len(text.encode()) <= LIMIT:
        assert code == 0, stderr
        return
    assert code == 2, stderr
    message = one_error_line(stderr)
    assert f"{len(text.encode())} bytes, over the limit of {LIMIT} bytes" in message
    assert content(env.db) == before


# -- ids ---------------------------------------------------------------------------------------
@SETTINGS
@given(execution_id=ids, command=st.sampled_from(["status", "show", "cancel", "wait", "signal"]))
def test_unknown_execution_ids_are_exit_3_or_2_with_an_escaped_line(
        env: Env, execution_id: str, command: str) -> None:
    with SqliteStore(env.db) as store:
        assume(store.get_execution(execution_id) is None)
    before = content(env.db)
    extra = ["go"] if command == "signal" else []
    code, stdout, stderr = env.invoke(command, *env.opts(), "--", execution_id, *extra)
    assert code in (2, 3), (code, stdout, stderr)
    message = one_error_line(stderr)
    if code == 3:
        assert message == f"unknown execution {execution_id!r}".replace(
            "\x1b", "\\x1b") or message.startswith("unknown execution"), message
    assert stdout == ""
    assert content(env.db) == before


@SETTINGS
@given(workflow_id=ids)
def test_unknown_workflows_are_exit_3_and_start_nothing(env: Env, workflow_id: str) -> None:
    assume(workflow_id not in (*KNOWN, "bad.echo"))
    before = content(env.db)
    code, stdout, stderr = env.invoke("start", *env.opts(), "--", workflow_id)
    assert (code, stdout) in ((3, ""), (2, "")), (code, stdout, stderr)
    message = one_error_line(stderr)
    if code == 3:
        assert message.startswith("unknown workflow ") and "(known: bad.echo.v1, bad.gate.v1)" \
            in message
    assert content(env.db) == before


def test_control_characters_in_ids_never_reach_the_terminal_from_the_script(env: Env) -> None:
    for bad in ("\x1b[31mred", "\x1b]0;title\x07", "é\u202e", "\x9b2J", " "):
        for args in (["status", bad], ["show", bad], ["start", bad], ["wait", bad, "-t", "0"]):
            done = env.script(*args, *env.opts())
            assert done.returncode == 3, (args, done)
            one_error_line(done.stderr)
            assert done.stdout == ""


# -- options out of range ----------------------------------------------------------------------
@FEW
@given(limit=st.integers(max_value=-1), which=st.sampled_from(["--limit", "--offset"]))
def test_negative_limit_or_offset_is_exit_2(env: Env, limit: int, which: str) -> None:
    before = content(env.db)
    code, stdout, stderr = env.invoke("list", *env.opts(), f"{which}={limit}")
    assert (code, stdout) == (2, "")
    assert one_error_line(stderr) == "--limit and --offset must be zero or more"
    assert content(env.db) == before


def _valid_duration(text: str) -> bool:
    from durablectl.cli.core import parse_duration

    try:
        parse_duration(text)
    except CommandExit:
        return False
    return True


durations = st.one_of(
    st.text(max_size=12),
    st.floats(max_value=-1e-9).map(repr),
    st.builds(lambda n, unit: f"-{n}{unit}", st.integers(min_value=1, max_value=10**6),
              st.sampled_from(["", "s", "m", "h", "d"])),
    st.sampled_from(["nan", "NaN", "-inf", "5x", "1w", "", "m", "--", "1 s"]),
)


@SETTINGS
@given(text=durations)
def test_bad_durations_are_exit_2_naming_the_value(env: Env, text: str) -> None:
    import contextlib
    import io

    with contextlib.redirect_stderr(io.StringIO()):
        valid = _valid_duration(text)
    before = content(env.db)
    code, stdout, stderr = env.invoke("wait", *env.opts(), f"--timeout={text}", "--",
                                      "no-such-execution")
    message = one_error_line(stderr)
    if valid:  # a good duration gets as far as the (unknown) execution
        assert (code, message) == (3, "unknown execution 'no-such-execution'")
    else:
        assert (code, stdout) == (2, "")
        assert message.startswith("bad duration ")
    assert content(env.db) == before


def test_out_of_range_options_from_the_script_are_one_line_exit_2(env: Env) -> None:
    before = content(env.db)
    for args in (["list", "--limit", "-1"], ["list", "--limit", "abc"],
                 ["wait", "x", "--timeout", "-5"], ["wait", "x", "--timeout", "soon"],
                 ["start", KNOWN[0], "--input", "{nope"], ["status"]):
        done = env.script(*args, *env.opts())
        assert done.returncode == 2, (args, done)
        one_error_line(done.stderr)
        assert done.stdout == ""
    assert content(env.db) == before


# -- the API -----------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None, derandomize=True)
@given(value=json_values)
def test_any_json_value_round_trips_through_the_codec(value: Any) -> None:
    text = encode(value, what="the value")
    assert decode(text) == value
    assert json.loads(text) == value


class Opaque:
    pass


non_json = st.one_of(
    st.builds(Opaque), st.builds(object), st.sets(st.integers(), max_size=3),
    st.binary(max_size=8), st.complex_numbers(allow_nan=False),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.dictionaries(st.tuples(st.integers()), st.none(), min_size=1, max_size=2),
)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(bad=non_json, wrap=st.sampled_from(["bare", "list", "dict"]),
       what=st.sampled_from(["the input of workflow 'w'", "result of step 'charge'"]))
def test_non_json_values_raise_payload_error_naming_what(bad: Any, wrap: str, what: str) -> None:
    value = {"bare": bad, "list": [1, bad], "dict": {"k": bad}}[wrap]
    with pytest.raises(PayloadError) as info:
        encode(value, what=what, step_id="s1")
    assert info.value.message.startswith(f"{what} is not JSON-serialisable: ")
    assert info.value.step_id == "s1" and info.value.exit_code == 2


@settings(max_examples=100, deadline=None, derandomize=True)
@given(text=st.text(st.characters(min_codepoint=0x80, exclude_categories=("Cs",)),
                       max_size=150) | st.text(max_size=300),
       limit=st.integers(min_value=1, max_value=400))
def test_the_payload_limit_counts_utf8_bytes(text: str, limit: int) -> None:
    size = len(json.dumps(text, ensure_ascii=False).encode())
    if size <= limit:
        assert decode(encode(text, what="x", max_bytes=limit)) == text
    else:
        with pytest.raises(PayloadError, match=f"x is {size} bytes, over the limit of {limit}"):
            encode(text, what="x", max_bytes=limit)


@workflow("bad.reserved.v1")
async def reserved(ctx: Any, step_id: str) -> Any:
    return await ctx.step(step_id, lambda: 1)


@FEW
@given(step_id=st.builds(lambda prefix, rest: prefix + rest,
                         st.sampled_from(["__", "rollback:"]), st.text(max_size=10))
       | st.just(""))
def test_reserved_and_empty_step_ids_fail_the_execution_with_step_id_error(
        tmp_path_factory: pytest.TempPathFactory, step_id: str) -> None:
    db = tmp_path_factory.mktemp("reserved") / "r.db"

    async def main() -> Any:
        with SqliteStore(db) as store:
            async with DurableService(store, [reserved]) as service:
                eid = await service.start_execution(reserved, step_id)
                with pytest.raises(ExecutionFailed) as info:
                    await service.wait(eid, timeout=10)
                return info.value.error, store.list_step_results(eid)

    error, steps = run(main())
    assert error is not None and error.type == "StepIdError"
    assert ("reserved" in error.message) if step_id else ("non-empty" in error.message)
    assert [s.step_id for s in steps] == []  # nothing ran, nothing was recorded
