"""The quick start: enqueue a batch of tasks, run a worker on the embedded broker, report.

Run it with ``python examples/quickstart.py``. Everything lives in a fresh temporary directory, so
it can be run again and again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

IMAGES = 400
REPORTS = 20
#: Upper bound on the whole run, so the example always ends.
TIMEOUT_S = 180


def read_tally(path: Path) -> Counter[str]:
    try:
        return Counter(path.read_text().split())
    except FileNotFoundError:
        return Counter()


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="greenroom-quickstart-"))
    tally = workdir / "tally.txt"
    markers = workdir / "markers"
    markers.mkdir()
    os.environ["greenroom_broker_url"] = f"sqlite:///{workdir / 'quickstart.db'}"
    os.environ["QUICKSTART_TALLY"] = str(tally)
    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here))

    import tasks  # the actors; imported after the environment names the broker

    started = time.monotonic()
    for image_id in range(IMAGES):
        tasks.make_thumbnail.send(image_id, str(markers))
    for n in range(REPORTS):
        tasks.send_report.send_with_options(args=(f"report-{n}",), delay=500 + 100 * n)
    broken = sum(1 for i in range(IMAGES) if i % tasks.BROKEN_EVERY == 7)
    print(f"Enqueued {IMAGES} thumbnails and {REPORTS} delayed reports into {workdir / 'quickstart.db'}")
    print(f"in {time.monotonic() - started:.2f} s. Starting a worker: greenroom tasks -p 2 -t 8 --burst")

    command = [sys.executable, "-m", "greenroom", "tasks", "-p", "2", "-t", "8", "--burst", "--path", str(here)]
    with open(workdir / "worker.log", "w") as log:
        worker = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            while worker.poll() is None and time.monotonic() - started < TIMEOUT_S:
                counts = read_tally(tally)
                print(
                    f"\r  processed {counts['processed']:4d}/{IMAGES + REPORTS - broken}"
                    f"   retried {counts['retried']:3d}   dead-lettered {counts['dead']:2d}",
                    end="",
                    flush=True,
                )
                time.sleep(0.2)
        finally:
            if worker.poll() is None:
                worker.terminate()
            code = worker.wait(timeout=60)
    counts = read_tally(tally)
    elapsed = time.monotonic() - started
    print()
    print("Summary")
    print(f"  processed      {counts['processed']}")
    print(f"  retried        {counts['retried']}")
    print(f"  dead-lettered  {counts['dead']} (after exhausting their retries; see the worker log)")
    print(f"  time taken     {elapsed:.1f} s")
    print(f"  worker log     {workdir / 'worker.log'} (exit code {code})")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
