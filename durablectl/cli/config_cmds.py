"""``durablectl config init|show|path``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from durablectl.cli.common import (
    ConfigOption,
    DbOption,
    DebugOption,
    JsonOption,
    Session,
    command,
    fail,
)

app = typer.Typer(help="Write, show and locate the configuration file.", no_args_is_help=True)


@app.command("init")
@command
def init(path: Annotated[Path, typer.Argument(help="Where to write it.")] = Path(
             "durablectl.toml"),
         force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] =
         False,
         db: DbOption = None, config: ConfigOption = None, json: JsonOption = False,
         debug: DebugOption = False) -> None:
    """Write a commented configuration file with every default."""
    from durablectl.config import render_default_config

    if path.exists() and not force:
        raise fail(f"{path} already exists (use --force to overwrite it)")
    path.write_text(render_default_config(), encoding="utf-8")
    print(str(path.resolve()))


@app.command("show")
@command
def show(db: DbOption = None, config: ConfigOption = None, json: JsonOption = False,
         debug: DebugOption = False) -> None:
    """The effective configuration, and where each value came from."""
    from durablectl.cli import render

    session = Session(db, config, json, debug)
    render.config_show(session, session.config)


@app.command("path")
@command
def path_(db: DbOption = None, config: ConfigOption = None, json: JsonOption = False,
          debug: DebugOption = False) -> None:
    """The configuration file in use (exit 3 when none is found)."""
    session = Session(db, config, json, debug)
    found = session.config.path
    if session.json:
        import json as json_module

        print(json_module.dumps({"path": None if found is None else str(found)}))
        return
    if found is None:
        raise fail("no configuration file found; defaults are in use (durablectl config init "
                   "writes one)", 3)
    print(str(found))
