"""``python -m greenroom``: the worker command line."""

import sys


def main() -> int:
    """Run the ``greenroom`` command."""
    from .cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
