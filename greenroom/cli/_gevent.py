"""``greenroom-gevent``: the ``greenroom`` command with gevent's monkey patches applied first."""

from __future__ import annotations

import sys
import sysconfig
import warnings


def main() -> int:
    """Patch the standard library with gevent, then run the ``greenroom`` command."""
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
    # Patching must come before greenroom is imported: the time-limit and shutdown middleware
    # decide between threads and greenlets when they are created.
    monkey.patch_all()

    from . import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
