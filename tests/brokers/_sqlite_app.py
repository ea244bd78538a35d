"""A small application the SQLite broker tests run in separate processes (not a test module).

    python tests/brokers/_sqlite_app.py worker DB RECORD_DIR [--threads N] [--lease-ms L] [--sleep-ms S]
    python tests/brokers/_sqlite_app.py produce DB START COUNT

The worker runs ``greenroom.Worker`` directly (not the CLI) until SIGTERM, and appends the number of
every message it processes, one per line, to ``RECORD_DIR/<pid>.txt`` *before* the message is
acknowledged, so a killed process's records show everything it ran. It prints ``ready`` once
started. The producer sends ``COUNT`` messages numbered from ``START`` and prints ``sent``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import greenroom
from greenroom.brokers.sqlite import SQLiteBroker, SQLiteSettings


def build(db: str, lease_ms: int) -> SQLiteBroker:
    settings = SQLiteSettings(lease_ms=lease_ms, renew_interval_ms=max(1, lease_ms // 5))
    broker = SQLiteBroker(db, settings=settings)
    greenroom.set_broker(broker)
    return broker


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["worker", "produce"])
    parser.add_argument("db")
    parser.add_argument("rest", nargs="*")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--lease-ms", type=int, default=5000)
    parser.add_argument("--sleep-ms", type=int, default=0)
    args = parser.parse_args()
    # Warnings and errors (a "database is locked" among them) go to stderr, which the tests read.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    broker = build(args.db, args.lease_ms)
    record_path = Path(args.rest[0]) / f"{os.getpid()}.txt" if args.role == "worker" else None
    record_fd = os.open(record_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND) if record_path else -1

    @greenroom.actor(queue_name="work", max_retries=0)
    def record(n: int) -> None:
        # One write() per message: it reaches the file even if the process is killed right after.
        os.write(record_fd, f"{n}\n".encode())
        if args.sleep_ms:
            time.sleep(args.sleep_ms / 1000)

    if args.role == "produce":
        start, count = int(args.rest[0]), int(args.rest[1])
        for n in range(start, start + count):
            record.send(n)
        broker.close()
        print("sent", flush=True)
        return 0

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    # If the test process goes away without stopping us, our stdin closes: stop too.
    def watch_stdin() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    broker.emit_after("process_boot")
    worker = greenroom.Worker(broker, worker_threads=args.threads, worker_timeout=100)
    worker.start()
    print("ready", flush=True)
    while not stop.wait(0.5):
        pass
    worker.stop(timeout=10_000)
    broker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
