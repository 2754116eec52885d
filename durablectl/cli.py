"""The ``durablectl`` command line (the full command set lands with the daemon/CLI issue)."""

from __future__ import annotations

import sys


def main() -> None:
    from durablectl import __version__

    print(f"durablectl {__version__}: the command line arrives with the daemon issue",
          file=sys.stderr)
    raise SystemExit(2)
