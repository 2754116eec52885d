"""``durablectl daemon run|start|stop|status``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from durablectl.cli.common import (
    ConfigOption,
    DbOption,
    DebugOption,
    JsonOption,
    Session,
    command,
)

app = typer.Typer(help="Run, start, stop and inspect the daemon of a database.",
                  no_args_is_help=True)


def _settings(session: Session) -> Any:
    from durablectl.config import service_options, store_options
    from durablectl.daemon.process import DaemonSettings, DashboardSettings

    config = session.config
    board = config.dashboard
    dashboard = DashboardSettings(
        token=board.token, host=board.host, port=board.port,
        allowed_hosts=tuple(board.allowed_hosts), operator=board.operator,
    ) if board.enabled else None
    return DaemonSettings(
        database=str(config.db), workflows=str(config.workflows),
        log_file=str(config.daemon.log_file) if config.daemon.log_file else None,
        service_options=service_options(config), store_options=store_options(config),
        config_path=str(config.path) if config.path else None,
        on_event=config.hooks.on_event or None, dashboard=dashboard)


@app.command("run")
@command
def run_(db: DbOption = None, config: ConfigOption = None, json: JsonOption = False,
         debug: DebugOption = False,
         ready_fd: Annotated[int | None, typer.Option(
             "--ready-fd", hidden=True, help="Internal: report readiness on this pipe.")] = None,
         ) -> None:
    """Run the daemon in the foreground, logging to stderr, until SIGTERM or Ctrl-C."""
    import logging

    from durablectl.daemon.process import run_foreground

    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    session = Session(db, config, json, debug)
    code = run_foreground(_settings(session), ready_fd=ready_fd)
    raise typer.Exit(code)


@app.command("start")
@command
def start(db: DbOption = None, config: ConfigOption = None, json: JsonOption = False,
          debug: DebugOption = False) -> None:
    """Start the daemon in the background; returns once it is ready (or with its error)."""
    from durablectl.daemon.paths import daemon_paths
    from durablectl.daemon.process import start_detached

    session = Session(db, config, json, debug)
    settings = _settings(session)
    pid = start_detached(settings)
    paths = daemon_paths(settings.database, log_file=settings.log_file)
    if session.json:
        import json as json_module

        print(json_module.dumps({"pid": pid, "database": settings.database,
                                 "log_file": str(paths.log_file)}))
    else:
        print(f"daemon started (pid {pid}) on {settings.database}; log: {paths.log_file}")


@app.command("stop")
@command
def stop(db: DbOption = None, config: ConfigOption = None, json: JsonOption = False,
         debug: DebugOption = False) -> None:
    """Stop the daemon: running steps get the grace period to finish (exit 4: none runs)."""
    from durablectl.daemon.process import stop as stop_daemon

    session = Session(db, config, json, debug)
    pid = stop_daemon(_settings(session))
    if session.json:
        import json as json_module

        print(json_module.dumps({"pid": pid, "stopped": True}))
    else:
        print(f"daemon (pid {pid}) stopped")


@app.command("status")
@command
def status(db: DbOption = None, config: ConfigOption = None, json: JsonOption = False,
           debug: DebugOption = False) -> None:
    """The daemon's pid, uptime, database, workflows, executions by status and next due
    timer (exit 4: none runs)."""
    from durablectl.cli import render
    from durablectl.daemon.process import status as daemon_status

    session = Session(db, config, json, debug)
    render.daemon_status(session, daemon_status(_settings(session)))
