"""Load the workflow modules of a folder, and reload them when they change.

Every ``*.py`` file and every package (a folder with ``__init__.py``) directly in the folder is a
module; its module-level ``Workflow`` objects are collected. A module that fails to import is
reported with its file and line, and its previous definitions stay in use, so a typo in a deploy
never unloads a workflow that has executions in flight."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import logging
import sys
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from durablectl.definitions import Registry, Workflow

log = logging.getLogger(__name__)

MODULE_PREFIX = "durablectl_workflows"
FOLDER_POLL_SECONDS = 2.0  # how often a missing workflows folder is looked for


@dataclass(frozen=True)
class LoadError:
    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"


def _module_files(folder: Path) -> dict[str, Path]:
    """Module name -> the file to import (a package's ``__init__.py``)."""
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith((".", "_")):
            continue
        if entry.is_file() and entry.suffix == ".py":
            found[entry.stem] = entry
        elif entry.is_dir() and (entry / "__init__.py").is_file():
            found[entry.name] = entry / "__init__.py"
    return found


def _describe(exc: BaseException, folder: Path) -> LoadError:
    if isinstance(exc, SyntaxError):
        return LoadError(str(exc.filename), exc.lineno, f"SyntaxError: {exc.msg}")
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if f.filename and Path(f.filename).resolve().is_relative_to(folder.resolve())]
    frame = frames[-1] if frames else None
    return LoadError(frame.filename if frame else str(folder), frame.lineno if frame else None,
                     f"{type(exc).__name__}: {exc}")


class _SourceOnlyLoader(importlib.machinery.SourceFileLoader):
    """Compile from the source every time. The bytecode cache keys on the source's mtime in
    whole seconds and its size, so an edit of the same size within the same second would load
    the stale ``.pyc``; and writing ``__pycache__`` into the watched folder would wake the
    watcher for nothing."""

    def get_code(self, fullname: str) -> Any:
        source = self.get_data(self.path)
        return compile(source, self.path, "exec", dont_inherit=True)


class WorkflowLoader:
    """The workflows of one folder, kept in ``registry``."""

    def __init__(self, folder: str | Path, registry: Registry) -> None:
        self.folder = Path(folder).resolve()
        self.registry = registry
        self.modules: dict[str, list[Workflow]] = {}
        self.errors: dict[str, LoadError] = {}

    def _import(self, name: str, file: Path) -> list[Workflow]:
        qualified = f"{MODULE_PREFIX}.{name}"
        package = file.name == "__init__.py"
        spec = importlib.util.spec_from_file_location(
            qualified, file, loader=_SourceOnlyLoader(qualified, str(file)),
            submodule_search_locations=[str(file.parent)] if package else None)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {file}")
        module = importlib.util.module_from_spec(spec)
        if MODULE_PREFIX not in sys.modules:
            parent = ModuleType(MODULE_PREFIX)
            parent.__path__ = []
            sys.modules[MODULE_PREFIX] = parent
        previous = sys.modules.get(qualified)
        sys.modules[qualified] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            if previous is not None:
                sys.modules[qualified] = previous
            else:
                sys.modules.pop(qualified, None)
            raise
        return [value for value in vars(module).values() if isinstance(value, Workflow)]

    def load(self, only: set[str] | None = None) -> list[LoadError]:
        """(Re)load every module, or the named ones; returns this pass's errors."""
        files = _module_files(self.folder)
        errors: list[LoadError] = []
        for name in list(self.modules):
            if name not in files and (only is None or name in only):
                log.info("workflow module %s was removed; its workflows are unloaded", name)
                del self.modules[name]
                self.errors.pop(name, None)
        for name, file in files.items():
            if only is not None and name not in only:
                continue
            try:
                workflows = self._import(name, file)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # a module calling sys.exit() is an error too
                error = _describe(exc, self.folder)
                self.errors[name] = error
                errors.append(error)
                kept = len(self.modules.get(name, []))
                log.error("could not load %s (keeping %d previous workflows): %s", file, kept,
                          error)
                continue
            self.errors.pop(name, None)
            self.modules[name] = workflows
            log.info("loaded %s: %s", file.name,
                     ", ".join(wf.id for wf in workflows) or "no workflows")
        self._publish()
        return errors

    def _publish(self) -> None:
        seen: dict[str, str] = {}
        merged: list[Workflow] = []
        for name, workflows in self.modules.items():
            for wf in workflows:
                if wf.id in seen and seen[wf.id] != name:
                    log.warning("workflow %s is defined in %s and %s; using %s", wf.id,
                                seen[wf.id], name, name)
                seen[wf.id] = name
                merged.append(wf)
        self.registry.replace(merged)

    def changed_modules(self, paths: set[str]) -> set[str]:
        """Module names touched by a set of changed file paths."""
        names: set[str] = set()
        for raw in paths:
            path = Path(raw).resolve()
            try:
                relative = path.relative_to(self.folder)
            except ValueError:
                continue
            top = relative.parts[0] if relative.parts else ""
            if top.endswith(".py"):
                names.add(top[:-3])
            elif top:
                names.add(top)
        return names

    async def watch(self, on_reload: Callable[[list[LoadError]], Awaitable[None]],
                    stop: Any = None) -> None:
        """Reload changed modules until ``stop`` (an ``asyncio.Event``) is set or cancelled.

        A folder that does not exist yet (or was removed) is waited for, then loaded in full:
        an inotify watch cannot outlive its folder. ``step`` is how often watchfiles' thread
        wakes to look for changes and for ``stop``: at its default (50 ms) an idle daemon wakes
        20 times a second for this alone; a reload does not need to be that fast."""
        import asyncio

        import watchfiles

        def stopped() -> bool:
            return stop is not None and bool(stop.is_set())

        while not stopped():
            if not self.folder.is_dir():
                await asyncio.sleep(FOLDER_POLL_SECONDS)
                if self.folder.is_dir():
                    log.info("workflows folder %s appeared; loading it", self.folder)
                    await on_reload(self.load())
                continue
            try:
                async for changes in watchfiles.awatch(self.folder, stop_event=stop,
                                                       debounce=200, step=200):
                    names = self.changed_modules({path for _change, path in changes})
                    names = {n for n in names if not n.startswith((".", "_"))}
                    if names:
                        log.info("workflow files changed: %s; reloading",
                                 ", ".join(sorted(names)))
                        await on_reload(self.load(only=names))
                    if not self.folder.is_dir():
                        log.warning("workflows folder %s was removed; waiting for it",
                                    self.folder)
                        break
            except FileNotFoundError:  # removed between the check and the watch
                continue
