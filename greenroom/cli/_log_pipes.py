"""One log stream for the whole process tree.

Every child process writes its log records, ``print`` output and anything written to file
descriptors 1 and 2 into a pipe of its own. One thread in the main process reads all pipes and
writes *whole lines* to stderr or ``--log-file``, under the same lock the main process's own log
handler uses, so lines from different processes are never interleaved.
"""

from __future__ import annotations

import io
import logging
import os
import selectors
import sys
import threading
import time
from typing import Any, BinaryIO, NoReturn

__all__ = [
    "LOG_FORMAT",
    "LogForwarder",
    "LogOutput",
    "configure_child_logging",
    "configure_main_logging",
    "redirect_child_output",
]

#: The format of every log line, in every process.
LOG_FORMAT = "[%(asctime)s] [PID %(process)d] [%(threadName)s] [%(name)s] [%(levelname)s] %(message)s"
#: Bytes read from a pipe at a time.
_CHUNK_BYTES = 65536


class LogOutput:
    """The destination of the stream: writes whole lines, one writer at a time.

    Parameters:
      log_file: Append to this file instead of writing to stderr.
    """

    def __init__(self, log_file: str | None = None) -> None:
        self._file: BinaryIO = open(log_file, "ab") if log_file else sys.stderr.buffer  # noqa: SIM115
        self._owns_file = log_file is not None
        #: Held while writing; taken by the forwarding thread and by the main process's handler.
        self._lock = threading.Lock()

    def write_lines(self, data: bytes) -> None:
        """Write ``data``, which ends with a newline, as one unit."""
        with self._lock:
            try:
                self._file.write(data)
                self._file.flush()
            except (OSError, ValueError):
                pass  # stderr closed or file system full: logging must never take the supervisor down

    def close(self) -> None:
        """Close the log file (stderr stays open)."""
        if self._owns_file:
            with self._lock:
                self._file.close()


class _OutputHandler(logging.Handler):
    def __init__(self, output: LogOutput) -> None:
        super().__init__()
        self._output = output

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 - a broken record is reported the logging way
            self.handleError(record)
            return
        self._output.write_lines(text.encode("utf-8", "backslashreplace") + b"\n")


def configure_main_logging(output: LogOutput, verbose: int) -> None:
    """Send the main process's log records to ``output``."""
    handler = _OutputHandler(output)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


class LogForwarder(threading.Thread):
    """Reads the log pipes of the children and writes their complete lines to the output.

    Parameters:
      output: Where lines go.
    """

    def __init__(self, output: LogOutput) -> None:
        super().__init__(name="LogForwarder", daemon=True)
        self._output = output
        self._selector = selectors.DefaultSelector()
        #: fd → bytes of a line not yet complete. Only this thread touches it (and stop() after join).
        self._partial: dict[int, bytes] = {}
        #: Pipes handed over by the supervisor thread, registered by this thread; guarded by _lock.
        self._pending: list[int] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._owner_pid = os.getpid()
        # A self-pipe wakes the selector when a pipe is added or on stop.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)

    def add(self, fd: int) -> None:
        """Forward what is written into the pipe whose read end is ``fd``; the forwarder closes it at EOF."""
        os.set_blocking(fd, False)
        with self._lock:
            self._pending.append(fd)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def run(self) -> None:
        while not self._stopping.is_set():
            self._register_pending()
            for key, _ in self._selector.select(timeout=1.0):
                if os.getpid() != self._owner_pid:
                    _idle_forever()
                fd = int(key.fd)
                if fd == self._wake_r:
                    _drain(fd)
                else:
                    self._read(fd)

    def _register_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
            for fd in pending:
                self._partial[fd] = b""
        for fd in pending:
            self._selector.register(fd, selectors.EVENT_READ)

    def _read(self, fd: int) -> bool:
        try:
            data = os.read(fd, _CHUNK_BYTES)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self._finish(fd)
            return False
        lines, _, rest = (self._partial[fd] + data).rpartition(b"\n")
        self._partial[fd] = rest
        if lines:
            self._output.write_lines(lines + b"\n")
        return True

    def _finish(self, fd: int) -> None:
        rest = self._partial.pop(fd, b"")
        if rest:
            self._output.write_lines(rest + b"\n")
        self._selector.unregister(fd)
        os.close(fd)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread, then forward whatever the pipes still hold and close them."""
        self._stopping.set()
        self._wake()
        if self.ident is not None:
            self.join(timeout_s)
        self._register_pending()
        for fd in list(self._partial):
            while self._read(fd):
                pass
            if fd in self._partial:
                self._finish(fd)
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


def _idle_forever() -> NoReturn:
    # Under gevent a forked child inherits this thread as a running greenlet. Its copy must not
    # read the pipes that belong to the main process, and must not end either: gevent's thread
    # bookkeeping in the child has no entry for it and would print a KeyError.
    while True:
        time.sleep(3600)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except OSError:
        pass


class _LineWriter(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` of a child: sends only complete lines into the log pipe.

    Each thread gets its own buffer so that two threads printing at once cannot mix their text
    within a line; whole lines are written under a lock.
    """

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd
        self._lock = threading.Lock()
        self._local = threading.local()
        self._broken = False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return "backslashreplace"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._fd

    @property
    def buffer(self) -> _BinaryAdapter:
        """For code that writes bytes to ``sys.stdout.buffer``."""
        return _BinaryAdapter(self)

    def write(self, text: str) -> int:
        buffered: str = getattr(self._local, "text", "") + text
        lines, newline, rest = buffered.rpartition("\n")
        self._local.text = rest
        if newline:
            self._send(lines + "\n")
        return len(text)

    def flush(self) -> None:
        rest: str = getattr(self._local, "text", "")
        if rest:
            self._local.text = ""
            self._send(rest)

    def _send(self, text: str) -> None:
        data = text.encode("utf-8", "backslashreplace")
        with self._lock:
            while data and not self._broken:
                try:
                    written = os.write(self._fd, data)
                except InterruptedError:
                    continue
                except OSError:
                    # The main process is gone; the child is about to notice and stop.
                    self._broken = True
                    return
                data = data[written:]


class _BinaryAdapter(io.RawIOBase):
    def __init__(self, writer: _LineWriter) -> None:
        super().__init__()
        self._writer = writer

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._writer.write(bytes(data).decode("utf-8", "backslashreplace"))
        return len(data)

    def flush(self) -> None:
        self._writer.flush()


def redirect_child_output(log_fd: int) -> None:
    """Point file descriptors 1 and 2, ``sys.stdout`` and ``sys.stderr`` at the log pipe ``log_fd``."""
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    writer = _LineWriter(2)
    sys.stdout = writer
    sys.stderr = writer


def configure_child_logging(verbose: int, skip_logging: bool) -> None:
    """Log to the (redirected) stderr in the standard format, unless ``--skip-logging``."""
    root = logging.getLogger()
    # Handlers inherited from the main process through fork write to its output object,
    # whose lock may have been held by another thread at the moment of the fork.
    for old in list(root.handlers):
        root.removeHandler(old)
    if skip_logging:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("pika").setLevel(logging.CRITICAL)
