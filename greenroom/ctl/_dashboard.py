"""``greenroomctl dashboard``: serve the web dashboard (``pip install 'greenroom[dashboard]'``)."""

from __future__ import annotations

import argparse
from typing import TextIO

from ..cli import ExitCode
from ._context import AppContext, ContextError

__all__ = ["HELP", "configure", "run"]

HELP = "serve the web dashboard on 127.0.0.1:9180 (another address only when given explicitly)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9180, help="the port to listen on (default 9180)")
    parser.add_argument("--user", help="require HTTP Basic login with this user (and --password)")
    parser.add_argument("--password", help="the password of --user")
    parser.add_argument("--read-only", action="store_true", help="show everything, change nothing")


def run(args: argparse.Namespace, context: AppContext, out: TextIO) -> int:
    if bool(args.user) != bool(args.password):
        raise ContextError(ExitCode.IMPORT, "--user and --password go together")
    if not 0 < args.port < 65536:
        raise ContextError(ExitCode.IMPORT, f"--port must be from 1 to 65535, not {args.port}")
    try:
        from ..dashboard import serve
    except ImportError as exc:
        raise ContextError(
            ExitCode.IMPORT, f"the dashboard needs its extra: pip install 'greenroom[dashboard]' ({exc})"
        ) from exc
    broker = context.broker
    out.write(f"Serving the dashboard on http://{args.host}:{args.port}/ (Ctrl-C stops it).\n")
    out.flush()
    serve(broker, host=args.host, port=args.port, user=args.user, password=args.password, read_only=args.read_only)
    return int(ExitCode.OK)
