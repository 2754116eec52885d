"""The crash torture, shortened (``make torture`` runs 200+ kills): the real daemon SIGKILLed 20
times, at each ``synchronous`` level, at seeded random moments while a driver process starts
executions and sends signals; the harness (``bench/torture.py``) checks every invariant of
SPEC §8 and exits 1 on any violation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DURABLECTL = ROOT / ".venv" / "bin" / "durablectl"

pytestmark = pytest.mark.skipif(not DURABLECTL.exists(), reason="needs `make install`")


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])  # NORMAL: commits on the loop
def test_twenty_kills_lose_nothing_and_repeat_no_committed_step(tmp_path: Path,
                                                                synchronous: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLECTL_")}
    done = subprocess.run(
        [sys.executable, "-m", "bench.torture", "--kills", "20", "--seed", "20",
         "--dir", str(tmp_path / "run"), "--synchronous", synchronous],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
        stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert '"ok": true' in done.stdout
    figures = {line.strip().rsplit(None, 1)[0]: line.strip().rsplit(None, 1)[1]
               for line in done.stdout.splitlines() if line.startswith("  ")}
    assert figures["kills survived"] == "20"
    assert figures["lost"] == "0" and figures["stuck"] == "0"
    assert figures["committed steps run again"] == "0"
    assert figures["integrity"] == "ok"
    assert int(figures["executions"]) > 20 and int(figures["signals sent"]) > 0
