"""The layering of STYLE.md, kept true by walking every module's imports with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "durablectl"

ENGINE_MODULES = {"engine", "context", "runner", "service"}
FORBIDDEN_FOR_ENGINE = ("durablectl.daemon", "durablectl.cli", "durablectl.dashboard",
                        "durablectl.config")


def _modules() -> dict[str, tuple[Path, set[str]]]:
    found: dict[str, tuple[Path, set[str]]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        imports: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imports.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imports.add(node.module)
        found[name] = (path, imports)
    return found


def _importers(prefix: str) -> set[str]:
    return {name for name, (_p, imports) in _modules().items()
            if any(i == prefix or i.startswith(prefix + ".") for i in imports)}


def test_only_the_sqlite_store_imports_sqlite3() -> None:
    assert _importers("sqlite3") <= {"durablectl.store.sqlite",
                                     "durablectl.store.sqlite_schedules",
                                     "durablectl.store.sqlite_operator",
                                     "durablectl.store.sqlite_loop"}


def test_only_the_cli_imports_typer_and_rich() -> None:
    for library in ("typer", "rich"):
        assert all(name.startswith("durablectl.cli.") for name in _importers(library)), library


def test_only_the_daemon_imports_watchfiles_and_uvloop() -> None:
    # the library runs on its caller's event loop; only the daemon process picks uvloop
    for library in ("watchfiles", "uvloop"):
        assert all(name.startswith("durablectl.daemon.") for name in _importers(library)), \
            library
    assert _importers("uvloop") == {"durablectl.daemon.process"}


def test_the_engine_never_imports_daemon_cli_dashboard_or_config() -> None:
    for name, (_path, imports) in _modules().items():
        if name.split(".")[-1] in ENGINE_MODULES and name.count(".") == 1:
            bad = {i for i in imports for f in FORBIDDEN_FOR_ENGINE
                   if i == f or i.startswith(f + ".")}
            assert not bad, f"{name} imports {bad}"


def test_the_library_never_imports_the_cli() -> None:
    offenders = {n for n in _importers("durablectl.cli")
                 if n not in ("durablectl.cli", "durablectl.__main__")
                 and not n.startswith("durablectl.cli.")}
    assert offenders == set()


def test_only_clock_reads_the_wall_clock() -> None:
    readers = set()
    for name, (path, _imports) in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and (
                    (node.value.id == "time" and node.attr in ("time", "monotonic")) or
                    (node.value.id == "datetime" and node.attr in ("now", "utcnow"))):
                readers.add(name)
    assert readers <= {"durablectl.clock"}, readers


def test_importing_the_package_loads_neither_asyncio_nor_the_engine() -> None:
    import subprocess
    import sys

    code = ("import sys, durablectl, durablectl.model, durablectl.errors;"
            "print(sorted(m for m in sys.modules if m in ('asyncio', 'durablectl.engine',"
            " 'durablectl.service', 'sqlite3')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
