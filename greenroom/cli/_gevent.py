"""Re-importing greenroom under gevent in a spawned worker process (``greenroom-gevent --use-spawn``)."""

from __future__ import annotations

import importlib
import sys
from typing import Any

__all__ = ["patch_and_reimport"]


def patch_and_reimport(module_name: str) -> Any:
    """Apply gevent's patches (once), then import ``module_name`` from a fresh copy of greenroom.

    Patching must come before greenroom is imported: a ``threading.Thread`` subclass defined
    before the patches (greenroom's worker and consumer threads) never finishes ``join()`` under
    gevent, and the time-limit and shutdown middleware pick threads or greenlets when created.
    This module lives inside the package, so ``greenroom/__init__`` has already run by the time
    it executes; every greenroom module imported so far is dropped and imported again, patched.

    Raises:
      ImportError: When gevent is not installed.
    """
    from gevent import monkey

    if not monkey.saved:
        monkey.patch_all()
        for name in [n for n in sys.modules if n == "greenroom" or n.startswith("greenroom.")]:
            del sys.modules[name]
    return importlib.import_module(module_name)
