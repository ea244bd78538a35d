"""``greenroom-gevent``: the ``greenroom`` command with gevent's monkey patches applied first."""

from __future__ import annotations

import importlib
import sys
import sysconfig
import warnings
from typing import Any

__all__ = ["main", "patch_and_reimport"]


def main() -> int:
    """Patch the standard library with gevent, then run the ``greenroom`` command."""
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        warnings.warn(
            "greenroom-gevent runs on a free-threaded Python; the plain greenroom command may serve you better.",
            RuntimeWarning,
            stacklevel=1,
        )
    try:
        cli = patch_and_reimport("greenroom.cli")
    except ImportError:
        sys.stderr.write("greenroom-gevent: gevent is not installed; pip install 'greenroom[gevent]'\n")
        return 1
    result: int = cli.main()
    return result


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


if __name__ == "__main__":
    sys.exit(main())
