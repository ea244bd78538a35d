"""Prometheus wiring for the CLI: a multiprocess directory private to each run, and the middleware.

Workers started by the ``greenroom`` command export metrics whenever ``prometheus_client`` is
installed. The main process prepares the directory in which every worker process writes its
samples, ``greenroom-prometheus-<main pid>`` under ``greenroom_prom_db`` (or the temporary
directory), empties it so that numbers from an earlier run never leak in, and removes it when the
run ends; directories left by runs whose main process was killed are removed at the next start. Worker processes then
add the :class:`~greenroom.middleware.prometheus.Prometheus` middleware to their broker unless the
application installed one itself; its exposition server runs in a fork process. Setting
``greenroom_prom_enabled=0`` turns all of this off.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import tempfile

from .._lazy import process_exists
from ..broker import Broker
from ..middleware.prometheus import MULTIPROC_ENV, Prometheus

__all__ = ["install_metrics_middleware", "prepare_metrics_directory", "sweep_dead_runs"]

#: Each run's directory is ``<base>/greenroom-prometheus-<main pid>``.
_RUN_PREFIX = "greenroom-prometheus-"


def prepare_metrics_directory() -> str | None:
    """Create and empty this run's metrics directory and point the environment at it.

    Returns:
      The directory, or ``None`` when prometheus_client is not installed or metrics are turned off.
    """
    if importlib.util.find_spec("prometheus_client") is None:
        return None
    if os.environ.get("greenroom_prom_enabled", "1").lower() in ("0", "false", "no", "off"):
        return None
    base = os.environ.get("greenroom_prom_db") or os.environ.get("dramatiq_prom_db") or tempfile.gettempdir()
    sweep_dead_runs(base, _RUN_PREFIX)
    # A subdirectory of its own: the configured directory may hold other things, or other runs.
    directory = os.path.join(base, f"{_RUN_PREFIX}{os.getpid()}")
    # A reload re-executes this process with the same pid: its counters start again from zero.
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory, exist_ok=True)
    for name in MULTIPROC_ENV:
        os.environ[name] = directory
    atexit.register(shutil.rmtree, directory, True)
    return directory


def sweep_dead_runs(base: str, prefix: str) -> None:
    """Remove the directories ``<base>/<prefix><pid>`` of earlier runs whose main process is gone (killed)."""
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        pid_text = name[len(prefix) :]
        if name.startswith(prefix) and pid_text.isdigit() and not process_exists(int(pid_text)):
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)


def install_metrics_middleware(broker: Broker) -> None:
    """Add the Prometheus middleware to a worker's broker when this run collects metrics."""
    if not any(os.environ.get(name) for name in MULTIPROC_ENV):
        return
    if not any(isinstance(m, Prometheus) for m in broker.middleware):
        broker.add_middleware(Prometheus())
