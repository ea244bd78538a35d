"""``greenroomctl status ID`` and ``greenroomctl cancel ID``: job control from the command line."""

from __future__ import annotations

import argparse
from typing import TextIO

from ..cli import ExitCode
from ..jobs import JobStoreNotConfigured, cancel, get_status
from ._context import AppContext, ContextError
from ._output import confirm, print_json, when

__all__ = ["CANCEL_HELP", "STATUS_HELP", "configure_cancel", "configure_status", "run_cancel", "run_status"]

STATUS_HELP = "the status of a message by its id: state, attempts, times, worker, last error, progress"
CANCEL_HELP = "cancel a message by its id: it never runs, or its actor is interrupted"


def configure_status(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", help="the message id")


def configure_cancel(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", help="the message id")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def _checked_id(text: str) -> str:
    if not text.strip() or any(character.isspace() for character in text) or len(text) > 200:
        raise ContextError(ExitCode.IMPORT, f"{text!r} is not a message id")
    return text


def run_status(args: argparse.Namespace, context: AppContext, out: TextIO) -> int:
    message_id = _checked_id(args.id)
    try:
        status = get_status(message_id, broker=context.broker)
    except JobStoreNotConfigured as exc:
        raise ContextError(ExitCode.KILLED, str(exc)) from exc
    if status is None:
        if args.json:
            print_json({"message_id": message_id, "status": None}, out)
        else:
            out.write(f"No status for message {message_id} (unknown id, untracked, or expired).\n")
        return int(ExitCode.KILLED)
    if args.json:
        print_json(status.as_dict(), out)
        return int(ExitCode.OK)
    lines = [
        ("message", status.message_id),
        ("state", status.state + (" (cancellation requested)" if status.cancel_requested else "")),
        ("actor", f"{status.actor_name or '-'} on {status.queue_name or '-'}"),
        ("attempts", str(status.attempts)),
        ("enqueued", when(status.enqueued_at_ms)),
        ("started", when(status.started_at_ms)),
        ("finished", when(status.finished_at_ms)),
        ("worker", status.worker or "-"),
    ]
    if status.progress is not None:
        lines.append(
            ("progress", f"{status.progress:.0%}" + (f" ({status.progress_note})" if status.progress_note else ""))
        )
    if status.error_type:
        lines.append(("last error", f"{status.error_type}: {status.error_message or ''}"))
    for label, value in lines:
        out.write(f"{label + ':':12}{value}\n")
    return int(ExitCode.OK)


def run_cancel(args: argparse.Namespace, context: AppContext, out: TextIO) -> int:
    message_id = _checked_id(args.id)
    confirm(args, f"Cancel message {message_id}?")
    try:
        result = cancel(message_id, broker=context.broker)
    except JobStoreNotConfigured as exc:
        raise ContextError(ExitCode.KILLED, str(exc)) from exc
    if args.json:
        print_json({"message_id": message_id, "outcome": result.outcome, "state": result.state}, out)
    elif result.requested:
        out.write(f"Cancellation of {message_id} requested (it was {result.state}).\n")
    elif result.outcome == "finished":
        out.write(f"Message {message_id} already ended ({result.state}); nothing to cancel.\n")
    else:
        out.write(f"No status for message {message_id}: unknown, untracked or expired; nothing cancelled.\n")
    return int(ExitCode.OK if result.requested else ExitCode.KILLED)
