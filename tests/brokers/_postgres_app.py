"""A small application the Postgres broker tests run in separate processes (not a test module).

    python tests/brokers/_postgres_app.py URL SCHEMA RECORD_DIR [--threads N] [--lease-ms L] [--sleep-ms S]

Runs ``greenroom.Worker`` on the ``work`` queue until SIGTERM (or until its stdin closes), appending
the number of every message it processes, one per line, to ``RECORD_DIR/<pid>.txt`` *before* the
message is acknowledged, so a killed process's records show everything it ran. Prints ``ready``
once its worker runs.
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
from greenroom.brokers.postgres import PostgresBroker, PostgresSettings


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("schema")
    parser.add_argument("record_dir")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--lease-ms", type=int, default=5000)
    parser.add_argument("--sleep-ms", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    settings = PostgresSettings(lease_ms=args.lease_ms, renew_interval_ms=max(1, args.lease_ms // 5))
    broker = PostgresBroker(url=args.url, schema=args.schema, settings=settings)
    greenroom.set_broker(broker)
    record_fd = os.open(Path(args.record_dir) / f"{os.getpid()}.txt", os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    @greenroom.actor(queue_name="work", max_retries=0)
    def record(n: int) -> None:
        # One write() per message: it reaches the file even if the process is killed right after.
        os.write(record_fd, f"{n}\n".encode())
        if args.sleep_ms:
            time.sleep(args.sleep_ms / 1000)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def watch_stdin() -> None:
        sys.stdin.read()  # the test process went away without stopping us
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    broker.emit_after("process_boot")
    worker = greenroom.Worker(broker, worker_threads=args.threads, worker_timeout=100)
    worker.start()
    broker.wait_until_listening()
    print("ready", flush=True)
    while not stop.wait(0.5):
        pass
    worker.stop(timeout=10_000)
    broker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
