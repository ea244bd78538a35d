"""The liveness board: what each worker process last told the main process, in shared memory.

A worker process can freeze as a whole: an actor stuck in C code that holds the GIL (a regular
expression that backtracks for hours, an extension's loop), or a greenlet blocked in C under
gevent. Then no thread of it runs, neither the time limit's interrupt nor the warden (see
``_warden``), so only the main process can end it. To see it, the main process reads a file that
every worker process maps into memory: the warden of each writes a beat every round (100 ms), the
monotonic time (which the processes of one machine share) and its pid, and each worker thread the
deadline and id of the message whose actor it runs. A slot whose beat stopped while a deadline
passed long ago belongs to a frozen process (see ``_frozen``).

The warden writes the beat (one write of 16 bytes); each worker thread writes its own cell when
an actor starts (its deadline and the message's key) and clears it when the run ends, so that a run that
freezes the process at once is on the board too. Each write is one copy made while holding the GIL;
a reader in another process takes a slot only when two reads in a row agree.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
from typing import NamedTuple

__all__ = ["Board", "Beat", "MESSAGE_ID_BYTES", "board_key"]

#: Bytes of a message's key on the board (see :func:`board_key`).
MESSAGE_ID_BYTES = 64
_HEAD = struct.Struct("<dq")  # beat (monotonic s), pid
_RUN = struct.Struct(f"<d{MESSAGE_ID_BYTES}s")  # deadline (monotonic s; 0: no run), board key
_GENERATION = struct.Struct("<Q")
#: How often a reader tries again when a slot changed under it.
_READ_TRIES = 5


def board_key(message_id: str) -> str:
    """How a message is named on the board and in the stuck registry: its id when that is ASCII of
    at most :data:`MESSAGE_ID_BYTES` characters (a UUID is), else ``#`` and a digest of the id."""
    if len(message_id) <= MESSAGE_ID_BYTES and message_id.isascii():
        return message_id
    digest = hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).hexdigest()
    return "#" + digest[: MESSAGE_ID_BYTES - 1]


class Beat(NamedTuple):
    """A slot as last written: when the warden beat, in which process, and the (deadline, board key) of each run."""

    beat_s: float
    pid: int
    runs: tuple[tuple[float, str], ...]


class Board:
    """A shared file of one slot per worker position, plus a generation counter for the main process.

    Parameters:
      path: The file (created by :meth:`create`, opened again in each worker process).
      slots: Worker positions.
      runs_per_slot: Cells per slot: the most runs a worker process has at once (its threads).
    """

    def __init__(self, path: str, slots: int, runs_per_slot: int) -> None:
        self.path = path
        self.slots = slots
        self.runs_per_slot = runs_per_slot
        self._slot_size = _slot_size(runs_per_slot)
        fd = os.open(path, os.O_RDWR)
        try:
            self._map = mmap.mmap(fd, _GENERATION.size + slots * self._slot_size)
        finally:
            os.close(fd)

    @classmethod
    def create(cls, path: str, slots: int, runs_per_slot: int) -> Board:
        """Make the file, zeroed (no slot has a beat yet), and map it."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, _GENERATION.size + slots * _slot_size(runs_per_slot))
        finally:
            os.close(fd)
        return cls(path, slots, runs_per_slot)

    def close(self) -> None:
        self._map.close()

    def _slot_offset(self, index: int) -> int:
        if not 0 <= index < self.slots:
            raise IndexError(f"no slot {index} on a board of {self.slots}")
        return _GENERATION.size + index * self._slot_size

    def beat(self, index: int, now_s: float, pid: int) -> None:
        """Say that process ``pid``, in position ``index``, ran at ``now_s`` (its warden)."""
        _HEAD.pack_into(self._map, self._slot_offset(index), now_s, pid)

    def set_run(self, index: int, cell: int, deadline_s: float, key: str) -> None:
        """Put a run on cell ``cell`` of slot ``index``: its deadline and its message's :func:`board_key`."""
        encoded = key.encode("ascii", "replace")[:MESSAGE_ID_BYTES]
        _RUN.pack_into(self._map, self._cell_offset(index, cell), deadline_s, encoded)

    def clear_run(self, index: int, cell: int) -> None:
        """Take the run off cell ``cell`` of slot ``index``."""
        _RUN.pack_into(self._map, self._cell_offset(index, cell), 0.0, b"")

    def _cell_offset(self, index: int, cell: int) -> int:
        if not 0 <= cell < self.runs_per_slot:
            raise IndexError(f"no cell {cell} in a slot of {self.runs_per_slot}")
        return self._slot_offset(index) + _HEAD.size + cell * _RUN.size

    def read(self, index: int) -> Beat | None:
        """Slot ``index`` as last written; None before the first beat (or while it kept changing)."""
        start = self._slot_offset(index)
        for _ in range(_READ_TRIES):
            data = self._map[start : start + self._slot_size]
            if self._map[start : start + self._slot_size] != data:
                continue  # written meanwhile
            beat_s, pid = _HEAD.unpack_from(data, 0)
            if pid == 0:
                return None
            runs = []
            for cell in range(self.runs_per_slot):
                deadline_s, raw_id = _RUN.unpack_from(data, _HEAD.size + cell * _RUN.size)
                if deadline_s:
                    runs.append((deadline_s, raw_id.rstrip(b"\0").decode("utf-8", "replace")))
            return Beat(beat_s, pid, tuple(runs))
        return None

    def clear(self, index: int) -> None:
        """Forget slot ``index`` (before a new process takes the position)."""
        offset = self._slot_offset(index)
        self._map[offset : offset + self._slot_size] = bytes(self._slot_size)

    @property
    def generation(self) -> int:
        """A counter the main process raises whenever it marks messages as stuck (see ``_frozen``)."""
        value: int = _GENERATION.unpack_from(self._map, 0)[0]
        return value

    def raise_generation(self) -> None:
        """Raise :attr:`generation` (the main process only: one writer)."""
        _GENERATION.pack_into(self._map, 0, self.generation + 1)


def _slot_size(runs_per_slot: int) -> int:
    return _HEAD.size + runs_per_slot * _RUN.size
