"""``greenroomctl migrate``: create or upgrade the tables of a PostgreSQL broker's schema.

``greenroomctl migrate --url postgresql://… [--schema greenroom]`` works on a database directly;
``greenroomctl --app APP migrate`` on the schema of the application's broker. Safe while workers
run, and from several machines at once (see :func:`greenroom.brokers.postgres.migrate`).
"""

from __future__ import annotations

import argparse
import json
from typing import TextIO

from ..cli import ExitCode
from ._context import AppContext, ContextError

__all__ = ["HELP", "configure", "run"]

HELP = "create or upgrade the tables of a PostgreSQL broker (--url and --schema, or the --app's broker)"


def configure(parser: argparse.ArgumentParser) -> None:
    """``--url`` and ``--schema`` name the database and schema when no application is given."""
    parser.add_argument("--url", help="a postgresql:// URL (default: the --app's broker)")
    parser.add_argument("--schema", help="the schema of greenroom's tables (default: the broker's, or greenroom)")


def run(args: argparse.Namespace, context: AppContext, out: TextIO) -> int:
    """Migrate, then print the schema and its version."""
    try:
        from ..brokers.postgres import DEFAULT_SCHEMA, PostgresBroker, migrate
    except ImportError as exc:
        raise ContextError(
            ExitCode.IMPORT, f"migrate needs the postgres extra: pip install 'greenroom[postgres]' ({exc})"
        )
    if args.url:
        url = args.url
        schema = args.schema or DEFAULT_SCHEMA
    else:
        broker = context.broker
        if not isinstance(broker, PostgresBroker):
            raise ContextError(ExitCode.KILLED, f"{type(broker).__name__} keeps no schema to migrate; give --url")
        url = broker.url
        schema = args.schema or broker.schema
    version = migrate(url, schema=schema)
    if args.json:
        json.dump({"schema": schema, "version": version}, out)
        out.write("\n")
    else:
        out.write(f"Schema {schema!r} is at version {version}.\n")
    return int(ExitCode.OK)
