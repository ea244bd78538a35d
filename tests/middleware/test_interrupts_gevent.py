"""Time limits and shutdown notifications under gevent, where interrupts are thrown into greenlets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).with_name("_gevent_interrupts_app.py")
ROOT = Path(__file__).resolve().parents[2]


def test_gevent_actors_are_interrupted_only_while_they_run() -> None:
    completed = subprocess.run(
        [sys.executable, str(APP)], cwd=ROOT, capture_output=True, timeout=90, check=False, text=True
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    seen = json.loads(completed.stdout.strip().splitlines()[-1])
    assert seen["limited"] == ["interrupted"]
    # Every edge actor either finished or was interrupted inside itself: none is lost or doubled.
    assert sorted(seen["edge_ok"] + seen["edge_interrupted"]) == list(range(30))
    assert seen["notified"] == [1, 1, 1]
    # limited, and the edge actors that were interrupted, failed with max_retries=0.
    assert seen["dead"] == [1 + len(seen["edge_interrupted"])]
