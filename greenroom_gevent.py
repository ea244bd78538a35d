"""The ``greenroom-gevent`` command: gevent's monkey patches first, then the ``greenroom`` command.

This module sits outside the ``greenroom`` package on purpose: importing it imports nothing of
greenroom, so the standard library is patched before any greenroom thread class is defined.
"""

from __future__ import annotations

import sys
import sysconfig
import warnings


def main() -> int:
    """Patch with gevent, then run the ``greenroom`` command line; returns its exit code."""
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        warnings.warn(
            "greenroom-gevent runs on a free-threaded Python; the plain greenroom command may serve you better.",
            RuntimeWarning,
            stacklevel=1,
        )
    try:
        from gevent import monkey
    except ImportError:
        sys.stderr.write("greenroom-gevent: gevent is not installed; pip install 'greenroom[gevent]'\n")
        return 1
    monkey.patch_all()
    from greenroom.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
