"""Entry point of the restart benchmark's worker process, kept tiny so that it notes the time
before anything heavy (durablectl, asyncio, sqlite3) is imported."""

import time

_T_PROCESS = time.time()


def _main() -> int:
    import sys

    from bench.restart import main

    return main(sys.argv[1:], _T_PROCESS)


if __name__ == "__main__":
    raise SystemExit(_main())
