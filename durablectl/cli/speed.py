"""Keep pydantic out of the command line's start-up.

Recent typer coerces every parameter through a pydantic ``TypeAdapter``: importing pydantic and
building the adapters costs about 70 ms per run, half of the 150 ms a read command has
(DESIGN-NOTES §7). Our options are plain ``str``/``int``/``float``/``bool`` values, which need no
pydantic, so :func:`install` gives those parameters a plain coercion and leaves every other
annotation (paths, enums, lists ...) to typer. The option definitions stay where they are: the
typer app is still the one source of ``--help``, the man pages and the parser.

This reaches into typer's internals (``typer.core.build_runtime_param``). If a typer release
moves them, :func:`install` does nothing and the CLI is merely slower;
``tests/test_cli.py`` checks that ``status --json`` imports no pydantic, which says so.
"""

from __future__ import annotations

from typing import Any

_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})
_NAMES = {str: "text", int: "integer", float: "number", bool: "boolean"}

_installed = False


def _convert(annotation: Any, value: Any) -> Any:
    """``value`` (a string from argv or the environment, or a default) as ``annotation``;
    ``ValueError`` when it is not one."""
    if isinstance(value, annotation) and not (annotation is int and isinstance(value, bool)):
        return value
    if annotation is bool:
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(value)
    if annotation is str:
        if isinstance(value, int | float):
            return str(value)
        raise ValueError(value)
    if annotation is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return int(str(value).strip())
    return float(str(value).strip())


def install() -> bool:
    """Route plain parameters around pydantic; True when typer's internals were found."""
    global _installed
    if _installed:
        return True
    try:
        from dataclasses import dataclass

        from typer import core
        from typer._click.exceptions import BadParameter
        from typer._coercion import RuntimeParam

        original = core.build_runtime_param  # type: ignore[attr-defined]
    except (ImportError, AttributeError):
        return False

    @dataclass(frozen=True)
    class PlainRuntimeParam(RuntimeParam):
        """Coercion of one plain scalar, with typer's handling of None and multi-values."""

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            try:
                return _convert(self.annotation, value)
            except (TypeError, ValueError):
                raise BadParameter(
                    f"{value!r} is not a valid {_NAMES[self.annotation]}.", ctx=ctx,
                    param=param) from None

    def build_runtime_param(descriptor: Any) -> Any:
        info = descriptor.parameter_info
        plain = (
            descriptor.annotation in _NAMES and descriptor.file_annotation is None
            and getattr(info, "parser", None) is None and getattr(info, "min", None) is None
            and getattr(info, "max", None) is None and not descriptor.is_choice
        )
        if not plain:
            return original(descriptor)
        return PlainRuntimeParam(parameter_info=info, annotation=descriptor.annotation)

    core.build_runtime_param = build_runtime_param  # type: ignore[attr-defined]
    _installed = True
    return True
