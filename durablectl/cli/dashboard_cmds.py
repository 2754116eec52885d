"""``durablectl dashboard``: the URL of the dashboard that the database's daemon serves."""

from __future__ import annotations

from pathlib import Path

import typer

from durablectl.cli.common import (
    ConfigOption,
    DbOption,
    DebugOption,
    JsonOption,
    Session,
    command,
)


def dashboard_url(session: Session) -> str:
    """Asked of the live daemon itself (its status answer), so a URL is never stale: a daemon
    that died leaves no socket to answer."""
    from durablectl.daemon import ipc
    from durablectl.daemon.paths import socket_for
    from durablectl.errors import DaemonNotRunning

    database = session.db_path
    if not Path(database).exists():
        raise DaemonNotRunning(f"no daemon runs for {database}")
    path = socket_for(database, session.store)
    if path is None:
        raise DaemonNotRunning(f"no daemon runs for {database}")
    url = ipc.request(path, "status", timeout=5).get("dashboard")
    if not url:
        raise DaemonNotRunning(
            f"the daemon of {database} serves no dashboard: set [dashboard] enabled = true "
            "and a token in its configuration, then restart it")
    return str(url)


@command
def dashboard(db: DbOption = None, config: ConfigOption = None, json: JsonOption = False,
              debug: DebugOption = False) -> None:
    """Print the URL of the web dashboard the daemon serves (exit 4: none does).

    The daemon serves it when its configuration says [dashboard] enabled = true, with a token;
    open the URL and log in with that token, or send it as "Authorization: Bearer TOKEN". The
    token itself is never printed. With --json: {"url": ...}.
    """
    session = Session(db, config, json, debug)
    try:
        url = dashboard_url(session)
    finally:
        session.close()
    if session.json:
        import json as json_module

        print(json_module.dumps({"url": url}))
    else:
        print(url)


def register(app: typer.Typer) -> None:
    app.command("dashboard")(dashboard)
