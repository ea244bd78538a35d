"""The fork processes: ``--fork-function`` ones and those the middleware of the first worker asks for."""

from __future__ import annotations

import signal

from ._fork_process import ForkSpec, run_fork
from ._launcher import Child, Launcher, send_signal

__all__ = ["ForkProcesses"]


class ForkProcesses:
    """The fork processes: ``--fork-function`` ones and those the middleware of the first worker asks for."""

    def __init__(self, launcher: Launcher, verbose: int) -> None:
        self.launcher = launcher
        self.verbose = verbose
        self.children: list[Child] = []
        #: Middleware fork functions reported by the first worker to boot.
        self.middleware_functions: list[str] | None = None
        self._middleware_started = False
        self._stopped = False

    def start(self, functions: list[str]) -> None:
        """Start one fork process per function (``module:name``)."""
        for function in functions:
            child = Child(len(self.children))
            spec = ForkSpec(index=child.index, function=function, verbose=self.verbose)
            self.launcher.spawn(child, run_fork, spec, f"ForkProcess({child.index})", daemon=True)
            self.children.append(child)

    def start_middleware_forks(self) -> None:
        """Start the middleware's fork processes, once, when a worker has reported them."""
        if self.middleware_functions is not None and not self._middleware_started:
            self._middleware_started = True
            self.start(self.middleware_functions)

    def signal(self, signum: signal.Signals) -> None:
        """Send a signal to every fork process."""
        send_signal(self.children, signum)

    def stop(self) -> None:
        """Ask every fork process to stop, once: a second TERM makes a fork process exit with status 1."""
        if not self._stopped:
            self._stopped = True
            self.signal(signal.SIGTERM)
